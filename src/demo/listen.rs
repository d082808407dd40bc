//! `plausible-webhooks listen`: a receiver to try webhooks with, as
//! `stripe listen` or `svix listen` give developers. An HTTPS server on
//! loopback with a CA and a certificate for 127.0.0.1 kept in a directory
//! (so the daemon's configuration stays valid across restarts), the
//! configuration lines that make the daemon trust and reach it, each
//! delivery printed as it arrives with its headers and whether each
//! signature verifies, and an answer of a chosen status after a chosen
//! delay, to rehearse failures.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::delivery::signing::{verify_legacy, verify_standard};
use crate::testkit::receiver::{Receiver, Recorded, Reply, TestTls};

/// How far a `webhook-timestamp` may be from now for the signature to
/// count, as docs/receiving.md's snippets allow (replays refused).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// What `listen` is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// 0: a free port.
    pub port: u16,
    /// The webhook's secret, to verify signatures with; None: not verified.
    pub secret: Option<String>,
    /// The status every request is answered with.
    pub status: u16,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Where the CA and the certificate are kept.
    pub dir: PathBuf,
}

/// Where `listen` keeps its certificates by default:
/// `~/.cache/plausible-webhooks/listen`.
pub fn default_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/plausible-webhooks/listen")
}

/// A running listener; it stops when dropped.
pub struct Listener {
    receiver: Receiver,
    tls: TestTls,
}

/// Where each delivery's report goes (stdout for the command).
pub type Printer = Arc<dyn Fn(String) + Send + Sync>;

/// Each report to stdout as it comes, whole (flushed: it may be piped).
pub fn stdout() -> Printer {
    Arc::new(|text| {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    })
}

impl Listener {
    /// Binds 127.0.0.1:`port` and serves until dropped; each request's
    /// report goes to `print`.
    pub async fn start(opts: &Options, print: Printer) -> Result<Listener> {
        let tls = TestTls::in_dir(&opts.dir)?;
        let (secret, status, delay) = (opts.secret.clone(), opts.status, opts.delay);
        let behavior = Arc::new(move |r: &Recorded| {
            print(report(r, secret.as_deref(), status, delay));
            if delay.is_zero() {
                Reply::Status(status)
            } else {
                Reply::Delayed(delay, status)
            }
        });
        let at = SocketAddr::from((Ipv4Addr::LOCALHOST, opts.port));
        let receiver = Receiver::start_on(&tls, at, behavior).await?;
        Ok(Listener { receiver, tls })
    }

    /// `https://127.0.0.1:<port>/hook`: a URL to create the webhook with.
    pub fn url(&self) -> String {
        self.receiver.url("/hook")
    }

    /// The variables that make a daemon (and the CLI's `test`) trust this
    /// listener and reach it on loopback.
    pub fn config_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__EXTRA_CA_FILE".to_string(),
                self.tls.ca_file.display().to_string(),
            ),
            (
                "PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS".to_string(),
                r#"["127.0.0.0/8"]"#.to_string(),
            ),
        ]
    }

    /// `config_env` as lines for an environment file or a shell.
    pub fn config_lines(&self) -> Vec<String> {
        self.config_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(&v)))
            .collect()
    }

    /// Waits until `n` requests have arrived in all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<()> {
        self.receiver.wait_for(n, timeout).await.map(|_| ())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.receiver.shutdown();
    }
}

/// `listen` itself: prints how to use it, then each delivery, until Ctrl-C.
pub async fn run(opts: Options) -> Result<()> {
    let listener = Listener::start(&opts, stdout()).await?;
    let answer = if opts.delay.is_zero() {
        format!("{}", opts.status)
    } else {
        format!("{} after {:?}", opts.status, opts.delay)
    };
    println!(
        "listening on {} (answers {answer}); certificates in {}\n",
        listener.url(),
        opts.dir.display()
    );
    println!("Give the daemon (and the CLI) these, e.g. in its environment file:\n");
    for l in listener.config_lines() {
        println!("  {l}");
    }
    println!(
        "\nand point a webhook at it: plausible-webhooks create --site <domain> --name listen --url {}",
        listener.url()
    );
    match &opts.secret {
        Some(_) => println!("Signatures are verified with the secret given.\n"),
        None => println!(
            "Pass --secret with the webhook's secret (`create` prints it) to verify signatures.\n"
        ),
    }
    println!("waiting for deliveries (Ctrl-C to stop)…");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// One request as the listener prints it: when, what, every header, the
/// body, each signature's verdict and the answer given.
pub fn report(r: &Recorded, secret: Option<&str>, status: u16, delay: Duration) -> String {
    let mut out = format!(
        "\n── {} POST {} ({:?}, {} bytes)\n",
        crate::db::timestamp::rfc3339_seconds(r.at.into()),
        r.path,
        r.version,
        r.body.len()
    );
    for (name, value) in &r.headers {
        out.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out.push_str(&format!("\n{}\n\n", String::from_utf8_lossy(&r.body)));
    match secret {
        None => out.push_str("signatures: not checked (no --secret)\n"),
        Some(secret) => {
            let (standard, legacy) = verdicts(r, secret);
            out.push_str(&format!("webhook-signature:   {standard}\n"));
            out.push_str(&format!("X-Webhook-Signature: {legacy}\n"));
        }
    }
    if delay.is_zero() {
        out.push_str(&format!("answered {status}"));
    } else {
        out.push_str(&format!("answered {status} after {delay:?}"));
    }
    out
}

/// Each signature header's verdict with `secret`, in words: `verified`, or
/// what is wrong (docs/receiving.md's rules).
fn verdicts(r: &Recorded, secret: &str) -> (String, String) {
    let standard = match (
        r.header("webhook-id"),
        r.header("webhook-timestamp")
            .and_then(|t| t.parse::<i64>().ok()),
        r.header("webhook-signature"),
    ) {
        (Some(id), Some(ts), Some(sig)) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let age = now - ts;
            if !verify_standard(secret, id, ts, &r.body, sig) {
                "DOES NOT VERIFY with the secret given".to_string()
            } else if age.abs() > TIMESTAMP_TOLERANCE_SECS {
                format!("signature matches, but webhook-timestamp is {age} s from now: a receiver refuses it (over {TIMESTAMP_TOLERANCE_SECS} s)")
            } else {
                format!("verified (v1, webhook-timestamp {age} s old)")
            }
        }
        _ => "missing (webhook-id, webhook-timestamp and webhook-signature are all needed)"
            .to_string(),
    };
    let legacy = match r.header("x-webhook-signature") {
        Some(sig) if verify_legacy(secret, &r.body, sig) => "verified (sha256)".to_string(),
        Some(_) => "DOES NOT VERIFY with the secret given".to_string(),
        None => "missing".to_string(),
    };
    (standard, legacy)
}

/// `v` as one shell word: as it is when it holds nothing the shell reads,
/// else in single quotes.
pub fn shell_quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/:._-@".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}
