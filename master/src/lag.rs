//! Replication lags reported in store heartbeats, and the `catching_up` flag of routes derived
//! from them.
//!
//! A replica route is catching up when its store is up and that store's latest heartbeat reports,
//! for that (keyspace, shard), a lag that has not caught up towards a peer store that is up, or
//! no lag at all towards a live peer placed on the shard (it is not following that peer yet). The
//! flag depends on the store's own lags and on its peers being up, so heartbeats, stores going
//! down and stores (re)registering can all flip it; each of them bumps and pushes the keyspaces
//! whose flags changed, and nothing else.
use crate::state::{LogMark, State};
use std::collections::BTreeSet;
use vasto_wire::ReplicaLag;

/// Every catching-up route, as (keyspace, shard, store id).
pub(crate) type CatchingUp = BTreeSet<(String, u32, String)>;

impl State {
    /// True when store `id` is up and its latest heartbeat reports, for `shard` of `keyspace`, a
    /// lag with `caught_up == false` towards a peer store that is up.
    ///
    /// A replica whose store reports no lag at all towards a live peer placed on the shard has
    /// not said how far behind that peer it is, so it counts as catching up too: a store that
    /// has not sent a heartbeat since it registered (it would otherwise serve reads before it
    /// has caught up after a crash), and one whose heartbeat went out before its replication
    /// had the routing table naming the peer (a store's first heartbeat goes out right after
    /// it registers).
    pub fn catching_up(&self, id: &str, keyspace: &str, shard: u32) -> bool {
        self.stores.get(id).is_some_and(|s| s.up)
            && (self.lags_of(id, keyspace, shard).any(|l| self.is_lagging(l))
                || self.live_peers(id, keyspace, shard).any(|peer| !self.lags_of(id, keyspace, shard).any(|l| l.peer == peer)))
    }

    /// The stores other than `id` placed on `shard` of `keyspace` that are up.
    fn live_peers<'a>(&'a self, id: &'a str, keyspace: &str, shard: u32) -> impl Iterator<Item = &'a str> + 'a {
        let row = self.keyspaces.get(keyspace).and_then(|ks| ks.placement.get(shard as usize));
        row.into_iter().flatten().map(String::as_str).filter(move |s| *s != id && self.stores.get(*s).is_some_and(|r| r.up))
    }

    /// True when store `id` last reported its copy of `shard` of `keyspace` from `peer` (a store
    /// id, or `store#shard` for a resize copy) as caught up in its current session.
    pub fn reports_caught_up(&self, id: &str, keyspace: &str, shard: u32, peer: &str) -> bool {
        self.lags_of(id, keyspace, shard).any(|l| l.peer == peer && l.caught_up)
    }

    /// True when store `id` last reported having applied `peer`'s change log (of `mark`'s
    /// incarnation) at or past `mark`: every write `peer` logged up to it is here. Positions are
    /// the applied ones, saved with the data, so this holds whatever happened to the session.
    pub fn reports_past(&self, id: &str, keyspace: &str, shard: u32, peer: &str, mark: LogMark) -> bool {
        self.lags_of(id, keyspace, shard).any(|l| l.peer == peer && l.incarnation == mark.incarnation && l.position >= mark.seq)
    }

    /// The lags store `id` last reported for `shard` of `keyspace` (none while it is down).
    pub fn lags_of<'a>(&'a self, id: &str, keyspace: &'a str, shard: u32) -> impl Iterator<Item = &'a ReplicaLag> + 'a {
        let lags = self.stores.get(id).filter(|s| s.up).map_or(&[][..], |s| s.lags.as_slice());
        lags.iter().filter(move |l| l.keyspace == keyspace && l.shard == shard)
    }

    /// Replaces the lags of store `id` with those of its latest heartbeat. Returns `None` when
    /// `generation` is no longer the store's live connection, else the keyspaces where the
    /// `catching_up` flag of one of its routes changed (versions bumped; usually none).
    pub fn heartbeat(&mut self, id: &str, generation: u64, lags: Vec<ReplicaLag>, now_ms: u64) -> Option<Vec<String>> {
        if !self.is_current(id, generation) {
            return None;
        }
        let before = self.catching_of(id);
        self.stores.get_mut(id)?.lags = lags;
        let after = self.catching_of(id);
        let changed: BTreeSet<String> = before.symmetric_difference(&after).map(|(ks, _)| ks.clone()).collect();
        if !changed.is_empty() {
            tracing::info!(store = id, catching_up = ?after, "catching-up replicas changed");
        }
        Some(self.bump_all(changed, now_ms))
    }

    /// Every catching-up route of the routing tables.
    pub(crate) fn catching_all(&self) -> CatchingUp {
        let mut all = CatchingUp::new();
        for id in self.stores.keys() {
            all.extend(self.catching_of(id).into_iter().map(|(ks, shard)| (ks, shard, id.clone())));
        }
        all
    }

    /// Keyspaces whose catching-up routes differ from `before` (a [`State::catching_all`]
    /// taken before a change).
    pub(crate) fn catching_changes(&self, before: &CatchingUp) -> BTreeSet<String> {
        let after = self.catching_all();
        before.symmetric_difference(&after).map(|(ks, _, _)| ks.clone()).collect()
    }

    /// The (keyspace, shard) routes of store `id` that are catching up. Only replicas the
    /// routing tables place on `id` count: nothing else is visible to clients.
    fn catching_of(&self, id: &str) -> BTreeSet<(String, u32)> {
        let placed = self.keyspaces.iter().flat_map(|(name, ks)| {
            ks.placement.iter().enumerate().filter(|(_, row)| row.iter().any(|s| s == id)).map(move |(shard, _)| (name.clone(), shard as u32))
        });
        placed.filter(|(name, shard)| self.catching_up(id, name, *shard)).collect()
    }

    /// A lag that keeps its replica catching up: not caught up, towards a peer that is up.
    fn is_lagging(&self, lag: &ReplicaLag) -> bool {
        !lag.caught_up && self.stores.get(&lag.peer).is_some_and(|p| p.up)
    }
}
