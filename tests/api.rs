//! The admin REST API of the running binary: its whole surface, its refusals,
//! and access by Plausible's roles (FR-014) through Plausible's own api_keys,
//! team_memberships and guest_memberships.

mod common;

use std::time::Duration;

use common::http::{free_port, request, wait_status, Answer};
use common::{by_attempt, DaemonProcess, Env};
use plausible_webhooks::admin::auth::{operator_token_hash, plausible_key_hash};
use plausible_webhooks::testkit::receiver::{always, Receiver, Reply};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const OPERATOR: &str = "operator-token-for-tests-0123456789";
const SKB: &str = "secret-key-base-of-the-test-plausible-instance-0123456789abcdef";

struct Api {
    env: Env,
    base: String,
    _daemon: DaemonProcess,
}

impl Api {
    async fn start() -> Api {
        Api::start_with(&[]).await
    }

    /// As `start`, with more settings for the daemon's environment.
    async fn start_with(extra: &[(&str, &str)]) -> Api {
        let env = Env::new().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
        let mut vars = vec![
            ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", listen.as_str()),
            ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
            ("SECRET_KEY_BASE", SKB),
        ];
        vars.extend_from_slice(extra);
        let daemon = env.spawn_daemon(&vars);
        let base = format!("http://{listen}");
        wait_status(&format!("{base}/readyz"), 200, T).await;
        Api {
            env,
            base,
            _daemon: daemon,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        request(
            method,
            &format!("{}{path}", self.base),
            token,
            body.as_ref(),
        )
        .await
        .unwrap()
    }

    async fn op(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(OPERATOR), body).await
    }
}

/// Asserts the status (and, for errors, the stable code), showing the body otherwise.
fn expect(a: &Answer, status: u16, code: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.content_type, "application/json", "{}", a.text);
    if let Some(c) = code {
        assert_eq!(a.code(), c, "{}", a.text);
    }
}

/// A user of the Plausible fixture with one API key; returns the key.
async fn user_with_key(
    db: &tokio_postgres::Client,
    email: &str,
    key_team: Option<i64>,
) -> (i64, String) {
    let user: i64 = db
        .query_one(
            "INSERT INTO users (email, inserted_at, updated_at) VALUES ($1, now(), now()) RETURNING id",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    let key = format!("key-of-{email}-{}", uuid::Uuid::new_v4().simple());
    db.execute(
        "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
         VALUES ($1, $2, 'k', $3, $4, '{stats:read:*}', now(), now())",
        &[&user, &key_team, &key[..6].to_string(), &plausible_key_hash(SKB, &key)],
    )
    .await
    .unwrap();
    (user, key)
}

async fn member(db: &tokio_postgres::Client, user: i64, team: i64, role: &str) -> i64 {
    db.query_one(
        "INSERT INTO team_memberships (user_id, team_id, role, inserted_at, updated_at)
         VALUES ($1, $2, $3, now(), now()) RETURNING id",
        &[&user, &team, &role],
    )
    .await
    .unwrap()
    .get(0)
}

async fn team_of(db: &tokio_postgres::Client, site: i64) -> i64 {
    db.query_one("SELECT team_id FROM sites WHERE id = $1", &[&site])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plausible_roles_decide_what_each_key_may_do() {
    let api = Api::start().await;
    let db = &api.env.db;
    let site = api.env.site_id; // example.com, team A
    let team_a = team_of(db, site).await;
    let other_site = plausible_webhooks::testkit::create_site(db, "other.example")
        .await
        .unwrap();
    let team_b = team_of(db, other_site).await;

    let mut keys = std::collections::BTreeMap::new();
    for role in ["owner", "admin", "editor", "viewer", "billing"] {
        let (u, k) = user_with_key(db, &format!("{role}@a.test"), None).await;
        member(db, u, team_a, role).await;
        keys.insert(role, k);
    }
    for role in ["editor", "viewer"] {
        let (u, k) = user_with_key(db, &format!("guest-{role}@b.test"), None).await;
        member(db, u, team_b, "owner").await;
        let tm = member(db, u, team_a, "guest").await;
        db.execute(
            "INSERT INTO guest_memberships (team_membership_id, site_id, role, inserted_at, updated_at)
             VALUES ($1, $2, $3, now(), now())",
            &[&tm, &site, &role],
        )
        .await
        .unwrap();
        keys.insert(
            if role == "editor" {
                "guest_editor"
            } else {
                "guest_viewer"
            },
            k,
        );
    }
    // A guest of team A, but on none of its sites.
    let (u, k) = user_with_key(db, "guest-nowhere@b.test", None).await;
    member(db, u, team_a, "guest").await;
    keys.insert("guest_elsewhere", k);
    // The owner of another team.
    let (outsider, k) = user_with_key(db, "owner@b.test", None).await;
    member(db, outsider, team_b, "owner").await;
    keys.insert("other_team_owner", k);
    // Team A's owner through a key bound to team B, and through one bound to team A.
    let owner_id: i64 = db
        .query_one("SELECT id FROM users WHERE email = 'owner@a.test'", &[])
        .await
        .unwrap()
        .get(0);
    for (name, team) in [
        ("owner_key_for_team_b", team_b),
        ("owner_key_for_team_a", team_a),
    ] {
        let k = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        db.execute(
            "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
             VALUES ($1, $2, 'k', 'xxxxxx', $3, '{stats:read:*}', now(), now())",
            &[&owner_id, &team, &plausible_key_hash(SKB, &k)],
        )
        .await
        .unwrap();
        keys.insert(name, k);
    }
    // Revoked: Plausible deletes the row.
    let (revoked_user, revoked) = user_with_key(db, "revoked@a.test", None).await;
    member(db, revoked_user, team_a, "owner").await;
    db.execute("DELETE FROM api_keys WHERE user_id = $1", &[&revoked_user])
        .await
        .unwrap();
    // Stored under another SECRET_KEY_BASE than the daemon's.
    let wrong_skb = "a-key-hashed-with-another-secret-key-base";
    db.execute(
        "INSERT INTO api_keys (user_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
         VALUES ($1, 'k', 'xxxxxx', $2, '{stats:read:*}', now(), now())",
        &[
            &owner_id,
            &plausible_key_hash("another-secret-key-base", wrong_skb),
        ],
    )
    .await
    .unwrap();

    let rx = api.env.receiver(always(200)).await;
    let created = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "ops", "url": rx.url("/hook")})),
        )
        .await;
    expect(&created, 201, None);
    let id = created.json()["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/webhooks/{id}");

    // Read: GET the webhook and its deliveries.
    for (who, status) in [
        ("owner", 200),
        ("admin", 200),
        ("editor", 200),
        ("viewer", 200),
        ("guest_editor", 200),
        ("guest_viewer", 200),
        ("owner_key_for_team_a", 200),
        ("billing", 404),
        ("guest_elsewhere", 404),
        ("other_team_owner", 404),
        ("owner_key_for_team_b", 404),
    ] {
        let k = keys[who].as_str();
        let a = api.call("GET", &path, Some(k), None).await;
        assert_eq!(a.status, status, "GET as {who}: {}", a.text);
        let a = api
            .call("GET", &format!("{path}/deliveries"), Some(k), None)
            .await;
        assert_eq!(a.status, status, "GET deliveries as {who}: {}", a.text);
    }
    // Manage: change the webhook.
    for (who, status, code) in [
        ("owner", 200, None),
        ("admin", 200, None),
        ("editor", 200, None),
        ("guest_editor", 200, None),
        ("viewer", 403, Some("forbidden")),
        ("guest_viewer", 403, Some("forbidden")),
        ("billing", 404, Some("not_found")),
        ("other_team_owner", 404, Some("not_found")),
        ("owner_key_for_team_b", 404, Some("not_found")),
    ] {
        let a = api
            .call(
                "PATCH",
                &path,
                Some(&keys[who]),
                Some(json!({"name": format!("by {who}")})),
            )
            .await;
        expect(&a, status, code);
        if status == 200 {
            assert_eq!(a.json()["name"], format!("by {who}"));
        }
    }
    // Create on a site: manage there; 403 for a role that may only read it;
    // 404 for no role at all (as for a site that does not exist).
    for (who, status) in [
        ("editor", 201),
        ("guest_editor", 201),
        ("viewer", 403),
        ("other_team_owner", 404),
        ("billing", 404),
    ] {
        let a = api
            .call(
                "POST",
                "/api/webhooks",
                Some(&keys[who]),
                Some(json!({"site_id": "example.com", "name": who, "url": rx.url("/x")})),
            )
            .await;
        assert_eq!(a.status, status, "create as {who}: {}", a.text);
    }
    // The other team's owner manages their own site, and lists only it.
    let own = api
        .call(
            "POST",
            "/api/webhooks",
            Some(&keys["other_team_owner"]),
            Some(json!({"site_id": other_site, "name": "mine", "url": rx.url("/b")})),
        )
        .await;
    expect(&own, 201, None);
    let listed = api
        .call(
            "GET",
            "/api/webhooks",
            Some(&keys["other_team_owner"]),
            None,
        )
        .await;
    expect(&listed, 200, None);
    let sites: Vec<Value> = listed.json()["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["site_id"].clone())
        .collect();
    assert_eq!(sites, vec![json!("other.example")]);
    let listed = api
        .call("GET", "/api/webhooks", Some(&keys["viewer"]), None)
        .await;
    assert_eq!(
        listed.json()["webhooks"].as_array().unwrap().len(),
        3,
        "{}",
        listed.text
    );
    let a = api
        .call(
            "GET",
            "/api/webhooks?site_id=other.example",
            Some(&keys["viewer"]),
            None,
        )
        .await;
    // No role on that site: answered as if it did not exist.
    expect(&a, 404, Some("not_found"));
    // The operator sees every site.
    let all = api.op("GET", "/api/webhooks", None).await;
    assert_eq!(all.json()["webhooks"].as_array().unwrap().len(), 4);

    // Not authenticated: 401 with a message saying what to send.
    for (token, what) in [
        (Some(revoked.as_str()), "revoked key"),
        (Some(wrong_skb), "key under another SECRET_KEY_BASE"),
        (Some("no-such-token"), "unknown token"),
        (None, "no token"),
    ] {
        let a = api.call("GET", &path, token, None).await;
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert_eq!(a.code(), "unauthorized", "{what}");
    }
    let basic = common::http::request_with_header(
        &format!("{}{path}", api.base),
        ("authorization", "Basic Zm9vOmJhcg=="),
    )
    .await;
    assert_eq!((basic.status, basic.code().as_str()), (401, "unauthorized"));
}

/// Creates a webhook from `body` as the operator; returns the answer's JSON
/// and the webhook's API path.
async fn created(api: &Api, body: Value) -> (Value, String) {
    let a = api.op("POST", "/api/webhooks", Some(body)).await;
    expect(&a, 201, None);
    let c = a.json();
    let path = format!("/api/webhooks/{}", c["webhook"]["id"].as_str().unwrap());
    (c, path)
}

/// What most tests below start from: a running daemon, a receiver answering
/// 200, and the webhook "orders" to its /hook, with a header and a goal
/// trigger. Returns the daemon, the receiver (keep it bound, as `_rx` when
/// unread: dropped, it stops answering), the create answer's JSON and the
/// webhook's API path.
async fn orders() -> (Api, Receiver, Value, String) {
    let api = Api::start().await;
    let rx = api.env.receiver(always(200)).await;
    let (created, path) = created(
        &api,
        json!({
            "site_id": "example.com", "name": "orders", "url": rx.url("/hook"),
            "headers": {"X-Env": "test"},
            "triggers": [{"type": "goal_completion"}]
        }),
    )
    .await;
    (api, rx, created, path)
}

/// Enqueues `n` deliveries for the webhook at `path` and waits until the
/// database holds `successes` successful deliveries; returns the new ids.
async fn delivered(api: &Api, path: &str, n: i32, successes: i64) -> Vec<uuid::Uuid> {
    let wh = path.rsplit('/').next().unwrap().parse().unwrap();
    let ids = api.env.enqueue(wh, n).await;
    api.env
        .wait_until(
            &format!(
                "SELECT count(*) = {successes} FROM webhook_deliveries WHERE status = 'success'"
            ),
            T,
        )
        .await;
    ids
}

/// Sends a test event to the webhook at `path`; returns the answer.
async fn send_test(api: &Api, path: &str) -> Answer {
    let t = api.op("POST", &format!("{path}/test"), None).await;
    expect(&t, 200, None);
    t
}

/// How many webhooks the operator's `GET <path_and_query>` lists.
async fn operator_lists(api: &Api, path_and_query: &str) -> usize {
    api.op("GET", path_and_query, None).await.json()["webhooks"]
        .as_array()
        .unwrap()
        .len()
}

/// Create: refusals name the field and the rule, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_create_refusal_names_the_rule_and_writes_nothing() {
    let api = Api::start().await;
    let rx = api.env.receiver(always(200)).await;
    for (body, status, code) in [
        (
            json!({"site_id": "example.com", "name": "x", "url": "http://plain.example/"}),
            422,
            "https_required",
        ),
        (
            json!({"site_id": "example.com", "url": rx.url("/")}),
            422,
            "required",
        ),
        (
            json!({"site_id": "example.com", "name": "x", "url": rx.url("/"), "headers": {"Content-Type": "text/plain"}}),
            422,
            "reserved",
        ),
        (
            json!({"site_id": "example.com", "name": "x", "url": rx.url("/"), "secret": "short"}),
            422,
            "too_short",
        ),
        (
            json!({"site_id": "example.com", "name": "x", "url": rx.url("/"), "nmae": "typo"}),
            422,
            "unknown_field",
        ),
        (
            json!({"site_id": "example.com", "name": 7, "url": rx.url("/")}),
            422,
            "wrong_type",
        ),
        (
            json!({"site_id": "example.com", "name": "x", "url": rx.url("/"), "triggers": [{"type": "visitor_spike", "threshold": 0}]}),
            422,
            "out_of_range",
        ),
        (
            json!({"site_id": "nosuch.example", "name": "x", "url": rx.url("/")}),
            404,
            "not_found",
        ),
        (json!([1, 2]), 400, "bad_json"),
    ] {
        let a = api.op("POST", "/api/webhooks", Some(body.clone())).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code.to_string()),
            "{body}: {}",
            a.text
        );
    }
    let a = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "x", "url": "http://p.example/"})),
        )
        .await;
    assert_eq!(a.json()["error"]["field"], "url");
    let a = request(
        "POST",
        &format!("{}/api/webhooks", api.base),
        Some(OPERATOR),
        None,
    )
    .await
    .unwrap();
    expect(&a, 400, Some("bad_json"));
    let huge = json!({"site_id": "example.com", "name": "x".repeat(1_100_000), "url": rx.url("/")});
    let a = api.op("POST", "/api/webhooks", Some(huge)).await;
    assert_eq!((a.status, a.code().as_str()), (413, "body_too_large"));
    assert_eq!(
        api.env.count("SELECT count(*) FROM webhooks").await,
        0,
        "a refused create wrote nothing"
    );
}

/// Create answers with the secret once; get and list never show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_returns_the_secret_once_and_get_and_list_never_show_it() {
    let (api, _rx, c, path) = orders().await;
    assert!(c["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(c["triggers"].as_array().unwrap().len(), 1);
    let got = api.op("GET", &path, None).await;
    expect(&got, 200, None);
    assert_eq!(got.json()["webhook"]["header_names"], json!(["X-Env"]));
    assert_eq!(got.json()["triggers"][0]["trigger_type"], "goal_completion");
    assert!(!got.text.contains(c["secret"].as_str().unwrap()));
    let list = api.op("GET", "/api/webhooks?site=example.com", None).await;
    assert_eq!(list.json()["webhooks"][0]["id"], c["webhook"]["id"]);
}

/// An unknown webhook or path, or a method a path does not take, is refused
/// with the JSON error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_webhooks_paths_and_methods_are_refused_by_name() {
    let api = Api::start().await;
    for bad in [
        "/api/webhooks/not-a-uuid",
        "/api/webhooks/00000000-0000-0000-0000-000000000000",
    ] {
        expect(&api.op("GET", bad, None).await, 404, Some("not_found"));
    }
    expect(
        &api.op("DELETE", "/api/webhooks", None).await,
        405,
        Some("method_not_allowed"),
    );
    expect(
        &api.op("GET", "/api/nothing", None).await,
        404,
        Some("not_found"),
    );
}

/// Update (PUT and PATCH alike), with the same validation as create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_by_put_or_patch_validates_as_create_does() {
    let (api, _rx, _, path) = orders().await;
    let a = api
        .op(
            "PUT",
            &path,
            Some(json!({"name": "orders v2", "retry_schedule_secs": [1]})),
        )
        .await;
    expect(&a, 200, None);
    assert_eq!(
        (
            a.json()["name"].clone(),
            a.json()["retry_schedule_secs"].clone()
        ),
        (json!("orders v2"), json!([1]))
    );
    expect(
        &api.op(
            "PATCH",
            &path,
            Some(json!({"url": "https://user:pw@x.example/"})),
        )
        .await,
        422,
        Some("userinfo"),
    );
    expect(
        &api.op("PATCH", &path, Some(json!({"max_concurrency": 0})))
            .await,
        422,
        Some("out_of_range"),
    );
    let a = api
        .op("PATCH", &path, Some(json!({"retry_schedule_secs": [0]})))
        .await;
    expect(&a, 422, Some("out_of_range"));
    assert_eq!(
        a.json()["error"]["field"],
        "retry_schedule_secs",
        "{}",
        a.text
    );
}

/// Send a test: the receiver's answer comes back, and the receiver gets the
/// event with the webhook's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_answers_with_what_the_receiver_said() {
    let (api, rx, _, path) = orders().await;
    let t = send_test(&api, &path).await;
    assert_eq!(
        (t.json()["success"].clone(), t.json()["status_code"].clone()),
        (json!(true), json!(200))
    );
    let seen = rx.wait_for(1, T).await.unwrap();
    assert_eq!(seen[0].json()["event"], "test");
    assert_eq!(seen[0].header("x-env"), Some("test"));
}

/// Create with `"check": true`: the test event goes first, signed with the
/// webhook's secret and carrying its headers; a receiver answering 200 gets
/// the webhook created with the check's result in the answer, one answering
/// 500 refuses it (422, `url`, `unreachable`, the status and what the
/// receiver said in the message) and leaves no webhook row behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_create_sends_the_test_first_and_refuses_a_failing_receiver() {
    let api = Api::start().await;
    let ok = api.env.receiver(always(200)).await;
    let (c, _) = created(
        &api,
        json!({
            "site_id": "example.com", "name": "checked", "url": ok.url("/hook"),
            "secret": common::SECRET, "headers": {"X-Env": "test"}, "check": true
        }),
    )
    .await;
    assert_eq!(c["check"]["status_code"], 200, "{c}");
    assert!(c["check"]["duration_ms"].is_i64(), "{c}");
    let seen = ok.wait_for(1, T).await.unwrap();
    assert_eq!(seen[0].json()["event"], "test");
    assert_eq!(seen[0].header("x-env"), Some("test"));
    assert_eq!(
        seen[0].header("webhook-id"),
        c["check"]["message_id"].as_str()
    );
    let ts: i64 = seen[0]
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(plausible_webhooks::delivery::signing::verify_standard(
        common::SECRET,
        seen[0].header("webhook-id").unwrap(),
        ts,
        &seen[0].body,
        seen[0].header("webhook-signature").unwrap()
    ));
    // Without the check, nothing is sent.
    let (u, _) = created(
        &api,
        json!({"site_id": "example.com", "name": "unchecked", "url": ok.url("/other")}),
    )
    .await;
    assert!(u.get("check").is_none(), "{u}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ok.requests().len(), 1);

    let bad = api
        .env
        .receiver(std::sync::Arc::new(|_| Reply::Full {
            status: 500,
            headers: vec![],
            body: b"boom: database down".to_vec(),
        }))
        .await;
    let before = api.env.count("SELECT count(*) FROM webhooks").await;
    let a = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({
                "site_id": "example.com", "name": "failing", "url": bad.url("/hook"), "check": true
            })),
        )
        .await;
    expect(&a, 422, Some("unreachable"));
    let e = &a.json()["error"];
    assert_eq!(e["field"], "url", "{e}");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("answered 500")
            && m.contains("boom: database down")
            && m.contains("leave out --check"),
        "{m}"
    );
    assert_eq!(bad.wait_for(1, T).await.unwrap().len(), 1);
    assert_eq!(api.env.count("SELECT count(*) FROM webhooks").await, before);
    assert_eq!(
        api.env
            .count("SELECT count(*) FROM webhooks WHERE name = 'failing'")
            .await,
        0
    );

    // No answer at all: why the connection failed, and what to do.
    let a = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({
                "site_id": "example.com", "name": "nobody", "check": true,
                "url": format!("https://127.0.0.1:{}/hook", free_port())
            })),
        )
        .await;
    expect(&a, 422, Some("unreachable"));
    let m = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("no answer") && m.contains("nothing listens at that host and port"),
        "{m}"
    );
    assert_eq!(api.env.count("SELECT count(*) FROM webhooks").await, before);
}

/// Deliveries (a test send among them: it is logged like any delivery):
/// pages by cursor, newest first, each once; filtered by event and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_page_by_cursor_each_once_and_filter_by_event_and_status() {
    let (api, _rx, _, path) = orders().await;
    send_test(&api, &path).await;
    delivered(&api, &path, 4, 5).await;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("{path}/deliveries?limit=2&cursor={c}"),
            None => format!("{path}/deliveries?limit=2"),
        };
        let p = api.op("GET", &q, None).await;
        expect(&p, 200, None);
        let j = p.json();
        pages += 1;
        for d in j["deliveries"].as_array().unwrap() {
            ids.push(d["id"].as_str().unwrap().to_string());
        }
        match j["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len(), pages), (5, 5, 3), "{ids:?}");
    let tests = api
        .op(
            "GET",
            &format!("{path}/deliveries?event=test&status=success"),
            None,
        )
        .await;
    assert_eq!(tests.json()["deliveries"].as_array().unwrap().len(), 1);
}

/// A deliveries query with a bad or unknown parameter is refused by rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deliveries_query_refusal_names_the_rule() {
    let (api, _rx, _, path) = orders().await;
    for (q, code) in [
        ("status=bogus", "syntax"),
        ("limit=0", "out_of_range"),
        ("cursor=zzz", "syntax"),
        ("since=yesterday", "syntax"),
        ("colour=red", "not_applicable"),
    ] {
        expect(
            &api.op("GET", &format!("{path}/deliveries?{q}"), None).await,
            422,
            Some(code),
        );
    }
}

/// One delivery shows its attempt log; an unknown one is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_shows_its_attempt_log_and_an_unknown_one_is_not_found() {
    let (api, _rx, _, path) = orders().await;
    let one = delivered(&api, &path, 1, 1).await[0];
    let d = api
        .op("GET", &format!("{path}/deliveries/{one}"), None)
        .await;
    expect(&d, 200, None);
    assert_eq!(d.json()["attempt_log"][0]["status_code"], 200);
    expect(
        &api.op(
            "GET",
            &format!("{path}/deliveries/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await,
        404,
        Some("not_found"),
    );
}

/// Retry: a success only with force, then sent again under the same webhook-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resends_a_success_only_with_force_under_the_same_webhook_id() {
    let (api, rx, _, path) = orders().await;
    let one = delivered(&api, &path, 1, 1).await[0].to_string();
    let retry = format!("{path}/deliveries/{one}/retry");
    expect(&api.op("POST", &retry, None).await, 409, Some("conflict"));
    expect(
        &api.op("POST", &format!("{retry}?force=true"), None).await,
        200,
        None,
    );
    let again = rx.wait_for(2, T).await.unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|r| r.header("webhook-id") == Some(one.as_str()))
            .count(),
        2
    );
}

/// Replay: a failing receiver's deliveries, sent again once it recovers;
/// a replay without a valid `since` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_a_failing_receivers_deliveries_and_names_its_refusals() {
    let api = Api::start().await;
    let flaky = api
        .env
        .receiver(by_attempt(|n| {
            if n == 1 {
                Reply::Status(500)
            } else {
                Reply::Status(200)
            }
        }))
        .await;
    let (_, w2) = created(
        &api,
        json!({"site_id": "example.com", "name": "flaky", "url": flaky.url("/"), "retry_schedule_secs": []}),
    )
    .await;
    let w2id = w2.rsplit('/').next().unwrap();
    api.env.enqueue(w2id.parse().unwrap(), 2).await;
    api.env
        .wait_until(
            "SELECT count(*) = 2 FROM webhook_deliveries WHERE status = 'failed'",
            T,
        )
        .await;
    let replay = format!("/api/webhooks/{w2id}/replay");
    expect(
        &api.op("POST", &replay, Some(json!({"since": "whenever"})))
            .await,
        422,
        Some("syntax"),
    );
    expect(
        &api.op("POST", &replay, Some(json!({}))).await,
        422,
        Some("required"),
    );
    let dry = api
        .op(
            "POST",
            &replay,
            Some(json!({"since": "1h", "dry_run": true})),
        )
        .await;
    assert_eq!(dry.json()["count"], 2, "{}", dry.text);
    let r = api.op("POST", &replay, Some(json!({"since": "1h"}))).await;
    expect(&r, 200, None);
    assert_eq!(r.json()["count"], 2);
    api.env
        .wait_until(
            "SELECT count(*) = 0 FROM webhook_deliveries WHERE status <> 'success'",
            T,
        )
        .await;
}

/// Triggers: added, listed beside the one made with the webhook, and removed
/// through their own webhook only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_are_added_listed_and_removed_through_their_own_webhook_only() {
    let (api, rx, _, path) = orders().await;
    let other = webhook_at(&api, "example.com", &rx.url("/other")).await;
    let tr = api
        .op(
            "POST",
            &format!("{path}/triggers"),
            Some(json!({"type": "visitor_spike", "threshold": 50})),
        )
        .await;
    expect(&tr, 201, None);
    let tid = tr.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.op("GET", &format!("{path}/triggers"), None)
            .await
            .json()["triggers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    expect(
        &api.op("DELETE", &format!("{other}/triggers/{tid}"), None)
            .await,
        404,
        Some("not_found"),
    );
    expect(
        &api.op("DELETE", &format!("{path}/triggers/{tid}"), None)
            .await,
        200,
        None,
    );
}

/// A trigger of an unknown type, or a setting out of range, is refused by
/// rule (and field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trigger_refusal_names_the_rule() {
    let (api, _rx, _, path) = orders().await;
    expect(
        &api.op(
            "POST",
            &format!("{path}/triggers"),
            Some(json!({"type": "sometimes"})),
        )
        .await,
        422,
        Some("syntax"),
    );
    let a = api
        .op(
            "POST",
            &format!("{path}/triggers"),
            Some(json!({"type": "drop", "threshold": 5, "window_secs": 1})),
        )
        .await;
    expect(&a, 422, Some("out_of_range"));
    assert_eq!(a.json()["error"]["field"], "window_secs", "{}", a.text);
}

/// Secret rotation: a new secret, the old one signing beside it for the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_secret_answers_a_new_secret_and_when_the_old_one_expires() {
    let (api, _rx, c, path) = orders().await;
    let rot = api
        .op(
            "POST",
            &format!("{path}/rotate-secret"),
            Some(json!({"grace_secs": 3600})),
        )
        .await;
    expect(&rot, 200, None);
    assert_ne!(rot.json()["secret"], c["secret"]);
    assert!(rot.json()["previous_secret_expires_at"].is_string());
}

/// Disable, enable: a disabled webhook's deliveries are not retried, even
/// with force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_refuses_a_forced_retry_until_enabled() {
    let (api, _rx, _, path) = orders().await;
    let one = delivered(&api, &path, 1, 1).await[0];
    let off = api
        .op(
            "PATCH",
            &path,
            Some(json!({"enabled": false, "disabled_reason": "maintenance"})),
        )
        .await;
    expect(&off, 200, None);
    assert_eq!(off.json()["status"], "disabled");
    expect(
        &api.op(
            "POST",
            &format!("{path}/deliveries/{one}/retry?force=true"),
            None,
        )
        .await,
        409,
        Some("conflict"),
    );
    expect(
        &api.op("PATCH", &path, Some(json!({"enabled": true}))).await,
        200,
        None,
    );
}

/// Delete (soft): listed apart, refused for changes, restored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhook_is_listed_apart_refuses_changes_and_is_restored_once() {
    let (api, rx, _, path) = orders().await;
    webhook_at(&api, "example.com", &rx.url("/other")).await;
    let del = api.op("DELETE", &path, None).await;
    expect(&del, 200, None);
    assert!(del.json()["purge_after"].is_string());
    assert_eq!(operator_lists(&api, "/api/webhooks").await, 1);
    assert_eq!(
        operator_lists(&api, "/api/webhooks?include_deleted=true").await,
        2
    );
    expect(
        &api.op("PATCH", &path, Some(json!({"name": "x"}))).await,
        409,
        Some("conflict"),
    );
    expect(
        &api.op("POST", &format!("{path}/restore"), None).await,
        200,
        None,
    );
    expect(
        &api.op("POST", &format!("{path}/restore"), None).await,
        409,
        Some("conflict"),
    );
}

/// A webhook on example.com (by the operator) and its owner's key, legacy
/// (no team) or bound to the site's team; returns (webhook path, key, team).
async fn owned_webhook(api: &Api, bound: bool) -> (String, String, i64) {
    let db = &api.env.db;
    let team = team_of(db, api.env.site_id).await;
    let (u, key) = user_with_key(db, "owner@a.test", bound.then_some(team)).await;
    member(db, u, team, "owner").await;
    let rx = api.env.receiver(always(200)).await;
    let created = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "ops", "url": rx.url("/hook")})),
        )
        .await;
    expect(&created, 201, None);
    let id = created.json()["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (format!("/api/webhooks/{id}"), key, team)
}

async fn listed(api: &Api, key: &str) -> usize {
    let a = api.call("GET", "/api/webhooks", Some(key), None).await;
    expect(&a, 200, None);
    a.json()["webhooks"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_key_is_refused_on_a_set_up_teams_site() {
    let api = Api::start().await;
    let (path, legacy, team) = owned_webhook(&api, false).await;
    let db = &api.env.db;
    // A personal "My Team" (not set up): a team-less key still works, as in Plausible.
    expect(
        &api.call("GET", &path, Some(&legacy), None).await,
        200,
        None,
    );
    db.execute(
        "UPDATE teams SET setup_complete = true, setup_at = now() WHERE id = $1",
        &[&team],
    )
    .await
    .unwrap();
    let a = api.call("GET", &path, Some(&legacy), None).await;
    expect(&a, 401, Some("invalid_api_key"));
    assert!(a.text.contains("belongs to no team"), "{}", a.text);
    assert_eq!(listed(&api, &legacy).await, 0);
    // A key of that team, of the same user, is fine.
    let bound = format!("bound-{}", uuid::Uuid::new_v4().simple());
    db.execute(
        "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
         SELECT user_id, $1, 'k', 'xxxxxx', $2, '{stats:read:*}', now(), now() FROM api_keys LIMIT 1",
        &[&team, &plausible_key_hash(SKB, &bound)],
    )
    .await
    .unwrap();
    expect(&api.call("GET", &path, Some(&bound), None).await, 200, None);
    assert_eq!(listed(&api, &bound).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_site_is_refused_but_not_to_operators() {
    let api = Api::start().await;
    let (path, key, _) = owned_webhook(&api, true).await;
    api.env
        .db
        .execute(
            "UPDATE sites SET locked = true WHERE id = $1",
            &[&api.env.site_id],
        )
        .await
        .unwrap();
    let a = api.call("GET", &path, Some(&key), None).await;
    expect(&a, 402, Some("site_locked"));
    assert!(
        a.text.contains("This Plausible site is locked"),
        "{}",
        a.text
    );
    assert_eq!(listed(&api, &key).await, 0);
    expect(&api.op("GET", &path, None).await, 200, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_teams_sites_are_refused() {
    let api = Api::start().await;
    let (path, key, team) = owned_webhook(&api, true).await;
    api.env
        .db
        .execute("UPDATE teams SET locked = true WHERE id = $1", &[&team])
        .await
        .unwrap();
    expect(
        &api.call("PATCH", &path, Some(&key), Some(json!({"name": "x"})))
            .await,
        402,
        Some("site_locked"),
    );
    assert_eq!(listed(&api, &key).await, 0);
    // The operator still sees it, and why its triggers are paused.
    let t = api
        .op(
            "POST",
            &format!("{path}/triggers"),
            Some(json!({"type": "visitor_spike"})),
        )
        .await;
    expect(&t, 201, None);
    let t = api.op("GET", &format!("{path}/triggers"), None).await;
    expect(&t, 200, None);
    assert_eq!(
        t.json()["triggers"][0]["paused_reason"],
        "team locked",
        "{}",
        t.text
    );
    api.env
        .db
        .execute("UPDATE teams SET locked = false WHERE id = $1", &[&team])
        .await
        .unwrap();
    expect(&api.call("GET", &path, Some(&key), None).await, 200, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_found_by_its_domain_or_its_former_domain() {
    let api = Api::start().await;
    let (_, key, _) = owned_webhook(&api, true).await;
    api.env
        .db
        .execute(
            "UPDATE sites SET domain = 'new.example.com', domain_changed_from = 'example.com',
                              domain_changed_at = now(), updated_at = now() WHERE id = $1",
            &[&api.env.site_id],
        )
        .await
        .unwrap();
    let rx = api.env.receiver(always(200)).await;
    for site in ["example.com", "new.example.com"] {
        let a = api
            .call(
                "POST",
                "/api/webhooks",
                Some(&key),
                Some(json!({"site_id": site, "name": site, "url": rx.url("/hook")})),
            )
            .await;
        expect(&a, 201, None);
        assert_eq!(
            a.json()["webhook"]["site_id"],
            "new.example.com",
            "{}",
            a.text
        );
        let a = api
            .call(
                "GET",
                &format!("/api/webhooks?site_id={site}"),
                Some(&key),
                None,
            )
            .await;
        expect(&a, 200, None);
    }
    assert_eq!(listed(&api, &key).await, 3);
}

/// A webhook for `url` on `site`, made by the operator; returns its API path.
async fn webhook_at(api: &Api, site: &str, url: &str) -> String {
    created(api, json!({"site_id": site, "name": "t", "url": url}))
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_hanging_tests_do_not_delay_anothers() {
    // A request timeout long enough that A's tests are surely still hanging
    // while B's runs (the lease must exceed it).
    let api = Api::start_with(&[
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "8000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "12"),
    ])
    .await;
    let db = &api.env.db;
    let site_a = api.env.site_id;
    let site_b = plausible_webhooks::testkit::create_site(db, "other.example")
        .await
        .unwrap();
    let (ua, key_a) = user_with_key(db, "a@a.test", None).await;
    member(db, ua, team_of(db, site_a).await, "owner").await;
    let (ub, key_b) = user_with_key(db, "b@b.test", None).await;
    member(db, ub, team_of(db, site_b).await, "owner").await;
    let hang = api.env.receiver(std::sync::Arc::new(|_| Reply::Hang)).await;
    let healthy = api.env.receiver(always(200)).await;
    let wa = webhook_at(&api, "example.com", &hang.url("/hang")).await;
    let wb = webhook_at(&api, "other.example", &healthy.url("/ok")).await;

    // A fires as many tests as a user may run at once; all reach the receiver and hang.
    let per_user = plausible_webhooks::admin::test_slots::DEFAULT_PER_USER;
    let url = format!("{}{wa}/test", api.base);
    let hanging: Vec<_> = (0..per_user)
        .map(|_| {
            let (url, key) = (url.clone(), key_a.clone());
            tokio::spawn(async move { request("POST", &url, Some(&key), None).await })
        })
        .collect();
    hang.wait_for(per_user, T).await.unwrap();
    assert!(
        hanging.iter().all(|h| !h.is_finished()),
        "A's tests reached the receiver one after another, not at once"
    );

    // One more from A is refused at once, saying when to try again.
    let excess = api
        .call("POST", &format!("{wa}/test"), Some(&key_a), None)
        .await;
    expect(&excess, 429, Some("too_many_tests"));
    let retry_after: u64 = excess
        .retry_after
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!((1..=8).contains(&retry_after), "{retry_after}");
    assert_eq!(hang.count(), per_user, "the refused test was not sent");

    // B's test to a healthy receiver answers while A's still hang.
    let b = api
        .call("POST", &format!("{wb}/test"), Some(&key_b), None)
        .await;
    expect(&b, 200, None);
    assert_eq!(b.json()["success"], json!(true), "{}", b.text);
    assert!(
        hanging.iter().all(|h| !h.is_finished()),
        "B's test waited until A's hanging tests had ended"
    );

    // A's end with the request timeout, named as such.
    for h in hanging {
        let a = h.await.unwrap().unwrap();
        expect(&a, 200, None);
        assert_eq!(a.json()["cause"], "timeout", "{}", a.text);
        // The attempt is logged with its kind, shown by the delivery's view.
        let id = a.json()["delivery_id"].as_str().unwrap().to_string();
        let d = api
            .call("GET", &format!("{wa}/deliveries/{id}"), Some(&key_a), None)
            .await;
        expect(&d, 200, None);
        assert_eq!(
            d.json()["attempt_log"][0]["error_kind"],
            "timeout",
            "{}",
            d.text
        );
    }
}

/// `plausible-webhooks --json <args>` against the API's database: its exit
/// status and stdout parsed.
async fn cli_json(api: &Api, args: &[&str]) -> (bool, Value) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
    cmd.env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .env_remove("RUST_LOG")
        .envs(api.env.daemon_env())
        .arg("--json")
        .args(args)
        .stdin(std::process::Stdio::null());
    let o = cmd.output().await.expect("running the binary");
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.success(), v)
}

/// One vocabulary (issue 15 point 10): for the same data the CLI's `--json`
/// prints exactly the API's body — lists under their resource's name, one
/// webhook with its triggers, a page of deliveries with its cursor, and a
/// refusal as `{"error": {"code", "message", "field"}}`; a site is `site_id`
/// (its domain, as in the envelope) and `plausible_site_id` (its number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_json_and_the_api_print_the_same_bodies() {
    let api = Api::start().await;
    let c = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "same", "url": "https://hooks.example.net/same",
                        "headers": {"X-Env": "prod"}, "triggers": [{"type": "goal_completion"}]})),
        )
        .await;
    expect(&c, 201, None);
    let w = c.json()["webhook"].clone();
    assert_eq!(
        (w["site_id"].as_str(), w["plausible_site_id"].as_i64()),
        (Some("example.com"), Some(api.env.site_id)),
        "{w}"
    );
    assert!(w.get("site").is_none(), "{w}");
    let id = w["id"].as_str().unwrap().to_string();
    // Finished deliveries: nothing the running daemon changes meanwhile.
    api.env
        .db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, status, attempts, finished_at, last_error, inserted_at)
             SELECT $1::text::uuid, 'goal_completion', jsonb_build_object('n', i), 'failed', 1, now(), 'HTTP 503',
                    now() - make_interval(secs => i)
             FROM generate_series(1, 3) i",
            &[&id],
        )
        .await
        .unwrap();

    let same = |cli: Value, api_body: Value, what: &str| {
        assert_eq!(
            cli, api_body,
            "{what}: the CLI's --json differs from the API's body"
        );
    };
    let api_list = api.op("GET", "/api/webhooks", None).await.json();
    assert_eq!(
        api_list["webhooks"].as_array().unwrap().len(),
        1,
        "{api_list}"
    );
    same(cli_json(&api, &["list"]).await.1, api_list, "list");
    same(
        cli_json(&api, &["list", "--site", "example.com"]).await.1,
        api.op("GET", "/api/webhooks?site_id=example.com", None)
            .await
            .json(),
        "list of a site",
    );
    same(
        cli_json(&api, &["show", &id]).await.1,
        api.op("GET", &format!("/api/webhooks/{id}"), None)
            .await
            .json(),
        "show",
    );
    let api_triggers = api
        .op("GET", &format!("/api/webhooks/{id}/triggers"), None)
        .await
        .json();
    assert_eq!(api_triggers["triggers"].as_array().unwrap().len(), 1);
    // A goal trigger has no cooldown (it fires per completion): null, as
    // the CLI's table shows `-` (issue 26).
    assert!(
        api_triggers["triggers"][0]["cooldown_secs"].is_null(),
        "{api_triggers}"
    );
    same(
        cli_json(&api, &["triggers", "list", &id]).await.1,
        api_triggers,
        "triggers list",
    );
    let api_page = api
        .op(
            "GET",
            &format!("/api/webhooks/{id}/deliveries?limit=2"),
            None,
        )
        .await
        .json();
    assert_eq!(
        api_page["deliveries"].as_array().unwrap().len(),
        2,
        "{api_page}"
    );
    let cursor = api_page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    same(
        cli_json(
            &api,
            &["deliveries", "list", "--webhook", &id, "--limit", "2"],
        )
        .await
        .1,
        api_page,
        "deliveries list",
    );
    let api_last = api
        .op(
            "GET",
            &format!("/api/webhooks/{id}/deliveries?limit=2&cursor={cursor}"),
            None,
        )
        .await
        .json();
    assert_eq!(api_last["deliveries"].as_array().unwrap().len(), 1);
    assert!(api_last["next_cursor"].is_null(), "{api_last}");
    same(
        cli_json(
            &api,
            &[
                "deliveries",
                "list",
                "--webhook",
                &id,
                "--limit",
                "2",
                "--cursor",
                &cursor,
            ],
        )
        .await
        .1,
        api_last,
        "deliveries list, next page",
    );

    // `status`, the CLI's own list, is a list under its name too, in the same names.
    let (ok, st) = cli_json(&api, &["status"]).await;
    assert!(ok, "{st}");
    let row = &st["status"][0];
    assert_eq!(
        (
            row["webhook_id"].as_str(),
            row["site_id"].as_str(),
            row["plausible_site_id"].as_i64(),
            row["status"].as_str(),
        ),
        (
            Some(id.as_str()),
            Some("example.com"),
            Some(api.env.site_id),
            Some("active")
        ),
        "{st}"
    );

    // Refusals: one body, the rule as `code`, the field by its JSON name.
    let a = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "x", "url": "http://plain.example/"})),
        )
        .await;
    expect(&a, 422, Some("https_required"));
    let (ok, cli) = cli_json(
        &api,
        &[
            "create",
            "--site",
            "example.com",
            "--name",
            "x",
            "--url",
            "http://plain.example/",
        ],
    )
    .await;
    assert!(!ok);
    same(cli, a.json(), "an invalid url");
    let a = api
        .op(
            "POST",
            &format!("/api/webhooks/{id}/triggers"),
            Some(json!({"type": "traffic_drop", "window_secs": 30})),
        )
        .await;
    expect(&a, 422, Some("out_of_range"));
    assert_eq!(a.json()["error"]["field"], "window_secs");
    let (ok, cli) = cli_json(&api, &["triggers", "add", &id, "drop", "--window", "30s"]).await;
    assert!(!ok);
    same(cli, a.json(), "a window out of range");
    let (ok, cli) = cli_json(&api, &["show", "00000000-0000-0000-0000-000000000000"]).await;
    assert!(!ok);
    assert_eq!(cli["error"]["code"], "not_found", "{cli}");

    // The old input name still works this release, and says so.
    let old = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site": "example.com", "name": "old", "url": "https://hooks.example.net/old"})),
        )
        .await;
    expect(&old, 201, None);
    assert_eq!(old.json()["webhook"]["site_id"], "example.com");
    assert!(
        old.json()["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("`site` is deprecated")),
        "{}",
        old.text
    );
    let both = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site": "example.com", "site_id": "example.com", "name": "x", "url": "https://hooks.example.net/x"})),
        )
        .await;
    expect(&both, 422, Some("duplicate"));
    // A refusal blames the site by the name the client wrote.
    for (q, field) in [("site_id", "site_id"), ("site", "site")] {
        let a = api
            .op("GET", &format!("/api/webhooks?{q}=exa%00mple.com"), None)
            .await;
        expect(&a, 422, Some("encoding"));
        assert_eq!(a.json()["error"]["field"], field, "{}", a.text);
    }
    assert_eq!(
        api.op("GET", "/api/webhooks?site=example.com", None)
            .await
            .json()["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Subscriptions by event type (issue 23): an event a host publishes with
/// `webhook_enqueue` reaches exactly the enabled, undeleted webhooks of its
/// site subscribed to its type (by name, `site.*` or `*`), once per
/// idempotency key; triggers subscribe their webhook to what they make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_exactly_the_subscribed_webhooks() {
    let api = Api::start().await;
    let rx = api.env.receiver(always(200)).await;
    let other_site = plausible_webhooks::testkit::create_site(&api.env.db, "other.example")
        .await
        .unwrap();
    let mut paths = std::collections::HashMap::new();
    for (name, site, body) in [
        ("prefix", "example.com", json!({"events": ["site.*"]})),
        ("all", "example.com", json!({"events": "*"})),
        (
            "exact",
            "example.com",
            json!({"events": "site.tracking_stopped, plausible.other"}),
        ),
        (
            "goals",
            "example.com",
            json!({"triggers": [{"type": "goal_completion"}]}),
        ),
        ("disabled", "example.com", json!({"events": ["site.*"]})),
        ("deleted", "example.com", json!({"events": ["*"]})),
        ("elsewhere", "other.example", json!({"events": ["*"]})),
    ] {
        let mut b = body.clone();
        b["site_id"] = json!(site);
        b["name"] = json!(name);
        b["url"] = json!(rx.url(&format!("/{name}")));
        let (c, path) = created(&api, b).await;
        paths.insert(
            name,
            (c["webhook"]["id"].as_str().unwrap().to_string(), path),
        );
    }
    let goals = &paths["goals"];
    let shown = api.op("GET", &goals.1, None).await.json();
    assert_eq!(
        shown["webhook"]["events"],
        json!(["goal_completion"]),
        "its trigger subscribed it"
    );
    // Deleted first: the disable then tells `all` (webhook.disabled, an
    // operational event its `*` takes), not the deleted one.
    expect(
        &api.op("DELETE", &paths["deleted"].1, None).await,
        200,
        None,
    );
    let a = api
        .op(
            "PATCH",
            &paths["disabled"].1,
            Some(json!({"enabled": false})),
        )
        .await;
    expect(&a, 200, None);

    let publish = |ty: &'static str, key: Option<&'static str>, site: i64| {
        let db = &api.env.db;
        async move {
            db.query_one(
                "SELECT count(*) FROM webhook_enqueue($1, $2, '{\"n\": 1}', $3)",
                &[&site, &ty, &key],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let site = api.env.site_id;
    assert_eq!(
        publish("site.created", Some("k1"), site).await,
        2,
        "prefix and all"
    );
    assert_eq!(
        publish("site.created", Some("k1"), site).await,
        0,
        "the same key again: nothing"
    );
    assert_eq!(
        publish("site.tracking_stopped", None, site).await,
        3,
        "prefix, all, exact"
    );
    assert_eq!(
        publish("goal_completion", None, site).await,
        2,
        "all and goals"
    );
    assert_eq!(
        publish("sites.created", None, site).await,
        1,
        "`site.*` is not a bare prefix"
    );
    assert_eq!(
        publish("site.created", None, other_site).await,
        1,
        "only the other site's"
    );
    // A type outside the format is refused, saying what to do; nothing is queued.
    let e = api
        .env
        .db
        .query_one(
            "SELECT count(*) FROM webhook_enqueue($1, 'Site..Created', '{}')",
            &[&site],
        )
        .await
        .unwrap_err();
    let e = e.as_db_error().unwrap();
    assert_eq!(e.code().code(), "22023");
    assert!(
        e.message().contains("'Site..Created' is not an event type"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("dot-separated words"), "{e}");
    let seen = rx.wait_for(10, T).await.unwrap();
    api.env
        .wait_until(
            "SELECT count(*) = 10 FROM webhook_deliveries WHERE status = 'success'",
            T,
        )
        .await;
    let mut got: Vec<String> = seen
        .iter()
        .map(|r| format!("{} {}", r.path, r.json()["event"].as_str().unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "/all goal_completion",
            "/all site.created",
            "/all site.tracking_stopped",
            "/all sites.created",
            "/all webhook.disabled",
            "/elsewhere site.created",
            "/exact site.tracking_stopped",
            "/goals goal_completion",
            "/prefix site.created",
            "/prefix site.tracking_stopped",
        ]
    );
    // The disabled and deleted webhooks were not even queued for.
    for name in ["disabled", "deleted"] {
        let n = api
            .env
            .count(&format!(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = '{}'",
                paths[name].0
            ))
            .await;
        assert_eq!(n, 0, "{name}");
    }
}

/// Subscriptions are changed by adding, dropping or replacing them; what a
/// webhook's triggers make stays, and a malformed one is refused by rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_change_by_rule_and_keep_what_triggers_make() {
    let (api, _rx, _, path) = orders().await;
    let patch = |body: Value| api.op("PATCH", &path, Some(body));
    let a = patch(json!({"subscribe": ["site.*", "plausible.site_created"]})).await;
    expect(&a, 200, None);
    assert_eq!(
        a.json()["events"],
        json!(["goal_completion", "site.*", "plausible.site_created"])
    );
    let a = patch(json!({"unsubscribe": "site.*"})).await;
    assert_eq!(
        a.json()["events"],
        json!(["goal_completion", "plausible.site_created"])
    );
    let a = patch(json!({"events": []})).await;
    expect(&a, 422, Some("required"));
    assert_eq!(a.json()["error"]["field"], "events", "{}", a.text);
    assert!(a.text.contains("goal_completion"), "{}", a.text);
    for bad in ["Site.Created", "site.*.x", "a..b", "site*"] {
        let a = patch(json!({"subscribe": [bad]})).await;
        expect(&a, 422, Some("syntax"));
        assert_eq!(a.json()["error"]["field"], "events", "{}", a.text);
    }
    // Removing the trigger frees its type.
    let t = api
        .op("GET", &format!("{path}/triggers"), None)
        .await
        .json();
    let tid = t["triggers"][0]["id"].as_str().unwrap().to_string();
    expect(
        &api.op("DELETE", &format!("{path}/triggers/{tid}"), None)
            .await,
        200,
        None,
    );
    let a = patch(json!({"events": "plausible.site_created"})).await;
    expect(&a, 200, None);
    assert_eq!(a.json()["events"], json!(["plausible.site_created"]));

    // The catalog, for any caller signed in.
    let (_, key) = user_with_key(&api.env.db, "reader@example.com", None).await;
    let c = api.call("GET", "/api/event-types", Some(&key), None).await;
    expect(&c, 200, None);
    let list = c.json();
    let names: Vec<&str> = list["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in ["goal_completion", "visitor_spike", "traffic_drop", "test"] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    assert_eq!(list["event_types"][0]["schema"]["type"], "object");
    expect(
        &api.call("GET", "/api/event-types", None, None).await,
        401,
        None,
    );
}

/// A custom-event trigger by API: its name, props and mode are stored and
/// shown as given, its webhook subscribes to what it makes, and every
/// setting that does not fit its type is refused by field and rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_event_trigger_is_added_with_props_and_a_mode_and_refused_by_rule() {
    let (api, _rx, _, path) = orders().await;
    let add = |body: Value| {
        let api = &api;
        let path = path.clone();
        async move {
            api.op("POST", &format!("{path}/triggers"), Some(body))
                .await
        }
    };
    let a = add(
        json!({"type": "custom_event", "event_name": "Trial Started", "props": {"plan": "pro"}}),
    )
    .await;
    expect(&a, 201, None);
    let t = a.json();
    assert_eq!(t["trigger_type"], "custom_event");
    assert_eq!(t["event_name"], "Trial Started");
    assert_eq!(t["props"], json!({"plan": "pro"}));
    assert_eq!(
        (t["mode"].as_str(), t["event_type"].as_str()),
        (Some("each"), Some("custom_event"))
    );
    // `event` for the name, props as key=value lines (a form's), a digest.
    let a = add(json!({"type": "event", "event": "Download", "props": "kind=pdf\nlang = en", "mode": "digest", "window_secs": "15m"})).await;
    expect(&a, 201, None);
    let t = a.json();
    assert_eq!(t["props"], json!({"kind": "pdf", "lang": "en"}));
    assert_eq!(
        (t["event_type"].as_str(), t["window_secs"].as_i64()),
        (Some("custom_event_digest"), Some(900))
    );
    let goal_digest = add(json!({"type": "goal", "mode": "digest"})).await;
    expect(&goal_digest, 201, None);
    assert_eq!(goal_digest.json()["event_type"], "goal_completion_digest");
    let w = api.op("GET", &path, None).await.json();
    let events: Vec<&str> = w["webhook"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for e in [
        "custom_event",
        "custom_event_digest",
        "goal_completion_digest",
    ] {
        assert!(events.contains(&e), "{e} in {events:?}");
    }
    // Refusals, each naming its field and rule; nothing written.
    for (body, field, rule) in [
        (json!({"type": "custom_event"}), "event_name", "required"),
        (
            json!({"type": "custom_event", "event_name": "  "}),
            "event_name",
            "required",
        ),
        (
            json!({"type": "custom_event", "event_name": "pageview"}),
            "event_name",
            "not_applicable",
        ),
        (
            json!({"type": "custom_event", "event_name": "x".repeat(121)}),
            "event_name",
            "syntax",
        ),
        (
            json!({"type": "custom_event", "event_name": "a\u{7}b"}),
            "event_name",
            "syntax",
        ),
        (
            json!({"type": "custom_event", "event_name": "Buy", "threshold": 5}),
            "threshold",
            "not_applicable",
        ),
        (
            json!({"type": "custom_event", "event_name": "Buy", "window_secs": 300}),
            "window_secs",
            "not_applicable",
        ),
        (
            json!({"type": "custom_event", "event_name": "Buy", "mode": "sometimes"}),
            "mode",
            "syntax",
        ),
        (
            json!({"type": "custom_event", "event_name": "Buy", "goal": "Signup"}),
            "goal",
            "not_applicable",
        ),
        (
            json!({"type": "custom_event", "event_name": "Buy", "props": {"": "x"}}),
            "props",
            "syntax",
        ),
        (
            json!({"type": "goal", "event_name": "Buy"}),
            "event_name",
            "not_applicable",
        ),
        (
            json!({"type": "goal", "props": {"plan": "pro"}}),
            "props",
            "not_applicable",
        ),
        (
            json!({"type": "spike", "mode": "digest"}),
            "mode",
            "not_applicable",
        ),
        (
            json!({"type": "custom_event", "event_name": "Buy", "mode": "digest", "window_secs": 30}),
            "window_secs",
            "out_of_range",
        ),
    ] {
        let a = add(body.clone()).await;
        expect(&a, 422, Some(rule));
        assert_eq!(a.json()["error"]["field"], field, "{body}: {}", a.text);
    }
    let a = add(json!({"type": "custom_event", "event_name": "Buy", "props": "plan"})).await;
    assert_eq!(a.status, 422, "a prop without = : {}", a.text);
    assert!(a.text.contains("key=value"), "{}", a.text);
    let listed = api
        .op("GET", &format!("{path}/triggers"), None)
        .await
        .json();
    assert_eq!(
        listed["triggers"].as_array().unwrap().len(),
        4,
        "the order's goal trigger and the three above"
    );
}

/// A viewer reads a webhook's receiver by its host only, in the list and
/// alone (a path or query often holds a credential: a Slack-style
/// `/services/…/secret`); who may manage the webhook reads it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_the_receivers_host_only() {
    let api = Api::start().await;
    let db = &api.env.db;
    let team = team_of(db, api.env.site_id).await;
    let (viewer, viewer_key) = user_with_key(db, "viewer@example.com", None).await;
    member(db, viewer, team, "viewer").await;
    let (editor, editor_key) = user_with_key(db, "editor@example.com", None).await;
    member(db, editor, team, "editor").await;
    let url =
        "https://hooks.example.net:8443/services/T000/B000/secret-path-token?sig=secret-query";
    let c = api
        .op(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "w", "url": url})),
        )
        .await;
    expect(&c, 201, None);
    let id = c.json()["webhook"]["id"].as_str().unwrap().to_string();
    for (key, seen) in [
        (&viewer_key, "https://hooks.example.net:8443/…"),
        (&editor_key, url),
    ] {
        let one = api
            .call("GET", &format!("/api/webhooks/{id}"), Some(key), None)
            .await;
        expect(&one, 200, None);
        assert_eq!(one.json()["webhook"]["url"], seen, "{}", one.text);
        let list = api
            .call("GET", "/api/webhooks?site_id=example.com", Some(key), None)
            .await;
        expect(&list, 200, None);
        assert_eq!(list.json()["webhooks"][0]["url"], seen, "{}", list.text);
        if seen != url {
            assert!(
                [&one.text, &list.text]
                    .iter()
                    .all(|t| !t.contains("secret-path-token") && !t.contains("secret-query")),
                "{}\n{}",
                one.text,
                list.text
            );
        }
    }
}
