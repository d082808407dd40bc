//! The summary printed at the end, each figure beside its target, and the
//! latency statistics.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::backlog::Backlog;
use crate::burn_down::{BurnDown, BurnDownA};
use crate::latency::Latency;
use crate::usage::Usage;
use crate::{
    latency_rate, BACKLOG_ROWS, IDLE_WITH_BACKLOG, TARGET_IDLE_RSS_MIB, TARGET_P99_MS, TARGET_RATE,
    TARGET_RSS_MIB,
};

pub fn summary(
    nproc: usize,
    receiver: &str,
    a: &BurnDownA,
    b: &Latency,
    hwm_ab: Option<u64>,
    c: &Backlog,
    pg_problems: &[String],
) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.0}{unit}"));
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let cpu = |u: &Usage| {
        format!(
            "CPU-s over {:.1} s: daemon {:.2}, postgres {:.2}, receiver {:.2}, bench {:.2}, other work on the machine {:.2} (machine busy {:.1} of {:.1})",
            u.wall.as_secs_f64(),
            u.daemon,
            u.postgres,
            u.receiver,
            u.bench,
            u.other(),
            u.machine,
            u.wall.as_secs_f64() * nproc as f64
        )
    };
    let top_pg = |u: &Usage| {
        u.postgres_by_kind
            .iter()
            .take(3)
            .map(|(k, s)| format!("{k} {s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let per_delivery = |u: &Usage, n: usize| {
        let n = n.max(1) as f64;
        format!(
            "per delivery: daemon {:.0} µs, postgres {:.0} µs, receiver {:.0} µs CPU; {:.1} KiB WAL",
            u.daemon / n * 1e6,
            u.postgres / n * 1e6,
            u.receiver / n * 1e6,
            u.wal_bytes / n / 1024.0
        )
    };
    let busiest = |u: &Usage| {
        u.statements
            .first()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .map(|s| s.chars().take(150).collect::<String>())
            .unwrap_or_else(|| "-".into())
    };
    let burn = |x: &BurnDown| {
        format!(
            "{:.0} deliveries/s from daemon start ({} rows in {:.2} s), {} first → last arrival, startup {}",
            x.rate(),
            x.rows,
            x.total.as_secs_f64(),
            opt(x.rate_excl_startup(), " deliveries/s"),
            opt(x.startup_secs.map(|s| s * 1e3), " ms"),
        )
    };
    println!("\n==================== summary ====================");
    println!("machine: nproc {nproc}; PostgreSQL durable (fsync, synchronous_commit, full_page_writes on; pg_stat_statements, auto_explain > 250 ms, lock waits > 100 ms logged); receiver: {receiver}");
    println!("daemon: separate process (`plausible-webhooks run`, release build), configured by environment, defaults otherwise; webhook max_concurrency 1000, no rate limit; payloads ~{:.0} B", a.burn.payload_bytes);
    println!("(a) burn-down: {}", burn(&a.burn));
    println!("    {}", cpu(&a.burn.cpu));
    println!("    postgres CPU by process: {}", top_pg(&a.burn.cpu));
    println!("    {}", per_delivery(&a.burn.cpu, a.burn.rows));
    println!("    busiest statement: {}", busiest(&a.burn.cpu));
    println!(
        "    one claim of 1000 (EXPLAIN ANALYZE, 50,000 due, no backlog): {}",
        ms(a.claim_ms)
    );
    println!(
        "(b) latency, {} single-row INSERTs at {}/s ({:.1} s), {} matched by webhook-id:",
        b.sent,
        latency_rate(),
        b.issue_secs,
        b.matched
    );
    println!(
        "    insert start → arrival (commit included): {}",
        b.end_to_end
    );
    println!("    INSERT round trip (commit) alone:         {}", b.commit);
    println!(
        "    INSERT returned → arrival:                {}",
        b.after_commit
    );
    println!("    {}", cpu(&b.cpu));
    println!("    postgres CPU by process: {}", top_pg(&b.cpu));
    println!(
        "    {} (the INSERTs included)",
        per_delivery(&b.cpu, b.sent)
    );
    for l in b.cpu.log.iter().filter(|l| {
        l.starts_with("lock waits")
            || l.trim_start().starts_with("held by")
            || l.contains("acquired in the end")
    }) {
        println!("    {}", l.trim_start());
    }
    println!("(c) daemon VmHWM after (a)+(b): {}", mib(hwm_ab));
    println!(
        "    {BACKLOG_ROWS} not-due rows: inserted in {:.1} s, VACUUM ANALYZE {:.1} s, table with indexes {}",
        c.insert.as_secs_f64(),
        c.vacuum.as_secs_f64(),
        c.table_size
    );
    println!(
        "    fresh daemon idle {} s at the 1M backlog: VmHWM {}",
        IDLE_WITH_BACKLOG.as_secs(),
        mib(c.hwm_idle_kib)
    );
    println!(
        "    claim of ≤ 1000 at the 1M backlog: {} with nothing due, {} with 50,000 due; next-due query {}",
        ms(c.claim_idle_ms),
        ms(c.claim_due_ms),
        ms(c.next_due_ms)
    );
    println!(
        "    burn-down of 50,000 due on the 1M backlog: {}",
        burn(&c.burn)
    );
    println!("    VmHWM after it: {}", mib(c.hwm_burn_kib));
    println!("    {}", cpu(&c.burn.cpu));
    println!("    postgres CPU by process: {}", top_pg(&c.burn.cpu));
    println!("    {}", per_delivery(&c.burn.cpu, c.burn.rows));
    println!("    busiest statement: {}", busiest(&c.burn.cpu));
    println!(
        "targets: burn-down ≥ {TARGET_RATE:.0} deliveries/s; INSERT returned → arrival p99 ≤ {TARGET_P99_MS} ms at {}/s; RSS ≤ {TARGET_RSS_MIB} MiB after (a)+(b), ≤ {TARGET_IDLE_RSS_MIB} MiB idle at the 1M backlog",
        latency_rate()
    );
    if !pg_problems.is_empty() {
        println!(
            "PostgreSQL server.log ERROR/FATAL lines ({}):",
            pg_problems.len()
        );
        for l in pg_problems.iter().take(20) {
            println!("    {l}");
        }
    }
    println!("=================================================");
}

#[derive(Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            n: v.len(),
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: v[v.len() - 1],
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n {})",
            self.p50, self.p95, self.p99, self.max, self.n
        )
    }
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("unknown".into(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    })
}

pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
