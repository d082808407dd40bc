//! What the web page (`super::web`) needs beyond the core, built from the
//! configuration (and held by the listener's state, below the page): its
//! base path, Plausible's cookie verifier, the key of its CSRF tokens, how
//! long its own sign-ins last, and the bound on failed sign-ins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;

use crate::admin::plausible_session::CookieVerifier;
use crate::config::Config;

/// The page's own session cookie (an API key's or a portal link's sign-in).
pub const SESSION_COOKIE: &str = "plausible_webhooks_session";

/// What every page's frame needs, the same for every visitor.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub base: String,
    /// Plausible's address (empty: this host).
    pub plausible_url: String,
    pub api_key_sign_in: bool,
}

impl Chrome {
    /// Plausible's login, returning here after.
    pub fn login_url(&self) -> String {
        let back: String =
            form_urlencoded::byte_serialize(format!("{}/", self.base).as_bytes()).collect();
        format!("{}/login?return_to={back}", self.plausible_url)
    }
}

/// What the page needs beyond the core, built from the configuration.
pub struct Web {
    /// Where the page is served (`/webhooks`).
    pub base: String,
    /// Plausible's address (its login page is linked); empty: this host.
    pub plausible_url: String,
    pub cookies: CookieVerifier,
    csrf: hmac::Key,
    pub session_ttl: Duration,
    pub api_key_sign_in: bool,
    pub sign_ins: SignInLimit,
}

impl Web {
    /// The page, when `web.enabled` (the configuration has checked that
    /// `SECRET_KEY_BASE` is set and long enough).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Web>> {
        let w = &cfg.web;
        if !w.enabled {
            return Ok(None);
        }
        let Some(skb) = &cfg.admin.secret_key_base else {
            anyhow::bail!("web.enabled: SECRET_KEY_BASE is not set");
        };
        let cookies = CookieVerifier::new(&skb.0, &w.session_cookie, &w.signing_salt)
            .map_err(anyhow::Error::msg)?;
        // The page's own signatures (CSRF tokens) under a key of their own,
        // derived from SECRET_KEY_BASE so every instance agrees on it.
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, skb.0.as_bytes()),
            b"plausible-webhooks web page csrf",
        );
        Ok(Some(Web {
            base: w.base_path.clone(),
            plausible_url: cfg
                .plausible
                .base_url
                .trim()
                .trim_end_matches('/')
                .to_string(),
            cookies,
            csrf: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            session_ttl: Duration::from_secs(u64::from(w.session_hours) * 3600),
            api_key_sign_in: w.api_key_sign_in,
            sign_ins: SignInLimit::default(),
        }))
    }

    pub fn chrome(&self) -> Chrome {
        Chrome {
            base: self.base.clone(),
            plausible_url: self.plausible_url.clone(),
            api_key_sign_in: self.api_key_sign_in,
        }
    }

    /// The CSRF token of a sign-in whose secret part is `binding`.
    pub fn csrf_token(&self, binding: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(hmac::sign(&self.csrf, binding).as_ref())
    }

    /// Whether `token` is the CSRF token of `binding` (constant time).
    pub fn csrf_ok(&self, binding: &[u8], token: &str) -> bool {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .is_ok_and(|t| hmac::verify(&self.csrf, binding, &t).is_ok())
    }
}

/// Failed sign-ins (API keys) tolerated per client address, and how long
/// they are remembered. Behind a reverse proxy every client is the proxy's
/// address: the bound then holds for all together.
pub const SIGN_IN_FAILURES: u32 = 10;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered at most (the oldest are forgotten beyond it).
const SIGN_IN_ADDRESSES: usize = 10_000;

/// Counts failed sign-ins per client address.
#[derive(Default)]
pub struct SignInLimit {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl SignInLimit {
    /// Whether `addr` may try to sign in now.
    pub fn allowed(&self, addr: IpAddr) -> bool {
        let m = self.failures.lock().expect("sign-in counts");
        m.get(&addr)
            .is_none_or(|(n, since)| *n < SIGN_IN_FAILURES || since.elapsed() > SIGN_IN_WINDOW)
    }

    /// Counts a failed sign-in from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let mut m = self.failures.lock().expect("sign-in counts");
        if m.len() >= SIGN_IN_ADDRESSES {
            m.retain(|_, (_, since)| since.elapsed() <= SIGN_IN_WINDOW);
        }
        let e = m.entry(addr).or_insert((0, Instant::now()));
        if e.1.elapsed() > SIGN_IN_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}
