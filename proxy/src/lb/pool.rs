//! Connection circuit breaking for HTTP/1.1 upstreams, where every request
//! in flight holds a connection of its own: at most `max_connections`
//! requests hold one, at most `max_pending_requests` more wait for one, and
//! the next is refused at once (Envoy's `UO`, no queueing past the limit).
//! A waiting request gives up at its route deadline (`UT`). HTTP/2
//! upstreams multiplex requests over one connection: only the requests
//! waiting for that connection to be established count as pending there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Slots of one cluster.
#[derive(Debug, Default)]
pub struct ConnectionSlots {
    state: Mutex<SlotState>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct SlotState {
    active: usize,
    pending: usize,
}

/// Why no connection slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Every connection is busy and the pending queue is full (`UO`).
    #[error("connection pool overflow")]
    Overflow,
    /// The deadline passed while waiting for a connection (`UT`).
    #[error("timed out waiting for a connection")]
    Timeout,
}

/// A held connection slot; dropping it frees the slot for a waiter.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionSlots>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.lock().active -= 1;
        self.0.freed.notify_one();
    }
}

/// Counts one waiting request while alive.
struct Pending(Arc<ConnectionSlots>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.lock().pending -= 1;
    }
}

impl ConnectionSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests holding a connection, and requests waiting for one.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.active, s.pending)
    }

    fn try_take(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        let mut s = self.lock();
        (s.active < max).then(|| {
            s.active += 1;
            ConnectionSlot(self.clone())
        })
    }

    /// Takes a slot, waiting (until `deadline`) behind at most
    /// `max_pending` others when all `max_connections` are busy. Unset
    /// limits are unlimited.
    pub async fn acquire(
        self: &Arc<Self>,
        max_connections: Option<u32>,
        max_pending: Option<u32>,
        deadline: Option<Instant>,
    ) -> Result<ConnectionSlot, SlotError> {
        let max = max_connections.map_or(usize::MAX, |m| m as usize);
        let max_pending = max_pending.map_or(usize::MAX, |m| m as usize);
        if let Some(slot) = self.try_take(max) {
            return Ok(slot);
        }
        let _pending = {
            let mut s = self.lock();
            if s.pending >= max_pending {
                return Err(SlotError::Overflow);
            }
            s.pending += 1;
            Pending(self.clone())
        };
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(slot) = self.try_take(max) {
                return Ok(slot);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Err(SlotError::Timeout);
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// Requests of an HTTP/2 cluster waiting for a connection to be
/// established (Envoy's pending requests of an h2 pool): past
/// `max_pending_requests` the next one is refused at once (`UO`).
#[derive(Debug, Default)]
pub struct PendingRequests(AtomicUsize);

/// A counted pending request; dropping it leaves the queue.
#[derive(Debug)]
pub struct PendingSlot(Arc<PendingRequests>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PendingRequests {
    /// Counts one more waiting request unless `max` (unset: unlimited)
    /// are waiting already.
    pub fn enter(self: &Arc<Self>, max: Option<u32>) -> Option<PendingSlot> {
        let max = max.map_or(usize::MAX, |m| m as usize);
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingSlot(self.clone()))
    }

    /// Requests waiting now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waiters_queue_up_to_max_pending_then_overflow() {
        let slots = Arc::new(ConnectionSlots::default());
        let held = slots.acquire(Some(1), Some(1), None).await.unwrap();
        let s2 = slots.clone();
        let waiter = tokio::spawn(async move { s2.acquire(Some(1), Some(1), None).await });
        while slots.counts() != (1, 1) {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            slots.acquire(Some(1), Some(1), None).await.unwrap_err(),
            SlotError::Overflow
        );
        drop(held);
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(slots.counts(), (1, 0));
        drop(got);
        assert_eq!(slots.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_deadline() {
        let slots = Arc::new(ConnectionSlots::default());
        let _held = slots.acquire(Some(1), None, None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        assert_eq!(
            slots
                .acquire(Some(1), None, Some(deadline))
                .await
                .unwrap_err(),
            SlotError::Timeout
        );
        assert_eq!(slots.counts(), (1, 0));
    }

    #[tokio::test]
    async fn unset_limits_never_wait() {
        let slots = Arc::new(ConnectionSlots::default());
        let all: Vec<_> =
            futures_util::future::join_all((0..100).map(|_| slots.acquire(None, None, None))).await;
        assert!(all.iter().all(Result::is_ok));
    }

    #[test]
    fn pending_requests_past_the_limit_are_refused_and_leaving_frees_a_place() {
        let pending = Arc::new(PendingRequests::default());
        let a = pending.enter(Some(2)).unwrap();
        let _b = pending.enter(Some(2)).unwrap();
        assert!(pending.enter(Some(2)).is_none(), "third over max 2");
        drop(a);
        assert_eq!(pending.count(), 1);
        assert!(pending.enter(Some(2)).is_some());
        assert!(pending.enter(None).is_some(), "unset: unlimited");
    }
}
