use anyhow::Result;
use std::path::Path;
pub fn demo(_root: &Path) -> Result<()> { anyhow::bail!("todo") }
