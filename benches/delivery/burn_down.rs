//! (a) Burn-down: 50,000 queued deliveries, then a daemon started on them;
//! throughput and the time each row took from enqueue to arrival.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use uuid::Uuid;

use crate::daemon::DaemonProc;
use crate::queries::{claim_explain_sql, explain};
use crate::receiver::Arrival;
use crate::report::unix_secs;
use crate::setup::Bench;
use crate::usage::{Phase, Usage};
use crate::BURN_DOWN_ROWS;

pub struct BurnDown {
    pub rows: usize,
    pub payload_bytes: f64,
    /// From the daemon's start (or the enqueue) until the queue was seen empty.
    pub total: Duration,
    pub arrivals: usize,
    pub unique_arrivals: usize,
    /// First arrival − daemon start.
    pub startup_secs: Option<f64>,
    pub first_to_last_secs: Option<f64>,
    pub statuses: String,
    pub cpu: Usage,
}

impl BurnDown {
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.total.as_secs_f64()
    }
    pub fn rate_excl_startup(&self) -> Option<f64> {
        self.first_to_last_secs
            .filter(|s| *s > 0.0)
            .map(|s| self.rows as f64 / s)
    }
    pub fn print(&self, label: &str, nproc: usize) {
        println!(
            "[{label}] {} rows (payload avg {:.0} bytes as jsonb text): all done in {:.2?} → {:.0} deliveries/s (daemon start → queue empty)",
            self.rows,
            self.payload_bytes,
            self.total,
            self.rate()
        );
        match (self.startup_secs, self.first_to_last_secs, self.rate_excl_startup()) {
            (Some(s), Some(f), Some(r)) => println!(
                "[{label}] daemon start → first arrival {:.0} ms; first → last arrival {f:.3} s → {r:.0} deliveries/s excluding startup",
                s * 1e3
            ),
            _ => println!("[{label}] too few arrivals to time first → last"),
        }
        println!(
            "[{label}] receiver saw {} requests for these rows ({} distinct webhook-ids); final states: {}",
            self.arrivals, self.unique_arrivals, self.statuses
        );
        self.cpu.print(label, nproc);
    }
}

pub struct BurnDownA {
    pub burn: BurnDown,
    /// EXPLAIN ANALYZE of one claim of 1000 before the daemon started.
    pub claim_ms: Option<f64>,
}

pub async fn burn_down(bench: &mut Bench) -> Result<(BurnDownA, DaemonProc)> {
    println!("\n== (a) burn-down: {BURN_DOWN_ROWS} queued deliveries, then start the daemon");
    let t = Instant::now();
    let ids = bench.enqueue_due(BURN_DOWN_ROWS).await?;
    println!(
        "[a] enqueued {} rows in one INSERT ... SELECT generate_series in {:.2?}",
        ids.len(),
        t.elapsed()
    );
    let payload_bytes = bench.avg_payload_bytes(&ids).await?;
    let claim_ms = explain(
        &bench.db,
        "a",
        "claim, LIMIT 1000, 50,000 due, no backlog",
        &claim_explain_sql(),
        false,
    )
    .await?;

    let (result, daemon) = drain(bench, &ids, payload_bytes, true).await?;
    result.print("a", bench.nproc);
    Ok((
        BurnDownA {
            burn: result,
            claim_ms,
        },
        daemon,
    ))
}

/// Starts a daemon on the queued `ids`, waits until all are done and measures
/// the burn-down (`restart_receiver` as for `Sink::arrivals`).
pub async fn drain(
    bench: &mut Bench,
    ids: &[Uuid],
    payload_bytes: f64,
    restart_receiver: bool,
) -> Result<(BurnDown, DaemonProc)> {
    let phase = Phase::begin(bench, None).await?;
    let mut daemon = bench.spawn_daemon()?;
    let done = bench.wait_drained(&mut daemon).await?;
    let total = done - daemon.spawned_at;
    let cpu = phase.end(bench, Some(daemon.pid())).await?;
    let arrivals = bench.sink.arrivals(restart_receiver).await?;
    let result = burn_down_result(
        bench,
        ids,
        payload_bytes,
        total,
        unix_secs(daemon.spawned),
        &arrivals,
        cpu,
    )
    .await?;
    Ok((result, daemon))
}

pub async fn burn_down_result(
    bench: &Bench,
    ids: &[Uuid],
    payload_bytes: f64,
    total: Duration,
    start_unix: f64,
    arrivals: &[Arrival],
    cpu: Usage,
) -> Result<BurnDown> {
    let wanted: HashSet<String> = ids.iter().map(|u| u.to_string()).collect();
    let mine: Vec<&Arrival> = arrivals.iter().filter(|a| wanted.contains(&a.id)).collect();
    let unique: HashSet<&str> = mine.iter().map(|a| a.id.as_str()).collect();
    let first = mine.iter().map(|a| a.at).fold(f64::INFINITY, f64::min);
    let last = mine.iter().map(|a| a.at).fold(f64::NEG_INFINITY, f64::max);
    Ok(BurnDown {
        rows: ids.len(),
        payload_bytes,
        total,
        arrivals: mine.len(),
        unique_arrivals: unique.len(),
        startup_secs: first.is_finite().then_some(first - start_unix),
        first_to_last_secs: (mine.len() > 1).then_some(last - first),
        statuses: bench.statuses(ids).await?,
        cpu,
    })
}
