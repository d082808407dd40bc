//! ed25519 (`v1a`) keys as the CLI and the API show them: the public key
//! (`whpk_`) to whoever may see the webhook, both `whsk_` byte forms
//! imported, the private key exported as its 32-byte seed and only to a
//! site's owners and admins (and the operator), never in a view. The
//! signatures themselves are verified on real deliveries in
//! tests/receiving.rs.

mod common;

use std::process::Output;
use std::time::Duration;

use common::http::{free_port, request, wait_status, Answer};
use common::{DaemonProcess, Env};
use plausible_webhooks::admin::auth::{operator_token_hash, plausible_key_hash};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const OPERATOR: &str = "operator-token-for-tests-0123456789";
const SKB: &str = "secret-key-base-of-the-test-plausible-instance-0123456789abcdef";

// RFC 8032's test 1 key, as in src/delivery/signing.rs (computed there with
// Python's `cryptography`): the seed, the seed with its public key, and the
// public key.
const WHSK: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const WHSK_64: &str =
    "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
const WHPK: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
/// The seed's base64 alone: must appear nowhere but in an export.
const SEED_B64: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2";

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

async fn ok(env: &Env, args: &[&str]) -> String {
    let o = pw(env, args).await;
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

async fn created_id(env: &Env, extra: &[&str]) -> String {
    let mut args = vec![
        "--json",
        "create",
        "--site",
        "example.com",
        "--name",
        "signed",
        "--url",
        "https://hooks.example.net/x",
    ];
    args.extend_from_slice(extra);
    let out = ok(env, &args).await;
    assert!(
        !out.contains(SEED_B64),
        "create printed the private key: {out}"
    );
    let c: Value = serde_json::from_str(&out).unwrap();
    c["webhook"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_whpk_imports_both_whsk_forms_and_exports_the_seed() {
    let env = Env::new().await;
    // The 64-byte form (seed ‖ public key) and the 32-byte seed: one key.
    let a = created_id(&env, &["--signature", "both", "--signing-key", WHSK_64]).await;
    let b = created_id(&env, &["--signature", "both", "--signing-key", WHSK]).await;
    for id in [&a, &b] {
        let shown = ok(&env, &["show", id]).await;
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("public key:") && l.ends_with(WHPK)),
            "{shown}"
        );
        assert!(
            !shown.contains(SEED_B64),
            "show printed the private key: {shown}"
        );
    }
    let shown = ok(&env, &["show", &a]).await;
    assert!(
        shown.contains("signature:") && shown.contains("both"),
        "{shown}"
    );
    // Exported as the 32-byte seed, whichever form was imported.
    assert_eq!(ok(&env, &["export-key", &a]).await.trim(), WHSK);
    let v: Value = serde_json::from_str(&ok(&env, &["--json", "export-key", &b]).await).unwrap();
    assert_eq!(v["signing_key"], WHSK);
    assert_eq!(v["public_key"], WHPK);

    // A rotation: a new public key, the old one shown with its end.
    let out = ok(&env, &["rotate-key", &a, "--grace", "1h"]).await;
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("new public key: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert!(new.starts_with("whpk_") && new != WHPK, "{out}");
    let shown = ok(&env, &["show", &a]).await;
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("public key:") && l.ends_with(&new)),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("old public key:") && l.ends_with(WHPK)),
        "{shown}"
    );
    assert!(shown.contains("old key signs until:"), "{shown}");
    // An import on rotation, at once without grace.
    ok(
        &env,
        &["rotate-key", &a, "--grace", "0", "--signing-key", WHSK_64],
    )
    .await;
    let shown = ok(&env, &["show", &a]).await;
    assert!(
        shown.contains(WHPK) && !shown.contains("old public key"),
        "{shown}"
    );

    // A webhook signing with hmac has no key to show or export.
    let h = created_id(&env, &[]).await;
    let shown = ok(&env, &["show", &h]).await;
    assert!(
        shown.contains("hmac") && !shown.contains("whpk_"),
        "{shown}"
    );
    let o = pw(&env, &["export-key", &h]).await;
    assert!(
        !o.status.success() && text(&o).contains("no ed25519 key"),
        "{}",
        text(&o)
    );

    // Refusals name the field and say what to give.
    for (args, field) in [
        (
            vec!["--signature", "both", "--signing-key", "whsk_AAAA"],
            "signing_key",
        ),
        (vec!["--signing-key", WHSK], "signing_key"),
        (vec!["--signature", "rsa"], "signature"),
        // HMAC signs every request (the spec): no ed25519-only mode.
        (vec!["--signature", "ed25519"], "signature"),
    ] {
        let mut all = vec![
            "--json",
            "create",
            "--site",
            "example.com",
            "--name",
            "x",
            "--url",
            "https://hooks.example.net/x",
        ];
        all.extend_from_slice(&args);
        let o = pw(&env, &all).await;
        assert!(!o.status.success(), "{args:?} accepted: {}", text(&o));
        let e: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o)));
        assert_eq!(e["error"]["field"], field, "{args:?}: {e}");
        if args[1] == "ed25519" {
            let m = e["error"]["message"].as_str().unwrap();
            assert!(m.contains("give both"), "{m}");
        }
    }
    let n = env
        .db
        .query_one("SELECT count(*) FROM webhooks", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(n, 3, "a refused create wrote nothing");
}

struct Api {
    env: Env,
    base: String,
    /// The daemon's log (stderr), at debug level.
    log: tempfile::NamedTempFile,
    _daemon: DaemonProcess,
}

impl Api {
    async fn start() -> Api {
        let env = Env::new().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
        let log = tempfile::NamedTempFile::new().unwrap();
        let daemon = env.spawn_daemon_logging(
            &[
                ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", listen.as_str()),
                ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
                ("SECRET_KEY_BASE", SKB),
                ("RUST_LOG", "debug"),
            ],
            Some(log.path()),
        );
        let base = format!("http://{listen}");
        wait_status(&format!("{base}/readyz"), 200, T).await;
        Api {
            env,
            base,
            log,
            _daemon: daemon,
        }
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        request(
            method,
            &format!("{}{path}", self.base),
            Some(token),
            body.as_ref(),
        )
        .await
        .unwrap()
    }

    /// A key of a new user with `role` on example.com's team.
    async fn key(&self, role: &str) -> String {
        let db = &self.env.db;
        let user: i64 = db
            .query_one(
                "INSERT INTO users (email, inserted_at, updated_at) VALUES ($1, now(), now()) RETURNING id",
                &[&format!("{role}@example.com")],
            )
            .await
            .unwrap()
            .get(0);
        let team: i64 = db
            .query_one(
                "SELECT team_id FROM sites WHERE id = $1",
                &[&self.env.site_id],
            )
            .await
            .unwrap()
            .get(0);
        db.execute(
            "INSERT INTO team_memberships (user_id, team_id, role, inserted_at, updated_at)
             VALUES ($1, $2, $3, now(), now())",
            &[&user, &team, &role],
        )
        .await
        .unwrap();
        let key = format!("key-of-{role}-{}", uuid::Uuid::new_v4().simple());
        db.execute(
            "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
             VALUES ($1, $2, 'k', $3, $4, '{stats:read:*}', now(), now())",
            &[&user, &team, &key[..6].to_string(), &plausible_key_hash(SKB, &key)],
        )
        .await
        .unwrap();
        key
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_whpk_to_all_and_the_private_key_to_owners_and_admins_only() {
    let api = Api::start().await;
    let c = api
        .call(
            "POST",
            "/api/webhooks",
            OPERATOR,
            Some(json!({"site_id": "example.com", "name": "signed",
                        "url": "https://hooks.example.net/x",
                        "signature": "both", "signing_key": WHSK_64})),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    assert!(
        !c.text.contains(SEED_B64),
        "create answered with the private key"
    );
    assert_eq!(c.json()["webhook"]["public_key"], WHPK);
    assert_eq!(c.json()["webhook"]["signature"], "both");
    let id = c.json()["webhook"]["id"].as_str().unwrap().to_string();
    let path = format!("/api/webhooks/{id}");

    let mut keys = Vec::new();
    for (role, exports) in [
        ("owner", true),
        ("admin", true),
        ("editor", false),
        ("viewer", false),
    ] {
        let key = api.key(role).await;
        keys.push((role, key.clone()));
        let got = api.call("GET", &path, &key, None).await;
        assert_eq!(got.status, 200, "{role}: {}", got.text);
        assert_eq!(got.json()["webhook"]["public_key"], WHPK, "{role}");
        let list = api
            .call("GET", "/api/webhooks?site_id=example.com", &key, None)
            .await;
        assert_eq!(list.json()["webhooks"][0]["public_key"], WHPK, "{role}");
        for a in [&got, &list] {
            assert!(
                !a.text.contains(SEED_B64),
                "{role} read the private key: {}",
                a.text
            );
        }
        let e = api
            .call("POST", &format!("{path}/export-key"), &key, None)
            .await;
        if exports {
            assert_eq!(e.status, 200, "{role}: {}", e.text);
            assert_eq!(e.json()["signing_key"], WHSK, "{role}: the 32-byte seed");
            assert_eq!(e.json()["public_key"], WHPK);
        } else {
            assert_eq!(e.status, 403, "{role}: {}", e.text);
            assert_eq!(e.code(), "forbidden");
            assert!(!e.text.contains(SEED_B64), "{role}: {}", e.text);
            assert!(e.text.contains("owner or admin"), "{role}: {}", e.text);
        }
    }

    // Owners, admins and editors rotate the key; a viewer may not.
    for (role, key) in &keys {
        let r = api
            .call(
                "POST",
                &format!("{path}/rotate-key"),
                key,
                Some(json!({"grace_secs": 0})),
            )
            .await;
        if *role == "viewer" {
            assert_eq!(r.status, 403, "a viewer rotated the key: {}", r.text);
        } else {
            assert_eq!(r.status, 200, "{role}: {}", r.text);
        }
    }

    // Rotation with a grace: both public keys are shown until it ends.
    let before =
        api.call("GET", &path, OPERATOR, None).await.json()["webhook"]["public_key"].clone();
    let r = api
        .call(
            "POST",
            &format!("{path}/rotate-key"),
            OPERATOR,
            Some(json!({"grace_secs": 3600})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["previous_public_key"], before);
    assert!(r.json()["previous_signing_key_expires_at"].is_string());
    let got = api.call("GET", &path, OPERATOR, None).await.json();
    assert_eq!(got["webhook"]["public_key"], r.json()["public_key"]);
    assert_eq!(got["webhook"]["previous_public_key"], before);

    // The bytes of a whsk_ are checked: a 64-byte form whose halves disagree.
    let mut wrong = WHSK_64.to_string();
    wrong.replace_range(wrong.len() - 6.., "AAAA==");
    let bad = api
        .call("PATCH", &path, OPERATOR, Some(json!({"signature": "both"})))
        .await;
    assert_eq!(bad.status, 200, "{}", bad.text);
    let bad = api
        .call(
            "POST",
            &format!("{path}/rotate-key"),
            OPERATOR,
            Some(json!({"signing_key": wrong})),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(bad.json()["error"]["field"], "signing_key");

    // The log, at debug level, never holds the private key (it was given,
    // stored, exported and refused above).
    let log = std::fs::read_to_string(api.log.path()).unwrap();
    assert!(log.contains("DEBUG"), "the log is at debug level: {log}");
    assert!(!log.contains(SEED_B64), "the private key is in the log");
    // Nor its bytes, as a database driver's debug line would print them.
    assert!(
        !log.contains("157, 97, 177, 157, 239, 253"),
        "the private key's bytes are in the log"
    );

    // The OpenAPI document describes the new routes.
    let doc = api.call("GET", "/api/openapi.json", OPERATOR, None).await;
    for p in [
        "/api/webhooks/{id}/rotate-key",
        "/api/webhooks/{id}/export-key",
    ] {
        assert!(
            doc.json()["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
}
