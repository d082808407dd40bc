//! Who is at the page: the extractor every page takes. A visitor is signed
//! in by the page's own session cookie (an API key's or a portal link's
//! sign-in) or, failing that, by Plausible's session cookie; otherwise the
//! page says so and shows how to sign in. Also the form a POST carries,
//! checked for its CSRF token and origin before it is parsed.

use std::net::IpAddr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use hyper::header::{COOKIE, HOST, ORIGIN};
use hyper::http::request::Parts;
use hyper::HeaderMap;
use serde::de::DeserializeOwned;

use super::error::WebError;
use super::view::Layout;
use crate::admin::access::Principal;
use crate::admin::body;
use crate::admin::inputs::{from_form, InputError};
use crate::admin::state::{Peer, Shared};
use crate::admin::validate::Rule;
use crate::admin::web_setup::{Web, SESSION_COOKIE};
use crate::admin::{plausible_session, portal};

/// How the visitor signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedInBy {
    /// Plausible's own session: signing out is Plausible's.
    Plausible,
    /// The page's own session (an API key or a portal link): signs out here.
    Page,
}

/// A signed-in visitor.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub who: Principal,
    /// Their email, or what their link grants, for the page's header.
    pub label: String,
    pub by: SignedInBy,
    /// The CSRF token every form of theirs carries.
    pub csrf: String,
    /// The sign-in's secret part, which the CSRF token is bound to.
    binding: Vec<u8>,
}

impl Visitor {
    /// Whether the core lets this visitor change the webhooks of site
    /// `site_id` (what the page offers; the core decides again on a POST).
    pub async fn manages(&self, state: &Shared, site_id: i64) -> Result<bool, WebError> {
        let site = crate::admin::inputs::SiteRef::new(&site_id.to_string());
        Ok(state
            .admin
            .show_site(&self.who, &site, crate::admin::access::Access::Read)
            .await?
            .can_manage())
    }

    /// A page's frame for this visitor.
    pub fn layout(&self, web: &Web, title: &str) -> Layout {
        Layout {
            base: web.base.clone(),
            title: title.to_string(),
            who: Some(self.label.clone()),
            page_session: self.by == SignedInBy::Page,
            csrf: self.csrf.clone(),
            plausible_url: web.plausible_url.clone(),
        }
    }
}

/// The page's setup, or 404 when the page is off.
pub fn web(state: &Shared) -> Result<&Web, WebError> {
    state.web.as_ref().ok_or(WebError::Off)
}

/// The values of every cookie header.
fn cookie_headers(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok())
}

/// The page's own session token, when the browser holds one.
pub fn page_session(h: &HeaderMap) -> Option<portal::Token> {
    cookie_headers(h)
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == SESSION_COOKIE)
        .find_map(|c| portal::decode(c.value()))
}

impl FromRequestParts<Shared> for Visitor {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, WebError> {
        let web = web(state)?;
        let db = state
            .admin
            .pool()
            .get()
            .await
            .map_err(|_| WebError::Unavailable)?;
        if let Some(token) = page_session(&parts.headers) {
            if let Some(s) = portal::session(&db, &token).await.map_err(WebError::from)? {
                return Ok(Visitor {
                    csrf: web.csrf_token(&token),
                    binding: token.to_vec(),
                    who: s.who,
                    label: s.label,
                    by: SignedInBy::Page,
                });
            }
        }
        let tokens = web.cookies.tokens(cookie_headers(&parts.headers));
        let signed = plausible_session::signed_in(&db, &tokens)
            .await
            .map_err(|e| {
                WebError::from(crate::admin::error::db_error(
                    e,
                    "reading Plausible's session",
                ))
            })?;
        match signed {
            Some(s) => Ok(Visitor {
                csrf: web.csrf_token(&s.token),
                binding: s.token.to_vec(),
                who: Principal::session(s.user_id),
                label: s.email,
                by: SignedInBy::Plausible,
            }),
            None => Err(WebError::SignedOut),
        }
    }
}

/// A form a signed-in visitor posted from the page: its CSRF token and
/// origin checked before the handler sees it.
pub struct Action {
    pub v: Visitor,
    pub form: Posted,
}

impl FromRequest<Shared> for Action {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, WebError> {
        let (mut parts, body) = req.into_parts();
        let v = Visitor::from_request_parts(&mut parts, state).await?;
        let form = Posted::from_request(Request::from_parts(parts, body), state).await?;
        form.checked(web(state)?, &v)?;
        Ok(Action { v, form })
    }
}

/// A webhook id from the path: one that is not an id is not found.
pub fn id_of(raw: &str) -> Result<uuid::Uuid, WebError> {
    uuid::Uuid::parse_str(raw).map_err(|_| WebError::Op(crate::admin::access::no_webhook(raw)))
}

/// The webhook of the path (`{id}`).
pub struct WebhookPath(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for WebhookPath {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, WebError> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, s)
            .await
            .map_err(|_| WebError::BadRequest("no webhook in the path".into()))?;
        let raw = params
            .iter()
            .find(|(k, _)| *k == "id")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        id_of(&raw).map(WebhookPath)
    }
}

/// The client's address (the listener's peer: behind a proxy, the proxy).
pub fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<Peer>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// A form a browser posted: its fields, and whether its origin is this
/// page's. Parsed into an input only with the visitor's CSRF token.
pub struct Posted {
    fields: Vec<(String, String)>,
    same_origin: bool,
}

/// A POST another site made the browser send: `Origin` names another host,
/// or `Sec-Fetch-Site` says it is cross-site. Absent headers are not held
/// against a request (the CSRF token still is).
fn from_elsewhere(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    let Some(origin) = h.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = h
        .get("x-forwarded-host")
        .or_else(|| h.get(HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = url::Url::parse(origin)
        .ok()
        .map(|u| match (u.host_str(), u.port()) {
            (Some(hst), Some(p)) => format!("{hst}:{p}"),
            (Some(hst), None) => hst.to_string(),
            _ => String::new(),
        });
    origin_host.as_deref() != Some(host)
}

impl<S: Send + Sync> FromRequest<S> for Posted {
    type Rejection = WebError;

    async fn from_request(req: Request, _: &S) -> Result<Self, WebError> {
        let (parts, b) = req.into_parts();
        let same_origin = !from_elsewhere(&parts.headers);
        let bytes: Bytes = body::read(&parts.headers, b)
            .await
            .map_err(|e| WebError::BadRequest(e.message()))?;
        Ok(Posted {
            fields: form_urlencoded::parse(&bytes).into_owned().collect(),
            same_origin,
        })
    }
}

impl Posted {
    /// The form as input `T`, when it came from this page with `v`'s CSRF
    /// token; the token's own field (`_csrf`) is not part of the input.
    pub fn input<T: DeserializeOwned>(&self, web: &Web, v: &Visitor) -> Result<T, WebError> {
        self.checked(web, v)?;
        self.parse(&[], &[])
    }

    /// Whether the form came from this page (by its `Origin` and
    /// `Sec-Fetch-Site`): what is checked of a sign-in, which has no token yet.
    pub fn from_here(&self) -> bool {
        self.same_origin
    }

    /// Refuses a form not from this page or without `v`'s token.
    pub fn checked(&self, web: &Web, v: &Visitor) -> Result<(), WebError> {
        let token = self.get("_csrf").unwrap_or("");
        if !self.same_origin || !web.csrf_ok(&v.binding, token) {
            return Err(WebError::Forged);
        }
        Ok(())
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of field `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The fields but `_csrf` and `skip`, as input `T` (parsed as any
    /// face parses it: `inputs::from_form`). A field left blank is not
    /// given, but for those in `blank_is_default`: a setting's blank field
    /// puts it back to the daemon's default.
    pub fn parse<T: DeserializeOwned>(
        &self,
        skip: &[&str],
        blank_is_default: &[&str],
    ) -> Result<T, WebError> {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.fields {
            if k == "_csrf" || skip.contains(&k.as_str()) {
                continue;
            }
            match (v.trim().is_empty(), blank_is_default.contains(&k.as_str())) {
                (false, _) => {
                    out.append_pair(k, v);
                }
                (true, true) => {
                    out.append_pair(k, "default");
                }
                (true, false) => {}
            }
        }
        from_form(out.finish().as_bytes(), Rule::UnknownField).map_err(|e| match e {
            InputError::NotJson(m) => WebError::BadRequest(m),
            InputError::Invalid(i) => WebError::Op(i.into()),
        })
    }
}
