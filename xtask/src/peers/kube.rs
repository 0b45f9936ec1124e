//! Placeholder: the kube peer is being written.

use super::{Ctx, Peer};
use anyhow::{Result, bail};

pub struct KubeApiserver;

impl Peer for KubeApiserver {
    fn name(&self) -> &'static str {
        "kube"
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
