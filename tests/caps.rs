//! Caps against amplification (issue 25, point 2): webhooks per site,
//! triggers per webhook and deliveries per `webhook_enqueue`, refused by the
//! database whoever writes (SQL as Plausible writes, the core as every face
//! calls it) with the cap named and how to raise it; and the webhook list a
//! page at a time, as the delivery log is.

mod common;

use std::collections::HashSet;

use common::Env;
use plausible_webhooks::admin::access::Principal;
use plausible_webhooks::admin::core::Admin;
use plausible_webhooks::admin::inputs::{from_json, NewTrigger, NewWebhook, Num, WebhookQuery};
use uuid::Uuid;

const OP: Principal = Principal::Operator;

/// An environment whose database enforces small caps: 3 webhooks a site,
/// 2 triggers a webhook, 2 deliveries an enqueue.
async fn small_caps() -> (Env, Admin) {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.limits.max_webhooks_per_site = 3;
    cfg.limits.max_triggers_per_webhook = 2;
    cfg.limits.max_enqueue_deliveries = 2;
    plausible_webhooks::db::settings::apply(&env.db, &cfg)
        .await
        .unwrap();
    let admin = Admin::from_config(&cfg).unwrap();
    (env, admin)
}

async fn sql_webhook(env: &Env) -> Result<Uuid, tokio_postgres::Error> {
    env.db
        .query_one(
            "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, 'w', 'https://h.example.net/', $2) RETURNING id",
            &[&env.site_id, &common::SECRET],
        )
        .await
        .map(|r| r.get(0))
}

fn constraint(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().expect("a database error");
    (
        db.constraint().unwrap_or("").to_string(),
        db.message().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_what_is_over_a_cap_whoever_writes() {
    let (env, _) = small_caps().await;
    let mut webhooks = Vec::new();
    for _ in 0..3 {
        webhooks.push(sql_webhook(&env).await.unwrap());
    }
    let (name, message) = constraint(&sql_webhook(&env).await.unwrap_err());
    assert_eq!(name, "webhooks_per_site_limit", "{message}");
    assert!(
        message.contains("max_webhooks_per_site") && message.contains("3 webhooks"),
        "{message}"
    );
    // A deleted webhook frees its place; restoring it takes one again.
    env.db
        .execute(
            "UPDATE webhooks SET deleted_at = now() WHERE id = $1",
            &[&webhooks[0]],
        )
        .await
        .unwrap();
    let fourth = sql_webhook(&env).await.unwrap();
    let e = env
        .db
        .execute(
            "UPDATE webhooks SET deleted_at = NULL WHERE id = $1",
            &[&webhooks[0]],
        )
        .await
        .unwrap_err();
    assert_eq!(constraint(&e).0, "webhooks_per_site_limit");

    let trigger = |w: Uuid| {
        let db = &env.db;
        async move {
            db.execute(
                "INSERT INTO webhook_triggers (webhook_id, trigger_type) VALUES ($1, 'goal_completion')",
                &[&w],
            )
            .await
        }
    };
    trigger(fourth).await.unwrap();
    trigger(fourth).await.unwrap();
    let (name, message) = constraint(&trigger(fourth).await.unwrap_err());
    assert_eq!(name, "webhook_triggers_per_webhook_limit", "{message}");
    assert!(message.contains("max_triggers_per_webhook"), "{message}");

    // Three subscribed webhooks, a fan-out cap of 2: refused whole.
    for w in &webhooks[1..] {
        trigger(*w).await.unwrap();
    }
    let e = env
        .db
        .query(
            "SELECT webhook_enqueue($1, 'goal_completion', '{}')",
            &[&env.site_id],
        )
        .await
        .unwrap_err();
    let (name, message) = constraint(&e);
    assert_eq!(name, "webhook_enqueue_fanout_limit", "{message}");
    assert!(
        message.contains("would make 3 deliveries") && message.contains("max_enqueue_deliveries"),
        "{message}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        0
    );
    // Within the cap it enqueues as before, idempotency key and all.
    // (Its trigger gone, it is still subscribed: unsubscribed too.)
    env.db
        .execute(
            "DELETE FROM webhook_triggers WHERE webhook_id = $1",
            &[&webhooks[1]],
        )
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET events = '{}' WHERE id = $1",
            &[&webhooks[1]],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let made = env
            .db
            .query(
                "SELECT webhook_enqueue($1, 'goal_completion', '{}', 'k1')",
                &[&env.site_id],
            )
            .await
            .unwrap();
        assert!(made.len() <= 2);
    }
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_refuses_over_a_cap_with_the_cap_named() {
    let (_env, admin) = small_caps().await;
    let new = |triggers: usize| -> NewWebhook {
        from_json(
            serde_json::json!({"site_id": "example.com", "name": "w", "url": "https://h.example.net/",
                               "triggers": vec!["goal"; triggers]})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    };
    let e = admin.create_webhook(&OP, new(3)).await.unwrap_err();
    assert_eq!(e.code(), "too_many", "{e}");
    assert!(e.to_string().contains("max_triggers_per_webhook"), "{e}");
    let w = admin.create_webhook(&OP, new(2)).await.unwrap().webhook.id;
    let goal: NewTrigger = from_json(br#"{"type": "goal_completion"}"#).unwrap();
    let e = admin.add_trigger(&OP, w, goal).await.unwrap_err();
    assert_eq!(
        (e.code(), e.http_status().as_u16()),
        ("too_many", 422),
        "{e}"
    );
    admin.create_webhook(&OP, new(0)).await.unwrap();
    admin.create_webhook(&OP, new(0)).await.unwrap();
    let e = admin.create_webhook(&OP, new(0)).await.unwrap_err();
    assert_eq!(e.code(), "too_many", "{e}");
    let body = serde_json::to_value(e.body("")).unwrap();
    assert_eq!(body["error"]["field"], "site_id", "{body}");
    assert!(e.to_string().contains("max_webhooks_per_site"), "{e}");
}

/// `list` a page at a time: every webhook once, in order, the last page
/// without a cursor; a cursor that is not one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_listed_a_page_at_a_time() {
    let env = Env::new().await;
    let admin = Admin::from_config(&env.config()).unwrap();
    let other = plausible_webhooks::testkit::create_site(&env.db, "aaa.example")
        .await
        .unwrap();
    for site in [env.site_id, other] {
        for i in 0..4 {
            env.db
                .execute(
                    "INSERT INTO webhooks (site_id, name, url, secret) VALUES ($1, $2, 'https://h.example.net/', $3)",
                    &[&site, &format!("w{i}"), &common::SECRET],
                )
                .await
                .unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let q = WebhookQuery {
            limit: Some(Num::Number(3)),
            cursor: cursor.clone(),
            ..Default::default()
        };
        let page = admin.list_webhooks(&OP, &q).await.unwrap();
        pages += 1;
        assert!(page.webhooks.len() <= 3);
        seen.extend(page.webhooks.iter().map(|w| (w.site_id.clone(), w.id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 8);
    assert_eq!(seen.iter().map(|s| s.1).collect::<HashSet<_>>().len(), 8);
    let domains: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(&domains[..4], ["aaa.example"; 4]);
    let q = WebhookQuery {
        cursor: Some("nonsense".into()),
        ..Default::default()
    };
    let e = admin.list_webhooks(&OP, &q).await.unwrap_err();
    assert_eq!(e.code(), "syntax", "{e}");
    let q = WebhookQuery {
        limit: Some(Num::Number(0)),
        ..Default::default()
    };
    assert_eq!(
        admin.list_webhooks(&OP, &q).await.unwrap_err().code(),
        "out_of_range"
    );
}
