//! The management commands: parse (clap), call [`super::ops`], print a table
//! for people or JSON for scripts (`--json`). Every refusal names the field
//! and the rule, exits non-zero, and changes nothing.
//!
//! `--json` prints what the ops return, the very bodies the HTTP API sends
//! (`{"webhooks": [...]}`, `{"webhook": ..., "triggers": [...]}`, ...), and a
//! refusal as the API's `{"error": {"code", "message", "field"?}}`
//! (`ops::ErrorBody`).

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;

use super::ops::{self, OpError};
use super::validate;
use crate::config::Config;
use crate::db;
use crate::db::timestamp::rfc3339_seconds;
use crate::delivery::guard::AddressGuard;

/// How a site is named on the command line.
const SITE_HELP: &str = "The site: its domain as in Plausible (example.com) or its numeric id";

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a webhook for a site; prints its signing secret once.
    ///
    /// Example: create --site example.com --name Slack --url https://hooks.example.net/abc --trigger goal
    Create(CreateArgs),
    /// List webhooks with their status (active, failing, disabled, deleted).
    List {
        #[arg(long, help = SITE_HELP)]
        site: Option<String>,
        /// Include soft-deleted webhooks (restorable until purged).
        #[arg(long)]
        deleted: bool,
    },
    /// The queue per webhook: due, retrying, waiting, in flight, the last hour's
    /// outcomes, how long the oldest due delivery has waited, and its status.
    ///
    /// What every instance left in the database, without Prometheus.
    Status {
        #[arg(long, help = SITE_HELP)]
        site: Option<String>,
    },
    /// Show one webhook: settings, health and triggers (never its secret).
    Show {
        /// Webhook id, or a unique prefix of it (at least 4 characters).
        webhook: String,
    },
    /// Change a webhook's name, URL, headers, retry schedule or limits; the rest is kept.
    Update(UpdateArgs),
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
        /// The new secret (32–256 characters; `-` reads it from stdin). Default: generated.
        #[arg(long)]
        secret: Option<String>,
        /// How long the old secret still signs (both `v1,` signatures are sent): 24h, 90m, 0 …
        #[arg(long, default_value = "24h")]
        grace: String,
    },
    /// Send a `test` event now and print the receiver's answer (or why it failed).
    ///
    /// It goes through the daemon's own HTTPS client, address guard and signing,
    /// and is recorded in the delivery log. Exits 1 unless the receiver answers 2xx.
    Test {
        /// Webhook id or unique prefix.
        webhook: String,
    },
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
        /// Send it even though it succeeded (the receiver sees the same webhook-id twice).
        #[arg(long)]
        force: bool,
    },
    /// Send a webhook's failed deliveries since a time again (same delivery ids).
    ///
    /// Example: replay 6f1c --since 2h   or   --since 2026-11-23T10:00:00Z
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long, help = SITE_HELP)]
    site: String,
    /// A name people will recognise (1–255 characters).
    #[arg(long)]
    name: String,
    /// The receiver: https, no user:password, a public host (at most 2048 characters).
    #[arg(long)]
    url: String,
    /// The signing secret (32–256 characters; `-` reads it from stdin). Default: generated
    /// as whsec_ + base64 of 32 random bytes.
    #[arg(long)]
    secret: Option<String>,
    /// A custom header sent with every delivery, NAME=VALUE (repeatable). Content-Type,
    /// User-Agent and the signature headers cannot be set.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Subscribe to an event: goal (every goal of the site), spike or drop (threshold
    /// derived from recent traffic); repeatable. `triggers add` sets the details.
    #[arg(long = "trigger", value_name = "TYPE")]
    triggers: Vec<String>,
    /// Delays between retries, e.g. 1m,5m,30m (at most 10, each ≤ 24h; `none`: no retries).
    /// Default: the daemon's delivery.retry_schedule_secs.
    #[arg(long)]
    retry_schedule: Option<String>,
    /// Requests per second to this receiver (over all instances together). Default: delivery.default_rate_limit_per_sec.
    #[arg(long)]
    rate_limit: Option<i64>,
    /// Concurrent requests to this receiver (over all instances together, 1–1000). Default: delivery.default_max_concurrency.
    #[arg(long)]
    max_concurrency: Option<i64>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Webhook id or unique prefix.
    webhook: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    url: Option<String>,
    /// Set a header, NAME=VALUE (repeatable; replaces one of the same name).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Remove a header by name (repeatable).
    #[arg(long = "remove-header", value_name = "NAME")]
    remove_headers: Vec<String>,
    /// Remove every custom header (before --header ones are set).
    #[arg(long)]
    clear_headers: bool,
    /// e.g. 1m,5m,30m; `none` for no retries; `default` for the daemon's schedule.
    #[arg(long)]
    retry_schedule: Option<String>,
    /// Requests per second, or `default`.
    #[arg(long)]
    rate_limit: Option<String>,
    /// Concurrent requests (1–1000), or `default`.
    #[arg(long)]
    max_concurrency: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Webhook id or unique prefix.
    webhook: String,
    /// Deliveries created at or after this: an RFC 3339 time, or a duration ago (2h, 1d).
    #[arg(long)]
    since: String,
    /// …and before this (same forms).
    #[arg(long)]
    until: Option<String>,
    /// Only this event type (goal_completion, visitor_spike, traffic_drop, test).
    #[arg(long)]
    event: Option<String>,
    /// Send deliveries that succeeded again too.
    #[arg(long)]
    include_success: bool,
    /// Count what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum TriggersCommand {
    /// Subscribe a webhook to an event.
    ///
    /// Examples: triggers add 6f1c spike --threshold 100 --window 5m --cooldown 1h;
    /// triggers add 6f1c goal --goal Signup
    Add {
        /// Webhook id or unique prefix.
        webhook: String,
        /// spike (visitor_spike), drop (traffic_drop) or goal (goal_completion).
        #[arg(value_name = "TYPE")]
        trigger_type: String,
        /// spike/drop: unique visitors, 1–10,000,000. Default: derived from the site's last 7 days.
        #[arg(long)]
        threshold: Option<i64>,
        /// spike/drop: the window counted, 1m–7d (default spike 5m, drop 12h).
        #[arg(long)]
        window: Option<String>,
        /// spike/drop: the least time between two firings, 0–7d (default 1h).
        #[arg(long)]
        cooldown: Option<String>,
        /// goal: one goal of the site, by id or display name. Default: every goal of the site.
        #[arg(long)]
        goal: Option<String>,
    },
    /// List a webhook's triggers.
    List {
        /// Webhook id or unique prefix.
        webhook: String,
    },
    /// Remove a trigger by its id (or a unique prefix).
    Remove { trigger: String },
}

#[derive(Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// The newest deliveries first, filtered.
    List {
        /// Webhook id or unique prefix.
        #[arg(long)]
        webhook: Option<String>,
        /// pending, retrying, delivering, success or failed.
        #[arg(long)]
        status: Option<String>,
        /// Event type (goal_completion, visitor_spike, traffic_drop, test).
        #[arg(long)]
        event: Option<String>,
        /// Created at or after: an RFC 3339 time or a duration ago (2h, 1d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (1–10,000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The next page: the `next_cursor` the previous one ended with.
        #[arg(long)]
        cursor: Option<String>,
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
        Err(Failure::Other(e)) => {
            if json {
                print_json(&ops::ErrorBody::new("internal", &format!("{e:#}"), None));
            }
            Err(e)
        }
        Err(Failure::Unavailable(e)) => {
            if json {
                print_json(&ops::ErrorBody::new(
                    "database_unavailable",
                    &format!("{e:#}"),
                    None,
                ));
            }
            Err(e)
        }
        // The result is printed already (a failed test): only the exit status is left.
        Err(Failure::Reported(e)) => Err(e),
    }
}

enum Failure {
    Op(OpError),
    Other(anyhow::Error),
    /// The database cannot be reached (the API's 503 `database_unavailable`).
    Unavailable(anyhow::Error),
    Reported(anyhow::Error),
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        Failure::Op(e)
    }
}
impl From<validate::Invalid> for Failure {
    fn from(e: validate::Invalid) -> Self {
        Failure::Op(OpError::Invalid(e))
    }
}
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn guard(cfg: &Config) -> Result<AddressGuard> {
    AddressGuard::from_config(cfg)
}

/// Connects, refuses a database whose schema is not current, and hands the
/// command to its function; each prints its own result.
async fn execute(cmd: AdminCommand, cfg: &Config, json: bool) -> Result<(), Failure> {
    let mut client = db::connect(&cfg.database.url)
        .await
        .map_err(Failure::Unavailable)?;
    db::migrate::ensure_current(&client).await?;
    // One `now` for every relative time (`--since 2h`) the command parses.
    let now = OffsetDateTime::now_utc();
    match cmd {
        AdminCommand::Create(a) => create(&mut client, cfg, a, json).await,
        AdminCommand::List { site, deleted } => list(&client, site, deleted, json).await,
        AdminCommand::Show { webhook } => show(&client, cfg, &webhook, json).await,
        AdminCommand::Update(a) => update(&client, cfg, a, json).await,
        AdminCommand::Enable { webhook } => enable(&client, &webhook, json).await,
        AdminCommand::Disable { webhook, reason } => {
            disable(&client, &webhook, reason.as_deref(), json).await
        }
        AdminCommand::Delete { webhook } => delete(&client, cfg, &webhook, json).await,
        AdminCommand::Restore { webhook } => restore(&client, cfg, &webhook, json).await,
        AdminCommand::RotateSecret {
            webhook,
            secret,
            grace,
        } => rotate_secret(&client, &webhook, secret, &grace, json).await,
        AdminCommand::Test { webhook } => test(cfg, &webhook, json).await,
        AdminCommand::Triggers(c) => triggers(&client, c, json).await,
        AdminCommand::Deliveries(c) => deliveries(&client, c, now, json).await,
        AdminCommand::Retry { delivery, force } => retry(&client, &delivery, force, json).await,
        AdminCommand::Status { site } => status(&client, site.as_deref(), json).await,
        AdminCommand::Replay(a) => replay(&client, a, now, json).await,
    }
}

// Webhooks.

async fn create(
    client: &mut Client,
    cfg: &Config,
    a: CreateArgs,
    json: bool,
) -> Result<(), Failure> {
    let mut headers = BTreeMap::new();
    for h in &a.headers {
        let (k, v) = validate::header_arg(h)?;
        if headers.keys().any(|e: &String| e.eq_ignore_ascii_case(&k)) {
            return Err(validate::Invalid::new(
                &format!("headers.{k}"),
                validate::Rule::Duplicate,
                "given twice (header names are case-insensitive)",
            )
            .into());
        }
        headers.insert(k, v);
    }
    let triggers = a
        .triggers
        .iter()
        .map(|t| {
            Ok(ops::NewTrigger {
                trigger_type: validate::trigger_type(t)?,
                threshold: None,
                window_secs: None,
                cooldown_secs: None,
                goal: None,
            })
        })
        .collect::<Result<Vec<_>, validate::Invalid>>()?;
    let new = ops::NewWebhook {
        site: a.site,
        name: a.name,
        url: a.url,
        secret: a.secret.map(secret_arg).transpose()?,
        headers,
        retry_schedule_secs: a.retry_schedule.as_deref().map(schedule_arg).transpose()?,
        rate_limit_per_sec: a.rate_limit,
        max_concurrency: a.max_concurrency,
        triggers,
    };
    let c = ops::create(client, &guard(cfg)?, new).await?;
    if json {
        print_json(&c);
    } else {
        print_webhook(&c.webhook, cfg);
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

async fn status(client: &Client, site: Option<&str>, json: bool) -> Result<(), Failure> {
    let list = ops::status(client, site).await?;
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

async fn list(
    client: &Client,
    site: Option<String>,
    deleted: bool,
    json: bool,
) -> Result<(), Failure> {
    let list = ops::list(
        client,
        &ops::ListFilter {
            site,
            include_deleted: deleted,
            site_ids: None,
        },
    )
    .await?;
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
    }
    Ok(())
}

async fn show(client: &Client, cfg: &Config, webhook: &str, json: bool) -> Result<(), Failure> {
    let d = ops::show_detail(client, webhook).await?;
    if json {
        print_json(&d);
    } else {
        print_webhook(&d.webhook, cfg);
        println!();
        print_triggers(&d.triggers);
    }
    Ok(())
}

async fn update(client: &Client, cfg: &Config, a: UpdateArgs, json: bool) -> Result<(), Failure> {
    let mut set = BTreeMap::new();
    for h in &a.headers {
        let (k, v) = validate::header_arg(h)?;
        set.insert(k, v);
    }
    let changes = ops::WebhookChanges {
        name: a.name,
        url: a.url,
        set_headers: set,
        remove_headers: a.remove_headers,
        clear_headers: a.clear_headers,
        retry_schedule_secs: match a.retry_schedule.as_deref() {
            None => None,
            Some(s) if s.trim() == "default" => Some(None),
            Some(s) => Some(Some(schedule_arg(s)?)),
        },
        rate_limit_per_sec: optional_number("rate_limit_per_sec", a.rate_limit)?,
        max_concurrency: optional_number("max_concurrency", a.max_concurrency)?,
    };
    if changes.is_empty() {
        return Err(validate::Invalid::new(
            "update",
            validate::Rule::Required,
            "nothing to change: give at least one of --name, --url, --header, --remove-header, \
             --clear-headers, --retry-schedule, --rate-limit, --max-concurrency",
        )
        .into());
    }
    let w = ops::update(client, &guard(cfg)?, &a.webhook, &changes).await?;
    output(json, &w, || print_webhook(&w, cfg));
    Ok(())
}

async fn enable(client: &Client, webhook: &str, json: bool) -> Result<(), Failure> {
    let w = ops::enable(client, webhook).await?;
    output(json, &w, || {
        println!("webhook {} is {}", w.id, w.status_text())
    });
    Ok(())
}

async fn disable(
    client: &Client,
    webhook: &str,
    reason: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let w = ops::disable(client, webhook, reason).await?;
    output(json, &w, || {
        println!("webhook {} is {}", w.id, w.status_text())
    });
    Ok(())
}

async fn delete(client: &Client, cfg: &Config, webhook: &str, json: bool) -> Result<(), Failure> {
    let d = ops::delete(client, webhook, cfg.retention.days).await?;
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

async fn restore(client: &Client, cfg: &Config, webhook: &str, json: bool) -> Result<(), Failure> {
    let w = ops::restore(client, webhook, cfg.retention.days).await?;
    output(json, &w, || {
        println!("webhook {} restored: {}", w.id, w.status_text())
    });
    Ok(())
}

async fn rotate_secret(
    client: &Client,
    webhook: &str,
    secret: Option<String>,
    grace: &str,
    json: bool,
) -> Result<(), Failure> {
    let grace = validate::duration_secs("grace_secs", grace)?;
    let secret = secret.map(secret_arg).transpose()?;
    let r = ops::rotate_secret(client, webhook, secret.as_deref(), grace).await?;
    output(json, &r, || {
        if secret.is_some() {
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

/// Exits non-zero unless the receiver answered 2xx; the answer is printed either way.
async fn test(cfg: &Config, webhook: &str, json: bool) -> Result<(), Failure> {
    let pool = db::pool(&cfg.database.url, 2)?;
    let sender = ops::TestSender::from_config(cfg, None)?;
    let r = ops::send_test(&pool, &sender, webhook).await?;
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

async fn triggers(client: &Client, cmd: TriggersCommand, json: bool) -> Result<(), Failure> {
    match cmd {
        TriggersCommand::Add {
            webhook,
            trigger_type,
            threshold,
            window,
            cooldown,
            goal,
        } => {
            let t = ops::NewTrigger {
                trigger_type: validate::trigger_type(&trigger_type)?,
                threshold,
                window_secs: window
                    .map(|w| validate::duration_secs("window_secs", &w))
                    .transpose()?,
                cooldown_secs: cooldown
                    .map(|c| validate::duration_secs("cooldown_secs", &c))
                    .transpose()?,
                goal,
            };
            let v = ops::add_trigger(client, &webhook, &t).await?;
            output(json, &v, || print_triggers(std::slice::from_ref(&v)));
        }
        TriggersCommand::List { webhook } => {
            let v = ops::list_triggers(client, &webhook).await?;
            output(json, &v, || print_triggers(&v.triggers));
        }
        TriggersCommand::Remove { trigger } => {
            let v = ops::remove_trigger(client, &trigger).await?;
            output(json, &v, || println!("trigger {} removed", v.id));
        }
    }
    Ok(())
}

// Deliveries.

async fn deliveries(
    client: &Client,
    cmd: DeliveriesCommand,
    now: OffsetDateTime,
    json: bool,
) -> Result<(), Failure> {
    match cmd {
        DeliveriesCommand::List {
            webhook,
            status,
            event,
            since,
            limit,
            cursor,
            follow,
        } => {
            let webhook_id = match (&webhook, follow) {
                (Some(w), true) => Some(ops::webhook_id(client, w).await?),
                _ => None,
            };
            let f = ops::DeliveryFilter {
                webhook,
                status,
                event_type: event,
                since: since
                    .map(|s| validate::since("since", &s, now))
                    .transpose()?,
                limit: Some(limit),
                cursor,
            };
            let started: OffsetDateTime = client
                .query_one("SELECT clock_timestamp()", &[])
                .await
                .context("reading the database's time")?
                .get(0);
            let page = ops::list_deliveries(client, &f).await?;
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
                        println!("more follow: the same command with --cursor {c}");
                    }
                });
            }
            if follow {
                follow_deliveries(client, webhook_id, started, json).await?;
            }
        }
        DeliveriesCommand::Show { delivery } => {
            let d = ops::show_delivery(client, &delivery).await?;
            output(json, &d, || print_delivery(&d));
        }
    }
    Ok(())
}

/// Prints each delivery created or finished after `after`, once a second,
/// until Ctrl-C (exit 0).
async fn follow_deliveries(
    client: &Client,
    webhook: Option<uuid::Uuid>,
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
        let (changed, now) = ops::deliveries_changed(client, webhook, after).await?;
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

async fn retry(client: &Client, delivery: &str, force: bool, json: bool) -> Result<(), Failure> {
    let d = ops::retry(client, delivery, force).await?;
    output(json, &d, || {
        println!(
            "delivery {} is due now (attempt {} next); `deliveries show {}` follows it",
            d.id,
            d.attempts + 1,
            d.id
        )
    });
    Ok(())
}

async fn replay(
    client: &Client,
    a: ReplayArgs,
    now: OffsetDateTime,
    json: bool,
) -> Result<(), Failure> {
    let r = ops::Replay {
        webhook: a.webhook,
        since: validate::since("since", &a.since, now)?,
        until: a
            .until
            .map(|u| validate::since("until", &u, now))
            .transpose()?,
        event_type: a.event,
        include_success: a.include_success,
        dry_run: a.dry_run,
    };
    let v = ops::replay(client, &r).await?;
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

/// `-` reads the secret from stdin (so it stays out of `ps` and shell history).
fn secret_arg(s: String) -> Result<String, Failure> {
    if s != "-" {
        return Ok(s);
    }
    use std::io::IsTerminal as _;
    let mut buf = String::new();
    if std::io::stdin().is_terminal() {
        // Typed at a terminal: one line, not echoed (as passwd reads one).
        eprint!("secret (not shown): ");
        let echo = Echo::off();
        let read = std::io::stdin().read_line(&mut buf);
        drop(echo);
        eprintln!();
        read.context("reading the secret from the terminal")?;
    } else {
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading the secret from stdin")?;
    }
    Ok(buf.trim_end_matches(['\r', '\n']).to_string())
}

/// The terminal's echo, turned off until dropped.
struct Echo(Option<libc::termios>);

impl Echo {
    fn off() -> Echo {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios they fill in;
        // on failure nothing was changed and nothing is restored.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Echo(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Echo(None);
            }
            Echo(Some(saved))
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings tcgetattr read.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

fn schedule_arg(s: &str) -> Result<Vec<i64>, validate::Invalid> {
    Ok(validate::retry_schedule_arg(s)?
        .into_iter()
        .map(i64::from)
        .collect())
}

/// A number, `default` (back to the daemon's), or absent (unchanged).
fn optional_number(field: &str, v: Option<String>) -> Result<Option<Option<i64>>, Failure> {
    match v.as_deref().map(str::trim) {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(n) => n.parse::<i64>().map(|n| Some(Some(n))).map_err(|_| {
            validate::Invalid::new(
                field,
                validate::Rule::Syntax,
                format!("`{n}` is not a number (or `default`)"),
            )
            .into()
        }),
    }
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
        ("deleted at", time(w.deleted_at)),
        ("created", time(Some(w.inserted_at))),
        ("updated", time(Some(w.updated_at))),
    ];
    // Settings print always; states only while they hold.
    let states = [
        "failing since",
        "disabled at",
        "old secret signs until",
        "deleted at",
    ];
    for (k, v) in rows {
        if v == "-" && states.contains(&k) {
            continue;
        }
        println!("{:<24}{v}", format!("{k}:"));
    }
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
                "GOAL",
                "ENABLED",
                "LAST FIRED",
                "PAUSED"
            ],
            t.iter()
                .map(|t| {
                    let spike_or_drop =
                        t.trigger_type != crate::triggers::TriggerType::GoalCompletion;
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
                            (false, _) => "-".into(),
                            (true, Some(v)) => format!("{v}s"),
                            (true, None) => "default".into(),
                        },
                        if spike_or_drop {
                            format!("{}s", t.cooldown_secs)
                        } else {
                            "-".into()
                        },
                        match (&t.goal_id, &t.goal_name) {
                            (Some(id), Some(n)) => format!("{n} ({id})"),
                            (Some(id), None) => id.to_string(),
                            _ if spike_or_drop => "-".into(),
                            _ => "every goal".into(),
                        },
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
