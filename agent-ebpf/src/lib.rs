//! Empty, as in aya's template (whose user-space crate build-depends on this library target):
//! the programs are the `skiff-ebpf` binary, `src/main.rs`, built only for `bpfel-unknown-none`.
#![no_std]
