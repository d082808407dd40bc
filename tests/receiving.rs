//! What a receiver does with a delivery: the verification snippets that
//! `docs/receiving.md` shows (kept as runnable files in `docs/verify/`) are
//! run in Node, Python and Go on real deliveries, for both kinds of secret
//! and both signature headers, and must refuse a changed body or a wrong
//! secret. The page must show each snippet exactly as the file has it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, SECRET};
use plausible_webhooks::testkit::receiver::{always, Recorded};

const T: Duration = Duration::from_secs(30);
/// A secret without the `whsec_` prefix: its UTF-8 bytes are the key.
const PLAIN_SECRET: &str = "a plain secret of forty characters, ok!!";

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

/// The command that runs each snippet file.
fn runners() -> Vec<(&'static str, Vec<String>)> {
    let v = docs().join("verify");
    let p = |f: &str| v.join(f).display().to_string();
    vec![
        ("node", vec!["node".into(), p("verify.js")]),
        ("python", vec!["python3".into(), p("verify.py")]),
        ("go", vec!["go".into(), "run".into(), p("verify.go")]),
    ]
}

/// The command that runs each `v1a` (ed25519) snippet file.
fn v1a_runners() -> Vec<(&'static str, Vec<String>)> {
    let v = docs().join("verify").join("v1a");
    let p = |f: &str| v.join(f).display().to_string();
    vec![
        ("node", vec!["node".into(), p("verify.js")]),
        ("python", vec!["python3".into(), p("verify.py")]),
        ("go", vec!["go".into(), "run".into(), p("verify.go")]),
    ]
}

/// Runs one snippet on a request; true when it printed `verified` and exited 0.
fn verifies(cmd: &[String], secret: &str, headers: &serde_json::Value, body: &[u8]) -> bool {
    run_snippet(cmd, ("WEBHOOK_SECRET", secret), headers, body)
}

/// Runs one `v1a` snippet on a request with a `whpk_` public key.
fn verifies_v1a(
    cmd: &[String],
    public_key: &str,
    headers: &serde_json::Value,
    body: &[u8],
) -> bool {
    run_snippet(cmd, ("WEBHOOK_PUBLIC_KEY", public_key), headers, body)
}

fn run_snippet(
    cmd: &[String],
    (key_var, key): (&str, &str),
    headers: &serde_json::Value,
    body: &[u8],
) -> bool {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("HEADERS", headers.to_string())
        .env(key_var, key)
        // `go run` builds in a cache; keep it out of $HOME's way on CI.
        .env(
            "GOCACHE",
            std::env::temp_dir().join("plausible-webhooks-gocache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install it (scripts/test installs nodejs, python3, \
                 python3-cryptography and golang-go)",
                cmd[0]
            )
        });
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.trim() {
        "verified" => {
            assert!(out.status.success());
            true
        }
        "refused" => false,
        _ => panic!(
            "{} printed neither verified nor refused: {stdout}\n{}",
            cmd[0],
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn headers_json(r: &Recorded) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-webhook-signature",
    ] {
        m.insert(name.into(), r.header(name).unwrap().into());
    }
    serde_json::Value::Object(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_snippets_verify_real_deliveries_with_either_kind_of_secret() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let standard = env.webhook(&rx.url("/standard")).await;
    let plain = env.webhook(&rx.url("/plain")).await;
    env.db
        .execute(
            "UPDATE webhooks SET secret = $2 WHERE id = $1",
            &[&plain, &PLAIN_SECRET],
        )
        .await
        .unwrap();
    let daemon = env.daemon(env.config()).await;
    // Payloads whose bytes a careless receiver would change: non-ASCII,
    // U+2028, floats, exponents, nesting.
    for wh in [standard, plain] {
        env.db
            .execute(
                r#"INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
                   VALUES ($1, 'goal_completion',
                           '{"goal": "Café ☕ \u2028 line", "ratio": 6.0, "big": 1e21, "n": {"deep": [1.5, -0.0]}}')"#,
                &[&wh],
            )
            .await
            .unwrap();
    }
    let reqs = rx.wait_for(2, T).await.unwrap();
    daemon.shutdown().await.unwrap();

    for r in &reqs {
        seeds_example_verifies(
            r,
            if r.path == "/standard" {
                SECRET
            } else {
                PLAIN_SECRET
            },
        );
        let (secret, other) = if r.path == "/standard" {
            (SECRET, PLAIN_SECRET)
        } else {
            (PLAIN_SECRET, SECRET)
        };
        let headers = headers_json(r);
        let mut changed = r.body.to_vec();
        changed.insert(changed.len() - 1, b' ');
        for (lang, cmd) in runners() {
            assert!(
                verifies(&cmd, secret, &headers, &r.body),
                "{lang} refused a real delivery signed with a {} secret",
                &r.path[1..]
            );
            assert!(
                !verifies(&cmd, secret, &headers, &changed),
                "{lang} accepted a changed body"
            );
            assert!(
                !verifies(&cmd, other, &headers, &r.body),
                "{lang} accepted the wrong secret"
            );
        }
    }
}

/// The seeds' own example (PRD-029 §9), which signs the re-serialized parsed
/// body, matches `X-Webhook-Signature`: the body is what `JSON.stringify`
/// writes, byte for byte.
fn seeds_example_verifies(r: &Recorded, secret: &str) {
    let script = "const crypto = require('crypto');\
        const body = require('fs').readFileSync(0, 'utf8');\
        const payload = JSON.parse(body);\
        if (JSON.stringify(payload) !== body) { console.log('re-serialized differently'); process.exit(1); }\
        const sig = crypto.createHmac('sha256', process.env.WEBHOOK_SECRET).update(JSON.stringify(payload)).digest('hex');\
        console.log(('sha256=' + sig) === process.env.SIGNATURE ? 'verified' : 'refused');";
    let mut child = Command::new("node")
        .args(["-e", script])
        .env("WEBHOOK_SECRET", secret)
        .env("SIGNATURE", r.header("x-webhook-signature").unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (apt-get install -y nodejs)");
    child.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verified",
        "the seeds' JSON.stringify(JSON.parse(body)) example on {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// The headers a receiver reads, those present (an `ed25519` webhook sends
/// no `X-Webhook-Signature`).
fn present_headers(r: &Recorded) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-webhook-signature",
    ] {
        if let Some(v) = r.header(name) {
            m.insert(name.into(), v.into());
        }
    }
    serde_json::Value::Object(m)
}

/// The entries of `webhook-signature` that start with `prefix`.
fn entries(r: &Recorded, prefix: &str) -> usize {
    r.header("webhook-signature")
        .unwrap()
        .split(' ')
        .filter(|e| e.starts_with(prefix))
        .count()
}

/// Sets a webhook's signing mode through the operation every face uses;
/// returns its public key as shown.
async fn sign_with(env: &Env, webhook: uuid::Uuid, mode: &str) -> String {
    use plausible_webhooks::admin::{access::Principal, core::Admin, inputs::WebhookChanges};
    let admin = Admin::from_config(&env.config()).unwrap();
    let changes = WebhookChanges {
        signature: Some(mode.into()),
        ..Default::default()
    };
    let w = admin
        .update_webhook(&Principal::Operator, webhook, changes)
        .await
        .unwrap();
    assert_eq!(w.signature, mode);
    w.public_key.expect("a key pair was made")
}

/// A good delivery verifies with `public_key` in each snippet and in ring;
/// a changed body and another key are refused.
fn v1a_verified(r: &Recorded, public_key: &str, other: &str) {
    use plausible_webhooks::delivery::signing::verify_asymmetric;
    let headers = present_headers(r);
    let mut changed = r.body.to_vec();
    changed.insert(changed.len() - 1, b' ');
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    let id = r.header("webhook-id").unwrap();
    let sig = r.header("webhook-signature").unwrap();
    assert!(
        verify_asymmetric(public_key, id, ts, &r.body, sig),
        "ring refused {sig}"
    );
    for (lang, cmd) in v1a_runners() {
        assert!(
            verifies_v1a(&cmd, public_key, &headers, &r.body),
            "{lang} refused a real delivery to {} signed v1a: {headers}",
            r.path
        );
        assert!(
            !verifies_v1a(&cmd, public_key, &headers, &changed),
            "{lang} accepted a changed body"
        );
        assert!(
            !verifies_v1a(&cmd, other, &headers, &r.body),
            "{lang} accepted another webhook's public key"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1a_snippets_verify_real_deliveries_signed_beside_hmac() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let other = env.webhook(&rx.url("/other")).await;
    let both = env.webhook(&rx.url("/both")).await;
    let hmac = env.webhook(&rx.url("/hmac")).await;
    let damaged = env.webhook(&rx.url("/damaged")).await;
    let other_key = sign_with(&env, other, "both").await;
    let both_key = sign_with(&env, both, "both").await;
    assert_ne!(other_key, both_key);
    // A key pair written by hand whose halves disagree: never sent unsigned.
    sign_with(&env, damaged, "both").await;
    env.db
        .execute(
            "UPDATE webhooks SET signing_public_key = (SELECT signing_public_key FROM webhooks WHERE id = $2)
             WHERE id = $1",
            &[&damaged, &other],
        )
        .await
        .unwrap();
    let daemon = env.daemon(env.config()).await;
    for wh in [other, both, hmac, damaged] {
        env.db
            .execute(
                r#"INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
                   VALUES ($1, 'goal_completion',
                           '{"goal": "Café ☕   line", "ratio": 6.0, "big": 1e21, "n": {"deep": [1.5, -0.0]}}')"#,
                &[&wh],
            )
            .await
            .unwrap();
    }
    let reqs = rx.wait_for(3, T).await.unwrap();
    env.wait_until(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE webhook_id = '{damaged}'
               AND status = 'failed' AND last_error LIKE '%ed25519 private key does not belong%')"
        ),
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    assert!(
        rx.requests().iter().all(|r| r.path != "/damaged"),
        "a delivery went out without its v1a signature"
    );
    let at = |p: &str| reqs.iter().find(|r| r.path == p).unwrap();

    // Both: the HMAC snippets still verify, and v1a beside them, each
    // webhook with its own key.
    for (path, key, another) in [
        ("/both", &both_key, &other_key),
        ("/other", &other_key, &both_key),
    ] {
        let r = at(path);
        assert_eq!((entries(r, "v1a,"), entries(r, "v1,")), (1, 1));
        for (lang, cmd) in runners() {
            assert!(
                verifies(&cmd, SECRET, &headers_json(r), &r.body),
                "{lang}'s HMAC snippet refused a delivery signed both ways"
            );
        }
        v1a_verified(r, key, another);
    }

    // An hmac webhook (the default) is signed as before: no v1a.
    let r = at("/hmac");
    assert_eq!((entries(r, "v1a,"), entries(r, "v1,")), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_beside_the_new_one_until_its_grace_ends() {
    use plausible_webhooks::admin::{access::Principal, core::Admin, inputs::RotateKey};
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/hook")).await;
    let old = sign_with(&env, wh, "both").await;
    let admin = Admin::from_config(&env.config()).unwrap();
    let rotate = RotateKey {
        grace_secs: Some(plausible_webhooks::admin::inputs::Secs::Number(3600)),
        ..Default::default()
    };
    let r = admin
        .rotate_signing_key(&Principal::Operator, wh, rotate)
        .await
        .unwrap();
    assert_eq!(r.previous_public_key.as_deref(), Some(old.as_str()));
    let new = r.public_key;
    let daemon = env.daemon(env.config()).await;

    // During the grace: two v1a entries, and each key verifies.
    env.enqueue(wh, 1).await;
    let first = rx.wait_for(1, T).await.unwrap().remove(0);
    assert_eq!(
        entries(&first, "v1a,"),
        2,
        "{:?}",
        first.header("webhook-signature")
    );
    v1a_verified(
        &first,
        &new,
        "whpk_PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=",
    );
    v1a_verified(
        &first,
        &old,
        "whpk_PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=",
    );

    // The grace ends as time passes: no writer touches the row (replica
    // mode keeps the touch trigger from moving updated_at), so the daemon
    // must notice the expiry itself, not a change.
    env.db
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             UPDATE webhooks SET previous_signing_key_expires_at = now() - interval '1 second'
             WHERE id = '{wh}';
             RESET session_replication_role;"
        ))
        .await
        .unwrap();
    env.enqueue(wh, 1).await;
    let second = rx
        .wait_for(2, T)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.header("webhook-id") != first.header("webhook-id"))
        .unwrap();
    daemon.shutdown().await.unwrap();
    assert_eq!(entries(&second, "v1a,"), 1);
    v1a_verified(&second, &new, &old);
}

/// The page shows each snippet's `--- verify` block exactly as the file that
/// the test above runs has it.
#[test]
fn the_receiving_page_shows_the_tested_snippets() {
    let page = std::fs::read_to_string(docs().join("receiving.md")).unwrap();
    for file in [
        "verify.js",
        "verify.py",
        "verify.go",
        "v1a/verify.js",
        "v1a/verify.py",
        "v1a/verify.go",
    ] {
        let text = std::fs::read_to_string(docs().join("verify").join(file)).unwrap();
        let start = text
            .find("--- verify")
            .and_then(|i| text[i..].find('\n').map(|j| i + j + 1))
            .unwrap_or_else(|| panic!("{file} has no --- verify marker"));
        let end = text[start..]
            .find("--- end")
            .and_then(|j| text[..start + j].rfind('\n'))
            .unwrap_or_else(|| panic!("{file} has no --- end marker"));
        let block = &text[start..end];
        assert!(
            block.lines().count() > 10,
            "{file}: the marked block is too short"
        );
        assert!(
            page.contains(block),
            "docs/receiving.md does not show docs/verify/{file}'s block as it is:\n{block}"
        );
    }
}

/// `es_json` writes what Node's `JSON.stringify(JSON.parse(text))` writes,
/// over hand-picked hard cases and a few thousand generated values.
#[test]
fn es_json_matches_node_on_hard_and_generated_values() {
    use plausible_webhooks::delivery::es_json::es_json;
    let mut corpus: Vec<String> = [
        r#"{"visitors": 25, "ratio": 6.0, "change": -12.50}"#,
        "[1e21, 1E-7, 0.000001, 123456789012345680000, -0, -0.0, 1.5e300, 5e-324, 1.7976931348623157e308]",
        "[0.1, 0.2, 0.30000000000000004, 100, 1e2, 2.50, 1234567.125, 9007199254740992]",
        r#"{"b": 1, "2": 2, "a": 3, "10": 4, "01": 5, "4294967295": 6, "4294967294": 7, "-1": 8, "1.0": 9}"#,
        r#"{"a": 1, "a": 2, "b": 3}"#,
        "\"caf\u{e9} \u{2028} \\u2029 \\u0001 \\u001f \\u007f \\/ \\\" \\\\ \\n \\t \\b \\f \\r 😀 \\ud83d\\ude00\"",
        r#"{"nested": {"list": [true, false, null, {"x": [[]], "": {}}]}}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Generated: numbers across magnitudes, strings over the control and
    // non-ASCII ranges, objects with index-like keys.
    let mut rng = fastrand::Rng::with_seed(8785);
    for _ in 0..3000 {
        let n = match rng.u8(..4) {
            0 => format!("{}", rng.f64() * 10f64.powi(rng.i32(-30..30))),
            1 => format!("{:e}", (rng.f64() - 0.5) * 10f64.powi(rng.i32(-300..300))),
            2 => format!("{}.{}", rng.i64(-1_000_000..1_000_000), rng.u32(..1000)),
            _ => format!("{}", rng.i64(-(1 << 53)..(1 << 53))),
        };
        let ch = char::from_u32(rng.u32(0..0x3000)).unwrap_or('x');
        let s = serde_json::to_string(&format!("a{ch}b")).unwrap();
        let k = rng.u32(..20);
        corpus.push(format!(
            r#"{{"z": {n}, "{k}": [{n}, {s}], "s": {s}, "0{k}": {{"n": {n}}}}}"#
        ));
    }
    let mut child = Command::new("node")
        .args([
            "-e",
            "const lines = require('fs').readFileSync(0, 'utf8').split('\\n').filter(Boolean);\
             for (const l of lines) console.log(JSON.stringify(JSON.parse(l)));",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (apt-get install -y nodejs)");
    let input = corpus.join("\n") + "\n";
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let node: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(node.len(), corpus.len());
    let mut differ = Vec::new();
    for (text, want) in corpus.iter().zip(node) {
        let got = es_json(text).unwrap();
        if got != want {
            differ.push(format!("{text}\n  ours: {got}\n  node: {want}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ from Node, e.g.:\n{}",
        differ.len(),
        corpus.len(),
        differ[..differ.len().min(5)].join("\n")
    );
}
