//! Empty on purpose, as in aya's template: the programs are the `skiff-ebpf` binary
//! (`src/main.rs`), and this library target lets host tools resolve and check the package.
#![no_std]
