//! Owner emails end to end (docs/operating.md#owner-emails): a webhook
//! disabled is told once, by email, to the owners and admins of its site's
//! team, over real SMTP with TLS (an SMTP server on loopback with the test
//! CA, src/testkit/smtp.rs); a hung SMTP server delays no delivery, and its
//! mail ends failed with the error recorded. Real daemon, real receivers.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use plausible_webhooks::config::{Config, Redacted};
use plausible_webhooks::testkit::receiver::always;
use plausible_webhooks::testkit::smtp::{SmtpMode, SmtpServer};

const T: Duration = Duration::from_secs(30);

/// A user of the site's team with `role` (and one in another team).
async fn member(env: &Env, email: &str, role: &str, other_team: bool) {
    env.db
        .execute(
            "WITH u AS (INSERT INTO users (email, inserted_at, updated_at) VALUES ($1, now(), now()) RETURNING id),
                  site_team AS (SELECT team_id FROM sites WHERE id = $4)
             INSERT INTO team_memberships (role, user_id, team_id, inserted_at, updated_at)
             SELECT $2, u.id,
                    CASE WHEN $3 THEN (SELECT max(id) FROM teams WHERE id <> (SELECT team_id FROM site_team))
                         ELSE (SELECT team_id FROM site_team) END,
                    now(), now()
             FROM u",
            &[&email, &role, &other_team, &env.site_id],
        )
        .await
        .unwrap();
}

/// Owner, admin, editor, viewer and billing of the site's team, a guest,
/// and the owner of another team.
async fn team(env: &Env) {
    env.db
        .execute(
            "INSERT INTO teams (name, inserted_at, updated_at) VALUES ('Other', now(), now())",
            &[],
        )
        .await
        .unwrap();
    for (email, role) in [
        ("owner@example.com", "owner"),
        ("admin@example.com", "admin"),
        ("editor@example.com", "editor"),
        ("viewer@example.com", "viewer"),
        ("billing@example.com", "billing"),
        ("guest@example.com", "guest"),
    ] {
        member(env, email, role, false).await;
    }
    member(env, "someone-else@example.org", "owner", true).await;
}

fn mail_config(cfg: &mut Config, env: &Env, smtp: &SmtpServer, mode: &str) {
    cfg.mail.enabled = true;
    cfg.mail.smtp_host = "127.0.0.1".into();
    cfg.mail.smtp_port = smtp.port();
    cfg.mail.tls = mode.into();
    cfg.mail.ca_file = Some(env.tls.ca_file.clone());
    cfg.mail.sender = "Plausible Webhooks <webhooks@plausible.example.test>".into();
    cfg.mail.smtp_user = "mailer".into();
    cfg.mail.smtp_password = Some(Redacted("smtp-password".into()));
    cfg.mail.interval_secs = 1;
    cfg.mail.retry_secs = 1;
}

async fn outbox(env: &Env) -> Vec<(String, i32, Option<String>, Option<Vec<String>>)> {
    env.db
        .query(
            "SELECT status, attempts, last_error, recipients FROM webhook_owner_mail ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_is_mailed_once_to_the_owners_and_admins_of_its_site() {
    let env = Env::new().await;
    team(&env).await;
    let smtp = SmtpServer::start(&env.tls, SmtpMode::StartTls)
        .await
        .unwrap();
    let bad = env.receiver(always(500)).await;
    let wh = env.webhook(&bad.url("/hook")).await;
    env.db
        .execute(
            "UPDATE webhooks SET name = 'Orders to CRM' WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    cfg.health.disable_after_failures = 2;
    cfg.health.disable_after_secs = 0;
    cfg.web.enabled = true;
    cfg.web.public_url = "https://plausible.example.test".into();
    mail_config(&mut cfg, &env, &smtp, "starttls");
    let daemon = env.daemon(cfg).await;

    env.enqueue(wh, 1).await;
    env.wait_all_final(T).await;
    env.enqueue(wh, 1).await;
    let mails = smtp.wait_for(1, T).await.unwrap();
    let m = &mails[0];
    assert!(m.tls, "sent over TLS (STARTTLS)");
    assert_eq!(
        m.auth,
        Some(("mailer".to_string(), "smtp-password".to_string()))
    );
    assert_eq!(m.from, "webhooks@plausible.example.test");
    let mut to = m.to.clone();
    to.sort();
    assert_eq!(
        to,
        ["admin@example.com", "owner@example.com"],
        "owners and admins only"
    );
    let header_to = m.header("To").unwrap();
    assert!(
        header_to.contains("owner@example.com") && header_to.contains("admin@example.com"),
        "{header_to}"
    );
    let subject = m.header("Subject").unwrap();
    assert!(
        subject.contains("Orders to CRM")
            && subject.contains("example.com")
            && subject.contains("disabled"),
        "{subject}"
    );
    let body = m.body();
    for needle in [
        "Orders to CRM",
        &wh.to_string(),
        "Site: example.com",
        "Receiver: 127.0.0.1",
        "2 consecutive deliveries failed",
        "500",
        &format!("https://plausible.example.test/webhooks/webhooks/{wh}"),
        &format!("plausible-webhooks enable {wh}"),
        "\"enabled\": true",
    ] {
        assert!(body.contains(needle), "{needle:?} not in:\n{body}");
    }
    env.wait_until("SELECT status = 'sent' FROM webhook_owner_mail", T)
        .await;
    let rows = outbox(&env).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, 1);
    let mut recipients = rows[0].3.clone().unwrap();
    recipients.sort();
    assert_eq!(recipients, ["admin@example.com", "owner@example.com"]);

    // Once per disable: passes later send nothing more...
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.mails().len(), 1);
    // ...and the next disable (by hand this time) is mailed once too.
    env.db
        .execute("UPDATE webhooks SET enabled = true WHERE id = $1", &[&wh])
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE webhooks SET enabled = false, disabled_reason = 'switched off by the test', disabled_at = now() WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    let mails = smtp.wait_for(2, T).await.unwrap();
    assert!(mails[1].body().contains("switched off by the test"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.mails().len(), 2);
    assert_eq!(outbox(&env).await.len(), 2);
    daemon.shutdown().await.unwrap();
}

/// A stuck SMTP server (it accepts the connection and never answers): the
/// deliveries of other webhooks go on at their pace; the mail is tried
/// `max_attempts` times, each bounded by `timeout_secs`, and ends failed
/// with its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_smtp_server_delays_no_delivery_and_its_mail_ends_failed() {
    let env = Env::new().await;
    team(&env).await;
    let smtp = SmtpServer::start(&env.tls, SmtpMode::Hang).await.unwrap();
    let bad = env.receiver(always(500)).await;
    let good = env.receiver(always(200)).await;
    let wh_bad = env.webhook(&bad.url("/")).await;
    let wh_good = env.webhook(&good.url("/")).await;
    let mut cfg = env.config();
    cfg.delivery.retry_schedule_secs = vec![];
    cfg.health.disable_after_failures = 1;
    cfg.health.disable_after_secs = 0;
    mail_config(&mut cfg, &env, &smtp, "implicit");
    cfg.mail.timeout_secs = 2;
    cfg.mail.max_attempts = 2;
    let daemon = env.daemon(cfg).await;

    env.enqueue(wh_bad, 1).await;
    env.wait_until("SELECT count(*) = 1 FROM webhook_owner_mail", T)
        .await;
    // The mailer is now talking to a server that never answers.
    env.wait_until("SELECT attempts >= 1 FROM webhook_owner_mail", T)
        .await;
    for n in 1..=3 {
        let started = Instant::now();
        env.enqueue(wh_good, 1).await;
        good.wait_for(n, T).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1_800),
            "a delivery took {:?} while the SMTP server hung",
            started.elapsed()
        );
    }
    env.wait_until("SELECT status = 'failed' FROM webhook_owner_mail", T)
        .await;
    let rows = outbox(&env).await;
    assert_eq!(rows.len(), 1);
    let (_, attempts, error, _) = &rows[0];
    assert_eq!(*attempts, 2, "tried max_attempts times");
    let error = error.clone().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("time"),
        "the timeout is recorded: {error}"
    );
    assert!(smtp.connections() >= 2, "each attempt connected");
    assert!(smtp.mails().is_empty());
    daemon.shutdown().await.unwrap();
}

/// Plausible CE's own mailer variables are read where the `[mail]` keys are
/// left empty (SMTP_HOST_SSL_ENABLED=true: implicit TLS), and mail goes out
/// over implicit TLS with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plausibles_mailer_variables_and_implicit_tls() {
    let env = Env::new().await;
    team(&env).await;
    let smtp = SmtpServer::start(&env.tls, SmtpMode::Implicit)
        .await
        .unwrap();
    let vars: std::collections::BTreeMap<String, String> = [
        ("DATABASE_URL", env.url.as_str()),
        ("SMTP_HOST_ADDR", "127.0.0.1"),
        ("SMTP_HOST_PORT", &smtp.port().to_string()),
        ("SMTP_USER_NAME", "plausible"),
        ("SMTP_USER_PWD", "from-plausibles-env"),
        ("SMTP_HOST_SSL_ENABLED", "true"),
        ("MAILER_EMAIL", "hello@plausible.example.test"),
        ("MAILER_NAME", "Plausible"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let toml = format!(
        "[mail]\nenabled = true\ninterval_secs = 1\nca_file = \"{}\"\n",
        env.tls.ca_file.display()
    );
    let parsed = Config::from_parts(&toml, &vars).unwrap();
    let m = &parsed.mail;
    assert_eq!(
        (
            m.smtp_host.as_str(),
            m.smtp_port,
            m.tls.as_str(),
            m.smtp_user.as_str()
        ),
        ("127.0.0.1", smtp.port(), "implicit", "plausible")
    );
    assert_eq!(m.sender, "Plausible <hello@plausible.example.test>");
    assert_eq!(
        m.smtp_password.as_ref().map(|p| p.0.as_str()),
        Some("from-plausibles-env")
    );
    let mut cfg = env.config();
    cfg.mail = parsed.mail.clone();
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let daemon = env.daemon(cfg).await;
    env.db
        .execute(
            "UPDATE webhooks SET enabled = false, disabled_reason = 'receiver retired', disabled_at = now() WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    let mails = smtp.wait_for(1, T).await.unwrap();
    assert!(mails[0].tls);
    assert_eq!(
        mails[0].auth,
        Some(("plausible".to_string(), "from-plausibles-env".to_string()))
    );
    assert_eq!(mails[0].from, "hello@plausible.example.test");
    assert!(mails[0].body().contains("receiver retired"));
    // No web page configured: the API and the CLI are how to re-enable.
    assert!(!mails[0].body().contains("webhooks page"));
    daemon.shutdown().await.unwrap();
}

/// Mail off (the default): a disable queues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mail_enabled_nothing_is_queued() {
    let env = Env::new().await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let daemon = env.daemon(env.config()).await;
    env.db
        .execute(
            "UPDATE webhooks SET enabled = false, disabled_reason = 'off' WHERE id = $1",
            &[&wh],
        )
        .await
        .unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_owner_mail").await,
        0
    );
    daemon.shutdown().await.unwrap();
}
