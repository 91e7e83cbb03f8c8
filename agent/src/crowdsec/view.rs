//! The bouncer's view of the local API's decisions: every applied ban by id,
//! and per prefix the one that ends last. Startup answers replace the view,
//! deltas add and delete, expiry lapses; each returns the prefixes whose ban
//! changed (pure, unit-tested).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;

use super::stream::Decision;
use crate::config::DecisionScope;

/// The ban a prefix carries: the decision on it that ends last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub id: i64,
    pub scope: DecisionScope,
    pub origin: String,
    pub scenario: String,
    /// Kernel clock (ns) at which the ban ends.
    pub expires_ns: u64,
}

impl Ban {
    fn of(d: &Decision) -> Ban {
        Ban {
            id: d.id,
            scope: d.scope,
            origin: d.origin.clone(),
            scenario: d.scenario.clone(),
            expires_ns: d.expires_ns,
        }
    }
}

/// What a step changed: prefixes with a new or different ban, prefixes
/// whose ban ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub upsert: Vec<(IpNet, Ban)>,
    pub remove: Vec<IpNet>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// A deletion as the stream names it: the decision's id, and its prefix
/// (used when the id is missing).
pub type Deletion = (Option<i64>, Option<IpNet>);

#[derive(Debug, Default)]
pub struct View {
    by_id: HashMap<i64, Decision>,
    by_net: BTreeMap<IpNet, BTreeSet<i64>>,
}

impl View {
    /// Prefixes banned now.
    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }

    /// Every banned prefix with its ban.
    pub fn bans(&self) -> Vec<(IpNet, Ban)> {
        self.by_net
            .keys()
            .filter_map(|n| Some((*n, self.ban(n)?)))
            .collect()
    }

    /// The ban of `net` now: its decision that ends last.
    pub fn ban(&self, net: &IpNet) -> Option<Ban> {
        self.by_net
            .get(net)?
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .max_by_key(|d| (d.expires_ns, d.id))
            .map(Ban::of)
    }

    /// A startup answer: the local API's whole truth. Decisions already
    /// ended (`now_ns`) are left out.
    pub fn replace(&mut self, decisions: Vec<Decision>, now_ns: u64) -> Change {
        let before: BTreeMap<IpNet, Ban> = self
            .by_net
            .keys()
            .filter_map(|n| Some((*n, self.ban(n)?)))
            .collect();
        self.by_id.clear();
        self.by_net.clear();
        for d in decisions {
            self.insert(d, now_ns);
        }
        let mut change = Change::default();
        for (net, old) in &before {
            match self.ban(net) {
                None => change.remove.push(*net),
                Some(new) if new != *old => change.upsert.push((*net, new)),
                Some(_) => {}
            }
        }
        for net in self.by_net.keys() {
            if !before.contains_key(net)
                && let Some(b) = self.ban(net)
            {
                change.upsert.push((*net, b));
            }
        }
        change
    }

    /// A delta: new decisions, then deleted ones (by id; a deletion without
    /// an id ends every ban of its prefix).
    pub fn delta(&mut self, new: Vec<Decision>, deleted: &[Deletion], now_ns: u64) -> Change {
        let mut touched = BTreeSet::new();
        let before = |v: &View, t: &BTreeSet<IpNet>| -> BTreeMap<IpNet, Option<Ban>> {
            t.iter().map(|n| (*n, v.ban(n))).collect()
        };
        for d in &new {
            touched.insert(d.net);
        }
        for (id, net) in deleted {
            if let Some(d) = id.and_then(|id| self.by_id.get(&id)) {
                touched.insert(d.net);
            } else if let Some(n) = net {
                touched.insert(*n);
            }
        }
        let old = before(self, &touched);
        for d in new {
            self.insert(d, now_ns);
        }
        for (id, net) in deleted {
            match id {
                Some(id) if self.by_id.contains_key(id) => self.remove_id(*id),
                Some(_) => {}
                None => {
                    if let Some(n) = net
                        && let Some(ids) = self.by_net.get(n).cloned()
                    {
                        for id in ids {
                            self.remove_id(id);
                        }
                    }
                }
            }
        }
        diff(self, old)
    }

    /// Ends the decisions whose time is up.
    pub fn expire(&mut self, now_ns: u64) -> Change {
        let due: Vec<i64> = self
            .by_id
            .values()
            .filter(|d| d.expires_ns <= now_ns)
            .map(|d| d.id)
            .collect();
        if due.is_empty() {
            return Change::default();
        }
        let touched: BTreeSet<IpNet> = due.iter().map(|id| self.by_id[id].net).collect();
        let old = touched.iter().map(|n| (*n, self.ban(n))).collect();
        for id in due {
            self.remove_id(id);
        }
        diff(self, old)
    }

    fn insert(&mut self, d: Decision, now_ns: u64) {
        if d.expires_ns <= now_ns {
            return;
        }
        if self.by_id.contains_key(&d.id) {
            self.remove_id(d.id);
        }
        self.by_net.entry(d.net).or_default().insert(d.id);
        self.by_id.insert(d.id, d);
    }

    fn remove_id(&mut self, id: i64) {
        let Some(d) = self.by_id.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_net.get_mut(&d.net) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_net.remove(&d.net);
            }
        }
    }
}

fn diff(view: &View, old: BTreeMap<IpNet, Option<Ban>>) -> Change {
    let mut change = Change::default();
    for (net, was) in old {
        match (was, view.ban(&net)) {
            (Some(_), None) => change.remove.push(net),
            (was, Some(now)) if was.as_ref() != Some(&now) => change.upsert.push((net, now)),
            _ => {}
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: i64, net: &str, expires_ns: u64) -> Decision {
        Decision {
            id,
            net: net.parse().unwrap(),
            scope: DecisionScope::Ip,
            origin: "cscli".into(),
            scenario: "manual".into(),
            expires_ns,
        }
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_startup_answer_replaces_the_view_and_reports_only_differences() {
        let mut v = View::default();
        let c = v.replace(vec![d(1, "10.0.0.1/32", 100), d(2, "10.0.0.2/32", 100)], 10);
        assert_eq!(c.upsert.len(), 2);
        assert!(c.remove.is_empty());
        // Again after a reconnect: 1 unchanged, 2 gone, 3 new, an ended one skipped.
        let c = v.replace(
            vec![
                d(1, "10.0.0.1/32", 100),
                d(3, "10.0.0.3/32", 100),
                d(4, "10.0.0.4/32", 5),
            ],
            10,
        );
        assert_eq!(c.remove, vec![n("10.0.0.2/32")]);
        assert_eq!(
            c.upsert.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![n("10.0.0.3/32")]
        );
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn a_prefix_keeps_its_latest_ban_until_its_last_decision_goes() {
        let mut v = View::default();
        v.delta(vec![d(1, "10.0.0.1/32", 100)], &[], 0);
        let c = v.delta(vec![d(2, "10.0.0.1/32", 200)], &[], 0);
        assert_eq!(c.upsert[0].1.expires_ns, 200);
        // Deleting the later one falls back to the earlier one.
        let c = v.delta(vec![], &[(Some(2), None)], 0);
        assert_eq!(c.upsert[0].1.expires_ns, 100);
        let c = v.delta(vec![], &[(Some(1), None)], 0);
        assert_eq!(c.remove, vec![n("10.0.0.1/32")]);
        // Unknown ids change nothing.
        assert!(
            v.delta(vec![], &[(Some(9), Some(n("10.0.0.9/32")))], 0)
                .is_empty()
        );
    }

    #[test]
    fn ended_decisions_lapse() {
        let mut v = View::default();
        v.delta(
            vec![d(1, "10.0.0.1/32", 100), d(2, "10.0.0.0/24", 300)],
            &[],
            0,
        );
        assert!(v.expire(50).is_empty());
        assert_eq!(v.expire(100).remove, vec![n("10.0.0.1/32")]);
        assert_eq!(v.len(), 1);
        assert_eq!(v.expire(1000).remove, vec![n("10.0.0.0/24")]);
        assert!(v.is_empty());
    }

    #[test]
    fn a_deletion_without_an_id_ends_its_prefix() {
        let mut v = View::default();
        v.delta(
            vec![d(1, "10.0.0.1/32", 100), d(2, "10.0.0.1/32", 200)],
            &[],
            0,
        );
        let c = v.delta(vec![], &[(None, Some(n("10.0.0.1/32")))], 0);
        assert_eq!(c.remove, vec![n("10.0.0.1/32")]);
        assert!(v.is_empty());
    }
}
