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

/// Between checks of a source that works.
pub const INTERVAL: Duration = Duration::from_secs(300);
/// Between checks of a source that is unavailable or incompatible.
pub const INTERVAL_FAILING: Duration = Duration::from_secs(10);
/// At least this long between two checks, however often questions fail.
pub const MIN_GAP: Duration = Duration::from_secs(5);

pub struct SourceChecker {
    source: Arc<AnalyticsSource>,
    tx: watch::Sender<SourceStatus>,
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
        (SourceChecker { source, tx }, rx)
    }

    pub fn start(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = tokio::time::Instant::now();
            loop {
                let every = match *self.tx.borrow() {
                    SourceStatus::Compatible { .. } => INTERVAL,
                    _ => INTERVAL_FAILING,
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                    _ = self.source.failed() => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(last + MIN_GAP) => {}
                        }
                    }
                }
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.source.check() => r,
                };
                last = tokio::time::Instant::now();
                let status = SourceStatus::of(&r);
                let before = self.tx.borrow().clone();
                log(&self.source, Some(&before), &status);
                self.tx.send_replace(status);
            }
        })
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
