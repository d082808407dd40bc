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
//! Deployment-wide and per-instance limits. A webhook's own
//! `max_concurrency` and its rate limit (its own `rate_limit_per_sec`, or a
//! non-zero `default_rate_limit_per_sec`) hold for the whole deployment,
//! however many instances run: such a webhook is *limited*, and its rows are
//! claimed apart (`limits`), under a lock on its state row, counting every
//! instance's live leases and spending the rate tokens kept in that row.
//! What protects an instance's own slots stays per instance, counted here:
//! `max_in_flight`, the fair shares, the bytes in flight and the default
//! `max_concurrency` (a webhook without its own concurrency may hold that
//! many per instance). A webhook with none of its own limits and no default
//! rate is claimed as before, in one statement that touches nothing of the
//! limited path.
//!
//! Waiting. A limited webhook blocked at a claim is not looked at again
//! before it may take something (a hold-off, see [`Blocked`]): until its
//! next token (the database's clock, reported by the claim); at its
//! concurrency, until one of this instance's deliveries of it ends (which
//! wakes the claimer) or, since another instance's deliveries ending is not
//! signalled, after a poll of [`CAP_POLL_MIN`] doubling to [`CAP_POLL_MAX`]
//! while it stays full; while another instance holds its lock (claiming it
//! now), after [`LOCKED_POLL`]. Its rows stay `pending` and untouched all
//! the while.

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

/// The first look again at a limited webhook held at its concurrency by
/// other instances' deliveries (their ending is not signalled here).
pub const CAP_POLL_MIN: Duration = Duration::from_millis(25);
/// The longest: a receiver that hangs costs each instance a few claims a
/// second, not forty.
pub const CAP_POLL_MAX: Duration = Duration::from_millis(400);
/// The look again at a limited webhook whose lock another instance held:
/// that instance was claiming it, and is done within milliseconds.
pub const LOCKED_POLL: Duration = Duration::from_millis(25);

/// A webhook's limits in force (the webhook's own, else the configured defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: u32,
    /// Requests per second; 0 = unlimited. The burst is one second's worth.
    /// Counted deployment-wide by the limited claim (`limits`), not here.
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

/// Why a limited claim left a webhook's due rows where they are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Blocked {
    /// At its own max_concurrency, counted over every instance.
    Cap,
    /// Out of rate tokens; the next one comes after this long.
    Rate(Duration),
    /// Another instance held its state row's lock (it was claiming it).
    Locked,
}

struct Webhook {
    limits: Limits,
    /// Deliveries of this webhook in flight here (claimed, outcome not yet written).
    held: usize,
}

/// A limited webhook not to be claimed before `until`.
struct HoldOff {
    until: Instant,
    /// Lifted early when one of this instance's deliveries of it ends.
    at_cap: bool,
    /// Claims in a row that found it at its concurrency with nothing taken.
    streak: u32,
}

/// What the claim may take, per webhook this instance is tracking (webhooks
/// absent here have nothing in flight here).
#[derive(Debug, Default)]
pub struct Quotas {
    pub webhook_ids: Vec<Uuid>,
    pub held: Vec<i32>,
    /// Webhooks that may take nothing now, whatever they have due.
    pub blocked: Vec<Uuid>,
    /// The earliest time a blocked limited webhook is looked at again.
    pub next_token_in: Option<Duration>,
    /// Payload bytes a claim may still take (<= 0: none, unless `idle`).
    pub bytes_room: i64,
    /// Nothing in flight: one row goes whatever its size.
    pub idle: bool,
}

impl Quotas {
    /// Whether a limited webhook is held off now (not worth a limited claim).
    pub fn is_blocked(&self, webhook: &Uuid) -> bool {
        self.blocked.contains(webhook)
    }
}

/// What is in flight here, under one lock.
#[derive(Default)]
struct InFlight {
    webhooks: HashMap<Uuid, Webhook>,
    /// Payload bytes.
    bytes: usize,
    hold_offs: HashMap<Uuid, HoldOff>,
    /// Deliveries released so far: a limited claim that found a webhook at
    /// its concurrency holds it off only if none ended meanwhile (that one
    /// may have been the release that would have lifted the hold-off).
    releases: u64,
}

impl InFlight {
    /// Adds the hold-offs in force to `q`. An expired one is kept a little
    /// (not blocking), so a webhook that stays full keeps its growing poll.
    fn apply_hold_offs(&mut self, now: Instant, q: &mut Quotas) {
        self.hold_offs
            .retain(|_, h| h.until + CAP_POLL_MAX * 4 > now);
        for (id, h) in &self.hold_offs {
            if h.until > now {
                if !q.blocked.contains(id) {
                    q.blocked.push(*id);
                }
                let left = h.until - now;
                q.next_token_in = Some(q.next_token_in.map_or(left, |t| t.min(left)));
            }
        }
    }
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
            if w.held == 0 {
                return false;
            }
            // This instance's count: a webhook's own max_concurrency is
            // counted over every instance by the limited claim, but one
            // already reached here is reached everywhere.
            let at_cap = w.held >= w.limits.max_concurrency as usize;
            let no_share = !may_grow(w.held);
            if at_cap || no_share {
                q.blocked.push(*id);
            }
            waits_for_slots |= at_cap || no_share;
            q.webhook_ids.push(*id);
            q.held.push(w.held.min(i32::MAX as usize) as i32);
            true
        });
        state.apply_hold_offs(now, &mut q);
        q.bytes_room = self.cfg.max_bytes_in_flight as i64 - state.bytes as i64;
        q.idle = state.bytes == 0 && free == self.cfg.max_in_flight;
        self.wake_on_free.store(
            waits_for_slots || free == 0 || q.bytes_room <= 0,
            Ordering::Release,
        );
        drop(state);
        q
    }

    /// Deliveries released so far (see [`Admission::limited_outcome`]).
    pub fn releases(&self) -> u64 {
        self.in_flight.lock().expect("admission lock").releases
    }

    /// Records what a limited claim found for `webhook`: `claimed` rows taken,
    /// and why it may take no more now (None: it may; a hold-off goes). A
    /// `Blocked::Cap` with `releases` (read before the claim) behind the
    /// count now is not held off: a delivery ended since, maybe of it.
    pub fn limited_outcome(
        &self,
        webhook: Uuid,
        claimed: usize,
        blocked: Option<Blocked>,
        releases: u64,
    ) {
        let now = Instant::now();
        let mut state = self.in_flight.lock().expect("admission lock");
        let released_since = state.releases != releases;
        let Some(blocked) = blocked else {
            state.hold_offs.remove(&webhook);
            return;
        };
        let h = state.hold_offs.entry(webhook).or_insert(HoldOff {
            until: now,
            at_cap: false,
            streak: 0,
        });
        match blocked {
            Blocked::Rate(wait) => {
                *h = HoldOff {
                    until: now + wait,
                    at_cap: false,
                    streak: 0,
                }
            }
            Blocked::Locked => {
                h.until = now + LOCKED_POLL;
                h.at_cap = false;
            }
            Blocked::Cap if released_since => {
                h.until = now;
                h.at_cap = false;
                h.streak = 0;
            }
            Blocked::Cap => {
                h.streak = if claimed > 0 {
                    0
                } else {
                    h.streak.saturating_add(1)
                };
                let wait = CAP_POLL_MIN
                    .saturating_mul(1u32 << h.streak.min(16))
                    .min(CAP_POLL_MAX);
                h.until = now + wait;
                h.at_cap = true;
            }
        }
    }

    /// Adds the hold-offs recorded since `q` was made to it.
    pub fn apply_hold_offs(&self, q: &mut Quotas) {
        let now = Instant::now();
        self.in_flight
            .lock()
            .expect("admission lock")
            .apply_hold_offs(now, q);
    }

    /// Counts one claimed row of `webhook` as in flight.
    /// `bytes`: the row's payload as claimed.
    pub fn admit(self: &Arc<Self>, webhook: Uuid, limits: Limits, bytes: usize) -> WebhookSlot {
        let mut state = self.in_flight.lock().expect("admission lock");
        state.bytes += bytes;
        let w = state
            .webhooks
            .entry(webhook)
            .or_insert(Webhook { limits, held: 0 });
        // Changed settings apply from this claim on.
        w.limits = limits;
        w.held += 1;
        WebhookSlot {
            admission: self.clone(),
            webhook,
            bytes,
        }
    }

    fn release(&self, webhook: Uuid, bytes: usize) {
        let mut state = self.in_flight.lock().expect("admission lock");
        state.bytes = state.bytes.saturating_sub(bytes);
        state.releases += 1;
        if let Some(w) = state.webhooks.get_mut(&webhook) {
            w.held = w.held.saturating_sub(1);
        }
        // A webhook held off at its concurrency may take this one's place.
        let lifted = state
            .hold_offs
            .get(&webhook)
            .is_some_and(|h| h.at_cap && h.until > Instant::now());
        if lifted {
            state.hold_offs.remove(&webhook);
        }
        let wake = self.wake_on_free.swap(false, Ordering::AcqRel) || lifted;
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
    fn a_rate_blocked_webhook_is_held_off_until_its_next_token() {
        let a = admission(16, UNLIMITED);
        let id = Uuid::new_v4();
        a.limited_outcome(id, 3, Some(Blocked::Rate(Duration::from_millis(300))), 0);
        let q = a.quotas(16);
        assert_eq!(q.blocked, vec![id]);
        let next = q.next_token_in.expect("a wake time");
        assert!(next <= Duration::from_millis(300), "{next:?}");
        // A delivery of it ending gives no token back.
        let s = a.admit(id, a.limits(None, Some(5)), 1);
        drop(s);
        assert_eq!(a.quotas(16).blocked, vec![id]);
        // A claim that may take again lifts it.
        a.limited_outcome(id, 1, None, a.releases());
        assert!(a.quotas(16).blocked.is_empty());
    }

    #[test]
    fn a_webhook_full_elsewhere_is_polled_ever_less_often_and_freed_by_a_release_here() {
        let a = admission(16, UNLIMITED);
        let id = Uuid::new_v4();
        let mut waits = Vec::new();
        for _ in 0..6 {
            a.limited_outcome(id, 0, Some(Blocked::Cap), a.releases());
            waits.push(a.quotas(16).next_token_in.expect("a poll time"));
        }
        assert!(waits[0] <= CAP_POLL_MIN * 2, "{waits:?}");
        assert!(waits[1] > CAP_POLL_MIN * 2, "the poll doubles: {waits:?}");
        assert!(
            waits[5] <= CAP_POLL_MAX && waits[5] > CAP_POLL_MAX / 2,
            "{waits:?}"
        );
        // One of its deliveries here ending lifts the hold-off at once.
        let s = a.admit(id, a.limits(Some(2), None), 1);
        a.limited_outcome(id, 0, Some(Blocked::Cap), a.releases());
        assert_eq!(a.quotas(15).blocked, vec![id]);
        drop(s);
        assert!(a.quotas(16).blocked.is_empty());
        // A release between the claim's start and its outcome: no hold-off.
        let mark = a.releases();
        drop(a.admit(Uuid::new_v4(), UNLIMITED, 1));
        a.limited_outcome(id, 0, Some(Blocked::Cap), mark);
        assert!(a.quotas(16).blocked.is_empty());
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
