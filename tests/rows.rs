//! Rows PostgreSQL accepts but the daemon cannot read as they are (issue 12,
//! points 1, 2 and 4): times past what the daemon's time library holds
//! (`infinity`, `-infinity`, year 10000 and later), payloads nested deeper
//! than a JSON parser follows, NUL in text parameters. None of them may stop
//! the daemon, the queue or a read path: each is refused where it is written,
//! read as a value, or ends its own row with a clear error.

mod common;

use std::process::Output;
use std::time::Duration;

use common::http::{free_port, request, wait_status, Answer};
use common::Env;
use plausible_webhooks::admin::auth::operator_token_hash;
use plausible_webhooks::testkit::receiver::always;
use serde_json::{json, Value};
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);
const OPERATOR: &str = "operator-token-for-tests-0123456789";

/// The constraints migration 4 adds, dropped: a database where a row holds
/// such a time anyway (the checks are the first line; the daemon must still
/// survive what gets past them).
async fn drop_time_checks(env: &Env) {
    env.db
        .batch_execute(
            "ALTER TABLE webhooks DROP CONSTRAINT IF EXISTS webhooks_times_in_range;
             ALTER TABLE webhook_triggers DROP CONSTRAINT IF EXISTS webhook_triggers_times_in_range;
             ALTER TABLE webhook_deliveries DROP CONSTRAINT IF EXISTS webhook_deliveries_times_in_range;
             ALTER TABLE webhook_delivery_attempts DROP CONSTRAINT IF EXISTS webhook_delivery_attempts_times_in_range;",
        )
        .await
        .unwrap();
}

/// A trigger of `kind` (threshold 1 for spike/drop), then `set` applied to it.
async fn trigger(env: &Env, webhook: Uuid, kind: &str, set: &str) -> Uuid {
    let threshold = (kind != "goal_completion").then_some(1i32);
    let id: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold) VALUES ($1, $2, $3) RETURNING id",
            &[&webhook, &kind, &threshold],
        )
        .await
        .unwrap()
        .get(0);
    if !set.is_empty() {
        env.db
            .execute(
                &format!("UPDATE webhook_triggers SET {set} WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap();
    }
    id
}

/// The daemon process with every kind of unreadable time present: it keeps
/// running, delivers and evaluates everything else, ends the unreadable
/// deliveries `failed` saying why and sets the unreadable triggers aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_times_end_their_own_row_and_nothing_else() {
    let env = Env::new().await;
    drop_time_checks(&env).await;
    let rx = env.receiver(always(200)).await;
    // A healthy webhook (with a goal trigger) and its deliveries.
    let good = env.webhook(&rx.url("/good")).await;
    // A webhook whose updated_at is infinity: only the claimer's cache key;
    // its deliveries go out.
    let inf_webhook = env.webhook(&rx.url("/inf")).await;
    env.db
        .execute("ALTER TABLE webhooks DISABLE TRIGGER webhooks_touch;", &[])
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET updated_at = 'infinity' WHERE id = $1",
            &[&inf_webhook],
        )
        .await
        .unwrap();
    env.db
        .execute("ALTER TABLE webhooks ENABLE TRIGGER webhooks_touch", &[])
        .await
        .unwrap();
    // Deliveries whose inserted_at (the envelope's timestamp) cannot be read,
    // in the same claim as good ones.
    let bad_deliveries: Vec<Uuid> = env
        .db
        .query(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, inserted_at)
             VALUES ($1, 'goal_completion', '{}', 'infinity'),
                    ($1, 'goal_completion', '{}', '10000-01-01 00:00:00+00'),
                    ($1, 'goal_completion', '{}', '-infinity')
             RETURNING id",
            &[&good],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    env.enqueue(good, 5).await;
    env.enqueue(inf_webhook, 2).await;
    // Goal triggers whose state cannot be read.
    let bad_goal = [
        trigger(&env, good, "goal_completion", "goal_cursor = 'infinity'").await,
        trigger(
            &env,
            good,
            "goal_completion",
            "goal_cursor = '20000-01-01 00:00:00+00'",
        )
        .await,
        trigger(&env, good, "goal_completion", "goal_floor = 'infinity'").await,
    ];
    // The only spike/drop trigger is never due: the evaluator's "when is the
    // next one due" reads infinity.
    trigger(
        &env,
        good,
        "traffic_drop",
        "next_evaluation_at = 'infinity'",
    )
    .await;

    let mut daemon = env.spawn_daemon(&[(
        "PLAUSIBLE_WEBHOOKS__TRIGGERS__EVALUATION_INTERVAL_SECS",
        "1",
    )]);
    env.wait_until(
        "SELECT count(*) = 7 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    let ids: Vec<String> = bad_deliveries.iter().map(|u| format!("'{u}'")).collect();
    env.wait_until(
        &format!(
            "SELECT bool_and(status = 'failed') FROM webhook_deliveries WHERE id IN ({})",
            ids.join(",")
        ),
        T,
    )
    .await;
    for id in &bad_deliveries {
        let r = env
            .db
            .query_one(
                "SELECT d.last_error, d.attempts, a.error, d.finished_at IS NOT NULL
                 FROM webhook_deliveries d JOIN webhook_delivery_attempts a ON a.delivery_id = d.id
                 WHERE d.id = $1",
                &[id],
            )
            .await
            .unwrap();
        let last_error: String = r.get(0);
        assert!(
            last_error.contains("inserted_at") && last_error.contains("not sent"),
            "{last_error}"
        );
        assert_eq!(r.get::<_, i32>(1), 1, "one attempt, logged");
        assert_eq!(r.get::<_, String>(2), last_error);
        assert!(r.get::<_, bool>(3));
    }
    assert_eq!(rx.count(), 7, "the unreadable deliveries were never sent");

    // The healthy goal trigger is scanned; the unreadable ones are set aside
    // (not scanned, due again only later).
    env.wait_until(
        &format!(
            "SELECT count(*) = 1 FROM webhook_triggers
             WHERE webhook_id = '{good}' AND trigger_type = 'goal_completion'
               AND last_evaluated_at IS NOT NULL"
        ),
        T,
    )
    .await;
    for id in bad_goal {
        env.wait_until(
            &format!(
                "SELECT next_evaluation_at > now() + interval '30 seconds' AND last_evaluated_at IS NULL
                 FROM webhook_triggers WHERE id = '{id}'"
            ),
            T,
        )
        .await;
    }

    // A spike trigger whose last firing cannot be read, beside a healthy one.
    let bad_spike = trigger(&env, good, "visitor_spike", "last_fired_at = 'infinity'").await;
    let good_spike = trigger(&env, good, "visitor_spike", "").await;
    let bad_spike2 = trigger(
        &env,
        good,
        "visitor_spike",
        "threshold_derived_at = '-infinity'",
    )
    .await;
    env.wait_until(
        &format!(
            "SELECT last_evaluated_at IS NOT NULL FROM webhook_triggers WHERE id = '{good_spike}'"
        ),
        T,
    )
    .await;
    for id in [bad_spike, bad_spike2] {
        env.wait_until(
            &format!(
                "SELECT next_evaluation_at > now() + interval '30 seconds' AND last_evaluated_at IS NULL
                 FROM webhook_triggers WHERE id = '{id}'"
            ),
            T,
        )
        .await;
    }
    // And the daemon is still running, delivering what comes next.
    env.enqueue(good, 1).await;
    env.wait_until(
        "SELECT count(*) = 8 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited"
    );
}

/// Migration 4 brings existing rows into range first (so it cannot fail on a
/// live database), then refuses such times from any writer, naming the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_4_repairs_unreadable_times_then_refuses_them() {
    use plausible_webhooks::db::migrate::{load_fixture, migrate, MIGRATIONS};
    let cluster = tokio::task::spawn_blocking(plausible_webhooks::testkit::pg::PgCluster::shared)
        .await
        .unwrap()
        .unwrap();
    let url = cluster
        .create_database(&format!("m4_{}", Uuid::new_v4().simple()))
        .await
        .unwrap();
    let mut db = plausible_webhooks::db::connect(&url).await.unwrap();
    load_fixture(&db).await.unwrap();
    // The schema as migration 3 left it.
    db.batch_execute(
        "CREATE TABLE plausible_webhooks_schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= 3) {
        db.batch_execute(sql).await.unwrap();
        db.execute(
            "INSERT INTO plausible_webhooks_schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .unwrap();
    }
    let site = plausible_webhooks::testkit::create_site(&db, "example.com")
        .await
        .unwrap();
    let wh: Uuid = db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret, inserted_at, updated_at, deleted_at, previous_secret, previous_secret_expires_at)
             VALUES ($1, 'w', 'https://example.com/', $2, '-infinity', 'infinity', 'infinity', $2, 'infinity') RETURNING id",
            &[&site, &common::SECRET],
        )
        .await
        .unwrap()
        .get(0);
    let t: Uuid = db
        .query_one(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, next_evaluation_at, goal_cursor, last_fired_at, goal_floor, threshold_derived_at, last_evaluated_at)
             VALUES ($1, 'goal_completion', 'infinity', 'infinity', '20000-01-01Z', '-infinity', 'infinity', '-infinity') RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    let d: Uuid = db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, status, attempts, locked_by, locked_until, inserted_at, next_attempt_at, finished_at, delivered_at)
             VALUES ($1, 'x', 'delivering', 1, 'gone:1:x', 'infinity', 'infinity', 'infinity', '-infinity', '10000-01-01Z') RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "INSERT INTO webhook_delivery_attempts (delivery_id, attempt, attempted_at) VALUES ($1, 1, 'infinity')",
        &[&d],
    )
    .await
    .unwrap();

    let applied = migrate(&mut db).await.expect("migration 4 on bad rows");
    let after_3: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).filter(|v| *v > 3).collect();
    assert_eq!(applied, after_3, "4 and the migrations after it");

    let ok = "BETWEEN now() - interval '1 minute' AND now() + interval '1 minute'";
    let w = db
        .query_one(
            &format!(
                "SELECT inserted_at {ok}, updated_at {ok}, deleted_at {ok},
                        previous_secret_expires_at BETWEEN now() + interval '29 days' AND now() + interval '31 days'
                 FROM webhooks WHERE id = $1"
            ),
            &[&wh],
        )
        .await
        .unwrap();
    assert_eq!(
        (0..4).map(|i| w.get::<_, bool>(i)).collect::<Vec<_>>(),
        [true; 4],
        "webhook times"
    );
    let tr = db
        .query_one(
            &format!(
                "SELECT next_evaluation_at {ok}, goal_cursor {ok}, last_fired_at {ok}, goal_floor IS NULL,
                        threshold_derived_at IS NULL, last_evaluated_at IS NULL
                 FROM webhook_triggers WHERE id = $1"
            ),
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(
        (0..6).map(|i| tr.get::<_, bool>(i)).collect::<Vec<_>>(),
        [true; 6],
        "trigger times"
    );
    let de = db
        .query_one(
            &format!(
                "SELECT locked_until {ok}, inserted_at {ok}, next_attempt_at = 'infinity', finished_at {ok}, delivered_at {ok},
                        (SELECT attempted_at {ok} FROM webhook_delivery_attempts WHERE delivery_id = d.id)
                 FROM webhook_deliveries d WHERE id = $1"
            ),
            &[&d],
        )
        .await
        .unwrap();
    assert_eq!(
        (0..6).map(|i| de.get::<_, bool>(i)).collect::<Vec<_>>(),
        [true; 6],
        "delivery times (next_attempt_at = infinity stays: it means never)"
    );

    // From now on refused, from any writer, naming the check.
    for (sql, constraint) in [
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, inserted_at) VALUES ($1, 'x', 'infinity')", "webhook_deliveries_times_in_range"),
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, inserted_at) VALUES ($1, 'x', '10000-01-01Z')", "webhook_deliveries_times_in_range"),
        ("INSERT INTO webhook_deliveries (webhook_id, event_type, status, locked_until) VALUES ($1, 'x', 'delivering', 'infinity')", "webhook_deliveries_times_in_range"),
        ("INSERT INTO webhook_triggers (webhook_id, trigger_type, next_evaluation_at) VALUES ($1, 'goal_completion', 'infinity')", "webhook_triggers_times_in_range"),
        ("UPDATE webhook_triggers SET goal_cursor = '-infinity' WHERE webhook_id = $1", "webhook_triggers_times_in_range"),
        ("UPDATE webhook_triggers SET last_fired_at = '20000-01-01Z' WHERE webhook_id = $1", "webhook_triggers_times_in_range"),
        ("UPDATE webhooks SET deleted_at = 'infinity' WHERE id = $1", "webhooks_times_in_range"),
        ("INSERT INTO webhooks (site_id, name, url, secret, updated_at) SELECT site_id, 'x', url, secret, 'infinity' FROM webhooks WHERE id = $1", "webhooks_times_in_range"),
    ] {
        let err = db.execute(sql, &[&wh]).await.expect_err(sql);
        let e = err.as_db_error().expect("a database error");
        assert_eq!(e.constraint(), Some(constraint), "{sql}: {e}");
    }
    // A delivery scheduled for never is still accepted (and read as such).
    db.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_type, next_attempt_at) VALUES ($1, 'x', 'infinity')",
        &[&wh],
    )
    .await
    .unwrap();
}

struct Api {
    env: Env,
    base: String,
    _daemon: common::DaemonProcess,
}

impl Api {
    async fn start() -> Api {
        let env = Env::new().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
        let daemon = env.spawn_daemon(&[
            ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen),
            ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
        ]);
        let base = format!("http://{listen}");
        wait_status(&format!("{base}/readyz"), 200, T).await;
        Api {
            env,
            base,
            _daemon: daemon,
        }
    }

    async fn op(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        request(
            method,
            &format!("{}{path}", self.base),
            Some(OPERATOR),
            body.as_ref(),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// `{"a": {"a": … 1 …}}`, `depth` objects deep.
fn deep_payload(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// Deliveries the log must show although they hold what a plain decode
/// panicked on: a delivery due never (`next_attempt_at = infinity`), a
/// payload 10,000 objects deep, a number no f64 holds.
async fn hostile_deliveries(env: &Env, webhook: Uuid) -> (Uuid, Uuid, Uuid) {
    let never: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, next_attempt_at) VALUES ($1, 'goal_completion', 'infinity') RETURNING id",
            &[&webhook],
        )
        .await
        .unwrap()
        .get(0);
    let deep: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, next_attempt_at)
             VALUES ($1, 'goal_completion', $2::text::jsonb, 'infinity') RETURNING id",
            &[&webhook, &deep_payload(10_000)],
        )
        .await
        .unwrap()
        .get(0);
    let huge: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, next_attempt_at)
             VALUES ($1, 'goal_completion', '{\"n\": 1e400}', 'infinity') RETURNING id",
            &[&webhook],
        )
        .await
        .unwrap()
        .get(0);
    (never, deep, huge)
}

/// The payload as PostgreSQL renders jsonb (what the receiver gets as `data`).
async fn stored_payload(env: &Env, id: Uuid) -> String {
    env.db
        .query_one(
            "SELECT payload::text FROM webhook_deliveries WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_deliveries_due_never_and_payloads_too_deep_to_parse() {
    let api = Api::start().await;
    let wh = api.env.webhook("https://example.com/hook").await;
    let (never, deep, huge) = hostile_deliveries(&api.env, wh).await;
    let path = format!("/api/webhooks/{wh}/deliveries");

    let a = api.op("GET", &path, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let list = a.json();
    let rows = list["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(
        rows.iter().all(|d| d["next_attempt_at"] == "infinity"),
        "{list}"
    );

    let a = api.op("GET", &format!("{path}/{never}"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["next_attempt_at"], "infinity");
    assert_eq!(a.json()["payload"], json!({}));
    assert!(a.json().get("payload_note").is_none());

    // Too deep for a JSON parser's recursion limit: the payload is its JSON
    // text, as stored (what the receiver gets in `data`), with a note.
    let a = api.op("GET", &format!("{path}/{deep}"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let j = a.json();
    let stored = stored_payload(&api.env, deep).await;
    assert!(
        j["payload"].as_str() == Some(stored.as_str()),
        "the payload is not its stored text"
    );
    assert!(
        j["payload_note"].as_str().unwrap().contains("JSON text"),
        "{}",
        j["payload_note"]
    );
    let a = api.op("GET", &format!("{path}/{huge}"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["payload"], stored_payload(&api.env, huge).await);

    // The daemon is still serving.
    let a = api.op("GET", &path, None).await;
    assert_eq!(a.status, 200);
}

/// NUL in a site, goal or event parameter: PostgreSQL text cannot hold one;
/// refused at the edge as 422 `encoding`, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_site_goal_or_event_is_a_422_naming_the_field() {
    let api = Api::start().await;
    let wh = api.env.webhook("https://example.com/hook").await;
    let cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "GET",
            "/api/webhooks?site=exa%00mple.com".into(),
            None,
            "site",
        ),
        (
            "POST",
            "/api/webhooks".into(),
            Some(json!({"site": "exa\u{0}mple.com", "name": "n", "url": "https://example.com/"})),
            "site",
        ),
        (
            "POST",
            format!("/api/webhooks/{wh}/triggers"),
            Some(json!({"type": "goal_completion", "goal": "Sign\u{0}up"})),
            "goal",
        ),
        (
            "GET",
            format!("/api/webhooks/{wh}/deliveries?event=goal%00completion"),
            None,
            "event",
        ),
        (
            "POST",
            format!("/api/webhooks/{wh}/replay"),
            Some(json!({"since": "1d", "event": "goal\u{0}completion"})),
            "event",
        ),
    ];
    for (method, path, body, field) in cases {
        let a = api.op(method, &path, body).await;
        assert_eq!(a.status, 422, "{method} {path}: {}", a.text);
        let e = &a.json()["error"];
        assert_eq!(e["code"], "encoding", "{method} {path}: {}", a.text);
        assert_eq!(e["field"], field, "{method} {path}: {}", a.text);
        assert!(
            e["message"].as_str().unwrap().contains("NUL"),
            "{method} {path}: {}",
            a.text
        );
    }
}

async fn pw(env: &Env, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
    cmd.env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in env.daemon_env() {
        cmd.env(k, v);
    }
    cmd.args(args).stdin(std::process::Stdio::null());
    cmd.output().await.expect("running the binary")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_shows_deliveries_due_never_and_payloads_too_deep_to_parse() {
    let env = Env::new().await;
    let wh = env.webhook("https://example.com/hook").await;
    let (never, deep, _) = hostile_deliveries(&env, wh).await;

    let o = pw(&env, &["deliveries", "list", "--webhook", &wh.to_string()]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("next infinity"), "{}", text(&o));
    let o = pw(&env, &["--json", "deliveries", "list"]).await;
    assert!(o.status.success(), "{}", text(&o));

    let o = pw(&env, &["deliveries", "show", &never.to_string()]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("infinity"), "{}", text(&o));

    let o = pw(&env, &["deliveries", "show", &deep.to_string()]).await;
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        t.contains(&stored_payload(&env, deep).await),
        "payload not shown"
    );
    assert!(t.contains("JSON text"), "no note");
    let o = pw(&env, &["--json", "deliveries", "show", &deep.to_string()]).await;
    assert!(o.status.success(), "{}", text(&o));
}

/// Migration 11 keeps what `webhook_enqueue` sent each webhook before it:
/// the types of its enabled triggers become its subscriptions, so an
/// upgrade loses no event and adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_11_subscribes_each_webhook_to_what_it_received() {
    use plausible_webhooks::db::migrate::{load_fixture, migrate, MIGRATIONS};
    let cluster = tokio::task::spawn_blocking(plausible_webhooks::testkit::pg::PgCluster::shared)
        .await
        .unwrap()
        .unwrap();
    let url = cluster
        .create_database(&format!("m11_{}", Uuid::new_v4().simple()))
        .await
        .unwrap();
    let mut db = plausible_webhooks::db::connect(&url).await.unwrap();
    load_fixture(&db).await.unwrap();
    db.batch_execute(
        "CREATE TABLE plausible_webhooks_schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= 10) {
        db.batch_execute(sql).await.unwrap();
        db.execute(
            "INSERT INTO plausible_webhooks_schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .unwrap();
    }
    let site = plausible_webhooks::testkit::create_site(&db, "example.com")
        .await
        .unwrap();
    let mut hooks = Vec::new();
    // (triggers: type and enabled) → the subscriptions expected.
    type Case<'a> = (&'a [(&'a str, bool)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            &[
                ("goal_completion", true),
                ("visitor_spike", true),
                ("goal_completion", true),
            ],
            &["goal_completion", "visitor_spike"],
        ),
        (
            &[("traffic_drop", false), ("visitor_spike", true)],
            &["visitor_spike"],
        ),
        (&[("traffic_drop", false)], &[]),
        (&[], &[]),
    ];
    for (triggers, _) in &cases {
        let wh: Uuid = db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'w', 'https://example.com/', $2) RETURNING id",
                &[&site, &common::SECRET],
            )
            .await
            .unwrap()
            .get(0);
        for (ty, enabled) in *triggers {
            db.execute(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, enabled) VALUES ($1, $2, 10, $3)",
                &[&wh, ty, enabled],
            )
            .await
            .unwrap();
        }
        hooks.push(wh);
    }
    let before: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_enqueue($1, 'visitor_spike', '{}')",
            &[&site],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(migrate(&mut db).await.unwrap().first(), Some(&11));
    for (wh, (_, expected)) in hooks.iter().zip(&cases) {
        let events: Vec<String> = db
            .query_one("SELECT events FROM webhooks WHERE id = $1", &[wh])
            .await
            .unwrap()
            .get(0);
        assert_eq!(events, *expected);
    }
    let after: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_enqueue($1, 'visitor_spike', '{}')",
            &[&site],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (before, after),
        (2, 2),
        "the same webhooks before and after"
    );
    // From now on a trigger written by SQL subscribes its webhook too.
    db.execute(
        "UPDATE webhook_triggers SET enabled = true WHERE webhook_id = $1",
        &[&hooks[2]],
    )
    .await
    .unwrap();
    let events: Vec<String> = db
        .query_one("SELECT events FROM webhooks WHERE id = $1", &[&hooks[2]])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, ["traffic_drop"]);
}

/// Issue 27, point 3: with the attempts CHECK dropped by a hostile writer, a
/// due row at `attempts = 2147483647` made every claim fail
/// (`LEAST(attempts + 1, 1000)` overflows before `LEAST` applies): 31 of 50
/// other deliveries arrived, then none. The claim now caps before adding:
/// the row is claimed as attempt 1000 like any other, and everything else
/// flows beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_at_the_largest_attempts_does_not_stop_the_claims() {
    let env = Env::new().await;
    env.db
        .batch_execute(
            "ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_attempts_range",
        )
        .await
        .unwrap();
    let rx = env.receiver(always(200)).await;
    let other_rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let other = env.webhook(&other_rx.url("/")).await;
    let bad: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, attempts)
             VALUES ($1, 'goal_completion', '{}', 2147483647) RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    env.enqueue(wh, 25).await;
    env.enqueue(other, 25).await;
    let daemon = env.daemon(env.config()).await;
    rx.wait_for(26, T).await.unwrap();
    other_rx.wait_for(25, T).await.unwrap();
    env.wait_all_final(T).await;
    let (status, attempts): (String, i32) = {
        let r = env
            .db
            .query_one(
                "SELECT status, attempts FROM webhook_deliveries WHERE id = $1",
                &[&bad],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), attempts), ("success", 1000));
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE status <> 'success'")
            .await,
        0
    );
    daemon.shutdown().await.unwrap();
}

/// The ready and lease rows (sql/0020) are the daemon's, but a hand may
/// write them too: a ready row for a delivery that finished, for one in
/// flight (beside its lease), for one that does not exist, and a lease
/// beside a finished delivery. None of them is sent or stops a claim; the
/// finished delivery stays as it ended; the delivery in flight is sent once,
/// when its (expired, holder gone) lease is rescued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_ready_and_lease_rows_send_nothing_and_stop_nothing() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let done: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, last_response_code, finished_at)
             VALUES ($1, 'goal_completion', '{\"done\": true}', 'success', 1, 200, now()) RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    let flying: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, locked_by, locked_until)
             VALUES ($1, 'goal_completion', '{\"flying\": true}', 'delivering', 1, 'gone-host:1:x', now() - interval '1 second')
             RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    env.db
        .execute(
            "INSERT INTO webhook_deliveries_ready (delivery_id, webhook_id, next_attempt_at, bytes)
             VALUES ($1, $3, now() - interval '1 hour', 2), ($2, $3, now() - interval '1 hour', 2),
                    (gen_random_uuid(), $3, now() - interval '1 hour', 2)",
            &[&done, &flying, &wh],
        )
        .await
        .unwrap();
    let done_too: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, last_response_code, finished_at)
             VALUES ($1, 'goal_completion', '{\"done\": 2}', 'failed', 1, 500, now()) RETURNING id",
            &[&wh],
        )
        .await
        .unwrap()
        .get(0);
    env.db
        .execute(
            "INSERT INTO webhook_deliveries_leases (delivery_id, webhook_id, locked_by, locked_until, attempt)
             VALUES ($1, $2, 'gone-host:2:x', now() - interval '1 second', 2)",
            &[&done_too, &wh],
        )
        .await
        .unwrap();
    env.enqueue(wh, 20).await;
    let daemon = env.daemon(env.config()).await;
    rx.wait_for(21, T).await.unwrap();
    env.wait_until(
        "SELECT NOT EXISTS (SELECT 1 FROM webhook_deliveries_ready)
            AND NOT EXISTS (SELECT 1 FROM webhook_deliveries_leases)",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    let bodies: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 21, "20 queued and the one in flight");
    assert_eq!(bodies.iter().filter(|b| b.contains("flying")).count(), 1);
    assert!(!bodies.iter().any(|b| b.contains("\"done\"")));
    for (id, status, attempts) in [
        (done, "success", 1),
        (done_too, "failed", 1),
        (flying, "success", 2),
    ] {
        let r = env
            .db
            .query_one(
                "SELECT status, attempts FROM webhook_deliveries WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            (r.get::<_, String>(0).as_str(), r.get::<_, i32>(1)),
            (status, attempts)
        );
    }
}
