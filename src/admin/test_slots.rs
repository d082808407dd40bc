//! How many test sends (the CLI's `test`, the API's `POST
//! /api/webhooks/:id/test`, the page's button) may run at once: per
//! user, per site and in all. A test waits for the receiver's answer, up to
//! the test's request timeout, so a receiver that hangs holds its slot that
//! long. One slot for everyone (as before) let one user's hanging tests delay
//! every other user's by the sum of their timeouts; with a bound per user and
//! per site, a test beyond a bound is refused at once (429 with Retry-After)
//! instead of queueing behind a hang, and the others go on.
//!
//! Operators count as one user (their tokens carry no identity of their own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::access::Principal;

/// Tests one user (all their API keys together) may run at once.
pub const DEFAULT_PER_USER: usize = 2;
/// Tests of one site's webhooks at once, whoever sends them: a site's team
/// shares it, so one member cannot take every slot of the instance.
pub const DEFAULT_PER_SITE: usize = 4;
/// Tests at once on this instance: each holds a socket and a little memory
/// (no database connection while it waits for the receiver).
pub const DEFAULT_TOTAL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestSlotsConfig {
    pub per_user: usize,
    pub per_site: usize,
    pub total: usize,
}

impl Default for TestSlotsConfig {
    fn default() -> Self {
        Self {
            per_user: DEFAULT_PER_USER,
            per_site: DEFAULT_PER_SITE,
            total: DEFAULT_TOTAL,
        }
    }
}

/// Which bound refused a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Site,
    Total,
}

/// A test refused because a bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub scope: Scope,
    pub limit: usize,
}

impl Busy {
    pub fn message(&self) -> String {
        let (who, n) = match self.scope {
            Scope::User => ("you are", self.limit),
            Scope::Site => ("this site has", self.limit),
            Scope::Total => ("this instance has", self.limit),
        };
        format!(
            "{who} {n} test sends in flight already (the most at once); \
             try again when one has answered (see Retry-After)"
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum User {
    Operator,
    Id(i64),
    Link(uuid::Uuid),
}

#[derive(Default)]
struct Counts {
    users: HashMap<User, usize>,
    sites: HashMap<i64, usize>,
    total: usize,
}

pub struct TestSlots {
    cfg: TestSlotsConfig,
    counts: Arc<Mutex<Counts>>,
}

/// A test's place; given back when dropped (also when the client goes away
/// and the request is cancelled).
pub struct TestSlot {
    counts: Arc<Mutex<Counts>>,
    user: User,
    site: i64,
}

impl TestSlots {
    pub fn new(cfg: TestSlotsConfig) -> anyhow::Result<TestSlots> {
        if cfg.per_user == 0 || cfg.per_site == 0 || cfg.total == 0 {
            anyhow::bail!("test slots: every bound must be at least 1 ({cfg:?})");
        }
        if cfg.per_user > cfg.total || cfg.per_site > cfg.total {
            anyhow::bail!("test slots: a per-user or per-site bound above the total ({cfg:?})");
        }
        Ok(TestSlots {
            cfg,
            counts: Arc::default(),
        })
    }

    pub fn config(&self) -> TestSlotsConfig {
        self.cfg
    }

    /// A slot for `who` testing a webhook of `site`, or which bound is reached.
    pub fn try_acquire(&self, who: &Principal, site: i64) -> Result<TestSlot, Busy> {
        let user = match who {
            Principal::Operator => User::Operator,
            Principal::User { user_id, .. } => User::Id(*user_id),
            // Whoever holds a link counts as one user per link.
            Principal::Link { link_id, .. } => User::Link(*link_id),
        };
        let mut c = self.counts.lock().expect("test slot counts");
        let busy = |scope, limit| Err(Busy { scope, limit });
        if c.users.get(&user).copied().unwrap_or(0) >= self.cfg.per_user {
            return busy(Scope::User, self.cfg.per_user);
        }
        if c.sites.get(&site).copied().unwrap_or(0) >= self.cfg.per_site {
            return busy(Scope::Site, self.cfg.per_site);
        }
        if c.total >= self.cfg.total {
            return busy(Scope::Total, self.cfg.total);
        }
        *c.users.entry(user.clone()).or_insert(0) += 1;
        *c.sites.entry(site).or_insert(0) += 1;
        c.total += 1;
        Ok(TestSlot {
            counts: self.counts.clone(),
            user,
            site,
        })
    }
}

impl Drop for TestSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("test slot counts");
        c.total -= 1;
        // Entries at zero are removed, so the maps hold only tests in flight.
        if let Some(n) = c.users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.users.remove(&self.user);
            }
        }
        if let Some(n) = c.sites.get_mut(&self.site) {
            *n -= 1;
            if *n == 0 {
                c.sites.remove(&self.site);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> Principal {
        Principal::api_key(id, None)
    }

    #[test]
    fn bounds_per_user_per_site_and_in_all() {
        let s = TestSlots::new(TestSlotsConfig {
            per_user: 2,
            per_site: 3,
            total: 4,
        })
        .unwrap();
        let a1 = s.try_acquire(&user(1), 10).unwrap();
        let a2 = s.try_acquire(&user(1), 11).unwrap();
        // The user's bound, whatever the site.
        let e = s.try_acquire(&user(1), 12).err().unwrap();
        assert_eq!(e.scope, Scope::User);
        // Others go on; the site's bound holds across users.
        let b1 = s.try_acquire(&user(2), 10).unwrap();
        let _c1 = s.try_acquire(&user(3), 10).unwrap();
        let e = s.try_acquire(&user(4), 10).err().unwrap();
        assert_eq!(e.scope, Scope::Site);
        // The total (4 in flight now).
        let e = s.try_acquire(&Principal::Operator, 20).err().unwrap();
        assert_eq!(e.scope, Scope::Total);
        assert!(e.message().contains("4 test sends"), "{}", e.message());
        // Given back on drop.
        drop(a1);
        drop(b1);
        let _a3 = s.try_acquire(&user(1), 10).unwrap();
        let _o = s.try_acquire(&Principal::Operator, 20).unwrap();
        drop(a2);
        assert!(!s.counts.lock().unwrap().users.contains_key(&User::Id(2)));
    }

    #[test]
    fn refuses_bounds_that_cannot_work() {
        for (per_user, per_site, total) in [(0, 1, 1), (1, 0, 1), (2, 1, 1), (1, 2, 1)] {
            assert!(TestSlots::new(TestSlotsConfig {
                per_user,
                per_site,
                total
            })
            .is_err());
        }
        assert_eq!(
            TestSlots::new(TestSlotsConfig::default()).unwrap().config(),
            TestSlotsConfig::default()
        );
    }
}
