//! The retry policy: what one attempt's result means for the delivery.

use std::time::Duration;

/// What an attempt came back with.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// The receiver answered.
    Response {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: refused address, DNS, connect, TLS, timeout, reset.
    Transport,
    /// No answer, and none will come however often it is tried (the
    /// address guard refused an address the URL itself names).
    Lasting,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    /// Try again after this long.
    Retry(Duration),
    /// Every retry used (or nothing to retry): final.
    Fail,
    /// 410 Gone: final, and the webhook is disabled with this reason.
    FailAndDisable(String),
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after attempt 1, 2, ...; its length is the number of retries.
    pub schedule: Vec<u32>,
    /// ±relative jitter on each delay.
    pub jitter: f64,
    /// The most a Retry-After header may delay a retry.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// `attempt` is 1-based; `webhook_schedule` overrides the global one.
    pub fn decide(
        &self,
        attempt: i32,
        webhook_schedule: Option<&[u32]>,
        result: &AttemptResult,
    ) -> Verdict {
        let retry_after = match *result {
            AttemptResult::Response { status, .. } if (200..300).contains(&status) => {
                return Verdict::Success
            }
            AttemptResult::Response { status: 410, .. } => {
                return Verdict::FailAndDisable("the receiver answered 410 Gone".into())
            }
            AttemptResult::Response {
                status: 429 | 503,
                retry_after,
            } => retry_after.map(|d| d.min(self.retry_after_cap)),
            AttemptResult::Lasting => return Verdict::Fail,
            _ => None,
        };
        let schedule = webhook_schedule.unwrap_or(&self.schedule);
        let Some(&base) = usize::try_from(attempt - 1)
            .ok()
            .and_then(|i| schedule.get(i))
        else {
            return Verdict::Fail;
        };
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        let delay = Duration::from_secs_f64(f64::from(base) * factor);
        Verdict::Retry(retry_after.map_or(delay, |ra| ra.max(delay)))
    }

    /// The number of attempts a delivery gets in all.
    pub fn max_attempts(&self, webhook_schedule: Option<&[u32]>) -> i32 {
        webhook_schedule.unwrap_or(&self.schedule).len() as i32 + 1
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![60, 300, 1800],
            jitter: 0.1,
            retry_after_cap: Duration::from_secs(3600),
        }
    }
    fn resp(status: u16) -> AttemptResult {
        AttemptResult::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn default_schedule_with_jitter_then_failed() {
        let p = policy();
        for (attempt, base) in [(1, 60.0), (2, 300.0), (3, 1800.0)] {
            for _ in 0..50 {
                let Verdict::Retry(d) = p.decide(attempt, None, &resp(500)) else {
                    panic!()
                };
                let s = d.as_secs_f64();
                assert!(
                    s >= base * 0.9 - 1e-9 && s <= base * 1.1 + 1e-9,
                    "{attempt}: {s}"
                );
            }
        }
        assert_eq!(p.decide(4, None, &AttemptResult::Transport), Verdict::Fail);
        assert_eq!(p.decide(1, None, &AttemptResult::Lasting), Verdict::Fail);
        assert_eq!(p.max_attempts(None), 4);
    }

    #[test]
    fn success_gone_and_per_webhook_schedule() {
        let p = policy();
        assert_eq!(p.decide(1, None, &resp(204)), Verdict::Success);
        assert!(matches!(
            p.decide(1, None, &resp(410)),
            Verdict::FailAndDisable(_)
        ));
        assert!(matches!(p.decide(1, None, &resp(302)), Verdict::Retry(_)));
        assert_eq!(p.decide(1, Some(&[]), &resp(500)), Verdict::Fail);
        let Verdict::Retry(d) = p.decide(2, Some(&[1, 2]), &resp(500)) else {
            panic!()
        };
        assert!(d.as_secs_f64() >= 1.8 && d.as_secs_f64() <= 2.2);
    }

    #[test]
    fn retry_after_is_a_floor_and_capped() {
        let p = policy();
        let r = |secs| AttemptResult::Response {
            status: 429,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(1, None, &r(600)),
            Verdict::Retry(Duration::from_secs(600))
        );
        assert_eq!(
            p.decide(1, None, &r(999_999)),
            Verdict::Retry(Duration::from_secs(3600))
        );
        let Verdict::Retry(d) = p.decide(1, None, &r(1)) else {
            panic!()
        };
        assert!(d.as_secs() >= 54);
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
