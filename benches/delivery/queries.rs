//! The SQL the benchmark itself runs: EXPLAINs of the claimer's statements,
//! the poll for open deliveries, the payload it queues.

use anyhow::Result;
use plausible_webhooks::queue::claimer;
use tokio_postgres::Client;

/// The claim of src/queue/claimer.rs, with its parameters as literals:
/// 512 rows, a made-up instance, a 30 s lease, nothing tracked, the default
/// limits and shares of 512 slots. (Highest placeholder first: "$1" is in "$12".)
pub fn claim_explain_sql() -> String {
    let params = [
        ("$14", "true"),
        ("$13", "33554432"),
        ("$12", "64"),
        ("$11", "8"),
        ("$10", "512"),
        ("$9", "0"),
        ("$8", "512"),
        ("$7", "64"),
        ("$6", "'{}'"),
        ("$5", "'{}'"),
        ("$4", "'{}'"),
        ("$3", "30"),
        ("$2", "'bench:explain'"),
        ("$1", "512"),
    ];
    let sql = params
        .iter()
        .fold(claimer::CLAIM_SQL.to_string(), |sql, (p, v)| {
            sql.replace(p, v)
        });
    format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")
}

/// The claimer's "when is the next row due" query, run when idle.
pub fn next_due_explain_sql() -> String {
    format!(
        "EXPLAIN (ANALYZE, BUFFERS) {}",
        claimer::NEXT_DUE_SQL.replace("$1", "'{}'")
    )
}

/// Is any delivery not finished yet? Asked through the ready rows' index per
/// webhook and the lease rows (sql/0020), with EXISTS so it stops at the
/// first live row: a count, or a scan of the table, every 50 ms would cost
/// PostgreSQL a good share of what the queue itself costs (a count of the
/// due rows took 35 ms a poll here), and with the 1M backlog (due in an
/// hour, outside the 30 minute bound) a scan would read a gigabyte. Retries
/// (1 and 5 min) count as open.
pub const OPEN_SQL: &str = "
SELECT EXISTS (SELECT 1 FROM webhooks w CROSS JOIN LATERAL (
                   SELECT 1 FROM webhook_deliveries_ready p
                   WHERE p.webhook_id = w.id AND p.next_attempt_at < now() + interval '30 minutes' LIMIT 1) x)
    OR EXISTS (SELECT 1 FROM webhook_deliveries_leases)";

/// How many are open, for the timeout message.
pub const OPEN_COUNT_SQL: &str = "
SELECT (SELECT count(*) FROM webhook_deliveries_leases)
     + (SELECT count(*) FROM webhook_deliveries_ready WHERE next_attempt_at < now() + interval '30 minutes')";

/// The same two of the schema before migration 20 (the queue's state in the
/// wide row, through its partial indexes), for `BENCH_DAEMON_BIN` of a
/// commit before it.
pub const OPEN_SQL_BEFORE_20: &str = "
SELECT EXISTS (SELECT 1 FROM webhooks w CROSS JOIN LATERAL (
                   SELECT 1 FROM webhook_deliveries p
                   WHERE p.webhook_id = w.id AND p.status = 'pending'
                     AND p.next_attempt_at < now() + interval '30 minutes' LIMIT 1) x)
    OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'delivering')";
pub const OPEN_COUNT_SQL_BEFORE_20: &str = "
SELECT count(*) FROM webhook_deliveries
WHERE status = 'delivering' OR (status = 'pending' AND next_attempt_at < now() + interval '30 minutes')";

/// A ~1 KB goal_completion payload as an SQL expression of the row number `n`.
pub fn payload_sql(n: &str) -> String {
    format!(
        "jsonb_build_object(
            'goal_id', 7, 'goal_name', 'Signup', 'n', {n},
            'pathname', '/register/step-' || {n},
            'referrer', 'https://news.example.com/article/' || md5({n}::text),
            'country', 'EE', 'region', 'EE-37', 'city', 'Tallinn',
            'device', 'Desktop', 'browser', 'Firefox', 'os', 'Linux',
            'props', jsonb_build_object('plan', 'business', 'ab', 'variant-b', 'seats', 12),
            'notes', repeat(md5(({n} * 7)::text), 24))"
    )
}

/// Runs `sql` (an EXPLAIN ANALYZE) in a transaction that is rolled back;
/// prints the plan and returns its execution time in ms.
pub async fn explain(
    db: &Client,
    phase: &str,
    label: &str,
    sql: &str,
    print_plan: bool,
) -> Result<Option<f64>> {
    db.batch_execute("BEGIN").await?;
    let rows = db.query(sql, &[]).await;
    db.batch_execute("ROLLBACK").await?;
    let lines: Vec<String> = match rows {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        // This build's statement on another commit's schema (BENCH_DAEMON_BIN).
        Err(e) => {
            println!("[{phase}] EXPLAIN ANALYZE {label}: not run ({e})");
            return Ok(None);
        }
    };
    let time = |key: &str| {
        lines.iter().find_map(|l| {
            l.trim()
                .strip_prefix(key)?
                .trim()
                .strip_suffix("ms")?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let exec = time("Execution Time:");
    println!(
        "[{phase}] EXPLAIN ANALYZE {label} (rolled back): planning {:.3} ms, execution {:.3} ms",
        time("Planning Time:").unwrap_or(f64::NAN),
        exec.unwrap_or(f64::NAN)
    );
    if print_plan {
        for l in &lines {
            println!("      {l}");
        }
    }
    Ok(exec)
}
