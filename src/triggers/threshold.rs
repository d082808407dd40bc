//! Thresholds derived from recent traffic, for spike and drop triggers created
//! without one ("default based on historical traffic").
//!
//! The rule, in a site owner's terms: take the site's last 7 days (or as
//! much of them as the site has data for), cut them into consecutive windows
//! of the trigger's length, and average the unique visitors per window
//! (`usual`). A spike is at least twice the usual traffic
//! and at least 10 visitors: `max(10, ceil(2 × usual))`. A drop is under half
//! the usual traffic: `floor(usual / 2)`, and a site with too little history
//! for that to be 1 or more gets no drop alerts until it has. The derived
//! value is stored on the trigger and recomputed once a day.

use time::{Duration, OffsetDateTime};

use super::ThresholdKind;

pub const HISTORY: Duration = Duration::days(7);
pub const REDERIVE_AFTER: Duration = Duration::days(1);
pub const SPIKE_FACTOR: f64 = 2.0;
pub const SPIKE_MIN: i32 = 10;
pub const DROP_FACTOR: f64 = 0.5;
/// The schema's upper bound for a threshold.
pub const MAX_THRESHOLD: i64 = 10_000_000;

/// `bucketed` = Σ over the history's windows of each window's unique
/// visitors; `covered_secs` = how much of the history the site has data for
/// (a site two days old is averaged over two days, not seven).
pub fn usual_per_window(bucketed: i64, window_secs: i64, covered_secs: f64) -> f64 {
    let covered = covered_secs.min(HISTORY.whole_seconds() as f64);
    let windows = (covered / window_secs as f64).max(1.0);
    bucketed as f64 / windows
}

/// The threshold for `kind` given the usual visitors per window; None when a
/// drop threshold would be below 1 (not enough history).
pub fn derive(kind: ThresholdKind, usual: f64) -> Option<i32> {
    let t = match kind {
        ThresholdKind::Spike => ((SPIKE_FACTOR * usual).ceil() as i64).max(i64::from(SPIKE_MIN)),
        ThresholdKind::Drop => (DROP_FACTOR * usual).floor() as i64,
    };
    match kind {
        ThresholdKind::Spike => Some(t.min(MAX_THRESHOLD) as i32),
        ThresholdKind::Drop => (t >= 1).then(|| t.min(MAX_THRESHOLD) as i32),
    }
}

/// The threshold a trigger of `kind` with a `window_secs` window derives
/// from its site's history, as `bucketed_visitors` reads it (the bucketed
/// sum, the seconds covered): what the evaluator stores and a preview
/// suggests.
pub fn from_history(kind: ThresholdKind, window_secs: i64, history: (i64, f64)) -> Option<i32> {
    derive(kind, usual_per_window(history.0, window_secs, history.1))
}

/// Whether a stored derived threshold is too old to use.
pub fn stale(derived_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    derived_at.is_none_or(|at| now - at >= REDERIVE_AFTER || at > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_rule() {
        // 7 days of 5-minute windows = 2016 windows.
        assert_eq!(usual_per_window(2016 * 30, 300, 7.0 * 86_400.0), 30.0);
        // Two days of data: averaged over those two days' 576 windows.
        assert_eq!(usual_per_window(576 * 30, 300, 2.0 * 86_400.0), 30.0);
        assert_eq!(usual_per_window(0, 300, 0.0), 0.0);
        assert_eq!(derive(ThresholdKind::Spike, 30.0), Some(60));
        assert_eq!(derive(ThresholdKind::Spike, 2.2), Some(10));
        assert_eq!(derive(ThresholdKind::Spike, 10.1), Some(21));
        assert_eq!(derive(ThresholdKind::Drop, 30.0), Some(15));
        assert_eq!(derive(ThresholdKind::Drop, 3.0), Some(1));
        assert_eq!(derive(ThresholdKind::Drop, 1.9), None);
    }
}
