//! The visitor's sites, and one site's webhooks (with a portal link to
//! hand out, for its owners and admins).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use hyper::StatusCode;

use super::error::WebError;
use super::view::{html, HomePage, LinkShown, SitePage, WebhookRow};
use super::visitor::{web, Action, Visitor};
use crate::admin::access::Access;
use crate::admin::error::OpError;
use crate::admin::inputs::{NewPortalLink, SiteRef, WebhookQuery};
use crate::admin::state::Shared;

type Page = Result<Response, WebError>;

pub async fn home(State(s): State<Shared>, v: Visitor) -> Page {
    let web = web(&s)?;
    let sites = s.admin.list_sites(&v.who).await?.sites;
    Ok(html(
        StatusCode::OK,
        HomePage {
            l: v.layout(web, "Your sites"),
            sites,
        }
        .render(),
    ))
}

/// A site's page: its webhooks (deleted ones apart), what the visitor may
/// do, and for owners and admins the portal-link form.
async fn site_page(
    s: &Shared,
    v: &Visitor,
    site: &SiteRef,
    link: Result<Option<LinkShown>, String>,
) -> Page {
    let web = web(s)?;
    let shown = s.admin.show_site(&v.who, site, Access::Read).await?;
    // One page holds them all: a site has at most `limits.max_webhooks_per_site`
    // live ones (and the page lists the deleted ones among them).
    let q = WebhookQuery {
        site_id: Some(SiteRef::new(&shown.plausible_site_id.to_string())),
        include_deleted: true,
        limit: Some(crate::admin::inputs::Num::Number(
            crate::admin::ops::PAGE_MAX,
        )),
        ..Default::default()
    };
    let all = s.admin.list_webhooks(&v.who, &q).await?.webhooks;
    let (deleted, live): (Vec<_>, Vec<_>) = all.iter().partition(|w| w.deleted_at.is_some());
    let (link, link_error) = match link {
        Ok(l) => (l, None),
        Err(e) => (None, Some(e)),
    };
    Ok(html(
        StatusCode::OK,
        SitePage {
            l: v.layout(web, &shown.site_id),
            can_manage: shown.can_manage(),
            can_administer: shown.can_administer(),
            access: shown.access.clone(),
            site: shown.site_id,
            webhooks: live.into_iter().map(WebhookRow::from).collect(),
            deleted: deleted.into_iter().map(WebhookRow::from).collect(),
            link,
            link_error,
        }
        .render(),
    ))
}

pub async fn site(State(s): State<Shared>, v: Visitor, Path(site): Path<String>) -> Page {
    site_page(&s, &v, &SiteRef::new(&site), Ok(None)).await
}

/// Hands out a portal link to the site; the page shows it once.
pub async fn mint_link(
    State(s): State<Shared>,
    Path(site): Path<String>,
    Action { v, form: posted }: Action,
) -> Page {
    let site = SiteRef::new(&site);
    let input: NewPortalLink = posted.parse(&[], &[])?;
    let link = match s.admin.mint_portal_link(&v.who, &site, input).await {
        Ok(k) => Ok(Some(LinkShown::from(&k))),
        Err(OpError::Invalid(i)) => Err(i.first().message.clone()),
        Err(e) => return Err(e.into()),
    };
    site_page(&s, &v, &site, link).await
}
