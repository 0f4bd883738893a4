//! Replace-store state: a store joining a keyspace to take over the replica slots of another.
//!
//! While it joins, the new store is listed after the regular replicas of each shard it takes
//! over, marked catching up (clients use it only if nothing else is live), so it and its peers
//! follow each other; once it has caught up with every live peer, it takes the old store's slot.
use crate::state::{LogMark, Reject, State};
use std::collections::BTreeMap;
use vasto_wire::{ReplicaRoute, ShardInfo, Status};

/// A store taking over replica `replica` of `shard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joining {
    pub shard: u32,
    pub replica: u32,
    pub store: String,
}

/// What a replace request amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplacePlan {
    /// `to` already holds every slot `from` had (or `from` holds nothing and `to` does).
    Done,
    /// Resolved ids and the `(shard, replica)` slots to move.
    Move { from: String, to: String, slots: Vec<(u32, u32)> },
}

impl State {
    /// The store whose id or address is `s`.
    fn resolve(&self, s: &str) -> Option<String> {
        if self.stores.contains_key(s) {
            return Some(s.to_owned());
        }
        self.stores.iter().find(|(_, r)| r.address == s).map(|(id, _)| id.clone())
    }

    /// Validates a replace of store `from` by store `to` (ids or addresses) in keyspace `name`.
    pub fn plan_replace(&self, name: &str, from: &str, to: &str) -> Result<ReplacePlan, Reject> {
        let Some(ks) = self.keyspaces.get(name) else {
            return Err(Reject::new(Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
        };
        if self.is_busy(name) {
            return Err(Reject::bad(format!("another operation on keyspace {name} is in progress")));
        }
        let to_id = self.resolve(to).ok_or_else(|| Reject::bad(format!("no store {to} has registered")))?;
        if !self.stores.get(&to_id).is_some_and(|s| s.up) {
            return Err(Reject::bad(format!("store {to} is down")));
        }
        if self.stores.get(&to_id).is_some_and(|s| s.disk_full) {
            return Err(Reject::bad(format!("store {to} has a full disk: it takes no new replicas")));
        }
        let from_id = self.resolve(from).unwrap_or_else(|| from.to_owned());
        let slots: Vec<(u32, u32)> = ks
            .placement
            .iter()
            .enumerate()
            .flat_map(|(shard, row)| row.iter().enumerate().filter(|(_, s)| **s == from_id).map(move |(replica, _)| (shard as u32, replica as u32)))
            .collect();
        if slots.is_empty() {
            return if ks.placement.iter().flatten().any(|s| *s == to_id) {
                Ok(ReplacePlan::Done)
            } else {
                Err(Reject::bad(format!("store {from} holds no replica of {name}")))
            };
        }
        if let Some((shard, _)) = slots.iter().find(|(shard, _)| ks.placement[*shard as usize].contains(&to_id)) {
            return Err(Reject::bad(format!("store {to} already holds a replica of shard {shard} of {name}")));
        }
        let up = |s: &String| self.stores.get(s).is_some_and(|r| r.up);
        let retirable = self.strays(name).into_iter().find(|(_, i)| ks.placement.get(i.shard as usize).is_some_and(|row| row.iter().all(up)));
        if let Some((store, info)) = retirable {
            return Err(Reject::bad(format!(
                "store {store} holds an extra replica of shard {} of {name} (left by an interrupted replace); it is being drained and dropped, try again shortly",
                info.shard
            )));
        }
        // The old copies drain into every other replica before they go: each must be up to say
        // it applied them (a replica that missed the drain could never get those writes again).
        for (shard, _) in &slots {
            if let Some(down) = ks.placement[*shard as usize].iter().find(|s| **s != from_id && !up(s)) {
                return Err(Reject::bad(format!("replica of shard {shard} of {name} on store {down} is down; bring it back (or replace it) first")));
            }
        }
        Ok(ReplacePlan::Move { from: from_id, to: to_id, slots })
    }

    /// Lists `to` as joining every slot (marking the keyspace busy) and bumps the version.
    pub fn begin_join(&mut self, name: &str, to: &str, slots: &[(u32, u32)], now_ms: u64) -> bool {
        if !self.begin(name, Vec::new()) {
            return false;
        }
        if let Some(ks) = self.keyspaces.get_mut(name) {
            ks.joining = slots.iter().map(|&(shard, replica)| Joining { shard, replica, store: to.to_owned() }).collect();
        }
        self.bump(name, now_ms);
        true
    }

    /// True once `to` reports, for every slot it joins, having caught up with every live peer.
    pub fn join_caught_up(&self, name: &str, to: &str) -> bool {
        let Some(ks) = self.keyspaces.get(name) else { return false };
        ks.joining.iter().all(|j| {
            ks.placement[j.shard as usize]
                .iter()
                .filter(|p| *p != to && self.stores.get(*p).is_some_and(|s| s.up))
                .all(|peer| self.reports_caught_up(to, name, j.shard, peer))
        })
    }

    /// True once every other replica (the joining one included) of every shard being taken from
    /// `from` is up and reports having applied `from`'s change log up to its final head
    /// (`finals[shard]`, from the freeze).
    pub fn drained(&self, name: &str, from: &str, finals: &BTreeMap<u32, LogMark>) -> bool {
        let Some(ks) = self.keyspaces.get(name) else { return false };
        ks.joining.iter().all(|j| {
            let Some(&mark) = finals.get(&j.shard) else { return false };
            let mut row = ks.placement[j.shard as usize].iter().chain(std::iter::once(&j.store)).filter(|s| *s != from);
            row.all(|s| self.stores.get(s).is_some_and(|r| r.up) && self.reports_past(s, name, j.shard, from, mark))
        })
    }

    /// Gives every joined slot to `to`, ends the join and bumps the version.
    pub fn commit_join(&mut self, name: &str, now_ms: u64) {
        if let Some(ks) = self.keyspaces.get_mut(name) {
            for j in std::mem::take(&mut ks.joining) {
                ks.placement[j.shard as usize][j.replica as usize] = j.store;
            }
        }
        self.end(name);
        self.bump(name, now_ms);
    }

    /// Asks the replace or resize in progress on `name` to roll back, or, with none running,
    /// has `reconcile` roll back a resize interrupted by a master restart even though some
    /// replicas have not reported (see `reconcile`); false when there is nothing to cancel.
    pub fn request_cancel(&mut self, name: &str) -> bool {
        let running = self.is_busy(name) && self.keyspaces.get(name).is_some_and(|ks| !ks.joining.is_empty() || ks.resizing_to != 0);
        if running {
            self.cancels.insert(name.to_owned());
            return true;
        }
        let interrupted = !self.is_busy(name) && self.reconcile_waiting(name).is_some_and(|w| w.contains("resize"));
        if interrupted {
            self.forced_rollbacks.insert(name.to_owned());
        }
        interrupted
    }

    /// True (once) when a cancel of the operation on `name` was requested.
    pub fn take_cancel(&mut self, name: &str) -> bool {
        self.cancels.remove(name)
    }

    /// Abandons a join (the old store keeps its slots) and bumps the version.
    pub fn abort_join(&mut self, name: &str, now_ms: u64) {
        if let Some(ks) = self.keyspaces.get_mut(name) {
            ks.joining.clear();
        }
        self.end(name);
        self.bump(name, now_ms);
    }

    /// Routes of the stores joining `shard` of `name`: listed after the regular replicas, always
    /// marked catching up.
    pub fn joining_routes(&self, name: &str, shard: u32) -> Vec<ReplicaRoute> {
        let Some(ks) = self.keyspaces.get(name) else { return Vec::new() };
        ks.joining.iter().filter(|j| j.shard == shard).map(|j| self.extra_route(&j.store)).collect()
    }

    /// The shard replicas `store` must create (or drop) for the slots of a join, created now.
    pub fn join_infos(&self, name: &str, slots: &[(u32, u32)], now_ms: u64) -> Vec<ShardInfo> {
        let Some(ks) = self.keyspaces.get(name) else { return Vec::new() };
        slots.iter().map(|&(shard, replica)| ShardInfo { created_at_ms: now_ms, ..ks.shard_info(name, shard, replica) }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vasto_wire::ReplicaLag;

    fn state() -> State {
        let mut s = State::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.register(id, &format!("127.0.0.1:{i}"), &[], 1);
        }
        let placement = vec![vec!["a".to_owned(), "b".to_owned()], vec!["b".to_owned(), "a".to_owned()]];
        s.commit_create("ks", 1, 2, 2, placement, 2);
        s
    }

    #[test]
    fn replace_moves_every_slot_after_catching_up() {
        let mut s = state();
        let plan = s.plan_replace("ks", "a", "127.0.0.1:2").unwrap();
        let ReplacePlan::Move { from, to, slots } = plan else { panic!("expected a move") };
        assert_eq!((from.as_str(), to.as_str(), slots.clone()), ("a", "c", vec![(0, 0), (1, 1)]));
        assert!(s.begin_join("ks", "c", &slots, 3));
        assert!(s.plan_replace("ks", "a", "c").is_err(), "busy while joining");
        let table = s.table("ks");
        assert_eq!(table.routes[0].len(), 3, "the joining store is listed after the replicas");
        assert!(table.routes[0][2].catching_up && table.routes[0][2].store_id == "c");
        assert!(!s.join_caught_up("ks", "c"));
        let lag =
            |shard, peer: &str| ReplicaLag { keyspace: "ks".into(), shard, peer: peer.into(), entries: 0, lag_ms: 0, caught_up: true, ..Default::default() };
        let generation = s.stores["c"].generation;
        s.heartbeat("c", generation, vec![lag(0, "a"), lag(0, "b"), lag(1, "a")], 4);
        assert!(!s.join_caught_up("ks", "c"), "shard 1 has not caught up with b");
        s.heartbeat("c", generation, vec![lag(0, "a"), lag(0, "b"), lag(1, "a"), lag(1, "b")], 5);
        assert!(s.join_caught_up("ks", "c"));
        // a was frozen at heads 10 (shard 0) and 3 (shard 1) of its log incarnation 5.
        let finals: BTreeMap<u32, LogMark> = [(0, LogMark { incarnation: 5, seq: 10 }), (1, LogMark { incarnation: 5, seq: 3 })].into();
        let at = |shard, peer: &str, incarnation, position| ReplicaLag { incarnation, position, ..lag(shard, peer) };
        assert!(!s.drained("ks", "a", &finals), "nobody has reported a position past a's final heads");
        s.heartbeat("c", generation, vec![at(0, "a", 5, 10), lag(0, "b"), at(1, "a", 5, 3), lag(1, "b")], 6);
        let gb = s.stores["b"].generation;
        s.heartbeat("b", gb, vec![at(0, "a", 5, 10), at(1, "a", 5, 2)], 6);
        assert!(!s.drained("ks", "a", &finals), "b has not applied a's last entry of shard 1");
        s.heartbeat("b", gb, vec![at(0, "a", 5, 10), at(1, "a", 4, 99)], 6);
        assert!(!s.drained("ks", "a", &finals), "a position of another incarnation of a's log proves nothing");
        s.heartbeat("b", gb, vec![at(0, "a", 5, 11), at(1, "a", 5, 3)], 6);
        assert!(s.drained("ks", "a", &finals));
        s.store_down("b", gb, 6);
        assert!(!s.drained("ks", "a", &finals), "a replica that is down cannot confirm");
        s.register("b", "127.0.0.1:1", &[], 6);
        let gb = s.stores["b"].generation;
        s.heartbeat("b", gb, vec![at(0, "a", 5, 11), at(1, "a", 5, 3)], 6);
        s.commit_join("ks", 6);
        let table = s.table("ks");
        assert_eq!(table.routes[0].iter().map(|r| r.store_id.as_str()).collect::<Vec<_>>(), vec!["c", "b"]);
        assert_eq!(table.routes[1].iter().map(|r| r.store_id.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
        assert_eq!(s.plan_replace("ks", "a", "c").unwrap(), ReplacePlan::Done, "idempotent");
    }

    #[test]
    fn replace_refusals() {
        let mut s = state();
        assert!(s.plan_replace("nope", "a", "c").is_err());
        assert!(s.plan_replace("ks", "a", "b").is_err(), "b already holds those shards");
        assert_eq!(s.plan_replace("ks", "c", "a").unwrap(), ReplacePlan::Done, "nothing to move (a finished replace looks the same)");
        assert!(s.plan_replace("ks", "c", "127.0.0.1:9").is_err(), "unknown target");
        let generation = s.stores["c"].generation;
        s.store_down("c", generation, 3);
        assert!(s.plan_replace("ks", "a", "c").is_err(), "c is down");
        let mut s = state();
        let ReplacePlan::Move { slots, .. } = s.plan_replace("ks", "a", "c").unwrap() else { panic!() };
        s.begin_join("ks", "c", &slots, 3);
        assert!(s.request_cancel("ks"));
        assert!(s.take_cancel("ks") && !s.take_cancel("ks"), "a cancel is taken once");
        s.abort_join("ks", 4);
        assert!(!s.request_cancel("ks"), "nothing left to cancel");
        assert_eq!(s.table("ks").routes[0].len(), 2);
        assert!(matches!(s.plan_replace("ks", "a", "c"), Ok(ReplacePlan::Move { .. })));
        // A cancel that arrives too late for one operation (it finished without looking) never
        // cancels the next one.
        assert!(s.begin_join("ks", "c", &slots, 5));
        assert!(s.request_cancel("ks"));
        s.commit_join("ks", 6);
        let ReplacePlan::Move { slots, .. } = s.plan_replace("ks", "c", "a").unwrap() else { panic!() };
        assert!(s.begin_join("ks", "a", &slots, 7));
        assert!(!s.take_cancel("ks"));
    }
}
