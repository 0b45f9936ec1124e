//! What the watch backends' events ask of the engine.
//!
//! - A watch event is a hint: the engine looks at the path itself, so a duplicate or stale
//!   event costs a `stat`.
//! - A file renamed out of the patterns before it was opened (a rotation faster than the
//!   agent) is opened by its new name when the backend reports the rename with both names
//!   (eBPF, inotify; polling when it had listed the file under its old name), and harvested as
//!   a file renamed away. Identity rules as for any file: found later under another name, it
//!   is not read again.
//! - An event seen on syscall entry (eBPF) may come before the syscall took effect: it is
//!   handled again shortly after ([`Rechecks`]).

use super::discovery::Discovery;
use super::engine::RECHECK;
use crate::watch::{FileId, WatchEvent};
use std::collections::VecDeque;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What an event asks of the engine.
pub(super) enum Action {
    /// A regular file matching input `input` is at `path`: look at it now.
    Found {
        input: usize,
        path: PathBuf,
        meta: Metadata,
    },
    /// The file last seen at this path may have moved or gone: look at it now.
    Suspect(PathBuf),
    /// The file at `from` was renamed to `to`, which no pattern matches.
    RenamedAway { from: PathBuf, to: PathBuf },
    /// A new folder may hold matching files and need a watch of its own: rescan now.
    Rescan,
    /// A process is writing to the armed open file.
    Written(FileId),
}

/// What `event` asks of the engine, in order, after a look at the paths it names.
pub(super) fn actions(
    event: WatchEvent,
    discovery: &Discovery,
) -> impl Iterator<Item = Action> + use<> {
    let (first, then) = match event {
        WatchEvent::Changed(path) => (changed(discovery.resolve(path), discovery), None),
        WatchEvent::Removed(path) => (Some(Action::Suspect(discovery.resolve(path))), None),
        WatchEvent::Renamed { from, to } => {
            let from = discovery.resolve(from);
            let then = if discovery.watched(&to) {
                changed(discovery.resolve(to), discovery)
            } else {
                Some(Action::RenamedAway {
                    from: from.clone(),
                    to,
                })
            };
            (Some(Action::Suspect(from)), then)
        }
        WatchEvent::Written(id) => (Some(Action::Written(id)), None),
    };
    first.into_iter().chain(then)
}

/// Something at the watched `path` changed.
fn changed(path: PathBuf, discovery: &Discovery) -> Option<Action> {
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => discovery.may_hold(&path).then_some(Action::Rescan),
        Ok(meta) if meta.is_file() => {
            discovery
                .input_of(&path)
                .map(|input| Action::Found { input, path, meta })
        }
        Ok(_) => None,
        Err(_) => Some(Action::Suspect(path)),
    }
}

/// Whether the syscall `event` was seen entering has visibly taken effect: the path it
/// created or renamed to exists.
pub(super) fn took_effect(event: &WatchEvent) -> bool {
    match event {
        WatchEvent::Changed(path) | WatchEvent::Renamed { to: path, .. } => {
            std::fs::metadata(path).is_ok()
        }
        WatchEvent::Removed(_) | WatchEvent::Written(_) => true,
    }
}

/// Events to handle again (seen on syscall entry: a `Changed` path, or a rename): when, which,
/// and how often already. A path that does not exist yet (an `open(O_CREAT)` or a `rename`
/// still in the kernel) is looked at again, waiting twice as long each time, a few times.
#[derive(Default)]
pub(super) struct Rechecks(VecDeque<(Instant, WatchEvent, u32)>);

impl Rechecks {
    /// 1, 2, 4 … 128 ms after the event: then the safety rescan takes over.
    const ATTEMPTS: u32 = 8;

    /// `event` was seen on syscall entry at `now`: queues what to handle again once the
    /// syscall has completed, for a path an input watches (`harvested` says whether a path is
    /// where an open file was last seen), unless it is queued already.
    pub(super) fn seen_on_entry(
        &mut self,
        event: &WatchEvent,
        discovery: &Discovery,
        harvested: impl Fn(&Path) -> bool,
        now: Instant,
    ) {
        let again = match event {
            WatchEvent::Changed(path) | WatchEvent::Removed(path) => discovery
                .watched(path)
                .then(|| WatchEvent::Changed(path.clone())),
            WatchEvent::Renamed { from, to } => {
                (discovery.watched(from) || discovery.watched(to) || harvested(from))
                    .then(|| event.clone())
            }
            WatchEvent::Written(_) => None,
        };
        if let Some(again) = again
            && !self.0.iter().any(|(_, queued, _)| *queued == again)
        {
            self.0.push_back((now + RECHECK, again, 0));
        }
    }

    /// When the soonest recheck is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.0.iter().map(|(due, _, _)| *due).min()
    }

    /// Takes the rechecks due at `now` out of the queue, with their attempts so far.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(WatchEvent, u32)> {
        let mut due = Vec::new();
        self.0.retain(|(at, event, attempt)| {
            let ready = *at <= now;
            if ready {
                due.push((event.clone(), *attempt));
            }
            !ready
        });
        due
    }

    /// `event`, handled again at `now` for the `attempt`th time, had not taken effect: once
    /// more, later, unless that was the last attempt.
    pub(super) fn again(&mut self, event: WatchEvent, attempt: u32, now: Instant) {
        if attempt + 1 < Self::ATTEMPTS {
            let wait = RECHECK * (1 << (attempt + 1));
            self.0.push_back((now + wait, event, attempt + 1));
        }
    }
}
