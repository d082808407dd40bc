//! The management commands: parse (clap, into the core's own input types),
//! call the core ([`Admin`], as an operator), print a table for people or
//! JSON for scripts (`--json`). Every refusal names the field and the rule,
//! exits non-zero, and changes nothing.
//!
//! `--json` prints what the core returns, the very bodies the HTTP API sends
//! (`{"webhooks": [...]}`, `{"webhook": ..., "triggers": [...]}`, ...), and a
//! refusal as the API's `{"error": {"code", "message", "field"?}}`
//! (`super::error::ErrorBody`).
//!
//! A webhook is named by its id or a unique prefix of it (at least 4
//! characters), a trigger likewise, a delivery by its full id: the CLI
//! resolves each once, and the operations take the id.

use std::io::Read as _;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::access::Principal;
use super::core::Admin;
use super::error::OpError;
use super::inputs::{
    DeliveryQuery, NewPortalLink, NewTrigger, NewWebhook, PreviewInput, ReplayInput, RetryInput,
    RotateKey, RotateSecret, SiteRef, WebhookChanges, WebhookQuery,
};
use super::ops;
use crate::config::Config;
use crate::db::timestamp::rfc3339_seconds;

/// The CLI acts for whoever runs it with the database's credentials: an operator.
const WHO: Principal = Principal::Operator;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a webhook for a site; prints its signing secret once.
    ///
    /// Example: create --site example.com --name Slack --url https://hooks.example.net/abc --trigger goal
    Create(NewWebhook),
    /// List webhooks with their status (active, failing, disabled, deleted).
    List(WebhookQuery),
    /// The queue per webhook: due, retrying, waiting, in flight, the last hour's
    /// outcomes, how long the oldest due delivery has waited, and its status.
    ///
    /// What every instance left in the database, without Prometheus.
    Status {
        /// The site: its domain as in Plausible (example.com) or its numeric id.
        #[arg(long)]
        site: Option<SiteRef>,
    },
    /// Show one webhook: settings, health and triggers (never its secret).
    Show {
        /// Webhook id, or a unique prefix of it (at least 4 characters).
        webhook: String,
    },
    /// Change a webhook's name, URL, headers, retry schedule or limits; the rest is kept.
    Update {
        /// Webhook id or unique prefix.
        webhook: String,
        #[command(flatten)]
        changes: WebhookChanges,
    },
    /// Turn a webhook back on; its failure count and disable reason are reset.
    Enable {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// Stop sending to a webhook; its queued deliveries end `failed` (unsent, replayable).
    Disable {
        /// Webhook id or unique prefix.
        webhook: String,
        /// Why (shown in its status).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Soft-delete a webhook; `restore` undoes it until it is purged after retention.days.
    Delete {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// Bring back a soft-deleted webhook (within retention.days of its deletion).
    Restore {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// Give a webhook a new secret; the old one keeps signing beside it for a grace period.
    RotateSecret {
        /// Webhook id or unique prefix.
        webhook: String,
        #[command(flatten)]
        rotate: RotateSecret,
    },
    /// Give a webhook a new ed25519 key pair (generated, or imported with --signing-key);
    /// the old one keeps signing beside it (a second `v1a,`) for a grace period.
    RotateKey {
        /// Webhook id or unique prefix.
        webhook: String,
        #[command(flatten)]
        rotate: RotateKey,
    },
    /// Print a webhook's ed25519 private key (whsk_ + base64 of the 32-byte seed), to
    /// move it elsewhere. Receivers need only the public key (`show`).
    ExportKey {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// Send a `test` event now and print the receiver's answer (or why it failed).
    ///
    /// It goes through the daemon's own HTTPS client, address guard and signing,
    /// and is recorded in the delivery log. Exits 1 unless the receiver answers 2xx.
    Test {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// List the built-in event types a webhook can subscribe to (`--json`: with
    /// each one's JSON Schema and an example).
    ///
    /// Any other name in the same format is a type the site's host publishes
    /// (docs/events.md); subscribe with `create --event` or `update --subscribe`.
    EventTypes,
    /// Add, list or remove a webhook's triggers (what makes events for it).
    #[command(subcommand)]
    Triggers(TriggersCommand),
    /// Inspect the delivery log.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Send one delivery again now, on the same delivery id (webhook-id).
    ///
    /// A failed delivery gets one more attempt. A success is only sent again with --force.
    Retry {
        /// The delivery's full id.
        delivery: String,
        #[command(flatten)]
        retry: RetryInput,
    },
    /// Hand out a link that signs its holder in to one site's webhooks on the
    /// web page, once (for someone without a Plausible account on this host).
    ///
    /// Example: portal-link --site example.com --role editor --ttl 1d
    PortalLink {
        /// The site: its domain as in Plausible (example.com) or its numeric id.
        #[arg(long)]
        site: SiteRef,
        #[command(flatten)]
        link: NewPortalLink,
    },
    /// Send a webhook's failed deliveries since a time again (same delivery ids).
    ///
    /// Example: replay 6f1c --since 2h   or   --since 2026-11-23T10:00:00Z
    Replay {
        /// Webhook id or unique prefix.
        webhook: String,
        #[command(flatten)]
        replay: ReplayInput,
    },
}

#[derive(Subcommand, Debug)]
pub enum TriggersCommand {
    /// Subscribe a webhook to an event.
    ///
    /// Examples: triggers add 6f1c spike --threshold 100 --window 5m --cooldown 1h;
    /// triggers add 6f1c goal --goal Signup; triggers add 6f1c tracking --window 1h
    Add {
        /// Webhook id or unique prefix.
        webhook: String,
        #[command(flatten)]
        trigger: NewTrigger,
    },
    /// List a webhook's triggers.
    List {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// Remove a trigger by its id (or a unique prefix).
    Remove { trigger: String },
    /// How often a trigger would have fired on a site: its history replayed
    /// through the evaluator's rule (spike, drop), or its completions per
    /// day (goal, event). Nothing is created.
    ///
    /// Examples: triggers preview --site example.com spike --threshold 50 --since 30d;
    /// triggers preview --site example.com goal --goal Signup --since 7d
    Preview {
        /// The site: its domain as in Plausible or its numeric id.
        #[arg(long = "site", value_name = "SITE")]
        site: SiteRef,
        #[command(flatten)]
        preview: PreviewInput,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// The newest deliveries first, filtered.
    List {
        /// Webhook id or unique prefix.
        #[arg(long)]
        webhook: Option<String>,
        #[command(flatten)]
        query: DeliveryQuery,
        /// Then keep watching: a line for each delivery created or finished
        /// from now on (once a second; with --json one object per line), until
        /// interrupted. Only --webhook filters what is followed.
        #[arg(long)]
        follow: bool,
    },
    /// One delivery with every attempt: time, status code, duration, error, response.
    Show {
        /// The delivery's full id.
        delivery: String,
    },
}

/// Runs one management command against the configured database.
pub async fn run(cmd: AdminCommand, cfg: &Config, json: bool) -> Result<()> {
    match execute(cmd, cfg, json).await {
        Ok(()) => Ok(()),
        Err(Failure::Op(e)) => {
            if json {
                // The operator reads the cause here (the API only logs it).
                let cause = match &e {
                    OpError::Internal(c) => format!("{c:#}"),
                    _ => String::new(),
                };
                print_json(&e.body(&cause));
            }
            Err(anyhow::Error::new(e))
        }
        // The result is printed already (a failed test): only the exit status is left.
        Err(Failure::Reported(e)) => Err(e),
    }
}

enum Failure {
    Op(OpError),
    Reported(anyhow::Error),
}

impl<E: Into<OpError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Op(e.into())
    }
}

/// Builds the core, refuses a database whose schema is not current, and
/// hands the command to its function; each prints its own result.
async fn execute(cmd: AdminCommand, cfg: &Config, json: bool) -> Result<(), Failure> {
    let admin = Admin::from_config(cfg)?;
    if let AdminCommand::EventTypes = cmd {
        // The catalog is the program's own: no database needed to read it.
        return event_types(&admin, json).await;
    }
    {
        let client = admin.db().await?;
        crate::db::migrate::ensure_current(&client).await?;
    }
    let a = &admin;
    match cmd {
        AdminCommand::Create(n) => create(a, cfg, n, json).await,
        AdminCommand::List(q) => list(a, &q, json).await,
        AdminCommand::Show { webhook } => {
            let d = a.show_webhook(&WHO, webhook_id(a, &webhook).await?).await?;
            output(json, &d, || {
                print_webhook(&d.webhook, cfg);
                println!();
                print_triggers(&d.triggers);
            });
            Ok(())
        }
        AdminCommand::Update { webhook, changes } => {
            let w = a
                .update_webhook(&WHO, webhook_id(a, &webhook).await?, changes)
                .await?;
            output(json, &w, || print_webhook(&w, cfg));
            Ok(())
        }
        AdminCommand::Enable { webhook } => {
            let w = a
                .enable_webhook(&WHO, webhook_id(a, &webhook).await?)
                .await?;
            output(json, &w, || {
                println!("webhook {} is {}", w.id, w.status_text())
            });
            Ok(())
        }
        AdminCommand::Disable { webhook, reason } => {
            let w = a
                .disable_webhook(&WHO, webhook_id(a, &webhook).await?, reason)
                .await?;
            output(json, &w, || {
                println!("webhook {} is {}", w.id, w.status_text())
            });
            Ok(())
        }
        AdminCommand::Delete { webhook } => {
            let d = a
                .delete_webhook(&WHO, webhook_id(a, &webhook).await?)
                .await?;
            output(json, &d, || {
                println!(
                    "webhook {} deleted; `restore {}` brings it back until {}, when it is purged with its deliveries",
                    d.webhook.id,
                    d.webhook.id,
                    rfc3339_seconds(d.purge_after)
                )
            });
            Ok(())
        }
        AdminCommand::Restore { webhook } => {
            let w = a
                .restore_webhook(&WHO, webhook_id(a, &webhook).await?)
                .await?;
            output(json, &w, || {
                println!("webhook {} restored: {}", w.id, w.status_text())
            });
            Ok(())
        }
        AdminCommand::RotateSecret { webhook, rotate } => {
            rotate_secret(a, &webhook, rotate, json).await
        }
        AdminCommand::RotateKey { webhook, rotate } => rotate_key(a, &webhook, rotate, json).await,
        AdminCommand::ExportKey { webhook } => {
            let k = a
                .export_signing_key(&WHO, webhook_id(a, &webhook).await?)
                .await?;
            output(json, &k, || println!("{}", k.signing_key));
            Ok(())
        }
        AdminCommand::Test { webhook } => test(a, &webhook, json).await,
        AdminCommand::EventTypes => event_types(a, json).await,
        AdminCommand::Triggers(c) => triggers(a, c, json).await,
        AdminCommand::Deliveries(c) => deliveries(a, c, json).await,
        AdminCommand::Retry { delivery, retry } => {
            let r = a.resolve_delivery(&WHO, &delivery).await?;
            let d = a.retry_delivery(&WHO, r, retry).await?;
            output(json, &d, || {
                println!(
                    "delivery {} is due now (attempt {} next); `deliveries show {}` follows it",
                    d.id,
                    d.attempts.saturating_add(1),
                    d.id
                )
            });
            Ok(())
        }
        AdminCommand::Status { site } => status(a, site.as_ref(), json).await,
        AdminCommand::Replay { webhook, replay: r } => replay(a, &webhook, r, json).await,
        AdminCommand::PortalLink { site, link } => {
            let k = a.mint_portal_link(&WHO, &site, link).await?;
            output(json, &k, || {
                println!("{}", k.url);
                println!(
                    "({} of {}; it signs in once and must be opened by {}; shown only now)",
                    k.role,
                    k.site_id,
                    rfc3339_seconds(k.expires_at)
                );
                if !k.url.starts_with("http") {
                    eprintln!(
                        "warning: set web.public_url (or plausible.base_url) so the link names the page's host"
                    );
                }
            });
            Ok(())
        }
    }
}

async fn webhook_id(a: &Admin, given: &str) -> Result<Uuid, Failure> {
    Ok(a.resolve_webhook(&WHO, given).await?)
}

// Webhooks.

async fn create(a: &Admin, cfg: &Config, mut n: NewWebhook, json: bool) -> Result<(), Failure> {
    n.secret = n.secret.map(secret_arg).transpose()?;
    n.signing_key = n.signing_key.map(secret_arg).transpose()?;
    let c = a.create_webhook(&WHO, n).await?;
    if json {
        print_json(&c);
    } else {
        print_webhook(&c.webhook, cfg);
        if let Some(r) = &c.check {
            println!(
                "check: ok, the receiver answered the test event {} in {} ms (webhook-id {})",
                r.status_code, r.duration_ms, r.message_id
            );
        }
        if !c.triggers.is_empty() {
            println!();
            print_triggers(&c.triggers);
        }
        println!();
        // A secret the operator gave is not printed back (it may have been
        // typed, unseen, at `--secret -`); a generated one is shown this once.
        if c.secret_generated {
            println!("secret: {}", c.secret);
            println!("(shown only now: give it to the receiver to verify signatures; `rotate-secret` makes a new one)");
        } else {
            println!("secret: the one given (not shown)");
        }
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}
async fn status(a: &Admin, site: Option<&SiteRef>, json: bool) -> Result<(), Failure> {
    let list = a.status(&WHO, site).await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let v = &list.status;
    if v.is_empty() {
        println!("no webhooks; `create --help` shows how to add one");
        return Ok(());
    }
    print!(
        "{}",
        table(
            &[
                "WEBHOOK",
                "SITE",
                "NAME",
                "STATUS",
                "DUE",
                "RETRYING",
                "WAITING",
                "SENDING",
                "OK 1H",
                "FAILED 1H",
                "OLDEST DUE",
            ],
            v.iter()
                .map(|s| {
                    vec![
                        s.webhook_id.to_string()[..8].to_string(),
                        s.site_id.clone(),
                        s.name.clone(),
                        match s.status.as_str() {
                            "failing" => format!("failing ({} in a row)", s.consecutive_failures),
                            h => h.to_string(),
                        },
                        s.due.to_string(),
                        s.retrying.to_string(),
                        s.waiting.to_string(),
                        s.delivering.to_string(),
                        s.delivered_last_hour.to_string(),
                        s.failed_last_hour.to_string(),
                        s.oldest_due_secs
                            .map_or("-".into(), |a| format!("{}s", a.round() as i64)),
                    ]
                })
                .collect(),
        )
    );
    Ok(())
}

async fn list(a: &Admin, q: &WebhookQuery, json: bool) -> Result<(), Failure> {
    let list = a.list_webhooks(&WHO, q).await?;
    let v = &list.webhooks;
    if json {
        print_json(&list);
    } else if v.is_empty() {
        println!("no webhooks; `create --help` shows how to add one");
    } else {
        print!(
            "{}",
            table(
                &["ID", "SITE", "NAME", "STATUS", "TRIGGERS", "URL"],
                v.iter()
                    .map(|w| vec![
                        w.id.to_string(),
                        w.site_id.clone(),
                        w.name.clone(),
                        w.status_text(),
                        w.triggers.to_string(),
                        w.url.clone(),
                    ])
                    .collect()
            )
        );
        if let Some(c) = &list.next_cursor {
            println!("more follow: the same command with --cursor {c}");
        }
    }
    Ok(())
}

async fn rotate_secret(
    a: &Admin,
    webhook: &str,
    mut rotate: RotateSecret,
    json: bool,
) -> Result<(), Failure> {
    rotate.secret = rotate.secret.map(secret_arg).transpose()?;
    let given = rotate.secret.is_some();
    let r = a
        .rotate_secret(&WHO, webhook_id(a, webhook).await?, rotate)
        .await?;
    output(json, &r, || {
        if given {
            println!("new secret: the one given (not shown)");
        } else {
            println!("new secret: {}", r.secret);
        }
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        match r.previous_secret_expires_at {
            Some(t) => println!(
                "the old secret keeps signing beside it until {} (two v1, signatures in webhook-signature); update the receiver before then",
                rfc3339_seconds(t)
            ),
            None => println!("the old secret no longer signs"),
        }
    });
    Ok(())
}

async fn rotate_key(
    a: &Admin,
    webhook: &str,
    mut rotate: RotateKey,
    json: bool,
) -> Result<(), Failure> {
    rotate.signing_key = rotate.signing_key.map(secret_arg).transpose()?;
    let r = a
        .rotate_signing_key(&WHO, webhook_id(a, webhook).await?, rotate)
        .await?;
    output(json, &r, || {
        println!("new public key: {}", r.public_key);
        match (&r.previous_public_key, r.previous_signing_key_expires_at) {
            (Some(k), Some(t)) => println!(
                "the old key ({k}) keeps signing beside it until {} (two v1a, signatures in webhook-signature); give the receiver the new public key before then",
                rfc3339_seconds(t)
            ),
            _ => println!("the old key no longer signs"),
        }
        if r.signature == "hmac" {
            println!(
                "the webhook signs with hmac only: `update --signature both` makes the key sign"
            );
        }
    });
    Ok(())
}

/// Exits non-zero unless the receiver answered 2xx; the answer is printed either way.
async fn test(a: &Admin, webhook: &str, json: bool) -> Result<(), Failure> {
    let r = a.send_test(&WHO, webhook_id(a, webhook).await?).await?;
    output(json, &r, || print_test(&r));
    if !r.success {
        return Err(Failure::Reported(anyhow::anyhow!(
            "the test delivery failed ({})",
            serde_json::to_value(r.cause)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("")
        )));
    }
    Ok(())
}

// Triggers.

async fn triggers(a: &Admin, cmd: TriggersCommand, json: bool) -> Result<(), Failure> {
    match cmd {
        TriggersCommand::Add { webhook, trigger } => {
            let v = a
                .add_trigger(&WHO, webhook_id(a, &webhook).await?, trigger)
                .await?;
            output(json, &v, || print_triggers(std::slice::from_ref(&v)));
        }
        TriggersCommand::List { webhook } => {
            let v = a
                .list_triggers(&WHO, webhook_id(a, &webhook).await?)
                .await?;
            output(json, &v, || print_triggers(&v.triggers));
        }
        TriggersCommand::Remove { trigger } => {
            let t = a.resolve_trigger(&WHO, &trigger).await?;
            let v = a.remove_trigger(&WHO, t).await?;
            output(json, &v, || println!("trigger {} removed", v.id));
        }
        TriggersCommand::Preview { site, preview } => {
            let v = a.preview_trigger(&WHO, &site, preview).await?;
            output(json, &v, || print_preview(&v));
        }
    }
    Ok(())
}

// Deliveries.

async fn deliveries(a: &Admin, cmd: DeliveriesCommand, json: bool) -> Result<(), Failure> {
    match cmd {
        DeliveriesCommand::List {
            webhook,
            query,
            follow,
        } => {
            let webhook = match &webhook {
                Some(w) => Some(webhook_id(a, w).await?),
                None => None,
            };
            let started = a.log_clock().await?;
            let page = a.list_deliveries(&WHO, webhook, &query).await?;
            if follow && json {
                // One object per line, oldest first, so a script can read
                // the listing and what follows the same way.
                for d in page.deliveries.iter().rev() {
                    println!("{}", serde_json::to_string(d).expect("serializable"));
                }
            } else {
                output(json, &page, || {
                    print_deliveries(&page.deliveries);
                    if let Some(c) = &page.next_cursor {
                        println!("next page: the same command with --cursor {c}");
                    }
                });
            }
            if follow {
                follow_deliveries(a, webhook, started, json).await?;
            }
        }
        DeliveriesCommand::Show { delivery } => {
            let r = a.resolve_delivery(&WHO, &delivery).await?;
            let d = a.show_delivery(&WHO, r).await?;
            output(json, &d, || print_delivery(&d));
        }
    }
    Ok(())
}

/// Prints each delivery created or finished after `after`, once a second,
/// until Ctrl-C (exit 0).
async fn follow_deliveries(
    a: &Admin,
    webhook: Option<Uuid>,
    mut after: OffsetDateTime,
    json: bool,
) -> Result<(), Failure> {
    use std::io::Write as _;
    if !json {
        println!("\nfollowing (Ctrl-C to stop):");
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let (changed, now) = a.deliveries_changed(&WHO, webhook, after).await?;
        after = now;
        for d in &changed {
            if json {
                println!("{}", serde_json::to_string(d).expect("serializable"));
            } else {
                println!(
                    "{}  {}  {}  {:<16} {:<9} attempts {:<2} {:>4}  {}",
                    rfc3339_seconds(d.finished_at.unwrap_or(d.inserted_at)),
                    d.id,
                    &d.webhook_id.to_string()[..8],
                    d.event_type,
                    d.status,
                    d.attempts,
                    d.last_response_code.map_or("-".into(), |c| c.to_string()),
                    clip(d.last_error.as_deref().unwrap_or(""), 60)
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
}

async fn replay(a: &Admin, webhook: &str, r: ReplayInput, json: bool) -> Result<(), Failure> {
    let v = a.replay(&WHO, webhook_id(a, webhook).await?, r).await?;
    output(json, &v, || {
        if v.dry_run {
            let listed = v.deliveries.as_deref().unwrap_or_default();
            if !listed.is_empty() {
                print_deliveries(listed);
                println!();
            }
            if (listed.len() as u64) < v.count {
                println!(
                    "{} deliveries would be sent again (dry run; the first {} listed)",
                    v.count,
                    listed.len()
                )
            } else {
                println!("{} deliveries would be sent again (dry run)", v.count)
            }
        } else {
            println!(
                "{} deliveries of webhook {} are due again (same delivery ids); `deliveries list --webhook {}` follows them",
                v.count, v.webhook_id, v.webhook_id
            )
        }
    });
    Ok(())
}

/// `-` reads the secret from stdin (so it stays out of `ps` and shell
/// history); typed at a terminal, it is not echoed (rpassword).
fn secret_arg(s: String) -> Result<String, Failure> {
    if s != "-" {
        return Ok(s);
    }
    use std::io::IsTerminal as _;
    let read = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("secret (not shown): ")
            .context("reading the secret from the terminal")
    } else {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading the secret from stdin")
            .map(|_| buf)
    };
    let buf = read.map_err(OpError::Internal)?;
    Ok(buf.trim_end_matches(['\r', '\n']).to_string())
}

fn output<T: Serialize>(json: bool, v: &T, human: impl FnOnce()) {
    if json {
        print_json(v)
    } else {
        human()
    }
}

fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("serializable output")
    );
}

/// A time as the other columns show it, or `infinity` and the like as is.
fn time_or_value(t: crate::db::Timestamp) -> String {
    t.finite()
        .map(rfc3339_seconds)
        .unwrap_or_else(|| t.to_string())
}

fn time(t: Option<OffsetDateTime>) -> String {
    t.map(rfc3339_seconds).unwrap_or_else(|| "-".into())
}

/// `60s, 300s, 1800s`, or `no retries`.
fn schedule_text<T: std::fmt::Display>(s: &[T]) -> String {
    if s.is_empty() {
        return "no retries".into();
    }
    s.iter()
        .map(|v| format!("{v}s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A webhook's settings, a default shown as the value in force here (this
/// config's), so an operator need not look it up.
fn print_webhook(w: &ops::WebhookView, cfg: &Config) {
    let d = &cfg.delivery;
    let schedule = match &w.retry_schedule_secs {
        None => format!(
            "{} (the default, delivery.retry_schedule_secs)",
            schedule_text(&d.retry_schedule_secs)
        ),
        Some(s) => schedule_text(s),
    };
    let rows: Vec<(&str, String)> = vec![
        ("id", w.id.to_string()),
        (
            "site",
            format!("{} (id {})", w.site_id, w.plausible_site_id),
        ),
        ("name", w.name.clone()),
        ("url", w.url.clone()),
        ("format", w.format.clone()),
        ("status", w.status_text()),
        (
            "failing since",
            match w.failing_since {
                Some(t) => format!(
                    "{} ({} failed {} in a row)",
                    rfc3339_seconds(t),
                    w.consecutive_failures,
                    if w.consecutive_failures == 1 {
                        "delivery"
                    } else {
                        "deliveries"
                    }
                ),
                None => "-".into(),
            },
        ),
        ("disabled at", time(w.disabled_at)),
        (
            "headers",
            if w.header_names.is_empty() {
                "-".into()
            } else {
                format!("{} (values not shown)", w.header_names.join(", "))
            },
        ),
        (
            "events",
            if w.events.is_empty() {
                "none: it receives nothing until subscribed (`update --subscribe TYPE`, or a trigger)".into()
            } else {
                w.events.join(", ")
            },
        ),
        ("retry schedule", schedule),
        (
            "rate limit",
            w.rate_limit_per_sec
                .map(|v| format!("{v}/s"))
                .unwrap_or_else(|| match d.default_rate_limit_per_sec {
                    0 => "unlimited (the default, delivery.default_rate_limit_per_sec)".into(),
                    r => format!("{r}/s (the default, delivery.default_rate_limit_per_sec)"),
                }),
        ),
        (
            "max concurrency",
            w.max_concurrency.map(|v| v.to_string()).unwrap_or_else(|| {
                format!(
                    "{} (the default, delivery.default_max_concurrency)",
                    d.default_max_concurrency
                )
            }),
        ),
        ("old secret signs until", time(w.previous_secret_expires_at)),
        ("signature", w.signature.clone()),
        (
            "public key",
            w.public_key.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "old public key",
            w.previous_public_key.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "old key signs until",
            time(w.previous_signing_key_expires_at),
        ),
        ("deleted at", time(w.deleted_at)),
        ("created", time(Some(w.inserted_at))),
        ("updated", time(Some(w.updated_at))),
    ];
    // Settings print always; states only while they hold.
    let states = [
        "failing since",
        "disabled at",
        "old secret signs until",
        "public key",
        "old public key",
        "old key signs until",
        "deleted at",
    ];
    for (k, v) in rows {
        if v == "-" && states.contains(&k) {
            continue;
        }
        println!("{:<24}{v}", format!("{k}:"));
    }
}

async fn event_types(a: &Admin, json: bool) -> Result<(), Failure> {
    let list = a.event_types(&WHO).await?;
    output(json, &list, || {
        let rows: Vec<Vec<String>> = list
            .event_types
            .iter()
            .map(|e| vec![e.name.clone(), e.made_by.clone(), e.summary.clone()])
            .collect();
        print!("{}", table(&["TYPE", "MADE BY", "WHAT"], rows));
        println!(
            "\nAny other name (lowercase words joined by dots, e.g. site.created) is a type the \
             site's host publishes with webhook_enqueue. Subscribe with `create --event TYPE` or \
             `update WEBHOOK --subscribe TYPE` (`site.*` and `*` take many); `event-types --json` \
             shows each type's schema and an example."
        );
    });
    Ok(())
}

fn print_preview(p: &ops::TriggerPreview) {
    let range = format!(
        "{} to {} ({})",
        p.since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        p.until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        p.timezone
    );
    if p.trigger_type.threshold_kind().is_none() {
        println!("{} on {}, {range}:", p.trigger_type, p.site_id);
        for d in &p.days {
            println!("  {}  {}", d.date, d.completions);
        }
        println!("{} completions in all (each one delivery)", p.total);
        return;
    }
    let threshold = match (p.threshold, p.threshold_source.as_deref()) {
        (Some(t), Some(src)) => format!("{t} ({src})"),
        _ => "none: too little traffic to derive one".to_string(),
    };
    println!(
        "{} on {}, {range}: threshold {threshold}, window {} s, cooldown {} s, evaluated every {} s ({} evaluations)",
        p.trigger_type,
        p.site_id,
        p.window_secs.unwrap_or_default(),
        p.cooldown_secs.unwrap_or_default(),
        p.interval_secs.unwrap_or_default(),
        p.evaluations.unwrap_or_default()
    );
    for f in &p.firings {
        println!("  {}  {} visitors", f.local, f.visitors);
    }
    if p.omitted > 0 {
        println!("  … {} more not listed", p.omitted);
    }
    println!(
        "{}; derived threshold today: {}",
        match p.total {
            0 => "would not have fired".to_string(),
            1 => "would have fired once".to_string(),
            n => format!("would have fired {n} times"),
        },
        p.derived_threshold
            .map_or("none (too little traffic)".to_string(), |t| t.to_string())
    );
}

fn print_triggers(t: &[ops::TriggerView]) {
    if t.is_empty() {
        println!(
            "no triggers: nothing is enqueued for this webhook; `triggers add --help` shows how"
        );
        return;
    }
    print!(
        "{}",
        table(
            &[
                "TRIGGER",
                "TYPE",
                "THRESHOLD",
                "LAST COUNT",
                "WINDOW",
                "COOLDOWN",
                "GOAL OR EVENT",
                "SENDS",
                "ENABLED",
                "LAST FIRED",
                "PAUSED"
            ],
            t.iter()
                .map(|t| {
                    let spike_or_drop = t.trigger_type.threshold_kind().is_some();
                    let digest = t.mode == crate::triggers::DeliveryMode::Digest;
                    let tracking = t.trigger_type == crate::triggers::TriggerType::TrackingStopped;
                    vec![
                        t.id.to_string(),
                        t.trigger_type.to_string(),
                        match (spike_or_drop, t.threshold) {
                            (false, _) => "-".into(),
                            (true, Some(v)) => v.to_string(),
                            (true, None) => match t.derived_threshold {
                                Some(d) => format!("derived: {d}"),
                                None => "derived (not yet)".into(),
                            },
                        },
                        t.last_value
                            .filter(|_| spike_or_drop)
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        match (spike_or_drop, t.window_secs) {
                            (false, Some(v)) if digest || tracking => format!("{v}s"),
                            (false, None) if tracking => "3600s (default)".into(),
                            (false, None) if digest => "3600s (default)".into(),
                            (false, _) => "-".into(),
                            (true, Some(v)) => format!("{v}s"),
                            (true, None) => "default".into(),
                        },
                        t.cooldown_secs
                            .map_or_else(|| "-".into(), |c| format!("{c}s")),
                        match (&t.goal_id, &t.goal_name, &t.event_name) {
                            (_, _, Some(_)) => t.custom_event_label().unwrap_or_default(),
                            (Some(id), Some(n), _) => format!("{n} ({id})"),
                            (Some(id), None, _) => id.to_string(),
                            _ if spike_or_drop || tracking => "-".into(),
                            _ => "every goal".into(),
                        },
                        t.event_type.clone(),
                        t.enabled.to_string(),
                        time(t.last_fired_at),
                        t.paused_reason.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect()
        )
    );
}

fn clip(s: &str, n: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

fn print_deliveries(v: &[ops::DeliveryView]) {
    if v.is_empty() {
        println!("no deliveries match");
        return;
    }
    print!(
        "{}",
        table(
            &[
                "DELIVERY",
                "WEBHOOK",
                "EVENT",
                "STATUS",
                "ATTEMPTS",
                "CODE",
                "CREATED",
                "NEXT / FINISHED",
                "LAST ERROR"
            ],
            v.iter()
                .map(|d| vec![
                    d.id.to_string(),
                    d.webhook_id.to_string()[..8].to_string(),
                    d.event_type.clone(),
                    d.status.clone(),
                    d.attempts.to_string(),
                    d.last_response_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    rfc3339_seconds(d.inserted_at),
                    if d.finished_at.is_some() {
                        time(d.finished_at)
                    } else {
                        format!("next {}", time_or_value(d.next_attempt_at))
                    },
                    clip(d.last_error.as_deref().unwrap_or("-"), 60),
                ])
                .collect()
        )
    );
}

fn print_delivery(d: &ops::DeliveryDetail) {
    let x = &d.delivery;
    for (k, v) in [
        ("delivery", x.id.to_string()),
        ("webhook", x.webhook_id.to_string()),
        ("event", x.event_type.clone()),
        ("status", x.status.clone()),
        ("attempts", x.attempts.to_string()),
        ("created", rfc3339_seconds(x.inserted_at)),
        (
            "next attempt",
            if matches!(x.status.as_str(), "pending" | "retrying") {
                time_or_value(x.next_attempt_at)
            } else {
                "-".into()
            },
        ),
        ("delivered", time(x.delivered_at)),
        ("finished", time(x.finished_at)),
        (
            "last error",
            x.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "payload",
            match (&d.payload, &d.payload_note) {
                // Not parsed (see payload_note): the stored text itself.
                (serde_json::Value::String(text), Some(_)) => text.clone(),
                (v, _) => v.to_string(),
            },
        ),
    ] {
        println!("{:<14}{v}", format!("{k}:"));
    }
    if let Some(note) = &d.payload_note {
        println!("{:<14}{note}", "payload note:");
    }
    println!();
    if d.attempt_log.is_empty() {
        println!("no attempts yet");
        return;
    }
    print!(
        "{}",
        table(
            &["#", "TIME", "CODE", "MS", "ERROR", "RESPONSE"],
            d.attempt_log
                .iter()
                .map(|a| vec![
                    a.attempt.to_string(),
                    rfc3339_seconds(a.attempted_at),
                    a.status_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    a.duration_ms.to_string(),
                    clip(a.error.as_deref().unwrap_or("-"), 80),
                    clip(a.response_body.as_deref().unwrap_or("-"), 80),
                ])
                .collect()
        )
    );
}

fn print_test(r: &ops::TestResult) {
    if r.success {
        println!(
            "ok: the receiver answered {} in {} ms",
            r.status_code.unwrap_or_default(),
            r.duration_ms
        );
    } else {
        match r.status_code {
            Some(c) => println!("FAILED: the receiver answered {c} in {} ms", r.duration_ms),
            None => println!(
                "FAILED ({}): {}",
                serde_json::to_value(r.cause)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or(""),
                r.error.as_deref().unwrap_or("no answer")
            ),
        }
    }
    if let Some(b) = r.response_body.as_deref().filter(|b| !b.is_empty()) {
        println!("response: {}", clip(b, 300));
    }
    if let Some(h) = &r.hint {
        println!("what to do: {h}");
    }
    if let Some(p) = &r.preview {
        println!("the {} message, as the channel shows it:", r.format);
        for line in p.lines() {
            println!("  | {line}");
        }
        println!("sent as:\n{}", r.body);
    }
    println!(
        "delivery {} is in the log: `deliveries show {}`",
        r.delivery_id, r.delivery_id
    );
}

/// Left-aligned columns; the last one is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
