//! What the admin's handlers share, and the response shapes every handler
//! writes. The daemon builds what the admin cannot build itself (the LISTEN
//! connection's state, the analytics check, the address guard, the test
//! sender) and hands it
//! over in `Handed`: the admin never imports the daemon.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use deadpool_postgres::Pool;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::watch;

use super::auth::Authenticator;
use super::ops::TestSender;
use super::test_slots::TestSlots;
use crate::config::Config;
use crate::delivery::guard::AddressGuard;
use crate::triggers::source::SourceStatus;

/// The admin API's own connections, apart from the delivery engine's pool,
/// so no burst of API calls or test sends can stall deliveries.
pub const ADMIN_POOL_SIZE: usize = 4;

/// How long a check of `/readyz` or a scrape may wait for the database.
pub const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the daemon hands the admin listener.
pub struct Handed {
    /// True while the daemon's LISTEN connection is up.
    pub listener_up: watch::Receiver<bool>,
    /// The daemon's analytics source check (None with triggers off).
    pub analytics: Option<watch::Receiver<SourceStatus>>,
    /// The daemon's address guard: webhook URLs are checked by the rules
    /// deliveries are sent by.
    pub guard: Arc<AddressGuard>,
    /// Sends `POST /api/webhooks/:id/test` through the daemon's own client.
    pub test_sender: TestSender,
}

/// What the handlers share.
pub struct AdminState {
    pub pool: Pool,
    pub listener_up: watch::Receiver<bool>,
    pub analytics: Option<watch::Receiver<SourceStatus>>,
    /// Set when the daemon starts draining: `/readyz` then answers 503.
    pub stopping: AtomicBool,
    pub auth: Authenticator,
    pub cfg: Config,
    pub guard: Arc<AddressGuard>,
    pub test_sender: TestSender,
    /// Test sends in flight, bounded per user, per site and in all.
    pub test_slots: TestSlots,
}

impl AdminState {
    pub fn new(pool: Pool, handed: Handed, cfg: &Config) -> Result<AdminState> {
        Ok(AdminState {
            pool,
            listener_up: handed.listener_up,
            analytics: handed.analytics,
            stopping: AtomicBool::new(false),
            auth: Authenticator::new(&cfg.admin),
            cfg: cfg.clone(),
            guard: handed.guard,
            test_sender: handed.test_sender,
            test_slots: TestSlots::new(Default::default())?,
        })
    }
}

pub type HttpResponse = Response<Full<Bytes>>;

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `{"error": {"code": ..., "message": ...}}` with `status`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}
