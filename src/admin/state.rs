//! What the admin listener's routes share. The daemon builds what the admin
//! cannot build itself (the LISTEN connection's state, the analytics check,
//! the address guard, the test sender) and hands it over in [`Handed`]; the
//! admin never imports the daemon.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::auth::Authenticator;
use super::core::Admin;
use super::test_sender::TestSender;
use super::web_setup::Web;
use crate::config::Config;
use crate::delivery::guard::AddressGuard;
use crate::triggers::source::SourceStatus;

/// The admin's own connections, apart from the delivery engine's pool, so
/// no burst of API calls or test sends can stall deliveries.
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
    /// Sends test events through the daemon's own client.
    pub test_sender: TestSender,
}

/// What the routes share: the core every face calls, who is calling, and
/// the daemon's health for `/readyz`.
pub struct AdminState {
    pub admin: Admin,
    pub auth: Authenticator,
    pub listener_up: watch::Receiver<bool>,
    pub analytics: Option<watch::Receiver<SourceStatus>>,
    /// Set when the daemon starts draining: `/readyz` then answers 503.
    pub stopping: AtomicBool,
    /// The web page, when `web.enabled`.
    pub web: Option<Web>,
}

impl AdminState {
    pub fn new(pool: Pool, handed: Handed, cfg: &Config) -> Result<AdminState> {
        Ok(AdminState {
            admin: Admin::new(pool, handed.guard, handed.test_sender, cfg)?,
            auth: Authenticator::new(&cfg.admin),
            listener_up: handed.listener_up,
            analytics: handed.analytics,
            stopping: AtomicBool::new(false),
            web: Web::from_config(cfg)?,
        })
    }

    /// The admin's connections (for `/readyz` and `/metrics`).
    pub fn pool(&self) -> &Pool {
        self.admin.pool()
    }
}

/// What routes are given.
pub type Shared = Arc<AdminState>;

/// The address a request's connection came from (behind a proxy, the
/// proxy's): the listener puts it in each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);
