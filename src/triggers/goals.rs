//! Plausible's goals, matched exactly as Plausible's stats code matches them
//! (SPEC §2), in one place every analytics source builds its query from.
//!
//! - event goal: `name = event_name`;
//! - page goal: `name = 'pageview'` and the pathname matches `page_path`;
//! - scroll goal (page_path set and scroll_threshold > -1): `name = 'engagement'`,
//!   the pathname matches and `scroll_depth` is between the threshold and 100;
//! - and, for every kind (current Plausible lets page and scroll goals carry
//!   them too), every `custom_props` key has its value in the event's meta,
//!   read at the key's *first* occurrence in meta_key: Plausible's
//!   `` `meta.value`[indexOf(`meta.key`, key)] = value ``, where a missing
//!   key (index 0) or a missing value reads as ''.
//!
//! A page_path matches by equality unless it contains `*`; then it is the
//! regex `^…$` where `**` and `*` both mean `.*`, `|` is alternation (at the
//! top level, as in Plausible: `^/a|/b*$` is `^/a` or `/b.*$`) and every other
//! character is literal. Without `*`, `|` is literal too.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use ring::digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoalKind {
    Event { event_name: String },
    Page { page_path: String },
    Scroll { page_path: String, threshold: i16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub id: i64,
    pub site_id: i64,
    pub display_name: String,
    pub kind: GoalKind,
    /// Every kind may carry them. Sorted, so queries and keys are deterministic.
    pub custom_props: BTreeMap<String, String>,
}

/// How a pathname is compared with a page goal's page_path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// An anchored regex in the syntax shared by PostgreSQL (ARE) and RE2.
    Regex(String),
}

impl Goal {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            GoalKind::Event { .. } => "event",
            GoalKind::Page { .. } => "page",
            GoalKind::Scroll { .. } => "scroll",
        }
    }

    /// The event name or page path a completion matched.
    pub fn matched(&self) -> &str {
        match &self.kind {
            GoalKind::Event { event_name, .. } => event_name,
            GoalKind::Page { page_path } | GoalKind::Scroll { page_path, .. } => page_path,
        }
    }

    pub fn path_match(&self) -> Option<PathMatch> {
        match &self.kind {
            GoalKind::Event { .. } => None,
            GoalKind::Page { page_path } | GoalKind::Scroll { page_path, .. } => {
                Some(path_match(page_path))
            }
        }
    }

    /// The reference matcher: what every source's query must agree with.
    pub fn matches(&self, e: &EventFields<'_>) -> bool {
        let props = self.custom_props.iter().all(|(k, v)| {
            let at = e.meta_key.iter().position(|mk| mk == k);
            at.and_then(|i| e.meta_value.get(i)).map_or("", |s| s) == v
        });
        props
            && match &self.kind {
                GoalKind::Event { event_name } => e.name == event_name,
                GoalKind::Page { page_path } => {
                    e.name == "pageview" && path_matches(page_path, e.pathname)
                }
                GoalKind::Scroll {
                    page_path,
                    threshold,
                } => {
                    e.name == "engagement"
                        && path_matches(page_path, e.pathname)
                        && e.scroll_depth.is_some_and(|d| d >= *threshold && d <= 100)
                }
            }
    }
}

/// The fields of an analytics event the goal matcher reads.
pub struct EventFields<'a> {
    pub name: &'a str,
    pub pathname: &'a str,
    pub meta_key: &'a [String],
    pub meta_value: &'a [String],
    pub scroll_depth: Option<i16>,
}

pub fn path_match(page_path: &str) -> PathMatch {
    if !page_path.contains('*') {
        return PathMatch::Exact(page_path.to_string());
    }
    let mut re = String::with_capacity(page_path.len() * 2 + 2);
    re.push('^');
    let mut chars = page_path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if chars.peek() == Some(&'*') {
                    chars.next();
                }
                re.push_str(".*");
            }
            '|' => re.push('|'),
            // A backslash before any ASCII punctuation is that character,
            // literally, in both PostgreSQL's ARE and RE2; letters, digits and
            // non-ASCII characters are never special.
            c if c.is_ascii_punctuation() => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
    }
    re.push('$');
    PathMatch::Regex(re)
}

fn path_matches(page_path: &str, pathname: &str) -> bool {
    match path_match(page_path) {
        PathMatch::Exact(p) => p == pathname,
        PathMatch::Regex(_) => glob_matches(page_path, pathname),
    }
}

/// The reference semantics of a `*` page_path without a regex engine:
/// top-level alternatives split on `|`; the first is anchored at the start
/// only, the last at the end only, a lone one at both, middle ones at neither
/// (exactly how `^a|b|c$` parses); `*`/`**` match any run of characters.
fn glob_matches(page_path: &str, pathname: &str) -> bool {
    let alts: Vec<&str> = page_path.split('|').collect();
    let n = alts.len();
    alts.iter().enumerate().any(|(i, alt)| {
        let (start, end) = (i == 0, i == n - 1);
        let pattern = alt.replace("**", "*");
        let pieces: Vec<&str> = pattern.split('*').collect();
        // Try every start offset unless anchored at the start.
        let starts: Vec<usize> = if start {
            vec![0]
        } else {
            pathname
                .char_indices()
                .map(|(i, _)| i)
                .chain([pathname.len()])
                .collect()
        };
        starts
            .into_iter()
            .any(|s| wildcard_at(&pieces, &pathname[s..], end))
    })
}

/// Does `text` begin with pieces[0], then pieces[1..] in order with any gap
/// (pieces joined by `*`); when `end`, the match must reach the end of text.
fn wildcard_at(pieces: &[&str], text: &str, end: bool) -> bool {
    let Some(first) = pieces.first() else {
        return true;
    };
    let Some(rest) = text.strip_prefix(first) else {
        return false;
    };
    if pieces.len() == 1 {
        return !end || rest.is_empty();
    }
    // pieces.len() > 1: a `*` follows `first`; try every split point.
    let mut offsets: Vec<usize> = rest.char_indices().map(|(i, _)| i).collect();
    offsets.push(rest.len());
    offsets
        .into_iter()
        .any(|o| wildcard_at(&pieces[1..], &rest[o..], end))
}

/// Loads the goals of the given sites from Plausible's `goals` table.
pub async fn load_for_sites(
    db: &impl tokio_postgres::GenericClient,
    site_ids: &[i64],
) -> Result<Vec<Goal>> {
    let rows = db
        .query(
            "SELECT id, site_id, event_name, page_path, coalesce(display_name, ''),
                    coalesce(scroll_threshold, -1)::int2, coalesce(custom_props, '{}'::jsonb)
             FROM goals WHERE site_id = ANY($1) ORDER BY id",
            &[&site_ids],
        )
        .await
        .context("loading goals")?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.get(0);
        let event_name: Option<String> = r.get(2);
        let page_path: Option<String> = r.get(3);
        let scroll: i16 = r.get(5);
        let props: serde_json::Value = r.get(6);
        let kind = match (event_name, page_path) {
            (Some(event_name), _) => GoalKind::Event { event_name },
            (None, Some(page_path)) if scroll > -1 => GoalKind::Scroll {
                page_path,
                threshold: scroll,
            },
            (None, Some(page_path)) => GoalKind::Page { page_path },
            (None, None) => {
                tracing::warn!(
                    goal_id = id,
                    "goal has neither event_name nor page_path; ignored"
                );
                continue;
            }
        };
        out.push(Goal {
            id,
            site_id: r.get(1),
            display_name: r.get(4),
            kind,
            custom_props: props_map(&props),
        });
    }
    Ok(out)
}

/// What a custom_event trigger looks for, as the event goal it is matched
/// as: `name = event_name` and every prop as a goal's custom_props. Id 0:
/// no goal row stands behind it (its completions' keys are `event:`).
pub fn custom_event_goal(site_id: i64, event_name: String, props: &serde_json::Value) -> Goal {
    Goal {
        id: 0,
        site_id,
        display_name: event_name.clone(),
        kind: GoalKind::Event { event_name },
        custom_props: props_map(props),
    }
}

/// custom_props is an object of string → string; other values are compared
/// by their JSON text, as Plausible stores only strings there.
fn props_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The identity of one goal completion, from which its idempotency key is
/// derived. Events carry no id, so a completion is the event's columns plus
/// its ordinal among identical events: a second identical event (same second,
/// user, session, name, path) is a second completion, found again by every
/// scan with the same ordinal.
pub struct CompletionIdentity<'a> {
    pub goal_id: i64,
    pub site_id: i64,
    pub timestamp_us: i64,
    pub name: &'a str,
    pub pathname: &'a str,
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub ordinal: u64,
}

impl CompletionIdentity<'_> {
    /// `goal:<hex>`: stable across scans, instances and analytics sources; the
    /// visitor ids inside are hashed, never stored or sent.
    pub fn key(&self) -> String {
        self.key_as("goal")
    }

    /// `<prefix>:<hex>`: a custom event's occurrence is `event:` (goal id 0),
    /// apart from the goal completions the same event may make.
    pub fn key_as(&self, prefix: &str) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in [
            &self.goal_id.to_be_bytes()[..],
            &self.site_id.to_be_bytes(),
            &self.timestamp_us.to_be_bytes(),
            &self.ordinal.to_be_bytes(),
        ] {
            ctx.update(part);
        }
        for s in [self.name, self.pathname, self.user_id, self.session_id] {
            ctx.update(&(s.len() as u64).to_be_bytes());
            ctx.update(s.as_bytes());
        }
        let d = ctx.finish();
        format!("{prefix}:{}", hex::encode(&d.as_ref()[..20]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(p: &str) -> Goal {
        Goal {
            id: 1,
            site_id: 1,
            display_name: "g".into(),
            kind: GoalKind::Page {
                page_path: p.into(),
            },
            custom_props: BTreeMap::new(),
        }
    }

    fn hit(g: &Goal, path: &str) -> bool {
        g.matches(&EventFields {
            name: "pageview",
            pathname: path,
            meta_key: &[],
            meta_value: &[],
            scroll_depth: None,
        })
    }

    #[test]
    fn regex_escapes_everything_but_star_and_bar() {
        assert_eq!(path_match("/a.b"), PathMatch::Exact("/a.b".into()));
        assert_eq!(path_match("/a|b"), PathMatch::Exact("/a|b".into()));
        assert_eq!(
            path_match("/x(y)/**"),
            PathMatch::Regex(r"^\/x\(y\)\/.*$".into())
        );
        assert_eq!(
            path_match("/p?q=*|/b*"),
            PathMatch::Regex(r"^\/p\?q\=.*|\/b.*$".into())
        );
        assert_eq!(path_match("/é *"), PathMatch::Regex(r"^\/é .*$".into()));
    }

    #[test]
    fn reference_matcher_follows_plausible() {
        assert!(hit(&page("/a.b"), "/a.b"));
        assert!(!hit(&page("/a.b"), "/axb"));
        assert!(hit(&page("/blog/*"), "/blog/x/y"));
        assert!(hit(&page("/blog/**"), "/blog/"));
        assert!(!hit(&page("/blog/*"), "/blo"));
        assert!(hit(&page("/x(y)*"), "/x(y)z"));
        assert!(!hit(&page("/x(y)*"), "/xy"));
        // `|` without `*` is literal.
        assert!(hit(&page("/a|/b"), "/a|/b"));
        assert!(!hit(&page("/a|/b"), "/a"));
        // With `*`: top-level alternation, first alternative anchored at the start only.
        let g = page("/a|/b*");
        assert!(hit(&g, "/a"));
        assert!(hit(&g, "/anything"), "^/a is only anchored at the start");
        assert!(hit(&g, "/b/c"));
        assert!(hit(&g, "/x/b/c"), "/b.*$ is only anchored at the end");
        assert!(!hit(&g, "/c"));
        assert!(hit(&page("/**"), "/"));
        assert!(!hit(&page("/**"), "x"));
    }

    #[test]
    fn keys_differ_by_every_field() {
        let base = CompletionIdentity {
            goal_id: 1,
            site_id: 2,
            timestamp_us: 3,
            name: "pageview",
            pathname: "/",
            user_id: "4",
            session_id: "5",
            ordinal: 1,
        };
        let k = base.key();
        // As every earlier build wrote it: a key that changed would send
        // again the completions the lateness overlap finds after an upgrade.
        assert_eq!(k, "goal:a214b7e8ae940db7ba9c7750094309e2866adb9d");
        let other = CompletionIdentity { ordinal: 2, ..base };
        assert_ne!(k, other.key());
        let other = CompletionIdentity {
            name: "pageview/",
            pathname: "",
            ..other
        };
        assert_ne!(k, other.key());
    }

    #[test]
    fn props_bind_every_goal_kind_at_the_first_occurrence_of_their_key() {
        let mut g = page("/pro");
        g.custom_props = [("plan".to_string(), "pro".to_string())].into();
        let ev = |name: &'static str, keys: &[&str], values: &[&str]| {
            let k: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
            let v: Vec<String> = values.iter().map(|s| s.to_string()).collect();
            (name, k, v)
        };
        let check = |g: &Goal, (name, k, v): (&str, Vec<String>, Vec<String>)| {
            g.matches(&EventFields {
                name,
                pathname: "/pro",
                meta_key: &k,
                meta_value: &v,
                scroll_depth: Some(60),
            })
        };
        assert!(check(&g, ev("pageview", &["plan"], &["pro"])));
        assert!(!check(&g, ev("pageview", &[], &[])));
        assert!(check(
            &g,
            ev("pageview", &["plan", "plan"], &["pro", "free"])
        ));
        assert!(!check(
            &g,
            ev("pageview", &["plan", "plan"], &["free", "pro"])
        ));
        // A key without a value reads as '' (ClickHouse's default for a[i]).
        assert!(!check(&g, ev("pageview", &["plan"], &[])));
        let mut s = g.clone();
        s.kind = GoalKind::Scroll {
            page_path: "/pro".into(),
            threshold: 50,
        };
        assert!(check(&s, ev("engagement", &["plan"], &["pro"])));
        assert!(!check(&s, ev("engagement", &["x"], &["pro"])));
    }
}
