//! The web page for site owners, in a real browser (Chromium over
//! WebDriver) against the daemon binary, signed in as Plausible signs its
//! users in: a `_plausible_key` cookie minted by Erlang's own
//! `term_to_binary` and `crypto` (not by the daemon's decoder) and a
//! `user_sessions` row as Plausible writes it. Screenshots of the main
//! pages, at desktop and phone width, go to target/web-screenshots/.

#[path = "web/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::{Browser, PHONE_WIDTH};
use common::http::{free_port, request, wait_status};
use common::{DaemonProcess, Env};
use plausible_webhooks::admin::auth::plausible_key_hash;
use plausible_webhooks::testkit::receiver::{Receiver, Reply};

const T: Duration = Duration::from_secs(30);
/// Plausible's SECRET_KEY_BASE in these tests (at least 64 bytes, as Plug wants).
const SKB: &str = "web-page-tests-secret-key-base-0123456789abcdefghijklmnopqrstuvwxyzABCDEF";
const SALT: &str = "I45i0SKHEku2f3tJh6y4v8gztrb/eG5KGCOe/o/AwFb7VHeuvDOn7AAq6KsdmOFM";

/// Mints Plausible's session cookie as Plausible (Plug) does, with Erlang's
/// own `term_to_binary`, `crypto:pbkdf2_hmac` and `crypto:mac`.
fn mint(skb: &str, salt: &str, token: &[u8; 32]) -> String {
    const ERL: &str = r#"
[Skb, Salt, Hex] = [list_to_binary(A) || A <- init:get_plain_arguments()],
B64u = fun(B) -> << <<(case C of $+ -> $-; $/ -> $_; _ -> C end)>> || <<C>> <= base64:encode(B), C =/= $= >> end,
B64uPad = fun(B) -> << <<(case C of $+ -> $-; $/ -> $_; _ -> C end)>> || <<C>> <= base64:encode(B) >> end,
Token = binary:decode_hex(Hex),
32 = byte_size(Token),
Key = crypto:pbkdf2_hmac(sha256, Skb, Salt, 1000, 32),
Session = #{<<"user_token">> => Token, <<"live_socket_id">> => <<"user_sessions:", (B64uPad(Token))/binary>>},
Plain = <<"SFMyNTY.", (B64u(term_to_binary(Session)))/binary>>,
Sig = crypto:mac(hmac, sha256, Key, Plain),
io:format("~s.~s~n", [Plain, B64u(Sig)]),
halt()."#;
    assert!(
        std::path::Path::new("/usr/bin/erl").exists(),
        "/usr/bin/erl is missing: apt-get install -y erlang-base erlang-crypto (scripts/test, the README's test command, installs it)"
    );
    let out = std::process::Command::new("erl")
        .args([
            "-noshell",
            "-eval",
            ERL,
            "-extra",
            skb,
            salt,
            &hex::encode(token),
        ])
        .output()
        .expect("running erl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Kit {
    env: Env,
    /// `http://127.0.0.1:<port>`
    origin: String,
    /// `<origin>/webhooks`
    base: String,
    team: i64,
    _daemon: DaemonProcess,
}

impl Kit {
    async fn start() -> Kit {
        Kit::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> Kit {
        let env = Env::new().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let mut vars = vec![
            ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", listen.as_str()),
            ("SECRET_KEY_BASE", SKB),
            ("PLAUSIBLE_WEBHOOKS__WEB__ENABLED", "true"),
            (
                "PLAUSIBLE_WEBHOOKS__PLAUSIBLE__BASE_URL",
                "http://plausible.invalid",
            ),
            ("PLAUSIBLE_WEBHOOKS__DELIVERY__RETRY_SCHEDULE_SECS", "[]"),
        ];
        vars.extend_from_slice(extra);
        let daemon = env.spawn_daemon(&vars);
        let origin = format!("http://{listen}");
        wait_status(&format!("{origin}/readyz"), 200, T).await;
        let team = env
            .db
            .query_one("SELECT team_id FROM sites WHERE id = $1", &[&env.site_id])
            .await
            .unwrap()
            .get(0);
        Kit {
            base: format!("{origin}/webhooks"),
            origin,
            env,
            team,
            _daemon: daemon,
        }
    }

    async fn one(&self, sql: &str, p: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.env.db.query_one(sql, p).await.unwrap().get(0)
    }

    /// A user with `role` in `team`.
    async fn user(&self, email: &str, team: i64, role: &str) -> i64 {
        let u = self
            .one(
                "INSERT INTO users (email, inserted_at, updated_at) VALUES ($1, now(), now()) RETURNING id",
                &[&email],
            )
            .await;
        self.one(
            "INSERT INTO team_memberships (user_id, team_id, role, inserted_at, updated_at)
             VALUES ($1, $2, $3, now(), now()) RETURNING id",
            &[&u, &team, &role],
        )
        .await;
        u
    }

    /// A `user_sessions` row for `user` as Plausible writes it (naive UTC,
    /// 14 days ahead) and the cookie that names it.
    async fn session(&self, user: i64) -> (String, [u8; 32]) {
        let token: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
        self.env
            .db
            .execute(
                "INSERT INTO user_sessions (user_id, token, device, last_used_at, timeout_at, inserted_at)
                 VALUES ($1, $2, 'Chrome (Linux)', now() AT TIME ZONE 'utc',
                         (now() AT TIME ZONE 'utc') + interval '14 days', now() AT TIME ZONE 'utc')",
                &[&user, &token.as_slice()],
            )
            .await
            .unwrap();
        (mint(SKB, SALT, &token), token)
    }

    /// A browser signed in as `user` by Plausible's cookie.
    async fn browser_as(&self, user: i64) -> Browser {
        self.signed_in(user, Browser::start().await).await
    }

    /// `b`, signed in as `user` by Plausible's cookie.
    async fn signed_in(&self, user: i64, b: Browser) -> Browser {
        let (cookie, _) = self.session(user).await;
        b.goto(&format!("{}/", self.base)).await;
        b.set_cookie("_plausible_key", &cookie).await;
        b.goto(&format!("{}/", self.base)).await;
        b
    }

    /// A webhook of example.com at `url`, made through the core as an operator.
    async fn webhook(&self, url: &str, triggers: &str) -> String {
        use plausible_webhooks::admin::{access::Principal, core::Admin, inputs::from_json};
        let admin = Admin::from_config(&self.env.config()).unwrap();
        let n = from_json(
            format!(r#"{{"site_id": "example.com", "name": "Orders", "url": "{url}", "triggers": {triggers}}}"#)
                .as_bytes(),
        )
        .unwrap();
        admin
            .create_webhook(&Principal::Operator, n)
            .await
            .unwrap()
            .webhook
            .id
            .to_string()
    }
}

/// A receiver whose status can be changed while it runs; its body says
/// `body`.
async fn receiver(env: &Env, status: Arc<AtomicU16>, body: &'static str) -> Receiver {
    env.receiver(Arc::new(move |_| Reply::Full {
        status: status.load(Ordering::SeqCst),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.as_bytes().to_vec(),
    }))
    .await
}

async fn screens(b: &Browser, name: &str) {
    b.screenshot(name, 1280).await;
    b.screenshot(&format!("{name}-phone"), PHONE_WIDTH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_by_plausible_an_owner_creates_a_webhook_tests_it_and_reads_why_it_failed() {
    let k = Kit::start().await;
    k.env
        .db
        .execute(
            "INSERT INTO goals (site_id, event_name, display_name, custom_props, inserted_at, updated_at)
             VALUES ($1, 'Signup', 'Signup', '{\"plan\": \"pro\"}', now(), now())",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let status = Arc::new(AtomicU16::new(503));
    let rx = receiver(&k.env, status.clone(), "upstream database unavailable").await;
    let b = k.browser_as(owner).await;
    assert!(b.text().await.contains("example.com"), "{}", b.text().await);
    assert!(b.text().await.contains("owner@example.com"));
    screens(&b, "home").await;
    b.click("a[href$='/sites/example.com']").await;
    b.click("a[href$='/sites/example.com/new']").await;
    assert!(
        b.text()
            .await
            .contains("Signup (event goal: Signup; plan = pro)"),
        "{}",
        b.text().await
    );
    screens(&b, "new-webhook").await;
    b.fill("#name", "Slack alerts").await;
    b.fill("#url", &rx.url("/hook")).await;
    b.fill("#spike-threshold", "0").await;
    b.el("input[value=spike]").await.click().await.unwrap();
    b.click("form button[type=submit]").await;
    // Every refusal at once, beside its field; nothing created.
    let t = b.text().await;
    assert!(t.contains("must be between 1 and 10000000"), "{t}");
    assert_eq!(k.env.count("SELECT count(*) FROM webhooks").await, 0);
    b.fill("#spike-threshold", "50").await;
    b.fill("#event-types", "site.*, plausible.site_created")
        .await;
    b.click("form button[type=submit]").await;
    let secret = b.el("#the-secret").await.text().await.unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    screens(&b, "secret").await;
    b.click("a.btn").await;
    b.click("#send-test").await;
    let t = b.text().await;
    assert!(t.contains("The receiver answered 503"), "{t}");
    assert!(
        t.contains("Cause: the receiver answered, but not with a 2xx status"),
        "{t}"
    );
    assert!(t.contains("upstream database unavailable"), "{t}");
    assert!(t.contains("What to do:"), "{t}");
    screens(&b, "webhook-test-failed").await;
    // The receiver fixed, the test passes.
    status.store(200, Ordering::SeqCst);
    b.click("#send-test").await;
    let t = b.text().await;
    assert!(
        t.contains("Test webhook: delivered") && t.contains("answered 200"),
        "{t}"
    );
    let tests = rx.wait_for(2, T).await.unwrap();
    assert!(tests.iter().all(|r| r.json()["event"] == "test"));
    let w = k.env.count("SELECT count(*) FROM webhook_triggers WHERE trigger_type = 'visitor_spike' AND threshold = 50").await;
    assert_eq!(w, 1);
    // What it receives: the types typed in, and what its trigger makes.
    let t = b.text().await;
    assert!(
        t.contains("site.*, plausible.site_created, goal_completion, visitor_spike"),
        "{t}"
    );
    // Edited: dropping the trigger's type is refused beside the field; the rest is saved.
    b.click("a[href$='/edit']").await;
    b.fill("#event-types", "site.*").await;
    b.click("form button[type=submit]").await;
    let t = b.text().await;
    assert!(
        t.contains("its triggers make goal_completion, visitor_spike"),
        "{t}"
    );
    screens(&b, "edit-events-refused").await;
    b.fill("#event-types", "site.*, goal_completion, visitor_spike")
        .await;
    b.click("form button[type=submit]").await;
    let t = b.text().await;
    assert!(
        t.contains("site.*, goal_completion, visitor_spike")
            && !t.contains("plausible.site_created"),
        "{t}"
    ); // A custom event, as a digest of 15 minutes, from the page's form.
    b.el("#t-type option[value=custom_event]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("#t-event", "Trial Started").await;
    b.fill("#t-props", "plan=pro").await;
    b.el("#t-mode option[value=digest]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("#t-window", "15m").await;
    b.click("form.add-trigger button[type=submit]").await;
    let t = b.text().await;
    assert!(
        t.contains("Custom event (digest)") && t.contains("event “Trial Started” with plan=pro"),
        "{t}"
    );
    assert!(t.contains("custom_event_digest"), "subscribed: {t}");
    screens(&b, "custom-event-digest-trigger").await;
}

/// The form's "Send a test event first" box: a receiver answering 500 gets
/// the create refused beside the URL with its status and words, nothing
/// created and the box still ticked; fixed, the same form creates the
/// webhook and the secret page says what the receiver answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_checks_the_receiver_first_when_asked_and_refuses_a_failing_one() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let status = Arc::new(AtomicU16::new(500));
    let rx = receiver(&k.env, status.clone(), "boom: database down").await;
    let b = k.browser_as(owner).await;
    b.goto(&format!("{}/sites/example.com/new", k.base)).await;
    b.fill("#name", "Checked").await;
    b.fill("#url", &rx.url("/hook")).await;
    b.el("input[name=check]").await.click().await.unwrap();
    b.click("form button[type=submit]").await;
    let t = b.text().await;
    assert!(
        t.contains("answered 500") && t.contains("boom: database down"),
        "{t}"
    );
    assert!(t.contains("Fix the receiver and try again"), "{t}");
    assert_eq!(rx.wait_for(1, T).await.unwrap().len(), 1);
    assert_eq!(k.env.count("SELECT count(*) FROM webhooks").await, 0);
    assert!(b.has("input[name=check]:checked").await);
    screens(&b, "create-check-refused").await;
    // The receiver fixed, the same form creates it.
    status.store(200, Ordering::SeqCst);
    b.click("form button[type=submit]").await;
    let t = b.text().await;
    assert!(
        t.contains("The receiver accepted the test event sent first: it answered 200"),
        "{t}"
    );
    assert!(b
        .el("#the-secret")
        .await
        .text()
        .await
        .unwrap()
        .starts_with("whsec_"));
    assert_eq!(k.env.count("SELECT count(*) FROM webhooks").await, 1);
    let seen = rx.wait_for(2, T).await.unwrap();
    assert!(seen.iter().all(|r| r.json()["event"] == "test"));
    screens(&b, "create-check-passed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_goal_completion_shows_its_attempts_and_a_failed_one_is_replayed() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let status = Arc::new(AtomicU16::new(500));
    let rx = receiver(&k.env, status.clone(), "try later").await;
    let id = k.webhook(&rx.url("/hook"), r#"["goal"]"#).await;
    k.env
        .db
        .execute(
            "SELECT webhook_enqueue($1, 'goal_completion', '{\"goal_name\": \"Signup\"}')",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    k.env
        .wait_until(
            "SELECT count(*) = 1 FROM webhook_deliveries WHERE status = 'failed'",
            T,
        )
        .await;
    let b = k.browser_as(owner).await;
    b.goto(&format!(
        "{}/webhooks/{id}/deliveries?status=failed",
        k.base
    ))
    .await;
    assert!(b.text().await.contains("goal_completion"));
    screens(&b, "delivery-log").await;
    b.click("table a").await;
    let t = b.text().await;
    assert!(t.contains("HTTP 500") || t.contains("http status"), "{t}");
    assert!(t.contains("try later"), "{t}");
    assert!(
        t.contains("webhook-timestamp") && !t.contains("webhook-signature"),
        "{t}"
    );
    screens(&b, "delivery").await;
    // Replay: the list first, then sent again on the same delivery id.
    status.store(200, Ordering::SeqCst);
    b.goto(&format!("{}/webhooks/{id}/deliveries", k.base))
        .await;
    b.click("form[action$='/replay'] button").await;
    assert!(
        b.text().await.contains("1 delivery would be sent again"),
        "{}",
        b.text().await
    );
    screens(&b, "replay").await;
    b.click("form[action$='/replay'] button[type=submit]").await;
    k.env
        .wait_until(
            "SELECT count(*) = 1 FROM webhook_deliveries WHERE status = 'success' AND attempts = 2",
            T,
        )
        .await;
    let got = rx.wait_for(2, T).await.unwrap();
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    b.goto(&format!("{}/webhooks/{id}", k.base)).await;
    assert!(
        b.text().await.contains("1 delivered, 1 failed") || b.text().await.contains("1 delivered"),
        "{}",
        b.text().await
    );
    screens(&b, "webhook").await;
}

/// POSTs a form to the page as a browser holding `cookie` would (from
/// `origin` when given); the answer's status.
async fn post_form(k: &Kit, path: &str, cookie: &str, body: &str, origin: Option<&str>) -> u16 {
    use http_body_util::Full;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::post(format!("{}{path}", k.base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = client
        .request(
            req.body(Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    r.status().as_u16()
}

/// The CSRF token in a page's forms.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"_csrf\" value=\"")
        .expect("a form with a token")
        + 20;
    page[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_button_and_a_forged_post_is_refused() {
    let k = Kit::start().await;
    let rx = receiver(&k.env, Arc::new(AtomicU16::new(200)), "ok").await;
    let id = k
        .webhook(&rx.url("/hook/secret-path-token"), r#"["goal"]"#)
        .await;
    let viewer = k.user("viewer@example.com", k.team, "viewer").await;
    let (viewer_cookie, _) = k.session(viewer).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/", k.base)).await;
    b.set_cookie("_plausible_key", &viewer_cookie).await;
    b.goto(&format!("{}/webhooks/{id}", k.base)).await;
    let t = b.text().await;
    assert!(t.contains("Orders"), "{t}");
    assert!(!b.has("#send-test").await && !b.has("form[action$='/state']").await);
    assert!(
        !b.c.source().await.unwrap().contains("name=\"_csrf\""),
        "no form that posts"
    );
    // A viewer sees the receiver's host, not its path (a credential).
    assert!(
        !t.contains("secret-path-token") && t.contains("127.0.0.1"),
        "{t}"
    );
    screens(&b, "viewer").await;
    // Posted anyway, with the viewer's own cookie: refused, nothing sent.
    let viewer_cookie = format!("_plausible_key={viewer_cookie}");
    let test = format!("/webhooks/{id}/test");
    assert_eq!(post_form(&k, &test, &viewer_cookie, "", None).await, 403);
    assert_eq!(
        post_form(&k, &test, &viewer_cookie, "_csrf=forged", None).await,
        403
    );
    assert_eq!(rx.count(), 0, "nothing was sent");
    // An owner's token from another site's page (a cross-site form) is
    // refused by its Origin; the same from this page is taken.
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let (owner_cookie, _) = k.session(owner).await;
    let o = Browser::start().await;
    o.goto(&format!("{}/", k.base)).await;
    o.set_cookie("_plausible_key", &owner_cookie).await;
    o.goto(&format!("{}/webhooks/{id}", k.base)).await;
    let token = csrf_of(&o.c.source().await.unwrap());
    let owner_cookie = format!("_plausible_key={owner_cookie}");
    let state = format!("/webhooks/{id}/state");
    let form = format!("to=disable&_csrf={token}");
    assert_eq!(
        post_form(&k, &state, &owner_cookie, "to=disable", None).await,
        403
    );
    assert_eq!(
        post_form(
            &k,
            &state,
            &owner_cookie,
            &form,
            Some("http://evil.example")
        )
        .await,
        403
    );
    assert_eq!(
        post_form(&k, &state, &viewer_cookie, &form, None).await,
        403,
        "another's token"
    );
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhooks WHERE NOT enabled")
            .await,
        0
    );
    assert_eq!(
        post_form(&k, &state, &owner_cookie, &form, Some(&k.origin)).await,
        303
    );
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhooks WHERE NOT enabled")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_another_team_sees_no_site() {
    let k = Kit::start().await;
    let id = k.webhook("https://hooks.example.net/x", "[]").await;
    let other = plausible_webhooks::testkit::create_site(&k.env.db, "theirs.example")
        .await
        .unwrap();
    let team: i64 = k
        .one("SELECT team_id FROM sites WHERE id = $1", &[&other])
        .await;
    let stranger = k.user("stranger@example.com", team, "owner").await;
    let b = k.browser_as(stranger).await;
    assert!(b.text().await.contains("theirs.example"));
    assert!(!b.has("a[href$='/sites/example.com']").await);
    b.goto(&format!("{}/sites/example.com", k.base)).await;
    assert!(
        b.text()
            .await
            .contains("no site `example.com` that you may see"),
        "{}",
        b.text().await
    );
    b.goto(&format!("{}/webhooks/{id}", k.base)).await;
    assert!(
        b.text().await.contains("that you may see"),
        "{}",
        b.text().await
    );
}

/// GET of the page with `cookie`: its status and whether it says signed out.
async fn with_cookie(k: &Kit, cookie: &str) -> (u16, bool) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("{}/", k.base))
        .header("cookie", cookie)
        .body(Empty::new())
        .unwrap();
    let r = client.request(req).await.unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).contains("You are signed out"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deleted_tampered_or_wrongly_salted_session_is_refused() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let (good, token) = k.session(owner).await;
    assert_eq!(
        with_cookie(&k, &format!("_plausible_key={good}")).await,
        (200, false)
    );
    // Several cookies of the name: each is tried.
    assert_eq!(
        with_cookie(
            &k,
            &format!("_plausible_key=SFMyNTY.x.y; _plausible_key={good}")
        )
        .await,
        (200, false)
    );
    let mut tampered = good.clone().into_bytes();
    let i = good.find('.').unwrap() + 12;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let salted = mint(SKB, "3IL0ob4k", &token);
    let other_key = mint(&SKB.replace('0', "9"), SALT, &token);
    for (why, c) in [
        ("tampered", tampered),
        ("the old salt", salted),
        ("another SECRET_KEY_BASE", other_key),
        ("no cookie", "x=1".into()),
    ] {
        let cookie = if c.contains('=') && !c.starts_with("SFMy") {
            c
        } else {
            format!("_plausible_key={c}")
        };
        assert_eq!(with_cookie(&k, &cookie).await, (401, true), "{why}");
    }
    // Signed out in Plausible (the row deleted), or timed out there.
    k.env
        .db
        .execute(
            "UPDATE user_sessions SET timeout_at = (now() AT TIME ZONE 'utc') - interval '1 second' WHERE token = $1",
            &[&token.as_slice()],
        )
        .await
        .unwrap();
    assert_eq!(
        with_cookie(&k, &format!("_plausible_key={good}")).await,
        (401, true),
        "expired"
    );
    k.env
        .db
        .execute(
            "DELETE FROM user_sessions WHERE token = $1",
            &[&token.as_slice()],
        )
        .await
        .unwrap();
    assert_eq!(
        with_cookie(&k, &format!("_plausible_key={good}")).await,
        (401, true),
        "deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_of_plausible_the_page_says_so_and_links_its_login() {
    let k = Kit::start().await;
    let b = Browser::start().await;
    b.goto(&format!("{}/", k.base)).await;
    assert!(b.text().await.contains("You are signed out"));
    let href = b
        .el("a[href*='/login']")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        href,
        "http://plausible.invalid/login?return_to=%2Fwebhooks%2F"
    );
    screens(&b, "signed-out").await;
    let findings = b.accessibility_findings().await;
    assert!(findings.is_empty(), "{findings:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_receivers_answer_is_shown_as_text() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    const HOSTILE: &str =
        "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
    let rx = receiver(&k.env, Arc::new(AtomicU16::new(500)), HOSTILE).await;
    let id = k.webhook(&rx.url("/hook"), "[]").await;
    let b = k.browser_as(owner).await;
    b.goto(&format!("{}/webhooks/{id}", k.base)).await;
    b.click("#send-test").await;
    let shown = b.el("pre").await.text().await.unwrap();
    assert_eq!(shown, HOSTILE, "the answer shown as it came, as text");
    let scripts =
        b.c.execute(
            "return [document.title, document.scripts.length, document.images.length]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(scripts[0], "Orders · Webhooks");
    assert_eq!(scripts[1], 1, "only the page's own script");
    assert_eq!(scripts[2], 0);
    assert!(b.c.source().await.unwrap().contains("&lt;script&gt;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_have_no_serious_accessibility_findings() {
    let k = Kit::start().await;
    k.env
        .db
        .execute(
            "INSERT INTO goals (site_id, page_path, display_name, inserted_at, updated_at)
             VALUES ($1, '/thanks', 'Visit /thanks', now(), now())",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let rx = receiver(&k.env, Arc::new(AtomicU16::new(200)), "ok").await;
    let id = k
        .webhook(
            &rx.url("/hook"),
            r#"["goal", {"type": "spike", "threshold": 40}, "drop"]"#,
        )
        .await;
    k.env.enqueue(id.parse().unwrap(), 3).await;
    k.env
        .wait_until(
            "SELECT count(*) = 3 FROM webhook_deliveries WHERE status = 'success'",
            T,
        )
        .await;
    let delivery: uuid::Uuid = k
        .env
        .db
        .query_one("SELECT id FROM webhook_deliveries LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let light = k.browser_as(owner).await;
    let dark = k.signed_in(owner, Browser::start_dark().await).await;
    let pages = [
        ("a11y-home", "/".to_string()),
        ("a11y-site", "/sites/example.com".to_string()),
        ("a11y-new", "/sites/example.com/new".to_string()),
        ("a11y-webhook", format!("/webhooks/{id}")),
        ("a11y-edit", format!("/webhooks/{id}/edit")),
        ("a11y-log", format!("/webhooks/{id}/deliveries")),
        (
            "a11y-delivery",
            format!("/webhooks/{id}/deliveries/{delivery}"),
        ),
    ];
    for (b, scheme) in [(&light, ""), (&dark, "-dark")] {
        for (name, path) in &pages {
            b.goto(&format!("{}{path}", k.base)).await;
            // Contrast and the rest, in the light and the dark scheme.
            let findings = b.accessibility_findings().await;
            assert!(findings.is_empty(), "{name}{scheme} {path}: {findings:#?}");
            b.screenshot(&format!("{name}{scheme}-phone"), PHONE_WIDTH)
                .await;
            b.set_width(PHONE_WIDTH).await;
            // Nothing wider than a phone's screen.
            let wide: serde_json::Value =
                b.c.execute(
                    "return document.documentElement.scrollWidth <= window.innerWidth + 1",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(wide, true, "{path} scrolls sideways at phone width");
            b.set_width(1280).await;
        }
    }
    // The dark scheme is the page's own, not the light one inverted.
    dark.goto(&format!("{}/", k.base)).await;
    let bg: serde_json::Value = dark
        .c
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bg, "rgb(17, 24, 39)", "the dark background");
    dark.goto(&format!("{}/webhooks/{id}", k.base)).await;
    dark.screenshot("webhook-dark", 1280).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_bounded_per_client() {
    let k = Kit::start().await;
    for n in 0..10 {
        let s = post_form(&k, "/signin", "", &format!("api_key=wrong-{n}"), None).await;
        assert_eq!(s, 401, "attempt {n}");
    }
    // The next one is refused before the key is looked at, right or wrong.
    assert_eq!(
        post_form(&k, "/signin", "", "api_key=wrong", None).await,
        429
    );
    // A sign-in form posted from another site is refused.
    let k2 = Kit::start().await;
    assert_eq!(
        post_form(&k2, "/signin", "", "api_key=x", Some("http://evil.example")).await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_or_a_portal_link_signs_in_where_plausibles_session_is_not() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    k.env
        .db
        .execute(
            "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
             VALUES ($1, $2, 'k', 'key-', $3, '{stats:read:*}', now(), now())",
            &[&owner, &k.team, &plausible_key_hash(SKB, &key)],
        )
        .await
        .unwrap();
    let b = Browser::start().await;
    b.goto(&format!("{}/", k.base)).await;
    b.fill("#api-key", "not-a-key").await;
    b.click("form[action$='/signin'] button").await;
    assert!(b.text().await.contains("not a current Plausible API key"));
    b.fill("#api-key", &key).await;
    b.click("form[action$='/signin'] button").await;
    let t = b.text().await;
    assert!(
        t.contains("owner@example.com (API key)") && t.contains("example.com"),
        "{t}"
    );
    // The key deleted in Plausible: signed out at once.
    k.env.db.execute("DELETE FROM api_keys", &[]).await.unwrap();
    b.goto(&format!("{}/", k.base)).await;
    assert!(b.text().await.contains("You are signed out"));
    // A portal link from the CLI: signs in once, to that site only.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"))
        .args(["portal-link", "--site", "example.com", "--role", "viewer"])
        .envs(k.env.daemon_env())
        .env("PLAUSIBLE_WEBHOOKS__WEB__PUBLIC_URL", &k.origin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(link.starts_with(&format!("{}/link/", k.base)), "{link}");
    b.clear_cookies().await;
    b.goto(&link).await;
    b.click("#continue").await;
    let t = b.text().await;
    assert!(t.contains("viewer of example.com (by link)"), "{t}");
    b.click("header form button").await;
    assert!(b.text().await.contains("You are signed out"));
    b.goto(&link).await;
    assert!(b.text().await.contains("used or has expired"));
    let sessions = k
        .env
        .count("SELECT count(*) FROM webhook_portal_sessions WHERE link_id IS NOT NULL")
        .await;
    assert_eq!(sessions, 0, "signing out ended the link's session");
    let (status, _) = with_cookie(&k, "plausible_webhooks_session=AAAA").await;
    assert_eq!(status, 401);
    let a = request("GET", &format!("{}/healthz", k.origin), None, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
}

/// The `Set-Cookie` a sign-in with an API key answers with, sent as if
/// through a proxy that says the browser came `over` this scheme.
async fn sign_in_cookie(k: &Kit, key: &str, over: &str) -> String {
    use http_body_util::Full;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = hyper::Request::post(format!("{}/signin", k.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", over)
        .body(Full::new(bytes::Bytes::from(format!("api_key={key}"))))
        .unwrap();
    let r = client.request(req).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    r.headers()["set-cookie"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_own_session_cookie_is_http_only_strict_on_its_path_and_secure_over_tls() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    k.env
        .db
        .execute(
            "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
             VALUES ($1, $2, 'k', 'key-', $3, '{stats:read:*}', now(), now())",
            &[&owner, &k.team, &plausible_key_hash(SKB, &key)],
        )
        .await
        .unwrap();
    let plain = sign_in_cookie(&k, &key, "http").await;
    let tls = sign_in_cookie(&k, &key, "https").await;
    for c in [&plain, &tls] {
        assert!(c.starts_with("plausible_webhooks_session="), "{c}");
        for attr in [
            "Path=/webhooks",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=43200",
        ] {
            assert!(c.contains(attr), "{attr} in {c}");
        }
    }
    assert!(!plain.contains("Secure"), "{plain}");
    assert!(tls.ends_with("; Secure"), "{tls}");
    // The database keeps the session's hash, never the cookie's value.
    let token = plain
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    let stored: i64 = k
        .one(
            "SELECT count(*) FROM webhook_portal_sessions WHERE position($1::bytea IN token_sha256) > 0",
            &[&token.as_bytes()],
        )
        .await;
    assert_eq!(stored, 0);
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhook_portal_sessions")
            .await,
        2
    );
}

/// A chat format from the form: the select offers each service with the URL
/// it gives; the webhook's page shows the format, and its test shows the
/// message as the channel shows it, the body sent beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_makes_a_slack_webhook_and_its_test_shows_the_message() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let rx = receiver(&k.env, Arc::new(AtomicU16::new(200)), "ok").await;
    let b = k.browser_as(owner).await;
    b.click("a[href$='/sites/example.com']").await;
    b.click("a[href$='/sites/example.com/new']").await;
    let t = b.text().await;
    assert!(
        t.contains("https://hooks.slack.com/services/") && t.contains("Google Chat"),
        "{t}"
    );
    b.fill("#name", "Slack #growth").await;
    b.fill("#url", &rx.url("/services/T0/B0/x")).await;
    b.el("#format option[value=slack]")
        .await
        .click()
        .await
        .unwrap();
    b.el("input[value=spike]").await.click().await.unwrap();
    b.click("form button[type=submit]").await;
    assert!(b.has("#the-secret").await, "{}", b.text().await);
    b.click("a.btn").await;
    assert!(
        b.text().await.contains("Format\nslack") || b.text().await.contains("Format slack"),
        "{}",
        b.text().await
    );
    b.click("#send-test").await;
    let t = b.text().await;
    assert!(t.contains("Test webhook: delivered"), "{t}");
    assert!(
        t.contains("The message, as the channel shows it (slack)")
            && t.contains("🧪 Test from plausible-webhooks")
            && t.contains("📈 Visitor spike on example.com"),
        "{t}"
    );
    screens(&b, "webhook-test-slack").await;
    let seen = rx.wait_for(1, T).await.unwrap();
    assert!(seen[0].json()["blocks"].is_array(), "{:?}", seen[0].json());
    // Edited, the form shows the format chosen.
    b.click("a[href$='/edit']").await;
    assert!(b.has("#format option[value=slack][selected]").await);
}

/// ed25519 on the page: an owner picks "HMAC and ed25519" in the form, the
/// page shows the public key (to a viewer too, who gets no rotate button),
/// and rotating makes a new key while the old one is shown with its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_turns_on_ed25519_sees_the_public_key_and_rotates_it() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let viewer = k.user("viewer@example.com", k.team, "viewer").await;
    let id = k.webhook("https://hooks.example.net/x", "[]").await;
    let b = k.browser_as(owner).await;
    b.goto(&format!("{}/webhooks/{id}", k.base)).await;
    assert!(!b.has("#public-key").await, "an hmac webhook has no key");
    b.click("a[href$='/edit']").await;
    b.el("#signature option[value=both]")
        .await
        .click()
        .await
        .unwrap();
    b.click("form button[type=submit]").await;
    let first = b.el("#public-key").await.text().await.unwrap();
    assert!(first.starts_with("whpk_"), "{first}");
    assert!(b.text().await.contains("HMAC and ed25519 (v1 and v1a)"));
    let stored: String = k
        .env
        .db
        .query_one("SELECT signature FROM webhooks WHERE id::text = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "both");
    screens(&b, "webhook-ed25519").await;
    // The form's confirm() answered yes, as a person would.
    b.c.execute("window.confirm = function () { return true; };", vec![])
        .await
        .unwrap();
    b.click("form[action$='/rotate-key'] button[type=submit]")
        .await;
    let second = b.el("#public-key").await.text().await.unwrap();
    assert!(second.starts_with("whpk_") && second != first, "{second}");
    let t = b.text().await;
    assert!(t.contains("New signing key made"), "{t}");
    assert!(t.contains(&format!("{first}, signs until")), "{t}");
    screens(&b, "webhook-ed25519-rotated").await;

    let v = k.browser_as(viewer).await;
    v.goto(&format!("{}/webhooks/{id}", k.base)).await;
    assert_eq!(v.el("#public-key").await.text().await.unwrap(), second);
    assert!(!v.has("form[action$='/rotate-key']").await);
}

/// The trigger form's Preview button (issue 24, part 3): the site's
/// history replayed for the spike typed in, the firings listed on the
/// page in the site's time, server-side; nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_forms_preview_lists_where_a_spike_would_have_fired() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let wh = k
        .webhook("https://hooks.example.test/in", "[\"goal\"]")
        .await;
    // 12 visitors within a minute, an hour ago; 2 a minute otherwise.
    let now = time::OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for m in 0..120i64 {
        let n = if m == 60 { 12 } else { 2 };
        for u in 0..n {
            rows.push((now - time::Duration::minutes(120 - m), m * 100 + u));
        }
    }
    let events: Vec<common::EventRow> = rows
        .iter()
        .map(|(at, user)| common::EventRow {
            site_id: k.env.site_id,
            at: *at,
            name: "pageview",
            path: "/",
            user: *user,
            session: *user,
            source: "",
            meta: &[],
            scroll: None,
        })
        .collect();
    common::insert_events(&k.env.db, &events).await;
    let b = k.browser_as(owner).await;
    b.goto(&format!("{}/webhooks/{wh}", k.base)).await;
    b.el("#t-type option[value=visitor_spike]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("#t-threshold", "12").await;
    b.fill("#t-since", "3h").await;
    b.click("#preview-trigger").await;
    let t = b.text().await;
    assert!(
        t.contains("A visitor_spike trigger") && t.contains("would have fired once"),
        "{t}"
    );
    assert!(
        t.to_lowercase().contains("would have fired at (site time)"),
        "{t}"
    );
    assert!(t.contains("threshold 12 (configured)"), "{t}");
    screens(&b, "trigger-preview").await;
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhook_triggers WHERE trigger_type = 'visitor_spike'")
            .await,
        0,
        "a preview creates nothing"
    );
    // Over 90 days: refused beside the form, saying the bound.
    b.fill("#t-since", "100d").await;
    b.click("#preview-trigger").await;
    let t = b.text().await;
    assert!(t.contains("at most 90 days"), "{t}");
}

/// Usable without JavaScript: with scripts off (the trigger form's fields
/// are all shown, as app.js would hide those the type does not take), an
/// owner creates a webhook, previews and adds a trigger, sends the test
/// and disables it — every form posts and answers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_works_with_javascript_switched_off() {
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let rx = receiver(&k.env, Arc::new(AtomicU16::new(200)), "ok").await;
    let b = k.signed_in(owner, Browser::start_without_js().await).await;
    b.click("a[href$='/sites/example.com']").await;
    b.click("a[href$='/sites/example.com/new']").await;
    b.fill("#name", "No script").await;
    b.fill("#url", &rx.url("/in")).await;
    // Goal completions are ticked on a new form.
    b.click("form button[type=submit]").await;
    assert!(b.has("#the-secret").await, "{}", b.text().await);
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhook_triggers WHERE trigger_type = 'goal_completion'")
            .await,
        1
    );
    b.click("a.btn").await;
    let page = b.url().await;
    // Scripts are off: the spike-only threshold is shown beside a goal type.
    let threshold = b.el("#t-threshold").await;
    assert!(
        threshold.is_displayed().await.unwrap(),
        "app.js ran: the threshold field is hidden for a goal trigger"
    );
    b.el("#t-type option[value=visitor_spike]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("#t-threshold", "5").await;
    b.fill("#t-since", "1d").await;
    b.click("#preview-trigger").await;
    let t = b.text().await;
    assert!(
        t.contains("A visitor_spike trigger") && t.contains("would not have fired"),
        "{t}"
    );
    b.goto(&page).await;
    b.el("#t-type option[value=visitor_spike]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("#t-threshold", "5").await;
    b.click("form.add-trigger button[type=submit]:not([formaction])")
        .await;
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhook_triggers WHERE trigger_type = 'visitor_spike' AND threshold = 5")
            .await,
        1,
        "{}",
        b.text().await
    );
    b.click("#send-test").await;
    let t = b.text().await;
    assert!(t.contains("Test webhook: delivered"), "{t}");
    rx.wait_for(1, T).await.unwrap();
    screens(&b, "no-javascript").await;
    // Disable asks for confirmation with JavaScript; without it, the form
    // posts as it is.
    b.click("form[action$='/state'] button[type=submit]").await;
    assert_eq!(
        k.env
            .count("SELECT count(*) FROM webhooks WHERE name = 'No script' AND NOT enabled")
            .await,
        1,
        "{}",
        b.text().await
    );
}

/// Every page is sent with the headers that keep it from being framed,
/// sniffed, cached or fed a script from elsewhere (web::view::CSP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_sent_with_its_protective_headers() {
    use http_body_util::Empty;
    let k = Kit::start().await;
    let owner = k.user("owner@example.com", k.team, "owner").await;
    let (cookie, _) = k.session(owner).await;
    let wh = k.webhook("https://hooks.example.test/in", "[]").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    for path in [
        "/".to_string(),
        "/sites/example.com".to_string(),
        format!("/webhooks/{wh}"),
        format!("/webhooks/{wh}/edit"),
        format!("/webhooks/{wh}/deliveries"),
    ] {
        let req = hyper::Request::get(format!("{}{path}", k.base))
            .header("cookie", format!("_plausible_key={cookie}"))
            .body(Empty::new())
            .unwrap();
        let r = client.request(req).await.unwrap();
        let h = r.headers();
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let csp = get("content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(part), "{path}: {part} missing from {csp:?}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("cache-control"), "no-store", "{path}");
        assert!(
            get("content-type").starts_with("text/html"),
            "{path}: {}",
            get("content-type")
        );
    }
}
