//! The delivery pipeline's settings, derived from the config in one place:
//! the daemon runs every part (admission, claimer, worker, completer); the
//! test send runs the worker and the completer on one delivery. Either way
//! a delivery is claimed, sent and recorded by the same rules.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::client::{ClientConfig, HttpClient};
use super::guard::AddressGuard;
use super::retry::RetryPolicy;
use super::worker::Worker;
use crate::config::Config;
use crate::queue::admission::{AdmissionConfig, Limits};
use crate::queue::claimer::ClaimerConfig;
use crate::queue::completer::CompleterConfig;

#[derive(Clone)]
pub struct Pipeline {
    /// The lease holder's name the claimer and the completer share.
    pub instance: String,
    /// The process's one address guard (also the admin's, for URLs).
    pub guard: Arc<AddressGuard>,
    pub client: ClientConfig,
    pub policy: RetryPolicy,
    pub response_log_max: usize,
    /// How long a claim holds a delivery.
    pub lease: Duration,
    pub admission: AdmissionConfig,
    pub claimer: ClaimerConfig,
    pub completer: CompleterConfig,
    /// `plausible.base_url`: the dashboard chat messages link.
    pub plausible_base_url: String,
}

impl Pipeline {
    pub fn from_config(cfg: &Config, instance: String, guard: Arc<AddressGuard>) -> Self {
        let d = &cfg.delivery;
        Self {
            client: ClientConfig::new(cfg, guard.clone()),
            guard,
            policy: retry_policy(cfg),
            response_log_max: d.response_log_max_bytes,
            lease: d.lease(),
            admission: AdmissionConfig {
                max_in_flight: d.max_in_flight,
                max_bytes_in_flight: d.max_bytes_in_flight,
                defaults: Limits {
                    max_concurrency: d.default_max_concurrency,
                    rate_per_sec: d.default_rate_limit_per_sec,
                },
            },
            claimer: ClaimerConfig {
                instance: instance.clone(),
                lease: d.lease(),
                max_in_flight: d.max_in_flight,
                batch_max: cfg.queue.claim_batch_max,
                poll_interval: Duration::from_millis(cfg.queue.poll_interval_ms),
            },
            completer: CompleterConfig {
                instance: instance.clone(),
                batch_max: cfg.queue.complete_batch_max,
                in_flight: cfg.queue.complete_in_flight,
                disable_after_failures: cfg.health.disable_after_failures.min(i32::MAX as u32)
                    as i32,
                disable_after: Duration::from_secs(cfg.health.disable_after_secs),
            },
            instance,
            plausible_base_url: cfg.plausible.base_url.trim().to_string(),
        }
    }

    /// The worker, with its own HTTPS client. `stopping` is cancelled at
    /// shutdown: deliveries not yet sent then go back to the queue.
    pub fn worker(&self, stopping: CancellationToken) -> Result<Worker> {
        Ok(Worker {
            client: HttpClient::new(self.client.clone())?,
            policy: self.policy.clone(),
            response_log_max: self.response_log_max,
            keys: Default::default(),
            key_pairs: Default::default(),
            stopping,
            plausible_base_url: self.plausible_base_url.clone(),
        })
    }
}

/// The retry schedule and its limits, as configured.
pub fn retry_policy(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        schedule: cfg.delivery.retry_schedule_secs.clone(),
        jitter: cfg.delivery.retry_jitter,
        retry_after_cap: Duration::from_secs(u64::from(cfg.delivery.retry_after_cap_secs)),
    }
}
