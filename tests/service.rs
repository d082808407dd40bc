//! The daemon binary as systemd and a monitoring system see it: sd_notify
//! messages on a socket the test provides, the admin listener's /healthz,
//! /readyz (flipping with PostgreSQL) and /metrics (moving with real deliveries).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::http::{free_port, get, wait_status};
use common::Env;
use plausible_webhooks::testkit::pg::{PgCluster, PgOptions};
use plausible_webhooks::testkit::receiver::always;

const T: Duration = Duration::from_secs(30);

/// A NOTIFY_SOCKET for the daemon: collects every datagram it sends.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: String,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path: path.to_str().unwrap().to_string(),
            _dir: dir,
            sock,
        }
    }

    /// Receives messages until one contains `what`; returns all received.
    fn wait_for(&self, what: &str) -> Vec<String> {
        self.sock.set_read_timeout(Some(T)).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = tokio::task::block_in_place(|| self.sock.recv(&mut buf))
                .unwrap_or_else(|e| panic!("no {what} from the daemon ({e}); got {seen:?}"));
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == what);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }

    /// Messages already queued, without waiting.
    fn drain(&self) -> Vec<String> {
        self.sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_gets_ready_watchdog_pings_and_stopping() {
    let env = Env::new().await;
    let ns = NotifySocket::new();
    // As systemd starts it with WatchdogSec=0.2s: WATCHDOG_PID is the
    // daemon's own pid, which `exec` from a shell keeps.
    let child = std::process::Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run"])
        .arg(env!("CARGO_BIN_EXE_plausible-webhooks"))
        .env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .envs(env.daemon_env())
        .env("NOTIFY_SOCKET", &ns.path)
        .env("WATCHDOG_USEC", "200000")
        .spawn()
        .unwrap();
    let mut d = common::DaemonProcess { child };
    let before_ready = ns.wait_for("READY=1");
    assert!(
        before_ready.last().unwrap().contains("STATUS=delivering"),
        "{before_ready:?}"
    );
    // READY means the listener is connected: a NOTIFY now is not lost.
    assert_eq!(
        env.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'plausible-webhooks-listener'").await,
        1
    );
    // Pings keep coming from the main loop.
    ns.wait_for("WATCHDOG=1");
    ns.wait_for("WATCHDOG=1");
    d.signal(libc::SIGTERM);
    let stopping = ns.wait_for("STOPPING=1");
    assert!(stopping.last().unwrap().contains("STATUS=draining"));
    assert_eq!(d.wait_exit(T).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_when_the_schema_is_not_current() {
    let env = Env::new().await;
    // A database with Plausible's tables but without the daemon's migrations.
    let url = env
        .cluster
        .create_database(&format!("u_{}", uuid::Uuid::new_v4().simple()))
        .await
        .unwrap();
    let db = plausible_webhooks::db::connect(&url).await.unwrap();
    plausible_webhooks::db::migrate::load_fixture(&db)
        .await
        .unwrap();
    let ns = NotifySocket::new();
    let mut d = env.spawn_daemon(&[("NOTIFY_SOCKET", &ns.path), ("DATABASE_URL", &url)]);
    let status = d.wait_exit(T).await;
    assert_eq!(status.code(), Some(1));
    let sent = ns.drain();
    assert!(
        sent.iter().all(|m| !m.contains("READY=1")),
        "READY sent for an unmigrated database: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_is_off_unless_configured_and_healthz_answers() {
    let env = Env::new().await;
    let port = free_port();
    let ns = NotifySocket::new();
    // Without admin.listen nothing listens (the port stays free).
    let mut d = env.spawn_daemon(&[("NOTIFY_SOCKET", &ns.path)]);
    ns.wait_for("READY=1");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    d.signal(libc::SIGTERM);
    d.wait_exit(T).await;

    let listen = format!("127.0.0.1:{port}");
    let _d = env.spawn_daemon(&[("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen)]);
    let base = format!("http://{listen}");
    let h = wait_status(&format!("{base}/healthz"), 200, T).await;
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(h.content_type, "application/json");
    let r = wait_status(&format!("{base}/readyz"), 200, T).await;
    let j = r.json();
    assert_eq!(j["status"], "ready");
    for check in ["database", "migrations", "listener"] {
        assert_eq!(j["checks"][check]["ok"], true, "{j}");
    }
    let nf = get(&format!("{base}/nope")).await;
    assert_eq!((nf.status, nf.code().as_str()), (404, "not_found"));
    // The API refuses a request without a token.
    let a = get(&format!("{base}/api/webhooks")).await;
    assert_eq!(a.status, 401, "{}", a.text);

    // A non-loopback address is refused unless allowed explicitly (exit 78).
    let mut bad = env.spawn_daemon(&[("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", "0.0.0.0:1")]);
    assert_eq!(bad.wait_exit(T).await.code(), Some(78));
    // An address in use: the daemon stops (exit 1, so systemd retries) instead
    // of running without the listener it was told to serve.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut busy = env.spawn_daemon(&[("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &addr)]);
    assert_eq!(busy.wait_exit(T).await.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_when_postgres_stops_and_recovers() {
    // Its own cluster: this test stops the server.
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(&PgOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.create_migrated_database("ready").await.unwrap();
    let env = Env::on(cluster, url).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _d = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen),
        // Notice a dead LISTEN connection quickly.
        (
            "PLAUSIBLE_WEBHOOKS__QUEUE__LISTENER_CHECK_INTERVAL_MS",
            "200",
        ),
    ]);
    let readyz = format!("http://{listen}/readyz");
    wait_status(&readyz, 200, T).await;

    let c = &env.cluster;
    tokio::task::block_in_place(|| c.stop()).unwrap();
    let down = wait_status(&readyz, 503, T).await.json();
    assert_eq!(down["status"], "not_ready");
    assert_eq!(down["checks"]["database"]["ok"], false, "{down}");
    // Liveness is not readiness: the process is alive, and still scraped.
    assert_eq!(get(&format!("http://{listen}/healthz")).await.status, 200);
    let m = get(&format!("http://{listen}/metrics")).await.text;
    assert_eq!(sample(&m, "plausible_webhooks_database_up"), 0.0, "{m}");

    tokio::task::block_in_place(|| c.start_again()).unwrap();
    let up = wait_status(&readyz, 200, T).await.json();
    assert_eq!(up["checks"]["listener"]["ok"], true, "{up}");
    assert_eq!(up["checks"]["database"]["ok"], true, "{up}");
    // The reconnection is counted.
    let m = get(&format!("http://{listen}/metrics")).await.text;
    assert!(
        sample(&m, "plausible_webhooks_listener_reconnects_total") >= 1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "plausible_webhooks_database_up"), 1.0);
}

/// The value of the sample line `name` (exact, labels included).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_deliveries() {
    let env = Env::new().await;
    let ok = env.receiver(always(200)).await;
    let bad = env.receiver(always(500)).await;
    let wh_ok = env.webhook(&ok.url("/")).await;
    let wh_bad = env.webhook(&bad.url("/")).await;
    // A row due 90 s ago that no instance can claim: another transaction
    // holds the lock of its ready row (sql/0020; the claim skips locked
    // ready rows), so it waits and ages.
    let stuck: uuid::Uuid = env
        .db
        .query_one(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, next_attempt_at) VALUES ($1, 'goal_completion', now() - interval '90 seconds') RETURNING id",
            &[&wh_ok],
        )
        .await
        .unwrap()
        .get(0);
    let mut locker = plausible_webhooks::db::connect(&env.url).await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM webhook_deliveries_ready WHERE delivery_id = $1 FOR UPDATE",
        &[&stuck],
    )
    .await
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let _d = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
    ]);
    let url = format!("http://{listen}/metrics");
    let before = wait_status(&url, 200, T).await;
    assert!(before
        .content_type
        .starts_with("application/openmetrics-text"));
    assert_eq!(
        sample(&before.text, "plausible_webhooks_listener_connected"),
        1.0
    );

    env.enqueue(wh_ok, 3).await;
    env.enqueue(wh_bad, 1).await;
    // Twenty event names of a host's own: one `other` series, not twenty.
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type)
             SELECT $1, 'custom.e' || g FROM generate_series(1, 20) g",
            &[&wh_ok],
        )
        .await
        .unwrap();
    // Not yet due: counted as pending, not in the oldest-due age.
    env.db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, next_attempt_at) VALUES ($1, 'traffic_drop', now() + interval '1 hour')",
            &[&wh_ok],
        )
        .await
        .unwrap();
    env.wait_until(
        "SELECT count(*) = 24 FROM webhook_deliveries WHERE status IN ('success', 'failed')",
        T,
    )
    .await;
    let m = get(&url).await.text;
    assert_eq!(
        sample(
            &m,
            "plausible_webhooks_deliveries_total{event=\"other\",outcome=\"success\"}"
        ),
        20.0,
        "{m}"
    );
    assert!(!m.contains("custom.e"), "{m}");
    let d = |outcome: &str| {
        sample(
            &m,
            &format!("plausible_webhooks_deliveries_total{{event=\"goal_completion\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (d("success"), d("retry"), d("failed")),
        (3.0, 1.0, 1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "plausible_webhooks_attempt_duration_seconds_count"),
        25.0
    );
    // Each webhook has a goal trigger: the goal scanner's rounds are counted.
    assert!(
        sample(
            &m,
            "plausible_webhooks_trigger_evaluations_total{kind=\"goal_completion\"}"
        ) >= 2.0,
        "{m}"
    );
    let q = |status: &str| {
        sample(
            &m,
            &format!("plausible_webhooks_queue_deliveries{{status=\"{status}\"}}"),
        )
    };
    assert_eq!(
        (q("success"), q("failed"), q("pending"), q("delivering")),
        (23.0, 1.0, 2.0, 0.0)
    );

    assert!(
        (90.0..3600.0).contains(&sample(
            &m,
            "plausible_webhooks_oldest_due_delivery_age_seconds"
        )),
        "{m}"
    );
    assert_eq!(sample(&m, "plausible_webhooks_database_up"), 1.0);
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_admin_listener_and_plausibles_tables() {
    let env = Env::new().await;
    let check = |extra: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
        c.arg("check")
            .env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
            .env_remove("SECRET_KEY_BASE")
            .envs(env.daemon_env());
        for (k, v) in extra {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("admin listener: off"), "{out}");
    let on = [
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", "127.0.0.1:8787"),
        ("SECRET_KEY_BASE", "skb"),
    ];
    let (code, out) = check(&on);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "admin listener: http://127.0.0.1:8787 (operator tokens: 0, Plausible API keys: on)"
        ),
        "{out}"
    );
    assert!(out.contains("web page: off"), "{out}");
    let skb = "s".repeat(64);
    let web = [
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", "127.0.0.1:8787"),
        ("SECRET_KEY_BASE", skb.as_str()),
        ("PLAUSIBLE_WEBHOOKS__WEB__ENABLED", "true"),
    ];
    let (code, out) = check(&web);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("web page: on at /webhooks (Plausible sessions by cookie _plausible_key)"),
        "{out}"
    );
    // A SECRET_KEY_BASE Plausible's cookies cannot be signed with is bad config.
    let (code, out) = check(&[web[0], ("SECRET_KEY_BASE", "short"), web[2]]);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("web.enabled") && out.contains("at least 64"),
        "{out}"
    );
    env.db
        .batch_execute("DROP TABLE user_sessions")
        .await
        .unwrap();
    let (code, out) = check(&web);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("user_sessions"), "{out}");
    env.db.batch_execute("DROP TABLE api_keys").await.unwrap();
    let (code, out) = check(&on);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("grant this role SELECT"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_draining() {
    let env = Env::new().await;
    let rx = env
        .receiver(std::sync::Arc::new(|_: &_| {
            plausible_webhooks::testkit::receiver::Reply::Hang
        }))
        .await;
    let wh = env.webhook(&rx.url("/")).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut d = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen),
        ("PLAUSIBLE_WEBHOOKS__SHUTDOWN__GRACE_SECS", "3"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "30000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "60"),
    ]);
    let readyz = format!("http://{listen}/readyz");
    wait_status(&readyz, 200, T).await;
    env.enqueue(wh, 1).await;
    rx.wait_for(1, T).await.unwrap();
    // A request hangs: the drain waits for it through the grace period.
    d.signal(libc::SIGTERM);
    let draining = wait_status(&readyz, 503, T).await.json();
    assert_eq!(draining["checks"]["draining"], true, "{draining}");
    assert_eq!(d.wait_exit(T).await.code(), Some(0));
}

/// The daemon checks its analytics source at start and hands the verdict to
/// /readyz: a source that refuses a statement triggers send makes it not
/// ready (naming the statement and the server's text) while deliveries go
/// on; fixed, it is noticed within the failing-source recheck interval. An
/// unreachable source is reported but keeps the daemon ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_on_an_incompatible_analytics_source_and_recovers() {
    let env = Env::new().await;
    env.incompatible_view().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _d = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen),
        ("PLAUSIBLE_WEBHOOKS__ANALYTICS__TABLE", "compat.events_v2"),
    ]);
    let readyz = format!("http://{listen}/readyz");
    let r = wait_status(&readyz, 503, T).await.json();
    assert_eq!(r["status"], "not_ready", "{r}");
    let a = &r["checks"]["analytics"];
    assert_eq!(a["ok"], false, "{r}");
    assert_eq!(a["state"], "incompatible", "{r}");
    let detail = a["detail"].as_str().unwrap();
    assert!(
        detail.contains("the goal completions query (event goal with custom props) failed")
            && detail.contains("function array_position(text, text) does not exist"),
        "{r}"
    );
    for check in ["database", "migrations", "listener"] {
        assert_eq!(r["checks"][check]["ok"], true, "{r}");
    }
    // Not ready for triggers, yet deliveries flow.
    env.enqueue(wh, 1).await;
    rx.wait_for(1, T).await.unwrap();

    // Fixed: the next check (within checker::INTERVAL_FAILING) finds it.
    env.db
        .batch_execute(
            "DROP VIEW compat.events_v2;
             CREATE VIEW compat.events_v2 AS SELECT * FROM public.events_v2;",
        )
        .await
        .unwrap();
    let r = wait_status(&readyz, 200, T).await.json();
    let a = &r["checks"]["analytics"];
    assert_eq!(
        (a["ok"].clone(), a["state"].clone()),
        (true.into(), "compatible".into()),
        "{r}"
    );
    let version: String = env
        .db
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a["version"], version.as_str(), "{r}");

    // Broken again while a goal trigger runs: its failing round prompts a
    // check at once (not after checker::INTERVAL, 5 minutes).
    let goal: i64 = env
        .db
        .query_one(
            "INSERT INTO goals (site_id, event_name, display_name, custom_props, inserted_at, updated_at)
             VALUES ($1, 'Signup', 'Signup', '{\"plan\": \"pro\"}', now(), now()) RETURNING id",
            &[&env.site_id],
        )
        .await
        .unwrap()
        .get(0);
    env.db
        .execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, goal_id, next_evaluation_at)
             VALUES ($1, 'goal_completion', $2, now())",
            &[&wh, &goal],
        )
        .await
        .unwrap();
    env.incompatible_view().await;
    let r = wait_status(&readyz, 503, T).await.json();
    assert_eq!(r["checks"]["analytics"]["state"], "incompatible", "{r}");

    // Unreachable analytics: reported, but the daemon stays ready.
    let listen = format!("127.0.0.1:{}", free_port());
    let _d2 = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", &listen),
        (
            "PLAUSIBLE_WEBHOOKS__ANALYTICS__DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
        ),
    ]);
    let r = wait_status(&format!("http://{listen}/readyz"), 200, T)
        .await
        .json();
    let a = &r["checks"]["analytics"];
    assert_eq!(a["state"], "unavailable", "{r}");
    assert_eq!(a["ok"], false, "{r}");
    assert_eq!(a["blocks_readiness"], false, "{r}");
}
