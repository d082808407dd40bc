//! The mailer: tells the owners and admins of a site's team, by email, that
//! a webhook of their site was disabled (`[mail]`, docs/operating.md#owner-emails).
//!
//! Migration 15's trigger queues one `webhook_owner_mail` row per disable in
//! the transaction that disables the webhook. This service claims due rows
//! (`FOR UPDATE SKIP LOCKED`, a short statement that moves each row's
//! `next_attempt_at` past the time a send may take: a lease, so instances
//! never send one mail twice at once and a row left by a dead instance is
//! claimed again), reads the recipients from Plausible's `team_memberships`
//! (owner and admin, `users.email`) at sending, and sends one message over
//! SMTP with TLS (STARTTLS required, or implicit), the whole conversation
//! bounded by `mail.timeout_secs`. It runs in its own task and holds no
//! transaction while talking to the server: a slow, failing or hung SMTP
//! server delays nothing but its own mails. A failed attempt is retried
//! after `mail.retry_secs`, doubled each time, up to `mail.max_attempts`;
//! then the row ends `failed` with its last error.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use deadpool_postgres::Pool;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MailConfig};
use crate::service::PeriodicService;

/// Due mails, leased for the time a send may take (plus a margin).
const CLAIM_SQL: &str = "
UPDATE webhook_owner_mail m
SET attempts = LEAST(m.attempts, 2147483646) + 1, next_attempt_at = now() + make_interval(secs => $2)
FROM (SELECT id FROM webhook_owner_mail
      WHERE status = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at, id LIMIT $1
      FOR UPDATE SKIP LOCKED) x
WHERE m.id = x.id
RETURNING m.id, m.webhook_id, m.disabled_at, m.reason, m.last_failure, m.attempts";

/// The webhook, its site and who to tell: the owners and admins of the
/// site's team with an email address, read when the mail is sent.
const DETAILS_SQL: &str = "
SELECT w.name, s.domain, w.site_id, substring(w.url from '^https://([^/?#:]+)'), w.enabled,
       array(SELECT DISTINCT u.email::text FROM team_memberships tm JOIN users u ON u.id = tm.user_id
             WHERE tm.team_id = s.team_id AND tm.role::text IN ('owner', 'admin')
               AND u.email IS NOT NULL AND u.email::text <> ''
             ORDER BY 1)
FROM webhooks w JOIN sites s ON s.id = w.site_id
WHERE w.id = $1 AND w.deleted_at IS NULL";

const SENT_SQL: &str = "
UPDATE webhook_owner_mail SET status = 'sent', sent_at = now(), recipients = $2, last_error = NULL
WHERE id = $1";

/// A failed attempt: pending again after the back-off, or failed for good.
const FAILED_SQL: &str = "
UPDATE webhook_owner_mail
SET status = CASE WHEN $3 OR attempts >= $4 THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => $5),
    last_error = $2, recipients = coalesce($6, recipients)
WHERE id = $1";

/// Back-offs stop growing at a day.
const MAX_RETRY_SECS: f64 = 86_400.0;

#[derive(Clone)]
pub struct MailerConfig {
    pub host: String,
    pub port: u16,
    /// Implicit TLS (else STARTTLS, required).
    pub implicit_tls: bool,
    pub credentials: Option<(String, String)>,
    pub extra_roots: Vec<Vec<u8>>,
    pub sender: Mailbox,
    pub timeout: Duration,
    pub max_attempts: i32,
    pub interval: Duration,
    pub retry: Duration,
    /// The web page's address (with `web.base_path`), when the page is on
    /// and has an origin to link to.
    pub web_url: Option<String>,
    /// How many mails one pass sends at most.
    pub batch: i64,
}

impl std::fmt::Debug for MailerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("implicit_tls", &self.implicit_tls)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("sender", &self.sender.to_string())
            .finish_non_exhaustive()
    }
}

impl MailerConfig {
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let m: &MailConfig = &cfg.mail;
        let mut extra_roots = Vec::new();
        if let Some(path) = &m.ca_file {
            use rustls_pki_types::pem::PemObject;
            let pem = std::fs::read(path)
                .with_context(|| format!("reading mail.ca_file {}", path.display()))?;
            for der in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let der = der.with_context(|| format!("mail.ca_file {}", path.display()))?;
                extra_roots.push(der.to_vec());
            }
        }
        let web = cfg.web_url();
        Ok(MailerConfig {
            host: m.smtp_host.trim().to_string(),
            port: m.smtp_port,
            implicit_tls: m.tls == "implicit",
            credentials: match (&m.smtp_user, &m.smtp_password) {
                (u, Some(p)) if !u.is_empty() => Some((u.clone(), p.0.clone())),
                _ => None,
            },
            extra_roots,
            sender: m
                .sender
                .trim()
                .parse()
                .map_err(|e| anyhow!("mail.sender: {e}"))?,
            timeout: Duration::from_secs(m.timeout_secs),
            max_attempts: m.max_attempts as i32,
            interval: Duration::from_secs(m.interval_secs),
            retry: Duration::from_secs(m.retry_secs),
            web_url: (cfg.web.enabled && web.starts_with("http")).then_some(web),
            batch: 20,
        })
    }
}

pub struct Mailer {
    cfg: MailerConfig,
    pool: Pool,
    tls: TlsParameters,
}

/// One claimed mail.
struct Claimed {
    id: i64,
    webhook_id: uuid::Uuid,
    disabled_at: OffsetDateTime,
    reason: String,
    last_failure: Option<String>,
    attempts: i32,
}

/// What the mail says.
struct Details {
    name: String,
    domain: String,
    url_host: Option<String>,
    enabled: bool,
    recipients: Vec<String>,
}

impl Mailer {
    pub fn new(cfg: MailerConfig, pool: Pool) -> Result<Self> {
        anyhow::ensure!(!cfg.host.is_empty(), "mailer: no SMTP host");
        let mut b = TlsParameters::builder(cfg.host.clone());
        for der in &cfg.extra_roots {
            b = b.add_root_certificate(
                Certificate::from_der(der.clone()).context("mail.ca_file: a certificate")?,
            );
        }
        let tls = b.build_rustls().context("mail: TLS settings")?;
        Ok(Mailer { cfg, pool, tls })
    }

    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let tls = if self.cfg.implicit_tls {
            Tls::Wrapper(self.tls.clone())
        } else {
            Tls::Required(self.tls.clone())
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.cfg.host.clone())
            .port(self.cfg.port)
            .tls(tls)
            .timeout(Some(self.cfg.timeout));
        if let Some((u, p)) = &self.cfg.credentials {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        b.build()
    }

    /// One pass: claims due mails and sends each; returns the mails sent.
    pub async fn send_due(&self, stop: &CancellationToken) -> Result<usize> {
        let client = self
            .pool
            .get()
            .await
            .context("getting a database connection")?;
        // The lease: a whole conversation, plus a margin for recording it.
        let lease = (self.cfg.timeout.as_secs_f64() * 2.0 + 30.0).max(60.0);
        let rows = client
            .query(CLAIM_SQL, &[&self.cfg.batch, &lease])
            .await
            .context("claiming owner emails")?;
        let claimed: Vec<Claimed> = rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                webhook_id: r.get(1),
                disabled_at: r.get(2),
                reason: r.get(3),
                last_failure: r.get(4),
                attempts: r.get(5),
            })
            .collect();
        let mut sent = 0;
        for mail in claimed {
            if stop.is_cancelled() {
                break;
            }
            let details = client
                .query_opt(DETAILS_SQL, &[&mail.webhook_id])
                .await
                .context("reading an owner email's webhook and recipients")?
                .map(|r| Details {
                    name: r.get(0),
                    domain: r.get(1),
                    url_host: r.get(3),
                    enabled: r.get(4),
                    recipients: r.get(5),
                });
            // Nobody to tell, or nothing left to tell: given up at once.
            let verdict = match &details {
                None => Err((
                    "the webhook or its site is gone".to_string(),
                    true,
                    None::<Vec<String>>,
                )),
                Some(d) if d.recipients.is_empty() => Err((
                    "the site's team has no owner or admin with an email address".to_string(),
                    true,
                    None,
                )),
                Some(d) => {
                    let r = match self.message(&mail, d) {
                        Ok(msg) => {
                            let t = self.transport();
                            match tokio::time::timeout(self.cfg.timeout, t.send(msg)).await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err(e)) => Err(smtp_error(&e)),
                                Err(_) => Err(format!(
                                    "no answer from {}:{} within mail.timeout_secs ({}s)",
                                    self.cfg.host,
                                    self.cfg.port,
                                    self.cfg.timeout.as_secs()
                                )),
                            }
                        }
                        Err(e) => Err(format!("{e:#}")),
                    };
                    r.map_err(|e| (e, false, Some(d.recipients.clone())))
                }
            };
            match verdict {
                Ok(()) => {
                    let to = &details.as_ref().map(|d| d.recipients.clone());
                    client
                        .execute(SENT_SQL, &[&mail.id, to])
                        .await
                        .context("recording an owner email sent")?;
                    tracing::info!(
                        webhook_id = %mail.webhook_id,
                        recipients = to.as_ref().map_or(0, Vec::len),
                        "owner email sent: webhook disabled"
                    );
                    sent += 1;
                }
                Err((error, give_up, to)) => {
                    let backoff = (self.cfg.retry.as_secs_f64()
                        * 2f64.powi((mail.attempts - 1).clamp(0, 30)))
                    .min(MAX_RETRY_SECS);
                    client
                        .execute(
                            FAILED_SQL,
                            &[
                                &mail.id,
                                &error,
                                &give_up,
                                &self.cfg.max_attempts,
                                &backoff,
                                &to,
                            ],
                        )
                        .await
                        .context("recording an owner email failed")?;
                    tracing::warn!(
                        webhook_id = %mail.webhook_id,
                        attempt = mail.attempts,
                        max_attempts = self.cfg.max_attempts,
                        error = %error,
                        "owner email not sent"
                    );
                }
            }
        }
        Ok(sent)
    }

    fn message(&self, mail: &Claimed, d: &Details) -> Result<Message> {
        let (subject, body) = compose(mail, d, self.cfg.web_url.as_deref());
        let mut b = Message::builder()
            .from(self.cfg.sender.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &d.recipients {
            b = b.to(to
                .parse::<Mailbox>()
                .map_err(|e| anyhow!("recipient {to}: {e}"))?);
        }
        b.body(body).context("building the message")
    }
}

/// The error as the server or the connection gave it, sources included.
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The subject and the plain-text body: the webhook, the site, when and why
/// it was disabled, and how to switch it back on.
fn compose(mail: &Claimed, d: &Details, web_url: Option<&str>) -> (String, String) {
    let when = mail
        .disabled_at
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let subject = format!("Webhook \"{}\" of {} was disabled", d.name, d.domain);
    let mut body = format!(
        "The webhook \"{name}\" of the site {domain} was disabled at {when}.\n\n\
         Webhook: {name} ({id})\n\
         Receiver: {host}\n\
         Site: {domain}\n\
         Reason: {reason}\n",
        name = d.name,
        domain = d.domain,
        id = mail.webhook_id,
        host = d.url_host.as_deref().unwrap_or("-"),
        reason = mail.reason,
    );
    if let Some(f) = &mail.last_failure {
        body.push_str(&format!("Last error: {f}\n"));
    }
    body.push_str("\nIt sends nothing until it is enabled again.\n\n");
    if d.enabled {
        body.push_str("It has been enabled again since.\n\n");
    }
    body.push_str("How to re-enable it, once the receiver works again:\n");
    if let Some(web) = web_url {
        body.push_str(&format!(
            "- on the webhooks page: {web}/webhooks/{id} (Enable)\n",
            web = web.trim_end_matches('/'),
            id = mail.webhook_id
        ));
    }
    body.push_str(&format!(
        "- with the API: PATCH /api/webhooks/{id} with {{\"enabled\": true}}\n\
         - on the daemon's host: plausible-webhooks enable {id}\n\n\
         Enabling it resets its failure streak; a test event (plausible-webhooks test {id}) \
         shows whether the receiver answers.\n\n\
         You get this as an owner or admin of the site's team in Plausible.\n",
        id = mail.webhook_id
    ));
    (subject, body)
}

impl PeriodicService for Mailer {
    const NAME: &'static str = "mailer";
    const WORK: &'static str = "sending owner emails";
    const AFTER_FAILURE: &'static str = "will retry";
    /// Mails sent.
    type Outcome = usize;

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    async fn run_once(&mut self, stop: &CancellationToken) -> Result<usize> {
        self.send_due(stop).await
    }
}
