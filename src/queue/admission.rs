//! Admission: how many of each webhook's due rows this instance may claim now.
//!
//! A webhook's limits (`max_concurrency`, `rate_limit_per_sec`) and its fair
//! share of the delivery slots are applied when rows are claimed, not after:
//! rows a limit keeps back stay `pending` and untouched, so a limited backlog
//! costs nothing until it may be sent. (Claiming first and deferring after made
//! 100,000 rows at 1/s cost 1.6 M row updates in 95 s.)
//!
//! Fairness. Slots go to the webhooks holding fewest first. Any webhook may
//! hold up to its light share (`light`, 1/64 of `max_in_flight`, at least 1)
//! while any slot is free; beyond that it takes a slot only while `reserve`
//! (1/8 of `max_in_flight`) stay free after it. Receivers that hang or crawl
//! keep their slots until the request timeout, so they pile up beyond their
//! light shares: together they get at most 7/8 of the slots, and a webhook
//! holding few finds a free slot at once however many deliveries the others
//! have queued. The reserve runs out only when more webhooks start hanging
//! after the others filled their 7/8 than reserve / light (8 with the default
//! 512 slots: light 8, reserve 64). One webhook alone may hold 7/8 of the
//! slots plus its light share (456 of 512). A webhook's own
//! `max_concurrency` is capped by `max_in_flight`. (A reserve of 1/4 cost
//! the single-webhook burn-down about 18% in the benchmark; 1/8 about 8%:
//! see the README's Benchmark section.)
//!
//! Bytes. Payload bytes in flight are bounded too (`max_bytes_in_flight`):
//! a claim takes rows only while their payloads fit what is left, and one
//! row whatever its size when nothing is in flight.
//!
//! The counts are this instance's: with N instances a receiver may see up to
//! N × its limits (the README says so).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

/// light = max_in_flight / LIGHT_SHARE_DIVISOR (at least 1).
pub const LIGHT_SHARE_DIVISOR: usize = 64;
/// reserve = max_in_flight / RESERVE_DIVISOR.
pub const RESERVE_DIVISOR: usize = 8;

/// A webhook's limits in force (the webhook's own, else the configured defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: u32,
    /// Requests per second; 0 = unlimited. The burst is one second's worth.
    pub rate_per_sec: u32,
}

#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub max_in_flight: usize,
    /// Payload bytes in flight at most.
    pub max_bytes_in_flight: usize,
    /// For webhooks without their own limits.
    pub defaults: Limits,
}

impl AdmissionConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_in_flight > 0,
            "admission: max_in_flight must be > 0"
        );
        anyhow::ensure!(
            self.max_bytes_in_flight > 0,
            "admission: max_bytes_in_flight must be > 0"
        );
        anyhow::ensure!(
            self.defaults.max_concurrency > 0,
            "admission: the default max_concurrency must be > 0"
        );
        Ok(())
    }

    /// What any webhook may hold while a slot is free.
    pub fn light(&self) -> usize {
        (self.max_in_flight / LIGHT_SHARE_DIVISOR).max(1)
    }

    /// Slots that only webhooks within their light share may take.
    pub fn reserve(&self) -> usize {
        self.max_in_flight / RESERVE_DIVISOR
    }
}

struct Webhook {
    limits: Limits,
    /// Deliveries of this webhook in flight here (claimed, outcome not yet written).
    held: usize,
    /// Rate tokens (meaningful when `limits.rate_per_sec > 0`); may go below
    /// zero when a claim took more than was foreseen.
    tokens: f64,
    refilled: Instant,
}

impl Webhook {
    fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            held: 0,
            tokens: f64::from(limits.rate_per_sec),
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let rate = f64::from(self.limits.rate_per_sec);
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate)
            .min(rate.max(0.0));
        self.refilled = now;
    }

    /// Whole tokens now (i32::MAX when unlimited).
    fn whole_tokens(&self) -> i32 {
        if self.limits.rate_per_sec == 0 {
            i32::MAX
        } else {
            self.tokens.floor().max(0.0) as i32
        }
    }

    /// When the next whole token arrives (None: one is there, or no rate limit).
    fn next_token_in(&self) -> Option<Duration> {
        let rate = f64::from(self.limits.rate_per_sec);
        if rate == 0.0 || self.tokens >= 1.0 {
            return None;
        }
        Some(Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }

    fn idle(&self) -> bool {
        self.held == 0
            && (self.limits.rate_per_sec == 0 || self.tokens >= f64::from(self.limits.rate_per_sec))
    }
}

/// What the claim may take, per webhook this instance is tracking (webhooks
/// absent here have nothing in flight and full rate buckets).
#[derive(Debug, Default)]
pub struct Quotas {
    pub webhook_ids: Vec<Uuid>,
    pub held: Vec<i32>,
    /// Whole rate tokens available now (i32::MAX: no rate limit).
    pub tokens: Vec<i32>,
    /// Webhooks that may take nothing now, whatever they have due.
    pub blocked: Vec<Uuid>,
    /// The earliest time a rate-blocked webhook gets a token back.
    pub next_token_in: Option<Duration>,
    /// Payload bytes a claim may still take (<= 0: none, unless `idle`).
    pub bytes_room: i64,
    /// Nothing in flight: one row goes whatever its size.
    pub idle: bool,
}

/// What is in flight here, under one lock.
#[derive(Default)]
struct InFlight {
    webhooks: HashMap<Uuid, Webhook>,
    /// Payload bytes.
    bytes: usize,
}

/// The per-webhook counts, shared by the claimer (which admits rows) and the
/// slots it hands out (which release them when the outcome is written).
pub struct Admission {
    cfg: AdmissionConfig,
    in_flight: Mutex<InFlight>,
    /// Set when a claim left webhooks blocked on slots: the next slot freed
    /// wakes the claimer. Stored and swapped under the `in_flight` lock, so a
    /// release between a claim's counts and its flag is never missed.
    wake_on_free: AtomicBool,
    wake: Arc<Notify>,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig, wake: Arc<Notify>) -> anyhow::Result<Arc<Self>> {
        cfg.validate()?;
        Ok(Arc::new(Self {
            cfg,
            in_flight: Mutex::new(InFlight::default()),
            wake_on_free: AtomicBool::new(false),
            wake,
        }))
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// The limits in force for a webhook's own settings.
    pub fn limits(&self, max_concurrency: Option<u32>, rate_per_sec: Option<u32>) -> Limits {
        Limits {
            max_concurrency: max_concurrency
                .unwrap_or(self.cfg.defaults.max_concurrency)
                .clamp(1, self.cfg.max_in_flight.min(u32::MAX as usize) as u32),
            rate_per_sec: rate_per_sec.unwrap_or(self.cfg.defaults.rate_per_sec),
        }
    }

    /// The quotas for a claim when `free` delivery slots are free.
    pub fn quotas(&self, free: usize) -> Quotas {
        let now = Instant::now();
        let mut q = Quotas::default();
        let (light, reserve) = (self.cfg.light(), self.cfg.reserve());
        let may_grow = |held: usize| free > 0 && (held < light || free > reserve);
        let mut waits_for_slots = false;
        let mut state = self.in_flight.lock().expect("admission lock");
        state.webhooks.retain(|id, w| {
            w.refill(now);
            if w.idle() {
                return false;
            }
            let tokens = w.whole_tokens();
            let at_cap = w.held >= w.limits.max_concurrency as usize;
            let no_token = tokens == 0;
            let no_share = !may_grow(w.held);
            if at_cap || no_token || no_share {
                q.blocked.push(*id);
            }
            waits_for_slots |= at_cap || no_share;
            if no_token && !at_cap {
                q.next_token_in = match (q.next_token_in, w.next_token_in()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            q.webhook_ids.push(*id);
            q.held.push(w.held.min(i32::MAX as usize) as i32);
            q.tokens.push(tokens);
            true
        });
        q.bytes_room = self.cfg.max_bytes_in_flight as i64 - state.bytes as i64;
        q.idle = state.bytes == 0 && free == self.cfg.max_in_flight;
        self.wake_on_free.store(
            waits_for_slots || free == 0 || q.bytes_room <= 0,
            Ordering::Release,
        );
        drop(state);
        q
    }

    /// Counts one claimed row of `webhook` as in flight and takes its rate token.
    /// `bytes`: the row's payload as claimed.
    pub fn admit(self: &Arc<Self>, webhook: Uuid, limits: Limits, bytes: usize) -> WebhookSlot {
        let now = Instant::now();
        let mut state = self.in_flight.lock().expect("admission lock");
        state.bytes += bytes;
        let w = state
            .webhooks
            .entry(webhook)
            .or_insert_with(|| Webhook::new(limits, now));
        if w.limits != limits {
            // Changed settings start a fresh bucket (as a new webhook would).
            let held = w.held;
            *w = Webhook::new(limits, now);
            w.held = held;
        }
        w.refill(now);
        w.held += 1;
        if limits.rate_per_sec > 0 {
            w.tokens -= 1.0;
        }
        WebhookSlot {
            admission: self.clone(),
            webhook,
            bytes,
        }
    }

    fn release(&self, webhook: Uuid, bytes: usize) {
        let mut state = self.in_flight.lock().expect("admission lock");
        state.bytes = state.bytes.saturating_sub(bytes);
        if let Some(w) = state.webhooks.get_mut(&webhook) {
            w.held = w.held.saturating_sub(1);
        }
        let wake = self.wake_on_free.swap(false, Ordering::AcqRel);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The next release wakes the claimer (a claim found nothing it may take).
    pub fn wake_on_release(&self) {
        let state = self.in_flight.lock().expect("admission lock");
        if state.webhooks.values().any(|w| w.held > 0) {
            self.wake_on_free.store(true, Ordering::Release);
        }
    }

    /// Deliveries of `webhook` in flight here (for tests and the admin).
    pub fn held(&self, webhook: Uuid) -> usize {
        self.in_flight
            .lock()
            .expect("admission lock")
            .webhooks
            .get(&webhook)
            .map_or(0, |w| w.held)
    }
}

/// One admitted delivery of a webhook: released when dropped (after its outcome
/// is written, with the delivery slot).
pub struct WebhookSlot {
    admission: Arc<Admission>,
    webhook: Uuid,
    bytes: usize,
}

impl Drop for WebhookSlot {
    fn drop(&mut self) {
        self.admission.release(self.webhook, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_in_flight: usize, defaults: Limits) -> Arc<Admission> {
        Admission::new(
            AdmissionConfig {
                max_in_flight,
                max_bytes_in_flight: 1 << 20,
                defaults,
            },
            Arc::new(Notify::new()),
        )
        .unwrap()
    }

    const UNLIMITED: Limits = Limits {
        max_concurrency: 64,
        rate_per_sec: 0,
    };

    #[test]
    fn a_webhook_at_its_concurrency_is_blocked_until_a_slot_is_released() {
        let a = admission(16, UNLIMITED);
        let id = Uuid::new_v4();
        let lim = a.limits(Some(2), None);
        let s1 = a.admit(id, lim, 100);
        let _s2 = a.admit(id, lim, 100);
        let q = a.quotas(14);
        assert_eq!(q.blocked, vec![id]);
        assert_eq!(q.held, vec![2]);
        drop(s1);
        assert!(a.quotas(15).blocked.is_empty());
        assert_eq!(a.held(id), 1);
    }

    #[test]
    fn rate_tokens_are_taken_at_admission_and_a_spent_bucket_blocks() {
        let a = admission(16, UNLIMITED);
        let id = Uuid::new_v4();
        let lim = a.limits(None, Some(5));
        let slots: Vec<_> = (0..5).map(|_| a.admit(id, lim, 100)).collect();
        drop(slots);
        let q = a.quotas(16);
        assert_eq!(q.tokens, vec![0]);
        assert_eq!(q.blocked, vec![id]);
        let next = q.next_token_in.expect("a token time");
        assert!(next <= Duration::from_millis(200), "{next:?}");
    }

    #[test]
    fn beyond_its_light_share_a_webhook_leaves_the_reserve() {
        // 64 slots: light share 1, reserve 8.
        let a = admission(64, UNLIMITED);
        let id = Uuid::new_v4();
        let lim = a.limits(Some(1000), None);
        assert_eq!(lim.max_concurrency, 64, "capped by max_in_flight");
        let mut held: Vec<_> = (0..55).map(|_| a.admit(id, lim, 100)).collect();
        assert!(a.quotas(9).blocked.is_empty(), "9 free: one more leaves 8");
        held.push(a.admit(id, lim, 100));
        assert_eq!(a.quotas(8).blocked, vec![id]);
        // Within its light share a webhook may take the reserve.
        let other = Uuid::new_v4();
        let one = a.admit(other, lim, 100);
        let q = a.quotas(7);
        assert!(q.blocked.contains(&id) && q.blocked.contains(&other));
        drop((held, one));
        assert_eq!(
            a.quotas(64).bytes_room,
            1 << 20,
            "bytes released with the slots"
        );
        let q = a.quotas(64);
        assert!(q.blocked.is_empty());
        assert!(q.webhook_ids.is_empty(), "an idle webhook is forgotten");
    }
}
