//! Fair admission to the inference engine: when vLLM has more requests waiting for a place in
//! its batch than a threshold, Vault stops adding to its queue and holds new requests in its
//! own, one lane per user (a key without a user is a lane of its own), admitting them in
//! weighted turns as requests end. A script flooding the box then waits behind everyone
//! else's single requests instead of in front of them.
//!
//! Vault cannot see the engine's batch size, only what its `/metrics` gauges say, read every
//! [`POLL_EVERY`] while requests are under way. From each reading it sets how many requests
//! it keeps in flight upstream: above the threshold, what it has now less the excess; at or
//! below it, what it has plus the room left, doubling when nobody waits at all. Requests
//! Vault sent that the engine counts neither as running nor as waiting count as waiting:
//! the gauges lag behind, and room they do not show yet is not room. A request that finds
//! that many in flight queues; while the last reading showed room, it asks for a reading at
//! once rather than waiting for the next tick, so a burst reaches the engine in a few quick
//! steps and a flood is caught before it fills the engine's own queue.
//!
//! While the upstream serves no such gauges (a 404, or a page without them), nothing is
//! held back (one warning): only the keys' own concurrency limits apply; it is asked again
//! every [`RECHECK_EVERY`]. A reading that fails (vLLM busy, restarting) changes nothing:
//! the last limit holds, and requests that end still admit the next.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::{EngineLoad, InferenceBackend};
use crate::error::{ErrorCode, ErrorKind, VaultError};
use crate::model::keys::Principal;

/// How often the engine's gauges are read while requests are under way.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// The least time between two readings: requests just admitted reach the engine's gauges
/// first, or the next reading would count room they already took.
const READING_GAP: Duration = Duration::from_millis(10);
/// How often an upstream without gauges is asked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// When to hold requests back, and for how long at most (`VAULT_ADMISSION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Requests vLLM may have waiting before Vault queues new ones itself.
    pub threshold: u64,
    /// The longest a request waits in Vault's queue; then it is answered 503
    /// `inference_busy`.
    pub max_wait: Duration,
}

/// Where the gate stands: counting requests (holding them back once a reading set a limit),
/// or off by configuration.
const COUNTING: u8 = 0;
const OFF: u8 = 2;

/// The gate in front of the engine, shared by every request of this gateway.
pub struct Admission {
    config: AdmissionConfig,
    mode: AtomicU8,
    queue: Mutex<Queue>,
    /// Cancelled when the gateway stops: requests still waiting are turned away.
    stopping: CancellationToken,
    /// Asks the poller for a reading now.
    probe: Notify,
    /// Wakes the poller when requests start after a quiet spell.
    traffic: Notify,
}

#[derive(Default)]
struct Queue {
    /// Requests this gateway has sent upstream and not finished.
    in_flight: u64,
    /// How many may be in flight; `None`: no reading yet, or the engine has no gauges.
    limit: Option<u64>,
    /// Whether the last reading let more requests in than were in flight: the engine had
    /// room, so a request that queues asks for a new reading at once.
    room: bool,
    probe_asked: bool,
    lanes: HashMap<String, Lane>,
    /// The lanes with requests waiting, in turn order.
    turns: VecDeque<String>,
    queued: usize,
    next_ticket: u64,
}

struct Lane {
    waiting: VecDeque<Waiter>,
    weight: u32,
    /// Admissions left in this lane's current turn.
    credit: u32,
}

struct Waiter {
    ticket: u64,
    admit: oneshot::Sender<()>,
}

/// What the gate shows on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionSnapshot {
    pub queued: u64,
    pub in_flight: u64,
    pub limit: Option<u64>,
}

/// A request's place upstream: given back when dropped, which admits the next in turn.
pub struct Entry {
    gate: Option<Arc<Admission>>,
    /// How long the request waited in the queue (`None`: it did not queue).
    pub queued: Option<Duration>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            let mut queue = gate.lock();
            queue.in_flight = queue.in_flight.saturating_sub(1);
            gate.release(&mut queue);
        }
    }
}

/// A request waiting in a lane. Dropped before it was admitted (the client left, or it
/// waited too long), it leaves its lane; admitted meanwhile, it gives its place back.
struct Pending<'a> {
    gate: &'a Arc<Admission>,
    lane: String,
    ticket: u64,
    admitted: Option<oneshot::Receiver<()>>,
}

impl Pending<'_> {
    /// Whether the place was given, checked under the queue's lock (places are only given
    /// under it), and the wait given up otherwise.
    fn settle(&mut self) -> bool {
        let mut queue = self.gate.lock();
        let given = self.admitted.take().is_some_and(|mut rx| rx.try_recv().is_ok());
        if !given {
            queue.leave(&self.lane, self.ticket);
        }
        given
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.admitted.is_some() && self.settle() {
            let mut queue = self.gate.lock();
            queue.in_flight = queue.in_flight.saturating_sub(1);
            self.gate.release(&mut queue);
        }
    }
}

impl Queue {
    fn has_place(&self) -> bool {
        self.limit.is_none_or(|limit| self.in_flight < limit)
    }

    /// Removes a waiter that gave up.
    fn leave(&mut self, lane: &str, ticket: u64) {
        let Some(entry) = self.lanes.get_mut(lane) else { return };
        if let Some(at) = entry.waiting.iter().position(|w| w.ticket == ticket) {
            entry.waiting.remove(at);
            self.queued -= 1;
        }
        if entry.waiting.is_empty() {
            self.lanes.remove(lane);
            self.turns.retain(|l| l != lane);
        }
    }

    /// The next waiter in weighted turn: a lane admits up to its weight, then goes to the
    /// back.
    fn next_waiter(&mut self) -> Option<Waiter> {
        let name = self.turns.front()?.clone();
        let lane = self.lanes.get_mut(&name)?;
        let waiter = lane.waiting.pop_front()?;
        self.queued -= 1;
        lane.credit = lane.credit.saturating_sub(1);
        if lane.waiting.is_empty() {
            self.lanes.remove(&name);
            self.turns.pop_front();
        } else if lane.credit == 0 {
            lane.credit = lane.weight;
            self.turns.rotate_left(1);
        }
        Some(waiter)
    }
}

impl Admission {
    /// The gate; `None` turns fair admission off for good. Requests still waiting when
    /// `stopping` is cancelled are turned away.
    pub fn new(config: Option<AdmissionConfig>, stopping: CancellationToken) -> Arc<Admission> {
        let (config, mode) = match config {
            Some(config) => (config, COUNTING),
            None => (AdmissionConfig { threshold: 0, max_wait: Duration::ZERO }, OFF),
        };
        Arc::new(Admission {
            config,
            mode: AtomicU8::new(mode),
            queue: Mutex::new(Queue::default()),
            stopping,
            probe: Notify::new(),
            traffic: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> AdmissionSnapshot {
        let queue = self.lock();
        AdmissionSnapshot { queued: queue.queued as u64, in_flight: queue.in_flight, limit: queue.limit }
    }

    /// Takes a place upstream for `principal`'s request, waiting in its user's lane while
    /// the engine is full, `max_wait` at most.
    pub async fn enter(self: &Arc<Self>, principal: &Principal) -> std::result::Result<Entry, Busy> {
        if self.mode.load(Ordering::Relaxed) == OFF {
            return Ok(Entry { gate: None, queued: None });
        }
        let (rx, lane, ticket) = {
            let mut queue = self.lock();
            if queue.queued == 0 && queue.has_place() {
                queue.in_flight += 1;
                if queue.in_flight == 1 {
                    self.traffic.notify_one();
                }
                return Ok(Entry { gate: Some(self.clone()), queued: None });
            }
            let (admit, rx) = oneshot::channel();
            let ticket = queue.next_ticket;
            queue.next_ticket += 1;
            let lane = match &principal.user_id {
                Some(user) => user.clone(),
                None => format!("key:{}", principal.key_id),
            };
            let weight = weight_of(principal);
            let entry = queue.lanes.entry(lane.clone()).or_insert_with(|| Lane {
                waiting: VecDeque::new(),
                weight,
                credit: weight,
            });
            // The newest request's weight: a change by an admin applies from its next turn.
            entry.weight = weight;
            let new_lane = entry.waiting.is_empty();
            entry.waiting.push_back(Waiter { ticket, admit });
            if new_lane {
                queue.turns.push_back(lane.clone());
            }
            queue.queued += 1;
            if queue.room && !queue.probe_asked {
                queue.probe_asked = true;
                self.probe.notify_one();
            }
            (rx, lane, ticket)
        };
        let since = Instant::now();
        let mut pending = Pending { gate: self, lane, ticket, admitted: Some(rx) };
        let given = match pending.admitted.as_mut() {
            Some(rx) => tokio::select! {
                given = tokio::time::timeout(self.config.max_wait, rx) => matches!(given, Ok(Ok(()))),
                _ = self.stopping.cancelled() => false,
            },
            None => false,
        };
        // Given at the last moment (as the wait ran out), it is taken.
        let given = given || pending.settle();
        pending.admitted = None;
        drop(pending);
        let queued = since.elapsed();
        if given {
            return Ok(Entry { gate: Some(self.clone()), queued: Some(queued) });
        }
        Err(Busy { queued, stopping: self.stopping.is_cancelled() })
    }

    /// Admits waiters in turn while there is room.
    fn release(&self, queue: &mut Queue) {
        while queue.has_place() {
            let Some(waiter) = queue.next_waiter() else { break };
            if waiter.admit.send(()).is_ok() {
                queue.in_flight += 1;
            }
        }
    }

    /// Sets the gate from a reading of the engine's gauges (the poller's; public for the
    /// benchmark).
    pub fn on_reading(&self, load: EngineLoad) {
        let mut queue = self.lock();
        let in_flight = queue.in_flight;
        // Sent but not counted by the engine yet: as good as waiting.
        let waiting = load.waiting.max(in_flight.saturating_sub(load.running));
        let threshold = self.config.threshold;
        let limit = if waiting > threshold {
            in_flight.saturating_sub(waiting - threshold)
        } else if waiting == 0 {
            in_flight.saturating_mul(2).max(in_flight + threshold)
        } else {
            in_flight + (threshold - waiting)
        };
        let limit = limit.max(1);
        queue.limit = Some(limit);
        queue.room = limit > in_flight;
        self.release(&mut queue);
        // Still growing towards the engine's size: look again soon.
        queue.probe_asked = queue.room && queue.queued > 0;
        if queue.probe_asked {
            self.probe.notify_one();
        }
    }

    /// The engine cannot be read now: the last limit holds, without growing.
    fn on_unreachable(&self) {
        self.lock().room = false;
    }

    /// The engine has no gauges: nothing is held back.
    fn open(&self) {
        let mut queue = self.lock();
        queue.limit = None;
        queue.room = false;
        self.release(&mut queue);
    }

    fn is_busy(&self) -> bool {
        let queue = self.lock();
        queue.in_flight > 0 || queue.queued > 0
    }

    /// Reads the engine's gauges while requests are under way, until `stopping`.
    pub async fn watch(self: Arc<Self>, backend: Arc<dyn InferenceBackend>, stopping: CancellationToken) {
        if self.mode.load(Ordering::Relaxed) == OFF {
            return;
        }
        let mut without_gauges = false;
        loop {
            match backend.engine_load().await {
                Ok(Some(load)) => {
                    if std::mem::take(&mut without_gauges) {
                        tracing::info!("the inference upstream serves its scheduler gauges: fair admission is on");
                    }
                    self.on_reading(load);
                }
                Ok(None) => {
                    if !without_gauges {
                        tracing::warn!(
                            "the inference upstream serves no vLLM scheduler gauges at /metrics: fair admission \
                             waits for them, only the keys' concurrency limits hold requests back"
                        );
                        without_gauges = true;
                        self.open();
                    }
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        _ = tokio::time::sleep(RECHECK_EVERY) => continue,
                    }
                }
                Err(_) => self.on_unreachable(),
            }
            tokio::time::sleep(READING_GAP).await;
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = self.probe.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
            while !self.is_busy() {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = self.traffic.notified() => {}
                }
            }
        }
    }
}

/// A request's share of turns: its user's weight, or for a key without a user, the key's;
/// 1 when none is set.
fn weight_of(principal: &Principal) -> u32 {
    let limits = &principal.limits;
    let own = if principal.user_id.is_some() { limits.user.weight } else { limits.key.weight };
    let weight = own.unwrap_or(1);
    u32::try_from(weight).unwrap_or(u32::MAX).max(1)
}

/// A request that waited its longest for a place in a full engine, or was waiting when the
/// gateway stopped.
#[derive(Debug)]
pub struct Busy {
    pub queued: Duration,
    pub stopping: bool,
}

impl From<Busy> for VaultError {
    /// 503 `inference_busy`, with when to try again (or `server_shutting_down`).
    fn from(busy: Busy) -> VaultError {
        if busy.stopping {
            return VaultError::new(
                ErrorKind::Unavailable,
                ErrorCode::ServerShuttingDown,
                "The gateway is stopping; the request was not sent to the inference engine.",
            )
            .with_suggestion("Retry once the gateway is back.");
        }
        VaultError::new(
            ErrorKind::UpstreamUnavailable,
            ErrorCode::InferenceBusy,
            "The inference engine is busy; the request waited its turn too long.",
        )
        .with_suggestion("Retry after the time in Retry-After.")
        .with_details(serde_json::json!({
            "queued_seconds": busy.queued.as_secs_f64(),
            "retry_after_seconds": RETRY_BUSY_AFTER.as_secs_f64(),
        }))
    }
}

/// The wait suggested to a request turned away by a full engine.
const RETRY_BUSY_AFTER: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::limits::{LimitSet, Limits};

    fn config(threshold: u64, max_wait_ms: u64) -> Option<AdmissionConfig> {
        Some(AdmissionConfig { threshold, max_wait: Duration::from_millis(max_wait_ms) })
    }

    fn who(user: &str, weight: Option<u64>) -> Principal {
        let mut principal = Principal::for_user(user);
        principal.limits = Limits { key: LimitSet::default(), user: LimitSet { weight, ..LimitSet::default() } };
        principal
    }

    fn load(running: u64, waiting: u64) -> EngineLoad {
        EngineLoad { running, waiting, kv_cache_usage: None }
    }

    /// Sends `n` requests of `user` that stay queued; each reports its order of admission.
    fn queue_up(
        gate: &Arc<Admission>,
        user: &str,
        weight: Option<u64>,
        n: usize,
        order: &Arc<Mutex<Vec<String>>>,
    ) -> Vec<tokio::task::JoinHandle<std::result::Result<Entry, Busy>>> {
        (0..n)
            .map(|_| {
                let (gate, order, principal) = (gate.clone(), order.clone(), who(user, weight));
                let user = user.to_string();
                tokio::spawn(async move {
                    let entry = gate.enter(&principal).await;
                    order.lock().unwrap().push(user);
                    entry
                })
            })
            .collect()
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Ends the requests in flight one at a time, oldest first, holding each request admitted
    /// meanwhile, until all of `waiting` are admitted.
    async fn end_in_turn(
        mut held: VecDeque<Entry>,
        mut waiting: Vec<tokio::task::JoinHandle<std::result::Result<Entry, Busy>>>,
    ) {
        while !waiting.is_empty() {
            assert!(!held.is_empty(), "requests wait with nothing in flight");
            drop(held.pop_front());
            settle().await;
            let mut i = 0;
            while i < waiting.len() {
                if waiting[i].is_finished() {
                    let entry = waiting.remove(i).await.unwrap().unwrap();
                    assert!(entry.queued.is_some());
                    held.push_back(entry);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// A gate with one place, taken by user `x` (the returned entry), and the engine full.
    async fn one_place_taken(max_wait_ms: u64, stopping: CancellationToken) -> (Arc<Admission>, Entry) {
        let gate = Admission::new(config(0, max_wait_ms), stopping);
        let held = gate.enter(&who("x", None)).await.unwrap();
        gate.on_reading(load(1, 1));
        assert_eq!(gate.snapshot().limit, Some(1));
        (gate, held)
    }

    /// A request of user `b` waiting in the background.
    fn waiting_b(gate: &Arc<Admission>) -> tokio::task::JoinHandle<std::result::Result<Entry, Busy>> {
        let gate = gate.clone();
        tokio::spawn(async move { gate.enter(&who("b", None)).await })
    }

    /// `n` requests of user `a` admitted one after another.
    async fn enter_n(gate: &Arc<Admission>, n: usize) -> Vec<Entry> {
        let mut entries = Vec::new();
        for _ in 0..n {
            entries.push(gate.enter(&who("a", None)).await.unwrap());
        }
        entries
    }

    #[tokio::test]
    async fn without_a_reading_nothing_is_held() {
        let gate = Admission::new(config(2, 1000), CancellationToken::new());
        let entries = enter_n(&gate, 50).await;
        assert!(entries.iter().all(|e| e.queued.is_none()));
        assert_eq!(gate.snapshot().in_flight, 50);
        drop(entries);
        assert_eq!(gate.snapshot().in_flight, 0);
    }

    #[tokio::test]
    async fn a_full_engine_holds_back_the_excess_and_admits_lanes_in_turn() {
        let gate = Admission::new(config(2, 5000), CancellationToken::new());
        let first: VecDeque<Entry> = enter_n(&gate, 6).await.into();
        // vLLM has 4 waiting, 2 over the threshold: Vault keeps 2 fewer in flight.
        gate.on_reading(load(2, 4));
        assert_eq!(gate.snapshot().limit, Some(4));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = queue_up(&gate, "a", None, 10, &order);
        settle().await;
        waiting.extend(queue_up(&gate, "b", None, 3, &order));
        settle().await;
        assert_eq!(gate.snapshot().queued, 13);
        end_in_turn(first, waiting).await;
        let order = order.lock().unwrap().clone();
        assert_eq!(order[..7], ["a", "b", "a", "b", "a", "b", "a"], "{order:?}");
        assert_eq!(gate.snapshot().queued, 0);
    }

    #[tokio::test]
    async fn weights_give_more_turns() {
        let (gate, held) = one_place_taken(5000, CancellationToken::new()).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = queue_up(&gate, "a", Some(3), 6, &order);
        settle().await;
        waiting.extend(queue_up(&gate, "b", None, 6, &order));
        settle().await;
        end_in_turn(VecDeque::from([held]), waiting).await;
        let order = order.lock().unwrap().clone();
        assert_eq!(order[..8], ["a", "a", "a", "b", "a", "a", "a", "b"], "{order:?}");
    }

    #[tokio::test]
    async fn a_request_waiting_too_long_is_told_the_engine_is_busy() {
        let (gate, _held) = one_place_taken(50, CancellationToken::new()).await;
        let busy = gate.enter(&who("b", None)).await.err().unwrap();
        assert!(busy.queued >= Duration::from_millis(50));
        let err = VaultError::from(busy);
        assert_eq!(err.code, ErrorCode::InferenceBusy);
        assert_eq!(err.status(), 503);
        let snapshot = gate.snapshot();
        assert_eq!((snapshot.queued, snapshot.in_flight), (0, 1), "the lane was left");
    }

    #[tokio::test]
    async fn a_client_leaving_the_queue_takes_no_place() {
        let (gate, held) = one_place_taken(5000, CancellationToken::new()).await;
        let waiting = waiting_b(&gate);
        settle().await;
        assert_eq!(gate.snapshot().queued, 1);
        waiting.abort();
        settle().await;
        assert_eq!(gate.snapshot().queued, 0);
        drop(held);
        assert_eq!(gate.snapshot().in_flight, 0);
    }

    #[tokio::test]
    async fn each_reading_sets_how_many_may_be_in_flight() {
        let gate = Admission::new(config(4, 5000), CancellationToken::new());
        let held = enter_n(&gate, 8).await;
        gate.on_reading(load(8, 0));
        assert_eq!(gate.snapshot().limit, Some(16), "nobody waits: double");
        gate.on_reading(load(6, 2));
        assert_eq!(gate.snapshot().limit, Some(10), "two wait: the threshold leaves two");
        gate.on_reading(load(2, 10));
        assert_eq!(gate.snapshot().limit, Some(2), "six too many wait");
        gate.on_reading(load(2, 0));
        assert_eq!(gate.snapshot().limit, Some(6), "six sent but not counted yet wait: two over");
        gate.on_unreachable();
        assert_eq!(gate.snapshot().limit, Some(6), "a failed reading changes nothing");
        drop(held);
    }

    /// An upstream that serves no scheduler gauges.
    struct NoGauges;

    impl InferenceBackend for NoGauges {
        fn forward<'a>(
            &'a self,
            _: super::super::Route,
            _: bytes::Bytes,
            _: bool,
            _: &'a super::super::Trace,
        ) -> futures_util::future::BoxFuture<'a, crate::error::Result<super::super::UpstreamReply>> {
            Box::pin(async { Err(VaultError::internal("forwarding", "not in this test")) })
        }
        fn list_models(&self) -> futures_util::future::BoxFuture<'_, crate::error::Result<serde_json::Value>> {
            Box::pin(async { Ok(serde_json::json!({"data": []})) })
        }
        fn is_healthy(&self) -> futures_util::future::BoxFuture<'_, bool> {
            Box::pin(async { true })
        }
    }

    #[tokio::test]
    async fn an_upstream_without_gauges_holds_nothing_back() {
        let gate = Admission::new(config(0, 5000), CancellationToken::new());
        let held = gate.enter(&who("a", None)).await.unwrap();
        gate.on_reading(load(1, 1));
        let waiting = queue_up(&gate, "b", None, 3, &Arc::new(Mutex::new(Vec::new())));
        settle().await;
        assert_eq!(gate.snapshot().queued, 3);
        let stopping = CancellationToken::new();
        let watching = tokio::spawn(gate.clone().watch(Arc::new(NoGauges), stopping.clone()));
        for request in waiting {
            let entry = tokio::time::timeout(Duration::from_secs(5), request).await.unwrap().unwrap().unwrap();
            assert!(entry.queued.is_some());
        }
        assert_eq!(gate.snapshot().limit, None);
        stopping.cancel();
        tokio::time::timeout(Duration::from_secs(5), watching).await.unwrap().unwrap();
        drop(held);
    }

    #[tokio::test]
    async fn a_request_admitted_as_its_client_leaves_gives_its_place_back() {
        let (gate, held) = one_place_taken(5000, CancellationToken::new()).await;
        let waiting = waiting_b(&gate);
        settle().await;
        // The place goes to the waiter, which is gone before it could take it.
        drop(held);
        assert_eq!((gate.snapshot().in_flight, gate.snapshot().queued), (1, 0));
        waiting.abort();
        settle().await;
        assert_eq!(gate.snapshot().in_flight, 0);
    }

    #[tokio::test]
    async fn requests_waiting_when_the_gateway_stops_are_turned_away() {
        let stopping = CancellationToken::new();
        let (gate, _held) = one_place_taken(60_000, stopping.clone()).await;
        let waiting = waiting_b(&gate);
        settle().await;
        stopping.cancel();
        let refused = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().err().unwrap();
        assert!(refused.stopping);
        assert_eq!(VaultError::from(refused).code, ErrorCode::ServerShuttingDown);
        assert_eq!(gate.snapshot().queued, 0);
    }

    #[tokio::test]
    async fn a_keys_weight_counts_only_for_a_key_without_a_user() {
        let mut principal = who("a", Some(2));
        principal.limits.key.weight = Some(9);
        assert_eq!(weight_of(&principal), 2);
        principal.limits.user.weight = None;
        assert_eq!(weight_of(&principal), 1, "a user's keys share the user's turn");
        principal.user_id = None;
        assert_eq!(weight_of(&principal), 9);
    }

    #[tokio::test]
    async fn turned_off_it_counts_nothing() {
        let gate = Admission::new(None, CancellationToken::new());
        let entry = gate.enter(&who("a", None)).await.unwrap();
        assert!(entry.gate.is_none());
        assert_eq!(gate.snapshot(), AdmissionSnapshot::default());
    }
}
