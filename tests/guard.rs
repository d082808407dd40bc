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

/// Every entry of IANA's IPv4 and IPv6 special-purpose address registries
/// that is not globally reachable, plus multicast and IPv6 outside global
/// unicast: its first and last address refused, the registry's globally
/// reachable entries and public neighbours allowed. Then the forms that
/// carry an IPv4 address: mapped ones are that host (the allow-list holds
/// for them), translated, compatible, NAT64 and 6to4 ones route elsewhere
/// (it does not).
#[test]
fn every_special_purpose_range_is_refused() {
    use plausible_webhooks::delivery::guard::AddressGuard;
    let none = AddressGuard::default();
    let refused = [
        // IPv4 (RFC 6890 and later entries).
        ("0.0.0.0", "0.255.255.255"),
        ("10.0.0.0", "10.255.255.255"),
        ("100.64.0.0", "100.127.255.255"),
        ("127.0.0.0", "127.255.255.255"),
        ("169.254.0.0", "169.254.255.255"),
        ("172.16.0.0", "172.31.255.255"),
        ("192.0.0.0", "192.0.0.8"),
        ("192.0.0.11", "192.0.0.255"),
        ("192.0.2.0", "192.0.2.255"),
        ("192.88.99.0", "192.88.99.255"),
        ("192.168.0.0", "192.168.255.255"),
        ("198.18.0.0", "198.19.255.255"),
        ("198.51.100.0", "198.51.100.255"),
        ("203.0.113.0", "203.0.113.255"),
        ("224.0.0.0", "239.255.255.255"),
        ("240.0.0.0", "255.255.255.255"),
        // IPv6.
        ("::", "::"),
        ("::1", "::1"),
        ("::2", "::ffff:ffff"),
        ("::ffff:0:0:0", "::ffff:0:ffff:ffff"),
        ("64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),
        ("100::", "100::ffff:ffff:ffff:ffff"),
        ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff"),
        ("2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:1::", "2001:1::"),
        ("2001:1::4", "2001:2:0:ffff:ffff:ffff:ffff:ffff"),
        ("2001:10::", "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:40::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        // Outside 2000::/3 and named by no entry: reserved by the IETF.
        ("1::", "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("4000::", "5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("e000::", "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        // The forms.
        ("::ffff:0:7f00:1", "::ffff:0:a00:1"),
        ("::ffff:0:a9fe:a9fe", "64:ff9b:1::7f00:1"),
        ("64:ff9b:1::a00:1", "64:ff9b::a00:1"),
        ("2002:7f00:1::1", "2002:a00:1::"),
    ];
    for (first, last) in refused {
        for ip in [first, last] {
            assert!(
                none.check(ip.parse().unwrap()).is_err(),
                "{ip} is special-purpose and must be refused"
            );
        }
    }
    let allowed = [
        "1.1.1.1",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        // Globally reachable entries of the registries.
        "192.0.0.9",
        "192.0.0.10",
        "192.31.196.1",
        "192.52.193.1",
        "192.175.48.1",
        "223.255.255.255",
        "2606:4700::1111",
        "2001:1::1",
        "2001:1::2",
        "2001:1::3",
        "2001:3::1",
        "2001:4:112::1",
        "2001:20::1",
        "2001:30::1",
        "2001:200::1",
        "2620:4f:8000::1",
        "3ffe::1",
        "3fff:1000::1",
        "::ffff:1.1.1.1",
        "64:ff9b::101:101",
        "2002:101:101::1",
    ];
    for ip in allowed {
        assert!(
            none.check(ip.parse().unwrap()).is_ok(),
            "{ip} is globally reachable: {:?}",
            none.check(ip.parse().unwrap())
        );
    }
    // 127.0.0.0/8 allowed: this host's loopback, also as IPv4-mapped; not
    // where NAT64, 6to4, compatible and translated forms go.
    let loopback = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
    for ok in ["127.0.0.1", "::ffff:127.0.0.1"] {
        assert!(loopback.check(ok.parse().unwrap()).is_ok(), "{ok}");
    }
    for no in [
        "64:ff9b::7f00:1",
        "::7f00:1",
        "2002:7f00:1::1",
        "::ffff:0:7f00:1",
        "64:ff9b:1::7f00:1",
        "::1",
    ] {
        let e = loopback.check(no.parse().unwrap());
        assert!(e.is_err(), "{no} does not reach this host's 127.0.0.1");
    }
    // The operator can still allow such a form by its own IPv6 range.
    let nat64 = AddressGuard::new(vec!["64:ff9b::/96".parse().unwrap()]);
    assert!(nat64.check("64:ff9b::7f00:1".parse().unwrap()).is_ok());
}

/// A refusal that no retry can change (the URL names the address itself,
/// or a name that always means loopback) fails the delivery at its first
/// attempt, though the webhook's schedule has retries left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_cannot_change_is_final_at_once() {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.delivery.allow_cidrs = vec!["127.0.0.0/8".into()];
    cfg.delivery.retry_schedule_secs = vec![3600, 3600, 3600];
    for url in [
        "https://[::ffff:0:7f00:1]/",
        "https://[::ffff:0:a00:1]/",
        "https://[::ffff:0:a9fe:a9fe]/",
        "https://[64:ff9b:1::7f00:1]/",
        "https://[64:ff9b:1::a00:1]/",
        "https://[64:ff9b::7f00:1]/",
        "https://[::7f00:1]/",
        "https://[2002:7f00:1::1]/",
        "https://10.0.0.1/",
    ] {
        let wh = env.webhook(url).await;
        env.enqueue(wh, 1).await;
    }
    let daemon = env.daemon(cfg).await;
    env.wait_all_final(T).await;
    daemon.shutdown().await.unwrap();
    let rows = env
        .db
        .query(
            "SELECT w.url, d.attempts, d.last_error FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 9);
    for r in rows {
        let (url, attempts, error): (String, i32, String) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(attempts, 1, "{url}: {error}");
        assert!(error.starts_with("refused address"), "{url}: {error}");
    }
}
