//! What a simulated run did: counts that show the interesting orders were reached.

/// Counts of what a run did, to show that the interesting orders were reached.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    pub sqes: u64,
    pub cqes: u64,
    /// Cancels that found their op still in flight.
    pub cancels: u64,
    /// Cancels that arrived after the op had completed (`ENOENT`).
    pub cancels_late: u64,
    /// Ops that completed in the same enter as their cancel, ahead of it.
    pub cancel_races: u64,
    pub enobufs: u64,
    /// CQEs held back because the CQ ring was full.
    pub overflows: u64,
    /// CQEs with `F_MORE`.
    pub more: u64,
    pub short_writes: u64,
    pub forced: u64,
    /// Enters refused with `EAGAIN` or `EBUSY`.
    pub transient: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Sends tried at submit that found no room (`EAGAIN`).
    pub tries_refused: u64,
    /// Readiness watches that fired.
    pub polls: u64,
    /// Successes that posted no CQE (`IOSQE_CQE_SKIP_SUCCESS`).
    pub skipped_cqes: u64,
    /// Enters that submitted only part of the SQ.
    pub partial_submits: u64,
}

impl SimStats {
    /// Adds another run's counts to these.
    pub fn add(&mut self, o: &SimStats) {
        self.sqes += o.sqes;
        self.cqes += o.cqes;
        self.cancels += o.cancels;
        self.cancels_late += o.cancels_late;
        self.cancel_races += o.cancel_races;
        self.enobufs += o.enobufs;
        self.overflows += o.overflows;
        self.more += o.more;
        self.short_writes += o.short_writes;
        self.forced += o.forced;
        self.transient += o.transient;
        self.accepted += o.accepted;
        self.tries_refused += o.tries_refused;
        self.polls += o.polls;
        self.skipped_cqes += o.skipped_cqes;
        self.partial_submits += o.partial_submits;
    }
}
