//! Placeholder: the eBPF toolchain is being written.
use anyhow::Result;
use std::path::Path;
pub fn build_ebpf(_root: &Path) -> Result<()> {
    anyhow::bail!("not written yet")
}
