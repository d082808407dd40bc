//! The listener (River's notifier): one dedicated connection that LISTENs and
//! turns each NOTIFY into a wake-up for the claimer. A LISTEN connection can die
//! silently, so it is checked with a cheap query; on any failure it reconnects
//! with backoff, and the claimer polls more often while it is down. Every
//! (re)connect wakes the claimer once, since notifications sent while down are lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::NOTIFY_CHANNEL;

pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A health query slower than this counts as a dead connection.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub url: String,
    pub check_interval: Duration,
    /// The lease holder's name this process claims under: its connection
    /// holds the holder's lock ([`HOLDER_LOCK_SPACE`]) for as long as it is up, which tells
    /// every rescuer that the holder is alive and will record its outcomes.
    pub holder: Option<String>,
}

impl ListenerConfig {
    pub fn from_config(cfg: &crate::config::Config, holder: Option<String>) -> Self {
        Self {
            url: cfg.database.url.clone(),
            check_interval: Duration::from_millis(cfg.queue.listener_check_interval_ms),
            holder,
        }
    }
}

/// The advisory locks of live lease holders are keyed (this, hashtext(name)):
/// two int4 keys, so `pg_locks` shows them as classid = this, objid = the
/// name's hash, objsubid = 2.
pub const HOLDER_LOCK_SPACE: i32 = 0x706c_7768; // "plwh"

pub struct Listener {
    cfg: ListenerConfig,
    pg: tokio_postgres::Config,
    wake: Arc<Notify>,
    up: watch::Sender<bool>,
    reconnects: Arc<AtomicU64>,
}

impl Listener {
    pub fn new(cfg: ListenerConfig, wake: Arc<Notify>) -> Result<Self> {
        anyhow::ensure!(
            !cfg.check_interval.is_zero(),
            "listener: check_interval must be > 0"
        );
        let mut pg = super::pg_config(&cfg.url)?;
        // Named apart from the pool's connections, so operators can tell it in pg_stat_activity.
        pg.application_name("plausible-webhooks-listener");
        Ok(Self {
            cfg,
            pg,
            wake,
            up: watch::channel(false).0,
            reconnects: Arc::new(AtomicU64::new(0)),
        })
    }

    /// True while LISTEN is active.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Reconnections since start.
    pub fn reconnects(&self) -> Arc<AtomicU64> {
        self.reconnects.clone()
    }

    pub fn start(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, stop: CancellationToken) {
        let mut backoff = RECONNECT_MIN;
        let mut first = true;
        while !stop.is_cancelled() {
            match self.listen().await {
                Ok((client, mut notes)) => {
                    if !first {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::listener_reconnected();
                        tracing::info!("listener reconnected");
                    }
                    first = false;
                    backoff = RECONNECT_MIN;
                    self.up.send_replace(true);
                    self.wake.notify_one();
                    let why = self.serve(&client, &mut notes, &stop).await;
                    self.up.send_replace(false);
                    match why {
                        None => break,
                        Some(e) => {
                            tracing::warn!(part = "listener", error = %e, "database connection lost; reconnecting (polling meanwhile)")
                        }
                    }
                }
                // Said once per outage: the next tries fail the same way.
                Err(e) if backoff == RECONNECT_MIN => tracing::warn!(
                    part = "listener",
                    error = crate::logging::error_line(e.as_ref()),
                    "cannot connect to the database; retrying with backoff (polling meanwhile)"
                ),
                Err(e) => tracing::debug!(
                    error = crate::logging::error_line(e.as_ref()),
                    retry_in_ms = backoff.as_millis() as u64,
                    "listener still cannot connect"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() * 0.5)) => {}
                _ = stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
        tracing::debug!("listener stopped");
    }

    /// Connects and LISTENs; notifications arrive on the returned channel, and
    /// the channel closes when the connection ends.
    async fn listen(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        mpsc::UnboundedReceiver<Result<(), String>>,
    )> {
        let (client, mut conn) = self
            .pg
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to {}", super::describe(&self.pg)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(AsyncMessage::Notification(_)) => {
                        if tx.send(Ok(())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(crate::logging::error_line(&e)));
                        return;
                    }
                }
            }
            let _ = tx.send(Err("connection closed by the server".into()));
        });
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
            .context("LISTEN")?;
        if let Some(holder) = &self.cfg.holder {
            // Held while this connection lives: a rescuer leaves this
            // process's expired leases to its completer (a database that
            // refused writes for longer than a lease must not get them sent twice).
            let held: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&HOLDER_LOCK_SPACE, holder],
                )
                .await
                .context("taking the lease holder's lock")?
                .get(0);
            if !held {
                tracing::warn!(
                    holder = %holder,
                    "another session holds this lease holder's lock (a name hash shared with another instance): its expired leases may be rescued while it still completes them"
                );
            }
        }
        Ok((client, rx))
    }

    /// Serves one connection; returns why it ended (None: asked to stop).
    async fn serve(
        &self,
        client: &tokio_postgres::Client,
        notes: &mut mpsc::UnboundedReceiver<Result<(), String>>,
        stop: &CancellationToken,
    ) -> Option<String> {
        let mut check = tokio::time::interval(self.cfg.check_interval);
        check.tick().await;
        loop {
            tokio::select! {
                n = notes.recv() => match n {
                    Some(Ok(())) => self.wake.notify_one(),
                    Some(Err(e)) => return Some(e),
                    None => return Some("connection task ended".into()),
                },
                _ = check.tick() => {
                    match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(format!("health query failed: {}", crate::logging::error_line(&e))),
                        Err(_) => return Some("health query timed out".into()),
                    }
                }
                _ = stop.cancelled() => return None,
            }
        }
    }
}
