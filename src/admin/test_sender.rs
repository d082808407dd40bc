//! What sends a test event: the daemon's own pipeline (client, address
//! guard, TLS, timeouts, signing, the completer's rules) with one attempt
//! and no retry. The daemon builds one beside its pipeline and hands it to
//! the admin; the CLI builds its own from the configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::delivery::guard::{AddressGuard, Resolve};
use crate::delivery::pipeline::Pipeline;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::worker::Worker;
use crate::queue::completer::CompleterConfig;

/// The longest a test send waits for the receiver, whatever
/// `delivery.request_timeout_ms` says: a person (or a script) waits on the
/// answer, and a test in flight holds one of the caller's test slots
/// (see test_slots.rs). Real deliveries keep the configured timeout.
pub const TEST_REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(15);

/// What it takes to send a test event: the daemon's own pipeline (guard,
/// TLS, timeouts, signing, the completer's rules) with one attempt and no
/// retry, the request timeout capped at [`TEST_REQUEST_TIMEOUT_MAX`].
pub struct TestSender {
    pub(crate) worker: Worker,
    pub(crate) completer: CompleterConfig,
    pub(crate) lease: Duration,
    /// Set when the sender is this process's own (the CLI's) rather than
    /// the daemon's: its configuration may not be the daemon's.
    pub(crate) own: Option<OwnConfig>,
}

/// The configuration a process that runs no daemon sends tests with. Its
/// address guard may refuse what the daemon's allows (another
/// `delivery.allow_cidrs`, an environment file not read): such a refusal
/// is this process's, so the test is not sent, not recorded and does not
/// count against the webhook's health; the refusal names the configuration.
pub(crate) struct OwnConfig {
    guard: Arc<AddressGuard>,
    resolver: Arc<dyn Resolve>,
    /// Where it came from, in words.
    source: String,
    allow_cidrs: Vec<String>,
}

impl OwnConfig {
    /// Why this configuration's guard refuses the URL's host (after DNS for
    /// a name, as a delivery would), or None. A name that does not resolve
    /// is left to the send, which reports it.
    pub(crate) async fn refusal(&self, url: &str) -> Option<String> {
        let url = url::Url::parse(url).ok()?;
        let host = url.host()?;
        if let Err(why) = self.guard.check_host(&host) {
            return Some(why.to_string());
        }
        let url::Host::Domain(name) = host else {
            return None;
        };
        let ips = self.resolver.resolve(name.to_string()).await.ok()?;
        ips.into_iter()
            .find_map(|ip| self.guard.check(ip).err())
            .map(|why| format!("{name} resolves to {why}"))
    }

    /// The refusal, saying plainly whose configuration refused and that
    /// nothing was sent or counted.
    pub(crate) fn refused(&self, why: &str) -> String {
        format!(
            "not sent: this command's configuration refuses the webhook's address: {why}. \
             This command read {} (delivery.allow_cidrs = {:?}); the daemon sends with its own \
             (its config file and environment file, e.g. /etc/plausible-webhooks/env), which may \
             allow it: run `test` with the same (`set -a; . /etc/plausible-webhooks/env; set +a`), \
             or from the admin API or web page, which the daemon serves. Nothing was sent or \
             recorded; the webhook's health is unchanged",
            self.source, self.allow_cidrs
        )
    }
}

impl TestSender {
    /// The test sender of a process that runs no daemon (the CLI), with its
    /// own guard. `resolver` replaces the system DNS resolver (tests only).
    pub fn from_config(cfg: &Config, resolver: Option<Arc<dyn Resolve>>) -> anyhow::Result<Self> {
        let instance = format!("test:{}", crate::queue::instance_name());
        let mut pipeline =
            Pipeline::from_config(cfg, instance, Arc::new(AddressGuard::from_config(cfg)?));
        if let Some(r) = resolver {
            pipeline.client.resolver = r;
        }
        let own = OwnConfig {
            guard: pipeline.client.guard.clone(),
            resolver: pipeline.client.resolver.clone(),
            source: match &cfg.file {
                Some(f) => format!("{} and its environment", f.display()),
                None => "no config file, only its environment".to_string(),
            },
            allow_cidrs: cfg.delivery.allow_cidrs.clone(),
        };
        let mut sender = Self::build(pipeline)?;
        sender.own = Some(own);
        Ok(sender)
    }

    /// The test sender beside a running pipeline: the same client settings
    /// and guard, under a lease holder's name of its own.
    pub fn new(pipeline: &Pipeline) -> anyhow::Result<Self> {
        let mut pipeline = pipeline.clone();
        pipeline.completer.instance = format!("test:{}", pipeline.instance);
        Self::build(pipeline)
    }

    fn build(mut p: Pipeline) -> anyhow::Result<Self> {
        let cc = &mut p.client;
        cc.request_timeout = cc.request_timeout.min(TEST_REQUEST_TIMEOUT_MAX);
        cc.connect_timeout = cc.connect_timeout.min(cc.request_timeout);
        // One attempt: the operator sees the result now.
        p.policy = RetryPolicy {
            schedule: Vec::new(),
            jitter: 0.0,
            retry_after_cap: Duration::ZERO,
        };
        p.completer.batch_max = 1;
        Ok(Self {
            // Never stopped: a test is sent once it is claimed.
            worker: p.worker(tokio_util::sync::CancellationToken::new())?,
            completer: p.completer,
            lease: p.lease,
            own: None,
        })
    }

    /// How long a test waits for the receiver at most.
    pub fn timeout(&self) -> Duration {
        self.worker.client.request_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_waits_at_most_its_own_bound() {
        let env: std::collections::BTreeMap<String, String> =
            [("DATABASE_URL".to_string(), "postgres://u@h/db".to_string())].into();
        let cfg = |toml: &str| Config::from_parts(toml, &env).unwrap();
        let long = cfg("[delivery]\nrequest_timeout_ms = 120000\nlease_secs = 180\n");
        assert_eq!(
            TestSender::from_config(&long, None).unwrap().timeout(),
            TEST_REQUEST_TIMEOUT_MAX
        );
        let short = cfg("[delivery]\nrequest_timeout_ms = 3000\nconnect_timeout_ms = 1000\n");
        assert_eq!(
            TestSender::from_config(&short, None).unwrap().timeout(),
            Duration::from_secs(3)
        );
    }
}
