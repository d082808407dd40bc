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
    if cli.json {
        let name = match cli.command {
            Command::Run => Some("run"),
            Command::Migrate => Some("migrate"),
            Command::Demo => Some("demo"),
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
    if let Command::Demo = cli.command {
        return demo(&rt);
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
            Command::Check if cli.json => check_json(&cfg).await,
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

/// `check --json`: every check as `{"check", "ok", "detail" | "error"}`, in
/// the order `check` runs them; a check that needs one that failed is
/// `skipped`. Exit 1 unless all are ok.
async fn check_json(cfg: &Config) -> anyhow::Result<()> {
    use serde_json::json;
    let mut checks = vec![json!({"check": "config", "ok": true})];
    let fail = |name: &str, e: &anyhow::Error| json!({"check": name, "ok": false, "error": logging::error_line(e.as_ref())});
    let client = match async {
        let client = db::connect(&cfg.database.url).await?;
        db::migrate::ensure_current(&client).await?;
        anyhow::Ok(client)
    }
    .await
    {
        Ok(c) => {
            checks.push(json!({"check": "database", "ok": true,
                "detail": format!("schema version {}", db::migrate::latest_version())}));
            Some(c)
        }
        Err(e) => {
            checks.push(fail("database", &e));
            None
        }
    };
    let https = plausible_webhooks::delivery::client::ClientConfig::from_config(cfg)
        .and_then(plausible_webhooks::delivery::client::HttpClient::new);
    checks.push(match https {
        Ok(_) => json!({"check": "https_client", "ok": true}),
        Err(e) => fail("https_client", &e),
    });
    if cfg.triggers.enabled {
        let analytics = async {
            let source = plausible_webhooks::triggers::source::AnalyticsSource::from_config(cfg)?;
            let checked = source.check().await?;
            anyhow::Ok(format!(
                "{}, server version {}, {} statements answered",
                source.describe(),
                checked.version,
                checked.statements
            ))
        }
        .await;
        checks.push(match analytics {
            Ok(d) => json!({"check": "analytics", "ok": true, "detail": d}),
            Err(e) => fail("analytics", &e),
        });
    } else {
        checks.push(json!({"check": "analytics", "ok": true, "detail": "triggers are off"}));
    }
    checks.push(match &client {
        Some(c) => match plausible_webhooks::admin::http::check(cfg, c).await {
            Ok(d) => json!({"check": "admin", "ok": true, "detail": d}),
            Err(e) => fail("admin", &e),
        },
        None => json!({"check": "admin", "ok": false, "skipped": "the database check failed"}),
    });
    let ok = checks.iter().all(|c| c["ok"] == true);
    println!("{}", json!({"ok": ok, "checks": checks}));
    anyhow::ensure!(
        ok,
        "check failed: the JSON report on stdout says which check and why"
    );
    Ok(())
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
            eprintln!("error: {}", logging::error_line(e.as_ref()));
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EX_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
