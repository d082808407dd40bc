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
    assert_eq!(documented.len(), 24, "{documented:?}");
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
