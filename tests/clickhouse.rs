//! The ClickHouse analytics source against a real ClickHouse, started per
//! test on a free loopback port with its own data dir, holding Plausible's
//! events_v2 and read by a read-only user. Most tests run on every engine
//! (`on_every_engine!`): the installed `clickhouse-server` (Debian's 18.16),
//! ClickHouse 24.8 (chdb 3.0.1) and 26.9 (chdb-core), the last two behind the
//! test kit's HTTP front; the HTTP layer's tests (TLS, faults) on the server:
//!
//! - parity: one synthetic dataset loaded into the PostgreSQL source and into
//!   ClickHouse gives the same decisions, trigger states and payloads for
//!   spikes, drops (set and derived thresholds) and every goal kind, with
//!   hostile goal names, paths and properties;
//! - bytes no PostgreSQL text can hold (invalid UTF-8, NUL) are read whole;
//! - HTTPS with a CA from the config;
//! - faults (hung, down, failing server): the round is skipped with one warn
//!   line naming the cause, retried, and deliveries keep flowing.

mod common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::Env;
use plausible_webhooks::config::Config;
use plausible_webhooks::testkit::clickhouse::{ChEngine, ChEvent, ChServer, ChTls};
use plausible_webhooks::testkit::receiver::always;
use plausible_webhooks::triggers::evaluator::{Evaluator, EvaluatorConfig};
use plausible_webhooks::triggers::goal_scanner::{GoalScanner, GoalScannerConfig};
use plausible_webhooks::triggers::source::{is_unavailable, AnalyticsSource, Window};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A whole second, so both stores hold the instant alike.
fn t0() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - Duration::nanoseconds(now.nanosecond() as i64)
}

async fn server(engine: ChEngine) -> ChServer {
    let s = ChServer::start_engine(engine, None)
        .await
        .unwrap_or_else(|e| panic!("starting {}: {e:#}", engine.name()));
    s.create_events_table().await.unwrap();
    s
}

/// Runs the test `$name(engine)` once per engine: the oldest supported
/// server (Debian's clickhouse-server 18.16), the 24.x line Plausible CE runs
/// (ClickHouse 24.8, chdb 3.0.1) and a current engine (chDB 26.9).
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clickhouse_18() {
                super::$name(super::ChEngine::Server).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clickhouse_24() {
                super::$name(super::ChEngine::Chdb24).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clickhouse_current() {
                super::$name(super::ChEngine::Chdb).await
            }
        }
    )*};
}

on_every_engine!(
    parity_spikes_drops_and_every_goal_kind_with_hostile_values,
    parity_custom_events_each_and_as_a_digest,
    bytes_postgres_cannot_hold_are_read_whole,
    credentials_and_a_bad_table_are_named,
    a_site_with_goals_past_the_query_size_limit_is_scanned_in_parts,
    check_runs_every_statement_and_names_the_one_refused,
    parity_last_event_per_site_and_window,
    parity_preview_counts_equal_the_live_windows,
);

/// The daemon's HTTP client to `server`, as its read-only user.
fn reader_http(
    server: &ChServer,
    query_timeout: StdDuration,
) -> plausible_webhooks::triggers::source::clickhouse::http::ChHttp {
    use plausible_webhooks::triggers::source::clickhouse::http::{ChHttp, ChHttpConfig};
    ChHttp::new(ChHttpConfig {
        endpoint: url::Url::parse(server.http_url().trim_end_matches("/plausible_events_db"))
            .unwrap(),
        database: "plausible_events_db".into(),
        user: "webhooks".into(),
        password: Some(plausible_webhooks::testkit::clickhouse::READER_PASSWORD.into()),
        ca_file: None,
        connect_timeout: StdDuration::from_secs(1),
        query_timeout,
    })
    .unwrap()
}

fn ch_config(env: &Env, toml: &str) -> Config {
    let mut env_vars = std::collections::BTreeMap::new();
    env_vars.insert("DATABASE_URL".to_string(), env.url.clone());
    let toml = format!(
        "{toml}\n[delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\nextra_ca_file = {:?}\n",
        env.tls.ca_file.display().to_string()
    );
    Config::from_parts(&toml, &env_vars).expect("a valid ClickHouse config")
}

/// One analytics event, loaded alike into both stores.
#[derive(Clone, Debug)]
struct Ev {
    site: i64,
    at: OffsetDateTime,
    name: String,
    path: String,
    user: i64,
    session: i64,
    source: String,
    meta: Vec<(String, String)>,
    scroll: Option<i16>,
}

impl Ev {
    fn new(site: i64, at: OffsetDateTime, name: &str, path: &str, user: i64) -> Ev {
        Ev {
            site,
            at,
            name: name.into(),
            path: path.into(),
            user,
            session: user + 1_000_000,
            source: String::new(),
            meta: vec![],
            scroll: None,
        }
    }
    fn meta(mut self, pairs: &[(&str, &str)]) -> Ev {
        self.meta = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
    fn scroll(mut self, depth: i16) -> Ev {
        self.scroll = Some(depth);
        self
    }
    fn source(mut self, s: &str) -> Ev {
        self.source = s.into();
        self
    }
}

/// One side of the parity suite: its own main database and analytics source.
struct Side {
    env: Env,
    pool: deadpool_postgres::Pool,
    source: Arc<AnalyticsSource>,
}

impl Side {
    fn evaluator(&self) -> Evaluator {
        Evaluator::new(
            EvaluatorConfig {
                interval: StdDuration::from_secs(60),
                batch: 4,
                base_url: "https://plausible.example.test".into(),
                before_commit: None,
            },
            self.pool.clone(),
            self.source.clone(),
        )
        .unwrap()
    }

    fn scanner(&self) -> GoalScanner {
        GoalScanner::new(
            GoalScannerConfig {
                interval: StdDuration::from_secs(1),
                batch: 2,
                lateness: Duration::seconds(60),
                max_catchup: Duration::hours(1),
                before_commit: None,
            },
            self.pool.clone(),
            self.source.clone(),
        )
        .unwrap()
    }

    /// Every delivery as (event_type, idempotency key, payload), sorted.
    async fn deliveries(&self) -> Vec<(String, String, Value)> {
        let mut v: Vec<(String, String, Value)> = self
            .env
            .db
            .query(
                "SELECT event_type, coalesce(idempotency_key, ''), payload FROM webhook_deliveries",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1, a.2.to_string()).cmp(&(&b.0, &b.1, b.2.to_string())));
        v
    }

    /// Every trigger's whole state (but the row's own write time).
    async fn states(&self) -> Vec<Value> {
        self.env
            .db
            .query(
                "SELECT to_jsonb(t) - 'updated_at' FROM webhook_triggers t ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

struct Twin {
    pg: Side,
    ch: Side,
    server: ChServer,
    sites: Vec<i64>,
}

impl Twin {
    async fn new(engine: ChEngine) -> Twin {
        let server = server(engine).await;
        let pg_env = Env::new().await;
        let ch_env = Env::new().await;
        let mut sites = vec![pg_env.site_id];
        assert_eq!(pg_env.site_id, ch_env.site_id);
        for domain in ["b.example.test", "c.example.test"] {
            let a = plausible_webhooks::testkit::create_site(&pg_env.db, domain)
                .await
                .unwrap();
            let b = plausible_webhooks::testkit::create_site(&ch_env.db, domain)
                .await
                .unwrap();
            assert_eq!(a, b, "both databases number their sites alike");
            sites.push(a);
        }
        let pg_cfg = pg_env.config();
        let ch_cfg = ch_config(&ch_env, &server.analytics_toml(&server.http_url()));
        let side = |env: Env, cfg: &Config| {
            let pool = plausible_webhooks::db::pool(&env.url, 4).unwrap();
            let source = Arc::new(AnalyticsSource::from_config(cfg).unwrap());
            Side { env, pool, source }
        };
        let pg = side(pg_env, &pg_cfg);
        let ch = side(ch_env, &ch_cfg);
        assert!(ch
            .source
            .describe()
            .starts_with("clickhouse http://127.0.0.1:"));
        ch.source
            .check()
            .await
            .expect("the read-only user can read events_v2");
        Twin {
            pg,
            ch,
            server,
            sites,
        }
    }

    fn sides(&self) -> [&Side; 2] {
        [&self.pg, &self.ch]
    }

    /// Runs `sql` with `params` on both main databases.
    async fn both(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
        for s in self.sides() {
            s.env.db.execute(sql, params).await.unwrap();
        }
    }

    async fn webhook(&self, site: i64) -> Uuid {
        let id = Uuid::new_v4();
        self.both(
            "INSERT INTO webhooks (id, site_id, name, url, secret) VALUES ($1, $2, 'w', 'https://hooks.example.test/in', $3)",
            &[&id, &site, &common::SECRET],
        )
        .await;
        id
    }

    #[allow(clippy::too_many_arguments)]
    async fn trigger(
        &self,
        webhook: Uuid,
        kind: &str,
        threshold: Option<i32>,
        goal: Option<i64>,
        window: Option<i32>,
        cooldown: i32,
        since: OffsetDateTime,
    ) -> Uuid {
        let id = Uuid::new_v4();
        self.both(
            "INSERT INTO webhook_triggers (id, webhook_id, trigger_type, threshold, goal_id, window_secs, cooldown_secs, next_evaluation_at, inserted_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)",
            &[&id, &webhook, &kind, &threshold, &goal, &window, &cooldown, &since],
        )
        .await;
        id
    }

    async fn goal(
        &self,
        site: i64,
        event: Option<&str>,
        page: Option<&str>,
        scroll: i16,
        props: Value,
    ) -> i64 {
        let mut ids = vec![];
        for s in self.sides() {
            let id: i64 = s
                .env
                .db
                .query_one(
                    "INSERT INTO goals (site_id, event_name, page_path, display_name, scroll_threshold, custom_props, inserted_at, updated_at)
                     VALUES ($1, $2, $3, coalesce($2, $3), $4, $5, now(), now()) RETURNING id",
                    &[&site, &event, &page, &scroll, &props],
                )
                .await
                .unwrap()
                .get(0);
            ids.push(id);
        }
        assert_eq!(ids[0], ids[1], "both databases number their goals alike");
        ids[0]
    }

    /// Loads `evs` into PostgreSQL's events_v2 and into ClickHouse's.
    async fn events(&self, evs: &[Ev]) {
        let rows: Vec<common::EventRow> = evs
            .iter()
            .map(|e| common::EventRow {
                site_id: e.site,
                at: e.at,
                name: &e.name,
                path: &e.path,
                user: e.user,
                session: e.session,
                source: &e.source,
                meta: &e.meta,
                scroll: e.scroll,
            })
            .collect();
        common::insert_events(&self.pg.env.db, &rows).await;
        let ch: Vec<ChEvent> = evs
            .iter()
            .map(|e| ChEvent {
                site_id: e.site,
                timestamp: e.at.unix_timestamp(),
                name: e.name.clone().into_bytes(),
                pathname: e.path.clone().into_bytes(),
                user_id: e.user as u64,
                session_id: e.session as u64,
                referrer_source: e.source.clone().into_bytes(),
                meta: e
                    .meta
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                    .collect(),
                scroll_depth: e.scroll.unwrap_or(0) as u8,
            })
            .collect();
        self.server.insert(&ch).await.unwrap();
    }

    /// A spike/drop round at `now` on both sides; their reports must agree.
    async fn evaluate(&self, now: OffsetDateTime) -> usize {
        let a = self.pg.evaluator().round(now).await.unwrap();
        let b = self.ch.evaluator().round(now).await.unwrap();
        assert_eq!(
            (a.claimed, a.evaluated, a.fired, a.skipped, a.derived),
            (b.claimed, b.evaluated, b.fired, b.skipped, b.derived),
            "round at {now}: postgres {a:?} vs clickhouse {b:?}"
        );
        a.fired
    }

    async fn scan(&self, now: OffsetDateTime) -> u64 {
        let a = self.pg.scanner().round(now).await.unwrap();
        let b = self.ch.scanner().round(now).await.unwrap();
        assert_eq!(
            (a.claimed, a.completions, a.enqueued),
            (b.claimed, b.completions, b.enqueued),
            "scan at {now}: postgres {a:?} vs clickhouse {b:?}"
        );
        a.enqueued
    }

    async fn assert_same(&self, when: &str) {
        let (a, b) = (self.pg.deliveries().await, self.ch.deliveries().await);
        assert_eq!(
            a.len(),
            b.len(),
            "{when}: delivery counts differ\npg: {a:#?}\nch: {b:#?}"
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{when}: deliveries differ");
        }
        assert_eq!(
            self.pg.states().await,
            self.ch.states().await,
            "{when}: trigger states differ"
        );
    }
}

async fn parity_spikes_drops_and_every_goal_kind_with_hostile_values(engine: ChEngine) {
    let k = Twin::new(engine).await;
    let t = t0();
    let [s1, s2, s3] = [k.sites[0], k.sites[1], k.sites[2]];
    let mut rng = fastrand::Rng::with_seed(20261123);

    // Eight days of history for baselines and derived thresholds: random
    // visitors at random instants, more of them near this time of day, with
    // sources (hostile ones, ties, direct traffic) and pages.
    let sources = [
        "Google",
        "it's \"quoted\"",
        "tab\there",
        "Direct / None",
        "",
        "back\\slash",
        "{x:String}",
    ];
    let pages = ["/", "/pricing", "/a'b", "/new\nline", "/é/x", "/blog/post"];
    let mut history = Vec::new();
    for (i, &site) in [s1, s2, s3].iter().enumerate() {
        let per_day = [60, 25, 90][i];
        for day in 1..=8i64 {
            for n in 0..per_day {
                let offset = if n % 3 == 0 {
                    rng.i64(0..86_400)
                } else {
                    rng.i64(0..1_200)
                };
                let at =
                    t - Duration::days(day) + Duration::seconds(600) - Duration::seconds(offset);
                let user = site * 100_000 + rng.i64(0..400);
                let name = if rng.u8(0..10) == 0 {
                    "engagement"
                } else {
                    "pageview"
                };
                history.push(
                    Ev::new(site, at, name, pages[rng.usize(0..pages.len())], user)
                        .source(sources[rng.usize(0..sources.len())]),
                );
            }
        }
    }
    k.events(&history).await;

    // Spike and drop triggers, with set and derived thresholds.
    let w1 = k.webhook(s1).await;
    let w2 = k.webhook(s2).await;
    let w3 = k.webhook(s3).await;
    let since = t - Duration::minutes(1);
    k.trigger(w1, "visitor_spike", Some(5), None, None, 3_600, since)
        .await;
    k.trigger(w1, "visitor_spike", Some(8), None, Some(600), 0, since)
        .await;
    k.trigger(w1, "traffic_drop", None, None, None, 3_600, since)
        .await;
    k.trigger(w2, "visitor_spike", None, None, None, 3_600, since)
        .await;
    k.trigger(w3, "traffic_drop", Some(200), None, None, 3_600, since)
        .await;
    k.trigger(w3, "visitor_spike", Some(3), None, Some(120), 120, since)
        .await;

    // Goals with hostile names, paths and properties.
    let signup = k
        .goal(
            s1,
            Some("Sign'up \"now\"\\"),
            None,
            -1,
            json!({"pl'an": "pr\\o", "{k}": "line1\nline2"}),
        )
        .await;
    let inject = k.goal(s1, Some("x') OR 1=1 --"), None, -1, json!({})).await;
    let braces = k
        .goal(s1, Some("{name:String}"), None, -1, json!({"ü": "ß"}))
        .await;
    let quote_page = k.goal(s1, None, Some("/a.b'c"), -1, json!({})).await;
    let backslash = k.goal(s1, None, Some("/x\\y"), -1, json!({})).await;
    let newline = k.goal(s1, None, Some("/new\nline"), -1, json!({})).await;
    let blog = k.goal(s1, None, Some("/blog/**"), -1, json!({})).await;
    let paren = k.goal(s1, None, Some("/x(y)*"), -1, json!({})).await;
    let alt = k.goal(s1, None, Some("/shop*|/cart"), -1, json!({})).await;
    let class = k.goal(s1, None, Some("/[a-z]+*"), -1, json!({})).await;
    let accent = k.goal(s1, None, Some("/é/*"), -1, json!({})).await;
    let meta = k.goal(s1, None, Some("/$^{}*'\\*"), -1, json!({})).await;
    let docs = k.goal(s1, None, Some("/docs/*"), 50, json!({})).await;
    let scroll_exact = k.goal(s1, None, Some("/a'b"), 75, json!({})).await;
    let everything = k.goal(s2, None, Some("/**"), -1, json!({})).await;
    // Page and scroll goals with custom props (current Plausible): a prop is
    // read at its key's first occurrence in meta.key, as Plausible's indexOf.
    let pro_page = k
        .goal(s3, None, Some("/pro*"), -1, json!({"plan": "pro"}))
        .await;
    let pro_scroll = k
        .goal(s3, None, Some("/deep"), 50, json!({"plan": "pro"}))
        .await;
    let first_key = k
        .goal(s3, Some("Dup"), None, -1, json!({"k": "v", "n": "1"}))
        .await;
    let goal_since = t - Duration::seconds(30);
    k.trigger(w1, "goal_completion", None, None, None, 0, goal_since)
        .await;
    // Overlapping the any-goal trigger of the same webhook: still one POST each.
    k.trigger(w1, "goal_completion", None, Some(blog), None, 0, goal_since)
        .await;
    k.trigger(
        w2,
        "goal_completion",
        None,
        Some(everything),
        None,
        0,
        goal_since,
    )
    .await;
    k.trigger(w3, "goal_completion", None, None, None, 0, goal_since)
        .await;

    // Round 0 at t: current traffic and the first goal events.
    let at = t - Duration::seconds(10);
    let e = |name: &str, path: &str| Ev::new(s1, at, name, path, 77);
    let mut now_events = vec![
        e("Sign'up \"now\"\\", "/register").meta(&[
            ("x", "1"),
            ("{k}", "line1\nline2"),
            ("pl'an", "pr\\o"),
        ]),
        e("Sign'up \"now\"\\", "/register").meta(&[("pl'an", "pr\\o")]),
        e("Sign'up \"now\"\\", "/register").meta(&[("pl'an", "pr\\o"), ("{k}", "line1\\nline2")]),
        e("Sign'up \"now\"\\", "/register").meta(&[("pl'an", "line1\nline2"), ("{k}", "pr\\o")]),
        e("Sign'up \"now\"", "/register").meta(&[("{k}", "line1\nline2"), ("pl'an", "pr\\o")]),
        e("x') OR 1=1 --", "/"),
        e("x", "/"),
        e("{name:String}", "/").meta(&[("ü", "ß")]),
        e("{name:String}", "/").meta(&[("u", "ß")]),
        e("pageview", "/a.b'c"),
        e("pageview", "/a.b'c"),
        e("pageview", "/aXb'c"),
        e("pageview", "/x\\y"),
        e("pageview", "/xy"),
        e("pageview", "/x\\\\y"),
        e("pageview", "/new\nline"),
        e("pageview", "/newline"),
        e("pageview", "/blog/a/b"),
        e("pageview", "/blog"),
        e("pageview", "/x(y)/z"),
        e("pageview", "/xy/z"),
        e("pageview", "/shop/item"),
        e("pageview", "/old/cart"),
        e("pageview", "/cartx"),
        e("pageview", "/[a-z]+/q"),
        e("pageview", "/abc/q"),
        e("pageview", "/é/x"),
        e("pageview", "/e/x"),
        e("pageview", "/$^{}abc'\\xyz"),
        e("pageview", "/$^{}abc'xyz"),
        e("engagement", "/docs/intro").scroll(60),
        e("engagement", "/docs/intro").scroll(90),
        e("engagement", "/docs/other").scroll(40),
        e("engagement", "/docs/x").scroll(255),
        e("pageview", "/docs/intro"),
        e("engagement", "/a'b").scroll(75),
        e("engagement", "/a'b").scroll(74),
        Ev::new(s2, at, "pageview", "/anything", 5),
        Ev::new(s2, at, "pageview", "/it's", 6),
        // pro_page: the first two complete, the rest do not.
        Ev::new(s3, at, "pageview", "/pro", 61).meta(&[("plan", "pro")]),
        Ev::new(s3, at, "pageview", "/pro/x", 62).meta(&[
            ("x", ""),
            ("plan", "pro"),
            ("plan", "free"),
        ]),
        Ev::new(s3, at, "pageview", "/pro", 63),
        Ev::new(s3, at, "pageview", "/pro", 64).meta(&[("plan", "free"), ("plan", "pro")]),
        Ev::new(s3, at, "pageview", "/pro", 65).meta(&[("plan", "Pro")]),
        Ev::new(s3, at, "pageview", "/pro", 66).meta(&[("plans", "pro")]),
        // pro_scroll: only the first.
        Ev::new(s3, at, "engagement", "/deep", 67)
            .meta(&[("plan", "pro")])
            .scroll(60),
        Ev::new(s3, at, "engagement", "/deep", 68).scroll(60),
        Ev::new(s3, at, "engagement", "/deep", 69)
            .meta(&[("plan", "pro")])
            .scroll(40),
        Ev::new(s3, at, "pageview", "/deep", 70).meta(&[("plan", "pro")]),
        // first_key: only the first two.
        Ev::new(s3, at, "Dup", "/", 71).meta(&[("n", "1"), ("k", "v")]),
        Ev::new(s3, at, "Dup", "/", 72).meta(&[("k", "v"), ("n", "1"), ("k", "x")]),
        Ev::new(s3, at, "Dup", "/", 73).meta(&[("k", "x"), ("k", "v"), ("n", "1")]),
        Ev::new(s3, at, "Dup", "/", 74).meta(&[("k", "v"), ("n", "2"), ("n", "1")]),
        Ev::new(s3, at, "Dup", "/", 75).meta(&[("k", "v")]),
    ];
    for u in 0..4 {
        now_events.push(
            Ev::new(
                s1,
                t - Duration::minutes(2),
                "pageview",
                "/pricing",
                900 + u,
            )
            .source("Google"),
        );
        now_events.push(
            Ev::new(s3, t - Duration::seconds(90), "pageview", "/", 700 + u)
                .source("it's \"quoted\""),
        );
    }
    k.events(&now_events).await;
    assert!(k.evaluate(t).await > 0, "the dataset fires at t");
    assert!(k.scan(t).await > 0);
    k.assert_same("after round 0").await;

    // Round 1: a burst on s1 and s2, sources tied, goal events later and late.
    let t1 = t + Duration::minutes(1);
    let mut burst = Vec::new();
    for u in 0..40 {
        burst.push(
            Ev::new(
                s2,
                t1 - Duration::seconds(20),
                "pageview",
                ["/a", "/b"][u as usize % 2],
                5_000 + u,
            )
            .source(sources[u as usize % 3]),
        );
    }
    for u in 0..6 {
        burst.push(
            Ev::new(
                s1,
                t1 - Duration::seconds(5),
                "pageview",
                "/blog/x",
                3_000 + u,
            )
            .source(["Bing", "DuckDuckGo"][u as usize % 2]),
        );
        burst.push(Ev::new(
            s3,
            t1 - Duration::seconds(5),
            "pageview",
            "/",
            8_000 + u,
        ));
    }
    burst.push(Ev::new(
        s1,
        t + Duration::seconds(30),
        "pageview",
        "/shop",
        78,
    ));
    k.events(&burst).await;
    k.evaluate(t1).await;
    k.scan(t1).await;
    // A row that arrives late (inside the lateness window), and one identical
    // to earlier ones that arrives too late (outside it).
    k.events(&[
        Ev::new(s1, t + Duration::seconds(5), "pageview", "/cart", 79),
        Ev::new(s1, at, "pageview", "/a.b'c", 77),
    ])
    .await;
    k.scan(t1 + Duration::seconds(1)).await;
    k.assert_same("after round 1").await;

    // Later rounds: hysteresis, cooldowns ending, the drop and its derived threshold.
    for m in [2, 3, 5, 8, 62, 66] {
        let tm = t + Duration::minutes(m);
        if m == 62 {
            // After the spike cooldown: s1 still busy.
            let evs: Vec<Ev> = (0..9)
                .map(|u| Ev::new(s1, tm - Duration::seconds(30), "pageview", "/", 4_000 + u))
                .collect();
            k.events(&evs).await;
        }
        k.evaluate(tm).await;
        k.assert_same(&format!("after minute {m}")).await;
    }

    // Not vacuous: every kind fired, every goal kind completed, and the
    // injection goal matched only its own event.
    let d = k.pg.deliveries().await;
    let count = |ty: &str| d.iter().filter(|x| x.0 == ty).count();
    assert!(count("visitor_spike") >= 3, "{d:#?}");
    assert!(count("traffic_drop") >= 2, "{d:#?}");
    let goal_ids = |id: i64| d.iter().filter(|x| x.2["goal_id"] == id).count();
    assert_eq!(goal_ids(signup), 1);
    assert_eq!(goal_ids(inject), 1);
    assert_eq!(goal_ids(braces), 1);
    assert_eq!(
        goal_ids(quote_page),
        2,
        "two identical events; the third arrived after the lateness window (documented: not sent)"
    );
    assert_eq!(goal_ids(backslash), 1);
    assert_eq!(goal_ids(newline), 1);
    assert_eq!(goal_ids(blog), 1 + 6);
    assert_eq!(goal_ids(paren), 1);
    assert_eq!(
        goal_ids(alt),
        4,
        "/shop/item, /old/cart, /shop, /cart (late): {d:#?}"
    );
    assert_eq!(goal_ids(class), 1);
    assert_eq!(goal_ids(accent), 1);
    assert_eq!(goal_ids(meta), 1);
    assert_eq!(goal_ids(docs), 1, "once per visit");
    assert_eq!(goal_ids(scroll_exact), 1);
    assert_eq!(goal_ids(everything), 2 + 40);
    assert_eq!(goal_ids(pro_page), 2, "props on a page goal: {d:#?}");
    assert_eq!(goal_ids(pro_scroll), 1, "props on a scroll goal");
    assert_eq!(
        goal_ids(first_key),
        2,
        "a prop's value at its key's first occurrence"
    );
    let spike = d
        .iter()
        .find(|x| {
            x.0 == "visitor_spike" && x.2["top_sources"].as_array().is_some_and(|a| !a.is_empty())
        })
        .expect("a spike with sources");
    assert!(spike.2["dashboard_url"]
        .as_str()
        .unwrap()
        .starts_with("https://plausible.example.test/"));
}

/// A source, main database and ClickHouse server for the tests below.
struct Solo {
    side: Side,
    server: ChServer,
    webhook: Uuid,
}

impl Solo {
    async fn new(engine: ChEngine) -> Solo {
        let server = server(engine).await;
        let env = Env::new().await;
        let cfg = ch_config(&env, &server.analytics_toml(&server.http_url()));
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
        let source = Arc::new(AnalyticsSource::from_config(&cfg).unwrap());
        Solo {
            side: Side { env, pool, source },
            server,
            webhook,
        }
    }

    fn event(&self, at: OffsetDateTime, name: &[u8], path: &[u8], user: u64) -> ChEvent {
        ChEvent {
            site_id: self.side.env.site_id,
            timestamp: at.unix_timestamp(),
            name: name.to_vec(),
            pathname: path.to_vec(),
            user_id: user,
            session_id: user + 1,
            referrer_source: vec![],
            meta: vec![],
            scroll_depth: 0,
        }
    }
}

async fn bytes_postgres_cannot_hold_are_read_whole(engine: ChEngine) {
    let k = Solo::new(engine).await;
    let db = &k.side.env.db;
    let site = k.side.env.site_id;
    let t = t0();
    let page: i64 = db
        .query_one(
            "INSERT INTO goals (site_id, page_path, display_name, inserted_at, updated_at) VALUES ($1, '/x*', 'x', now(), now()) RETURNING id",
            &[&site],
        )
        .await
        .unwrap()
        .get(0);
    let buy_goal: i64 = db
        .query_one(
            "INSERT INTO goals (site_id, event_name, display_name, custom_props, inserted_at, updated_at) VALUES ($1, 'Buy', 'Buy', '{\"k\": \"v\"}', now(), now()) RETURNING id",
            &[&site],
        )
        .await
        .unwrap()
        .get(0);
    let since = t - Duration::seconds(30);
    for (kind, threshold) in [("goal_completion", None), ("visitor_spike", Some(1))] {
        db.execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, next_evaluation_at, inserted_at) VALUES ($1, $2, $3, $4, $4)",
            &[&k.webhook, &kind, &threshold, &since],
        )
        .await
        .unwrap();
    }
    let at = t - Duration::seconds(10);
    let mut evs = vec![
        // `.` in ClickHouse's regular expressions matches characters, as in
        // Plausible's own goal queries: a path with bytes that are not
        // UTF-8 does not complete a wildcard goal (NUL and newlines do).
        k.event(at, b"pageview", b"/x\xff", 1),
        k.event(at, b"pageview", b"/x\xfe", 1),
        k.event(at, b"pageview", b"/x\0\t\n\\'{}", 2),
        k.event(at, b"pageview", b"/y\xff", 3),
    ];
    let mut buy = |user: u64, path: &[u8], meta: Vec<(&[u8], &[u8])>| {
        let mut e = k.event(at, b"Buy", path, user);
        e.meta = meta
            .into_iter()
            .map(|(a, b)| (a.to_vec(), b.to_vec()))
            .collect();
        e.referrer_source = b"G\xffgle".to_vec();
        evs.push(e);
    };
    buy(4, b"/", vec![(b"\xff\xfe", b"\0"), (b"k", b"v")]);
    buy(5, b"/", vec![(b"k", b"v\xff")]);
    // Two events that differ only in bytes that are not UTF-8: both read as
    // "/p\u{fffd}", and they are still two completions (two POSTs).
    buy(6, b"/p\xff", vec![(b"k", b"v")]);
    buy(6, b"/p\xfe", vec![(b"k", b"v")]);
    k.server.insert(&evs).await.unwrap();

    let scan = k.side.scanner().round(t).await.unwrap();
    assert_eq!(scan.enqueued, 4, "{scan:?}");
    let eval = k.side.evaluator().round(t).await.unwrap();
    assert_eq!(eval.fired, 1, "{eval:?}");
    let d = k.side.deliveries().await;
    let paths = |goal: i64| -> Vec<String> {
        let mut v: Vec<String> = d
            .iter()
            .filter(|x| x.2["goal_id"] == goal)
            .map(|x| x.2["pathname"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    // NUL cannot be stored in a jsonb payload: it reads as U+FFFD too.
    assert_eq!(paths(page), vec!["/x\u{fffd}\t\n\\'{}".to_string()]);
    assert_eq!(
        paths(buy_goal),
        vec!["/".to_string(), "/p\u{fffd}".into(), "/p\u{fffd}".into()]
    );
    let keys: std::collections::HashSet<&String> = d.iter().map(|x| &x.1).collect();
    assert_eq!(keys.len(), d.len(), "every completion has its own key");
    let spike = &d.iter().find(|x| x.0 == "visitor_spike").unwrap().2;
    assert_eq!(spike["visitors"], 6);
    assert_eq!(
        spike["top_sources"],
        json!([{"source": "G\u{fffd}gle", "visitors": 3}])
    );
    // Ranked by raw bytes (as ClickHouse groups them), then decoded: two
    // paths that differ only in such bytes are listed apart, reading alike.
    assert_eq!(
        spike["top_pages"],
        json!([
            {"page": "/x\u{fffd}\t\n\\'{}", "visitors": 1},
            {"page": "/x\u{fffd}", "visitors": 1},
            {"page": "/x\u{fffd}", "visitors": 1},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_from_the_config_and_refused_without_it() {
    let env = Env::new().await;
    let server = ChServer::start(Some(ChTls {
        cert_file: &env.tls.cert_file,
        key_file: &env.tls.key_file,
    }))
    .await
    .expect("starting clickhouse-server with an HTTPS port");
    server.create_events_table().await.unwrap();
    let https = server.https_url().unwrap();
    let ca = format!(
        "clickhouse_ca_file = {:?}\n",
        env.tls.ca_file.display().to_string()
    );
    let source = |toml: String| AnalyticsSource::from_config(&ch_config(&env, &toml)).unwrap();

    // HTTPS, trusting the test CA: the read-only user reads.
    let ok = source(format!("{}{ca}", server.analytics_toml(&https)));
    ok.check().await.unwrap();
    server
        .insert(&[ChEvent {
            site_id: 9,
            timestamp: t0().unix_timestamp() - 5,
            name: b"pageview".to_vec(),
            pathname: b"/".to_vec(),
            user_id: 1,
            session_id: 2,
            referrer_source: vec![],
            meta: vec![],
            scroll_depth: 0,
        }])
        .await
        .unwrap();
    let w = Window {
        site_id: 9,
        from: t0() - Duration::minutes(1),
        to: t0(),
    };
    assert_eq!(ok.unique_visitors(&[w]).await.unwrap(), vec![1]);

    // Without the CA: refused, and named as the certificate's fault.
    let e = source(server.analytics_toml(&https))
        .check()
        .await
        .unwrap_err();
    assert!(is_unavailable(&e), "{e:#}");
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");
}

async fn credentials_and_a_bad_table_are_named(engine: ChEngine) {
    let env = Env::new().await;
    let server = server(engine).await;
    let source = |toml: String| AnalyticsSource::from_config(&ch_config(&env, &toml)).unwrap();
    source(server.analytics_toml(&server.http_url()))
        .check()
        .await
        .expect("the read-only user reads events_v2");

    // The reader is held to `readonly = 1`: no writes, no settings (by the
    // server's profile on 18.16, the engine's readonly session on 26.9, the
    // front on the engine's parse on 24.8: src/testkit/clickhouse.rs).
    {
        let reader = reader_http(&server, StdDuration::from_secs(10));
        for sql in [
            "INSERT INTO plausible_events_db.events_v2 (site_id) VALUES (1)",
            "INSERT INTO plausible_events_db.events_v2 (site_id) SELECT 1",
            "DROP TABLE plausible_events_db.events_v2",
            "SET max_threads = 1",
            "SELECT 1 SETTINGS max_threads = 1",
            "SELECT count() FROM plausible_events_db.events_v2 SETTINGS max_threads = 1 FORMAT TabSeparated",
            "SELECT * FROM file('events.tsv', 'TabSeparated', 'x String')",
        ] {
            let e = reader.query(sql.into()).await.unwrap_err();
            assert!(format!("{e:#}").contains("readonly"), "{sql}: {e:#}");
        }
        // What it reads, it reads with `readonly = 1`.
        let readonly = reader
            .query(
                "SELECT value FROM system.settings WHERE name = 'readonly' FORMAT TabSeparated"
                    .into(),
            )
            .await
            .unwrap();
        assert_eq!(&readonly[..], b"1\n", "{}", engine.name());
        assert_eq!(
            server
                .exec("SELECT count() FROM plausible_events_db.events_v2 FORMAT TabSeparated")
                .await
                .unwrap(),
            "0\n",
            "nothing written"
        );
    }

    // A wrong password: refused, naming what to check, never showing it.
    let toml = format!(
        "[analytics]\nsource = \"clickhouse\"\nclickhouse_url = {:?}\nclickhouse_user = \"webhooks\"\n",
        server.http_url()
    );
    let e = AnalyticsSource::from_config(&{
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("DATABASE_URL".to_string(), env.url.clone());
        vars.insert(
            "CLICKHOUSE_PASSWORD".to_string(),
            "not-the-password".to_string(),
        );
        Config::from_parts(&toml, &vars).unwrap()
    })
    .unwrap()
    .check()
    .await
    .unwrap_err();
    let text = format!("{e:#}");
    assert!(is_unavailable(&e), "{text}");
    assert!(
        text.contains("refused the credentials") && text.contains("CLICKHOUSE_PASSWORD"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");

    // A table without Plausible's columns, and one that does not exist: named.
    server
        .exec("CREATE TABLE plausible_events_db.not_events (site_id UInt64, `timestamp` DateTime) ENGINE = MergeTree ORDER BY site_id")
        .await
        .unwrap();
    for table in ["not_events", "events_v3"] {
        let e = source(format!(
            "{}table = {table:?}\n",
            server.analytics_toml(&server.http_url())
        ))
        .check()
        .await
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(!is_unavailable(&e), "{text}");
        assert!(
            text.contains(&format!("`{table}`")) && text.contains("events_v2 columns"),
            "{text}"
        );
    }
}

/// `check` runs every statement the daemon sends and reports the server's
/// version; a table with every column but one of another type passes the
/// columns query and fails the statement that compares it, named, with the
/// server's own text.
async fn check_runs_every_statement_and_names_the_one_refused(engine: ChEngine) {
    let env = Env::new().await;
    let server = server(engine).await;
    let toml = server.analytics_toml(&server.http_url());
    let checked = AnalyticsSource::from_config(&ch_config(&env, &toml))
        .unwrap()
        .check()
        .await
        .expect("every statement is answered");
    let version = server
        .exec("SELECT version() FORMAT TabSeparated")
        .await
        .unwrap();
    assert_eq!(checked.version, version.trim(), "{}", engine.name());
    assert!(
        checked.version.chars().next().unwrap().is_ascii_digit(),
        "{checked:?}"
    );
    // Each chDB engine is the version it stands for (the server is whichever
    // clickhouse-server is installed).
    let pinned = match engine {
        ChEngine::Server => "",
        ChEngine::Chdb24 => "24.8.",
        ChEngine::Chdb => "26.9.",
    };
    assert!(checked.version.starts_with(pinned), "{checked:?}");
    assert_eq!(checked.statements, 12, "{checked:?}");

    // events_v2's columns, `meta.value` a String instead of an array: only
    // the event goal's property match is refused.
    server
        .exec(
            "CREATE TABLE plausible_events_db.events_text_meta (
                 `timestamp` DateTime, name String, site_id UInt64, user_id UInt64,
                 session_id UInt64, pathname String, referrer_source String,
                 `meta.key` Array(String), `meta.value` String, scroll_depth UInt8
             ) ENGINE = MergeTree ORDER BY (site_id, `timestamp`)",
        )
        .await
        .unwrap();
    let e = AnalyticsSource::from_config(&ch_config(
        &env,
        &format!("{toml}table = \"events_text_meta\"\n"),
    ))
    .unwrap()
    .check()
    .await
    .unwrap_err();
    let text = format!("{e:#}");
    assert!(!is_unavailable(&e), "{text}");
    assert!(
        plausible_webhooks::triggers::source::is_incompatible(&e),
        "{text}"
    );
    assert!(
        text.contains("the goal completions query (event goal with custom props) failed"),
        "{text}"
    );
    assert!(
        text.contains("Code: 43") && text.contains("must be array"),
        "the server's text: {text}"
    );
}

/// The daemon's JSON log lines at `level` whose message contains `what`.
fn log_lines(log: &std::path::Path, level: &str, what: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == level && v["message"].as_str().is_some_and(|m| m.contains(what)))
        .collect()
}

/// Waits until the log holds `n` lines at `level` containing `what`.
async fn wait_log(log: &std::path::Path, level: &str, what: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        let lines = log_lines(log, level, what);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {n} {level} lines with {what:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_down_or_failing_clickhouse_skips_rounds_with_one_warning_while_deliveries_flow() {
    let env = Env::new().await;
    let mut server = server(ChEngine::Server).await;
    let rx = env.receiver(always(200)).await;
    // A webhook with a goal trigger for every goal of the site, and a goal.
    let wh = env.webhook(&rx.url("/")).await;
    env.db
        .execute(
            "INSERT INTO goals (site_id, page_path, display_name, inserted_at, updated_at) VALUES ($1, '/**', 'all pages', now(), now())",
            &[&env.site_id],
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let url = server.http_url();
    let _daemon = env.spawn_daemon_logging(
        &[
            ("PLAUSIBLE_WEBHOOKS__ANALYTICS__SOURCE", "clickhouse"),
            ("PLAUSIBLE_WEBHOOKS__ANALYTICS__CLICKHOUSE_URL", &url),
            ("PLAUSIBLE_WEBHOOKS__ANALYTICS__CLICKHOUSE_USER", "webhooks"),
            (
                "CLICKHOUSE_PASSWORD",
                plausible_webhooks::testkit::clickhouse::READER_PASSWORD,
            ),
            ("PLAUSIBLE_WEBHOOKS__ANALYTICS__QUERY_TIMEOUT_MS", "1000"),
            (
                "PLAUSIBLE_WEBHOOKS__TRIGGERS__EVALUATION_INTERVAL_SECS",
                "1",
            ),
            ("PLAUSIBLE_WEBHOOKS__TRIGGERS__GOAL_SCAN_INTERVAL_MS", "200"),
            ("PLAUSIBLE_WEBHOOKS__LOG__FORMAT", "json"),
            // The services' "still fails" lines (debug) tell when a failing
            // round went by without a warn line.
            (
                "PLAUSIBLE_WEBHOOKS__LOG__LEVEL",
                "info,plausible_webhooks::service=debug",
            ),
        ],
        Some(&log),
    );
    // The spike/drop evaluator fails alike when it has a trigger to evaluate.
    env.db
        .execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, cooldown_secs) VALUES ($1, 'visitor_spike', 1000, 0)",
            &[&wh],
        )
        .await
        .unwrap();
    let pageview = |path: &str, user: u64| ChEvent {
        site_id: env.site_id,
        // The next whole second: never before the trigger's creation, which
        // may lie within the current one (a trigger is not backfilled).
        timestamp: OffsetDateTime::now_utc().unix_timestamp() + 1,
        name: b"pageview".to_vec(),
        pathname: path.as_bytes().to_vec(),
        user_id: user,
        session_id: user,
        referrer_source: vec![],
        meta: vec![],
        scroll_depth: 0,
    };
    let completed = |path: &str| {
        format!(
            "SELECT count(*) = 1 FROM webhook_deliveries WHERE event_type = 'goal_completion' \
             AND payload->>'pathname' = '{path}' AND status = 'success'"
        )
    };
    let long = StdDuration::from_secs(60);
    server.insert(&[pageview("/before", 1)]).await.unwrap();
    env.wait_until(&completed("/before"), long).await;

    // Three outages, each spanning several failing rounds of both services
    // (the evaluator retries after 5 s, the goal scanner after 2 s); during
    // each, deliveries enqueued by SQL flow.
    let failed = "failed; ";
    let recovered = "works again";
    let still = [
        "spike/drop evaluation still fails",
        "goal scanning still fails",
    ];
    for (n, cause) in [
        (1, "did not answer within 1000 ms"),
        (2, "cannot reach"),
        (3, "doesn't exist"),
    ] {
        let retried_before = still.map(|s| log_lines(&log, "DEBUG", s).len());
        match n {
            1 => server.pause(),
            2 => server.kill(),
            _ => {
                server
                    .exec("RENAME TABLE plausible_events_db.events_v2 TO plausible_events_db.events_moved")
                    .await
                    .unwrap();
            }
        }
        let warns = wait_log(&log, "WARN", failed, 2 * n).await;
        let enqueued = env.enqueue(wh, 3).await;
        let ids: Vec<String> = enqueued.iter().map(|i| format!("'{i}'")).collect();
        env.wait_until(
            &format!(
                "SELECT count(*) = 3 FROM webhook_deliveries WHERE status = 'success' AND id IN ({})",
                ids.join(",")
            ),
            long,
        )
        .await;
        // Each service has failed again in this outage (a round after the
        // one that warned): had a later failure warned, it would be in the log.
        for (s, before) in still.iter().zip(retried_before) {
            wait_log(&log, "DEBUG", s, before + 1).await;
        }
        assert_eq!(
            log_lines(&log, "WARN", failed).len(),
            2 * n,
            "outage {n}: a later failing round warned again"
        );
        for w in &warns[2 * (n - 1)..] {
            let error = w["error"].as_str().unwrap_or_default();
            assert!(error.contains(cause), "outage {n}: {w}");
            assert!(
                w["source"]
                    .as_str()
                    .unwrap()
                    .contains("clickhouse http://127.0.0.1:"),
                "{w}"
            );
        }
        match n {
            1 => server.resume(),
            2 => server.start_again().await.unwrap(),
            _ => {
                // A row written while the table was away is found on recovery:
                // cursors stayed put.
                let mut e = pageview("/during", 3);
                e.timestamp -= 1;
                server
                    .exec(&format!(
                        "INSERT INTO plausible_events_db.events_moved (`timestamp`, name, site_id, user_id, session_id, pathname) \
                         VALUES (toDateTime({}), 'pageview', {}, 3, 3, '/during')",
                        e.timestamp, e.site_id
                    ))
                    .await
                    .unwrap();
                server
                    .exec("RENAME TABLE plausible_events_db.events_moved TO plausible_events_db.events_v2")
                    .await
                    .unwrap();
            }
        }
        wait_log(&log, "INFO", recovered, 2 * n).await;
        assert_eq!(
            log_lines(&log, "WARN", failed).len(),
            2 * n,
            "one warn line per service per outage"
        );
    }
    env.wait_until(&completed("/during"), long).await;
    server.insert(&[pageview("/after", 4)]).await.unwrap();
    env.wait_until(&completed("/after"), long).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(plausible_webhooks::testkit::clickhouse::READER_PASSWORD));
}

async fn a_site_with_goals_past_the_query_size_limit_is_scanned_in_parts(engine: ChEngine) {
    // 800 page goals with 200-byte paths: about 300 KiB of conditions for one
    // site, past ClickHouse's 256 KiB max_query_size for a single query.
    let k = Solo::new(engine).await;
    let db = &k.side.env.db;
    let site = k.side.env.site_id;
    let t = t0();
    let path = |i: usize| format!("/{i:04}/{}", "p".repeat(200));
    let paths: Vec<String> = (0..800).map(path).collect();
    db.execute(
        "INSERT INTO goals (site_id, page_path, display_name, inserted_at, updated_at) SELECT $1, p, p, now(), now() FROM unnest($2::text[]) p",
        &[&site, &paths],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO webhook_triggers (webhook_id, trigger_type, next_evaluation_at, inserted_at) VALUES ($1, 'goal_completion', $2, $2)",
        &[&k.webhook, &(t - Duration::seconds(30))],
    )
    .await
    .unwrap();
    let at = t - Duration::seconds(10);
    let evs: Vec<ChEvent> = [0, 399, 799]
        .iter()
        .map(|&i| k.event(at, b"pageview", path(i).as_bytes(), i as u64))
        .collect();
    k.server.insert(&evs).await.unwrap();
    let scan = k.side.scanner().round(t).await.unwrap();
    assert_eq!(scan.enqueued, 3, "{scan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_fails_alone_but_a_hung_server_is_unavailable() {
    let server = server(ChEngine::Server).await;
    let http = reader_http(&server, StdDuration::from_millis(500));
    assert_eq!(
        &http
            .query("SELECT 1 FORMAT TabSeparated".into())
            .await
            .unwrap()[..],
        b"1\n"
    );
    // The server answers, but this query outlasts the timeout: its own failure.
    let e = http
        .query("SELECT sleep(2) FORMAT TabSeparated".into())
        .await
        .unwrap_err();
    assert!(!is_unavailable(&e), "{e:#}");
    assert!(
        format!("{e:#}").contains("analytics.query_timeout_ms"),
        "{e:#}"
    );
    // The server answers nothing at all: unavailable.
    server.pause();
    let e = http
        .query("SELECT 1 FORMAT TabSeparated".into())
        .await
        .unwrap_err();
    server.resume();
    assert!(is_unavailable(&e), "{e:#}");
}

/// Two test processes can be handed the same free port; the server that
/// loses the bind exits, but before it does the winner answers on that
/// port with the same users. The kit must not take the winner for its own
/// server (a test would then pause its dead child and talk to another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_port_another_holds_fails_to_start() {
    let first = server(ChEngine::Server).await;
    let e = match ChServer::start_on_port(first.http_port()).await {
        Ok(_) => panic!("a second server started on the first one's port"),
        Err(e) => e,
    };
    assert!(
        format!("{e:#}").contains(&first.http_port().to_string()),
        "{e:#}"
    );
    // The first one is untouched.
    assert_eq!(first.exec("SELECT 1").await.unwrap().trim(), "1");
}

impl Twin {
    /// A custom_event (or goal digest) trigger on both sides.
    #[allow(clippy::too_many_arguments)]
    async fn occurrence_trigger(
        &self,
        webhook: Uuid,
        kind: &str,
        event: Option<&str>,
        props: Value,
        mode: &str,
        window: Option<i32>,
        since: OffsetDateTime,
    ) -> Uuid {
        let id = Uuid::new_v4();
        self.both(
            "INSERT INTO webhook_triggers (id, webhook_id, trigger_type, event_name, event_props, delivery_mode, window_secs, next_evaluation_at, inserted_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)",
            &[&id, &webhook, &kind, &event, &props, &mode, &window, &since],
        )
        .await;
        id
    }
}

/// Custom events, each and as digests (a custom one and a goal one), read
/// alike from PostgreSQL and from this ClickHouse engine: the same
/// deliveries under the same keys, the same trigger states.
async fn parity_custom_events_each_and_as_a_digest(engine: ChEngine) {
    let k = Twin::new(engine).await;
    let now = t0();
    // Whole minutes, ten of them back: digests of a minute.
    let w0 = now - Duration::seconds(now.unix_timestamp().rem_euclid(60)) - Duration::minutes(10);
    let (a, b) = (k.sites[0], k.sites[1]);
    let wa = k.webhook(a).await;
    let wb = k.webhook(b).await;
    let since = w0 - Duration::minutes(1);
    k.occurrence_trigger(
        wa,
        "custom_event",
        Some("Trial Started"),
        serde_json::json!({"plan": "pro"}),
        "each",
        None,
        since,
    )
    .await;
    k.occurrence_trigger(
        wa,
        "custom_event",
        Some("Trial Started"),
        serde_json::json!({}),
        "digest",
        Some(60),
        since,
    )
    .await;
    // A hostile name and prop value; on another site, not to be mixed up.
    k.occurrence_trigger(
        wb,
        "custom_event",
        Some("Ü'\\%_\"x"),
        serde_json::json!({"k'": "v\\"}),
        "each",
        None,
        since,
    )
    .await;
    k.goal(a, Some("Trial Started"), None, -1, serde_json::json!({}))
        .await;
    k.occurrence_trigger(
        wa,
        "goal_completion",
        None,
        serde_json::json!({}),
        "digest",
        Some(60),
        since,
    )
    .await;
    let mut evs: Vec<Ev> = Vec::new();
    for i in 0..12 {
        let plan = if i % 3 == 0 { "free" } else { "pro" };
        evs.push(
            Ev::new(
                a,
                w0 + Duration::seconds(5 + i * 4),
                "Trial Started",
                "/pricing",
                10 + i,
            )
            .meta(&[("via", "ad"), ("plan", plan)]),
        );
    }
    // Identical twice; another name; a pageview with the props; the hostile one.
    evs.push(
        Ev::new(
            a,
            w0 + Duration::seconds(5),
            "Trial Started",
            "/pricing",
            10,
        )
        .meta(&[("via", "ad"), ("plan", "free")]),
    );
    evs.push(
        Ev::new(a, w0 + Duration::seconds(6), "Trial Ended", "/pricing", 50)
            .meta(&[("plan", "pro")]),
    );
    evs.push(
        Ev::new(a, w0 + Duration::seconds(6), "pageview", "/pricing", 51).meta(&[("plan", "pro")]),
    );
    evs.push(Ev::new(b, w0 + Duration::seconds(7), "Ü'\\%_\"x", "/", 52).meta(&[("k'", "v\\")]));
    evs.push(Ev::new(b, w0 + Duration::seconds(8), "Ü'\\%_\"x", "/", 53).meta(&[("k'", "v")]));
    k.events(&evs).await;
    // Each occurrence within its scan; the first window's digests after it ended.
    assert_eq!(k.scan(w0 + Duration::seconds(55)).await, 8 + 1);
    k.assert_same("each").await;
    assert_eq!(
        k.scan(w0 + Duration::seconds(61)).await,
        0,
        "the window's lateness has not passed"
    );
    assert_eq!(k.scan(w0 + Duration::seconds(121)).await, 2);
    k.assert_same("digests").await;
    let d = k.pg.deliveries().await;
    let digest = d
        .iter()
        .find(|(e, _, _)| e == "custom_event_digest")
        .expect("a custom-event digest");
    assert_eq!(
        digest.2["count"], 13,
        "every Trial Started, the identical pair twice"
    );
    let goal_digest = d
        .iter()
        .find(|(e, _, _)| e == "goal_completion_digest")
        .expect("a goal digest");
    assert_eq!(goal_digest.2["count"], 13);
}

/// A tracking trigger's question: each site's last event in a window
/// (bounds included, engagement counted, other sites not), alike on both.
async fn parity_last_event_per_site_and_window(engine: ChEngine) {
    let k = Twin::new(engine).await;
    let now = t0();
    let (a, b, c) = (k.sites[0], k.sites[1], k.sites[2]);
    let m = Duration::minutes;
    k.events(&[
        Ev::new(a, now - m(90), "pageview", "/", 1),
        Ev::new(a, now - m(30), "engagement", "/", 1),
        Ev::new(b, now - Duration::hours(3), "Signup", "/x", 2),
    ])
    .await;
    let w = |site_id, from, to| Window { site_id, from, to };
    let windows = [
        w(a, now - m(60), now),
        w(a, now - m(120), now - m(31)),
        w(b, now - m(60), now),
        w(b, now - Duration::days(8), now),
        w(c, now - Duration::days(8), now),
        w(a, now - m(30), now - m(30)),
    ];
    let expected = vec![
        Some(now - m(30)),
        Some(now - m(90)),
        None,
        Some(now - Duration::hours(3)),
        None,
        Some(now - m(30)),
    ];
    for side in k.sides() {
        assert_eq!(side.source.last_event(&windows).await.unwrap(), expected);
    }
}

/// Trigger preview (issue 24, part 3) on ClickHouse: the counts one
/// `visitor_steps` statement gives for every instant are the ones the
/// evaluator's `unique_visitors` counts at each of those instants, on both
/// stores (tests/preview.rs shows the PostgreSQL preview fires where the
/// evaluator does); a goal's completions per bucket are the PostgreSQL
/// source's.
async fn parity_preview_counts_equal_the_live_windows(engine: ChEngine) {
    use plausible_webhooks::triggers::goals::{Goal, GoalKind};
    use plausible_webhooks::triggers::preview::{counts_from_steps, Grid};
    let k = Twin::new(engine).await;
    let (a, b) = (k.sites[0], k.sites[1]);
    let now = t0();
    let start = now - Duration::seconds(now.unix_timestamp() % 60) - Duration::minutes(90);
    let mut evs = Vec::new();
    let mut user = 1;
    for m in 0..90i64 {
        let n = if (30..36).contains(&m) { 5 } else { m % 3 };
        for i in 0..n {
            // Every third a visitor seen before; some on the minute itself.
            let u = if i % 3 == 2 && user > 10 {
                user - 7
            } else {
                user
            };
            user += 1;
            let at =
                start + Duration::minutes(m) + Duration::seconds(if i == 0 { 0 } else { 17 * i });
            evs.push(Ev::new(a, at, "pageview", "/", u));
            evs.push(Ev::new(a, at, "engagement", "/", u + 90_000));
            if i == 1 {
                evs.push(Ev::new(a, at, "Signup", "/", u));
            }
        }
        evs.push(Ev::new(b, start + Duration::minutes(m), "pageview", "/", 5));
    }
    k.events(&evs).await;
    let grid = Grid::over(start + Duration::minutes(10), now, Duration::minutes(1));
    for window in [300i64, 1800] {
        let windows: Vec<Window> = grid
            .instants()
            .map(|t| Window {
                site_id: a,
                from: t - Duration::seconds(window),
                to: t,
            })
            .collect();
        for side in k.sides() {
            let live = side.source.unique_visitors(&windows).await.unwrap();
            let steps = side
                .source
                .visitor_steps(a, window, 60, grid.first, grid.last)
                .await
                .unwrap();
            assert_eq!(
                counts_from_steps(&grid, &steps),
                live,
                "window {window} s on {}",
                side.source.describe()
            );
            assert!(live.iter().any(|&c| c >= 10), "{live:?}");
        }
    }
    let goal = Goal {
        id: 1,
        site_id: a,
        display_name: "Signup".into(),
        kind: GoalKind::Event {
            event_name: "Signup".into(),
        },
        custom_props: Default::default(),
    };
    let bounds: Vec<OffsetDateTime> = (0..=3).map(|i| start + Duration::minutes(30 * i)).collect();
    let mut per_side = Vec::new();
    for side in k.sides() {
        per_side.push(
            side.source
                .completions_per_bucket(std::slice::from_ref(&goal), &bounds)
                .await
                .unwrap(),
        );
    }
    assert_eq!(per_side[0], per_side[1]);
    assert!(per_side[0].iter().sum::<i64>() > 10, "{per_side:?}");
}

/// The preview's cost on ClickHouse 18.16 (docs/triggers.md "Preview"):
/// `PREVIEW_ROWS` rows (default 10,000,000) of one site over 30 days, made
/// by the server itself, then the 30-day visitor steps of a spike (5 min)
/// and a drop (12 h), timed. Not part of the suite:
/// `cargo nextest run --test clickhouse --run-ignored only measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: seeds millions of rows"]
async fn measure_a_30_day_preview_on_clickhouse() {
    let rows: i64 = std::env::var("PREVIEW_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let server = server(ChEngine::Server).await;
    let env = Env::new().await;
    let now = t0().unix_timestamp();
    let started = std::time::Instant::now();
    server
        .exec(&format!(
            "INSERT INTO plausible_events_db.events_v2 (`timestamp`, name, site_id, user_id, session_id, pathname)
             SELECT toDateTime({now} - (cityHash64(number) % (30 * 86400))),
                    if(number % 50 = 0, 'Signup', 'pageview'), {site}, intDiv(number, 3) * 2 + number % 2, number, '/'
             FROM system.numbers LIMIT {rows}",
            site = env.site_id
        ))
        .await
        .unwrap();
    eprintln!(
        "seeded {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let cfg = ch_config(&env, &server.analytics_toml(&server.http_url()));
    let mut cfg = cfg;
    cfg.analytics.query_timeout_ms = 600_000;
    let source = AnalyticsSource::from_config(&cfg).unwrap();
    let (first, last) = ((now - 30 * 86_400) / 60 + 1, now / 60);
    for window in [300, 43_200] {
        let t = std::time::Instant::now();
        let steps = source
            .visitor_steps(env.site_id, window, 60, first, last)
            .await
            .unwrap();
        eprintln!(
            "visitor steps, window {window} s: {:.2} s, {} rows",
            t.elapsed().as_secs_f64(),
            steps.len()
        );
    }
}
