//! The web page's own sign-ins, where the page is not on Plausible's host
//! (docs/web.md): a session begun with a Plausible API key or with a portal
//! link, and the links themselves. A session or a link is a random token
//! the browser (or the link) holds; the database keeps its SHA-256 only.
//!
//! Each request reads the session anew: an API key deleted in Plausible
//! ends its sessions (they find no key), and the key's user's roles
//! are the ones in force now; a link's session grants its site and role
//! until it expires. Signing out deletes the session.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use tokio_postgres::Client;
use uuid::Uuid;

use super::access::{Access, Principal};
use super::error::{db, OpResult};

/// A session's or a link's token: what the browser or the link holds.
pub type Token = [u8; 32];

/// A new random token.
pub fn new_token() -> Token {
    let mut t = [0u8; 32];
    SystemRandom::new()
        .fill(&mut t)
        .expect("the system's random source works");
    t
}

/// A token as text (a cookie's value, a link's last path segment).
pub fn encode(t: &Token) -> String {
    URL_SAFE_NO_PAD.encode(t)
}

/// A token from its text; None when it is not one.
pub fn decode(s: &str) -> Option<Token> {
    URL_SAFE_NO_PAD.decode(s.trim()).ok()?.try_into().ok()
}

fn sha256(t: &Token) -> Vec<u8> {
    digest(&SHA256, t).as_ref().to_vec()
}

/// Who a live session is, and a line naming them for the page's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub who: Principal,
    pub label: String,
}

/// Starts a session for API key `api_key_id` (its `api_keys.id`), lasting `ttl`.
pub async fn start_with_key(db_: &Client, api_key_id: i64, ttl: Duration) -> OpResult<Token> {
    start(db_, Some(api_key_id), None, ttl).await
}

async fn start(
    db_: &Client,
    api_key_id: Option<i64>,
    link_id: Option<Uuid>,
    ttl: Duration,
) -> OpResult<Token> {
    let token = new_token();
    // Sessions long over are cleared as new ones begin: no service of its own.
    db(
        db_.execute(
            "DELETE FROM webhook_portal_sessions WHERE expires_at < now() - interval '1 day'",
            &[],
        )
        .await,
        "clearing ended sessions",
    )?;
    db(
        db_.execute(
            "INSERT INTO webhook_portal_sessions (token_sha256, api_key_id, link_id, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            &[&sha256(&token), &api_key_id, &link_id, &ttl.as_secs_f64()],
        )
        .await,
        "starting a session",
    )?;
    Ok(token)
}

/// The live session of `token`, None when there is none (ended, expired,
/// its key deleted).
pub async fn session(db_: &Client, token: &Token) -> OpResult<Option<Signed>> {
    // `team_id` exists only in newer Plausible schemas: read through to_jsonb.
    let row = db(
        db_.query_opt(
            "SELECT k.user_id, (to_jsonb(k) ->> 'team_id')::bigint, u.email::text,
                    l.id, l.site_id, l.role, ls.domain
             FROM webhook_portal_sessions s
             LEFT JOIN api_keys k ON k.id = s.api_key_id
             LEFT JOIN users u ON u.id = k.user_id
             LEFT JOIN webhook_portal_links l ON l.id = s.link_id
             LEFT JOIN sites ls ON ls.id = l.site_id
             WHERE s.token_sha256 = $1 AND s.expires_at > now()",
            &[&sha256(token)],
        )
        .await,
        "reading the session",
    )?;
    let Some(r) = row else { return Ok(None) };
    if let Some(user_id) = r.get::<_, Option<i64>>(0) {
        let email: Option<String> = r.get(2);
        return Ok(Some(Signed {
            who: Principal::api_key(user_id, r.get(1)),
            label: format!(
                "{} (API key)",
                email.unwrap_or_else(|| format!("user {user_id}"))
            ),
        }));
    }
    let (Some(link_id), Some(site_id), Some(role)) = (
        r.get::<_, Option<Uuid>>(3),
        r.get::<_, Option<i64>>(4),
        r.get::<_, Option<String>>(5),
    ) else {
        return Ok(None);
    };
    let Some(access) = Access::of_link_role(&role) else {
        return Ok(None);
    };
    let domain: Option<String> = r.get(6);
    Ok(Some(Signed {
        who: Principal::Link {
            link_id,
            site_id,
            access,
        },
        label: format!(
            "{role} of {} (by link)",
            domain.unwrap_or_else(|| format!("site {site_id}"))
        ),
    }))
}

/// Ends the session of `token` (signing out).
pub async fn end(db_: &Client, token: &Token) -> OpResult<()> {
    db(
        db_.execute(
            "DELETE FROM webhook_portal_sessions WHERE token_sha256 = $1",
            &[&sha256(token)],
        )
        .await,
        "ending the session",
    )?;
    Ok(())
}

/// A portal link as it is handed out: its token once, and until when it
/// may be redeemed.
#[derive(Debug, Clone)]
pub struct Minted {
    pub id: Uuid,
    pub token: Token,
    pub expires_at: OffsetDateTime,
}

/// A new link to `site_id` granting `role` (`viewer` or `editor`), to be
/// redeemed within `ttl`; `created_by` names who made it.
pub async fn mint(
    db_: &Client,
    site_id: i64,
    role: &str,
    ttl: Duration,
    created_by: &str,
) -> OpResult<Minted> {
    let token = new_token();
    let row = db(
        db_.query_one(
            "INSERT INTO webhook_portal_links (token_sha256, site_id, role, created_by, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
             RETURNING id, expires_at",
            &[
                &sha256(&token),
                &site_id,
                &role,
                &created_by,
                &ttl.as_secs_f64(),
            ],
        )
        .await,
        "minting the link",
    )?;
    Ok(Minted {
        id: row.get(0),
        token,
        expires_at: row.get(1),
    })
}

/// Redeems link `token`: once, before it expires (the link's own time is
/// how long it may wait to be opened). A session of the link's grant,
/// lasting `ttl`; None when the link is unknown, used or expired.
pub async fn redeem(db_: &Client, token: &Token, ttl: Duration) -> OpResult<Option<Token>> {
    let row = db(
        db_.query_opt(
            "UPDATE webhook_portal_links SET used_at = now()
             WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > now()
             RETURNING id",
            &[&sha256(token)],
        )
        .await,
        "redeeming the link",
    )?;
    let Some(r) = row else { return Ok(None) };
    start(db_, None, Some(r.get(0)), ttl).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_as_text_and_junk_is_none() {
        let t = new_token();
        assert_ne!(t, new_token());
        assert_eq!(decode(&encode(&t)), Some(t));
        for junk in ["", "abc", "!!!!", &"A".repeat(44)] {
            assert_eq!(decode(junk), None, "{junk}");
        }
    }
}
