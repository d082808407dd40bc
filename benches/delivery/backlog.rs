//! (c) Memory and claim cost with 1,000,000 rows queued but not yet due, then
//! a burn-down on top of them.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::burn_down::{drain, BurnDown};
use crate::queries::{claim_explain_sql, explain, next_due_explain_sql, payload_sql};
use crate::report::mib;
use crate::setup::Bench;
use crate::{BACKLOG_ROWS, BURN_DOWN_ROWS, IDLE_WITH_BACKLOG};

pub struct Backlog {
    pub insert: Duration,
    pub vacuum: Duration,
    pub table_size: String,
    pub hwm_idle_kib: Option<u64>,
    pub claim_idle_ms: Option<f64>,
    pub next_due_ms: Option<f64>,
    pub claim_due_ms: Option<f64>,
    pub burn: BurnDown,
    pub hwm_burn_kib: Option<u64>,
}

pub async fn backlog(bench: &mut Bench) -> Result<Backlog> {
    println!(
        "\n== (c) memory and claim cost with {BACKLOG_ROWS} pending rows due in an hour (daemon stopped while they are inserted)"
    );
    let t = Instant::now();
    bench
        .db
        .execute(
            &format!(
                "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, next_attempt_at)
                 SELECT $1, 'goal_completion', {}, now() + interval '1 hour'
                 FROM generate_series(1, $2::int) g",
                payload_sql("g")
            ),
            &[&bench.webhook, &BACKLOG_ROWS],
        )
        .await?;
    let insert = t.elapsed();
    println!("[c] inserted {BACKLOG_ROWS} not-due rows in {insert:.2?}");
    let t = Instant::now();
    bench
        .db
        .batch_execute(if bench.ready_rows {
            // The ready rows took the 1M inserts too (sql/0020).
            "VACUUM (ANALYZE) webhook_deliveries, webhook_deliveries_ready"
        } else {
            "VACUUM (ANALYZE) webhook_deliveries"
        })
        .await?;
    let vacuum = t.elapsed();
    let table_size: String = bench
        .db
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('webhook_deliveries'))",
            &[],
        )
        .await?
        .get(0);
    println!("[c] VACUUM (ANALYZE) in {vacuum:.2?} (what autovacuum would do within a minute); webhook_deliveries is {table_size} with indexes");

    let claim_idle_ms = explain(
        &bench.db,
        "c",
        "claim, LIMIT 1000, nothing due",
        &claim_explain_sql(),
        false,
    )
    .await?;
    let next_due_ms = explain(
        &bench.db,
        "c",
        "next-due query",
        &next_due_explain_sql(),
        false,
    )
    .await?;

    let mut daemon = bench.spawn_daemon()?;
    let until = Instant::now() + IDLE_WITH_BACKLOG;
    while Instant::now() < until {
        daemon.check_alive()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hwm_idle_kib = daemon.vm_hwm_kib();
    println!(
        "[c] fresh daemon #{} idle for {IDLE_WITH_BACKLOG:?} at {BACKLOG_ROWS} backlog: VmHWM {}",
        daemon.n,
        mib(hwm_idle_kib)
    );
    daemon.stop().await?;

    println!(
        "\n[c] burn-down of {BURN_DOWN_ROWS} due rows on top of the {BACKLOG_ROWS} not-due backlog"
    );
    let t = Instant::now();
    let ids = bench.enqueue_due(BURN_DOWN_ROWS).await?;
    println!("[c] enqueued {} due rows in {:.2?}", ids.len(), t.elapsed());
    let claim_due_ms = explain(
        &bench.db,
        "c",
        "claim, LIMIT 1000, 50,000 due, 1M not due",
        &claim_explain_sql(),
        true,
    )
    .await?;
    let payload_bytes = bench.avg_payload_bytes(&ids).await?;

    let (burn, daemon) = drain(bench, &ids, payload_bytes, false).await?;
    burn.print("c", bench.nproc);
    let hwm_burn_kib = daemon.vm_hwm_kib();
    println!(
        "[c] daemon #{} VmHWM after that burn-down: {}",
        daemon.n,
        mib(hwm_burn_kib)
    );
    daemon.stop().await?;
    Ok(Backlog {
        insert,
        vacuum,
        table_size,
        hwm_idle_kib,
        claim_idle_ms,
        next_due_ms,
        claim_due_ms,
        burn,
        hwm_burn_kib,
    })
}
