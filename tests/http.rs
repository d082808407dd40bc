//! The admin listener as an HTTP server, on the daemon binary: the router
//! and its OpenAPI document describe the same routes, the listener's
//! protections against slow and anonymous clients hold, and the core's
//! rules reach the API unchanged (`PATCH {}` refused, every field refusal
//! listed).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::http::{free_port, request, wait_status, Answer};
use common::{DaemonProcess, Env};
use plausible_webhooks::admin::auth::operator_token_hash;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);
const OPERATOR: &str = "operator-token-for-http-tests-0123456789";

struct Listener {
    env: Env,
    addr: String,
    daemon: DaemonProcess,
}

impl Listener {
    async fn start() -> Listener {
        let env = Env::new().await;
        let addr = format!("127.0.0.1:{}", free_port());
        let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
        let daemon = env.spawn_daemon(&[
            ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", addr.as_str()),
            ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
            // The route test makes a webhook per documented path and method:
            // more than the default 100 a site may have.
            ("PLAUSIBLE_WEBHOOKS__LIMITS__MAX_WEBHOOKS_PER_SITE", "1000"),
        ]);
        wait_status(&format!("http://{addr}/readyz"), 200, T).await;
        Listener { env, addr, daemon }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        request(
            method,
            &format!("http://{}{path}", self.addr),
            Some(OPERATOR),
            body.as_ref(),
        )
        .await
        .unwrap()
    }

    /// A webhook with a trigger and a delivery: (webhook, trigger, delivery).
    async fn webhook(&self) -> (String, String, String) {
        let c = self
            .call(
                "POST",
                "/api/webhooks",
                Some(json!({"site_id": "example.com", "name": "w", "url": "https://hooks.example.net/x",
                            "triggers": [{"type": "goal_completion"}]})),
            )
            .await;
        assert_eq!(c.status, 201, "{}", c.text);
        let c = c.json();
        let id = c["webhook"]["id"].as_str().unwrap().to_string();
        let trigger = c["triggers"][0]["id"].as_str().unwrap().to_string();
        let delivery = self.env.enqueue(id.parse().unwrap(), 1).await[0].to_string();
        (id, trigger, delivery)
    }

    /// Descriptors the daemon holds open now.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.daemon.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Sends `head` on a new connection and reads until the server closes it
/// (or `limit` passes); the answer's text and how long it took.
async fn raw(addr: &str, head: &str, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_update_is_refused_and_every_field_refusal_is_listed() {
    let l = Listener::start().await;
    let (id, _, _) = l.webhook().await;
    let a = l
        .call("PATCH", &format!("/api/webhooks/{id}"), Some(json!({})))
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (422, "required"),
        "{}",
        a.text
    );
    assert_eq!(a.json()["error"]["field"], "update");
    let a = l
        .call(
            "POST",
            "/api/webhooks",
            Some(json!({"site_id": "example.com", "name": "", "url": "http://h.example/", "secret": "short"})),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    let v = a.json();
    let fields: Vec<&str> = v["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "url", "secret"], "{v}");
    // The first is repeated where clients of one error read it.
    assert_eq!(
        (v["error"]["field"].as_str(), v["error"]["code"].as_str()),
        (Some("name"), Some("required"))
    );
}

/// Every route the router serves is in the OpenAPI document, and every
/// route the document names answers: documented methods reach their
/// handler, others on the same paths are 405, other paths the fallback 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_router_name_the_same_routes() {
    let l = Listener::start().await;
    let doc = l.call("GET", "/api/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let methods = ["get", "post", "put", "patch", "delete"];
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for m in methods {
            if item.get(m).is_some() {
                documented.insert((path.clone(), m));
            }
        }
    }
    // The REST API's routes, as docs/api.md lists them, and the health ones.
    for (p, m) in [
        ("/api/webhooks", "get"),
        ("/api/webhooks", "post"),
        ("/api/webhooks/{id}", "get"),
        ("/api/webhooks/{id}", "put"),
        ("/api/webhooks/{id}", "patch"),
        ("/api/webhooks/{id}", "delete"),
        ("/api/webhooks/{id}/restore", "post"),
        ("/api/webhooks/{id}/rotate-secret", "post"),
        ("/api/webhooks/{id}/test", "post"),
        ("/api/webhooks/{id}/replay", "post"),
        ("/api/webhooks/{id}/rotate-key", "post"),
        ("/api/webhooks/{id}/export-key", "post"),
        ("/api/webhooks/{id}/triggers", "get"),
        ("/api/webhooks/{id}/triggers", "post"),
        ("/api/webhooks/{id}/triggers/{trigger_id}", "delete"),
        ("/api/webhooks/{id}/deliveries", "get"),
        ("/api/webhooks/{id}/deliveries/{delivery_id}", "get"),
        ("/api/webhooks/{id}/deliveries/{delivery_id}/retry", "post"),
        ("/api/webhooks/{id}/stats", "get"),
        ("/api/sites", "get"),
        ("/api/sites/{site}/goals", "get"),
        ("/api/sites/{site}/portal-links", "post"),
        ("/api/sites/{site}/triggers/preview", "post"),
        ("/api/event-types", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            documented.contains(&(p.to_string(), m)),
            "{m} {p} is not documented"
        );
    }
    assert_eq!(documented.len(), 27, "{documented:?}");
    for (path, item) in paths {
        for m in methods {
            // Fresh ids each time: a DELETE must not hide a later call.
            let (id, trigger, delivery) = l.webhook().await;
            let concrete = path
                .replace("{site}", "example.com")
                .replace("{id}", &id)
                .replace("{trigger_id}", &trigger)
                .replace("{delivery_id}", &delivery);
            let a = l.call(&m.to_uppercase(), &concrete, None).await;
            let fallback = a.status == 404 && a.text.contains("no such endpoint");
            if item.get(m).is_some() {
                assert!(
                    !fallback && a.status != 405,
                    "{m} {path} is documented but not served: {} {}",
                    a.status,
                    a.text
                );
                // Its answers are documented.
                let responses = item[m]["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{m} {path}");
            } else {
                assert_eq!(
                    a.status, 405,
                    "{m} {path} is served but not documented: {}",
                    a.text
                );
                assert_eq!(a.code(), "method_not_allowed");
            }
        }
    }
    for undocumented in [
        "/api/webhooks/x/y/z",
        "/api/nothing",
        "/nothing",
        "/api/webhooks/{id}/bogus",
    ] {
        let a = l.call("GET", undocumented, None).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (404, "not_found"),
            "{undocumented}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_request_is_refused_before_its_body_is_read() {
    let l = Listener::start().await;
    // A body announced and never sent: answered at once, not after the body's timeout.
    let (text, took) = raw(
        &l.addr,
        "POST /api/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        Duration::from_secs(8),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // Over the limit, with a token: refused, and the refusal arrives (the
    // rest of the body is read and dropped rather than reset).
    let mut sock = TcpStream::connect(&l.addr).await.unwrap();
    let body = vec![b'x'; 3 * 1024 * 1024];
    let head = format!(
        "POST /api/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(T, sock.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_head_or_body_is_cut_off() {
    use plausible_webhooks::admin::body::BODY_READ_TIMEOUT;
    use plausible_webhooks::admin::http::HEADER_READ_TIMEOUT;
    let l = Listener::start().await;
    let head = async {
        let (text, took) = raw(&l.addr, "GET /healthz HTTP/1.1\r\nHost:", T).await;
        assert!(!text.contains("200 OK"), "{text}");
        assert!(
            took >= HEADER_READ_TIMEOUT && took < HEADER_READ_TIMEOUT + Duration::from_secs(10),
            "a stalled head was closed after {took:?}"
        );
    };
    let body = async {
        let (text, took) = raw(
            &l.addr,
            &format!("POST /api/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Length: 100\r\n\r\n{{\"name\""),
            T,
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout"), "{text}");
        assert!(
            took >= BODY_READ_TIMEOUT && took < BODY_READ_TIMEOUT + Duration::from_secs(10),
            "{took:?}"
        );
    };
    tokio::join!(head, body);
}

/// Sends `head`, then `trickle` a byte every 500 ms, and reads until the
/// server closes the connection (or `limit` passes); the answer's text and
/// how long it took.
async fn trickled(addr: &str, head: &str, trickle: &str, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    w.write_all(head.as_bytes()).await.unwrap();
    let bytes = trickle.as_bytes().to_vec();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, r.read_to_end(&mut out)).await;
    writer.abort();
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

/// A head or a body sent a byte at a time (never stalling for long) is cut
/// off all the same: the timeouts bound the whole head and the whole body,
/// not the pause between two reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_or_body_is_cut_off() {
    use plausible_webhooks::admin::body::BODY_READ_TIMEOUT;
    use plausible_webhooks::admin::http::HEADER_READ_TIMEOUT;
    let l = Listener::start().await;
    let head = async {
        let (text, took) =
            trickled(&l.addr, "GET /healthz HTTP/1.1\r\n", "X-Slow: aaaa\r\n", T).await;
        assert!(!text.contains("200 OK"), "{text}");
        assert!(
            took >= HEADER_READ_TIMEOUT && took < HEADER_READ_TIMEOUT + Duration::from_secs(10),
            "a trickled head was closed after {took:?}"
        );
    };
    let body = async {
        let (text, took) = trickled(
            &l.addr,
            &format!("POST /api/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Length: 100000\r\n\r\n{{\"name\": \""),
            "a",
            T,
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            took >= BODY_READ_TIMEOUT && took < BODY_READ_TIMEOUT + Duration::from_secs(10),
            "a trickled body was answered after {took:?}"
        );
    };
    tokio::join!(head, body);
}

/// The `Authorization` scheme's name is case-insensitive (RFC 9110
/// §11.1): `BEARER` and `bEaReR` are `Bearer`; another scheme is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_read_in_any_case() {
    use common::http::request_with_header;
    let l = Listener::start().await;
    let url = format!("http://{}/api/webhooks", l.addr);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let a = request_with_header(&url, ("authorization", &format!("{scheme} {OPERATOR}"))).await;
        assert_eq!(a.status, 200, "{scheme}: {}", a.text);
    }
    let a = request_with_header(&url, ("authorization", &format!("Basic {OPERATOR}"))).await;
    assert_eq!(a.status, 401, "{}", a.text);
}

/// Many clients that open a connection and send nothing take at most the
/// listener's cap of descriptors, and once their heads time out the
/// listener answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped() {
    use plausible_webhooks::admin::http::MAX_CONNECTIONS;
    let l = Listener::start().await;
    let base = l.descriptors();
    let mut held = Vec::new();
    for _ in 0..(MAX_CONNECTIONS + 100) {
        match TcpStream::connect(&l.addr).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    // Wait until the listener has taken all it will (the count stops rising).
    let mut last = 0;
    let deadline = Instant::now() + T;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = l.descriptors();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let peak = l.descriptors();
    assert!(
        peak <= base + MAX_CONNECTIONS + 8,
        "{} connections held {peak} descriptors (base {base}, cap {MAX_CONNECTIONS})",
        held.len()
    );
    // Answered once the idle heads time out and free their slots.
    let a = request("GET", &format!("http://{}/healthz", l.addr), None, None).await;
    assert_eq!(a.map(|a| a.status), Ok(200));
    drop(held);
}

/// The probe in a box of 300 descriptors: 1,100 clients announce a
/// body of 1,000,000 bytes and never send it, while 300 deliveries are due.
/// The listener's cap leaves room for deliveries and the database (the
/// limit is too low to be raised: soft and hard are alike), so every
/// delivery succeeds at its first attempt; any that met a descriptor
/// shortage was retried without counting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_holding_the_listener_leave_deliveries_their_descriptors() {
    use plausible_webhooks::testkit::receiver::Reply;
    let env = Env::new().await;
    let rx = env
        .receiver(std::sync::Arc::new(|_: &_| {
            Reply::Delayed(Duration::from_millis(200), 200)
        }))
        .await;
    let wh = env.webhook(&rx.url("/")).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
    let daemon = env.spawn_daemon_limited(
        &[
            ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", addr.as_str()),
            ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
            ("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT", "64"),
            ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "4000"),
            ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "10"),
        ],
        300,
    );
    wait_status(&format!("http://{addr}/readyz"), 200, T).await;
    let head = format!(
        "POST /api/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    );
    // At once, as a flood comes: those beyond the kernel's backlog wait in
    // SYN retries (and are given up after a while).
    let held: Vec<TcpStream> = futures_util::future::join_all((0..1100).map(|_| async {
        let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&addr))
            .await
            .ok()?
            .ok()?;
        s.write_all(head.as_bytes()).await.ok()?;
        Some(s)
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    env.enqueue(wh, 300).await;
    env.wait_all_final(T).await;
    let peak = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!(
        "{} clients held the listener; the daemon held {peak} descriptors",
        held.len()
    );
    drop(held);
    let failed = env
        .db
        .query(
            "SELECT status, attempts, coalesce(last_error, '') FROM webhook_deliveries
             WHERE status <> 'success' OR attempts <> 1",
            &[],
        )
        .await
        .unwrap();
    assert!(
        failed.is_empty(),
        "{} of 300 deliveries did not succeed at their first attempt (daemon at {peak} descriptors), e.g. {:?}",
        failed.len(),
        failed
            .iter()
            .take(3)
            .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1), r.get::<_, String>(2)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts WHERE error IS NOT NULL")
            .await,
        0
    );
}

/// A delivery that finds this process out of descriptors is not held
/// against the receiver: it goes back to the queue, its attempt not
/// counted, and is delivered once descriptors are free again, though the
/// webhook has no retry left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_shortage_uses_no_retry_and_counts_nothing_against_the_receiver() {
    let env = Env::new().await;
    let rx = env
        .receiver(plausible_webhooks::testkit::receiver::always(200))
        .await;
    let ip = env.webhook(&rx.url("/ip")).await;
    let named = env
        .webhook(&format!("https://localhost:{}/named", rx.addr.port()))
        .await;
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    let daemon = env.daemon(cfg).await;
    // This test runs in a process of its own (nextest): its descriptors are
    // filled to the limit, the daemon's pooled connections already open.
    let pool = daemon.pool.clone();
    let size = pool.status().max_size;
    let opened: Vec<_> = futures_util::future::join_all((0..size).map(|_| pool.get())).await;
    drop(opened);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on structs we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let tight = libc::rlimit {
        rlim_cur: open + 64,
        rlim_max: lim.rlim_max,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) };
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    env.enqueue(ip, 1).await;
    env.enqueue(named, 1).await;
    env.wait_until(
        "SELECT count(*) = 2 FROM webhook_deliveries WHERE last_error LIKE '%out of file descriptors%'",
        T,
    )
    .await;
    drop(filler);
    env.wait_until(
        "SELECT count(*) = 2 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE attempts = 1")
            .await,
        2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_delivery_attempts")
            .await,
        2,
        "only the attempts that reached the receiver are logged"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhooks WHERE consecutive_failures > 0 OR failing_since IS NOT NULL")
            .await,
        0
    );
    assert_eq!(rx.count(), 2);
}
