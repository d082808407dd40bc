//! Triggers against a real PostgreSQL: spike and drop thresholds, hysteresis,
//! cooldown, baselines, derived thresholds, every goal kind with hostile page
//! paths, late rows, deleted goals, crashes before commit, three daemon
//! processes on the same triggers, and payload privacy. Rounds are driven at
//! chosen instants (`round(now)`), never by sleeping.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::Env;
use plausible_webhooks::admin::catalog::catalog;
use plausible_webhooks::testkit::receiver::always;
use plausible_webhooks::triggers::evaluator::{Evaluator, EvaluatorConfig};
use plausible_webhooks::triggers::goal_scanner::{GoalScanner, GoalScannerConfig};
use plausible_webhooks::triggers::source::AnalyticsSource;
use plausible_webhooks::triggers::BeforeCommit;
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T: StdDuration = StdDuration::from_secs(60);
/// Visitor ids no payload may carry.
const UID: i64 = 7_340_991_182_771_003;
const SID: i64 = 5_120_004_839_557_129;

/// One analytics event (events_v2 columns).
#[derive(Clone)]
struct Ev {
    at: OffsetDateTime,
    name: &'static str,
    path: String,
    user: i64,
    session: i64,
    source: String,
    meta: Vec<(String, String)>,
    scroll: Option<i16>,
}

fn pageview(at: OffsetDateTime, user: i64) -> Ev {
    Ev {
        at,
        name: "pageview",
        path: "/".into(),
        user,
        session: user + 1_000_000,
        source: String::new(),
        meta: vec![],
        scroll: None,
    }
}

fn ev(at: OffsetDateTime, name: &'static str, path: &str) -> Ev {
    Ev {
        path: path.into(),
        name,
        ..pageview(at, UID)
    }
}

/// A whole second, so every store renders the instant alike.
fn t0() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - Duration::nanoseconds(now.nanosecond() as i64)
}

struct Kit {
    env: Env,
    webhook: Uuid,
    pool: deadpool_postgres::Pool,
    source: Arc<AnalyticsSource>,
}

impl Kit {
    async fn new() -> Kit {
        let env = Env::new().await;
        // Not a real receiver: these tests look at the queue, not at POSTs.
        let webhook: Uuid = env
            .db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'w', 'https://hooks.example.test/in', $2) RETURNING id",
                &[&env.site_id, &common::SECRET],
            )
            .await
            .unwrap()
            .get(0);
        let pool = plausible_webhooks::db::pool(&env.url, 4).unwrap();
        let source = Arc::new(AnalyticsSource::from_config(&env.config()).unwrap());
        Kit {
            env,
            webhook,
            pool,
            source,
        }
    }

    /// A new connection pool, as another instance (or a restarted one) has.
    fn fresh_pool(&mut self) {
        self.pool = plausible_webhooks::db::pool(&self.env.url, 4).unwrap();
    }

    fn evaluator(&self, base_url: &str, hook: Option<BeforeCommit>) -> Evaluator {
        Evaluator::new(
            EvaluatorConfig {
                interval: StdDuration::from_secs(60),
                batch: 100,
                base_url: base_url.into(),
                before_commit: hook,
            },
            self.pool.clone(),
            self.source.clone(),
        )
        .unwrap()
    }

    fn scanner(&self, lateness_secs: i64, hook: Option<BeforeCommit>) -> GoalScanner {
        GoalScanner::new(
            GoalScannerConfig {
                interval: StdDuration::from_secs(1),
                batch: 100,
                lateness: Duration::seconds(lateness_secs),
                max_catchup: Duration::hours(1),
                before_commit: hook,
            },
            self.pool.clone(),
            self.source.clone(),
        )
        .unwrap()
    }

    /// A trigger due from `since` on (and, for goals, scanning from `since`).
    async fn trigger(
        &self,
        kind: &str,
        threshold: Option<i32>,
        goal: Option<i64>,
        window: Option<i32>,
        cooldown: i32,
        since: OffsetDateTime,
    ) -> Uuid {
        self.env
            .db
            .query_one(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, goal_id, window_secs, cooldown_secs, next_evaluation_at, inserted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
                &[&self.webhook, &kind, &threshold, &goal, &window, &cooldown, &since],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn goal(
        &self,
        event: Option<&str>,
        page: Option<&str>,
        scroll: i16,
        props: Value,
    ) -> i64 {
        self.env
            .db
            .query_one(
                "INSERT INTO goals (site_id, event_name, page_path, display_name, scroll_threshold, custom_props, inserted_at, updated_at)
                 VALUES ($1, $2, $3, coalesce($2, $3), $4, $5, now(), now()) RETURNING id",
                &[&self.env.site_id, &event, &page, &scroll, &props],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn events(&self, evs: &[Ev]) {
        let rows: Vec<common::EventRow> = evs
            .iter()
            .map(|e| common::EventRow {
                site_id: self.env.site_id,
                at: e.at,
                name: e.name,
                path: &e.path,
                user: e.user,
                session: e.session,
                source: &e.source,
                meta: &e.meta,
                scroll: e.scroll,
            })
            .collect();
        common::insert_events(&self.env.db, &rows).await;
    }

    /// `users` distinct visitors with one pageview each at `at`, ids from `first`.
    async fn visitors(&self, at: OffsetDateTime, first: i64, users: i64) {
        let evs: Vec<Ev> = (first..first + users).map(|u| pageview(at, u)).collect();
        self.events(&evs).await;
    }

    /// (event_type, payload) of every delivery, oldest first.
    async fn deliveries(&self) -> Vec<(String, Value)> {
        self.env
            .db
            .query(
                "SELECT event_type, payload FROM webhook_deliveries ORDER BY inserted_at, payload->>'occurred_at', payload->>'pathname'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spike_fires_at_the_threshold_inclusive_and_ignores_engagement() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger("visitor_spike", Some(3), None, None, 0, t).await;
    let ev = k.evaluator("", None);
    // Two real visitors, and a third who only sent engagement events.
    k.visitors(t - Duration::minutes(1), 1, 2).await;
    k.events(&[Ev {
        name: "engagement",
        ..pageview(t - Duration::minutes(1), 3)
    }])
    .await;
    let r = ev.round(t).await.unwrap();
    assert_eq!((r.evaluated, r.fired), (1, 0), "2 visitors < 3");
    // A visitor a second older than the 5-minute window does not count either.
    k.visitors(
        t + Duration::minutes(1) - Duration::minutes(5) - Duration::seconds(1),
        4,
        1,
    )
    .await;
    let r = ev.round(t + Duration::minutes(1)).await.unwrap();
    assert_eq!(r.fired, 0, "the window is [now - 5 min, now]");
    // The third visitor, exactly 5 minutes old (Plausible's current-visitors
    // query counts `timestamp >= now - window`): 3 >= 3 fires.
    k.visitors(t + Duration::minutes(2) - Duration::minutes(5), 5, 1)
        .await;
    let r = ev.round(t + Duration::minutes(2)).await.unwrap();
    assert_eq!(r.fired, 1);
    let d = k.deliveries().await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, "visitor_spike");
    assert_eq!(d[0].1["visitors"], 3);
    assert_eq!(d[0].1["threshold"], 3);
    assert_eq!(d[0].1["window_secs"], 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_fires_strictly_below_the_threshold() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger("traffic_drop", Some(3), None, Some(3600), 0, t)
        .await;
    let ev = k.evaluator("", None);
    k.visitors(t - Duration::minutes(30), 1, 3).await;
    let r = ev.round(t).await.unwrap();
    assert_eq!((r.evaluated, r.fired), (1, 0), "3 is not < 3");
    // An hour later the 3 visitors have left the window; 2 new ones: 2 < 3.
    k.visitors(t + Duration::minutes(50), 10, 2).await;
    let r = ev.round(t + Duration::minutes(61)).await.unwrap();
    assert_eq!(r.fired, 1);
    let d = k.deliveries().await;
    assert_eq!(d[0].0, "traffic_drop");
    assert_eq!(d[0].1["visitors"], 2);
    assert_eq!(d[0].1["window_secs"], 3600);
    assert!(d[0].1.get("top_sources").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hysteresis_and_cooldown_over_a_sequence_of_instants() {
    let k = Kit::new().await;
    let t = t0();
    let trig = k
        .trigger("visitor_spike", Some(5), None, None, 1800, t)
        .await;
    let ev = k.evaluator("", None);
    let min = Duration::minutes;
    let mut fired_at = vec![];
    let mut next_user = 1;
    // (minute, visitors arriving at that minute). Window 5 min.
    let plan: &[(i64, i64)] = &[
        (0, 6),  // 6 in window: fires
        (1, 1),  // 7: still high, silent
        (3, 0),  // 7: silent
        (6, 0),  // 1 (minute 1 only): re-arms
        (7, 5),  // 6: crossing within 30 min cooldown: held, stays armed
        (8, 0),  // 6: still held
        (31, 6), // 6, cooldown over: fires
        (32, 0), // silent
    ];
    for &(m, n) in plan {
        k.visitors(t + min(m), next_user, n).await;
        next_user += n;
        let r = ev.round(t + min(m)).await.unwrap();
        if r.fired == 1 {
            fired_at.push(m);
        }
        let armed: bool = k
            .env
            .db
            .query_one("SELECT armed FROM webhook_triggers WHERE id = $1", &[&trig])
            .await
            .unwrap()
            .get(0);
        let expect_armed = !matches!(m, 0 | 1 | 3 | 31 | 32);
        assert_eq!(armed, expect_armed, "armed after minute {m}");
    }
    assert_eq!(fired_at, vec![0, 31]);
    assert_eq!(k.deliveries().await.len(), 2);
    // A round before the trigger is due again does nothing.
    let r = ev.round(t + min(32) + Duration::seconds(30)).await.unwrap();
    assert_eq!(r.claimed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spike_payload_baseline_sources_pages_and_dashboard_by_hand() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger("visitor_spike", Some(10), None, None, 0, t).await;
    let day = Duration::days(1);
    // Baseline: the same 5 minutes 1 day ago: 7 visitors; 2 days ago: 14;
    // 3..7 days ago: none; 8 days ago (outside): 100. Mean = 21 / 7 = 3.0.
    k.visitors(t - day - Duration::minutes(2), 1000, 7).await;
    k.visitors(t - day * 2 - Duration::minutes(4), 2000, 14)
        .await;
    k.visitors(t - day * 8 - Duration::minutes(1), 3000, 100)
        .await;
    // Just outside the 1-day-ago window: not in the baseline.
    k.visitors(
        t - day - Duration::minutes(5) - Duration::seconds(1),
        4000,
        50,
    )
    .await;
    // Now: 12 visitors. Sources by unique visitors: Google 3, Twitter 2,
    // Bing 1, DuckDuckGo 1 (tie: byte order), direct traffic excluded.
    let now = t - Duration::seconds(30);
    let sources = [
        "Google",
        "Google",
        "Google",
        "Twitter",
        "Twitter",
        "Bing",
        "DuckDuckGo",
        "Direct / None",
        "Direct / None",
        "",
        "",
        "",
    ];
    let pages = [
        "/", "/", "/", "/", "/pricing", "/pricing", "/pricing", "/blog", "/blog", "/x", "/y", "/z",
    ];
    let evs: Vec<Ev> = (0..12)
        .map(|i| Ev {
            source: sources[i].into(),
            path: pages[i].into(),
            ..pageview(now, 100 + i as i64)
        })
        .collect();
    k.events(&evs).await;
    // The same visitor twice on "/" counts once.
    k.events(&[pageview(now, 100)]).await;
    let ev = k.evaluator("https://plausible.example.com", None);
    let r = ev.round(t).await.unwrap();
    assert_eq!(r.fired, 1);
    // Claim, count, baseline days (in the site's timezone), baselines, top
    // sources, top pages, state update, enqueue; and the tracking triggers'
    // claim (none due).
    assert_eq!(r.queries, 9, "{r:?}");
    let (_, p) = k.deliveries().await.remove(0);
    assert_eq!(p["visitors"], 12);
    assert_eq!(p["baseline_visitors"], 3.0);
    assert_eq!(p["baseline_days"], 7);
    assert_eq!(p["change_percent"], 300.0);
    assert_eq!(p["threshold_source"], "configured");
    assert_eq!(
        p["top_sources"],
        serde_json::json!([
            {"source": "Google", "visitors": 3},
            {"source": "Twitter", "visitors": 2},
            {"source": "Bing", "visitors": 1},
        ])
    );
    assert_eq!(
        p["top_pages"],
        serde_json::json!([
            {"page": "/", "visitors": 4},
            {"page": "/pricing", "visitors": 3},
            {"page": "/blog", "visitors": 2},
        ])
    );
    assert_eq!(
        p["dashboard_url"],
        "https://plausible.example.com/example.com?period=realtime"
    );
    assert_eq!(
        p["window_end"],
        plausible_webhooks::db::timestamp::rfc3339_seconds(t)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_count_the_days_of_the_sites_timezone_across_a_dst_change() {
    let k = Kit::new().await;
    // New York left daylight saving time on Sunday 2026-11-01: 10:00 local
    // is 15:00Z from then on, 14:00Z on the days before.
    k.env
        .db
        .execute(
            "UPDATE sites SET timezone = 'America/New_York' WHERE id = $1",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    let now = time::macros::datetime!(2026-11-03 15:00 UTC);
    k.trigger("visitor_spike", Some(5), None, None, 0, now)
        .await;
    // One visitor at 09:58 local on each of the 7 days before: 14:58Z on
    // Nov 2 and Nov 1, 13:58Z on Oct 27..31. UTC days would look at
    // 14:55-15:00Z and find only two of them (baseline 0.3).
    for k_days in 1..=7i64 {
        let local_offset = if k_days <= 2 { 5 } else { 4 };
        let at = time::macros::datetime!(2026-11-03 09:58 UTC) - Duration::days(k_days)
            + Duration::hours(local_offset);
        k.visitors(at, 100 * k_days, 1).await;
    }
    k.visitors(now - Duration::minutes(1), 1, 7).await;
    let r = k.evaluator("", None).round(now).await.unwrap();
    assert_eq!(r.fired, 1, "{r:?}");
    let (_, p) = k.deliveries().await.remove(0);
    assert_eq!(p["visitors"], 7);
    assert_eq!(p["baseline_visitors"], 1.0, "{p}");
    assert_eq!(p["change_percent"], 600.0);

    // A timezone PostgreSQL does not know reads as UTC, never failing the round.
    k.env
        .db
        .execute(
            "UPDATE sites SET timezone = 'Mars/Olympus' WHERE id = $1",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    let later = now + Duration::hours(2);
    k.env
        .db
        .execute(
            "UPDATE webhook_triggers SET armed = true, next_evaluation_at = $1",
            &[&later],
        )
        .await
        .unwrap();
    k.visitors(later - Duration::minutes(1), 500, 6).await;
    let r = k.evaluator("", None).round(later).await.unwrap();
    assert_eq!(r.fired, 1, "{r:?}");
    let (_, p) = k.deliveries().await.remove(1);
    assert_eq!(p["baseline_visitors"], 0.0, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_threshold_is_derived_from_the_last_seven_days() {
    let k = Kit::new().await;
    let t = t0();
    // 1 hour windows; history: 7 days x 24 windows. 336 (window, visitor)
    // pairs over the week = 2 per window on average -> spike threshold
    // max(10, 2 x 2) = 10; drop threshold floor(2 / 2) = 1.
    let mut evs = vec![];
    for h in 1..=168 {
        evs.push(pageview(t - Duration::hours(h) + Duration::minutes(1), h));
        evs.push(pageview(
            t - Duration::hours(h) + Duration::minutes(2),
            h + 1000,
        ));
    }
    k.events(&evs).await;
    let spike = k
        .trigger("visitor_spike", None, None, Some(3600), 0, t)
        .await;
    let drop = k
        .trigger("traffic_drop", None, None, Some(3600), 0, t)
        .await;
    let ev = k.evaluator("", None);
    let r = ev.round(t).await.unwrap();
    assert_eq!(r.evaluated, 2);
    // Claim, one derivation for both, one count for both, state update; and
    // the tracking triggers' claim (none due).
    assert_eq!((r.queries, r.derived), (5, 2), "{r:?}");
    let derived = |id: Uuid| {
        let db = &k.env.db;
        async move {
            db.query_one(
                "SELECT derived_threshold FROM webhook_triggers WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, Option<i32>>(0)
        }
    };
    assert_eq!(derived(spike).await, Some(10));
    assert_eq!(derived(drop).await, Some(1));
    // The last hour had 2 visitors: no spike (< 10), no drop (2 >= 1).
    assert_eq!(r.fired, 0);
    // 10 visitors in the next hour: the spike fires with the derived threshold.
    k.visitors(t + Duration::minutes(30), 50_000, 10).await;
    let r = ev.round(t + Duration::minutes(61)).await.unwrap();
    assert_eq!(r.fired, 1);
    let (kind, p) = k.deliveries().await.remove(0);
    assert_eq!(kind, "visitor_spike");
    assert_eq!(p["threshold"], 10);
    assert_eq!(p["threshold_source"], "derived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_goal_kind_with_hostile_paths_and_custom_props() {
    let k = Kit::new().await;
    let t = t0();
    let signup = k
        .goal(
            Some("Signup"),
            None,
            -1,
            serde_json::json!({"plan": "pro", "via": "ad"}),
        )
        .await;
    let dot = k.goal(None, Some("/a.b"), -1, serde_json::json!({})).await;
    let paren = k
        .goal(None, Some("/x(y)*"), -1, serde_json::json!({}))
        .await;
    let query = k.goal(None, Some("/p?q"), -1, serde_json::json!({})).await;
    let all = k.goal(None, Some("/**"), -1, serde_json::json!({})).await;
    let bar = k.goal(None, Some("a|b"), -1, serde_json::json!({})).await;
    let alt = k
        .goal(None, Some("/shop*|/cart"), -1, serde_json::json!({}))
        .await;
    let scroll = k
        .goal(None, Some("/blog/*"), 50, serde_json::json!({}))
        .await;
    k.trigger(
        "goal_completion",
        None,
        None,
        None,
        0,
        t - Duration::seconds(30),
    )
    .await;
    let at = t - Duration::seconds(10);
    let props = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    let mut evs = vec![
        // Event goal: both props present (in any order, among others) match.
        Ev {
            meta: props(&[("x", "1"), ("via", "ad"), ("plan", "pro")]),
            ..ev(at, "Signup", "/register")
        },
        // One prop missing, one with the wrong value, key/value at different indexes: no.
        Ev {
            meta: props(&[("plan", "pro")]),
            ..ev(at, "Signup", "/register")
        },
        Ev {
            meta: props(&[("plan", "free"), ("via", "ad")]),
            ..ev(at, "Signup", "/register")
        },
        Ev {
            meta: props(&[("plan", "ad"), ("via", "pro")]),
            ..ev(at, "Signup", "/register")
        },
        // Page goals: literal `.`, `(`, `?`; `|` literal without `*`.
        ev(at, "pageview", "/a.b"),
        ev(at, "pageview", "/axb"),
        ev(at, "pageview", "/x(y)/z"),
        ev(at, "pageview", "/xy/z"),
        ev(at, "pageview", "/p?q"),
        ev(at, "pageview", "/pq"),
        ev(at, "pageview", "a|b"),
        ev(at, "pageview", "a"),
        // `|` with `*`: ^/shop.* or /cart$.
        ev(at, "pageview", "/shop/item"),
        ev(at, "pageview", "/old/cart"),
        ev(at, "pageview", "/cartx"),
        // A custom event on a page path is not a page goal completion.
        ev(at, "Signup", "/a.b"),
        // Scroll goal: engagement, path matches, depth 50..=100.
        Ev {
            scroll: Some(50),
            ..ev(at, "engagement", "/blog/post")
        },
        Ev {
            scroll: Some(49),
            ..ev(at, "engagement", "/blog/post")
        },
        Ev {
            scroll: Some(255),
            ..ev(at, "engagement", "/blog/post")
        },
        Ev {
            scroll: Some(90),
            ..ev(at, "engagement", "/news/post")
        },
    ];
    // Give every event its own session so no two are identical.
    for (i, e) in evs.iter_mut().enumerate() {
        e.session = SID + i as i64;
    }
    // The same visit leaves the page again later, deeper: still one scroll
    // completion (one per visit of a page, not per engagement event).
    let first_scroll = evs.iter().find(|e| e.scroll == Some(50)).unwrap().clone();
    evs.push(Ev {
        at: at + Duration::seconds(3),
        scroll: Some(90),
        ..first_scroll
    });
    k.events(&evs).await;
    let r = k.scanner(60, None).round(t).await.unwrap();
    let got: HashMap<i64, Vec<String>> =
        k.deliveries()
            .await
            .into_iter()
            .fold(HashMap::new(), |mut m, (kind, p)| {
                assert_eq!(kind, "goal_completion");
                m.entry(p["goal_id"].as_i64().unwrap())
                    .or_default()
                    .push(p["pathname"].as_str().unwrap().to_string());
                m
            });
    let paths = |g: i64| {
        let mut v = got.get(&g).cloned().unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(paths(signup), vec!["/register"]);
    assert_eq!(paths(dot), vec!["/a.b"]);
    assert_eq!(paths(paren), vec!["/x(y)/z"]);
    assert_eq!(paths(query), vec!["/p?q"]);
    assert_eq!(paths(bar), vec!["a|b"]);
    assert_eq!(paths(alt), vec!["/old/cart", "/shop/item"]);
    assert_eq!(paths(scroll), vec!["/blog/post"]);
    // `/**` matches every pageview starting with `/` (not "a|b", "a").
    assert_eq!(
        paths(all),
        vec![
            "/a.b",
            "/axb",
            "/cartx",
            "/old/cart",
            "/p?q",
            "/pq",
            "/shop/item",
            "/x(y)/z",
            "/xy/z"
        ]
    );
    assert_eq!(
        r.enqueued as usize,
        got.values().map(Vec::len).sum::<usize>()
    );
    // A payload, whole: aggregate fields only.
    let (_, p) = k
        .deliveries()
        .await
        .into_iter()
        .find(|(_, p)| p["goal_id"] == signup)
        .unwrap();
    assert_eq!(p["goal_name"], "Signup");
    assert_eq!(p["goal_type"], "event");
    assert_eq!(p["matched"], "Signup");
    assert_eq!(p["visitor_count"], 1);
    assert_eq!(
        p["custom_props"],
        serde_json::json!({"plan": "pro", "via": "ad"})
    );
    assert_eq!(
        p["occurred_at"],
        plausible_webhooks::db::timestamp::rfc3339_seconds(at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_out_of_order_and_identical_events_are_each_sent_once() {
    let k = Kit::new().await;
    let t = t0();
    let g = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    let scanner = k.scanner(60, None);
    let buy = |at| Ev {
        ..ev(at, "Buy", "/checkout")
    };
    // Two identical events (same second, visitor, session): two completions.
    k.events(&[
        buy(t - Duration::seconds(20)),
        buy(t - Duration::seconds(20)),
    ])
    .await;
    let r = scanner.round(t).await.unwrap();
    assert_eq!((r.completions, r.enqueued), (2, 2));
    // A second later nothing is new: the overlap finds the same two, adds none.
    let r = scanner.round(t + Duration::seconds(1)).await.unwrap();
    assert_eq!((r.completions, r.enqueued), (2, 0));
    // Rows committed late, stamped before the last scan (within the 60 s
    // lateness), out of order; and a third identical copy of the pair.
    k.events(&[
        buy(t - Duration::seconds(5)),
        buy(t - Duration::seconds(40)),
        buy(t - Duration::seconds(20)),
    ])
    .await;
    let r = scanner.round(t + Duration::seconds(2)).await.unwrap();
    assert_eq!(r.enqueued, 3);
    // Too late: stamped before the scan window (cursor - lateness); not sent
    // (the documented limit of the lateness window).
    k.events(&[buy(t - Duration::seconds(200))]).await;
    let r = scanner.round(t + Duration::seconds(3)).await.unwrap();
    assert_eq!(r.enqueued, 0);
    assert_eq!(k.deliveries().await.len(), 5);
    let keys = k
        .env
        .count("SELECT count(DISTINCT idempotency_key) FROM webhook_deliveries")
        .await;
    assert_eq!(keys, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_goal_takes_its_trigger_along_never_widening_it() {
    let k = Kit::new().await;
    let t = t0();
    let a = k.goal(Some("A"), None, -1, serde_json::json!({})).await;
    let _b = k.goal(Some("B"), None, -1, serde_json::json!({})).await;
    let trig = k
        .trigger(
            "goal_completion",
            None,
            Some(a),
            None,
            0,
            t - Duration::minutes(1),
        )
        .await;
    k.env
        .db
        .execute("DELETE FROM goals WHERE id = $1", &[&a])
        .await
        .unwrap();
    k.events(&[ev(t - Duration::seconds(5), "B", "/")]).await;
    let r = k.scanner(60, None).round(t).await.unwrap();
    assert_eq!(r.claimed, 0);
    assert_eq!(
        k.deliveries().await.len(),
        0,
        "B must not be sent for A's trigger"
    );
    let left = k
        .env
        .count(&format!(
            "SELECT count(*) FROM webhook_triggers WHERE id = '{trig}'"
        ))
        .await;
    assert_eq!(left, 0);
    // Another site's goal is refused with a clear message.
    let other = plausible_webhooks::testkit::create_site(&k.env.db, "other.example")
        .await
        .unwrap();
    let foreign: i64 = k
        .env
        .db
        .query_one(
            "INSERT INTO goals (site_id, event_name, display_name, inserted_at, updated_at) VALUES ($1, 'X', 'X', now(), now()) RETURNING id",
            &[&other],
        )
        .await
        .unwrap()
        .get(0);
    let err = k
        .env
        .db
        .execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, goal_id) VALUES ($1, 'goal_completion', $2)",
            &[&k.webhook, &foreign],
        )
        .await
        .unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("is not a goal of the webhook's site"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_is_skipped_and_resumes_without_a_backlog() {
    let k = Kit::new().await;
    let t = t0();
    let g = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    k.trigger(
        "visitor_spike",
        Some(1),
        None,
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    k.env
        .db
        .execute("UPDATE webhooks SET enabled = false", &[])
        .await
        .unwrap();
    k.events(&[ev(t - Duration::seconds(100), "Buy", "/")])
        .await;
    let r = k.evaluator("", None).round(t).await.unwrap();
    assert_eq!((r.claimed, r.skipped, r.fired), (1, 1, 0));
    k.scanner(10, None).round(t).await.unwrap();
    k.env
        .db
        .execute("UPDATE webhooks SET enabled = true", &[])
        .await
        .unwrap();
    let r = k
        .scanner(10, None)
        .round(t + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        r.enqueued, 0,
        "completions while disabled are not sent later"
    );
    assert_eq!(k.deliveries().await.len(), 0);
}

/// A crash between the round's work and its commit (the connection dies
/// there): nothing is enqueued, the state is unchanged, and the next round
/// fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_commit_loses_and_doubles_nothing() {
    let mut k = Kit::new().await;
    let t = t0();
    let g = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(1),
    )
    .await;
    let spike = k
        .trigger(
            "visitor_spike",
            Some(2),
            None,
            None,
            0,
            t - Duration::minutes(1),
        )
        .await;
    k.visitors(t - Duration::seconds(30), 1, 3).await;
    k.events(&[ev(t - Duration::seconds(30), "Buy", "/")]).await;

    // The hook kills every other backend of this database: the round's own
    // connection dies with its transaction open, as in a crash.
    let url = k.env.url.clone();
    let kill: BeforeCommit = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let c = plausible_webhooks::db::connect(&url).await.unwrap();
            let n: i64 = c
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND state = 'idle in transaction'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(n >= 1, "the round's transaction was open");
        })
    });
    assert!(k.evaluator("", Some(kill.clone())).round(t).await.is_err());
    k.fresh_pool();
    assert!(k.scanner(60, Some(kill)).round(t).await.is_err());
    k.fresh_pool();
    assert_eq!(k.deliveries().await.len(), 0);
    let (armed, evaluated): (bool, Option<OffsetDateTime>) = {
        let r = k
            .env
            .db
            .query_one(
                "SELECT armed, last_evaluated_at FROM webhook_triggers WHERE id = $1",
                &[&spike],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(armed && evaluated.is_none(), "state rolled back");

    // The failed batch was set aside until its next evaluation (a minute for
    // spike/drop, a second for goals); then another round (as another
    // instance would) evaluates them: one notification each.
    let k2 = k;
    let r = k2
        .evaluator("", None)
        .round(t + Duration::seconds(61))
        .await
        .unwrap();
    assert_eq!(r.fired, 1);
    let r = k2
        .scanner(60, None)
        .round(t + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(r.enqueued, 1);
    let again = k2
        .evaluator("", None)
        .round(t + Duration::seconds(121))
        .await
        .unwrap();
    assert_eq!((again.evaluated, again.fired), (1, 0), "still high: silent");
    let kinds: Vec<String> = k2.deliveries().await.into_iter().map(|d| d.0).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_payload_carries_a_visitor_or_session_id() {
    let k = Kit::new().await;
    let t = t0();
    let g = k.goal(None, Some("/**"), -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(1),
    )
    .await;
    k.trigger("visitor_spike", Some(1), None, None, 0, t).await;
    k.trigger("traffic_drop", Some(1000), None, None, 0, t)
        .await;
    k.events(&[Ev {
        source: "Google".into(),
        ..ev(t - Duration::seconds(3), "pageview", "/landing")
    }])
    .await;
    assert_eq!(
        k.evaluator("https://p.example", None)
            .round(t)
            .await
            .unwrap()
            .fired,
        2
    );
    assert_eq!(k.scanner(60, None).round(t).await.unwrap().enqueued, 1);
    let d = k.deliveries().await;
    assert_eq!(d.len(), 3);
    let forbidden = ["user_id", "session_id", "ip", "user_agent", "visitor_id"];
    for (kind, p) in &d {
        let text = p.to_string();
        assert!(!text.contains(&UID.to_string()), "{kind}: {text}");
        assert!(
            !text.contains(&(UID + 1_000_000).to_string()),
            "{kind}: {text}"
        );
        assert!(!text.contains(&SID.to_string()), "{kind}: {text}");
        for key in forbidden {
            assert!(p.get(key).is_none(), "{kind} carries {key}");
        }
    }
}

/// Three daemon processes on one database, evaluating and scanning the same
/// triggers every second: every trigger fires once, every completion is
/// delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_never_double_a_notification() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let t = t0();
    let mut webhooks = vec![];
    for i in 0..12 {
        let w: Uuid = env
            .db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&env.site_id, &format!("w{i}"), &rx.url("/hook"), &common::SECRET],
            )
            .await
            .unwrap()
            .get(0);
        webhooks.push(w);
    }
    let goal: i64 = env
        .db
        .query_one(
            "INSERT INTO goals (site_id, event_name, display_name, inserted_at, updated_at) VALUES ($1, 'Buy', 'Buy', now(), now()) RETURNING id",
            &[&env.site_id],
        )
        .await
        .unwrap()
        .get(0);
    // 3 spike triggers per webhook (36) and one goal trigger per webhook (12).
    for w in &webhooks {
        for _ in 0..3 {
            env.db
                .execute(
                    "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, cooldown_secs) VALUES ($1, 'visitor_spike', 5, 0)",
                    &[w],
                )
                .await
                .unwrap();
        }
        env.db
            .execute(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type, goal_id, inserted_at) VALUES ($1, 'goal_completion', $2, $3)",
                &[w, &goal, &(t - Duration::minutes(1))],
            )
            .await
            .unwrap();
    }
    // 6 visitors (spike) and 10 purchases (distinct sessions).
    env.db
        .execute(
            "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id)
             SELECT $1, ($2::timestamptz AT TIME ZONE 'UTC') - make_interval(secs => g), CASE WHEN g <= 10 THEN 'Buy' ELSE 'pageview' END, '/', g % 6, g
             FROM generate_series(1, 16) g",
            &[&env.site_id, &t],
        )
        .await
        .unwrap();
    let extra = [
        (
            "PLAUSIBLE_WEBHOOKS__TRIGGERS__EVALUATION_INTERVAL_SECS",
            "1",
        ),
        ("PLAUSIBLE_WEBHOOKS__TRIGGERS__EVALUATION_BATCH", "2"),
        ("PLAUSIBLE_WEBHOOKS__TRIGGERS__GOAL_SCAN_INTERVAL_MS", "100"),
    ];
    let mut daemons: Vec<_> = (0..3).map(|_| env.spawn_daemon(&extra)).collect();
    let want = 36 + 12 * 10;
    rx.wait_for(want, T).await.unwrap();
    // Let every trigger be evaluated again after the last POST (a doubling
    // would show now), then stop them and count.
    let arrived: OffsetDateTime = env.db.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let arrived = arrived
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    env.wait_until(
        &format!(
            "SELECT bool_and(last_evaluated_at > '{arrived}'::timestamptz + interval '1 second') FROM webhook_triggers"
        ),
        T,
    )
    .await;
    for d in &mut daemons {
        d.signal(libc::SIGTERM);
    }
    for d in &mut daemons {
        assert!(d.wait_exit(T).await.success());
    }
    let reqs = rx.requests();
    let ids: HashSet<String> = reqs
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(reqs.len(), want, "every POST once");
    assert_eq!(ids.len(), want);
    let per_event: HashMap<String, usize> = reqs.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.json()["event"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(per_event["visitor_spike"], 36);
    assert_eq!(per_event["goal_completion"], 120);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        want as i64
    );
}

/// README's recipe: an existing table with other names, mapped by a view in
/// its own schema (timestamptz, numeric ids); and a clear error for a table
/// that lacks a column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_maps_another_table_and_a_bad_table_is_named() {
    let mut k = Kit::new().await;
    let t = t0();
    k.env
        .db
        .batch_execute(
            "CREATE TABLE my_events (site bigint, occurred_at timestamptz, event_name text, path text,
                                     visitor numeric(20), session numeric(20), source text,
                                     prop_keys text[], prop_values text[], scroll_pct smallint);
             CREATE SCHEMA analytics;
             CREATE VIEW analytics.events_v2 AS
               SELECT site AS site_id, occurred_at AS \"timestamp\", event_name AS name, path AS pathname,
                      visitor AS user_id, session AS session_id, coalesce(source, '') AS referrer_source,
                      prop_keys AS meta_key, prop_values AS meta_value, scroll_pct AS scroll_depth
               FROM my_events;",
        )
        .await
        .unwrap();
    k.env
        .db
        .execute(
            "INSERT INTO my_events SELECT $1, $2::timestamptz - interval '1 minute', 'pageview', '/', 18446744073709551615 - g, g, 'Google', '{}', '{}', NULL
             FROM generate_series(1, 4) g",
            &[&k.env.site_id, &t],
        )
        .await
        .unwrap();
    // NULLs where Plausible never has them (a custom event without a path,
    // unknown visitor): matched, never a crash.
    k.env
        .db
        .execute(
            "INSERT INTO my_events (site, occurred_at, event_name, path, visitor, session)
             VALUES ($1, $2::timestamptz - interval '2 minutes', 'Buy', NULL, NULL, NULL)",
            &[&k.env.site_id, &t],
        )
        .await
        .unwrap();
    let buy = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(buy),
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    let g = k.goal(None, Some("/"), -1, serde_json::json!({})).await;
    k.trigger("visitor_spike", Some(4), None, None, 0, t).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    let mut cfg = k.env.config();
    cfg.analytics.table = "analytics.events_v2".into();
    k.source = Arc::new(AnalyticsSource::from_config(&cfg).unwrap());
    k.source.check().await.unwrap();
    assert_eq!(k.evaluator("", None).round(t).await.unwrap().fired, 1);
    assert_eq!(k.scanner(60, None).round(t).await.unwrap().enqueued, 5);
    let (_, p) = k.deliveries().await.remove(0);
    assert_eq!(p["top_sources"][0]["source"], "Google");

    cfg.analytics.table = "my_events".into();
    let err = AnalyticsSource::from_config(&cfg)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"my_events\"") && err.contains("site_id") && err.contains("view"),
        "{err}"
    );
}

/// A batch that fails (here: rows of one site that raise an error when read)
/// is set aside until its next evaluation; the other batches go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_set_aside_and_holds_back_no_other() {
    let mut k = Kit::new().await;
    let t = t0();
    let bad_site = plausible_webhooks::testkit::create_site(&k.env.db, "broken.example")
        .await
        .unwrap();
    let bad_webhook: Uuid = k
        .env
        .db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'b', 'https://hooks.example.test/b', $2) RETURNING id",
            &[&bad_site, &common::SECRET],
        )
        .await
        .unwrap()
        .get(0);
    k.env
        .db
        .batch_execute(&format!(
            "CREATE VIEW broken_events AS
               SELECT site_id, \"timestamp\", name, pathname,
                      CASE WHEN site_id = {bad_site} THEN user_id / 0 ELSE user_id END AS user_id,
                      session_id, referrer_source, meta_key, meta_value, scroll_depth
               FROM events_v2"
        ))
        .await
        .unwrap();
    k.visitors(t - Duration::minutes(1), 1, 3).await;
    k.env
        .db
        .execute(
            "INSERT INTO events_v2 (site_id, \"timestamp\", name, user_id, session_id) VALUES ($1, $2::timestamptz AT TIME ZONE 'UTC', 'pageview', 1, 1)",
            &[&bad_site, &(t - Duration::minutes(1))],
        )
        .await
        .unwrap();
    // The broken site's trigger is due first, so it is the first batch.
    let bad: Uuid = k
        .env
        .db
        .query_one(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, next_evaluation_at) VALUES ($1, 'visitor_spike', 1, $2) RETURNING id",
            &[&bad_webhook, &(t - Duration::minutes(2))],
        )
        .await
        .unwrap()
        .get(0);
    k.trigger(
        "visitor_spike",
        Some(3),
        None,
        None,
        0,
        t - Duration::minutes(1),
    )
    .await;
    let mut cfg = k.env.config();
    cfg.analytics.table = "broken_events".into();
    k.source = Arc::new(AnalyticsSource::from_config(&cfg).unwrap());
    let ev = Evaluator::new(
        EvaluatorConfig {
            interval: StdDuration::from_secs(60),
            batch: 1,
            base_url: String::new(),
            before_commit: None,
        },
        k.pool.clone(),
        k.source.clone(),
    )
    .unwrap();
    let err = ev.round(t).await.unwrap_err();
    assert!(format!("{err:#}").contains("division by zero"), "{err:#}");
    // The healthy trigger was evaluated and fired despite the failure before it.
    let d = k.deliveries().await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1["visitors"], 3);
    let next: OffsetDateTime = k
        .env
        .db
        .query_one(
            "SELECT next_evaluation_at FROM webhook_triggers WHERE id = $1",
            &[&bad],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        next,
        t + Duration::minutes(1),
        "set aside until its next evaluation"
    );
}

/// A goal trigger switched off and on again does not replay what happened
/// while it was off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reenabled_goal_trigger_starts_afresh() {
    let k = Kit::new().await;
    let t = t0();
    let g = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    let trig = k
        .trigger(
            "goal_completion",
            None,
            Some(g),
            None,
            0,
            t - Duration::minutes(10),
        )
        .await;
    let scanner = k.scanner(60, None);
    k.events(&[ev(t - Duration::minutes(9), "Buy", "/before")])
        .await;
    assert_eq!(
        scanner
            .round(t - Duration::minutes(8))
            .await
            .unwrap()
            .enqueued,
        1
    );
    k.env
        .db
        .execute(
            "UPDATE webhook_triggers SET enabled = false WHERE id = $1",
            &[&trig],
        )
        .await
        .unwrap();
    k.events(&[ev(t - Duration::seconds(30), "Buy", "/while-off")])
        .await;
    k.env
        .db
        .execute(
            "UPDATE webhook_triggers SET enabled = true WHERE id = $1",
            &[&trig],
        )
        .await
        .unwrap();
    k.events(&[ev(t + Duration::seconds(5), "Buy", "/after")])
        .await;
    let r = scanner.round(t + Duration::seconds(10)).await.unwrap();
    assert_eq!(r.enqueued, 1);
    let paths: Vec<String> = k
        .deliveries()
        .await
        .into_iter()
        .map(|d| d.1["pathname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, vec!["/before", "/after"]);
}

/// The reason `triggers list` and the API show for each of the webhook's triggers.
async fn paused_reasons(k: &Kit) -> Vec<Option<String>> {
    use plausible_webhooks::admin::{access::Principal, core::Admin};
    Admin::from_config(&k.env.config())
        .unwrap()
        .list_triggers(&Principal::Operator, k.webhook)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.paused_reason)
        .collect()
}

async fn next_evaluations(k: &Kit) -> Vec<OffsetDateTime> {
    k.env
        .db
        .query(
            "SELECT next_evaluation_at FROM webhook_triggers ORDER BY inserted_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Plausible's notifier skips locked teams: so do spike/drop and goal
/// triggers, claimed once per PAUSED_RECHECK rather than every round, and
/// completions while locked are not sent after the unlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_team_pauses_its_triggers_without_replaying_them_after_the_unlock() {
    let k = Kit::new().await;
    let t = t0();
    let g = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    k.trigger(
        "visitor_spike",
        Some(1),
        None,
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    let lock = |locked: bool| {
        let db = &k.env.db;
        let site = k.env.site_id;
        async move {
            db.execute(
                "UPDATE teams SET locked = $2, updated_at = now()
                 WHERE id = (SELECT team_id FROM sites WHERE id = $1)",
                &[&site, &locked],
            )
            .await
            .unwrap();
        }
    };
    assert_eq!(paused_reasons(&k).await, vec![None, None]);
    lock(true).await;
    assert_eq!(
        paused_reasons(&k).await,
        vec![
            Some("team locked".to_string()),
            Some("team locked".to_string())
        ]
    );
    k.visitors(t - Duration::minutes(1), 1, 2).await;
    k.events(&[ev(t - Duration::seconds(30), "Buy", "/")]).await;

    let r = k.evaluator("", None).round(t).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.evaluated, r.fired), (1, 1, 0, 0));
    let r = k.scanner(10, None).round(t).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.enqueued), (1, 1, 0));
    // Pushed a minute on (not claimed again every 1 s scan or every round).
    for at in next_evaluations(&k).await {
        assert!(at >= t + Duration::minutes(1), "{at} is before {t} + 1 min");
    }
    let r = k
        .scanner(10, None)
        .round(t + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(r.claimed, 0);

    // Unlocked: the purchase made while locked is not sent late; a new one is.
    lock(false).await;
    assert_eq!(paused_reasons(&k).await, vec![None, None]);
    let t2 = t + Duration::minutes(1);
    let r = k.scanner(10, None).round(t2).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.enqueued), (1, 0, 0));
    k.events(&[ev(t2 + Duration::seconds(1), "Buy", "/after")])
        .await;
    let r = k
        .scanner(10, None)
        .round(t2 + Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(r.enqueued, 1);
    k.visitors(t2 - Duration::seconds(10), 10, 1).await;
    let r = k.evaluator("", None).round(t2).await.unwrap();
    assert_eq!((r.paused, r.fired), (0, 1));
    let d = k.deliveries().await;
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].1["pathname"], "/after");
}

/// Plausible's notifier keeps teams whose accept_traffic_until is after
/// today (UTC); from that day on the triggers are paused, the date named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_past_accept_traffic_until_pauses_its_triggers() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger(
        "visitor_spike",
        Some(1),
        None,
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    k.visitors(t - Duration::minutes(1), 1, 1).await;
    let set = |days: i32| {
        let db = &k.env.db;
        let site = k.env.site_id;
        async move {
            db.query_one(
                "UPDATE teams SET accept_traffic_until = (now() AT TIME ZONE 'UTC')::date + $2::int
                 WHERE id = (SELECT team_id FROM sites WHERE id = $1)
                 RETURNING to_char(accept_traffic_until, 'YYYY-MM-DD')",
                &[&site, &days],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    let today = set(0).await;
    assert_eq!(
        paused_reasons(&k).await,
        vec![Some(format!("team past accept_traffic_until ({today})"))]
    );
    let r = k.evaluator("", None).round(t).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.fired), (1, 1, 0));

    // Tomorrow: the team still accepts traffic today, the trigger runs.
    set(1).await;
    assert_eq!(paused_reasons(&k).await, vec![None]);
    k.env
        .db
        .execute("UPDATE webhook_triggers SET next_evaluation_at = $1", &[&t])
        .await
        .unwrap();
    let r = k.evaluator("", None).round(t).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.fired), (1, 0, 1));
}

/// Plausible's notifier inner-joins the site's team and does not read
/// `sites.locked`: a site without a team is paused, a locked site alone is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_without_a_team_is_paused_and_a_locked_site_alone_is_not() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger(
        "visitor_spike",
        Some(1),
        None,
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    k.visitors(t - Duration::minutes(1), 1, 1).await;
    k.env
        .db
        .execute(
            "UPDATE sites SET locked = true WHERE id = $1",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    assert_eq!(paused_reasons(&k).await, vec![None]);
    let r = k.evaluator("", None).round(t).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.fired), (1, 0, 1));

    // The team deleted: Plausible's `ON DELETE SET NULL` leaves the site teamless.
    k.env
        .db
        .execute(
            "DELETE FROM teams WHERE id = (SELECT team_id FROM sites WHERE id = $1)",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    assert_eq!(
        paused_reasons(&k).await,
        vec![Some("site has no team".to_string())]
    );
    let t2 = t + Duration::hours(2);
    k.visitors(t2 - Duration::minutes(1), 5, 1).await;
    let r = k.evaluator("", None).round(t2).await.unwrap();
    assert_eq!((r.claimed, r.paused, r.fired), (1, 1, 0));
}

/// A goal completion whose payload is over the limit (a page path of 5,000
/// characters, the limit at its 4 KiB minimum) does not fail the round: the
/// others of the batch are enqueued, and it is recorded as a failed delivery
/// naming its size and the limit, once (its idempotency key holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_payload_over_the_limit_is_recorded_failed_and_stops_no_other() {
    let k = Kit::new().await;
    let mut cfg = k.env.config();
    cfg.delivery.max_payload_bytes = plausible_webhooks::config::MIN_MAX_PAYLOAD_BYTES;
    plausible_webhooks::db::settings::apply(&k.env.db, &cfg)
        .await
        .unwrap();
    let t = t0();
    let g = k.goal(Some("Buy"), None, -1, serde_json::json!({})).await;
    k.trigger(
        "goal_completion",
        None,
        Some(g),
        None,
        0,
        t - Duration::minutes(5),
    )
    .await;
    let long = format!("/{}", "p".repeat(5_000));
    k.events(&[
        ev(t - Duration::seconds(30), "Buy", &long),
        ev(t - Duration::seconds(20), "Buy", "/checkout"),
    ])
    .await;
    let scanner = k.scanner(60, None);
    let r = scanner.round(t).await.unwrap();
    assert_eq!((r.completions, r.enqueued), (2, 2));
    let rows = k
        .env
        .db
        .query(
            "SELECT status, payload, coalesce(last_error, ''), finished_at IS NOT NULL
             FROM webhook_deliveries ORDER BY payload ? 'pathname' DESC",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (status, payload): (String, Value) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(
        (status.as_str(), payload["pathname"].as_str()),
        ("pending", Some("/checkout"))
    );
    let (status, payload, error, finished): (String, Value, String, bool) = (
        rows[1].get(0),
        rows[1].get(1),
        rows[1].get(2),
        rows[1].get(3),
    );
    assert_eq!(status, "failed");
    assert!(finished);
    let bytes = payload["payload_omitted"]["bytes"].as_i64().unwrap();
    assert!(bytes > 5_000, "{payload}");
    assert_eq!(payload["payload_omitted"]["limit_bytes"], 4096, "{payload}");
    for words in [
        bytes.to_string().as_str(),
        "4096",
        "max_payload_bytes",
        "not sent",
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }
    // The next round finds the same two completions and adds nothing.
    let r = scanner.round(t + Duration::seconds(1)).await.unwrap();
    assert_eq!((r.completions, r.enqueued), (2, 0));
}

/// The `test` event's samples carry exactly the keys real events carry, so
/// a receiver written against `test` does not break on a real event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_events_samples_have_exactly_the_keys_of_real_events() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger("visitor_spike", Some(1), None, None, 0, t).await;
    k.trigger("traffic_drop", Some(100), None, None, 0, t).await;
    k.goal(Some("Signup"), None, -1, serde_json::json!({}))
        .await;
    k.trigger(
        "goal_completion",
        None,
        None,
        None,
        0,
        t - Duration::seconds(30),
    )
    .await;
    k.visitors(t - Duration::minutes(1), 1, 3).await;
    k.events(&[ev(t - Duration::seconds(10), "Signup", "/register")])
        .await;
    let r = k
        .evaluator("https://plausible.example.com", None)
        .round(t)
        .await
        .unwrap();
    assert_eq!(r.fired, 2, "{r:?}");
    k.scanner(60, None).round(t).await.unwrap();
    let real: HashMap<String, Value> = k.deliveries().await.into_iter().collect();
    let sample = plausible_webhooks::admin::catalog::test_payload(&[]);
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    for event in ["visitor_spike", "traffic_drop", "goal_completion"] {
        let real = real
            .get(event)
            .unwrap_or_else(|| panic!("no real {event}: {real:?}"));
        assert_eq!(
            keys(&sample["samples"][event]),
            keys(real),
            "the test sample of {event} and a real one"
        );
        // The catalog's schema (GET /api/event-types) takes the real event.
        let entry = catalog()
            .into_iter()
            .find(|e| e.name == event)
            .unwrap_or_else(|| panic!("{event} is not in the catalog"));
        let schema = jsonschema::options()
            .should_validate_formats(true)
            .build(&entry.schema)
            .unwrap();
        let errors: Vec<String> = schema.iter_errors(real).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "a real {event} against its schema: {errors:?}\n{real}"
        );
        // And the schema is strict enough to notice a key it does not know.
        let mut extra = real.clone();
        extra["unheard_of"] = Value::from(1);
        assert!(
            !schema.is_valid(&extra),
            "{event}'s schema takes unknown keys"
        );
    }
}

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Kit {
    /// A custom_event (or, with `mode` digest, goal_completion) trigger
    /// scanning from `since`.
    async fn occurrence_trigger(
        &self,
        kind: &str,
        event: Option<&str>,
        props: Value,
        mode: &str,
        window: Option<i32>,
        since: OffsetDateTime,
    ) -> Uuid {
        self.env
            .db
            .query_one(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type, event_name, event_props, delivery_mode, window_secs, next_evaluation_at, inserted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
                &[&self.webhook, &kind, &event, &props, &mode, &window, &since],
            )
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_event_fires_per_occurrence_with_its_props_late_safe_and_once() {
    let k = Kit::new().await;
    let t = t0();
    let since = t - Duration::minutes(5);
    // Any event name, not a goal of the site; props matched as a goal's.
    let pro = k
        .occurrence_trigger(
            "custom_event",
            Some("Trial Started"),
            serde_json::json!({"plan": "pro"}),
            "each",
            None,
            since,
        )
        .await;
    let scanner = k.scanner(60, None);
    let started = |at, plan: &str| Ev {
        meta: meta(&[("via", "ad"), ("plan", plan)]),
        ..ev(at, "Trial Started", "/pricing")
    };
    k.events(&[
        started(t - Duration::seconds(30), "pro"),
        // Two identical events: two occurrences.
        started(t - Duration::seconds(20), "pro"),
        started(t - Duration::seconds(20), "pro"),
        // Not matching: another plan, no props, another name, a pageview.
        started(t - Duration::seconds(20), "free"),
        ev(t - Duration::seconds(20), "Trial Started", "/pricing"),
        Ev {
            meta: meta(&[("plan", "pro")]),
            ..ev(t - Duration::seconds(20), "Trial Ended", "/pricing")
        },
        Ev {
            meta: meta(&[("plan", "pro")]),
            ..pageview(t - Duration::seconds(20), 9)
        },
    ])
    .await;
    let r = scanner.round(t).await.unwrap();
    assert_eq!((r.completions, r.enqueued), (3, 3), "{r:?}");
    let r = scanner.round(t + Duration::seconds(1)).await.unwrap();
    assert_eq!(
        r.enqueued, 0,
        "the lateness overlap finds them again and adds none"
    );
    // Committed late, stamped before the last scan but within the lateness.
    k.events(&[started(t - Duration::seconds(10), "pro")]).await;
    let r = scanner.round(t + Duration::seconds(2)).await.unwrap();
    assert_eq!(r.enqueued, 1);
    let sent = k.deliveries().await;
    assert_eq!(sent.len(), 4);
    for (event, data) in &sent {
        assert_eq!(event, "custom_event");
        assert_eq!(data["event_name"], "Trial Started");
        assert_eq!(data["props"], serde_json::json!({"plan": "pro"}));
        assert_eq!(data["pathname"], "/pricing");
        assert_eq!(data["trigger_id"], pro.to_string());
        assert!(!data.to_string().contains(&UID.to_string()));
        common::fits_catalog("custom_event", data);
    }
    // A second trigger of the same webhook for the event with any props:
    // what both match is still sent once; the free plan's now too.
    k.occurrence_trigger(
        "custom_event",
        Some("Trial Started"),
        serde_json::json!({}),
        "each",
        None,
        since,
    )
    .await;
    let r = scanner.round(t + Duration::seconds(3)).await.unwrap();
    assert_eq!(
        r.enqueued, 2,
        "the free plan's and the one without props: {r:?}"
    );
    assert_eq!(k.deliveries().await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_sends_one_post_per_window_with_the_count_and_the_first_occurrences() {
    let k = Kit::new().await;
    // Windows of a minute, aligned to whole minutes.
    let now = t0();
    let w0 = now - Duration::seconds(now.unix_timestamp().rem_euclid(60)) - Duration::minutes(10);
    let custom = k
        .occurrence_trigger(
            "custom_event",
            Some("Download"),
            serde_json::json!({}),
            "digest",
            Some(60),
            w0 - Duration::minutes(1),
        )
        .await;
    let g = k
        .goal(Some("Download"), None, -1, serde_json::json!({}))
        .await;
    let goal = k
        .occurrence_trigger(
            "goal_completion",
            None,
            serde_json::json!({}),
            "digest",
            Some(60),
            w0 - Duration::minutes(1),
        )
        .await;
    // A subscription follows the mode: the digest types, not each occurrence's.
    let events: Vec<String> = k
        .env
        .db
        .query_one("SELECT events FROM webhooks WHERE id = $1", &[&k.webhook])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, ["custom_event_digest", "goal_completion_digest"]);
    let scanner = k.scanner(10, None);
    // 15 downloads in the first window (two of them identical), 2 in the second.
    let download = |at, user: i64| Ev {
        user,
        session: user + 1,
        ..ev(at, "Download", "/files/report.pdf")
    };
    let mut first: Vec<Ev> = (0..14)
        .map(|i| download(w0 + Duration::seconds(2 + i * 4), 100 + i))
        .collect();
    first.push(download(w0 + Duration::seconds(2), 100));
    k.events(&first).await;
    k.events(&[
        download(w0 + Duration::seconds(65), 200),
        download(w0 + Duration::seconds(70), 201),
    ])
    .await;
    // The first window has ended but not its lateness: nothing yet.
    let r = scanner.round(w0 + Duration::seconds(65)).await.unwrap();
    assert_eq!(r.enqueued, 0, "{r:?}");
    let r = scanner.round(w0 + Duration::seconds(71)).await.unwrap();
    assert_eq!(r.enqueued, 2, "one digest per trigger: {r:?}");
    let r = scanner.round(w0 + Duration::seconds(72)).await.unwrap();
    assert_eq!(r.enqueued, 0, "a window is sent once: {r:?}");
    let sent = k.deliveries().await;
    let by = |event: &str| -> Vec<Value> {
        sent.iter()
            .filter(|(e, _)| e == event)
            .map(|(_, d)| d.clone())
            .collect()
    };
    let d = &by("custom_event_digest")[0];
    assert_eq!(d["count"], 15);
    assert_eq!(d["occurrences"].as_array().unwrap().len(), 10);
    assert_eq!(d["more"], 5);
    assert_eq!(d["event_name"], "Download");
    assert_eq!(d["trigger_id"], custom.to_string());
    assert_eq!(
        d["window_start"],
        plausible_webhooks::db::timestamp::rfc3339_seconds(w0)
    );
    assert_eq!(
        d["window_end"],
        plausible_webhooks::db::timestamp::rfc3339_seconds(w0 + Duration::minutes(1))
    );
    // The earliest first.
    let times: Vec<&str> = d["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["occurred_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    common::fits_catalog("custom_event_digest", d);
    let gd = &by("goal_completion_digest")[0];
    assert_eq!(gd["count"], 15);
    assert_eq!(gd["occurrences"][0]["goal_id"], g);
    assert_eq!(gd["trigger_id"], goal.to_string());
    common::fits_catalog("goal_completion_digest", gd);
    // A download committed after its window was read is not in a later digest.
    k.events(&[download(w0 + Duration::seconds(30), 300)]).await;
    // The second window, then an empty third: two digests, then nothing.
    let r = scanner.round(w0 + Duration::seconds(131)).await.unwrap();
    assert_eq!(r.enqueued, 2, "{r:?}");
    let r = scanner.round(w0 + Duration::seconds(191)).await.unwrap();
    assert_eq!(r.enqueued, 0, "an empty window sends nothing: {r:?}");
    let sent = k.deliveries().await;
    assert_eq!(sent.len(), 4);
    let counts: Vec<i64> = sent
        .iter()
        .map(|(_, d)| d["count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [15, 15, 2, 2]);
    // No key twice: one digest per (trigger, window).
    let keys = k
        .env
        .count("SELECT count(DISTINCT idempotency_key) FROM webhook_deliveries")
        .await;
    assert_eq!(keys, 4);
}

/// A goal trigger as a daemon whose clock ran an hour ahead left it: its
/// cursor and next evaluation ~3,545 s ahead of the database's clock. A
/// daemon on the right clock claims it at once (not an hour later), pulls
/// the cursor back with a warning, and sends every completion from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_a_clock_left_ahead_is_pulled_back_and_nothing_is_lost() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let w: Uuid = env
        .db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'w', $2, $3) RETURNING id",
            &[&env.site_id, &rx.url("/hook"), &common::SECRET],
        )
        .await
        .unwrap()
        .get(0);
    let goal: i64 = env
        .db
        .query_one(
            "INSERT INTO goals (site_id, event_name, display_name, inserted_at, updated_at) VALUES ($1, 'Buy', 'Buy', now(), now()) RETURNING id",
            &[&env.site_id],
        )
        .await
        .unwrap()
        .get(0);
    env.db
        .execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, goal_id, inserted_at, goal_cursor,
                                           next_evaluation_at, last_evaluated_at)
             VALUES ($1, 'goal_completion', $2, now() - interval '1 minute', now() + interval '3545 seconds',
                     now() + interval '3546 seconds', now() + interval '3545 seconds')",
            &[&w, &goal],
        )
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.triggers.goal_scan_interval_ms = 100;
    let daemon = env.daemon(cfg).await;
    env.db
        .execute(
            "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id)
             SELECT $1, now() AT TIME ZONE 'UTC', 'Buy', '/', g, g FROM generate_series(1, 15) g",
            &[&env.site_id],
        )
        .await
        .unwrap();
    rx.wait_for(15, T).await.unwrap();
    env.wait_until(
        "SELECT bool_and(goal_cursor <= now() AND next_evaluation_at <= now() + interval '1 minute') FROM webhook_triggers",
        T,
    )
    .await;
    daemon.shutdown().await.unwrap();
    assert_eq!(rx.count(), 15);
}

/// `real` against the catalog's schema of `event`, with the sample's keys.
fn fits_the_catalog(event: &str, real: &Value) {
    let entry = catalog()
        .into_iter()
        .find(|e| e.name == event)
        .unwrap_or_else(|| panic!("{event} is not in the catalog"));
    let schema = jsonschema::options()
        .should_validate_formats(true)
        .build(&entry.schema)
        .unwrap();
    let errors: Vec<String> = schema.iter_errors(real).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "a real {event}: {errors:?}\n{real}");
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&entry.example), keys(real), "{event}: sample and real");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_stops_once_per_outage_and_resumes_once() {
    let k = Kit::new().await;
    let t = t0();
    // The usual traffic: on each of the previous 7 days, a visitor every 10
    // minutes from 2 hours before to 4 hours after this time of day.
    let mut usual = Vec::new();
    for day in 1..=7 {
        for m in 0..48 {
            let at = t - Duration::days(day) - Duration::hours(2) + Duration::minutes(10 * m);
            usual.push(pageview(at, 100 * day + m));
        }
    }
    k.events(&usual).await;
    // Today the last event is 10 minutes old; then the script breaks.
    k.visitors(t - Duration::minutes(10), 1, 1).await;
    let trigger = k
        .trigger("tracking_stopped", None, None, Some(3600), 3600, t)
        .await;
    let events: Vec<String> = k
        .env
        .db
        .query_one("SELECT events FROM webhooks WHERE id = $1", &[&k.webhook])
        .await
        .unwrap()
        .get(0);
    assert!(
        events.contains(&"site.tracking_stopped".to_string())
            && events.contains(&"site.tracking_resumed".to_string()),
        "the trigger subscribes its webhook to both: {events:?}"
    );
    let ev = k.evaluator("https://plausible.example.com", None);
    let at = |m: i64| t + Duration::minutes(m);
    // Not silent for an hour yet (the window is [now - 1 h, now]).
    for m in [0, 30, 50] {
        let r = ev.round(at(m)).await.unwrap();
        assert_eq!((r.tracking_evaluated, r.tracking_stopped), (1, 0), "{m}");
    }
    assert!(k.deliveries().await.is_empty());
    // 61 minutes without an event, at a time the site usually has visitors.
    let r = ev.round(at(51)).await.unwrap();
    assert_eq!((r.tracking_stopped, r.tracking_resumed), (1, 0));
    // Silent on: nothing more.
    for m in [52, 80, 120, 200] {
        let r = ev.round(at(m)).await.unwrap();
        assert_eq!((r.tracking_stopped, r.tracking_resumed), (0, 0), "{m}");
    }
    let d = k.deliveries().await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, "site.tracking_stopped");
    let p = &d[0].1;
    assert_eq!(p["trigger_id"], trigger.to_string());
    assert_eq!(p["silent_secs"], 61 * 60);
    assert_eq!(p["window_secs"], 3600);
    assert_eq!(p["baseline_days_with_visitors"], 7);
    assert_eq!(p["baseline_days"], 7);
    // [now - 1 h, now] on each previous day holds 6 or 7 of the visitors.
    let b = p["baseline_visitors"].as_f64().unwrap();
    assert!((6.0..=7.0).contains(&b), "{b}");
    assert!(p["dashboard_url"]
        .as_str()
        .unwrap()
        .ends_with("?period=realtime"));
    fits_the_catalog("site.tracking_stopped", p);
    // Events are back: resumed, once.
    k.visitors(at(200) + Duration::seconds(30), 2, 1).await;
    let r = ev.round(at(201)).await.unwrap();
    assert_eq!((r.tracking_stopped, r.tracking_resumed), (0, 1));
    for m in [202, 230] {
        k.visitors(at(m) - Duration::seconds(5), 3 + m, 1).await;
        let r = ev.round(at(m)).await.unwrap();
        assert_eq!((r.tracking_stopped, r.tracking_resumed), (0, 0), "{m}");
    }
    let d = k.deliveries().await;
    assert_eq!(
        d.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["site.tracking_stopped", "site.tracking_resumed"]
    );
    let p = &d[1].1;
    assert_eq!(p["stopped_at"], d[0].1["detected_at"]);
    assert_eq!(p["silent_secs"], (150 + 60) * 60);
    fits_the_catalog("site.tracking_resumed", p);
    // A second outage is told again.
    let r = ev.round(at(230 + 61)).await.unwrap();
    assert_eq!((r.tracking_stopped, r.tracking_resumed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_never_fires_for_a_site_without_a_baseline() {
    let k = Kit::new().await;
    let t = t0();
    k.trigger("tracking_stopped", None, None, None, 3600, t)
        .await;
    let ev = k.evaluator("", None);
    // An empty site: silent from the start, but it never had visitors.
    for m in [0, 61, 180] {
        let r = ev.round(t + Duration::minutes(m)).await.unwrap();
        assert_eq!((r.tracking_evaluated, r.tracking_stopped), (1, 0), "{m}");
    }
    // A new site: its first visitors today, then silence.
    k.visitors(t + Duration::minutes(181), 1, 3).await;
    for m in [182, 300, 24 * 60] {
        let r = ev.round(t + Duration::minutes(m)).await.unwrap();
        assert_eq!((r.tracking_stopped, r.tracking_resumed), (0, 0), "{m}");
    }
    // Visitors at this time on only 3 of the last 7 days is not "normally".
    let now = t + Duration::days(2);
    let few: Vec<Ev> = (1..=3)
        .map(|d| pageview(now - Duration::days(d) - Duration::minutes(20), 50 + d))
        .collect();
    k.events(&few).await;
    let r = ev.round(now).await.unwrap();
    assert_eq!((r.tracking_stopped, r.tracking_resumed), (0, 0));
    assert!(k.deliveries().await.is_empty());
}
