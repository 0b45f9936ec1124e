//! Placeholder: the beats peer is being written.

use super::{Ctx, Peer};
use anyhow::{Result, bail};

pub struct BeatsServer;

impl Peer for BeatsServer {
    fn name(&self) -> &'static str {
        "beats"
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
