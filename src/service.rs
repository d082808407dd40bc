//! The one shape of the daemon's periodic services (the rescuer, the
//! cleaner, the evaluator, the goal scanner, the analytics source checker),
//! after River's `BaseStartStop` with a `runOnce` returning a named result:
//! a service writes only its work (`run_once`) and how long it pauses after
//! it; `start` owns the loop, the stop token, the wake-ups and the logging of
//! failed runs, so every service stops, retries and warns alike.
//!
//! The loop: (pause) → run once → pause → run once …; a pause ends early on
//! the service's wake-up, and `stop` ends it at once. A run is never cut
//! short by the loop: a service whose work can take long is handed `stop`
//! and decides where it can stop cleanly.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Does a service work as soon as it starts, or pause first?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    AtStart,
    /// The rescuer (no lease taken by this process can have expired yet) and
    /// the source checker (the daemon ran its first check before starting it).
    AfterPause,
}

/// How failed runs are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warnings {
    /// A warn line per failed run: failures of these are rare and each one
    /// is worth a line.
    EachFailure,
    /// One warn line when runs start failing and one info line ("works
    /// again") when they work again: a trigger service whose source is down
    /// fails every few seconds, and an outage is one entry in the journal.
    OncePerOutage,
}

/// A service that runs its work over and over, until stopped.
pub trait PeriodicService: Send + Sized + 'static {
    /// Its name in the "stopped" line: `rescuer`.
    const NAME: &'static str;
    /// What a run does, in the warn line "{WORK} failed; {AFTER_FAILURE}".
    const WORK: &'static str;
    const AFTER_FAILURE: &'static str;
    const FIRST_RUN: FirstRun = FirstRun::AtStart;
    const WARNINGS: Warnings = Warnings::EachFailure;

    /// What a run did.
    type Outcome: Send;

    /// The pause after a run that worked, unless `pause_after` says
    /// otherwise; asked again before every pause (the rescuer jitters it).
    fn interval(&self) -> Duration;

    /// The pause after a failed run.
    fn failure_pause(&self) -> Duration {
        self.interval()
    }

    /// What the service reads from, named in its warn lines (`source=`).
    fn describe(&self) -> Option<String> {
        None
    }

    fn run_once(
        &mut self,
        stop: &CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Self::Outcome>> + Send;

    /// The pause after a run that worked (the evaluator waits for the next
    /// trigger due).
    fn pause_after(&self, _done: &Self::Outcome) -> impl Future<Output = Duration> + Send {
        std::future::ready(self.interval())
    }

    /// Resolves when the service should run before its pause is over.
    fn wake(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Runs the loop in a task until `stop`.
    fn start(self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(run(self, stop))
    }
}

async fn run<S: PeriodicService>(mut service: S, stop: CancellationToken) {
    let mut log = FailureLog::new(S::WORK, S::AFTER_FAILURE, S::WARNINGS, service.describe());
    let mut pause = match S::FIRST_RUN {
        FirstRun::AtStart => None,
        FirstRun::AfterPause => Some(service.interval()),
    };
    loop {
        if let Some(pause) = pause {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = service.wake() => {}
            }
        }
        pause = Some(match service.run_once(&stop).await {
            Ok(done) => {
                log.worked();
                service.pause_after(&done).await
            }
            Err(e) => {
                log.failed(&e);
                service.failure_pause()
            }
        });
    }
    tracing::debug!("{} stopped", S::NAME);
}

/// The warn (and "works again") lines of one service's failed runs.
struct FailureLog {
    work: &'static str,
    then: &'static str,
    warnings: Warnings,
    source: Option<String>,
    failing: bool,
}

impl FailureLog {
    fn new(
        work: &'static str,
        then: &'static str,
        warnings: Warnings,
        source: Option<String>,
    ) -> Self {
        Self {
            work,
            then,
            warnings,
            source,
            failing: false,
        }
    }

    fn failed(&mut self, e: &anyhow::Error) {
        let first = !std::mem::replace(&mut self.failing, true);
        if first || self.warnings == Warnings::EachFailure {
            tracing::warn!(
                error = crate::logging::error_line(e.as_ref()),
                source = self.source.as_ref().map(tracing::field::display),
                "{} failed; {}",
                self.work,
                self.then
            );
        } else {
            // Each later failed run of an outage, at debug: as the claimer's
            // "still fails", it shows the service goes on trying, and it is
            // the event a test waits for to know that runs went by without a
            // second warn line (tests/clickhouse.rs).
            tracing::debug!(
                error = crate::logging::error_line(e.as_ref()),
                source = self.source.as_ref().map(tracing::field::display),
                "{} still fails",
                self.work
            );
        }
    }

    fn worked(&mut self) {
        if std::mem::take(&mut self.failing) && self.warnings == Warnings::OncePerOutage {
            tracing::info!("{} works again", self.work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// Fails its first `fail` runs, counts every run, and is woken by `wake`.
    struct Counting {
        runs: Arc<AtomicUsize>,
        fail: usize,
        wake: Arc<Notify>,
        ran: Arc<Notify>,
    }

    impl PeriodicService for Counting {
        const NAME: &'static str = "counting";
        const WORK: &'static str = "counting";
        const AFTER_FAILURE: &'static str = "will retry";
        const FIRST_RUN: FirstRun = FirstRun::AfterPause;
        type Outcome = usize;

        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }

        fn failure_pause(&self) -> Duration {
            Duration::ZERO
        }

        async fn run_once(&mut self, _stop: &CancellationToken) -> anyhow::Result<usize> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            self.ran.notify_one();
            anyhow::ensure!(n > self.fail, "run {n} fails");
            Ok(n)
        }

        async fn wake(&self) {
            self.wake.notified().await
        }
    }

    #[tokio::test]
    async fn waits_first_retries_after_failures_wakes_and_stops() {
        tokio::time::timeout(Duration::from_secs(10), the_loop())
            .await
            .expect("the loop did not run as expected within 10 s");
    }

    async fn the_loop() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (wake, ran) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let stop = CancellationToken::new();
        let task = Counting {
            runs: runs.clone(),
            fail: 2,
            wake: wake.clone(),
            ran: ran.clone(),
        }
        .start(stop.clone());
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "AfterPause: no run yet");
        // Woken: the first run fails, the second (after a zero pause) fails,
        // the third works and then pauses for the (long) interval.
        wake.notify_one();
        while runs.load(Ordering::SeqCst) < 3 {
            ran.notified().await;
        }
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        wake.notify_one();
        while runs.load(Ordering::SeqCst) < 4 {
            ran.notified().await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }
}
