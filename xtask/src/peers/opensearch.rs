//! Placeholder: the opensearch peer is being written.

use super::{Ctx, Peer};
use anyhow::{Result, bail};

pub struct OpenSearch;

impl Peer for OpenSearch {
    fn name(&self) -> &'static str {
        "opensearch"
    }
    fn version(&self) -> &'static str {
        "0"
    }
    fn install(&self, _ctx: &Ctx) -> Result<()> {
        bail!("not written yet")
    }
    fn start(&self, _ctx: &Ctx) -> Result<()> {
        bail!("not written yet")
    }
    fn healthy(&self, _ctx: &Ctx) -> Result<()> {
        bail!("not written yet")
    }
    fn env(&self, _ctx: &Ctx) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}
