//! The agent's stages, in the order a line travels through them:
//! [`watch`] finds files, [`harvest`] reads their lines, [`process`] turns lines into events,
//! [`output`] ships them, and [`registry`] remembers what was delivered; [`pipeline`] wires the
//! stages together, and [`metrics`] serves what they count.

pub mod config;
pub mod harvest;
pub mod kubernetes;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod process;
pub mod queue;
pub mod registry;
pub mod watch;
