//! The daemon's watch on its analytics source. `check` runs at start, again
//! soon after any question fails (a trigger round's query: at most every
//! `MIN_GAP`), and periodically (`INTERVAL`, or `INTERVAL_FAILING` while the
//! last verdict was not `Compatible`, so a fixed source is noticed quickly).
//! Each verdict is published in a `watch` channel; the daemon hands its
//! receiver to the admin listener, which reports it in `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AnalyticsSource, SourceStatus};
use crate::service::{FirstRun, PeriodicService};

/// Between checks of a source that works.
pub const INTERVAL: Duration = Duration::from_secs(300);
/// Between checks of a source that is unavailable or incompatible.
pub const INTERVAL_FAILING: Duration = Duration::from_secs(10);
/// At least this long between two checks, however often questions fail.
pub const MIN_GAP: Duration = Duration::from_secs(5);

pub struct SourceChecker {
    source: Arc<AnalyticsSource>,
    tx: watch::Sender<SourceStatus>,
    /// When the last check ended: failures wake a check no sooner than
    /// `MIN_GAP` after it.
    last: tokio::time::Instant,
}

impl SourceChecker {
    /// Runs the first check (logging its verdict) and returns the checker
    /// with the receiver of its verdicts.
    pub async fn first(
        source: Arc<AnalyticsSource>,
    ) -> (SourceChecker, watch::Receiver<SourceStatus>) {
        let status = SourceStatus::of(&source.check().await);
        log(&source, None, &status);
        let (tx, rx) = watch::channel(status);
        let last = tokio::time::Instant::now();
        (SourceChecker { source, tx, last }, rx)
    }
}

impl PeriodicService for SourceChecker {
    const NAME: &'static str = "source checker";
    // A check does not fail: its verdict (logged on change) is the outcome.
    const WORK: &'static str = "checking the analytics source";
    const AFTER_FAILURE: &'static str = "will retry";
    /// `first` ran the first check.
    const FIRST_RUN: FirstRun = FirstRun::AfterPause;
    type Outcome = ();

    fn interval(&self) -> Duration {
        match *self.tx.borrow() {
            SourceStatus::Compatible { .. } => INTERVAL,
            _ => INTERVAL_FAILING,
        }
    }

    async fn wake(&self) {
        self.source.failed().await;
        tokio::time::sleep_until(self.last + MIN_GAP).await;
    }

    /// A check cut short by `stop` publishes nothing.
    async fn run_once(&mut self, stop: &CancellationToken) -> anyhow::Result<()> {
        let r = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = self.source.check() => r,
        };
        self.last = tokio::time::Instant::now();
        let status = SourceStatus::of(&r);
        let before = self.tx.borrow().clone();
        log(&self.source, Some(&before), &status);
        self.tx.send_replace(status);
        Ok(())
    }
}

/// One line per change of verdict (and for the first).
fn log(source: &AnalyticsSource, before: Option<&SourceStatus>, now: &SourceStatus) {
    if before.is_some_and(|b| std::mem::discriminant(b) == std::mem::discriminant(now)) {
        return;
    }
    let described = source.describe();
    match now {
        SourceStatus::Compatible { version } => tracing::info!(
            source = %described,
            version = %version,
            "analytics source checked: every statement triggers send is answered"
        ),
        SourceStatus::Unavailable(e) => tracing::warn!(
            source = %described,
            error = %e,
            "triggers cannot read analytics yet; they are retried every round (deliveries go on)"
        ),
        SourceStatus::Incompatible(e) => tracing::error!(
            source = %described,
            error = %e,
            "the analytics source refuses a statement triggers send: triggers cannot work and \
             /readyz answers 503 until it is fixed (deliveries go on); see README, `check`"
        ),
    }
}
