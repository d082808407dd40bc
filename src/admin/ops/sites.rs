//! Sites as a caller sees them: the ones they may read, with how their
//! webhooks fare, and a site's Plausible goals (what goal triggers pick).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::admin::access::{self, Access, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpResult};
use crate::admin::inputs::SiteRef;

/// A site the caller may read, with its webhooks at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteView {
    /// The site's domain (docs/api.md#names).
    pub site_id: String,
    pub plausible_site_id: i64,
    /// What the caller may do there: read, manage, administer.
    pub access: String,
    #[serde(skip)]
    level: Access,
    /// Webhooks, deleted ones left out.
    pub webhooks: i64,
    pub failing: i64,
    pub disabled: i64,
}

/// `{"sites": [...]}`: `GET /api/sites`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteList {
    pub sites: Vec<SiteView>,
}

/// A goal of a site, as Plausible defines it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GoalView {
    pub id: i64,
    pub display_name: String,
    /// event, page or scroll.
    pub kind: String,
    /// The event name (event goals) or page path (page and scroll goals).
    pub matches: String,
    /// Properties an event must carry to count (`custom_props`).
    #[schema(value_type = Object)]
    pub custom_props: Value,
}

/// `{"goals": [...]}`: `GET /api/sites/:site/goals`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GoalList {
    pub site_id: String,
    pub goals: Vec<GoalView>,
}

impl SiteView {
    /// The caller may change the site's webhooks (editor and above).
    pub fn can_manage(&self) -> bool {
        self.level >= Access::Manage
    }
    /// The caller may hand out portal links to it (owner, admin).
    pub fn can_administer(&self) -> bool {
        self.level >= Access::Administer
    }
}

pub fn access_name(a: Access) -> &'static str {
    match a {
        Access::Administer => "administer",
        Access::Manage => "manage",
        Access::Read => "read",
        Access::None => "none",
    }
}

impl Admin {
    /// The sites `who` may read, by domain, with each one's access and its
    /// webhooks' health.
    pub async fn list_sites(&self, who: &Principal) -> OpResult<SiteList> {
        let db_ = self.db().await?;
        let accesses = access::site_accesses(&db_, who).await?;
        let readable: Option<Vec<i64>> = accesses.as_ref().map(|m| m.keys().copied().collect());
        let rows = db(
            db_.query(
                "SELECT s.id, s.domain,
                        count(w.id) FILTER (WHERE w.deleted_at IS NULL),
                        count(w.id) FILTER (WHERE w.deleted_at IS NULL AND w.enabled AND w.consecutive_failures > 0),
                        count(w.id) FILTER (WHERE w.deleted_at IS NULL AND NOT w.enabled)
                 FROM sites s LEFT JOIN webhooks w ON w.site_id = s.id
                 WHERE $1::bigint[] IS NULL OR s.id = ANY($1)
                 GROUP BY s.id, s.domain ORDER BY s.domain",
                &[&readable],
            )
            .await,
            "listing sites",
        )?;
        let mut sites = Vec::with_capacity(rows.len());
        for r in rows {
            // The caller's role per site, by the rule every operation uses.
            let access = match &accesses {
                None => Access::Administer,
                Some(m) => m.get(&r.get::<_, i64>(0)).copied().unwrap_or(Access::None),
            };
            sites.push(SiteView {
                site_id: r.get(1),
                plausible_site_id: r.get(0),
                access: access_name(access).into(),
                level: access,
                webhooks: r.get(2),
                failing: r.get(3),
                disabled: r.get(4),
            });
        }
        Ok(SiteList { sites })
    }

    /// One site, when `who` may do `need` there, with what they may do.
    pub async fn show_site(
        &self,
        who: &Principal,
        site: &SiteRef,
        need: Access,
    ) -> OpResult<SiteView> {
        let db_ = self.db().await?;
        let s = access::site(&db_, who, site, need).await?;
        let r = db(
            db_.query_one(
                "SELECT count(*) FILTER (WHERE deleted_at IS NULL),
                        count(*) FILTER (WHERE deleted_at IS NULL AND enabled AND consecutive_failures > 0),
                        count(*) FILTER (WHERE deleted_at IS NULL AND NOT enabled)
                 FROM webhooks WHERE site_id = $1",
                &[&s.id],
            )
            .await,
            "counting the site's webhooks",
        )?;
        Ok(SiteView {
            site_id: s.domain,
            plausible_site_id: s.id,
            access: access_name(s.access).into(),
            level: s.access,
            webhooks: r.get(0),
            failing: r.get(1),
            disabled: r.get(2),
        })
    }

    /// The goals of a site `who` may read, for a goal trigger to pick.
    pub async fn list_goals(&self, who: &Principal, site: &SiteRef) -> OpResult<GoalList> {
        let db_ = self.db().await?;
        let s = access::site(&db_, who, site, Access::Read).await?;
        let rows = db(
            db_.query(
                "SELECT id, display_name,
                        CASE WHEN event_name IS NOT NULL THEN 'event'
                             WHEN coalesce(scroll_threshold, -1) > -1 THEN 'scroll' ELSE 'page' END,
                        coalesce(event_name, page_path), coalesce(custom_props, '{}'::jsonb)
                 FROM goals WHERE site_id = $1 ORDER BY display_name, id",
                &[&s.id],
            )
            .await,
            "listing the site's goals",
        )?;
        Ok(GoalList {
            site_id: s.domain,
            goals: rows
                .iter()
                .map(|r| GoalView {
                    id: r.get(0),
                    display_name: r.get(1),
                    kind: r.get(2),
                    matches: r.get(3),
                    custom_props: r.get(4),
                })
                .collect(),
        })
    }
}
