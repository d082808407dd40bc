//! Portal links: a site's owner or admin (or an operator) hands out a link
//! that signs its holder in to that one site's webhooks on the web page,
//! once, for someone without a Plausible account on this host.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::admin::access::{self, Access, Principal};
use crate::admin::core::Admin;
use crate::admin::error::OpResult;
use crate::admin::inputs::{given, NewPortalLink, SiteRef};
use crate::admin::portal;
use crate::admin::validate::{Checks, Invalid, Rule};

/// How long a link may wait to be opened: by default, and at most.
pub const LINK_TTL_DEFAULT_SECS: i64 = 3600;
pub const LINK_TTL_MAX_SECS: i64 = 7 * 86_400;

/// A link handed out: shown once (the daemon keeps only its hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortalLink {
    pub id: Uuid,
    /// The site's domain.
    pub site_id: String,
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The link: the web page's address (`web.public_url`, else
    /// `plausible.base_url`, with `web.base_path`) and the token.
    pub url: String,
}

impl Admin {
    /// A one-use link to `site`'s webhooks with `role`, for `who` who
    /// administers the site (owner, admin, operator).
    pub async fn mint_portal_link(
        &self,
        who: &Principal,
        site: &SiteRef,
        l: NewPortalLink,
    ) -> OpResult<PortalLink> {
        let mut c = Checks::default();
        let role = given(&l.role).unwrap_or("viewer").to_string();
        if Access::of_link_role(&role).is_none() {
            c.refuse(Invalid::new(
                "role",
                Rule::Syntax,
                format!(
                    "`{}` is not a link's role; use viewer or editor",
                    access::quote(&role)
                ),
            ));
        }
        let ttl = match &l.ttl_secs {
            None => Some(LINK_TTL_DEFAULT_SECS),
            Some(t) => c.check(t.seconds("ttl_secs").and_then(|s| {
                if (60..=LINK_TTL_MAX_SECS).contains(&s) {
                    Ok(s)
                } else {
                    Err(Invalid::new(
                        "ttl_secs",
                        Rule::OutOfRange,
                        format!(
                            "must be between 60 s and {LINK_TTL_MAX_SECS} s (7 days), got {s} s"
                        ),
                    ))
                }
            })),
        };
        c.done()?;
        let db_ = self.db().await?;
        let s = access::site(&db_, who, site, Access::Administer).await?;
        let by = match who {
            Principal::Operator => "operator".to_string(),
            Principal::User { user_id, .. } => format!("user {user_id}"),
            Principal::Link { link_id, .. } => format!("link {link_id}"),
        };
        let ttl = Duration::from_secs(ttl.expect("checked") as u64);
        let m = portal::mint(&db_, s.id, &role, ttl, &by).await?;
        Ok(PortalLink {
            id: m.id,
            site_id: s.domain,
            role,
            expires_at: m.expires_at,
            url: format!("{}/link/{}", self.web_url(), portal::encode(&m.token)),
        })
    }
}
