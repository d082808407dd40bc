//! `plausible-webhooks demo --keep`: a playground without Plausible. A
//! throwaway PostgreSQL holding Plausible's tables (the fixture) with rows
//! to work on (`sql/playground/seed.sql`: a team, example.com, two goals, a
//! week of events), a receiver (the `listen` command's, printing each
//! delivery and checking its signatures), a webhook to it, and the daemon
//! itself as a child process (`run`, its admin API on), configured by the
//! environment it prints for the CLI and curl: what a newcomer points their
//! commands at until Ctrl-C, which removes it all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use super::listen::{self, shell_quote, Listener, Printer};
use crate::delivery::signing::generate_secret;
use crate::testkit::pg::{free_port, PgCluster, PgOptions};

/// The playground's rows, above the fixture.
const SEED: &str = include_str!("../../sql/playground/seed.sql");

/// The site the seed makes, as docs/cli.md's worked session names it.
pub const SITE: &str = "example.com";

/// What the playground is started with.
pub struct Options {
    /// The binary whose `run` is the daemon (the command's own).
    pub daemon_bin: PathBuf,
    /// Where the receiver keeps its CA and certificate (`listen`'s default,
    /// so a `listen` started beside the playground is trusted too).
    pub certs: PathBuf,
}

/// A running playground; everything stops when it is dropped.
pub struct Playground {
    pub database_url: String,
    pub webhook: Uuid,
    pub secret: String,
    pub receiver: Listener,
    /// The admin API (`/api/…`, `/readyz`) and its operator token.
    pub api: String,
    pub token: String,
    daemon: tokio::process::Child,
    daemon_env: Vec<(String, String)>,
    daemon_bin: PathBuf,
    _cluster: PgCluster,
}

impl Playground {
    pub async fn start(opts: &Options, print: Printer) -> Result<Playground> {
        let cluster =
            tokio::task::spawn_blocking(|| PgCluster::start(&PgOptions::default())).await??;
        let database_url = cluster.create_database("plausible").await?;
        let db = crate::db::connect(&database_url).await?;
        crate::db::migrate::load_fixture(&db).await?;
        {
            let mut c = crate::db::connect(&database_url).await?;
            crate::db::migrate::migrate(&mut c).await?;
        }
        db.batch_execute(SEED)
            .await
            .context("seeding the playground")?;

        let secret = generate_secret();
        let receiver = Listener::start(
            &listen::Options {
                port: 0,
                secret: Some(secret.clone()),
                status: 200,
                delay: Duration::ZERO,
                dir: opts.certs.clone(),
            },
            print,
        )
        .await?;
        let webhook: Uuid = db
            .query_one(
                "INSERT INTO webhooks (site_id, name, url, secret)
                 SELECT id, 'Playground', $2, $3 FROM sites WHERE domain = $1 RETURNING id",
                &[&SITE, &receiver.url(), &secret],
            )
            .await?
            .get(0);
        db.execute(
            "INSERT INTO webhook_triggers (webhook_id, trigger_type) VALUES ($1, 'goal_completion')",
            &[&webhook],
        )
        .await?;

        let token = {
            use ring::rand::SecureRandom as _;
            let mut bytes = [0u8; 20];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
            hex::encode(bytes)
        };
        let api = format!("127.0.0.1:{}", free_port()?);
        let mut daemon_env = vec![("DATABASE_URL".to_string(), database_url.clone())];
        daemon_env.extend(receiver.config_env());
        daemon_env.extend([
            ("PLAUSIBLE_WEBHOOKS__ADMIN__LISTEN".to_string(), api.clone()),
            (
                "PLAUSIBLE_WEBHOOKS__ADMIN__OPERATOR_TOKEN_SHA256".to_string(),
                format!("[\"{}\"]", crate::admin::auth::operator_token_hash(&token)),
            ),
        ]);
        let daemon = spawn_daemon(&opts.daemon_bin, &daemon_env)?;
        let mut p = Playground {
            database_url,
            webhook,
            secret,
            receiver,
            api: format!("http://{api}"),
            token,
            daemon,
            daemon_env,
            daemon_bin: opts.daemon_bin.clone(),
            _cluster: cluster,
        };
        p.wait_ready(&api).await?;
        Ok(p)
    }

    /// What the CLI needs to reach the playground as the daemon does: its
    /// database, and the receiver's CA and loopback allowed.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("DATABASE_URL".to_string(), self.database_url.clone())];
        env.extend(self.receiver.config_env());
        env
    }

    /// Shell lines to paste into another terminal: the binary on PATH, the
    /// CLI's environment, and the API's address and token for curl.
    pub fn shell_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(dir) = self.daemon_bin.parent() {
            lines.push(format!("export PATH=\"{}:$PATH\"", dir.display()));
        }
        for (k, v) in self.cli_env() {
            lines.push(format!("export {k}={}", shell_quote(&v)));
        }
        lines.push(format!("PW_API={}", self.api));
        lines.push(format!("PW_TOKEN={}", self.token));
        lines
    }

    /// Until `/readyz` answers 200 (schema current, LISTEN connected), or
    /// the daemon exits.
    async fn wait_ready(&mut self, api: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.daemon.try_wait()? {
                bail!("the playground's daemon exited ({status}); its log is above");
            }
            if ready(api).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the playground's daemon was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to the daemon (it drains), then the cluster goes with `self`.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.daemon.id() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.daemon.wait()).await;
        Ok(())
    }

    /// The daemon's environment (for a test that starts another).
    pub fn daemon_env(&self) -> &[(String, String)] {
        &self.daemon_env
    }
}

fn spawn_daemon(bin: &Path, env: &[(String, String)]) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(bin);
    // No config file: the environment above is all of it.
    cmd.args(["--config", "/dev/null", "run"])
        .env_remove("PLAUSIBLE_WEBHOOKS_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("starting the daemon ({} run)", bin.display()))
}

/// Whether GET /readyz answers 200 (HTTP/1.1, by hand: no client needed).
async fn ready(api: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(api).await else {
        return false;
    };
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.is_ok() && head.ends_with(b" 200")
}

/// The command: start, say what runs and how to reach it, wait for Ctrl-C.
pub async fn keep() -> Result<()> {
    println!("plausible-webhooks playground: starting PostgreSQL, a receiver and the daemon...");
    let p = Playground::start(
        &Options {
            daemon_bin: std::env::current_exe().context("finding this binary")?,
            certs: listen::default_dir(),
        },
        listen::stdout(),
    )
    .await?;
    let short = &p.webhook.to_string()[..8];
    println!(
        "\nrunning until Ctrl-C (then everything is removed):\n\
         \x20 PostgreSQL  {db}\n\
         \x20             Plausible's tables with a team, the site {SITE}, goals `Signup` (id 1) and\n\
         \x20             `Visit /pricing` (id 2), a week of pageviews\n\
         \x20 receiver    {url} (prints each delivery below, signatures checked)\n\
         \x20 daemon      `plausible-webhooks run`, admin API on {api}\n\
         \x20 webhook     {id} \"Playground\" for {SITE}, trigger goal_completion\n\
         \x20             secret {secret}\n\
         \nIn another terminal, paste:\n",
        db = p.database_url,
        url = p.receiver.url(),
        api = p.api,
        id = p.webhook,
        secret = p.secret,
    );
    for l in p.shell_lines() {
        println!("  {l}");
    }
    println!(
        "\nthen, for example:\n\
         \x20 plausible-webhooks list\n\
         \x20 plausible-webhooks test {short}\n\
         \x20 psql \"$DATABASE_URL\" -c \"SELECT webhook_enqueue(1, 'goal_completion', '{{\\\"goal_id\\\": 1, \\\"goal_name\\\": \\\"Signup\\\"}}')\"\n\
         \x20 plausible-webhooks deliveries list --webhook {short}\n\
         \x20 curl -s -H \"Authorization: Bearer $PW_TOKEN\" $PW_API/api/webhooks\n\
         \nYour own receiver: `cargo run --features demo -- listen --port 8443` in a third terminal, from\n\
         this repository (its CA is this one's, already trusted), and\n\
         `plausible-webhooks create --site {SITE} --url https://127.0.0.1:8443/hook …` in the second\n\
         (docs/operating.md, \"Trying it standalone\").\n"
    );
    tokio::signal::ctrl_c().await?;
    println!("stopping the playground...");
    p.stop().await
}
