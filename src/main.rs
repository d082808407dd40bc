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
    /// Management commands: print JSON instead of tables (for scripts).
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
    #[cfg_attr(
        not(feature = "demo"),
        command(about = "Not in this build: the demo needs `cargo run --features demo -- demo`")
    )]
    Demo,
    #[command(flatten)]
    Admin(Box<plausible_webhooks::admin::cli::AdminCommand>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Demo = cli.command {
        return demo(&rt);
    }
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    // Management commands print their own results; only errors are logged.
    let level = match cli.command {
        Command::Admin(_) => "error",
        _ => &cfg.log.level,
    };
    logging::init(&cfg.log.format, level);
    report(rt.block_on(async move {
        match cli.command {
            Command::Run => daemon::run(cfg).await,
            Command::Migrate => {
                let mut client = db::connect(&cfg.database.url).await?;
                let applied = db::migrate::migrate(&mut client).await?;
                db::settings::apply(&client, &cfg.delivery).await?;
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
            Command::Check => check(&cfg).await,
            Command::Admin(cmd) => plausible_webhooks::admin::cli::run(*cmd, &cfg, cli.json).await,
            Command::Demo => unreachable!(),
        }
    }))
}

#[cfg(feature = "demo")]
fn demo(rt: &tokio::runtime::Runtime) -> ExitCode {
    // The demo's table shows every attempt, the expected 503 included:
    // warnings would only interleave with it.
    logging::init("text", "error");
    report(rt.block_on(plausible_webhooks::demo::run()))
}

/// The demo and its test kit (rcgen, tempfile) stay out of the daemon's build;
/// the subcommand is still known so that running it says how to get it.
#[cfg(not(feature = "demo"))]
fn demo(_: &tokio::runtime::Runtime) -> ExitCode {
    eprintln!(
        "error: this plausible-webhooks was built without the demo; run it from the repository with `cargo run --features demo -- demo`"
    );
    ExitCode::FAILURE
}

async fn check(cfg: &Config) -> anyhow::Result<()> {
    println!("config: ok");
    let client = db::connect(&cfg.database.url).await?;
    db::migrate::ensure_current(&client).await?;
    println!(
        "database: ok (schema version {})",
        db::migrate::latest_version()
    );
    plausible_webhooks::delivery::client::HttpClient::new(
        plausible_webhooks::delivery::client::ClientConfig::from_config(cfg)?,
    )?;
    println!("https client: ok");
    if cfg.triggers.enabled {
        let source = plausible_webhooks::triggers::source::AnalyticsSource::from_config(cfg)?;
        // Every statement triggers send, over an empty window: a refused one
        // fails here, named, with the server's text.
        let checked = source.check().await?;
        println!(
            "analytics: ok ({}, server version {}, {} statements answered)",
            source.describe(),
            checked.version,
            checked.statements
        );
    }
    println!(
        "{}",
        plausible_webhooks::admin::http::check(cfg, &client).await?
    );
    Ok(())
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EX_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
