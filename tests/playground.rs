//! The playground tools a newcomer tries webhooks with (issue 26): the
//! `listen` receiver, with the daemon configured by nothing but the lines
//! it prints, and the `demo --keep` playground, driven with the built
//! binary through the environment it prints, as a person would.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{http, Env, SECRET};
use plausible_webhooks::config::Config;
use plausible_webhooks::demo::listen::{self, Listener, Printer};
use plausible_webhooks::demo::playground::{self, Playground};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// A printer that keeps what it is given.
fn kept() -> (Printer, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (Arc::new(move |s| l.lock().unwrap().push(s)), lines)
}

fn options(dir: &std::path::Path, secret: Option<&str>, status: u16) -> listen::Options {
    listen::Options {
        port: 0,
        secret: secret.map(str::to_string),
        status,
        delay: Duration::ZERO,
        dir: dir.to_path_buf(),
    }
}

/// The daemon's config from `DATABASE_URL` and the lines `listen` prints,
/// read as a shell reads them (single quotes removed).
fn config_from_lines(database_url: &str, lines: &[String]) -> Config {
    let mut env = BTreeMap::new();
    env.insert("DATABASE_URL".to_string(), database_url.to_string());
    for l in lines {
        let (k, v) = l.split_once('=').unwrap();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(v);
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_parts("", &env).expect("listen's lines make a valid config")
}

/// The daemon, configured by `DATABASE_URL` and the lines `l` prints,
/// sends one goal completion to `l` (a webhook with the test secret) until
/// `done` (a condition on its row) holds; returns the delivery's id.
async fn deliver_one(env: &Env, l: &Listener, done: &str) -> uuid::Uuid {
    let daemon = env
        .daemon(config_from_lines(&env.url, &l.config_lines()))
        .await;
    let wh = env.webhook(&l.url()).await;
    let id = env.enqueue(wh, 1).await[0];
    env.wait_until(
        &format!("SELECT coalesce({done}, false) FROM webhook_deliveries WHERE id = '{id}'"),
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_to_listen_and_both_signatures_verify() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (print, out) = kept();
    let l = Listener::start(&options(dir.path(), Some(SECRET), 200), print)
        .await
        .unwrap();
    let id = deliver_one(&env, &l, "status = 'success'").await;
    let printed = out.lock().unwrap().join("\n");
    for want in [
        &format!("webhook-id: {id}") as &str,
        "webhook-signature:   verified (v1, webhook-timestamp ",
        "X-Webhook-Signature: verified (sha256)",
        "\"event\":\"goal_completion\"",
        "answered 200",
    ] {
        assert!(printed.contains(want), "no {want:?} in:\n{printed}");
    }
}

/// With another secret both signatures are reported as not verifying;
/// the chosen status is what the daemon records; a restart in the same
/// directory keeps the CA, so the daemon's configuration stays valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_answers_as_told_and_names_a_signature_that_does_not_verify() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let other = "whsec_QW5vdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhISE=";
    let (print, out) = kept();
    let l = Listener::start(&options(dir.path(), Some(other), 503), print)
        .await
        .unwrap();
    let first_ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    deliver_one(&env, &l, "last_response_code = 503").await;
    let printed = out.lock().unwrap().join("\n");
    assert!(
        printed.contains("webhook-signature:   DOES NOT VERIFY")
            && printed.contains("X-Webhook-Signature: DOES NOT VERIFY")
            && printed.contains("answered 503"),
        "{printed}"
    );
    drop(l);
    let (print, _) = kept();
    let again = Listener::start(&options(dir.path(), None, 200), print)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        first_ca
    );
    assert_eq!(again.config_lines(), l_lines(dir.path()));
}

fn l_lines(dir: &std::path::Path) -> Vec<String> {
    vec![
        format!(
            "PLAUSIBLE_WEBHOOKS__DELIVERY__EXTRA_CA_FILE={}",
            dir.join("ca.pem").display()
        ),
        r#"PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS='["127.0.0.0/8"]'"#.to_string(),
    ]
}

/// Runs the built binary with the playground's CLI environment.
async fn pw(p: &Playground, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
    cmd.env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .env_remove("DATABASE_URL")
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in p.cli_env() {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

/// `demo --keep`'s playground: seeded rows, its webhook tested with the
/// CLI in the environment it prints, a goal completion found by the daemon
/// and delivered, signatures verified, and the API answering curl's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_is_driven_with_the_environment_it_prints() {
    let certs = tempfile::tempdir().unwrap();
    let (print, out) = kept();
    let p = Playground::start(
        &playground::Options {
            daemon_bin: env!("CARGO_BIN_EXE_plausible-webhooks").into(),
            certs: certs.path().to_path_buf(),
        },
        print,
    )
    .await
    .unwrap();
    let lines = p.shell_lines();
    assert!(
        lines.contains(&format!("export DATABASE_URL={}", p.database_url))
            && lines
                .iter()
                .any(|l| l.starts_with("export PLAUSIBLE_WEBHOOKS__DELIVERY__EXTRA_CA_FILE="))
            && lines.contains(&format!("PW_TOKEN={}", p.token)),
        "{lines:?}"
    );

    let db = plausible_webhooks::db::connect(&p.database_url)
        .await
        .unwrap();
    let seeded = db
        .query_one(
            "SELECT (SELECT count(*) FROM sites WHERE domain = 'example.com'),
                    (SELECT count(*) FROM goals), (SELECT count(*) FROM events_v2)",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64) = (seeded.get(0), seeded.get(1), seeded.get(2));
    assert!(
        counts.0 == 1 && counts.1 == 2 && counts.2 > 100,
        "{counts:?}"
    );

    let o = pw(&p, &["--json", "list"]).await;
    assert!(o.status.success(), "{o:?}");
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["webhooks"][0]["id"], p.webhook.to_string(), "{list}");

    let o = pw(&p, &["test", &p.webhook.to_string()[..8]]).await;
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    p.receiver.wait_for(1, T).await.unwrap();

    // A Signup now: the running daemon's goal scanner finds it.
    db.execute(
        "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id)
         SELECT id, now() AT TIME ZONE 'UTC', 'Signup', '/register', 424242, 424242 FROM sites WHERE domain = 'example.com'",
        &[],
    )
    .await
    .unwrap();
    p.receiver
        .wait_for(2, Duration::from_secs(60))
        .await
        .unwrap();
    let printed = out.lock().unwrap().join("\n");
    assert!(
        printed.contains("\"event\":\"test\"")
            && printed.contains("\"event\":\"goal_completion\"")
            && printed.matches("webhook-signature:   verified").count() >= 2
            && printed.matches("X-Webhook-Signature: verified").count() >= 2,
        "{printed}"
    );

    let api = http::request(
        "GET",
        &format!("{}/api/webhooks", p.api),
        Some(&p.token),
        None,
    )
    .await
    .unwrap();
    assert_eq!(api.status, 200, "{}", api.text);
    assert_eq!(api.json()["webhooks"][0]["name"], "Playground");
    p.stop().await.unwrap();
}

/// docs/operating.md's CA recipe, run as written (openssl), makes a
/// receiver certificate that the daemon trusts at https://127.0.0.1 with
/// the CA in extra_ca_file: its URL is an address, so the certificate
/// needs IP:127.0.0.1 (issue 26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_ca_recipe_makes_a_receiver_trusted_on_127_0_0_1() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md")).unwrap();
    let section = doc
        .split("\n## A receiver with a private CA\n")
        .nth(1)
        .expect("the section");
    let recipe = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("its sh block");
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("sh")
        .args(["-ec", recipe])
        .current_dir(dir.path())
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "the recipe failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The receiver serves receiver.pem with receiver.key; the daemon gets ca.pem.
    let certs = dir.path().join("served");
    std::fs::create_dir(&certs).unwrap();
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("receiver.pem", "server-cert.pem"),
        ("receiver.key", "server-key.pem"),
    ] {
        std::fs::copy(dir.path().join(from), certs.join(to)).unwrap();
    }
    let env = Env::new().await;
    let (print, out) = kept();
    let l = Listener::start(&options(&certs, Some(SECRET), 200), print)
        .await
        .unwrap();
    deliver_one(&env, &l, "status = 'success'").await;
    assert!(out.lock().unwrap().join("\n").contains("answered 200"));
}
