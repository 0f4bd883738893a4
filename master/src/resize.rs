//! Resizing a keyspace. Growing: new shards are created and listed after the current ones
//! (clients keep hashing by the old count); their replicas copy the keys that move to them from
//! every replica of the old shards. Shrinking: the remaining shards take the smaller layout and
//! copy every key of the retiring shards. In both, the sources then stop taking the keys that
//! move (wrong-shard), the targets drain what is left, and the shard count switches. Lag reports
//! of these copies name the source as `store#shard`.
use crate::admin::Done;
use crate::placement::place;
use crate::state::{Reject, State, MAX_SHARDS};
use vasto_wire::{ShardInfo, Status};

/// The peer name a new shard's replica reports for its copy from `store`'s replica of `shard`.
pub(crate) fn source_peer(store: &str, shard: u32) -> String {
    format!("{store}#{shard}")
}

impl State {
    /// Validates a resize of `name` to `shards` and places the new shards. `Ok(None)`: nothing
    /// to do (already that size).
    pub fn plan_resize(&self, name: &str, shards: u32) -> Result<Option<Vec<Vec<String>>>, Reject> {
        let Some(ks) = self.keyspaces.get(name) else {
            return Err(Reject::new(Status::UnknownKeyspace, format!("keyspace {name} does not exist")));
        };
        if self.is_busy(name) {
            return Err(Reject::bad(format!("another operation on keyspace {name} is in progress")));
        }
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(Reject::bad(format!("shards must be in 1..={MAX_SHARDS}, got {shards}")));
        }
        if shards == ks.shards {
            return Ok(None);
        }
        if let Some((shard, _)) = ks.placement.iter().enumerate().find(|(_, row)| row.iter().any(|s| !self.stores.get(s).is_some_and(|r| r.up))) {
            return Err(Reject::bad(format!("a replica of shard {shard} of {name} is down; bring it back before resizing")));
        }
        if let Some((store, info)) = self.strays(name).into_iter().next() {
            return Err(Reject::bad(format!(
                "store {store} holds an extra replica of shard {} of {name} (left by an interrupted replace); it is being drained and dropped, try again shortly",
                info.shard
            )));
        }
        if shards < ks.shards {
            return Ok(Some(Vec::new()));
        }
        let candidates = self.enough_candidates("new shards need", ks.replicas)?;
        Ok(Some(place(&candidates, self.load(), shards - ks.shards, ks.replicas)))
    }

    /// The shards receiving keys in the resize in progress, and the shards giving them:
    /// growing m -> n: [m, n) from [0, m); shrinking n -> m: [0, m) from [m, n).
    pub fn resize_ranges(&self, name: &str) -> Option<(std::ops::Range<u32>, std::ops::Range<u32>)> {
        let ks = self.keyspaces.get(name)?;
        vasto_wire::resize_ranges(ks.shards, ks.resizing_to)
    }

    /// Every replica of the shards in `range`, serving `shards` shards and keeping the keys of
    /// `committed` shards.
    pub fn shard_infos(&self, name: &str, range: std::ops::Range<u32>, shards: u32, committed: u32) -> Vec<(String, ShardInfo)> {
        let Some(ks) = self.keyspaces.get(name) else { return Vec::new() };
        range
            .filter_map(|shard| ks.placement.get(shard as usize).map(|row| (shard, row)))
            .flat_map(|(shard, row)| {
                row.iter()
                    .enumerate()
                    .map(move |(replica, store)| (store.clone(), ShardInfo { shards, committed, ..ks.shard_info(name, shard, replica as u32) }))
            })
            .collect()
    }

    /// Lists the new shards (marking the keyspace busy) and bumps the version.
    pub fn begin_resize(&mut self, name: &str, shards: u32, new_rows: Vec<Vec<String>>, now_ms: u64) -> bool {
        if !self.begin(name, new_rows.clone()) {
            return false;
        }
        if let Some(ks) = self.keyspaces.get_mut(name) {
            ks.placement.extend(new_rows);
            ks.resizing_to = shards;
        }
        self.bump(name, now_ms);
        true
    }

    /// True when every live replica of every receiving shard reports its copy from every live
    /// replica of every giving shard as caught up.
    pub fn resize_copied(&self, name: &str) -> bool {
        let (Some(ks), Some((targets, sources))) = (self.keyspaces.get(name), self.resize_ranges(name)) else { return false };
        let up = |s: &String| self.stores.get(s).is_some_and(|r| r.up);
        let row = |shard: u32| ks.placement.get(shard as usize).map(Vec::as_slice).unwrap_or_default();
        let sources: Vec<String> = sources.flat_map(|s| row(s).iter().filter(|p| up(p)).map(move |p| source_peer(p, s))).collect();
        targets.into_iter().all(|t| row(t).iter().filter(|s| up(s)).all(|store| sources.iter().all(|src| self.reports_caught_up(store, name, t, src))))
    }

    /// True when every replica of every receiving shard reports having applied the log of every
    /// giving replica in `switched` up to the head it answered when it switched layouts (after
    /// which it takes no write of a moving key).
    pub fn resize_drained(&self, name: &str, switched: &[Done]) -> bool {
        let (Some(ks), Some((targets, _))) = (self.keyspaces.get(name), self.resize_ranges(name)) else { return false };
        targets.into_iter().all(|t| {
            let row = ks.placement.get(t as usize).map(Vec::as_slice).unwrap_or_default();
            row.iter().all(|store| switched.iter().all(|d| self.reports_past(store, name, t, &source_peer(&d.store, d.info.shard), d.mark)))
        })
    }

    /// The time a resize of `name` is committed at: now, but after the previous commit.
    pub fn next_commit_ms(&self, name: &str, now_ms: u64) -> u64 {
        self.keyspaces.get(name).map_or(now_ms, |ks| now_ms.max(ks.committed_at_ms + 1))
    }

    /// Switches the keyspace to its new shard count (in force since `committed_at_ms`) and
    /// bumps the version.
    pub fn commit_resize(&mut self, name: &str, committed_at_ms: u64, now_ms: u64) {
        let mut shards = None;
        if let Some(ks) = self.keyspaces.get_mut(name) {
            ks.committed_at_ms = committed_at_ms;
            ks.shards = ks.resizing_to;
            ks.placement.truncate(ks.shards as usize);
            ks.resizing_to = 0;
            shards = Some(ks.shards);
        }
        if let Some(shards) = shards {
            self.note_commit(name, shards, committed_at_ms);
        }
        self.end(name);
        self.bump(name, now_ms);
    }

    /// Forgets the new shards (the old layout stays) and bumps the version.
    pub fn abort_resize(&mut self, name: &str, now_ms: u64) {
        if let Some(ks) = self.keyspaces.get_mut(name) {
            ks.placement.truncate(ks.shards as usize);
            ks.resizing_to = 0;
        }
        self.end(name);
        self.bump(name, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LogMark;
    use vasto_wire::ReplicaLag;

    #[test]
    fn grow_lists_new_shards_and_switches_once_copied_and_drained() {
        let mut s = State::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.register(id, &format!("127.0.0.1:{i}"), &[], 1);
        }
        s.commit_create("ks", 9, 2, 1, vec![vec!["a".into()], vec!["b".into()]], 2);
        assert_eq!(s.plan_resize("ks", 2).unwrap(), None);
        let rows = s.plan_resize("ks", 3).unwrap().unwrap();
        assert_eq!(rows, vec![vec!["c".to_owned()]], "least-loaded store");
        assert!(s.begin_resize("ks", 3, rows, 3));
        let table = s.table("ks");
        assert_eq!((table.shards, table.resizing_to, table.routes.len()), (2, 3, 3));
        assert_eq!(s.resize_ranges("ks"), Some((2..3, 0..2)));
        assert_eq!(s.shard_infos("ks", 2..3, 3, 2)[0].1.shards, 3);
        assert_eq!(s.shard_infos("ks", 0..2, 3, 2).len(), 2);
        assert!(!s.resize_copied("ks"));
        let lag = |peer: &str, position| ReplicaLag {
            keyspace: "ks".into(),
            shard: 2,
            peer: peer.into(),
            entries: 0,
            lag_ms: 0,
            caught_up: true,
            position,
            incarnation: 7,
        };
        let g = s.stores["c"].generation;
        s.heartbeat("c", g, vec![lag("a#0", 3), lag("b#1", 0)], 4);
        let switched =
            |store: &str, shard, seq| Done { store: store.into(), info: s.keyspaces["ks"].shard_info("ks", shard, 0), mark: LogMark { incarnation: 7, seq } };
        let heads = [switched("a", 0, 5), switched("b", 1, 0)];
        assert!(s.resize_copied("ks") && !s.resize_drained("ks", &heads), "a's head at the switch is 5");
        s.heartbeat("c", g, vec![lag("a#0", 5), lag("b#1", 0)], 5);
        assert!(s.resize_drained("ks", &heads));
        let other_log = [Done { mark: LogMark { incarnation: 8, seq: 5 }, ..heads[0].clone() }];
        assert!(!s.resize_drained("ks", &other_log), "a position of another incarnation proves nothing");
        s.commit_resize("ks", 6, 6);
        let table = s.table("ks");
        assert_eq!((table.shards, table.resizing_to, table.routes.len()), (3, 0, 3));
        assert_eq!((s.catalog.keyspaces["ks"].shards, s.catalog.keyspaces["ks"].committed_at_ms), (3, 6), "the catalog records the commit");

        // Shrink 3 -> 1: shard 0 receives from shards 1 and 2, then the extra rows go.
        assert_eq!(s.plan_resize("ks", 1).unwrap(), Some(Vec::new()));
        assert!(s.begin_resize("ks", 1, Vec::new(), 7));
        assert_eq!(s.resize_ranges("ks"), Some((0..1, 1..3)));
        let table = s.table("ks");
        assert_eq!((table.shards, table.resizing_to, table.routes.len()), (3, 1, 3));
        let lag0 =
            |peer: &str| ReplicaLag { keyspace: "ks".into(), shard: 0, peer: peer.into(), entries: 0, lag_ms: 0, caught_up: true, position: 0, incarnation: 7 };
        let ga = s.stores["a"].generation;
        s.heartbeat("a", ga, vec![lag0("b#1")], 8);
        assert!(!s.resize_copied("ks"), "shard 2 not copied yet");
        s.heartbeat("a", ga, vec![lag0("b#1"), lag0("c#2")], 9);
        assert!(s.resize_copied("ks"));
        s.commit_resize("ks", 10, 10);
        let table = s.table("ks");
        assert_eq!((table.shards, table.resizing_to, table.routes.len()), (1, 0, 1));
    }
}
