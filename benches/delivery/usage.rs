//! What one phase cost: CPU seconds per party (PostgreSQL split by kind of
//! process), WAL written, busiest statements, and the server log summarised.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::procfs::{all_procs, clk_tck, descendants, machine_busy_secs, proc_title, tree_ticks};
use crate::setup::Bench;

/// What one phase cost: CPU seconds (user + system) of each party,
/// PostgreSQL's split by kind of process, its busiest statements and the
/// autovacuum runs on the queue table.
pub struct Usage {
    pub wall: Duration,
    pub daemon: f64,
    /// The postmaster and all its processes, those that exited during the
    /// phase included (they are in the postmaster's cutime/cstime).
    pub postgres: f64,
    /// nginx master and worker; the in-process receiver counts under `bench`.
    pub receiver: f64,
    pub bench: f64,
    /// Non-idle CPU time of the whole machine, other people's work included.
    pub machine: f64,
    pub postgres_by_kind: Vec<(String, f64)>,
    pub statements: Vec<String>,
    pub autovacuums: i64,
    pub autoanalyzes: i64,
    /// Updates of webhook_deliveries during the phase, and how many were HOT
    /// (statistics as flushed by the sessions: within a second or so).
    pub updates: i64,
    pub hot_updates: i64,
    /// server.log during the phase, summarised (see `summarize_log`).
    pub log: Vec<String>,
    /// WAL PostgreSQL wrote during the phase.
    pub wal_bytes: f64,
}

impl Usage {
    pub fn other(&self) -> f64 {
        (self.machine - self.daemon - self.postgres - self.receiver - self.bench).max(0.0)
    }

    pub fn print(&self, label: &str, nproc: usize) {
        let w = self.wall.as_secs_f64();
        let pct = |v: f64| 100.0 * v / w;
        println!(
            "[{label}] CPU-seconds over {w:.2} s: daemon {:.2} ({:.0}% of a core), postgres {:.2} ({:.0}%), receiver {:.2} ({:.0}%), bench {:.2}, \
             other work on this machine {:.2}; machine busy {:.2} of {:.2}",
            self.daemon,
            pct(self.daemon),
            self.postgres,
            pct(self.postgres),
            self.receiver,
            pct(self.receiver),
            self.bench,
            self.other(),
            self.machine,
            w * nproc as f64
        );
        println!(
            "[{label}]   postgres by process: {}",
            self.postgres_by_kind
                .iter()
                .filter(|(_, s)| *s >= 0.005)
                .map(|(k, s)| format!("{k} {s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "[{label}]   WAL written: {:.1} MiB; autovacuum on webhook_deliveries during the phase: {} vacuum(s), {} analyze(s); \
             its rows updated {} times, {} of them HOT",
            self.wal_bytes / 1048576.0,
            self.autovacuums,
            self.autoanalyzes,
            self.updates,
            self.hot_updates
        );
        if !self.statements.is_empty() {
            println!("[{label}]   busiest statements (pg_stat_statements, executor time):");
            for s in &self.statements {
                println!("        {s}");
            }
        }
        if !self.log.is_empty() {
            println!("[{label}]   PostgreSQL server.log during the phase (lock waits > 100 ms, statements > 250 ms with their plans, autovacuum, checkpoints, errors):");
            for l in &self.log {
                println!("        {}", l.chars().take(240).collect::<String>());
            }
        }
    }
}

/// Raw counters at one moment, in clock ticks.
pub struct Snapshot {
    pub daemon: u64,
    /// utime + stime of every live PostgreSQL process.
    pub pg_own: HashMap<i32, u64>,
    /// The postmaster's cutime + cstime.
    pub pg_reaped: u64,
    pub receiver: u64,
    pub bench: u64,
    pub machine: f64,
}

pub struct Phase {
    pub started: Instant,
    pub before: Snapshot,
    pub vacuum_before: (i64, i64, i64, i64),
    pub log_offset: usize,
    pub wal_lsn: String,
}

impl Phase {
    /// `daemon`: its pid if it is running already.
    pub async fn begin(bench: &Bench, daemon: Option<i32>) -> Result<Phase> {
        if bench.statements {
            bench
                .db
                .batch_execute("SELECT pg_stat_statements_reset()")
                .await?;
        }
        Ok(Phase {
            wal_lsn: bench
                .db
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?
                .get(0),
            log_offset: bench.server_log().len(),
            vacuum_before: bench.vacuum_counts().await?,
            before: bench.snapshot(daemon),
            started: Instant::now(),
        })
    }

    pub async fn end(self, bench: &Bench, daemon: Option<i32>) -> Result<Usage> {
        let wall = self.started.elapsed();
        let after = bench.snapshot(daemon);
        let wal_bytes: f64 = bench
            .db
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
                &[&self.wal_lsn],
            )
            .await?
            .get(0);
        let before = &self.before;
        let (av, aa, up, hot) = bench.vacuum_counts().await?;
        let kinds = bench.backend_kinds().await?;
        let postmaster = bench.postmaster_pid();
        let tck = clk_tck();

        let mut by_kind: HashMap<String, u64> = HashMap::new();
        for (pid, own) in &after.pg_own {
            let d = own.saturating_sub(before.pg_own.get(pid).copied().unwrap_or(0));
            let kind = kinds.get(pid).cloned().unwrap_or_else(|| {
                if *pid == postmaster {
                    "postmaster".into()
                } else {
                    proc_title(*pid)
                }
            });
            *by_kind.entry(kind).or_default() += d;
        }
        let gone: u64 = before
            .pg_own
            .iter()
            .filter(|(pid, _)| !after.pg_own.contains_key(pid))
            .map(|(_, t)| t)
            .sum();
        let exited = after
            .pg_reaped
            .saturating_sub(before.pg_reaped)
            .saturating_sub(gone);
        *by_kind
            .entry("exited during the phase (autovacuum workers, closed connections)".into())
            .or_default() += exited;
        let postgres = by_kind.values().sum::<u64>() as f64 / tck;
        let mut postgres_by_kind: Vec<(String, f64)> = by_kind
            .into_iter()
            .map(|(k, t)| (k, t as f64 / tck))
            .collect();
        postgres_by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));

        Ok(Usage {
            wall,
            daemon: after.daemon.saturating_sub(before.daemon) as f64 / tck,
            postgres,
            receiver: after.receiver.saturating_sub(before.receiver) as f64 / tck,
            bench: after.bench.saturating_sub(before.bench) as f64 / tck,
            machine: after.machine - before.machine,
            postgres_by_kind,
            statements: bench.top_statements().await?,
            autovacuums: av - self.vacuum_before.0,
            autoanalyzes: aa - self.vacuum_before.1,
            updates: up - self.vacuum_before.2,
            hot_updates: hot - self.vacuum_before.3,
            log: summarize_log(
                bench.server_log().get(self.log_offset..).unwrap_or(""),
                &kinds,
            ),
            wal_bytes,
        })
    }
}

impl Bench {
    /// PostgreSQL's log (PgCluster starts the server with `-l <root>/server.log`).
    pub fn server_log(&self) -> String {
        self.cluster
            .data_dir()
            .parent()
            .and_then(|root| std::fs::read_to_string(root.join("server.log")).ok())
            .unwrap_or_default()
    }

    pub fn snapshot(&self, daemon: Option<i32>) -> Snapshot {
        let procs = all_procs();
        let postmaster = self.postmaster_pid();
        let pg_own = descendants(&procs, postmaster)
            .into_iter()
            .map(|p| (p.pid, p.own))
            .collect();
        Snapshot {
            daemon: daemon.map_or(0, |p| tree_ticks(&procs, p)),
            pg_own,
            pg_reaped: procs
                .iter()
                .find(|p| p.pid == postmaster)
                .map_or(0, |p| p.reaped),
            receiver: self.sink.pid().map_or(0, |p| tree_ticks(&procs, p)),
            bench: procs
                .iter()
                .find(|p| p.pid == std::process::id() as i32)
                .map_or(0, |p| p.own),
            machine: machine_busy_secs(),
        }
    }

    /// PostgreSQL's pid → "connection: <application_name>" or its backend type.
    pub async fn backend_kinds(&self) -> Result<HashMap<i32, String>> {
        let rows = self
            .db
            .query(
                "SELECT pid, CASE WHEN backend_type = 'client backend'
                                  THEN 'connections of ' || coalesce(nullif(application_name, ''), '?')
                                  ELSE backend_type END
                 FROM pg_stat_activity",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn vacuum_counts(&self) -> Result<(i64, i64, i64, i64)> {
        let r = self
            .db
            .query_one(
                "SELECT autovacuum_count, autoanalyze_count, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                 WHERE relname = 'webhook_deliveries'",
                &[],
            )
            .await?;
        Ok((r.get(0), r.get(1), r.get(2), r.get(3)))
    }

    pub async fn top_statements(&self) -> Result<Vec<String>> {
        if !self.statements {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .query(
                "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g')
                 FROM pg_stat_statements
                 WHERE query NOT LIKE '%pg_stat_statements%'
                 ORDER BY total_exec_time DESC LIMIT 6",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (calls, total, n): (i64, f64, i64) = (r.get(0), r.get(1), r.get(2));
                let q: String = r.get(3);
                format!(
                    "{total:>8.0} ms {calls:>7} calls {:>8.3} ms each {n:>8} rows  {}",
                    total / calls.max(1) as f64,
                    q.chars().take(100).collect::<String>()
                )
            })
            .collect())
    }
}

/// The server.log lines of one phase, summarised: lock waits grouped by lock
/// with the kinds of process holding it, the first plan auto_explain logged
/// (statements over 250 ms), autovacuum runs, checkpoints and errors.
pub fn summarize_log(text: &str, kinds: &HashMap<i32, String>) -> Vec<String> {
    // lock → (waits, first, last)
    let mut waits: Vec<(String, usize, String, String)> = Vec::new();
    let mut holders: HashMap<String, usize> = HashMap::new();
    let (mut acquired, mut longest_wait_ms) = (0usize, 0f64);
    let (mut plan, mut plans, mut in_plan) = (Vec::new(), 0usize, false);
    let mut other = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            let l = line.trim();
            let planish = ["cost=", "Cond:", "Filter:", "Query Text:"]
                .iter()
                .any(|k| l.contains(k));
            if in_plan && planish && plan.len() < 30 {
                plan.push(format!("  {l}"));
            }
            continue;
        }
        in_plan = false;
        let time = line.get(11..23).unwrap_or("").to_string();
        if let Some(i) = line.find("still waiting for ") {
            let what = line[i + 18..]
                .split(" after ")
                .next()
                .unwrap_or("")
                .to_string();
            match waits.iter_mut().find(|w| w.0 == what) {
                Some(w) => {
                    w.1 += 1;
                    w.3 = time;
                }
                None => waits.push((what, 1, time.clone(), time)),
            }
        } else if let Some(i) = line.find("holding the lock: ") {
            let pids = line[i + 18..].split('.').next().unwrap_or("");
            for pid in pids.split(',').filter_map(|p| p.trim().parse::<i32>().ok()) {
                let kind = kinds
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| "a process gone by the phase's end".into());
                *holders.entry(format!("{kind} (pid {pid})")).or_default() += 1;
            }
        } else if line.contains(" acquired ") && line.contains(" after ") {
            acquired += 1;
            let ms = line
                .rsplit(" after ")
                .next()
                .and_then(|t| t.trim().strip_suffix("ms"))
                .and_then(|t| t.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            longest_wait_ms = longest_wait_ms.max(ms);
        } else if line.contains("duration: ") && line.contains(" plan:") {
            plans += 1;
            if plan.is_empty() {
                in_plan = true;
                plan.push(format!(
                    "auto_explain: {}",
                    &line[line.find("duration: ").unwrap_or(0)..]
                ));
            }
        } else if [
            "automatic vacuum",
            "automatic analyze",
            "checkpoint starting",
            "checkpoint complete",
            "ERROR",
            "FATAL",
            "PANIC",
        ]
        .iter()
        .any(|k| line.contains(k))
        {
            other.push(line.to_string());
        }
    }
    let mut out = Vec::new();
    for (what, n, first, last) in &waits {
        out.push(format!(
            "lock waits > 100 ms: {n} for {what}, {first} – {last} UTC"
        ));
    }
    if acquired > 0 {
        out.push(format!(
            "  ... acquired in the end ({acquired} logged), longest wait {longest_wait_ms:.0} ms"
        ));
    }
    if !holders.is_empty() {
        let mut h: Vec<_> = holders.into_iter().collect();
        h.sort_by_key(|x| std::cmp::Reverse(x.1));
        out.push(format!(
            "  held by: {}",
            h.iter()
                .take(6)
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if plans > 0 {
        out.push(format!(
            "{plans} statement(s) over 250 ms; the first one's plan:"
        ));
        out.extend(plan);
    }
    let n_other = other.len();
    out.extend(other.into_iter().take(10));
    if n_other > 10 {
        out.push(format!(
            "... {} more autovacuum/checkpoint/error lines",
            n_other - 10
        ));
    }
    out
}
