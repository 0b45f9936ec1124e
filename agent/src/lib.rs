//! The agent's stages, in the order a line travels through them:
//! [`watch`] finds files, [`harvest`] reads their lines, [`process`] turns lines into events,
//! [`output`] ships them; [`pipeline`] wires the stages together.

pub mod config;
pub mod harvest;
pub mod output;
pub mod pipeline;
pub mod process;
pub mod watch;
