//! Signing in where Plausible's own session is not at hand: with a
//! Plausible API key, or with a portal link; and signing out of the page's
//! own session. (Signed in to Plausible, a visitor signs out there.)

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode};

use super::error::WebError;
use super::view::{html, Layout, LinkPage, SignedOutPage};
use super::visitor::{client_addr, page_session, web, Action, Posted};
use super::webhooks::see_other;
use crate::admin::portal;
use crate::admin::state::Shared;
use crate::admin::web_setup::{Web, SESSION_COOKIE};

type Page = Result<Response, WebError>;

/// Whether the browser reached the page over TLS (directly, or through a
/// proxy that says so): the session cookie is then `Secure`.
fn over_tls(h: &HeaderMap, web: &Web) -> bool {
    h.get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || web.plausible_url.starts_with("https://")
}

/// The page's session cookie: HttpOnly, SameSite=Strict, on the page's
/// path only, Secure over TLS; `token` None clears it.
fn session_cookie(web: &Web, h: &HeaderMap, token: Option<&portal::Token>) -> HeaderValue {
    let (value, age) = match token {
        Some(t) => (portal::encode(t), web.session_ttl.as_secs()),
        None => (String::new(), 0),
    };
    let secure = if over_tls(h, web) { "; Secure" } else { "" };
    let c = format!(
        "{SESSION_COOKIE}={value}; Path={}; Max-Age={age}; HttpOnly; SameSite=Strict{secure}",
        web.base
    );
    HeaderValue::from_str(&c).expect("a cookie of token characters")
}

/// A database connection, or the page saying the database is away.
async fn conn(s: &Shared) -> Result<deadpool_postgres::Object, WebError> {
    s.admin
        .pool()
        .get()
        .await
        .map_err(|_| WebError::Unavailable)
}

/// To the page's home, setting (or, with None, clearing) its session cookie.
fn home_with_cookie(web: &Web, h: &HeaderMap, token: Option<&portal::Token>) -> Response {
    let mut r = see_other(&format!("{}/", web.base));
    r.headers_mut()
        .insert(SET_COOKIE, session_cookie(web, h, token));
    r
}

fn signed_out(web: &Web, status: StatusCode, error: Option<String>) -> Response {
    let chrome = web.chrome();
    html(
        status,
        SignedOutPage::new(Layout::anonymous(&chrome, "Sign in"), &chrome, error).render(),
    )
}

pub async fn form(State(s): State<Shared>) -> Page {
    Ok(signed_out(web(&s)?, StatusCode::OK, None))
}

/// Sign-in with a Plausible API key: a session of the page's own, acting
/// with the key's user's roles. Failed attempts are bounded per client.
pub async fn with_key(State(s): State<Shared>, parts: Parts, posted: Posted) -> Page {
    let web = web(&s)?;
    if !web.api_key_sign_in {
        return Err(WebError::Off);
    }
    let addr = client_addr(&parts);
    if !web.sign_ins.allowed(addr) {
        return Ok(signed_out(
            web,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed sign-ins from here; wait ten minutes and try again.".into()),
        ));
    }
    if !posted.from_here() {
        return Err(WebError::Forged);
    }
    let key = posted.get("api_key").unwrap_or("");
    let id = s
        .auth
        .api_key_id(s.admin.pool(), key)
        .await
        .map_err(|_| WebError::Unavailable)?;
    let Some(id) = id else {
        web.sign_ins.failed(addr);
        return Ok(signed_out(
            web,
            StatusCode::UNAUTHORIZED,
            Some("That is not a current Plausible API key. Copy it again from Plausible's account settings (API keys).".into()),
        ));
    };
    let token = portal::start_with_key(&**conn(&s).await?, id, web.session_ttl).await?;
    Ok(home_with_cookie(web, &parts.headers, Some(&token)))
}

/// Ends the page's own session (a Plausible session ends in Plausible).
pub async fn sign_out(State(s): State<Shared>, parts: Parts, _: Action) -> Page {
    let web = web(&s)?;
    if let Some(token) = page_session(&parts.headers) {
        portal::end(&**conn(&s).await?, &token).await?;
    }
    Ok(home_with_cookie(web, &parts.headers, None))
}

/// A portal link, opened: it signs in once. The page that follows is
/// loaded by a click (same-site), so the SameSite=Strict cookie is sent.
pub async fn link(State(s): State<Shared>, parts: Parts, Path(token): Path<String>) -> Page {
    let web = web(&s)?;
    let gone = || {
        signed_out(
            web,
            StatusCode::UNAUTHORIZED,
            Some("That link has been used or has expired: a link signs in once. Ask whoever sent it for a new one.".into()),
        )
    };
    let Some(token) = portal::decode(&token) else {
        return Ok(gone());
    };
    let db = s
        .admin
        .pool()
        .get()
        .await
        .map_err(|_| WebError::Unavailable)?;
    let Some(session) = portal::redeem(&db, &token, web.session_ttl).await? else {
        return Ok(gone());
    };
    let chrome = web.chrome();
    let mut r = html(
        StatusCode::OK,
        LinkPage {
            l: Layout::anonymous(&chrome, "Signed in"),
            next: format!("{}/", web.base),
        }
        .render(),
    );
    r.headers_mut().insert(
        SET_COOKIE,
        session_cookie(web, &parts.headers, Some(&session)),
    );
    Ok(r)
}
