use anyhow::Result;
use std::path::Path;
pub fn run(_root: &Path, _name: Option<&str>) -> Result<()> { anyhow::bail!("todo") }
