//! How a loop with nothing to run waits: `Driver::park`, a plain blocking `io_uring_enter`
//! by default, a bounded wait for a batch of completions (`Builder::batch_wait`, see
//! `batch`), or a spin on the rings before the sleep (`Builder::spin_before_sleep`).

use std::io;
use std::time::{Duration, Instant};

use super::batch::Batch;
use super::{Driver, Inner};

/// Looks at the rings between two readings of the clock while spinning: a look is a few
/// loads of the rings' heads, tails and flags and a pause, and a reading of the clock (the
/// vDSO's) costs as much as several, so the budget is overrun by a microsecond or two at most.
const SPIN_POLLS_PER_CLOCK: u32 = 16;

/// How a spin before a wait ended (see `Inner::spin_first`).
pub(super) enum Spun {
    /// Completions came in: the wait is over.
    Arrived,
    /// Nothing came in and the wait's timeout ran out while spinning.
    TimedOut,
    /// Nothing came in: sleep, with this much of the wait's timeout left.
    Sleep(Option<Duration>),
}

impl Driver {
    /// Submits, then blocks until a completion arrives or `timeout` passes. With batching on
    /// (`Builder::batch_wait`), it first waits a bounded time for a batch (see `Batch`).
    // Always: one call site, once per turn (the turn's park); the plain wait is inlined there
    // and the batch wait kept out of line (`Inner::park_batch`), so no turn pays for a call.
    #[inline(always)]
    pub(crate) fn park(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        self.queue_closes(&mut inner);
        let before = inner.reaped;
        // Close CQEs are not what a wait waits for (it asks for them on top, see
        // `Inner::enter`): they count neither towards a batch nor against an empty wait.
        let closes_before = inner.closes_in_flight;
        inner.others_since_park = 0;
        if inner.timer.fired.get() || inner.reaped_in_push {
            // Reaped since the turn looked, by a push that made room in the SQ: timers may
            // be due and tasks woken, and waiting could sleep past them (or for ever, where
            // nothing else is coming). The turn runs them first.
            inner.reaped_in_push = false;
            inner.others_since_park = 1;
            return Ok(());
        }
        if let Some(interval) = inner.poll_interval {
            return inner.park_polling(interval, timeout, before, closes_before);
        }
        if let Some(batch) = inner.batch {
            return inner.park_batch(batch, timeout, before, closes_before);
        }
        let mut timeout = timeout;
        if let Some(spin) = inner.spin {
            match inner.spin_first(spin, timeout)? {
                Spun::Arrived => return Ok(()),
                Spun::TimedOut => {
                    inner.empty_waits += 1;
                    return Ok(());
                }
                Spun::Sleep(rest) => timeout = rest,
            }
        }
        let r = inner.enter(1, timeout, 0);
        if inner.reaped_besides_closes(before, closes_before) == 0 {
            inner.empty_waits += 1;
        }
        r
    }

    /// Whether the last [`park`](Driver::park) brought in detached ops' CQEs and nothing else
    /// (the wake-up read still armed, nothing released): no task waits for what happened, so
    /// once their owners are told the loop may wait again without a turn.
    #[inline]
    pub(crate) fn woke_only_detached(&self) -> bool {
        let inner = self.0.inner.borrow();
        inner.others_since_park == 0
            && !inner.detached.is_empty()
            && inner.wake_armed
            && inner.released.is_empty()
    }

    /// Blocking waits that brought in no completion: ended by a timer's deadline or a
    /// signal, never by the wait itself.
    pub(crate) fn empty_waits(&self) -> u64 {
        self.0.inner.borrow().empty_waits
    }

    /// The batch wait in effect (`None`: off, or the kernel cannot bound it).
    pub(crate) fn batch_wait(&self) -> Option<Duration> {
        self.0
            .inner
            .borrow()
            .batch
            .map(|b| Duration::from_micros(b.wait_us.into()))
    }

    /// How many completions a batch wait currently asks for (`None`: batching is off).
    pub(crate) fn batch_target(&self) -> Option<u32> {
        self.0.inner.borrow().batch.map(|b| b.target)
    }
}

impl Inner {
    /// [`Driver::park`](super::Driver::park) with batching on: a wait for the batch target,
    /// bounded by the min-wait, then the target adjusted to what came (see `Batch`). `batch` is the loop's
    /// (`self.batch`, which nothing else changes meanwhile); adjusted, it is stored back. Out
    /// of line: a loop without `Builder::batch_wait` never comes here.
    #[inline(never)]
    pub(super) fn park_batch(
        &mut self,
        mut batch: Batch,
        timeout: Option<Duration>,
        before: u64,
        closes_before: u32,
    ) -> io::Result<()> {
        let cap = (self.owned / 4).max(1) as u32;
        let want = batch.want(cap);
        // A wait for one drops the min-wait (see `Inner::enter`).
        let r = self.enter(want, timeout, batch.wait_us);
        let got = self.reaped_besides_closes(before, closes_before);
        if got == 0 {
            self.empty_waits += 1;
        }
        // The tries' CQEs were posted while the enter submitted them: the loop's own echo,
        // not what arrived. Counted in, they masked a wait that ran out its min-wait short
        // of its target (eight tries and two arrivals met a target of eight) and doubled the
        // pace a server's replies were judged by. (`empty_waits` above keeps them: a wait
        // that did not ask past its tries, see `Inner::enter`, ends at a try's CQE so that the
        // loop can resume a short one, a wake-up with work in it.)
        let got = got.saturating_sub(self.tries_entered);
        // The turn runs from the end of the last wait to the end of this one: its pace is
        // how fast completions arrive, whatever the loop did in between.
        let now = std::time::Instant::now();
        let pace = batch.last_wait_end.map_or(u32::MAX, |t| {
            batch.pace(got, now.saturating_duration_since(t))
        });
        batch.last_wait_end = Some(now);
        batch.adjust(got, cap, pace);
        self.batch = Some(batch);
        r
    }

    /// [`Driver::park`](super::Driver::park) under valgrind (see
    /// `sys::valgrind_poll_interval`): submits and looks for completions without blocking,
    /// and sleeps `interval` between looks, until one comes or `timeout` passes.
    #[cold]
    #[inline(never)]
    pub(super) fn park_polling(
        &mut self,
        interval: Duration,
        timeout: Option<Duration>,
        before: u64,
        closes_before: u32,
    ) -> io::Result<()> {
        let start = Instant::now();
        loop {
            self.enter(0, None, 0)?;
            if self.reaped_besides_closes(before, closes_before) > 0 {
                return Ok(());
            }
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            if left == Some(Duration::ZERO) {
                self.empty_waits += 1;
                return Ok(());
            }
            std::thread::sleep(left.map_or(interval, |l| l.min(interval)));
        }
    }

    /// The spin before a wait for one with `timeout` (out of line: the loop's every turn
    /// goes through `Driver::park`, which a loop that never spins should not pay for in code
    /// size). The spin is bounded by the timeout, whose rest the sleep then gets.
    #[inline(never)]
    pub(super) fn spin_first(
        &mut self,
        spin: Duration,
        timeout: Option<Duration>,
    ) -> io::Result<Spun> {
        let Some(t) = timeout else {
            return Ok(if self.spin(spin)? {
                Spun::Arrived
            } else {
                Spun::Sleep(None)
            });
        };
        let start = Instant::now();
        if self.spin(t.min(spin))? {
            return Ok(Spun::Arrived);
        }
        let rest = t.saturating_sub(start.elapsed());
        Ok(if rest.is_zero() {
            Spun::TimedOut
        } else {
            Spun::Sleep(Some(rest))
        })
    }

    /// Spins for up to `budget` before a wait sleeps (`Builder::spin_before_sleep`):
    /// submits what is queued, then watches the rings and enters the kernel only once it has
    /// completions to post (`IORING_SQ_TASKRUN`, with the ring's `TASKRUN_FLAG`), or has
    /// posted some (the CQ ring, where it posts them at once) or holds some back (a CQ
    /// overflow). Returns whether completions came in besides closes', the loop's own echo
    /// of its submissions; a reply tried at submit counts, since its owner must see a short
    /// one. Nothing waits in the kernel meanwhile, so whatever completes wakes no thread.
    pub(super) fn spin(&mut self, budget: Duration) -> io::Result<bool> {
        let before = self.reaped;
        let closes_before = self.closes_in_flight;
        let start = Instant::now();
        if !self.ring()?.submission().is_empty() {
            self.enter(0, None, 0)?;
            if self.reaped_besides_closes(before, closes_before) > 0 {
                return Ok(true);
            }
        }
        loop {
            for _ in 0..SPIN_POLLS_PER_CLOCK {
                if self.kernel_has_completions()? {
                    self.enter(0, None, 0)?;
                    if self.reaped_besides_closes(before, closes_before) > 0 {
                        return Ok(true);
                    }
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= budget {
                return Ok(false);
            }
        }
    }

    /// Whether an enter would reap anything: CQEs posted, completions the kernel holds for
    /// this thread to post (deferred task work, flagged in the SQ ring), or an overflow.
    #[inline]
    fn kernel_has_completions(&mut self) -> io::Result<bool> {
        let ring = self.ring()?;
        if !ring.completion().is_empty() {
            return Ok(true);
        }
        let sq = ring.submission();
        Ok(sq.taskrun() || sq.cq_overflow())
    }
}
