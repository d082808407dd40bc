//! Who may do what: the one access rule every face goes through (FR-014).
//! The operations call it with the caller; the CLI, the REST API and the
//! web page never decide access themselves.
//!
//! - An operator (the CLI; an operator token) may do everything on every
//!   site, as Plausible's super admins.
//! - A Plausible user acts with their role on the site: a `team_memberships`
//!   role on the site's team, or, for a guest, the `guest_memberships` role
//!   on that one site. Owner, admin and editor manage a site's webhooks;
//!   viewer reads them (webhooks without secrets, deliveries, attempts);
//!   billing and a guest without a membership on the site have no access.
//! - Beyond roles, as Plausible's `AuthorizePublicAPI`: an API key bound to
//!   no team is refused on a site whose team is set up
//!   (`teams.setup_complete`), and an API key bound to a team reaches only
//!   that team's sites; a locked site, or a site of a locked team, is refused.
//! - A site is found by its domain, its former domain for a while after a
//!   change (`domain_changed_from`), or its numeric id. One the caller holds
//!   no role on is answered exactly as one that does not exist.
//! - A trigger or a delivery is reached only through its own webhook.
//!
//! Nothing is cached: a role removed or a key deleted in Plausible counts
//! at the next request.

use tokio_postgres::Client;
use uuid::Uuid;

use super::error::{db, OpError, OpResult, Refusal};
use super::inputs::SiteRef;
use super::validate;

/// What a caller may do on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    /// A viewer: webhooks without secrets, deliveries, attempts.
    Read,
    /// An editor: create, change, test, retry, replay.
    Manage,
    /// An owner or admin: also hand out portal links to the site.
    Administer,
}

impl Access {
    /// The role a portal link grants, by name.
    pub fn of_link_role(role: &str) -> Option<Access> {
        match role {
            "viewer" => Some(Access::Read),
            "editor" => Some(Access::Manage),
            _ => None,
        }
    }
}

/// How a Plausible user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// One of their API keys; `team_id` when the key is bound to a team.
    ApiKey { team_id: Option<i64> },
    /// Their Plausible browser session (the web page on Plausible's host).
    Session,
}

/// The caller of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    User {
        user_id: i64,
        via: Via,
    },
    /// Whoever holds a portal link to one site, with the role it grants
    /// (the web page on another host). Refused like a user on a locked site.
    Link {
        link_id: uuid::Uuid,
        site_id: i64,
        access: Access,
    },
}

impl Principal {
    /// A user by one of their API keys.
    pub fn api_key(user_id: i64, key_team_id: Option<i64>) -> Principal {
        Principal::User {
            user_id,
            via: Via::ApiKey {
                team_id: key_team_id,
            },
        }
    }

    /// A user by their Plausible browser session.
    pub fn session(user_id: i64) -> Principal {
        Principal::User {
            user_id,
            via: Via::Session,
        }
    }

    /// The team an API key is bound to: such a key reaches that team's sites only.
    fn key_team(&self) -> Option<i64> {
        match self {
            Principal::User {
                via: Via::ApiKey { team_id },
                ..
            } => *team_id,
            _ => None,
        }
    }

    /// An API key bound to no team (refused on a set-up team's sites).
    fn legacy_key(&self) -> bool {
        matches!(
            self,
            Principal::User {
                via: Via::ApiKey { team_id: None },
                ..
            }
        )
    }
}

/// Access of a role name as Plausible stores it.
pub fn access_of_role(role: &str) -> Access {
    match role {
        "owner" | "admin" => Access::Administer,
        "editor" => Access::Manage,
        "viewer" => Access::Read,
        _ => Access::None,
    }
}

/// A site the caller was let into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: i64,
    pub domain: String,
    /// What the caller may do there (at least what was asked).
    pub access: Access,
}

/// Over `sites s LEFT JOIN teams t`: the site is locked, itself or by its
/// team (Plausible refuses API access to it).
macro_rules! site_locked_sql {
    () => {
        "(s.locked OR coalesce(t.locked, false))"
    };
}
/// Over the same join: the site's team is set up (a team-less key is refused).
macro_rules! team_set_up_sql {
    () => {
        "coalesce(t.setup_complete, false)"
    };
}

/// The site `target` finds (a statement giving its `id` and `domain`, one
/// row or none; its parameter is $2) with the roles user $1 holds there:
/// their team role when the site belongs to their team (not `guest`), and
/// their guest role on that site; both limited to the key's team when it
/// has one ($3). With whether the site is locked and its team set up. One
/// statement whether the site exists or not, so a site the caller cannot
/// see costs what a missing one costs (no timing tells them apart).
fn site_roles_sql(target: &str) -> String {
    format!(
        concat!(
            "WITH target AS ({target})
    SELECT s.id, s.domain, r.role, ",
            site_locked_sql!(),
            " AS locked, ",
            team_set_up_sql!(),
            " AS set_up
    FROM target JOIN sites s ON s.id = target.id LEFT JOIN teams t ON t.id = s.team_id
    LEFT JOIN LATERAL (
        SELECT tm.role::text AS role FROM team_memberships tm
        WHERE tm.team_id = s.team_id AND tm.user_id = $1 AND tm.role::text <> 'guest'
        UNION ALL
        SELECT gm.role::text FROM guest_memberships gm
        JOIN team_memberships tm ON tm.id = gm.team_membership_id
        WHERE gm.site_id = s.id AND tm.user_id = $1) r ON true
    WHERE $3::bigint IS NULL OR s.team_id = $3"
        ),
        target = target
    )
}

/// A site by its number ($2).
const SITE_BY_ID: &str = "SELECT id, domain FROM sites WHERE id = $2::bigint";
/// A site by its domain or former domain ($2).
const SITE_BY_DOMAIN: &str =
    "SELECT id, domain FROM sites WHERE domain = $2::text OR domain_changed_from = $2::text
    ORDER BY domain = $2::text DESC LIMIT 1";
/// The site of a webhook ($2).
const SITE_OF_WEBHOOK: &str =
    "SELECT s.id, s.domain FROM webhooks w JOIN sites s ON s.id = w.site_id WHERE w.id = $2::uuid";

/// Whether site `site_id` is locked, itself or by its team.
async fn locked(db_: &Client, site_id: i64) -> OpResult<bool> {
    let row = db(
        db_.query_opt(
            concat!(
                "SELECT ",
                site_locked_sql!(),
                " FROM sites s LEFT JOIN teams t ON t.id = s.team_id WHERE s.id = $1"
            ),
            &[&site_id],
        )
        .await,
        "reading whether the site is locked",
    )?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// A site found for a caller: its id and domain, what they may do there,
/// or why they are refused there.
struct Found {
    id: i64,
    domain: String,
    access: Access,
    refusal: Option<Refusal>,
}

/// The site `target` finds with `param` ($2), and what `who` may do there;
/// None: no such site, or one `who` may not see (told apart nowhere, and
/// looked up by the same one statement either way).
async fn find(
    db_: &Client,
    who: &Principal,
    target: &str,
    param: &(dyn tokio_postgres::types::ToSql + Sync),
) -> OpResult<Option<Found>> {
    let user_id = match who {
        Principal::User { user_id, .. } => Some(*user_id),
        Principal::Operator | Principal::Link { .. } => None,
    };
    let rows = db(
        db_.query(&site_roles_sql(target), &[&user_id, param, &who.key_team()])
            .await,
        "looking up the site and the caller's roles there",
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (id, locked, set_up): (i64, bool, bool) =
        (first.get(0), first.get("locked"), first.get("set_up"));
    let (access, refusal) = match who {
        Principal::Operator => (Access::Administer, None),
        Principal::Link {
            site_id: linked,
            access,
            ..
        } => {
            if *linked != id {
                return Ok(None);
            }
            (*access, locked.then_some(Refusal::SiteLocked))
        }
        Principal::User { .. } => {
            let access = rows
                .iter()
                .filter_map(|r| r.get::<_, Option<&str>>("role"))
                .map(access_of_role)
                .max()
                .unwrap_or(Access::None);
            let refusal = if who.legacy_key() && set_up {
                Some(Refusal::LegacyKeyOnTeamSite)
            } else if locked {
                Some(Refusal::SiteLocked)
            } else {
                None
            };
            (access, refusal)
        }
    };
    Ok(Some(Found {
        id,
        domain: first.get(1),
        access,
        refusal,
    }))
}

/// The longest piece of a caller's input a message quotes.
const QUOTE_MAX: usize = 100;

/// `s` as a message quotes it: cut, so a huge input is not echoed whole.
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(QUOTE_MAX).collect::<String>())
    }
}

fn no_site(site: &str) -> OpError {
    OpError::NotFound(format!(
        "no site `{}` that you may see; name a site by its domain as in Plausible (example.com) or by its numeric id",
        quote(site)
    ))
}

fn forbidden(domain: &str, need: Access) -> OpError {
    let what = match need {
        Access::Administer => {
            "hand out links to its webhooks or export their signing keys (owner or admin may)"
        }
        Access::Manage => "change its webhooks (owner, admin or editor may)",
        _ => "read its webhooks (owner, admin, editor or viewer may)",
    };
    OpError::Forbidden(format!(
        "your role on site {domain} does not let you {what}"
    ))
}

/// Lets `who` into the site found for `need`; `missing` is the refusal
/// when there is none they hold a role on.
fn admit(found: Option<Found>, need: Access, missing: impl FnOnce() -> OpError) -> OpResult<Site> {
    let Some(f) = found.filter(|f| f.access > Access::None) else {
        return Err(missing());
    };
    if let Some(r) = f.refusal {
        return Err(OpError::Refused(r));
    }
    if f.access < need {
        return Err(forbidden(&f.domain, need));
    }
    Ok(Site {
        id: f.id,
        domain: f.domain,
        access: f.access,
    })
}

/// A site by its domain (or former domain) or numeric id, when `who` may do
/// `need` on it.
pub async fn site(db_: &Client, who: &Principal, site: &SiteRef, need: Access) -> OpResult<Site> {
    let name = site.as_str();
    validate::no_nul("site_id", name)?;
    let found = match name.parse::<i64>() {
        Ok(id) => find(db_, who, SITE_BY_ID, &id).await?,
        Err(_) => find(db_, who, SITE_BY_DOMAIN, &name).await?,
    };
    admit(found, need, || no_site(name))
}

pub fn no_webhook(id: &str) -> OpError {
    OpError::NotFound(format!(
        "no webhook {} that you may see (list the webhooks for their ids)",
        quote(id)
    ))
}

/// The site of webhook `id` (deleted or not), when `who` may do `need` there.
pub async fn webhook(db_: &Client, who: &Principal, id: Uuid, need: Access) -> OpResult<Site> {
    let found = find(db_, who, SITE_OF_WEBHOOK, &id).await?;
    admit(found, need, || no_webhook(&id.to_string()))
}

/// What a webhook owns, reached only through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Trigger(Uuid),
    Delivery(Uuid),
}

/// The site of webhook `webhook_id`, when `owned` is its own and `who`
/// may do `need` there. Another webhook's trigger or delivery is not found.
pub async fn owned(
    db_: &Client,
    who: &Principal,
    webhook_id: Uuid,
    owned: Owned,
    need: Access,
) -> OpResult<Site> {
    let site = webhook(db_, who, webhook_id, need).await?;
    let (sql, id, missing) = match owned {
        Owned::Trigger(id) => (
            "SELECT 1 FROM webhook_triggers WHERE id = $1 AND webhook_id = $2",
            id,
            format!("webhook {webhook_id} has no trigger {id}"),
        ),
        Owned::Delivery(id) => (
            "SELECT 1 FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2",
            id,
            format!(
                "webhook {webhook_id} has no delivery {id} (deliveries are pruned after retention.days)"
            ),
        ),
    };
    match db(
        db_.query_opt(sql, &[&id, &webhook_id]).await,
        "looking it up",
    )? {
        Some(_) => Ok(site),
        None => Err(OpError::NotFound(missing)),
    }
}

/// What `who` may do on each site they may at least read and are not
/// refused on (the rule of [`find`], for every site at once); None: every
/// site, all of it (an operator). Lists are filtered by it in SQL.
pub async fn site_accesses(
    db_: &Client,
    who: &Principal,
) -> OpResult<Option<std::collections::HashMap<i64, Access>>> {
    let user_id = match who {
        Principal::Operator => return Ok(None),
        Principal::Link {
            site_id, access, ..
        } => {
            let open = !locked(db_, *site_id).await?;
            return Ok(Some(
                open.then_some((*site_id, *access)).into_iter().collect(),
            ));
        }
        Principal::User { user_id, .. } => user_id,
    };
    let rows = db(
        db_.query(
            concat!(
                "WITH r AS (
                    SELECT s.id, tm.role::text AS role FROM sites s
                    JOIN team_memberships tm ON tm.team_id = s.team_id
                    WHERE tm.user_id = $1 AND tm.role::text <> 'guest'
                      AND ($2::bigint IS NULL OR s.team_id = $2)
                    UNION ALL
                    SELECT s.id, gm.role::text FROM guest_memberships gm
                    JOIN team_memberships tm ON tm.id = gm.team_membership_id
                    JOIN sites s ON s.id = gm.site_id
                    WHERE tm.user_id = $1 AND ($2::bigint IS NULL OR s.team_id = $2))
                 SELECT r.id, r.role FROM r JOIN sites s ON s.id = r.id LEFT JOIN teams t ON t.id = s.team_id
                 -- What `find` refuses.
                 WHERE NOT (",
                site_locked_sql!(),
                " OR ($3 AND ",
                team_set_up_sql!(),
                "))"
            ),
            &[user_id, &who.key_team(), &who.legacy_key()],
        )
        .await,
        "reading the user's sites",
    )?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        let a = access_of_role(r.get(1));
        if a > Access::None {
            let e = out.entry(r.get::<_, i64>(0)).or_insert(a);
            *e = (*e).max(a);
        }
    }
    Ok(Some(out))
}

/// The sites `who` may at least read and is not refused on; None: every
/// site (an operator).
pub async fn readable_sites(db_: &Client, who: &Principal) -> OpResult<Option<Vec<i64>>> {
    Ok(site_accesses(db_, who)
        .await?
        .map(|m| m.into_keys().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_access() {
        assert_eq!(access_of_role("owner"), Access::Administer);
        assert_eq!(access_of_role("admin"), Access::Administer);
        assert_eq!(access_of_role("editor"), Access::Manage);
        assert_eq!(access_of_role("viewer"), Access::Read);
        assert_eq!(access_of_role("billing"), Access::None);
        assert_eq!(access_of_role("guest"), Access::None);
    }

    #[test]
    fn a_long_input_is_quoted_cut() {
        assert_eq!(quote("example.com"), "example.com");
        let q = quote(&"x".repeat(60_000));
        assert_eq!(q.chars().count(), QUOTE_MAX + 1);
    }
}
