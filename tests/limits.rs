//! Limits that hold across instances: three daemon processes on one database
//! against one receiver that counts concurrent requests and requests per
//! second; and the race of two limited claims at once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Env;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

const T: Duration = Duration::from_secs(90);

/// What the receiver saw on one path.
#[derive(Default)]
struct PathStats {
    live: usize,
    /// Most requests in progress at once.
    max_live: usize,
    arrivals: Vec<Instant>,
    /// Requests per webhook-id.
    per_id: HashMap<String, usize>,
}

/// An HTTPS receiver on loopback: per path, requests in progress (counted
/// from arrival to the moment the answer is handed back, so the daemon can
/// start no request in that slot before the count drops), arrival times and
/// webhook-ids. `/slow` answers after 100 ms, anything else at once.
struct Counting {
    port: u16,
    stats: Arc<Mutex<HashMap<String, PathStats>>>,
}

impl Counting {
    async fn start(env: &Env) -> Counting {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&env.tls.cert_file)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&env.tls.key_file).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats: Arc<Mutex<HashMap<String, PathStats>>> = Arc::default();
        let st = stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let st = st.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let id = req
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string();
                                {
                                    let mut m = st.lock().unwrap();
                                    let s = m.entry(path.clone()).or_default();
                                    s.live += 1;
                                    s.max_live = s.max_live.max(s.live);
                                    s.arrivals.push(Instant::now());
                                    *s.per_id.entry(id).or_insert(0) += 1;
                                }
                                let _ = req.into_body().collect().await;
                                if path == "/slow" {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                st.lock().unwrap().get_mut(&path).unwrap().live -= 1;
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                    Bytes::from_static(b"ok"),
                                )))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Counting { port, stats }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn with<R>(&self, path: &str, f: impl FnOnce(&PathStats) -> R) -> R {
        let m = self.stats.lock().unwrap();
        f(m.get(path).unwrap_or(&PathStats::default()))
    }
}

/// Most arrivals within any window of `w`.
fn max_in_window(arrivals: &[Instant], w: Duration) -> usize {
    let mut a = arrivals.to_vec();
    a.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..a.len() {
        while a[hi] - a[lo] >= w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Webhook A (max_concurrency 3, 100 ms answers) and B (20/s, 200
/// deliveries) against three instances: A never has more than 3 requests in
/// progress (per-instance limits gave ~9), B never more than its burst plus
/// a second's rate in any second and ~20/s over the run (they gave ~60/s);
/// all delivered once; limited rows waiting are never rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_hold_a_webhooks_concurrency_and_rate_together() {
    let env = Env::new().await;
    let rx = Counting::start(&env).await;
    let a = env.webhook(&rx.url("/slow")).await;
    let b = env.webhook(&rx.url("/rate")).await;
    env.db
        .execute(
            "UPDATE webhooks SET max_concurrency = 3 WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET rate_limit_per_sec = 20 WHERE id = $1",
            &[&b],
        )
        .await
        .unwrap();
    env.count_row_updates().await;
    // Generous timings: a resend after a timeout on a loaded machine is
    // not what this test is about.
    let slow_ok = [
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT_MS", "10000"),
        ("PLAUSIBLE_WEBHOOKS__DELIVERY__LEASE_SECS", "15"),
    ];
    let _d: Vec<_> = (0..3).map(|_| env.spawn_daemon(&slow_ok)).collect();
    // Every instance is up (its listener connected) before the rows come.
    env.wait_until(
        "SELECT count(*) = 3 FROM pg_stat_activity WHERE datname = current_database()
           AND application_name = 'plausible-webhooks-listener'",
        T,
    )
    .await;
    let xacts = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    let (xacts_before, started) = (env.count(xacts).await, Instant::now());
    env.enqueue(a, 90).await;
    env.enqueue(b, 200).await;
    env.wait_until(
        "SELECT count(*) = 290 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;

    // What the waits cost: transactions per instance per second, for the log.
    let xacts_per_sec =
        (env.count(xacts).await - xacts_before) as f64 / started.elapsed().as_secs_f64() / 3.0;
    let (max_live, a_ids) = rx.with("/slow", |s| (s.max_live, s.per_id.clone()));
    assert!(max_live >= 2, "A's requests overlapped at all ({max_live})");
    assert!(
        max_live <= 3,
        "max_concurrency 3 over 3 instances: {max_live} requests in progress at once"
    );
    let (arrivals, b_ids) = rx.with("/rate", |s| (s.arrivals.clone(), s.per_id.clone()));
    let per_sec = max_in_window(&arrivals, Duration::from_secs(1));
    // At claim time: the burst (one second's worth) plus one second's rate.
    // Arrivals lag their claims unevenly at first (the burst's requests
    // open each instance's connection), so a window of arrivals may hold a
    // few more.
    assert!(
        per_sec <= 45,
        "20/s over 3 instances: {per_sec} requests within one second"
    );
    // Past the burst: the rate itself, and a token's jitter. Read from when
    // each instance began the attempt (its `attempted_at`), right after the
    // claim the limit decides, not from arrivals: on a loaded machine a
    // stalled instance's requests reach the receiver bunched (25 arrivals
    // in a second were seen while the claims kept the rate).
    let began: Vec<f64> = env
        .db
        .query(
            "SELECT extract(epoch FROM a.attempted_at)::float8 FROM webhook_delivery_attempts a
             JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.webhook_id = $1",
            &[&b],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let first = began.iter().copied().fold(f64::INFINITY, f64::min);
    let base = Instant::now();
    let steady: Vec<Instant> = began
        .iter()
        .filter(|&&t| t >= first + 1.5)
        .map(|&t| base + Duration::from_secs_f64(t - first))
        .collect();
    let steady_per_sec = max_in_window(&steady, Duration::from_secs(1));
    assert!(
        steady_per_sec <= 22,
        "20/s over 3 instances: {steady_per_sec} requests within one second after the burst"
    );
    let span = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    // 200 at 20/s after a burst of 20: 9 s at claim time, the first
    // arrivals lagging theirs by up to a few hundred ms (per-instance limits:
    // about 3 s).
    assert!(
        span >= Duration::from_millis(8_000),
        "200 requests at 20/s over 3 instances took {span:?} ({:.1}/s)",
        200.0 / span.as_secs_f64()
    );
    eprintln!(
        "measured: A max concurrent {max_live}; B max/1s {per_sec}, after the burst {steady_per_sec}, \
         200 in {span:?} ({:.1}/s); {xacts_per_sec:.0} transactions/s per instance",
        200.0 / span.as_secs_f64()
    );
    for (name, ids, n) in [("A", &a_ids, 90), ("B", &b_ids, 200)] {
        assert_eq!(ids.len(), n, "{name}: every delivery arrived");
        assert!(
            ids.values().all(|&k| k == 1),
            "{name}: a delivery was sent twice"
        );
    }
    // Each delivery: its outcome, the one write of its row (the claim only
    // reads it, sql/0020); nothing else rewritten.
    assert_eq!(env.count("SELECT n FROM row_updates").await, 290);
}

fn args(instance: &str) -> plausible_webhooks::queue::limits::ClaimArgs<'_> {
    plausible_webhooks::queue::limits::ClaimArgs {
        n: 100,
        instance,
        lease_secs: 60.0,
        tracked_ids: &[],
        tracked_held: &[],
        default_max_concurrency: 64,
        max_in_flight: 512,
        default_rate: 0,
        free: 512,
        light: 8,
        reserve: 64,
        bytes_room: 1 << 30,
        idle: true,
    }
}

async fn delivering(env: &Env) -> i64 {
    env.count("SELECT count(*) FROM webhook_deliveries_leases")
        .await
}

/// Two limited claims at once, on two connections, never take more than the
/// limit between them: the first holds the state row while it counts and
/// claims; the second skips it (never waits) and, once the first has
/// committed, counts the first one's claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limited_claims_at_once_cannot_both_take_the_limit() {
    use plausible_webhooks::queue::admission::Blocked;
    use plausible_webhooks::queue::limits;
    let env = Env::new().await;
    let wh = env.webhook("https://127.0.0.1:9/").await;
    env.db
        .execute(
            "UPDATE webhooks SET max_concurrency = 3 WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    env.enqueue(wh, 50).await;
    // Its state row exists (a webhook's first limited claim makes it, and a
    // second claim making it at the same moment waits for the first's
    // commit: not the case under test).
    env.db
        .execute(
            "INSERT INTO webhook_limit_state (webhook_id) VALUES ($1)",
            &[&wh],
        )
        .await
        .unwrap();
    let pool = plausible_webhooks::db::pool(&env.url, 4).unwrap();
    let (mut c1, mut c2) = (pool.get().await.unwrap(), pool.get().await.unwrap());

    // The interleaving that a count in the locking statement gets wrong:
    // the second claim starts while the first holds the lock, uncommitted.
    let t1 = c1.transaction().await.unwrap();
    assert_eq!(limits::lock(&t1, &[wh]).await.unwrap(), vec![wh]);
    let got1 = limits::claim_locked(&t1, &[wh], &args("one"))
        .await
        .unwrap();
    assert_eq!(got1.len(), 3);
    let t2 = c2.transaction().await.unwrap();
    assert!(
        limits::lock(&t2, &[wh]).await.unwrap().is_empty(),
        "the held lock is skipped, not waited for"
    );
    t1.commit().await.unwrap();
    // Locked after the first committed: the next statement sees its claims.
    assert_eq!(limits::lock(&t2, &[wh]).await.unwrap(), vec![wh]);
    let got2 = limits::claim_locked(&t2, &[wh], &args("two"))
        .await
        .unwrap();
    assert_eq!(got2.len(), 0, "the first claim's 3 leases are counted");
    let report = limits::report(&t2, &[wh], 0).await.unwrap();
    assert_eq!(report, vec![(wh, Some(Blocked::Cap))]);
    t2.commit().await.unwrap();
    assert_eq!(delivering(&env).await, 3);

    // A crashed instance's leases stop counting when they expire.
    env.db
        .execute(
            "UPDATE webhook_deliveries_leases SET locked_until = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let l = limits::claim(&mut c1, &[wh], &args("one")).await.unwrap();
    assert_eq!(l.rows.len(), 3);
    env.db
        .execute(
            "WITH l AS (DELETE FROM webhook_deliveries_leases RETURNING delivery_id)
             UPDATE webhook_deliveries d SET status = 'success' FROM l WHERE d.id = l.delivery_id",
            &[],
        )
        .await
        .unwrap();

    // And truly at once, many times: never more than 3 between the two.
    for round in 0..40 {
        let (a1, a2) = (args("one"), args("two"));
        let ids = [wh];
        let (r1, r2) = tokio::join!(
            limits::claim(&mut c1, &ids, &a1),
            limits::claim(&mut c2, &ids, &a2)
        );
        let (n1, n2) = (r1.unwrap().rows.len(), r2.unwrap().rows.len());
        assert!(n1 + n2 <= 3, "round {round}: {n1} + {n2} claimed at once");
        assert_eq!(delivering(&env).await, (n1 + n2) as i64);
        env.db
            .execute(
                "WITH l AS (DELETE FROM webhook_deliveries_leases RETURNING delivery_id)
                 UPDATE webhook_deliveries d SET status = 'success' FROM l WHERE d.id = l.delivery_id",
                &[],
            )
            .await
            .unwrap();
        if env
            .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .await
            < 3
        {
            env.enqueue(wh, 50).await;
        }
    }
}

/// The rate bucket lives in the database: two claimers share one bucket
/// (a burst of one second's worth between them), the next token's time is
/// reported, and a lowered limit takes effect at the next claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimers_share_one_rate_bucket_and_a_changed_rate_applies_at_once() {
    use plausible_webhooks::queue::admission::Blocked;
    use plausible_webhooks::queue::limits;
    let env = Env::new().await;
    let wh = env.webhook("https://127.0.0.1:9/").await;
    env.db
        .execute(
            "UPDATE webhooks SET rate_limit_per_sec = 10 WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    env.enqueue(wh, 100).await;
    let pool = plausible_webhooks::db::pool(&env.url, 4).unwrap();
    let (mut c1, mut c2) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let started = Instant::now();
    let one = limits::claim(&mut c1, &[wh], &args("one")).await.unwrap();
    let two = limits::claim(&mut c2, &[wh], &args("two")).await.unwrap();
    let elapsed = started.elapsed();
    // Refill between the two: at most 10/s of the time that passed.
    let refill = (elapsed.as_secs_f64() * 10.0).floor() as usize;
    assert_eq!(one.rows.len(), 10, "a full bucket: one second's worth");
    assert!(
        two.rows.len() <= refill,
        "the bucket is shared: {} more after {elapsed:?}",
        two.rows.len()
    );
    match two.outcomes[..] {
        [(id, Some(Blocked::Rate(wait)))] => {
            assert_eq!(id, wh);
            assert!(wait <= Duration::from_millis(100), "{wait:?}");
        }
        ref o => panic!("expected a rate hold-off, got {o:?}"),
    }
    // Unlimited now: the webhook's rows are no longer the limited claim's.
    env.db
        .execute(
            "UPDATE webhooks SET rate_limit_per_sec = NULL WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    let after = limits::claim(&mut c1, &[wh], &args("one")).await.unwrap();
    assert_eq!(after.outcomes, vec![(wh, None)]);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_limit_state").await,
        1,
        "one state row per limited webhook"
    );
}

/// A webhook without limits of its own (and no default rate) never touches
/// the limited path: no state row is made for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlimited_webhook_costs_the_limited_path_nothing() {
    let env = Env::new().await;
    let rx = Counting::start(&env).await;
    let wh = env.webhook(&rx.url("/fast")).await;
    let daemon = env.daemon(env.config()).await;
    env.enqueue(wh, 200).await;
    env.wait_until(
        "SELECT count(*) = 200 FROM webhook_deliveries WHERE status = 'success'",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_limit_state").await,
        0
    );
    assert_eq!(
        env.count(
            "SELECT coalesce(seq_scan + idx_scan, 0) FROM pg_stat_user_tables
             WHERE relname = 'webhook_limit_state'"
        )
        .await,
        0,
        "the limited path's table was never read"
    );
}
