//! The access rule, asked of the operations directly (no HTTP, no CLI): the
//! one place every face goes through. Plausible's roles, guests, keys bound
//! to a team or to none, locked sites and teams, sites by domain, former
//! domain or number, and triggers and deliveries reached only through their
//! own webhook. Also the rules of the core every face shares: every field
//! refused at once, an empty update refused, a change and a disable in one
//! commit.

mod common;

use common::Env;
use plausible_webhooks::admin::access::Principal;
use plausible_webhooks::admin::core::Admin;
use plausible_webhooks::admin::error::{OpError, Refusal};
use plausible_webhooks::admin::inputs::{
    from_json, NewTrigger, NewWebhook, SiteRef, WebhookChanges, WebhookQuery,
};
use plausible_webhooks::admin::ops::{DeliveryRef, TriggerRef};
use uuid::Uuid;

const OP: Principal = Principal::Operator;

struct Kit {
    env: Env,
    admin: Admin,
    /// example.com's team.
    team: i64,
}

impl Kit {
    async fn new() -> Kit {
        let env = Env::new().await;
        let admin = Admin::from_config(&env.config()).unwrap();
        let team = env
            .db
            .query_one("SELECT team_id FROM sites WHERE id = $1", &[&env.site_id])
            .await
            .unwrap()
            .get(0);
        Kit { env, admin, team }
    }

    async fn exec(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.env.db.query_one(sql, params).await.unwrap().get(0)
    }

    async fn user(&self, email: &str) -> i64 {
        self.exec(
            "INSERT INTO users (email, inserted_at, updated_at) VALUES ($1, now(), now()) RETURNING id",
            &[&email],
        )
        .await
    }

    async fn member(&self, user: i64, team: i64, role: &str) -> i64 {
        self.exec(
            "INSERT INTO team_memberships (user_id, team_id, role, inserted_at, updated_at)
             VALUES ($1, $2, $3, now(), now()) RETURNING id",
            &[&user, &team, &role],
        )
        .await
    }

    /// A site of a new team; returns (site, team).
    async fn site(&self, domain: &str) -> (i64, i64) {
        let site = plausible_webhooks::testkit::create_site(&self.env.db, domain)
            .await
            .unwrap();
        let team = self
            .exec("SELECT team_id FROM sites WHERE id = $1", &[&site])
            .await;
        (site, team)
    }

    /// A webhook of `site`, made by an operator.
    async fn webhook(&self, site: &str) -> Uuid {
        let n: NewWebhook = from_json(
            serde_json::json!({
                "site_id": site, "name": "w", "url": "https://hooks.example.net/x",
                "triggers": ["goal"]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        self.admin.create_webhook(&OP, n).await.unwrap().webhook.id
    }
}

/// A user's API key bound to `team`.
fn key(user: i64, team: i64) -> Principal {
    Principal::api_key(user, Some(team))
}

fn rename(name: &str) -> WebhookChanges {
    WebhookChanges {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn list_query(site: Option<&str>) -> WebhookQuery {
    WebhookQuery {
        site_id: site.map(SiteRef::new),
        ..Default::default()
    }
}

fn kind(e: &OpError) -> &'static str {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_admins_and_editors_manage_viewers_read_billing_sees_nothing() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    for (role, manage, read) in [
        ("owner", true, true),
        ("admin", true, true),
        ("editor", true, true),
        ("viewer", false, true),
        ("billing", false, false),
    ] {
        let u = k.user(&format!("{role}@example.com")).await;
        k.member(u, k.team, role).await;
        let who = key(u, k.team);
        let shown = k.admin.show_webhook(&who, w).await;
        assert_eq!(shown.is_ok(), read, "{role} reads: {shown:?}");
        let listed = k
            .admin
            .list_webhooks(&who, &list_query(None))
            .await
            .unwrap();
        assert_eq!(listed.webhooks.len(), usize::from(read), "{role} lists");
        let changed = k.admin.update_webhook(&who, w, rename(role)).await;
        match (manage, read, changed) {
            (true, _, Ok(v)) => assert_eq!(v.name, role),
            (false, true, Err(e)) => assert_eq!(kind(&e), "forbidden", "{role}: {e}"),
            (false, false, Err(e)) => assert_eq!(kind(&e), "not_found", "{role}: {e}"),
            (_, _, r) => panic!("{role}: {r:?}"),
        }
        let test = k.admin.send_test(&who, w).await;
        if !manage {
            assert!(
                matches!(test, Err(OpError::Forbidden(_) | OpError::NotFound(_))),
                "{role} may not send a test: {test:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_is_answered_exactly_as_a_site_or_webhook_that_does_not_exist() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    let stranger = k.user("stranger@example.com").await;
    let (_, own_team) = k.site("own.example").await;
    k.member(stranger, own_team, "owner").await;
    let who = key(stranger, own_team);

    let hidden = k.admin.show_webhook(&who, w).await.unwrap_err();
    let missing = k.admin.show_webhook(&who, Uuid::nil()).await.unwrap_err();
    assert_eq!(kind(&hidden), "not_found");
    assert_eq!(
        hidden.to_string().replace(&w.to_string(), "ID"),
        missing.to_string().replace(&Uuid::nil().to_string(), "ID"),
        "the same words for a webhook one may not see and one that does not exist"
    );
    let create = |site: &str| -> NewWebhook {
        from_json(
            serde_json::json!({"site_id": site, "name": "x", "url": "https://h.example.net/"})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    };
    let hidden = k
        .admin
        .create_webhook(&who, create("example.com"))
        .await
        .unwrap_err();
    let missing = k
        .admin
        .create_webhook(&who, create("nosuch.test"))
        .await
        .unwrap_err();
    assert_eq!(
        hidden.to_string().replace("`example.com`", "`S`"),
        missing.to_string().replace("`nosuch.test`", "`S`")
    );
    // A huge name is not echoed whole.
    let long = "x".repeat(60_000);
    let e = k
        .admin
        .create_webhook(&who, create(&long))
        .await
        .unwrap_err();
    assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    assert_eq!(k.env.count("SELECT count(*) FROM webhooks").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_has_their_guest_role_on_that_one_site_only() {
    let k = Kit::new().await;
    let a = k.webhook("example.com").await;
    // Another site of the same team.
    let other = k
        .exec(
            "INSERT INTO sites (domain, timezone, team_id, inserted_at, updated_at)
             VALUES ('other.example', 'Etc/UTC', $1, now(), now()) RETURNING id",
            &[&k.team],
        )
        .await;
    let b = k.webhook("other.example").await;
    let guest = k.user("guest@example.com").await;
    let m = k.member(guest, k.team, "guest").await;
    k.exec(
        "INSERT INTO guest_memberships (team_membership_id, site_id, role, inserted_at, updated_at)
         VALUES ($1, $2, 'editor', now(), now()) RETURNING id",
        &[&m, &k.env.site_id],
    )
    .await;
    let who = key(guest, k.team);
    assert!(k
        .admin
        .update_webhook(&who, a, rename("by guest"))
        .await
        .is_ok());
    assert_eq!(
        kind(&k.admin.show_webhook(&who, b).await.unwrap_err()),
        "not_found",
        "the team's other site {other} is not the guest's"
    );
    let listed = k
        .admin
        .list_webhooks(&who, &list_query(None))
        .await
        .unwrap();
    assert_eq!(
        listed.webhooks.iter().map(|w| w.id).collect::<Vec<_>>(),
        [a]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_a_team_reaches_only_that_teams_sites() {
    let k = Kit::new().await;
    let a = k.webhook("example.com").await;
    let (_, other_team) = k.site("second.example").await;
    let b = k.webhook("second.example").await;
    let u = k.user("both@example.com").await;
    k.member(u, k.team, "owner").await;
    k.member(u, other_team, "owner").await;
    let first = key(u, k.team);
    assert!(k.admin.show_webhook(&first, a).await.is_ok());
    assert_eq!(
        kind(&k.admin.show_webhook(&first, b).await.unwrap_err()),
        "not_found"
    );
    assert!(k.admin.show_webhook(&key(u, other_team), b).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teamless_key_is_refused_on_a_set_up_teams_site() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    let u = k.user("legacy@example.com").await;
    k.member(u, k.team, "owner").await;
    let legacy = Principal::api_key(u, None);
    assert!(
        k.admin.show_webhook(&legacy, w).await.is_ok(),
        "a team not set up"
    );
    k.env
        .db
        .execute(
            "UPDATE teams SET setup_complete = true WHERE id = $1",
            &[&k.team],
        )
        .await
        .unwrap();
    let e = k.admin.show_webhook(&legacy, w).await.unwrap_err();
    assert!(
        matches!(e, OpError::Refused(Refusal::LegacyKeyOnTeamSite)),
        "{e:?}"
    );
    assert!(k
        .admin
        .list_webhooks(&legacy, &list_query(None))
        .await
        .unwrap()
        .webhooks
        .is_empty());
    assert!(k.admin.show_webhook(&key(u, k.team), w).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_site_or_team_is_refused_but_not_to_operators() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    let u = k.user("owner@example.com").await;
    k.member(u, k.team, "owner").await;
    let who = key(u, k.team);
    for lock in [
        "UPDATE sites SET locked = true WHERE team_id = $1",
        "UPDATE teams SET locked = true WHERE id = $1",
    ] {
        k.env.db.execute(lock, &[&k.team]).await.unwrap();
        let e = k
            .admin
            .update_webhook(&who, w, rename("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, OpError::Refused(Refusal::SiteLocked)),
            "{lock}: {e:?}"
        );
        assert!(k
            .admin
            .list_webhooks(&who, &list_query(None))
            .await
            .unwrap()
            .webhooks
            .is_empty());
        assert!(k
            .admin
            .update_webhook(&OP, w, rename("by operator"))
            .await
            .is_ok());
        k.env
            .db
            .batch_execute("UPDATE sites SET locked = false; UPDATE teams SET locked = false")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_named_by_its_domain_its_former_domain_or_its_number() {
    let k = Kit::new().await;
    k.webhook("example.com").await;
    k.env
        .db
        .execute(
            "UPDATE sites SET domain = 'renamed.example', domain_changed_from = 'example.com' WHERE id = $1",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    for name in ["renamed.example", "example.com", &k.env.site_id.to_string()] {
        let l = k
            .admin
            .list_webhooks(&OP, &list_query(Some(name)))
            .await
            .unwrap();
        assert_eq!(l.webhooks.len(), 1, "{name}");
        assert_eq!(l.webhooks[0].site_id, "renamed.example");
    }
    let e = k
        .admin
        .list_webhooks(&OP, &list_query(Some("nosuch.example")))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_deliveries_are_reached_only_through_their_own_webhook() {
    let k = Kit::new().await;
    let a = k.webhook("example.com").await;
    let b = k.webhook("example.com").await;
    let t = k
        .admin
        .add_trigger(&OP, a, "spike".parse::<NewTrigger>().unwrap())
        .await
        .unwrap();
    let wrong = TriggerRef {
        webhook: b,
        id: t.id,
    };
    assert_eq!(
        kind(&k.admin.remove_trigger(&OP, wrong).await.unwrap_err()),
        "not_found"
    );
    let d = k.env.enqueue(a, 1).await[0];
    let wrong = DeliveryRef { webhook: b, id: d };
    assert_eq!(
        kind(&k.admin.show_delivery(&OP, wrong).await.unwrap_err()),
        "not_found"
    );
    let right = DeliveryRef { webhook: a, id: d };
    assert_eq!(
        k.admin.show_delivery(&OP, right).await.unwrap().delivery.id,
        d
    );
    assert_eq!(
        k.admin.resolve_delivery(&OP, &d.to_string()).await.unwrap(),
        right
    );
    let removed = k
        .admin
        .remove_trigger(
            &OP,
            TriggerRef {
                webhook: a,
                id: t.id,
            },
        )
        .await
        .unwrap();
    assert_eq!(removed.id, t.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_resolves_among_what_the_caller_may_read() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    let prefix = &w.to_string()[..8];
    assert_eq!(k.admin.resolve_webhook(&OP, prefix).await.unwrap(), w);
    let u = k.user("outsider@example.com").await;
    let (_, t) = k.site("theirs.example").await;
    k.member(u, t, "owner").await;
    let e = k
        .admin
        .resolve_webhook(&key(u, t), prefix)
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not_found");
    let e = k.admin.resolve_webhook(&OP, "zz").await.unwrap_err();
    assert_eq!(kind(&e), "syntax");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_refused_is_named_at_once() {
    let k = Kit::new().await;
    let n: NewWebhook = from_json(
        br#"{"name": " ", "url": "http://h.example/", "secret": "short",
             "headers": {"Host": "x"}, "triggers": [{"type": "sometimes"}]}"#,
    )
    .unwrap();
    let Err(OpError::Invalid(e)) = k.admin.create_webhook(&OP, n).await else {
        panic!("refused")
    };
    let named: Vec<(&str, &str)> = e
        .all()
        .iter()
        .map(|i| (i.field.as_str(), i.rule.code()))
        .collect();
    for want in [
        ("site_id", "required"),
        ("name", "required"),
        ("url", "https_required"),
        ("secret", "too_short"),
        ("headers.Host", "reserved"),
        ("type", "syntax"),
    ] {
        assert!(named.contains(&want), "{want:?} in {named:?}");
    }
    assert_eq!(k.env.count("SELECT count(*) FROM webhooks").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_update_is_refused_and_a_change_with_a_disable_commits_once() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    let e = k
        .admin
        .update_webhook(&OP, w, WebhookChanges::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.to_string().contains("nothing to change")),
        ("required", true)
    );
    // A refused disable leaves the rename undone too.
    let c: WebhookChanges = from_json(
        serde_json::json!({"name": "renamed", "enabled": false, "disabled_reason": "r".repeat(300)})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let e = k.admin.update_webhook(&OP, w, c).await.unwrap_err();
    assert_eq!(e.code(), "too_long");
    let v = k.admin.show_webhook(&OP, w).await.unwrap().webhook;
    assert_eq!((v.name.as_str(), v.enabled), ("w", true));
    let c: WebhookChanges =
        from_json(br#"{"name": "renamed", "enabled": false, "disabled_reason": "moving"}"#)
            .unwrap();
    let v = k.admin.update_webhook(&OP, w, c).await.unwrap();
    assert_eq!(
        (v.name.as_str(), v.enabled, v.disabled_reason.as_deref()),
        ("renamed", false, Some("by an operator: moving"))
    );
    let c: WebhookChanges = from_json(br#"{"name": "again", "enabled": true}"#).unwrap();
    let v = k.admin.update_webhook(&OP, w, c).await.unwrap();
    assert_eq!((v.name.as_str(), v.enabled), ("again", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_lists_their_sites_with_their_role_goals_and_outcomes() {
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    k.site("other.example").await;
    let u = k.user("viewer@example.com").await;
    k.member(u, k.team, "viewer").await;
    let sites = k.admin.list_sites(&key(u, k.team)).await.unwrap().sites;
    assert_eq!(sites.len(), 1, "{sites:?}");
    assert_eq!(
        (
            sites[0].site_id.as_str(),
            sites[0].access.as_str(),
            sites[0].webhooks
        ),
        ("example.com", "read", 1)
    );
    let all = k.admin.list_sites(&OP).await.unwrap().sites;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|s| s.access == "administer"));
    k.env
        .db
        .execute(
            "INSERT INTO goals (site_id, event_name, display_name, custom_props, inserted_at, updated_at)
             VALUES ($1, 'Signup', 'Signup', '{\"plan\": \"pro\"}', now(), now())",
            &[&k.env.site_id],
        )
        .await
        .unwrap();
    let goals = k
        .admin
        .list_goals(&key(u, k.team), &SiteRef::new("example.com"))
        .await
        .unwrap();
    assert_eq!(goals.goals.len(), 1);
    assert_eq!(
        (
            goals.goals[0].kind.as_str(),
            goals.goals[0].custom_props["plan"].as_str()
        ),
        ("event", Some("pro"))
    );
    let e = k
        .admin
        .list_goals(&key(u, k.team), &SiteRef::new("other.example"))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "not_found");
    k.env
        .db
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, status, attempts, finished_at)
             VALUES ($1, 'test', 'success', 1, now()), ($1, 'test', 'failed', 1, now()), ($1, 'test', 'failed', 1, now() - interval '3 hours')",
            &[&w],
        )
        .await
        .unwrap();
    let stats = k
        .admin
        .delivery_stats(&key(u, k.team), w)
        .await
        .unwrap()
        .hours;
    assert_eq!(stats.len(), 24);
    let last = stats.last().unwrap();
    assert_eq!((last.success, last.failed), (1, 1));
    assert_eq!(stats.iter().map(|h| h.failed).sum::<i64>(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_hand_out_portal_links_that_reach_one_site_with_their_role() {
    use plausible_webhooks::admin::inputs::NewPortalLink;
    use plausible_webhooks::admin::portal;
    let k = Kit::new().await;
    let w = k.webhook("example.com").await;
    k.site("other.example").await;
    let other = k.webhook("other.example").await;
    let editor = k.user("editor@example.com").await;
    k.member(editor, k.team, "editor").await;
    let site = SiteRef::new("example.com");
    let e = k
        .admin
        .mint_portal_link(&key(editor, k.team), &site, NewPortalLink::default())
        .await
        .unwrap_err();
    assert_eq!(kind(&e), "forbidden", "{e}");
    let admin = k.user("admin@example.com").await;
    k.member(admin, k.team, "admin").await;
    let bad = NewPortalLink {
        role: Some("owner".into()),
        ..Default::default()
    };
    let e = k
        .admin
        .mint_portal_link(&key(admin, k.team), &site, bad)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.to_string().contains("viewer or editor")),
        ("syntax", true)
    );
    let link = k
        .admin
        .mint_portal_link(&key(admin, k.team), &site, NewPortalLink::default())
        .await
        .unwrap();
    assert_eq!(
        (link.role.as_str(), link.site_id.as_str()),
        ("viewer", "example.com")
    );
    let token = portal::decode(link.url.rsplit('/').next().unwrap()).unwrap();
    let db = &k.env.db;
    let ttl = std::time::Duration::from_secs(3600);
    let session = portal::redeem(db, &token, ttl)
        .await
        .unwrap()
        .expect("redeemed");
    assert_eq!(
        portal::redeem(db, &token, ttl).await.unwrap(),
        None,
        "once only"
    );
    let who = portal::session(db, &session).await.unwrap().unwrap().who;
    assert_eq!(
        k.admin
            .list_webhooks(&who, &list_query(None))
            .await
            .unwrap()
            .webhooks
            .len(),
        1
    );
    assert!(k.admin.show_webhook(&who, w).await.is_ok());
    assert_eq!(
        kind(&k.admin.show_webhook(&who, other).await.unwrap_err()),
        "not_found"
    );
    assert_eq!(
        kind(
            &k.admin
                .update_webhook(&who, w, rename("x"))
                .await
                .unwrap_err()
        ),
        "forbidden",
        "a viewer's link reads only"
    );
    portal::end(db, &session).await.unwrap();
    assert_eq!(portal::session(db, &session).await.unwrap(), None);
}

/// A client whose every request to PostgreSQL is counted: the Sync
/// messages it writes (one per round trip of the extended protocol).
struct CountingStream {
    inner: tokio::net::TcpStream,
    syncs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            let sync = b"S\0\0\0\x04";
            let found = buf[..*n].windows(sync.len()).filter(|w| w == sync).count();
            self.syncs
                .fetch_add(found, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A site the caller holds no role on and a site that does not exist are
/// told apart by nothing: the same words, and the same work in the
/// database (the same number of round trips, counted on the wire), so the
/// time an answer takes tells nothing either. (Measured times: docs of
/// issue 25's note; a test must not time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_site_costs_the_database_what_a_missing_one_costs() {
    use plausible_webhooks::admin::access::{self, Access};
    let k = Kit::new().await;
    let stranger = k.user("stranger@example.com").await;
    let (_, own_team) = k.site("own.example").await;
    k.member(stranger, own_team, "owner").await;
    let pg: tokio_postgres::Config = k.env.url.parse().unwrap();
    let port = pg.get_ports()[0];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let syncs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stream = CountingStream {
        inner: tcp,
        syncs: syncs.clone(),
    };
    let (client, conn) = pg.connect_raw(stream, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let site_id = k.env.site_id.to_string();
    for who in [key(stranger, own_team), Principal::api_key(stranger, None)] {
        let mut cost = Vec::new();
        for (hidden, missing) in [("example.com", "nosuch.test"), (site_id.as_str(), "987654")] {
            let mut words = Vec::new();
            for name in [hidden, missing] {
                let before = syncs.load(std::sync::atomic::Ordering::Relaxed);
                let e = access::site(&client, &who, &SiteRef::new(name), Access::Read)
                    .await
                    .unwrap_err();
                // The statement's Close (and its Sync) is sent when it is
                // dropped, by the connection's task: a simple query after it
                // (no Sync of its own) returns once it is written.
                client.batch_execute("").await.unwrap();
                cost.push(syncs.load(std::sync::atomic::Ordering::Relaxed) - before);
                words.push(e.to_string().replace(&format!("`{name}`"), "`S`"));
            }
            assert_eq!(words[0], words[1], "{who:?}");
        }
        assert!(
            cost.iter().all(|c| *c == cost[0]) && cost[0] > 0,
            "round trips (hidden, missing) by domain and by number for {who:?}: {cost:?}"
        );
    }
}
