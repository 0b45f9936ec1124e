//! The engine's side of the bounded channel to the delivery side. When outputs are slow,
//! batches wait in a short queue of the engine's own and reading stops (backpressure).

use super::engine::Harvested;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Batches the engine holds while the channel is full; reading waits beyond it.
const MAX_PENDING: usize = 16;

/// The engine's end of the channel to the delivery side, and the batches waiting for room in
/// it, oldest first.
pub(super) struct Outbox {
    out: mpsc::Sender<Harvested>,
    pending: VecDeque<Harvested>,
    /// The delivery side is gone: nothing more can be delivered.
    receiver_gone: bool,
}

impl Outbox {
    /// Sends into `out`.
    pub(super) fn new(out: mpsc::Sender<Harvested>) -> Self {
        Self {
            out,
            pending: VecDeque::new(),
            receiver_gone: false,
        }
    }

    /// The delivery side is gone: nothing more can be delivered.
    pub(super) fn receiver_gone(&self) -> bool {
        self.receiver_gone
    }

    /// Hands `harvested` to the delivery side, after what is already waiting.
    pub(super) fn send(&mut self, harvested: Harvested) {
        self.pending.push_back(harvested);
        self.flush();
    }

    /// Moves waiting batches into the channel while it has room.
    pub(super) fn flush(&mut self) {
        while let Some(harvested) = self.pending.pop_front() {
            match self.out.try_send(harvested) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(harvested)) => {
                    self.pending.push_front(harvested);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.receiver_gone = true;
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    /// Batches wait for room in the channel.
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reading waits: as many batches as the engine holds wait, or nobody takes them.
    pub(super) fn full(&self) -> bool {
        self.receiver_gone || self.pending.len() >= MAX_PENDING
    }

    /// Hands over the waiting batches, waiting for room (when the engine stops).
    pub(super) fn hand_over_pending(&mut self) {
        for harvested in std::mem::take(&mut self.pending) {
            if self.out.blocking_send(harvested).is_err() {
                break;
            }
        }
    }
}
