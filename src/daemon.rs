//! Wiring and shutdown. `Daemon::start` connects the services:
//!
//! listener --wake--> claimer --Claimed--> worker (one task per delivery)
//!   --Completion--> completer;  rescuer and cleaner run beside them, and
//! the mailer (owner emails, with `[mail] enabled`) in a task of its own;
//! evaluator and goal_scanner enqueue trigger deliveries (INSERT → NOTIFY).
//!
//! Shutdown (SIGTERM): stop claiming; deliveries not yet sent go back to the
//! queue at once; requests in flight get the grace period; what is still in
//! flight after it is aborted and released (logged as an interrupted attempt);
//! every outcome is written before the process exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::http::AdminServer;
use crate::admin::state::{AdminState, Handed, ADMIN_POOL_SIZE};
use crate::admin::test_sender::TestSender;
use crate::config::Config;
use crate::db;
use crate::db::listener::{Listener, ListenerConfig};
use crate::delivery::guard::{AddressGuard, Resolve};
use crate::delivery::mailer::{Mailer, MailerConfig};
use crate::delivery::pipeline::Pipeline;
use crate::delivery::worker::Worker;
use crate::queue::admission::Admission;
use crate::queue::claimer::{Claimer, Dispatch};
use crate::queue::cleaner::{Cleaner, CleanerConfig};
use crate::queue::completer::{self, Completer};
use crate::queue::rescuer::{self, Rescuer, RescuerConfig};
use crate::service::PeriodicService;
use crate::triggers::evaluator::{Evaluator, EvaluatorConfig};
use crate::triggers::goal_scanner::{GoalScanner, GoalScannerConfig};
use crate::triggers::source::checker::SourceChecker;
use crate::triggers::source::{AnalyticsSource, SourceStatus};

/// How long the completer may keep retrying a write after the grace period.
pub const COMPLETER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Test and embedding hooks.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Replaces the system DNS resolver (tests of the address guard).
    pub resolver: Option<Arc<dyn Resolve>>,
    /// Overrides the instance name (default: host:pid:random).
    pub instance: Option<String>,
}

pub struct Daemon {
    pub instance: String,
    pub pool: Pool,
    cfg: Config,
    /// The pipeline's settings, the address guard among them (the admin's
    /// test sender and URL checks use the same).
    pipeline: Pipeline,
    /// Cancelled first at shutdown: every service loop ends (no new claims)
    /// and deliveries not yet sent go back to the queue.
    stop_services: CancellationToken,
    /// Cancelled after the grace period: requests still in flight are dropped.
    abort_requests: CancellationToken,
    /// Cancelled when the completer's drain runs out of time: it stops
    /// retrying a batch the database refuses.
    stop_completer_retries: CancellationToken,
    tracker: TaskTracker,
    listener_up: watch::Receiver<bool>,
    /// The analytics source check's verdicts (None with triggers off).
    analytics: Option<watch::Receiver<SourceStatus>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    claimer: tokio::task::JoinHandle<()>,
    completer: tokio::task::JoinHandle<()>,
    /// Cancelled when a service task panics.
    pub service_failed: CancellationToken,
}

impl Daemon {
    /// Every service, built from `cfg` and started; the triggers' only when
    /// they are enabled, after a first check of the analytics source.
    pub async fn start(cfg: Config, opts: StartOptions) -> Result<Daemon> {
        let pool = open_database(&cfg).await?;
        let instance = opts
            .instance
            .clone()
            .unwrap_or_else(crate::queue::instance_name);
        let stop_services = CancellationToken::new();
        let abort_requests = CancellationToken::new();
        let stop_completer_retries = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut pipeline = Pipeline::from_config(
            &cfg,
            instance.clone(),
            Arc::new(AddressGuard::from_config(&cfg)?),
        );
        if let Some(r) = &opts.resolver {
            pipeline.client.resolver = r.clone();
        }

        let wake = Arc::new(Notify::new());
        let listener = Listener::new(
            ListenerConfig::from_config(&cfg, Some(instance.clone())),
            wake.clone(),
        )?;
        let listener_up = listener.connected();
        let (tx, rx) = completer::channel(cfg.delivery.max_in_flight);
        let completer = Completer::new(pipeline.completer.clone(), pool.clone(), rx, wake.clone())?;
        let worker = Arc::new(pipeline.worker(stop_services.clone())?);
        let claimer = Claimer::new(
            pipeline.claimer.clone(),
            pool.clone(),
            Admission::new(pipeline.admission.clone(), wake.clone())?,
            wake.clone(),
            listener_up.clone(),
            dispatch(worker, tx, tracker.clone(), abort_requests.clone()),
        )?;
        let rescuer = Rescuer::new(RescuerConfig::from_config(&cfg), pool.clone(), wake)?;
        let cleaner = Cleaner::new(CleanerConfig::from_config(&cfg), pool.clone())?;

        let failed = CancellationToken::new();
        let supervised = |name, task| supervise(name, task, failed.clone());
        let mut handles = vec![
            supervised("listener", listener.start(stop_services.clone())),
            supervised("rescuer", rescuer.start(stop_services.clone())),
            supervised("cleaner", cleaner.start(stop_services.clone())),
        ];
        if cfg.mail.enabled {
            // Its own task: a slow or hung SMTP server delays only its mails.
            let mailer = Mailer::new(MailerConfig::from_config(&cfg)?, pool.clone())?;
            handles.push(supervised("mailer", mailer.start(stop_services.clone())));
        }
        let mut analytics = None;
        if cfg.triggers.enabled {
            let (evaluator, scanner, source) = trigger_services(&cfg, &pool)?;
            // Deliveries must flow even when analytics cannot be read or
            // refuses a statement: the verdict is logged and handed to
            // /readyz, and the daemon runs on.
            let (checker, status) = SourceChecker::first(source, pool.clone()).await;
            analytics = Some(status);
            handles.extend([
                supervised("source_checker", checker.start(stop_services.clone())),
                supervised("evaluator", evaluator.start(stop_services.clone())),
                supervised("goal_scanner", scanner.start(stop_services.clone())),
            ]);
        }
        let completer = supervised("completer", completer.start(stop_completer_retries.clone()));
        let claimer = supervised("claimer", claimer.start(stop_services.clone()));
        tracing::info!(instance = %instance, "plausible-webhooks started");
        Ok(Daemon {
            instance,
            pool,
            cfg,
            pipeline,
            stop_services,
            abort_requests,
            stop_completer_retries,
            tracker,
            listener_up,
            analytics,
            handles,
            claimer,
            completer,
            service_failed: failed,
        })
    }

    /// The process's address guard: the admin checks webhook URLs with it.
    pub fn guard(&self) -> Arc<AddressGuard> {
        self.pipeline.guard.clone()
    }

    /// The pipeline's settings, for the admin's test sender.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// True while the LISTEN connection is up.
    pub fn listener_connected(&self) -> watch::Receiver<bool> {
        self.listener_up.clone()
    }

    /// The analytics source check's latest verdict, as it changes (None
    /// when triggers are off).
    pub fn analytics_status(&self) -> Option<watch::Receiver<SourceStatus>> {
        self.analytics.clone()
    }

    /// Waits until the listener is connected (what READY=1 means).
    pub async fn wait_listening(&self) -> Result<()> {
        let mut up = self.listener_up.clone();
        up.wait_for(|v| *v).await.context("listener stopped")?;
        Ok(())
    }

    /// Graceful stop; see the module docs.
    pub async fn shutdown(self) -> Result<()> {
        let grace = Duration::from_secs(self.cfg.shutdown.grace_secs);
        self.stop_services.cancel();
        let _ = self.claimer.await;
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "requests still in flight after the grace period; aborting them and releasing their deliveries"
            );
            self.abort_requests.cancel();
            self.tracker.wait().await;
        }
        // Every sender is gone now: the completer drains what is left and ends.
        let mut completer = self.completer;
        if tokio::time::timeout(COMPLETER_DRAIN_TIMEOUT, &mut completer)
            .await
            .is_err()
        {
            self.stop_completer_retries.cancel();
            let _ = completer.await;
        }
        match rescuer::release(
            &self.pool,
            Some(&self.instance),
            rescuer::default_retries(&self.cfg),
            rescuer::RELEASED_AT_SHUTDOWN,
        )
        .await
        {
            Ok(r) if r.is_empty() => {}
            Ok(r) => tracing::warn!(released = r.pending, failed = r.failed, "released interrupted deliveries"),
            Err(e) => tracing::warn!(
                error = crate::logging::error_line(e.as_ref()),
                "could not release this instance's deliveries; their leases will expire and the rescuer will return them"
            ),
        }
        for h in self.handles {
            let _ = h.await;
        }
        tracing::info!("plausible-webhooks stopped");
        Ok(())
    }
}

/// The pool, once the schema is current and the database's settings are
/// applied: no service starts against an older schema.
async fn open_database(cfg: &Config) -> Result<Pool> {
    let pool = db::engine_pool(&cfg.database)?;
    let client = pool.get().await.with_context(|| {
        let at = db::pg_config(&cfg.database.url).map_or_else(|_| "?".into(), |c| db::describe(&c));
        format!(
            "connecting to PostgreSQL at {at} (check database.url / DATABASE_URL and that the server is running)"
        )
    })?;
    db::migrate::ensure_current(&client).await?;
    db::settings::apply(&client, cfg).await?;
    db::settings::apply_health(&client, &cfg.health).await?;
    db::settings::apply_mail(&client, cfg.mail.enabled).await?;
    Ok(pool)
}

/// Runs each claimed delivery in a task of its own (tracked, so shutdown
/// waits for it) and sends its completion, with the slot it holds, to the
/// completer; `abort` drops one still in flight after the grace period.
fn dispatch(
    worker: Arc<Worker>,
    tx: tokio::sync::mpsc::Sender<completer::Done>,
    tracker: TaskTracker,
    abort: CancellationToken,
) -> Dispatch {
    Arc::new(move |mut job: crate::queue::Claimed, permit| {
        let worker = worker.clone();
        let tx = tx.clone();
        let abort = abort.clone();
        tracker.spawn(async move {
            tokio::select! {
                c = worker.deliver(&mut job) => {
                    let (outcome, attempt) = c.metric();
                    crate::metrics::delivery_completed(&job.event_type, outcome, attempt);
                    let _ = tx.send((c, Some(permit))).await;
                }
                _ = abort.cancelled() => {}
            }
        });
    })
}

/// The spike/drop evaluator and the goal scanner, sharing one analytics source.
pub fn trigger_services(
    cfg: &Config,
    pool: &Pool,
) -> Result<(Evaluator, GoalScanner, Arc<AnalyticsSource>)> {
    let source = Arc::new(AnalyticsSource::from_config(cfg)?);
    let evaluator = Evaluator::new(
        EvaluatorConfig::from_config(cfg),
        pool.clone(),
        source.clone(),
    )?;
    let scanner = GoalScanner::new(
        GoalScannerConfig::from_config(cfg),
        pool.clone(),
        source.clone(),
    )?;
    Ok((evaluator, scanner, source))
}

/// `plausible-webhooks run`: start, tell systemd, serve until SIGTERM/SIGINT, drain.
pub async fn run(cfg: Config) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let admin_addr = cfg.admin.listen_addr()?;
    let open_files = raise_open_files_limit();
    give_large_buffers_back();
    // Fails unless the schema is current: READY=1 is never sent before that.
    let daemon = Daemon::start(cfg.clone(), StartOptions::default()).await?;
    let admin = match admin_addr {
        Some(addr) => {
            let state = async {
                let handed = Handed {
                    listener_up: daemon.listener_connected(),
                    analytics: daemon.analytics_status(),
                    guard: daemon.guard(),
                    test_sender: TestSender::new(daemon.pipeline())
                        .context("building the HTTP client for test events")?,
                };
                AdminState::new(db::pool(&cfg.database.url, ADMIN_POOL_SIZE)?, handed, &cfg)
            };
            let cap = admin_connection_cap(&cfg, open_files);
            match async { AdminServer::start(addr, state.await?, cap).await }.await {
                Ok(a) => Some(a),
                Err(e) => {
                    daemon.shutdown().await?;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    // READY=1 once LISTEN is up (a NOTIFY is then never missed); until then
    // systemd's TimeoutStartSec applies, and SIGTERM is honoured.
    let mut up = daemon.listener_connected();
    let mut ready = false;
    let mut watchdog = None;
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        watchdog = Some(tokio::time::interval(Duration::from_micros(usec / 2)));
    }
    let service_failed = daemon.service_failed.clone();
    let failed = loop {
        tokio::select! {
            _ = term.recv() => break false,
            _ = tokio::signal::ctrl_c() => break false,
            _ = service_failed.cancelled() => break true,
            r = up.wait_for(|v| *v), if !ready => {
                let connected = r.is_ok();
                ready = true;
                if connected {
                    tracing::info!("ready: schema current, LISTEN connected");
                    let _ = sd_notify::notify(false, &[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status("delivering"),
                    ]);
                }
            }
            _ = async { match &mut watchdog { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        }
    };
    tracing::info!("stopping: no new claims; draining deliveries in flight");
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("draining deliveries in flight"),
        ],
    );
    if let Some(a) = &admin {
        a.draining();
    }
    let drained = daemon.shutdown().await;
    if let Some(a) = admin {
        a.shutdown().await;
    }
    drained?;
    if failed {
        anyhow::bail!(
            "a service of the daemon failed (see the log above); exiting so systemd restarts it"
        );
    }
    Ok(())
}

/// Buffers at least this large are mapped on their own and unmapped when
/// freed (glibc's malloc).
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Makes the memory of large payloads go back to the system once their
/// deliveries end: glibc raises its mmap threshold after each large buffer
/// it frees (up to 32 MiB), after which such buffers come from the heap and
/// stay with the process (60 payloads of 10 MB left 200 MiB resident). A
/// fixed threshold keeps them mapped apart; small allocations, the many,
/// are not affected.
pub fn give_large_buffers_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD);
    }
}

/// Raises this process's soft limit on open files to its hard limit (the
/// soft one is often 1024, the hard one far more), so clients of the admin
/// listener cannot leave deliveries and the database without descriptors.
/// Returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let before = lim.rlim_cur;
    // RLIM_INFINITY is refused for this resource: the kernel's own ceiling then.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(1 << 20);
    let want = lim.rlim_max.min(ceiling);
    if want > before {
        lim.rlim_cur = want;
        // SAFETY: setrlimit reads the struct we own; raising the soft limit
        // up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::info!(
                from = before,
                to = want,
                "open files limit raised to the hard limit"
            );
            return want;
        }
    }
    before
}

/// The admin listener's connection cap: what the open files limit leaves
/// after the descriptors kept for deliveries (a socket per delivery in
/// flight and as many for idle keep-alive and DNS) and the database (both
/// pools, LISTEN) and a margin (logs, the listener itself, ClickHouse).
fn admin_connection_cap(cfg: &Config, open_files: u64) -> usize {
    let reserved = 2 * cfg.delivery.max_in_flight as u64
        + cfg.database.pool_size as u64
        + ADMIN_POOL_SIZE as u64
        + 64;
    let cap = crate::admin::http::connection_cap(open_files, reserved);
    if cap < crate::admin::http::MAX_CONNECTIONS {
        tracing::warn!(
            open_files,
            reserved,
            admin_connections = cap,
            "the open files limit leaves the admin listener {cap} connections (deliveries and the database keep {reserved}); raise LimitNOFILE for more"
        );
    }
    cap
}

/// Watches a service task: if it panics, `failed` is cancelled so the process
/// stops (and systemd restarts it) instead of running on without it.
fn supervise(
    name: &'static str,
    task: tokio::task::JoinHandle<()>,
    failed: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = task.await {
            if e.is_panic() {
                tracing::error!(service = name, error = %e, "service panicked");
                failed.cancel();
            }
        }
    })
}
