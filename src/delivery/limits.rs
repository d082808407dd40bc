//! Per-webhook limits, per instance: a concurrency limit and a token-bucket
//! rate limit, so one burst never floods a receiver and one slow receiver never
//! holds every delivery slot. What cannot go out soon waits in the queue
//! (the delivery is deferred: back to `pending`, no attempt counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// When a limit is hit and no slot is expected soon, retry this much later.
pub const DEFER_WHEN_BUSY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: u32,
    /// 0 = unlimited.
    pub rate_per_sec: u32,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct WebhookLimiter {
    limits: Limits,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    bucket: Mutex<Bucket>,
}

impl WebhookLimiter {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            waiting: AtomicUsize::new(0),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limits.rate_per_sec.max(1)),
                last: Instant::now(),
            }),
        }
    }

    /// Takes a token now or reserves the next one; returns how long to wait for it,
    /// or `Err(wait)` (nothing reserved) when that would exceed `max_wait`.
    fn take_token(&self, max_wait: Duration) -> Result<Duration, Duration> {
        let rate = f64::from(self.limits.rate_per_sec);
        if rate == 0.0 {
            return Ok(Duration::ZERO);
        }
        let burst = rate; // one second's worth
        let mut b = self.bucket.lock().expect("limiter lock");
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        let wait = Duration::from_secs_f64(((1.0 - b.tokens) / rate).max(0.0));
        if wait > max_wait {
            return Err(wait);
        }
        b.tokens -= 1.0;
        Ok(wait)
    }
}

/// The limiters of every webhook this instance has seen.
#[derive(Default)]
pub struct LimiterRegistry {
    map: Mutex<HashMap<Uuid, Arc<WebhookLimiter>>>,
}

/// Held while a request is in flight; frees the webhook's slot when dropped.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl LimiterRegistry {
    fn get(&self, webhook: Uuid, limits: Limits) -> Arc<WebhookLimiter> {
        let mut map = self.map.lock().expect("registry lock");
        match map.get(&webhook) {
            Some(l) if l.limits == limits => l.clone(),
            _ => {
                let l = Arc::new(WebhookLimiter::new(limits));
                map.insert(webhook, l.clone());
                l
            }
        }
    }

    /// Waits (at most `max_wait`) for a concurrency slot and a rate token.
    /// `Err(d)`: not within `max_wait`; defer the delivery by `d`.
    pub async fn acquire(
        &self,
        webhook: Uuid,
        limits: Limits,
        max_wait: Duration,
    ) -> Result<Slot, Duration> {
        let limiter = self.get(webhook, limits);
        let deadline = Instant::now() + max_wait;
        let permit = match limiter.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Bound the local line: at most as many waiting as may run, the
                // rest wait in the queue where other instances can take them.
                if limiter.waiting.fetch_add(1, Ordering::AcqRel) >= limits.max_concurrency as usize
                {
                    limiter.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(DEFER_WHEN_BUSY);
                }
                let got =
                    tokio::time::timeout(max_wait, limiter.slots.clone().acquire_owned()).await;
                limiter.waiting.fetch_sub(1, Ordering::AcqRel);
                match got {
                    Ok(Ok(p)) => p,
                    _ => return Err(DEFER_WHEN_BUSY),
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match limiter.take_token(left) {
            Ok(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(Slot(permit))
            }
            Err(wait) => Err(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrency_limit_holds_and_frees() {
        let reg = LimiterRegistry::default();
        let id = Uuid::new_v4();
        let lim = Limits {
            max_concurrency: 2,
            rate_per_sec: 0,
        };
        let a = reg.acquire(id, lim, Duration::ZERO).await.unwrap();
        let _b = reg.acquire(id, lim, Duration::ZERO).await.unwrap();
        assert!(reg
            .acquire(id, lim, Duration::from_millis(5))
            .await
            .is_err());
        drop(a);
        assert!(reg.acquire(id, lim, Duration::ZERO).await.is_ok());
    }

    #[tokio::test]
    async fn rate_limit_defers_beyond_the_wait_bound() {
        let reg = LimiterRegistry::default();
        let id = Uuid::new_v4();
        let lim = Limits {
            max_concurrency: 100,
            rate_per_sec: 5,
        };
        let mut ok = 0;
        let mut deferred = 0;
        for _ in 0..20 {
            match reg.acquire(id, lim, Duration::ZERO).await {
                Ok(_) => ok += 1,
                Err(d) => {
                    assert!(d <= Duration::from_millis(200), "{d:?}");
                    deferred += 1
                }
            }
        }
        assert_eq!(ok, 5, "a burst of one second's worth");
        assert_eq!(deferred, 15);
    }
}
