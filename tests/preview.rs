//! Trigger preview (issue 24, part 3) against real analytics rows: a
//! preview's firings are the evaluator's own when the same history is
//! replayed live, round by round at the same instants; goal and
//! custom-event previews count per day of the site's timezone; the CLI
//! and the API answer the same.

mod common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::http::{free_port, request, wait_status};
use common::Env;
use plausible_webhooks::admin::access::Principal;
use plausible_webhooks::admin::auth::operator_token_hash;
use plausible_webhooks::admin::core::Admin;
use plausible_webhooks::admin::inputs::{PreviewInput, SiteRef};
use plausible_webhooks::admin::ops::TriggerPreview;
use plausible_webhooks::triggers::evaluator::{Evaluator, EvaluatorConfig};
use plausible_webhooks::triggers::source::AnalyticsSource;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// A deterministic pseudo-random sequence (the same history every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A whole second, so every store renders the instant alike.
fn whole_second(t: OffsetDateTime) -> OffsetDateTime {
    t - Duration::nanoseconds(t.nanosecond() as i64)
}

/// Pageviews (and engagement events, which count for nothing) of site
/// `site` over the `minutes` before `end`: quiet stretches, bursts, and
/// visitors coming back within a window (each counts once), some exactly
/// on a minute (an evaluation instant, a window's edge).
fn history(
    site: i64,
    end: OffsetDateTime,
    minutes: i64,
) -> Vec<(OffsetDateTime, &'static str, i64)> {
    let mut r = Lcg(24);
    let mut out = Vec::new();
    let mut next_user = 1_000i64;
    let _ = site;
    // On a whole minute: an event at second 0 is on an evaluation instant,
    // and so on the edge of the window of the instant `window` later.
    let start =
        end - Duration::seconds(end.unix_timestamp().rem_euclid(60)) - Duration::minutes(minutes);
    for m in 0..minutes {
        let burst = matches!(m % 90, 20..=32 | 55..=58);
        let arrivals = if burst { 3 + r.below(4) } else { r.below(2) };
        for _ in 0..arrivals {
            // A third come back: an id seen in the last 20 ids.
            let user = if r.below(3) == 0 && next_user > 1_020 {
                next_user - 1 - r.below(20) as i64
            } else {
                next_user += 1;
                next_user
            };
            let sec = if r.below(5) == 0 {
                0
            } else {
                r.below(60) as i64
            };
            let at = start + Duration::minutes(m) + Duration::seconds(sec);
            if at < end {
                out.push((at, "pageview", user));
                if r.below(4) == 0 {
                    out.push((at, "engagement", user + 500_000));
                }
            }
        }
    }
    out
}

async fn insert(env: &Env, evs: &[(OffsetDateTime, &'static str, i64)]) {
    let rows: Vec<common::EventRow> = evs
        .iter()
        .map(|(at, name, user)| common::EventRow {
            site_id: env.site_id,
            at: *at,
            name,
            path: "/",
            user: *user,
            session: user + 1_000_000,
            source: "",
            meta: &[],
            scroll: None,
        })
        .collect();
    for chunk in rows.chunks(5_000) {
        common::insert_events(&env.db, chunk).await;
    }
}

async fn preview(admin: &Admin, input: Value) -> TriggerPreview {
    let p: PreviewInput = serde_json::from_value(input).unwrap();
    admin
        .preview_trigger(&Principal::Operator, &SiteRef::new("example.com"), p)
        .await
        .unwrap()
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// The equality test: a spike (cooldown held, hysteresis) and a drop,
/// previewed over 3 hours of real rows on a site in Asia/Kolkata, then
/// evaluated live by the evaluator at each instant the preview replayed:
/// the same instants fire with the same counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_fires_where_the_live_evaluator_fires() {
    let env = Env::new().await;
    env.db
        .execute(
            "UPDATE sites SET timezone = 'Asia/Kolkata' WHERE id = $1",
            &[&env.site_id],
        )
        .await
        .unwrap();
    let end = whole_second(OffsetDateTime::now_utc());
    insert(&env, &history(env.site_id, end, 190)).await;
    let admin = Admin::from_config(&env.config()).unwrap();
    let spike = preview(
        &admin,
        json!({"since": "3h", "trigger": {"type": "spike", "threshold": 14, "window_secs": "10m", "cooldown_secs": "40m"}}),
    )
    .await;
    let drop = preview(
        &admin,
        json!({"since": "3h", "trigger": {"type": "drop", "threshold": 6, "window_secs": "15m", "cooldown_secs": 0}}),
    )
    .await;
    assert_eq!(spike.threshold_source.as_deref(), Some("configured"));
    assert!(
        spike.derived_threshold.is_some_and(|t| t >= 10),
        "{spike:?}"
    );
    assert_eq!(spike.queries, 2, "history and the visitor steps: {spike:?}");
    assert_eq!(
        (spike.first_evaluation, spike.evaluations),
        (drop.first_evaluation, drop.evaluations)
    );
    assert!(
        spike.total >= 2 && drop.total >= 2,
        "the history exercises both: spike {} drop {}",
        spike.total,
        drop.total
    );
    // Kolkata is UTC+05:30 all year.
    let f = &spike.firings[0];
    let local = f.at.to_offset(time::macros::offset!(+5:30));
    assert_eq!(
        f.local,
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +05:30",
            local.year(),
            local.month() as u8,
            local.day(),
            local.hour(),
            local.minute(),
            local.second()
        )
    );

    // Live: both triggers due at the first instant, then every interval.
    let webhook: uuid::Uuid = env
        .db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'w', 'https://hooks.example.test/in', $2) RETURNING id",
            &[&env.site_id, &common::SECRET],
        )
        .await
        .unwrap()
        .get(0);
    let first = spike.first_evaluation.unwrap();
    for (kind, threshold, window, cooldown) in [
        ("visitor_spike", 14, 600, 2400),
        ("traffic_drop", 6, 900, 0),
    ] {
        env.db
            .execute(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type, threshold, window_secs, cooldown_secs, next_evaluation_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&webhook, &kind, &threshold, &window, &cooldown, &first],
            )
            .await
            .unwrap();
    }
    let interval = spike.interval_secs.unwrap();
    let pool = plausible_webhooks::db::pool(&env.url, 4).unwrap();
    let source = Arc::new(AnalyticsSource::from_config(&env.config()).unwrap());
    let evaluator = Evaluator::new(
        EvaluatorConfig {
            interval: StdDuration::from_secs(interval as u64),
            batch: 100,
            base_url: String::new(),
            before_commit: None,
        },
        pool,
        source,
    )
    .unwrap();
    for k in 0..spike.evaluations.unwrap() {
        let r = evaluator
            .round(first + Duration::seconds(k * interval))
            .await
            .unwrap();
        assert_eq!(r.evaluated, 2, "both due at every instant");
    }
    let live = |event: &'static str| {
        let db = &env.db;
        async move {
            db.query(
                "SELECT payload->>'window_end', (payload->>'visitors')::int8 FROM webhook_deliveries
                 WHERE event_type = $1 ORDER BY payload->>'window_end'",
                &[&event],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
        }
    };
    let previewed = |p: &TriggerPreview| {
        p.firings
            .iter()
            .map(|f| (rfc(f.at), f.visitors))
            .collect::<Vec<_>>()
    };
    assert_eq!(previewed(&spike), live("visitor_spike").await);
    assert_eq!(previewed(&drop), live("traffic_drop").await);
}

/// A goal trigger's preview counts its completions per day of the site's
/// timezone (America/New_York: 03:00 UTC is the day before there), every
/// goal of the site when none is named, each goal an event completes
/// counted (each is a delivery); a custom event with props likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_preview_counts_per_day_of_the_sites_timezone() {
    let env = Env::new().await;
    env.db
        .execute(
            "UPDATE sites SET timezone = 'America/New_York' WHERE id = $1",
            &[&env.site_id],
        )
        .await
        .unwrap();
    for (event, page) in [(Some("Signup"), None), (None, Some("/pricing"))] {
        env.db
            .execute(
                "INSERT INTO goals (site_id, event_name, page_path, display_name, inserted_at, updated_at)
                 VALUES ($1, $2, $3, coalesce($2, $3), now(), now())",
                &[&env.site_id, &event, &page],
            )
            .await
            .unwrap();
    }
    // Today at 12:00 New York time, and the two days before.
    let noon_ny: OffsetDateTime = env
        .db
        .query_one(
            "SELECT (date_trunc('day', now() AT TIME ZONE 'America/New_York') + interval '12 hours')
                    AT TIME ZONE 'America/New_York' - interval '1 day'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ev = |at: OffsetDateTime,
              name: &'static str,
              path: &'static str,
              meta: Vec<(String, String)>| { (at, name, path, meta) };
    let plan = [
        // Yesterday (NY): 2 signups, one /pricing view.
        ev(noon_ny, "Signup", "/", vec![("plan".into(), "pro".into())]),
        ev(noon_ny + Duration::hours(1), "Signup", "/", vec![]),
        ev(noon_ny, "pageview", "/pricing", vec![]),
        // 23:30 yesterday in New York, 03:30 or 04:30 UTC today: yesterday.
        ev(
            noon_ny + Duration::minutes(690),
            "Signup",
            "/",
            vec![("plan".into(), "pro".into())],
        ),
        // The day before yesterday (NY): one signup, an unrelated pageview.
        ev(noon_ny - Duration::days(1), "Signup", "/", vec![]),
        ev(noon_ny - Duration::days(1), "pageview", "/about", vec![]),
    ];
    let rows: Vec<common::EventRow> = plan
        .iter()
        .map(|(at, name, path, meta)| common::EventRow {
            site_id: env.site_id,
            at: *at,
            name,
            path,
            user: 7,
            session: 8,
            source: "",
            meta,
            scroll: None,
        })
        .collect();
    common::insert_events(&env.db, &rows).await;
    let admin = Admin::from_config(&env.config()).unwrap();
    let day = |p: &TriggerPreview| {
        p.days
            .iter()
            .map(|d| (d.date.clone(), d.completions))
            .collect::<Vec<_>>()
    };
    let date = |t: OffsetDateTime| {
        let t = t.date();
        format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
    };
    let (y, by) = (date(noon_ny), date(noon_ny - Duration::days(1)));
    let all = preview(&admin, json!({"since": "3d", "trigger": {"type": "goal"}})).await;
    assert_eq!(all.timezone, "America/New_York");
    let d = day(&all);
    assert_eq!(d.len(), 4, "3 days back touch 4 days: {d:?}");
    assert!(d.contains(&(y.clone(), 4)), "{d:?}");
    assert!(d.contains(&(by.clone(), 1)), "{d:?}");
    assert_eq!(all.total, 5);
    let signup = preview(
        &admin,
        json!({"since": "3d", "trigger": {"type": "goal", "goal": "Signup"}}),
    )
    .await;
    assert_eq!(signup.total, 4);
    let pro = preview(
        &admin,
        json!({"since": "3d", "trigger": {"type": "event", "event_name": "Signup", "props": {"plan": "pro"}}}),
    )
    .await;
    assert!(day(&pro).contains(&(y, 2)), "{:?}", day(&pro));
    assert_eq!(pro.total, 2);
}

/// The command line: the issue's syntax, a human listing and --json; a
/// history over 90 days and a tracking trigger are refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_previews_with_the_issues_syntax_and_refuses_too_long_a_history() {
    let env = Env::new().await;
    let end = whole_second(OffsetDateTime::now_utc());
    insert(&env, &history(env.site_id, end, 120)).await;
    let run = |args: Vec<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plausible-webhooks"));
        cmd.env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
            .env_remove("RUST_LOG");
        for (k, v) in env.daemon_env() {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };
    let base = [
        "triggers",
        "preview",
        "--site",
        "example.com",
        "spike",
        "--threshold",
        "14",
        "--window",
        "10m",
        "--cooldown",
        "1h",
    ];
    let mut json_args = vec!["--json"];
    json_args.extend(base);
    json_args.extend(["--since", "2h"]);
    let o = run(json_args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["trigger_type"], "visitor_spike");
    assert_eq!(
        (v["window_secs"].as_i64(), v["cooldown_secs"].as_i64()),
        (Some(600), Some(3600))
    );
    assert!(v["total"].as_i64().unwrap() >= 1, "{v}");
    let mut human = base.to_vec();
    human.extend(["--since", "2h"]);
    let o = run(human);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("would have fired")
            && out.contains("threshold 14 (configured)")
            && out.contains("visitors"),
        "{out}"
    );
    let mut long = base.to_vec();
    long.extend(["--since", "91d"]);
    let o = run(long);
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(err.contains("since") && err.contains("90d"), "{err}");
    let o = run(vec![
        "triggers",
        "preview",
        "--site",
        "example.com",
        "tracking",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && err.contains("tracking"), "{err}");
}

/// The API: `POST /api/sites/{site}/triggers/preview` answers as the op
/// does, refuses a history over 90 days as a 422 naming `since`, and a site
/// the caller may not see is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_previews_a_site_and_refuses_what_the_cli_refuses() {
    const OPERATOR: &str = "operator-token-for-tests-0123456789";
    let env = Env::new().await;
    let end = whole_second(OffsetDateTime::now_utc());
    insert(&env, &history(env.site_id, end, 120)).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let tokens = format!("[\"{}\"]", operator_token_hash(OPERATOR));
    const SKB: &str = "secret-key-base-of-the-test-plausible-instance-0123456789abcdef";
    let _daemon = env.spawn_daemon(&[
        ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN", listen.as_str()),
        ("PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256", &tokens),
        ("SECRET_KEY_BASE", SKB),
    ]);
    // A viewer and an editor of the site's team, each with a Plausible key.
    let team: i64 = env
        .db
        .query_one("SELECT team_id FROM sites WHERE id = $1", &[&env.site_id])
        .await
        .unwrap()
        .get(0);
    let mut keys = Vec::new();
    for role in ["viewer", "editor"] {
        let user: i64 = env
            .db
            .query_one(
                "INSERT INTO users (email, inserted_at, updated_at) VALUES ($1, now(), now()) RETURNING id",
                &[&format!("{role}@example.com")],
            )
            .await
            .unwrap()
            .get(0);
        env.db
            .execute(
                "INSERT INTO team_memberships (user_id, team_id, role, inserted_at, updated_at)
                 VALUES ($1, $2, $3, now(), now())",
                &[&user, &team, &role],
            )
            .await
            .unwrap();
        let key = format!("key-of-{role}-{}", uuid::Uuid::new_v4().simple());
        env.db
            .execute(
                "INSERT INTO api_keys (user_id, team_id, name, key_prefix, key_hash, scopes, inserted_at, updated_at)
                 VALUES ($1, NULL, 'k', $2, $3, '{stats:read:*}', now(), now())",
                &[&user, &key[..6].to_string(), &plausible_webhooks::admin::auth::plausible_key_hash(SKB, &key)],
            )
            .await
            .unwrap();
        keys.push(key);
    }
    let base = format!("http://{listen}");
    wait_status(&format!("{base}/readyz"), 200, StdDuration::from_secs(30)).await;
    let call = |path: &'static str, body: Value| {
        let url = format!("{base}{path}");
        async move {
            let a = request("POST", &url, Some(OPERATOR), Some(&body))
                .await
                .unwrap();
            let v: Value = serde_json::from_str(&a.text).unwrap_or(Value::Null);
            (a.status, v)
        }
    };
    let a = call(
        "/api/sites/example.com/triggers/preview",
        json!({"since": "2h", "trigger": {"type": "visitor_spike", "threshold": 14, "window_secs": 600}}),
    )
    .await;
    assert_eq!(a.0, 200, "{:?}", a.1);
    let admin = Admin::from_config(&env.config()).unwrap();
    let direct = preview(
        &admin,
        json!({"since": "2h", "trigger": {"type": "visitor_spike", "threshold": 14, "window_secs": 600}}),
    )
    .await;
    assert_eq!(a.1["total"].as_i64(), Some(direct.total));
    assert_eq!(
        a.1["firings"][0]["at"].as_str(),
        direct.firings.first().map(|f| rfc(f.at)).as_deref()
    );
    let a = call(
        "/api/sites/example.com/triggers/preview",
        json!({"since": "100d", "trigger": {"type": "spike", "threshold": 14}}),
    )
    .await;
    assert_eq!(a.0, 422, "{:?}", a.1);
    assert_eq!(a.1["error"]["field"], "since");
    // Who may add a trigger on the site may preview one; a viewer may not.
    let body = json!({"since": "1d", "trigger": {"type": "spike", "threshold": 14}});
    for (key, status) in [(&keys[0], 403), (&keys[1], 200)] {
        let a = request(
            "POST",
            &format!("{base}/api/sites/example.com/triggers/preview"),
            Some(key),
            Some(&body),
        )
        .await
        .unwrap();
        assert_eq!(a.status, status, "{}", a.text);
    }
    // A typo is refused, not ignored, as on every endpoint.
    let a = call(
        "/api/sites/example.com/triggers/preview",
        json!({"since": "1d", "trigger": {"type": "spike", "thresold": 14}}),
    )
    .await;
    assert_eq!(a.0, 422, "{:?}", a.1);
    assert_eq!(a.1["error"]["code"], "unknown_field", "{:?}", a.1);
    let a = call(
        "/api/sites/nowhere.example/triggers/preview",
        json!({"since": "1d", "trigger": {"type": "spike"}}),
    )
    .await;
    assert_eq!(a.0, 404, "{:?}", a.1);
}

/// The preview's cost (docs/triggers.md "Preview"): `PREVIEW_ROWS` rows
/// (default 10,000,000) of one site over 30 days, then a 30-day preview of
/// a spike (5 min window), a drop (12 h) and a goal, timed. Not part of the
/// suite: `cargo nextest run --test preview --run-ignored only measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: seeds millions of rows"]
async fn measure_a_30_day_preview() {
    let rows: i64 = std::env::var("PREVIEW_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let env = Env::new().await;
    let started = std::time::Instant::now();
    // About 1.5 events per visitor, 1 in 50 a Signup.
    env.db
        .execute(
            "INSERT INTO events_v2 (site_id, \"timestamp\", name, pathname, user_id, session_id, referrer_source, meta_key, meta_value)
             SELECT $1, (now() AT TIME ZONE 'UTC') - random() * interval '30 days',
                    CASE WHEN g % 50 = 0 THEN 'Signup' ELSE 'pageview' END, '/', (g / 3) * 2 + (g % 2), g, '', '{}', '{}'
             FROM generate_series(1, $2::int8) g",
            &[&env.site_id, &rows],
        )
        .await
        .unwrap();
    env.db.batch_execute("ANALYZE events_v2").await.unwrap();
    eprintln!(
        "seeded {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    env.db
        .execute(
            "INSERT INTO goals (site_id, event_name, display_name, inserted_at, updated_at)
             VALUES ($1, 'Signup', 'Signup', now(), now())",
            &[&env.site_id],
        )
        .await
        .unwrap();
    let admin = Admin::from_config(&env.config()).unwrap();
    // The two statements apart: the visitor steps over 30 days of minutes,
    // and the 7 days of history a derived threshold reads.
    let mut cfg = env.config();
    cfg.analytics.query_timeout_ms = 600_000;
    let source = AnalyticsSource::from_config(&cfg).unwrap();
    let now = OffsetDateTime::now_utc();
    let (first, last) = (
        (now - Duration::days(30)).unix_timestamp() / 60 + 1,
        now.unix_timestamp() / 60,
    );
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
    let t = std::time::Instant::now();
    let w = plausible_webhooks::triggers::source::Window {
        site_id: env.site_id,
        from: now - Duration::days(7),
        to: now,
    };
    source.bucketed_visitors(&[(w, 300)]).await.unwrap();
    eprintln!(
        "derived threshold's history: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    for input in [
        json!({"since": "30d", "trigger": {"type": "spike", "threshold": 400}}),
        json!({"since": "30d", "trigger": {"type": "drop", "threshold": 50000}}),
        json!({"since": "30d", "trigger": {"type": "spike"}}),
        json!({"since": "30d", "trigger": {"type": "goal"}}),
    ] {
        let t = std::time::Instant::now();
        let p = preview(&admin, input.clone()).await;
        eprintln!(
            "{input}: {:.2} s, {} statements, {} evaluations, fired {}, derived {:?}",
            t.elapsed().as_secs_f64(),
            p.queries,
            p.evaluations.unwrap_or(0),
            p.total,
            p.derived_threshold
        );
    }
}
