//! The binary as an operator runs it: config errors, check, migrate, logs.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Env, SECRET};
use plausible_webhooks::testkit::receiver::always;
use uuid::Uuid;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
    c.env_remove("DATABASE_URL")
        .env_remove("PLAUSIBLE_WEBHOOKS_CONFIG");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn bad_config_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[delivery]\nlease_secs = 3\n").unwrap();
    let o = bin()
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(text(&o).contains("delivery.lease_secs"), "{}", text(&o));

    let o = bin().arg("check").output().unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o).contains("DATABASE_URL"), "{}", text(&o));

    std::fs::write(&cfg, "[delivery\n").unwrap();
    let o = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o).contains("not valid TOML"), "{}", text(&o));

    let o = bin()
        .arg("check")
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/x")
        .env("PLAUSIBLE_WEBHOOKS__QUEUE__POLL_INTERVAL_MS", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o).contains("queue.poll_interval_ms"), "{}", text(&o));
}

/// `run` against a database that is not there says where it looked and
/// the system's reason, not deadpool's "Error occurred while creating a new
/// object" (issue 26).
#[test]
fn run_against_an_unreachable_database_says_where_and_why() {
    let o = bin()
        .arg("run")
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("connecting to PostgreSQL at 127.0.0.1:1/x")
            && t.to_lowercase().contains("connection refused")
            && !t.contains("creating a new object"),
        "{t}"
    );
}

/// A `PLAUSIBLE_WEBHOOKS_…` variable that sets nothing is said at once,
/// with the override it most likely meant (issue 26).
#[test]
fn a_variable_with_single_underscores_is_warned_about() {
    let o = bin()
        .arg("check")
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/x")
        .env("PLAUSIBLE_WEBHOOKS_DELIVERY_MAX_IN_FLIGHT", "7")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(
            "warning: the environment variable PLAUSIBLE_WEBHOOKS_DELIVERY_MAX_IN_FLIGHT sets nothing; did you mean PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT?"
        ),
        "{err}"
    );
}

/// The daemon's build leaves the demo out (Cargo.toml [features]); asking
/// for it must say how to get it, not fail as an unknown command.
#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_says_how_to_build_it() {
    let o = bin().arg("demo").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cargo run --features demo -- demo"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_concurrent_safe_idempotent_and_check_reports_the_schema() {
    let env = Env::new().await; // for the shared cluster
    let url = env
        .cluster
        .create_database(&format!("m_{}", Uuid::new_v4().simple()))
        .await
        .unwrap();
    // Without Plausible's tables, migrate explains what is missing.
    let o = bin()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("sites"), "{}", text(&o));

    let db = plausible_webhooks::db::connect(&url).await.unwrap();
    plausible_webhooks::db::migrate::load_fixture(&db)
        .await
        .unwrap();
    let o = bin()
        .arg("check")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("run `plausible-webhooks migrate`"),
        "{}",
        text(&o)
    );

    let spawn = || {
        bin()
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    let versions: i64 = db
        .query_one(
            "SELECT count(*) FROM plausible_webhooks_schema_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        versions,
        plausible_webhooks::db::migrate::MIGRATIONS.len() as i64
    );
    // A changed payload limit is logged (a line with fields, coloured on a terminal).
    let o = bin()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_PAYLOAD_BYTES", "65536")
        .output()
        .unwrap();
    assert!(text(&o).contains("schema is current"), "{}", text(&o));
    assert!(text(&o).contains("max_payload_bytes"), "{}", text(&o));
    // The unit runs migrate before every start: no notice that is not news,
    // and no terminal colour in a pipe (journald, files).
    assert!(
        !text(&o).contains("already exists"),
        "a re-run logs PostgreSQL's notices: {}",
        text(&o)
    );
    assert!(
        !o.stderr.contains(&0x1b),
        "colour escapes in piped output: {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bin()
        .arg("check")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// `check` runs every statement triggers send: it prints the server's
/// version when they are all answered, and fails naming the one refused
/// (here a view whose meta_key is text, not text[]: the columns are all
/// there, but the event goal's property match cannot run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_analytics_version_and_names_a_refused_statement() {
    let env = Env::new().await;
    let o = bin()
        .arg("check")
        .env("DATABASE_URL", &env.url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let version: String = env
        .db
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(text(&o).contains("analytics: ok (postgres"), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("server version {version}, 12 statements answered")),
        "{}",
        text(&o)
    );

    env.incompatible_view().await;
    let o = bin()
        .arg("check")
        .env("DATABASE_URL", &env.url)
        .env("PLAUSIBLE_WEBHOOKS__ANALYTICS__TABLE", "compat.events_v2")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(!out.contains("analytics: ok"), "{out}");
    assert!(
        out.contains("the goal completions query (event goal with custom props) failed"),
        "{out}"
    );
    // The server's own text.
    assert!(
        out.contains("function array_position(text, text) does not exist"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_log_line_per_attempt_without_secrets_or_timestamps_under_journald() {
    let env = Env::new().await;
    let ok = env.receiver(always(200)).await;
    let bad = env.receiver(always(500)).await;
    let wh_ok = env.webhook(&ok.url("/")).await;
    let wh_bad = env.webhook(&bad.url("/")).await;
    let mut cmd = bin();
    cmd.arg("run")
        .envs(env.daemon_env())
        .env("PLAUSIBLE_WEBHOOKS__LOG__LEVEL", "info")
        .env("PLAUSIBLE_WEBHOOKS__DELIVERY__RETRY_SCHEDULE_SECS", "[1]")
        .env("JOURNAL_STREAM", "8:12345")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    let child = cmd.spawn().unwrap();
    env.enqueue(wh_ok, 1).await;
    env.enqueue(wh_bad, 1).await;
    env.wait_all_final(Duration::from_secs(30)).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = log.lines().collect();
    let delivered: Vec<_> = lines.iter().filter(|l| l.contains("delivered")).collect();
    let retry: Vec<_> = lines.iter().filter(|l| l.contains("will retry")).collect();
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("failed for good"))
        .collect();
    assert_eq!(
        (delivered.len(), retry.len(), failed.len()),
        (1, 1, 1),
        "{log}"
    );
    for l in delivered.iter().chain(&retry).chain(&failed) {
        for field in [
            "webhook_id=",
            "delivery_id=",
            "event=goal_completion",
            "attempt=",
            "status=",
            "duration_ms=",
        ] {
            assert!(l.contains(field), "{field} missing in {l}");
        }
    }
    assert!(
        failed[0].contains("status=500") && failed[0].contains("attempt=2"),
        "{}",
        failed[0]
    );
    assert!(
        !log.contains(SECRET) && !log.contains(&SECRET[6..]),
        "a secret was logged"
    );
    assert!(!log.contains("\"n\""), "a body was logged");
    assert!(
        lines.iter().all(|l| !l.starts_with("20")),
        "no timestamps of our own under journald:\n{log}"
    );
}

/// `check --json` is a machine-readable report (one entry per check, the
/// failed one named with its error); `run`, `migrate` and `demo` refuse
/// `--json` instead of ignoring it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_json_reports_each_check_and_json_is_refused_where_it_means_nothing() {
    let env = Env::new().await;
    let o = bin()
        .args(["--json", "check"])
        .env("DATABASE_URL", &env.url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["config", "database", "https_client", "analytics", "admin"]
    );

    env.incompatible_view().await;
    let o = bin()
        .args(["check", "--json"])
        .env("DATABASE_URL", &env.url)
        .env("PLAUSIBLE_WEBHOOKS__ANALYTICS__TABLE", "compat.events_v2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let analytics = &v["checks"][3];
    assert_eq!(analytics["check"], "analytics");
    assert_eq!(analytics["ok"], false);
    assert!(
        analytics["error"]
            .as_str()
            .unwrap()
            .contains("the goal completions query (event goal with custom props) failed"),
        "{v}"
    );
    assert_eq!(
        v["checks"][1]["ok"], true,
        "the database check still passed"
    );

    let o = bin()
        .args(["--json", "check"])
        .env("DATABASE_URL", &env.url)
        .env("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT", "abc")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checks"][0]["key"], "delivery.max_in_flight", "{v}");

    for cmd in ["run", "migrate", "demo"] {
        let o = bin()
            .args(["--json", cmd])
            .env("DATABASE_URL", &env.url)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(text(&o).contains("--json has no meaning"), "{}", text(&o));
    }
}

/// Under `--json` a command line clap refuses prints the same error body as
/// every other refusal (code `usage`), still exiting 2; help stays text.
#[test]
fn a_usage_error_under_json_is_an_error_body() {
    let o = bin()
        .args(["--json", "deliveries", "show"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["error"]["code"], "usage", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("<ID>") || message.contains("required"),
        "{v}"
    );
    assert!(!message.contains("\u{1b}["), "{v}");

    let o = bin().args(["--json", "no-such-command"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "usage", "{v}");

    // Without --json, clap's own text; --help is help, not an error.
    let o = bin().args(["deliveries", "show"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty() && !o.stderr.is_empty(), "{}", text(&o));
    let o = bin().args(["--json", "list", "--help"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_err());
}
