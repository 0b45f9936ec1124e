//! When each open file is looked at next: a queue by time, so that waking up for the next look
//! costs nothing per idle file.

use super::open_file::OpenFile;
use crate::watch::FileId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// The open files by the time of their next look, soonest first: an entry whose time is no
/// longer its file's next look is stale, and dropped when it comes up. So a wait for the next
/// look does not go over every open file.
#[derive(Default)]
pub(super) struct LookQueue(BinaryHeap<Reverse<(Instant, FileId)>>);

impl LookQueue {
    /// Looks at the open file `id` next at `at`.
    pub(super) fn schedule(&mut self, id: FileId, open: &mut OpenFile, at: Instant) {
        open.set_next_look(at);
        self.push(id, at);
    }

    /// Queues a look at `id` at `at`, its next look.
    pub(super) fn push(&mut self, id: FileId, at: Instant) {
        self.0.push(Reverse((at, id)));
    }

    /// When the soonest look is due (perhaps stale).
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the looks due at `now` out of the queue.
    pub(super) fn take_due(
        &mut self,
        files: &HashMap<FileId, OpenFile>,
        now: Instant,
    ) -> Vec<FileId> {
        // Files coming due soon, relative to their backoff, are looked at in this round: a
        // look a little early costs one `fstat`, while thousands of idle files coming due one
        // by one would wake the engine a thousand times a second.
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.0.peek() {
            match files.get(&id) {
                Some(open) if open.next_look() == at => {
                    if at > now + open.backoff() / 8 {
                        break;
                    }
                    due.push(id);
                }
                _ => {} // closed, or looked at since: stale
            }
            self.0.pop();
        }
        due
    }
}
