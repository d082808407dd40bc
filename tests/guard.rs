//! The address guard refuses before any connection is opened. Names resolve
//! through a stub (the only way to have DNS point at a private address here);
//! no test in this file ever connects to a non-loopback address.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use plausible_webhooks::daemon::StartOptions;
use plausible_webhooks::delivery::guard::Resolve;
use plausible_webhooks::testkit::receiver::always;

const T: Duration = Duration::from_secs(30);

/// A resolver with fixed answers that records every name asked.
struct StubDns {
    answers: HashMap<&'static str, Vec<IpAddr>>,
    asked: Mutex<Vec<String>>,
}

impl Resolve for StubDns {
    fn resolve(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        self.asked.lock().unwrap().push(host.clone());
        let answer = self.answers.get(host.as_str()).cloned();
        Box::pin(async move {
            answer.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("no such host {host}"))
            })
        })
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_addresses_fail_before_any_connect() {
    let env = Env::new().await;
    // A real receiver on loopback: the only thing that may ever be reached.
    let rx = env.receiver(always(200)).await;
    let port = rx.addr.port();
    let dns = Arc::new(StubDns {
        answers: HashMap::from([
            ("private.example.test", ips(&["10.1.2.3"])),
            ("metadata.example.test", ips(&["169.254.169.254"])),
            ("mapped.example.test", ips(&["::ffff:192.168.0.10"])),
            ("cgnat.example.test", ips(&["100.64.1.1"])),
            // A rebinding-style mixed answer: refused as a whole.
            ("mixed.example.test", ips(&["127.0.0.1", "172.16.5.5"])),
            // Loopback through DNS, allowed by the operator's CIDR: delivered.
            ("loopback.example.test", ips(&["127.0.0.1"])),
        ]),
        asked: Mutex::new(Vec::new()),
    });
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    let refused_urls = [
        "https://private.example.test/hook".to_string(),
        "https://metadata.example.test/latest/meta-data".to_string(),
        "https://mapped.example.test/".to_string(),
        "https://cgnat.example.test/".to_string(),
        format!("https://mixed.example.test:{port}/"),
        // IP literals (stored by SQL, bypassing validation): checked before connect.
        "https://10.0.0.1/".to_string(),
        "https://[::ffff:169.254.169.254]/".to_string(),
        "https://[fd00::1]/".to_string(),
    ];
    for url in &refused_urls {
        let wh = env.webhook(url).await;
        env.enqueue(wh, 1).await;
    }
    let ok = env
        .webhook(&format!("https://loopback.example.test:{port}/ok"))
        .await;
    env.enqueue(ok, 1).await;

    let opts = StartOptions {
        resolver: Some(dns.clone()),
        ..Default::default()
    };
    let daemon = env.daemon_with(cfg, opts).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();

    let rows = env
        .db
        .query(
            "SELECT w.url, d.status, coalesce(d.last_error, '') FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let (url, status, error): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        if url.contains("loopback.example.test") {
            assert_eq!(status, "success", "{url}: {error}");
        } else {
            assert_eq!(status, "failed", "{url}");
            assert!(error.starts_with("refused address"), "{url}: {error}");
        }
    }
    // Each refusal is logged with its kind, not only its words.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_delivery_attempts WHERE error_kind = 'refused_address'"
        )
        .await,
        refused_urls.len() as i64
    );
    // Only the allowed delivery reached the receiver; the mixed answer (which
    // contained the receiver's own address) was refused before connecting.
    assert_eq!(rx.count(), 1);
    assert_eq!(rx.requests()[0].path, "/ok");
    let asked = dns.asked.lock().unwrap().clone();
    assert!(asked.iter().any(|h| h == "private.example.test"));
    assert!(
        !asked.iter().any(|h| h == "10.0.0.1"),
        "IP literals are never resolved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_unless_the_operator_allows_it() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let mut cfg = env.config();
    cfg.delivery.allow_cidrs = vec![];
    cfg.delivery.retry_schedule_secs = vec![];
    let wh = env.webhook(&rx.url("/")).await;
    let named = env
        .webhook(&format!("https://localhost:{}/", rx.addr.port()))
        .await;
    env.enqueue(wh, 1).await;
    env.enqueue(named, 1).await;
    let daemon = env.daemon(cfg).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let errors: Vec<String> = env
        .db
        .query(
            "SELECT last_error FROM webhook_deliveries WHERE status = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e.contains("loopback")), "{errors:?}");
    assert_eq!(rx.count(), 0, "nothing connected to the receiver");
}
