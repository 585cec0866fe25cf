//! Process groups (Erlang's `pg`): per node, scope → group → members,
//! local and remote. A pid may join a group several times and is a member
//! until it has left as many times, or until it ends (local pids) or its
//! node goes away (remote pids).
//!
//! The table lives in the host, not in a guest, so memberships survive a
//! hot upgrade of the member's module. Remote memberships are what the
//! other nodes announced; like Erlang's `pg` the view is eventually
//! consistent, not a consensus.
//!
//! Invariant: `groups` and `by_pid` describe the same memberships; a group
//! or a pid with no membership left is removed from both at once, so the
//! group count the limit checks is exact.

use std::collections::{BTreeMap, HashMap};

use molt_abi::{NAME_BYTES_MAX, Pid};

/// Why a join or leave was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// A scope or group name is empty or longer than `NAME_BYTES_MAX`.
    #[error("scope and group names are 1 to {NAME_BYTES_MAX} bytes")]
    BadName,
    /// The process holds `pg_memberships_max` memberships.
    #[error("the process holds pg_memberships_max ({0}) memberships")]
    MembershipLimit(usize),
    /// The node has `pg_groups_max` groups and this would be a new one.
    #[error("the node has pg_groups_max ({0}) groups")]
    GroupLimit(usize),
    /// `leave`: the pid is not a member of that group.
    #[error("not a member of that group")]
    NotJoined,
}

/// A group's identity: (scope, group).
type Key = (String, String);

/// One membership as it travels: scope, group, pid, how many times.
pub(crate) type Membership = (String, String, Pid, u32);

/// A change to this node's own memberships, for the router to announce.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PgChange<'a> {
    /// `pid` joined `group` of `scope` once more.
    Join {
        /// The scope.
        scope: &'a str,
        /// The group.
        group: &'a str,
        /// The local member.
        pid: Pid,
    },
    /// `pid` left `group` of `scope` once.
    Leave {
        /// The scope.
        scope: &'a str,
        /// The group.
        group: &'a str,
        /// The local member.
        pid: Pid,
    },
    /// `pid` ended: every membership it had is gone.
    Gone {
        /// The local process that ended.
        pid: Pid,
    },
}

/// The process groups a node knows.
pub(crate) struct ProcessGroups {
    /// scope → group → member → times joined.
    scopes: HashMap<String, BTreeMap<String, BTreeMap<Pid, u32>>>,
    /// pid → group → times joined, to remove a pid in one sweep.
    by_pid: HashMap<Pid, HashMap<Key, u32>>,
    /// Groups with at least one member, across scopes.
    groups: usize,
    groups_max: usize,
    memberships_max: usize,
}

fn check_name(name: &str) -> Result<(), PgError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(PgError::BadName);
    }
    Ok(())
}

impl ProcessGroups {
    pub fn new(groups_max: usize, memberships_max: usize) -> Self {
        ProcessGroups {
            scopes: HashMap::new(),
            by_pid: HashMap::new(),
            groups: 0,
            groups_max,
            memberships_max,
        }
    }

    /// Add `times` memberships of `pid` to a group, within the limits.
    pub fn join(&mut self, scope: &str, group: &str, pid: Pid, times: u32) -> Result<(), PgError> {
        check_name(scope)?;
        check_name(group)?;
        let held: u64 = self
            .by_pid
            .get(&pid)
            .map_or(0, |g| g.values().map(|n| u64::from(*n)).sum());
        if held + u64::from(times) > self.memberships_max as u64 {
            return Err(PgError::MembershipLimit(self.memberships_max));
        }
        let exists = self
            .scopes
            .get(scope)
            .is_some_and(|groups| groups.contains_key(group));
        if !exists && self.groups >= self.groups_max {
            return Err(PgError::GroupLimit(self.groups_max));
        }
        if times == 0 {
            return Ok(());
        }
        if !exists {
            self.groups += 1;
        }
        *self
            .scopes
            .entry(scope.to_string())
            .or_default()
            .entry(group.to_string())
            .or_default()
            .entry(pid)
            .or_default() += times;
        *self
            .by_pid
            .entry(pid)
            .or_default()
            .entry((scope.to_string(), group.to_string()))
            .or_default() += times;
        Ok(())
    }

    /// Remove one membership of `pid`.
    pub fn leave(&mut self, scope: &str, group: &str, pid: Pid) -> Result<(), PgError> {
        check_name(scope)?;
        check_name(group)?;
        let key = (scope.to_string(), group.to_string());
        let Some(mine) = self.by_pid.get_mut(&pid) else {
            return Err(PgError::NotJoined);
        };
        let Some(n) = mine.get_mut(&key) else {
            return Err(PgError::NotJoined);
        };
        *n -= 1;
        if *n == 0 {
            mine.remove(&key);
            if mine.is_empty() {
                self.by_pid.remove(&pid);
            }
        }
        self.drop_from_group(&key, pid, 1);
        Ok(())
    }

    /// Remove every membership of `pid`; whether it had any.
    pub fn remove_pid(&mut self, pid: Pid) -> bool {
        let Some(mine) = self.by_pid.remove(&pid) else {
            return false;
        };
        for (key, n) in mine {
            self.drop_from_group(&key, pid, n);
        }
        true
    }

    /// Remove every membership of the pids `matches` picks (a node's).
    pub fn remove_where(&mut self, matches: impl Fn(&Pid) -> bool) {
        let pids: Vec<Pid> = self.by_pid.keys().filter(|p| matches(p)).copied().collect();
        for pid in pids {
            self.remove_pid(pid);
        }
    }

    fn drop_from_group(&mut self, key: &Key, pid: Pid, times: u32) {
        let (scope, group) = key;
        let Some(groups) = self.scopes.get_mut(scope) else {
            debug_assert!(false, "by_pid names a scope that has no groups");
            return;
        };
        let Some(members) = groups.get_mut(group) else {
            debug_assert!(false, "by_pid names a group that has no members");
            return;
        };
        if let Some(n) = members.get_mut(&pid) {
            *n = n.saturating_sub(times);
            if *n == 0 {
                members.remove(&pid);
            }
        }
        if members.is_empty() {
            groups.remove(group);
            self.groups -= 1;
            if groups.is_empty() {
                self.scopes.remove(scope);
            }
        }
    }

    /// Members of a group, sorted, a pid once per membership, those
    /// `keep` picks.
    pub fn members(&self, scope: &str, group: &str, keep: impl Fn(&Pid) -> bool) -> Vec<Pid> {
        let Some(members) = self.scopes.get(scope).and_then(|g| g.get(group)) else {
            return Vec::new();
        };
        members
            .iter()
            .filter(|(pid, _)| keep(pid))
            .flat_map(|(pid, n)| std::iter::repeat_n(*pid, *n as usize))
            .collect()
    }

    /// The groups of a scope that have members, sorted.
    pub fn which_groups(&self, scope: &str) -> Vec<String> {
        self.scopes
            .get(scope)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every membership of the pids `keep` picks (this node's, for a sync).
    pub fn memberships(&self, keep: impl Fn(&Pid) -> bool) -> Vec<Membership> {
        let mut all: Vec<Membership> = self
            .by_pid
            .iter()
            .filter(|(pid, _)| keep(pid))
            .flat_map(|(pid, groups)| {
                groups
                    .iter()
                    .map(|((s, g), n)| (s.clone(), g.clone(), *pid, *n))
            })
            .collect();
        all.sort();
        all
    }

    /// Groups with members, across scopes.
    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(node: u64, serial: u64) -> Pid {
        Pid {
            node,
            incarnation: 1,
            serial,
        }
    }

    fn any(_: &Pid) -> bool {
        true
    }

    #[test]
    fn joins_count_and_leaves_undo_them() {
        let mut pg = ProcessGroups::new(10, 10);
        let (a, b) = (pid(1, 1), pid(1, 2));
        pg.join("s", "g", a, 1).unwrap();
        pg.join("s", "g", a, 1).unwrap();
        pg.join("s", "g", b, 1).unwrap();
        assert_eq!(pg.members("s", "g", any), vec![a, a, b]);
        pg.leave("s", "g", a).unwrap();
        assert_eq!(pg.members("s", "g", any), vec![a, b]);
        pg.leave("s", "g", a).unwrap();
        assert_eq!(pg.leave("s", "g", a), Err(PgError::NotJoined));
        assert_eq!(pg.members("s", "g", any), vec![b]);
        assert_eq!(pg.members("other", "g", any), vec![]);
        assert_eq!(pg.which_groups("s"), vec!["g".to_string()]);
        pg.leave("s", "g", b).unwrap();
        assert_eq!(pg.group_count(), 0);
        assert!(pg.scopes.is_empty() && pg.by_pid.is_empty());
    }

    #[test]
    fn limits_and_names() {
        let mut pg = ProcessGroups::new(2, 3);
        let a = pid(1, 1);
        assert_eq!(pg.join("", "g", a, 1), Err(PgError::BadName));
        let long = "x".repeat(NAME_BYTES_MAX + 1);
        assert_eq!(pg.join("s", &long, a, 1), Err(PgError::BadName));
        pg.join("s", "g1", a, 2).unwrap();
        pg.join("s", "g2", a, 1).unwrap();
        assert_eq!(pg.join("s", "g1", a, 1), Err(PgError::MembershipLimit(3)));
        let b = pid(1, 2);
        assert_eq!(pg.join("t", "g1", b, 1), Err(PgError::GroupLimit(2)));
        pg.join("s", "g1", b, 1).unwrap();
        assert_eq!(pg.group_count(), 2);
    }

    #[test]
    fn removing_a_pid_or_a_node_sweeps_every_group() {
        let mut pg = ProcessGroups::new(10, 10);
        let (a, b, r) = (pid(1, 1), pid(1, 2), pid(2, 1));
        pg.join("s", "g", a, 2).unwrap();
        pg.join("t", "h", a, 1).unwrap();
        pg.join("s", "g", b, 1).unwrap();
        pg.join("s", "g", r, 1).unwrap();
        assert_eq!(
            pg.memberships(|p| p.node == 1),
            vec![
                ("s".into(), "g".into(), a, 2),
                ("s".into(), "g".into(), b, 1),
                ("t".into(), "h".into(), a, 1)
            ]
        );
        assert!(pg.remove_pid(a));
        assert!(!pg.remove_pid(a));
        assert_eq!(pg.members("s", "g", any), vec![b, r]);
        assert_eq!(pg.which_groups("t"), Vec::<String>::new());
        pg.remove_where(|p| p.node == 2);
        assert_eq!(pg.members("s", "g", any), vec![b]);
        assert_eq!(pg.members("s", "g", |p| p.node == 2), vec![]);
        assert_eq!(pg.group_count(), 1);
    }
}
