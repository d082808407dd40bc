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
        Self::build(pipeline)
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
