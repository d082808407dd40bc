//! (b) Latency: single-row INSERTs at a fixed rate into an idle daemon's
//! queue, from commit to the receiver's arrival (matched by webhook-id).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use crate::daemon::DaemonProc;
use crate::queries::payload_sql;
use crate::report::{unix_secs, Stats};
use crate::setup::Bench;
use crate::usage::{Phase, Usage};
use crate::{latency_rate, LATENCY_CONNECTIONS, LATENCY_SECS};

pub struct Latency {
    pub sent: usize,
    pub issue_secs: f64,
    pub matched: usize,
    /// Arrival at the receiver − the moment just before the INSERT was issued (ms).
    pub end_to_end: Stats,
    /// The INSERT's round trip, commit included (ms).
    pub commit: Stats,
    /// Arrival − the INSERT's return (ms): the daemon's own share.
    pub after_commit: Stats,
    pub statuses: String,
    pub cpu: Usage,
}

pub async fn latency(bench: &mut Bench, mut daemon: DaemonProc) -> Result<(Latency, DaemonProc)> {
    let rate = latency_rate();
    let n = (rate * LATENCY_SECS) as usize;
    println!(
        "\n== (b) latency: single-row INSERTs (each its own autocommit transaction) at {rate}/s for {LATENCY_SECS} s, daemon idle"
    );
    daemon.check_alive()?;
    let sql = format!(
        "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
         VALUES ($1, 'goal_completion', {}) RETURNING id",
        payload_sql("$2::int")
    );
    let mut clients = Vec::new();
    for _ in 0..LATENCY_CONNECTIONS {
        let c = plausible_webhooks::db::connect(&bench.bench_url).await?;
        let stmt = c.prepare(&sql).await?;
        clients.push(Arc::new((c, stmt)));
    }

    let phase = Phase::begin(bench, Some(daemon.pid())).await?;
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let webhook = bench.webhook;
    for i in 0..n {
        interval.tick().await;
        let c = clients[i % clients.len()].clone();
        tasks.spawn(async move {
            let before = SystemTime::now();
            let row = c.0.query_one(&c.1, &[&webhook, &(i as i32)]).await?;
            let after = SystemTime::now();
            Ok::<_, anyhow::Error>((row.get::<_, Uuid>(0), before, after))
        });
    }
    let issue_secs = started.elapsed().as_secs_f64();
    let mut sent = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        sent.push(r??);
    }
    println!(
        "[b] issued {} inserts in {issue_secs:.2} s ({:.0}/s)",
        sent.len(),
        sent.len() as f64 / issue_secs
    );
    bench.wait_drained(&mut daemon).await?;
    let cpu = phase.end(bench, Some(daemon.pid())).await?;
    let arrivals = bench.sink.arrivals(true).await?;

    let mut first_arrival: HashMap<&str, f64> = HashMap::new();
    for a in &arrivals {
        let t = first_arrival.entry(a.id.as_str()).or_insert(a.at);
        *t = t.min(a.at);
    }
    let (mut e2e, mut commit, mut after_commit) = (Vec::new(), Vec::new(), Vec::new());
    for (id, before, after) in &sent {
        let (b, a) = (unix_secs(*before), unix_secs(*after));
        commit.push((a - b) * 1e3);
        if let Some(at) = first_arrival.get(id.to_string().as_str()) {
            e2e.push((at - b) * 1e3);
            after_commit.push((at - a) * 1e3);
        }
    }
    let ids: Vec<Uuid> = sent.iter().map(|s| s.0).collect();
    let result = Latency {
        sent: sent.len(),
        issue_secs,
        matched: e2e.len(),
        end_to_end: Stats::of(e2e),
        commit: Stats::of(commit),
        after_commit: Stats::of(after_commit),
        statuses: bench.statuses(&ids).await?,
        cpu,
    };
    println!(
        "[b] matched {} of {} inserts to an access-log line by webhook-id; final states: {}",
        result.matched, result.sent, result.statuses
    );
    println!(
        "[b] insert start → arrival (includes the INSERT's commit): {}",
        result.end_to_end
    );
    println!(
        "[b]   of which the INSERT round trip (commit, fsync): {}",
        result.commit
    );
    println!(
        "[b]   and INSERT returned → arrival (daemon):         {}",
        result.after_commit
    );
    println!("[b] (arrival = nginx's $msec, millisecond resolution, written when the response is logged)");
    print_stalls(&sent, started_wall);
    result.cpu.print("b", bench.nproc);
    Ok((result, daemon))
}

/// INSERTs whose round trip exceeded 50 ms, grouped into windows (slow
/// inserts less than 100 ms apart), with UTC times to match server.log.
pub fn print_stalls(sent: &[(Uuid, SystemTime, SystemTime)], start: SystemTime) {
    const SLOW_MS: f64 = 50.0;
    let mut slow: Vec<(f64, f64)> = sent
        .iter()
        .map(|(_, b, a)| (unix_secs(*b), (unix_secs(*a) - unix_secs(*b)) * 1e3))
        .filter(|(_, ms)| *ms > SLOW_MS)
        .collect();
    slow.sort_by(|x, y| x.0.total_cmp(&y.0));
    if slow.is_empty() {
        println!("[b] no INSERT took longer than {SLOW_MS} ms");
        return;
    }
    // (first start, last start, count, worst round trip)
    let mut windows: Vec<(f64, f64, usize, f64)> = Vec::new();
    for (at, ms) in slow.iter().copied() {
        match windows.last_mut() {
            Some(w) if at - w.1 < 0.1 => {
                w.1 = at;
                w.2 += 1;
                w.3 = w.3.max(ms);
            }
            _ => windows.push((at, at, 1, ms)),
        }
    }
    println!(
        "[b] {} INSERTs took longer than {SLOW_MS} ms, in {} window(s) (UTC, +s from the first insert):",
        slow.len(),
        windows.len()
    );
    let t0 = unix_secs(start);
    for (first, last, n, worst) in windows.iter().take(8) {
        println!(
            "      {} – {} (+{:.2} s): {n} inserts, worst round trip {worst:.0} ms",
            utc(*first),
            utc(*last),
            first - t0
        );
    }
}

pub fn utc(unix: f64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
