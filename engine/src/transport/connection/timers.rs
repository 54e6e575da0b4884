//! The connection's timer table: one deadline per [`Timer`], the earliest of which is the
//! connection's deadline (spec §7, "Timers": loss/PTO, ACK delay, pacing, idle, keep-alive,
//! close/drain, plus the MTU retry of §8.4 and a deferred close).
//!
//! A plain array indexed by the timer kind; it holds deadlines and nothing else. What a timer
//! does when it fires is the orchestrator's business (`Connection::handle_timeout`).

use crate::time::Time;

/// The timers of one connection. Their order is the order in which expired timers are handled.
#[derive(Debug, Clone, Copy)]
pub(super) enum Timer {
    /// Loss detection or probe timeout (RFC 9002 §6), or the INITIAL's retransmission.
    Loss = 0,
    /// Delayed acknowledgement (spec §4.3).
    Ack = 1,
    /// The pacer's next send time (spec §8.2).
    Pacing = 2,
    /// Idle timeout (spec §7).
    Idle = 3,
    /// Keep-alive PING (spec §7).
    KeepAlive = 4,
    /// End of the closing or draining period (spec §7.1).
    Close = 5,
    /// Probe larger MTUs again (spec §8.4).
    MtuRetry = 6,
    /// A violation found outside input handling (no `now` there), closed at once.
    Deferred = 7,
}

const TIMER_COUNT: usize = 8;

impl Timer {
    /// Every timer, in the order expired timers are handled.
    pub(super) const ALL: [Timer; TIMER_COUNT] = [
        Timer::Loss,
        Timer::Ack,
        Timer::Pacing,
        Timer::Idle,
        Timer::KeepAlive,
        Timer::Close,
        Timer::MtuRetry,
        Timer::Deferred,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Timers {
    at: [Option<Time>; TIMER_COUNT],
}

impl Timers {
    /// Arms `t` for `at`, replacing any earlier deadline.
    pub(super) fn set(&mut self, t: Timer, at: Time) {
        self.at[t as usize] = Some(at);
    }

    /// Sets or clears `t`.
    pub(super) fn set_opt(&mut self, t: Timer, at: Option<Time>) {
        self.at[t as usize] = at;
    }

    /// Disarms `t`.
    pub(super) fn clear(&mut self, t: Timer) {
        self.at[t as usize] = None;
    }

    /// Disarms every timer.
    pub(super) fn clear_all(&mut self) {
        self.at = [None; TIMER_COUNT];
    }

    /// The deadline of `t`, if armed.
    pub(super) fn get(&self, t: Timer) -> Option<Time> {
        self.at[t as usize]
    }

    /// The earliest deadline of all.
    pub(super) fn earliest(&self) -> Option<Time> {
        self.at.iter().flatten().min().copied()
    }

    /// If `t` is armed for `now` or earlier, disarms it and returns true. Called for each of
    /// [`Timer::ALL`] in turn, so a timer armed by the handler of an earlier one is seen.
    pub(super) fn take_expired(&mut self, t: Timer, now: Time) -> bool {
        match self.at[t as usize] {
            Some(at) if at <= now => {
                self.at[t as usize] = None;
                true
            }
            _ => false,
        }
    }
}
