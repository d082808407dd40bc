use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plausible_webhooks::config::{Config, ConfigError, EX_CONFIG};
use plausible_webhooks::{daemon, db, logging};

/// Webhooks for Plausible Analytics: delivers rows of `webhook_deliveries` as
/// signed HTTPS POSTs, with retries and a full delivery log.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (default /etc/plausible-webhooks/config.toml when it exists).
    /// Every key can be overridden by PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY>;
    /// DATABASE_URL sets database.url.
    #[arg(long, short, global = true, env = "PLAUSIBLE_WEBHOOKS_CONFIG")]
    config: Option<PathBuf>,
    /// `check` and the management commands: print JSON instead of text (for
    /// scripts). `run`, `migrate` and `demo` refuse it.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM (what the systemd unit starts).
    Run,
    /// Apply the database migrations (safe to run twice, or from two hosts at once).
    Migrate,
    /// Validate the config and the database, then exit (non-zero on a problem).
    Check,
    /// Show the delivery engine end to end on a throwaway PostgreSQL and a local HTTPS receiver.
    ///
    /// With --keep: a playground instead, left running until Ctrl-C.
    #[cfg_attr(
        not(feature = "demo"),
        command(about = "Not in this build: the demo needs `cargo run --features demo -- demo`")
    )]
    Demo {
        /// Leave a playground running until Ctrl-C: PostgreSQL with a site,
        /// goals and events, a receiver, a webhook to it and the daemon; prints
        /// the environment to point the CLI and curl at.
        #[arg(long)]
        keep: bool,
    },
    /// A local HTTPS receiver to try webhooks with: prints each delivery, its
    /// headers and whether each signature verifies, and answers as told.
    ///
    /// It makes a CA and a certificate for 127.0.0.1 (kept in --dir) and
    /// prints the configuration lines that make the daemon trust and reach it.
    /// Example: listen --port 8443 --secret whsec_… --status 503 --delay 2s
    #[cfg_attr(
        not(feature = "demo"),
        command(about = "Not in this build: needs `cargo run --features demo -- listen`")
    )]
    Listen(ListenArgs),
    #[command(flatten)]
    Admin(Box<plausible_webhooks::admin::cli::AdminCommand>),
}

/// `listen`'s options (see `plausible_webhooks::demo::listen`).
#[derive(clap::Args)]
#[cfg_attr(not(feature = "demo"), allow(dead_code))]
struct ListenArgs {
    /// The port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// The webhook's secret (`create` prints it): signatures are verified with it.
    #[arg(long)]
    secret: Option<String>,
    /// The status to answer with, e.g. 503 to rehearse retries.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    status: u16,
    /// How long to wait before answering, e.g. 2s (past the daemon's request
    /// timeout, 10s by default: a timeout).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    delay: std::time::Duration,
    /// Where the CA and the certificate are kept, made on first use
    /// (default ~/.cache/plausible-webhooks/listen).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.json {
        let name = match cli.command {
            Command::Run => Some("run"),
            Command::Migrate => Some("migrate"),
            Command::Demo { .. } => Some("demo"),
            Command::Listen(_) => Some("listen"),
            _ => None,
        };
        if let Some(name) = name {
            eprintln!(
                "error: --json has no meaning for `{name}` (it logs; set log.format = \"json\" for JSON lines); \
                 it applies to `check` and the management commands"
            );
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Command::Demo { keep } => return demo(&rt, keep),
        Command::Listen(args) => return listen(&rt, args),
        _ => {}
    }
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            if cli.json && matches!(cli.command, Command::Check) {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "checks": [
                        {"check": "config", "ok": false, "error": e.to_string(), "key": e.key()}
                    ]})
                );
            } else {
                eprintln!("error: {e}");
            }
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    // Management commands print their own results; only errors are logged.
    let level = match cli.command {
        Command::Admin(_) => "error",
        _ => &cfg.log.level,
    };
    logging::init(&cfg.log.format, level);
    for w in &cfg.warnings {
        match cli.command {
            // The daemon's lines go to its log, in its format.
            Command::Run => tracing::warn!("{w}"),
            _ => eprintln!("warning: {w}"),
        }
    }
    report(rt.block_on(async move {
        match cli.command {
            Command::Run => daemon::run(cfg).await,
            Command::Migrate => {
                let mut client = db::connect(&cfg.database.url).await?;
                let applied = db::migrate::migrate(&mut client).await?;
                db::settings::apply(&client, &cfg).await?;
                db::settings::apply_health(&client, &cfg.health).await?;
                db::settings::apply_mail(&client, cfg.mail.enabled).await?;
                if applied.is_empty() {
                    println!(
                        "schema is current (version {})",
                        db::migrate::latest_version()
                    );
                } else {
                    println!("applied migrations {applied:?}");
                }
                Ok(())
            }
            Command::Check if cli.json => check_json(&cfg).await,
            Command::Check => check(&cfg).await,
            Command::Admin(cmd) => plausible_webhooks::admin::cli::run(*cmd, &cfg, cli.json).await,
            Command::Demo { .. } | Command::Listen(_) => unreachable!(),
        }
    }))
}

/// A command line clap refuses: its text, or under `--json` the error body
/// every refusal prints (docs/cli.md), code `usage`; exit 2 either way.
/// Help and version are not refusals: clap prints them.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os().any(|a| a == "--json");
    let help = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !json || help {
        e.exit();
    }
    let text = e.render().to_string();
    let message = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    println!(
        "{}",
        serde_json::to_string_pretty(&plausible_webhooks::admin::error::ErrorBody::new(
            "usage", message, None
        ))
        .expect("serializable output")
    );
    ExitCode::from(2)
}

#[cfg(feature = "demo")]
fn demo(rt: &tokio::runtime::Runtime, keep: bool) -> ExitCode {
    // The demo's table shows every attempt, the expected 503 included:
    // warnings would only interleave with it.
    logging::init("text", "error");
    if keep {
        return report(rt.block_on(plausible_webhooks::demo::playground::keep()));
    }
    report(rt.block_on(plausible_webhooks::demo::run()))
}

#[cfg(feature = "demo")]
fn listen(rt: &tokio::runtime::Runtime, a: ListenArgs) -> ExitCode {
    use plausible_webhooks::demo::listen;
    logging::init("text", "error");
    report(rt.block_on(listen::run(listen::Options {
        port: a.port,
        secret: a.secret,
        status: a.status,
        delay: a.delay,
        dir: a.dir.unwrap_or_else(listen::default_dir),
    })))
}

/// The demo, the playground and `listen` and their test kit (rcgen,
/// tempfile) stay out of the daemon's build; the subcommands are still
/// known so that running one says how to get it.
#[cfg(not(feature = "demo"))]
fn demo(_: &tokio::runtime::Runtime, _: bool) -> ExitCode {
    eprintln!(
        "error: this plausible-webhooks was built without the demo; run it from the repository with `cargo run --features demo -- demo`"
    );
    ExitCode::FAILURE
}

#[cfg(not(feature = "demo"))]
fn listen(_: &tokio::runtime::Runtime, _: ListenArgs) -> ExitCode {
    eprintln!(
        "error: this plausible-webhooks was built without `listen` (a tool for trying webhooks, not part of the daemon); run it from the repository with `cargo run --features demo -- listen`"
    );
    ExitCode::FAILURE
}

/// One of `check`'s checks: its name in `--json`, and what it found.
struct Checked {
    name: &'static str,
    /// Ok: the line `check` prints; Err: why it failed; None: skipped
    /// because a check it needs failed.
    result: Option<anyhow::Result<String>>,
}

/// Every check `check` makes, in order; each runs even when an earlier one
/// failed, unless it needs that one (the admin check needs the database).
async fn run_checks(cfg: &Config) -> Vec<Checked> {
    let mut out = vec![Checked {
        name: "config",
        result: Some(Ok("config: ok".into())),
    }];
    let client = async {
        let client = db::connect(&cfg.database.url).await?;
        db::migrate::ensure_current(&client).await?;
        anyhow::Ok(client)
    }
    .await;
    let (client, database) = match client {
        Ok(c) => (
            Some(c),
            Ok(format!(
                "database: ok (schema version {})",
                db::migrate::latest_version()
            )),
        ),
        Err(e) => (None, Err(e)),
    };
    out.push(Checked {
        name: "database",
        result: Some(database),
    });
    let https = plausible_webhooks::delivery::client::ClientConfig::from_config(cfg)
        .and_then(plausible_webhooks::delivery::client::HttpClient::new)
        .map(|_| "https client: ok".to_string());
    out.push(Checked {
        name: "https_client",
        result: Some(https),
    });
    let analytics = if cfg.triggers.enabled {
        async {
            let source = plausible_webhooks::triggers::source::AnalyticsSource::from_config(cfg)?;
            // Every statement triggers send, over an empty window: a refused
            // one fails here, named, with the server's text.
            let checked = source.check().await?;
            anyhow::Ok(format!(
                "analytics: ok ({}, server version {}, {} statements answered)",
                source.describe(),
                checked.version,
                checked.statements
            ))
        }
        .await
    } else {
        Ok("analytics: off (triggers are off)".to_string())
    };
    out.push(Checked {
        name: "analytics",
        result: Some(analytics),
    });
    let admin = match &client {
        Some(c) => Some(plausible_webhooks::admin::http::check(cfg, c).await),
        None => None,
    };
    out.push(Checked {
        name: "admin",
        result: admin,
    });
    out
}

/// `check --json`: every check as `{"check", "ok", "detail" | "error" |
/// "skipped"}`, in the order `check` runs them. Exit 1 unless all are ok.
async fn check_json(cfg: &Config) -> anyhow::Result<()> {
    use serde_json::json;
    let checks: Vec<serde_json::Value> = run_checks(cfg)
        .await
        .into_iter()
        .map(|c| match c.result {
            Some(Ok(detail)) => json!({"check": c.name, "ok": true, "detail": detail}),
            Some(Err(e)) => json!({"check": c.name, "ok": false,
                "error": logging::error_line(e.as_ref())}),
            None => json!({"check": c.name, "ok": false, "skipped": "a check it needs failed"}),
        })
        .collect();
    let ok = checks.iter().all(|c| c["ok"] == true);
    println!("{}", json!({"ok": ok, "checks": checks}));
    anyhow::ensure!(
        ok,
        "check failed: the JSON report on stdout says which check and why"
    );
    Ok(())
}

/// `check`: a line per check up to the first that fails, which is the error.
async fn check(cfg: &Config) -> anyhow::Result<()> {
    for c in run_checks(cfg).await {
        match c.result {
            Some(Ok(line)) => println!("{line}"),
            Some(Err(e)) => return Err(e),
            // Only after a failure, which returned above.
            None => {}
        }
    }
    Ok(())
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", logging::error_line(e.as_ref()));
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EX_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of every command (names, groups, positionals),
    /// which it otherwise makes only when a command is run.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
