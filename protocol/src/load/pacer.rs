//! Sub-millisecond wake-ups for many tasks, from one spinning task.
//!
//! Tokio's timer fires on millisecond ticks, up to a millisecond (and a
//! tick) late; an open-loop send that late counts the delay as the
//! server's latency. The first fix had each connection's task sleep on
//! the timer until [`SPIN`] before its send, then `yield_now` until the
//! send was due. At 10,000 connections and 20,000 sends a second some
//! thirty tasks were spinning at any moment, each pass through the
//! scheduler a task switch, a clock read and a wake: a profile of the
//! generator put a quarter of its core there (`clock_gettime` 11 %, task
//! state transitions and wakes 11 %), time the connections' QUIC work
//! then lacked. Here the tasks still sleep on the timer until [`SPIN`]
//! before, then hand their waker to the [`Pacer`], whose one task spins
//! (reads the clock once a pass, yields between passes) and wakes each
//! waiter when its time has come.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How close to a due time a waiter stops sleeping on tokio's timer and
/// waits on the pacer instead: the timer's tick plus its lateness.
pub(super) const SPIN: Duration = Duration::from_micros(1_500);

/// One waiter: its due time, its order of arrival (ties), its waker.
struct Waiter {
    due: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    /// Earliest first.
    heap: BinaryHeap<Reverse<Waiter>>,
    seq: u64,
}

/// Wakes tasks at their due times to within a scheduler pass. Run
/// [`Pacer::run`] on one task; other tasks call [`Pacer::sleep_until`].
#[derive(Default)]
pub(super) struct Pacer {
    queue: Mutex<Queue>,
    /// Wakes the pacer's task when a waiter arrives at an empty queue.
    arrived: Notify,
}

impl Pacer {
    /// Sleeps until `due`: on tokio's timer until [`SPIN`] before, then
    /// on the pacer.
    pub(super) async fn sleep_until(&self, due: Instant) {
        if let Some(coarse) = due.checked_sub(SPIN)
            && Instant::now() < coarse
        {
            tokio::time::sleep_until(coarse).await;
        }
        Until {
            pacer: self,
            due,
            registered: false,
        }
        .await;
    }

    fn register(&self, due: Instant, waker: Waker) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = q.heap.is_empty();
            q.seq = q.seq.wrapping_add(1);
            let seq = q.seq;
            q.heap.push(Reverse(Waiter { due, seq, waker }));
            was_empty
        };
        if was_empty {
            // A permit is kept if the pacer is not waiting yet: no lost
            // wake-up between its look at the queue and its wait.
            self.arrived.notify_one();
        }
    }

    /// The pacer's loop; runs until the task is aborted. Idle (awaiting a
    /// waiter) while nobody waits; otherwise one pass per scheduler turn:
    /// read the clock, wake whoever is due, yield. Waiters register only
    /// within [`SPIN`] of their time, so it spins only then.
    pub(super) async fn run(&self) {
        let mut due = Vec::new();
        loop {
            let empty = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while q.heap.peek().is_some_and(|w| w.0.due <= now) {
                    if let Some(Reverse(w)) = q.heap.pop() {
                        due.push(w.waker);
                    }
                }
                q.heap.is_empty()
            };
            // Woken outside the lock: a woken task may register again.
            for waker in due.drain(..) {
                waker.wake();
            }
            if empty {
                self.arrived.notified().await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// A wait on the pacer for `due`.
struct Until<'a> {
    pacer: &'a Pacer,
    due: Instant,
    registered: bool,
}

impl Future for Until<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.due {
            return Poll::Ready(());
        }
        // Registered once: a spurious poll (another branch of a `select!`
        // woke the task) is answered by the same waker, which the pacer
        // still holds. A waiter dropped before its time leaves its entry
        // behind: the pacer wakes a task that no longer waits, harmless.
        if !self.registered {
            self.pacer.register(self.due, cx.waker().clone());
            self.registered = true;
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A pacer and its running task (abort it at the end).
    fn started() -> (Arc<Pacer>, tokio::task::JoinHandle<()>) {
        let pacer = Arc::new(Pacer::default());
        let runner = tokio::spawn({
            let pacer = Arc::clone(&pacer);
            async move { pacer.run().await }
        });
        (pacer, runner)
    }

    /// Many waiters with due times spread over a few milliseconds all
    /// wake (none is lost), none before its time. How late they wake is
    /// the load generator's `lag` figure, measured in benchmarks.
    #[tokio::test(flavor = "current_thread")]
    async fn every_waiter_wakes_and_none_before_its_time() {
        let (pacer, runner) = started();
        let start = Instant::now() + Duration::from_millis(5);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u64 {
            let pacer = Arc::clone(&pacer);
            let due = start + Duration::from_micros(i * 37 % 4_000);
            tasks.spawn(async move {
                pacer.sleep_until(due).await;
                Instant::now() >= due
            });
        }
        let all = tokio::time::timeout(Duration::from_secs(10), async {
            let mut on_time = 0;
            while let Some(r) = tasks.join_next().await {
                on_time += usize::from(r.unwrap());
            }
            on_time
        })
        .await
        .expect("a waiter was never woken");
        runner.abort();
        assert_eq!(all, 200);
    }

    /// A waiter registered while the pacer idles wakes it; a waiter
    /// dropped before its time does not stop the others.
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_pacer_wakes_for_a_new_waiter_and_survives_dropped_ones() {
        let (pacer, runner) = started();
        // Let the pacer reach its idle wait.
        tokio::task::yield_now().await;
        let soon = Instant::now() + Duration::from_micros(300);
        // A waiter given up on before its time.
        let dropped = tokio::time::timeout(
            Duration::from_micros(100),
            pacer.sleep_until(soon + Duration::from_millis(1)),
        )
        .await;
        assert!(dropped.is_err(), "the dropped waiter cannot have finished");
        pacer.sleep_until(soon).await;
        assert!(Instant::now() >= soon);
        runner.abort();
    }
}
