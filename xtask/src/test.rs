use anyhow::Result;
use std::path::Path;
pub fn all(_root: &Path, _args: &[String]) -> Result<()> { anyhow::bail!("todo") }
pub fn e2e(_root: &Path) -> Result<()> { anyhow::bail!("todo") }
