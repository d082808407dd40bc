//! Trigger preview: how often a trigger would have fired over a site's
//! recent history, before it is turned on.
//!
//! A spike or drop is replayed at the instants the evaluator would have
//! evaluated it (every `triggers.evaluation_interval_secs`, on instants
//! aligned to the epoch) through the evaluator's own rule (`super::decide`,
//! hysteresis and cooldown), on the counts the evaluator's window would have
//! had there. The counts come from one statement for the whole range
//! (`AnalyticsSource::visitor_steps`), not one per instant: unique visitors
//! are not additive over minutes (a visitor seen in two minutes of a window
//! counts once), so the statement returns, per instant, how many visitors
//! enter and leave the window there, and the counts are their running sum.
//!
//! A goal or custom-event trigger fires per completion: its preview counts
//! completions per day of the site's timezone, in one statement.

use anyhow::Result;
use time::{Duration, OffsetDateTime};

use super::goals::Goal;
use super::source::{AnalyticsSource, Window};
use super::{decide, threshold, State, ThresholdKind};

/// The longest history a preview reads.
pub const MAX_SINCE: Duration = Duration::days(90);
/// Firings listed at most; the rest are counted.
pub const MAX_LISTED: usize = 100;

/// The evaluation instants `k × step` for `k` in `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub step_secs: i64,
    pub first: i64,
    pub last: i64,
}

impl Grid {
    /// The instants on multiples of `step` within `[from, to]` (`step` at
    /// least 1 s).
    pub fn over(from: OffsetDateTime, to: OffsetDateTime, step: Duration) -> Grid {
        let step_secs = step.whole_seconds().max(1);
        let ns = i128::from(step_secs) * 1_000_000_000;
        let (f, t) = (from.unix_timestamp_nanos(), to.unix_timestamp_nanos());
        Grid {
            step_secs,
            first: (f.div_euclid(ns) + i128::from(f.rem_euclid(ns) != 0)) as i64,
            last: t.div_euclid(ns) as i64,
        }
    }

    pub fn instant(&self, k: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(k * self.step_secs).expect("an instant in range")
    }

    pub fn len(&self) -> usize {
        (self.last - self.first + 1).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The instants, in order.
    pub fn instants(&self) -> impl Iterator<Item = OffsetDateTime> + '_ {
        (self.first..=self.last).map(|k| self.instant(k))
    }
}

/// The count at each instant of `grid` from `steps`: (instant index, how
/// much the count changes there), in any order; changes before the grid
/// count from its first instant, those after it not at all.
pub fn counts_from_steps(grid: &Grid, steps: &[(i64, i64)]) -> Vec<i64> {
    let mut delta = vec![0i64; grid.len()];
    let mut before = 0;
    for &(k, d) in steps {
        if k < grid.first {
            before += d;
        } else if k <= grid.last {
            delta[(k - grid.first) as usize] += d;
        }
    }
    let mut running = before;
    delta
        .into_iter()
        .map(|d| {
            running += d;
            running
        })
        .collect()
}

/// An instant the trigger would have fired at, and the count it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub at: OffsetDateTime,
    pub visitors: i64,
}

/// The evaluator's rule over a sequence of (instant, count), from an armed
/// trigger that never fired; the state carried from one evaluation to the
/// next as the evaluator writes it back (`armed`, `last_fired_at`).
pub fn replay(
    kind: ThresholdKind,
    threshold: i64,
    cooldown: Duration,
    counts: impl IntoIterator<Item = (OffsetDateTime, i64)>,
) -> Vec<Fired> {
    let mut state = State {
        armed: true,
        last_fired_at: None,
    };
    let mut fired = Vec::new();
    for (at, visitors) in counts {
        let d = decide(kind, visitors, threshold, state, cooldown, at);
        if d.fire {
            fired.push(Fired { at, visitors });
            state.last_fired_at = Some(at);
        }
        state.armed = d.armed;
    }
    fired
}

/// A spike or drop trigger to preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpikeDrop {
    pub site_id: i64,
    pub kind: ThresholdKind,
    /// None: the derived one (as of `now`, for the whole range).
    pub threshold: Option<i64>,
    pub window: Duration,
    pub cooldown: Duration,
}

/// What a spike or drop preview found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpikeDropPreview {
    pub grid: Grid,
    /// The threshold replayed; None when none was given and none can be
    /// derived (a drop on too little traffic): nothing was replayed.
    pub threshold: Option<i64>,
    /// What the trigger would derive today with no threshold of its own
    /// (`threshold.rs`); None: too little history for a drop.
    pub derived: Option<i64>,
    pub fired: Vec<Fired>,
    /// Statements sent to the analytics source.
    pub queries: usize,
}

/// Replays `t` over the evaluation instants in `[from, to]`, every `step`.
pub async fn spike_drop(
    source: &AnalyticsSource,
    t: SpikeDrop,
    from: OffsetDateTime,
    to: OffsetDateTime,
    step: Duration,
) -> Result<SpikeDropPreview> {
    let grid = Grid::over(from, to, step);
    let window_secs = t.window.whole_seconds();
    let history = Window {
        site_id: t.site_id,
        from: to - threshold::HISTORY,
        to,
    };
    let bucketed = source.bucketed_visitors(&[(history, window_secs)]).await?;
    let derived = threshold::from_history(t.kind, window_secs, bucketed[0]).map(i64::from);
    let mut queries = 1;
    let threshold = t.threshold.or(derived).filter(|v| *v >= 1);
    let mut fired = Vec::new();
    if let (Some(th), false) = (threshold, grid.is_empty()) {
        let steps = source
            .visitor_steps(
                t.site_id,
                window_secs,
                grid.step_secs,
                grid.first,
                grid.last,
            )
            .await?;
        queries += 1;
        let counts = counts_from_steps(&grid, &steps);
        fired = replay(t.kind, th, t.cooldown, grid.instants().zip(counts));
    }
    Ok(SpikeDropPreview {
        grid,
        threshold,
        derived,
        fired,
        queries,
    })
}

/// Completions of `goals` (each counted per goal it matches, as each is a
/// delivery) in each `[bounds[i], bounds[i + 1])`.
pub async fn completions_per_bucket(
    source: &AnalyticsSource,
    goals: &[Goal],
    bounds: &[OffsetDateTime],
) -> Result<Vec<i64>> {
    if goals.is_empty() || bounds.len() < 2 {
        return Ok(vec![0; bounds.len().saturating_sub(1)]);
    }
    source.completions_per_bucket(goals, bounds).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_grid_holds_the_multiples_of_the_step_within_the_range() {
        let g = Grid::over(
            datetime!(2026-03-02 10:00:30 UTC),
            datetime!(2026-03-02 10:03:00 UTC),
            Duration::minutes(1),
        );
        let at: Vec<_> = g.instants().collect();
        assert_eq!(
            at,
            vec![
                datetime!(2026-03-02 10:01 UTC),
                datetime!(2026-03-02 10:02 UTC),
                datetime!(2026-03-02 10:03 UTC)
            ]
        );
        let exact = Grid::over(at[0], at[0], Duration::minutes(1));
        assert_eq!(exact.len(), 1);
    }

    #[test]
    fn counts_are_the_running_sum_of_the_steps() {
        let g = Grid {
            step_secs: 60,
            first: 10,
            last: 14,
        };
        // One visitor in the window since before the grid, leaving at 12;
        // one entering at 11 and leaving after it; a change after the grid.
        let steps = [(3, 1), (12, -1), (11, 1), (20, -1)];
        assert_eq!(counts_from_steps(&g, &steps), vec![1, 2, 1, 1, 1]);
    }

    #[test]
    fn replay_follows_the_evaluators_rule() {
        let t0 = datetime!(2026-03-02 10:00 UTC);
        let counts = [99, 100, 150, 99, 101, 100, 100]
            .into_iter()
            .enumerate()
            .map(|(m, v)| (t0 + Duration::minutes(m as i64), v));
        let f = replay(ThresholdKind::Spike, 100, Duration::minutes(4), counts);
        // 1 fires; 4 crosses again within the cooldown (held, armed); 5 is
        // the cooldown's end and still high: fires.
        assert_eq!(
            f,
            vec![
                Fired {
                    at: t0 + Duration::minutes(1),
                    visitors: 100
                },
                Fired {
                    at: t0 + Duration::minutes(5),
                    visitors: 100
                }
            ]
        );
    }
}
