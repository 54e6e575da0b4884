//! Which connections need the endpoint next: a deadline index (the earliest timer of each
//! connection, ordered) and a ready queue (connections that may have something to send), so
//! that timers and sends cost O(log n) per connection that needs them rather than a scan of
//! every connection per call.
//!
//! The endpoint keeps both current: after anything that can change a connection's timers or
//! give it something to send (a datagram, a timeout, a command, a transmit) it reschedules the
//! connection and marks it ready. A ready connection that turns out to have nothing to send
//! leaves the queue until the next such change.

use std::collections::{BTreeSet, VecDeque};

use crate::time::Time;

/// Deadlines and the ready queue of an endpoint's connections, by slot index.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// `(deadline, slot)` of every connection that has a timer.
    deadlines: BTreeSet<(Time, usize)>,
    /// The deadline each slot is filed under in `deadlines`.
    filed: Vec<Option<Time>>,
    /// Slots that may have something to send, oldest first (round robin: a slot that sent
    /// goes to the back).
    ready: VecDeque<usize>,
    /// True for a slot in `ready`.
    queued: Vec<bool>,
}

impl Schedule {
    fn grow(&mut self, k: usize) {
        if self.filed.len() <= k {
            self.filed.resize(k + 1, None);
            self.queued.resize(k + 1, false);
        }
    }

    /// Files slot `k` under its connection's earliest timer (`None`: it has none).
    pub(super) fn set_deadline(&mut self, k: usize, at: Option<Time>) {
        self.grow(k);
        if self.filed[k] == at {
            return;
        }
        if let Some(old) = self.filed[k] {
            self.deadlines.remove(&(old, k));
        }
        if let Some(t) = at {
            self.deadlines.insert((t, k));
        }
        self.filed[k] = at;
    }

    /// The earliest deadline of any connection.
    pub(super) fn earliest(&self) -> Option<Time> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Moves the slots whose deadline is at or before `now` into `due` (each once), unfiling
    /// them: the caller runs their timers and files them again.
    pub(super) fn take_due(&mut self, now: Time, due: &mut Vec<usize>) {
        while let Some(&(t, k)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            self.filed[k] = None;
            due.push(k);
        }
    }

    /// Slot `k` may have something to send.
    pub(super) fn mark_ready(&mut self, k: usize) {
        self.grow(k);
        if !self.queued[k] {
            self.queued[k] = true;
            self.ready.push_back(k);
        }
    }

    /// The next slot to ask for a datagram, taken off the queue.
    pub(super) fn next_ready(&mut self) -> Option<usize> {
        let k = self.ready.pop_front()?;
        self.queued[k] = false;
        Some(k)
    }

    /// Slot `k` was freed: its deadline goes. (A queued entry stays; the next connection in
    /// the slot is then asked once for nothing, which is harmless.)
    pub(super) fn forget(&mut self, k: usize) {
        self.set_deadline(k, None);
    }

    /// Connections queued as ready (a gauge for tests).
    #[cfg(test)]
    pub(super) fn ready_len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_taken_in_order_once_and_refiled() {
        let mut s = Schedule::default();
        s.set_deadline(3, Some(Time(30)));
        s.set_deadline(1, Some(Time(10)));
        s.set_deadline(2, Some(Time(20)));
        s.set_deadline(2, Some(Time(5)));
        assert_eq!(s.earliest(), Some(Time(5)));
        s.set_deadline(1, None);
        let mut due = Vec::new();
        s.take_due(Time(25), &mut due);
        assert_eq!(due, vec![2]);
        assert_eq!(s.earliest(), Some(Time(30)));
        // Refiled at a time already past: taken at the next call, not in a loop.
        s.set_deadline(2, Some(Time(25)));
        due.clear();
        s.take_due(Time(25), &mut due);
        assert_eq!(due, vec![2]);
        s.forget(3);
        assert_eq!(s.earliest(), None);
    }

    #[test]
    fn the_ready_queue_is_round_robin_without_duplicates() {
        let mut s = Schedule::default();
        for k in [4, 1, 4, 2] {
            s.mark_ready(k);
        }
        assert_eq!(s.ready_len(), 3);
        let k = s.next_ready().unwrap();
        assert_eq!(k, 4);
        s.mark_ready(k);
        let order: Vec<usize> = std::iter::from_fn(|| s.next_ready()).collect();
        assert_eq!(order, vec![1, 2, 4]);
    }
}
