//! Who is calling the admin API, and what may they do on a site (FR-014).
//!
//! Two kinds of bearer token:
//! - operator tokens, configured as SHA-256 hashes (`admin.operator_token_sha256`);
//!   an operator may do everything on every site;
//! - Plausible API keys: looked up in Plausible's own `api_keys` by
//!   `key_hash` = lowercase hex SHA-256(SECRET_KEY_BASE ++ key), exactly as
//!   Plausible stores them. The key acts for its user with the user's role on
//!   the site: a `team_memberships` role on the site's team, or, for a guest,
//!   the `guest_memberships` role on that one site. A key bound to a team
//!   (`api_keys.team_id`, newer Plausible) reaches only that team's sites.
//!
//! Roles: owner, admin and editor may manage a site's webhooks; viewer may
//! read them (webhooks without secrets, deliveries, attempts); billing and a
//! guest without a guest membership on the site have no access. Deleting a key
//! in Plausible revokes it here at once (no cache).
//!
//! Beyond roles, as Plausible's `AuthorizePublicAPI` (a key's user with a role
//! on the site, then `site_refusal`): a legacy key (no team) is refused on a
//! site whose team is set up (`teams.setup_complete`: a real team, whose
//! members must use a key of that team); a locked site, or a site of a locked
//! team, is refused (Plausible: "This Plausible site is locked"). Operators
//! are exempt, as Plausible's super admins. Scopes (`api_keys.scopes`) are not
//! read: Plausible gives every key `stats:read:*` and `sites:read:*`
//! implicitly, and no Plausible scope covers webhooks; what a key may do here
//! is its user's role.

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use crate::config::{AdminConfig, Redacted};

/// What a request may do on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Manage,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    /// A Plausible user through one of their API keys.
    User {
        user_id: i64,
        /// The key's team, when the key is bound to one.
        key_team_id: Option<i64>,
    },
}

/// Why a request was not authenticated (each is a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Unknown,
}

impl AuthError {
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "send `Authorization: Bearer <token>` with an operator token or a Plausible API key"
            }
            AuthError::Malformed => "the Authorization header must be `Bearer <token>`",
            AuthError::Unknown => {
                "the token is not an operator token and not a current Plausible API key"
            }
        }
    }
}

pub struct Authenticator {
    operator_hashes: Vec<[u8; 32]>,
    secret_key_base: Option<Redacted>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Plausible's `api_keys.key_hash` of `key`.
pub fn plausible_key_hash(secret_key_base: &str, key: &str) -> String {
    hex(&sha256(&[secret_key_base.as_bytes(), key.as_bytes()]))
}

/// What an operator puts in `admin.operator_token_sha256` for `token`.
pub fn operator_token_hash(token: &str) -> String {
    hex(digest(&SHA256, token.as_bytes()).as_ref())
}

impl Authenticator {
    pub fn new(cfg: &AdminConfig) -> Authenticator {
        let operator_hashes = cfg
            .operator_token_sha256
            .iter()
            .filter_map(|h| {
                // Validated by the config: 64 lowercase hex characters.
                let mut out = [0u8; 32];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(out)
            })
            .collect();
        Authenticator {
            operator_hashes,
            secret_key_base: cfg.secret_key_base.clone(),
        }
    }

    /// True when neither kind of token can be accepted (the API then refuses everything).
    pub fn is_closed(&self) -> bool {
        self.operator_hashes.is_empty() && self.secret_key_base.is_none()
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate(
        &self,
        db: &tokio_postgres::Client,
        authorization: Option<&str>,
    ) -> anyhow::Result<Result<Principal, AuthError>> {
        let Some(value) = authorization else {
            return Ok(Err(AuthError::Missing));
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Ok(Err(AuthError::Malformed));
        };
        // Compared as hashes, in constant time, against every configured one.
        let presented = sha256(&[token.as_bytes()]);
        let mut operator = subtle::Choice::from(0u8);
        for h in &self.operator_hashes {
            operator |= presented.ct_eq(h);
        }
        if bool::from(operator) {
            return Ok(Ok(Principal::Operator));
        }
        let Some(skb) = &self.secret_key_base else {
            return Ok(Err(AuthError::Unknown));
        };
        let hash = plausible_key_hash(&skb.0, token);
        // `team_id` exists only in newer Plausible schemas: read it through
        // to_jsonb so the query works on both.
        let row = db
            .query_opt(
                "SELECT k.user_id, (to_jsonb(k) ->> 'team_id')::bigint
                 FROM api_keys k WHERE k.key_hash = $1",
                &[&hash],
            )
            .await
            .map_err(|e| anyhow::anyhow!("looking up the API key in Plausible's api_keys: {e}"))?;
        Ok(match row {
            Some(r) => Ok(Principal::User {
                user_id: r.get(0),
                key_team_id: r.get(1),
            }),
            None => Err(AuthError::Unknown),
        })
    }
}

/// Over `sites s LEFT JOIN teams t`: the site is locked, itself or by its
/// team (Plausible refuses API access to it). One home for `site_refusal`
/// and `readable_sites`.
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

/// Why a key that has a role on a site is refused there anyway (typed: the
/// API answers each differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key bound to no team, on a site of a set-up team.
    LegacyKeyOnTeamSite,
    /// `sites.locked`, or the site's team is locked.
    SiteLocked,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::LegacyKeyOnTeamSite => {
                "Invalid API key for this site: the key belongs to no team and the site's team is set up. \
                 Create an API key in that team's settings in Plausible."
            }
            Refusal::SiteLocked => {
                "This Plausible site is locked (its team's subscription is not active): \
                 its webhooks cannot be read or changed through the API until the site owner subscribes."
            }
        }
    }
}

/// Why `who`, holding a role on `site_id`, is refused there anyway; None: not refused.
pub async fn site_refusal(
    db: &tokio_postgres::Client,
    who: &Principal,
    site_id: i64,
) -> anyhow::Result<Option<Refusal>> {
    let key_team_id = match who {
        Principal::Operator => return Ok(None),
        Principal::User { key_team_id, .. } => *key_team_id,
    };
    let row = db
        .query_opt(
            concat!(
                "SELECT ",
                site_locked_sql!(),
                ", ",
                team_set_up_sql!(),
                " FROM sites s LEFT JOIN teams t ON t.id = s.team_id WHERE s.id = $1"
            ),
            &[&site_id],
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading whether site {site_id} is locked: {e}"))?;
    let Some(row) = row else { return Ok(None) };
    let (locked, set_up): (bool, bool) = (row.get(0), row.get(1));
    Ok(if key_team_id.is_none() && set_up {
        Some(Refusal::LegacyKeyOnTeamSite)
    } else if locked {
        Some(Refusal::SiteLocked)
    } else {
        None
    })
}

/// Access of a role name as Plausible stores it.
pub fn access_of_role(role: &str) -> Access {
    match role {
        "owner" | "admin" | "editor" => Access::Manage,
        "viewer" => Access::Read,
        _ => Access::None,
    }
}

/// The roles a user holds on a site: their team role when the site belongs to
/// their team (not `guest`), and their guest role on that site. Both limited
/// to the key's team when it has one.
const SITE_ROLES_SQL: &str = "
    SELECT tm.role::text FROM sites s
    JOIN team_memberships tm ON tm.team_id = s.team_id
    WHERE s.id = $2 AND tm.user_id = $1 AND tm.role::text <> 'guest'
      AND ($3::bigint IS NULL OR s.team_id = $3)
    UNION ALL
    SELECT gm.role::text FROM guest_memberships gm
    JOIN team_memberships tm ON tm.id = gm.team_membership_id
    JOIN sites s ON s.id = gm.site_id
    WHERE gm.site_id = $2 AND tm.user_id = $1
      AND ($3::bigint IS NULL OR s.team_id = $3)";

/// What `who` may do on `site_id`.
pub async fn site_access(
    db: &tokio_postgres::Client,
    who: &Principal,
    site_id: i64,
) -> anyhow::Result<Access> {
    let (user_id, key_team_id) = match who {
        Principal::Operator => return Ok(Access::Manage),
        Principal::User {
            user_id,
            key_team_id,
        } => (*user_id, *key_team_id),
    };
    let rows = db
        .query(SITE_ROLES_SQL, &[&user_id, &site_id, &key_team_id])
        .await
        .map_err(|e| anyhow::anyhow!("reading the user's roles on site {site_id}: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| access_of_role(r.get::<_, &str>(0)))
        .max()
        .unwrap_or(Access::None))
}

/// The sites `who` may at least read and is not refused (`site_refusal`):
/// None means every site (an operator).
pub async fn readable_sites(
    db: &tokio_postgres::Client,
    who: &Principal,
) -> anyhow::Result<Option<Vec<i64>>> {
    let (user_id, key_team_id) = match who {
        Principal::Operator => return Ok(None),
        Principal::User {
            user_id,
            key_team_id,
        } => (*user_id, *key_team_id),
    };
    let rows = db
        .query(
            concat!(
                "SELECT s.id FROM sites s
             JOIN team_memberships tm ON tm.team_id = s.team_id
             WHERE tm.user_id = $1 AND tm.role::text IN ('owner', 'admin', 'editor', 'viewer')
               AND ($2::bigint IS NULL OR s.team_id = $2)
             UNION
             SELECT s.id FROM guest_memberships gm
             JOIN team_memberships tm ON tm.id = gm.team_membership_id
             JOIN sites s ON s.id = gm.site_id
             WHERE tm.user_id = $1 AND gm.role::text IN ('owner', 'admin', 'editor', 'viewer')
               AND ($2::bigint IS NULL OR s.team_id = $2)
             EXCEPT
             -- What `site_refusal` refuses.
             SELECT s.id FROM sites s LEFT JOIN teams t ON t.id = s.team_id
             WHERE ",
                site_locked_sql!(),
                " OR ($2::bigint IS NULL AND ",
                team_set_up_sql!(),
                ")"
            ),
            &[&user_id, &key_team_id],
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading the user's sites: {e}"))?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_sha256sum() {
        // printf %s 'skbKEY' | sha256sum ; printf %s 'tok' | sha256sum
        assert_eq!(
            plausible_key_hash("skb", "KEY"),
            "a699290337a04d8562cf5aea1a52b8be109aed3aafac0a1257410cf61a7d93d8"
        );
        assert_eq!(
            operator_token_hash("tok"),
            "1a7674eb4ee78df7e1ac439a93c3fa8e3c945784d4dec9fd8e3011738b2f1d62"
        );
    }

    #[test]
    fn roles_map_to_access() {
        assert_eq!(access_of_role("owner"), Access::Manage);
        assert_eq!(access_of_role("admin"), Access::Manage);
        assert_eq!(access_of_role("editor"), Access::Manage);
        assert_eq!(access_of_role("viewer"), Access::Read);
        assert_eq!(access_of_role("billing"), Access::None);
        assert_eq!(access_of_role("guest"), Access::None);
    }
}
