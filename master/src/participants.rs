//! The stores taking part in a resize or replace, watched while the operation waits for them.
//!
//! A store that drops off for a moment (a network blip longer than the heartbeat timeout) does
//! not end the operation: the wait pauses until it is back, for up to the operation grace
//! (`MasterConfig::operation_grace`). Past the grace, or when it comes back as another start of
//! the process (its start id changed: whatever the copy held in memory is gone) or without a
//! replica the operation needs, the operation rolls back. Pausing is safe because the same
//! process kept its state, and every condition the waits check (caught up, drained past a head)
//! is read from reports the store sends after it is back.
use crate::state::{Reject, State};
use std::collections::BTreeMap;
use std::time::Duration;
use vasto_wire::Status;

/// What one look at the participants found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Every participant is up with its replicas: the operation may go on.
    AllUp,
    /// A participant is down, for less than the grace so far: wait for it.
    Waiting,
}

/// The participating replica slots, and each store's connection generation when the wait began.
pub(crate) struct Participants {
    keyspace: String,
    /// (store, shard) of every replica taking part.
    slots: Vec<(String, u32)>,
    /// The generation of each participating store's connection and its start id when the wait
    /// began; a store with another generation has registered again since.
    generations: BTreeMap<String, (u64, u64)>,
    /// The store the last look waited for, to log when a wait for a store begins and ends.
    waiting_for: std::sync::Mutex<Option<String>>,
}

impl Participants {
    /// Watches the replicas of `shards` of `keyspace` (as placed now) from this moment on.
    pub fn of_shards(state: &State, keyspace: &str, shards: impl IntoIterator<Item = u32>) -> Self {
        let placement = state.keyspaces.get(keyspace).map(|ks| ks.placement.as_slice()).unwrap_or_default();
        let slots = shards
            .into_iter()
            .flat_map(|shard| placement.get(shard as usize).into_iter().flatten().filter(|s| !s.is_empty()).map(move |s| (s.clone(), shard)))
            .collect();
        Self::of_slots(state, keyspace, slots)
    }

    /// Watches the given (store, shard) replicas of `keyspace` from this moment on.
    pub fn of_slots(state: &State, keyspace: &str, slots: Vec<(String, u32)>) -> Self {
        let generations = slots.iter().filter_map(|(s, _)| state.stores.get(s).map(|r| (s.clone(), (r.generation, r.start_id)))).collect();
        Self { keyspace: keyspace.to_owned(), slots, generations, waiting_for: std::sync::Mutex::new(None) }
    }

    /// Looks at every participant at `now_ms`: all up, one down within `grace` (wait), or an
    /// error that rolls the operation back (down longer than `grace`, unknown, or back without
    /// a replica it held).
    pub fn check(&self, state: &State, now_ms: u64, grace: Duration) -> Result<Presence, Reject> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let mut waiting = None;
        for (store, shard) in &self.slots {
            let gone = |why: String| Err(Reject::new(Status::Unavailable, format!("store {store} holding shard {shard} of {}: {why}", self.keyspace)));
            let Some(record) = state.stores.get(store) else { return gone("unknown to this master".into()) };
            if !record.up {
                let down_ms = now_ms.saturating_sub(record.down_since_ms);
                if down_ms > grace_ms {
                    return gone(format!("down for {down_ms} ms, longer than the operation grace ({grace_ms} ms)"));
                }
                waiting.get_or_insert_with(|| store.clone());
                continue;
            }
            let Some(&(generation, start_id)) = self.generations.get(store) else { return gone("was not registered when the wait began".into()) };
            if record.start_id != start_id {
                return gone("restarted".into());
            }
            if record.generation != generation && !record.reports.iter().any(|r| r.keyspace == self.keyspace && r.shard == *shard) {
                return gone("came back without its replica".into());
            }
        }
        let mut last = self.waiting_for.lock().unwrap_or_else(|p| p.into_inner());
        if *last != waiting {
            match &waiting {
                Some(store) => tracing::warn!(keyspace = %self.keyspace, %store, ?grace, "a store taking part is down; waiting for it"),
                None => tracing::info!(keyspace = %self.keyspace, "every store taking part is up again"),
            }
            *last = waiting.clone();
        }
        Ok(if waiting.is_some() { Presence::Waiting } else { Presence::AllUp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CreatePlan;
    use vasto_wire::ShardInfo;

    /// Stores `ids` and keyspace `ks` of `shards` x `replicas` placed on them; each store's
    /// connection generation.
    fn state_with(ids: &[&str], ks: &str, shards: u32, replicas: u32) -> (State, BTreeMap<String, u64>) {
        let mut s = State::default();
        for id in ids {
            s.register(id, &format!("{id}:1"), &[], 1);
            s.note_start(id, 7);
        }
        let Ok(CreatePlan::New(placement)) = s.plan_create(ks, shards, replicas) else { panic!("plan") };
        s.commit_create(ks, 1, shards, replicas, placement, 1);
        let gens = s.stores.iter().map(|(id, r)| (id.clone(), r.generation)).collect();
        (s, gens)
    }

    fn info(ks: &str, shard: u32, replica: u32) -> ShardInfo {
        ShardInfo {
            keyspace: ks.into(),
            shard,
            shards: 1,
            replica,
            replicas: 2,
            committed: 1,
            committed_at_ms: 1,
            keyspace_incarnation: 1,
            ..Default::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn a_store_down_within_the_grace_pauses_and_one_down_longer_rolls_back() {
        let (mut s, gens) = state_with(&["a", "b"], "ks", 1, 2);
        let p = Participants::of_shards(&s, "ks", [0]);
        assert_eq!(p.check(&s, 100, GRACE).unwrap(), Presence::AllUp);
        s.store_down("b", gens["b"], 1_000);
        assert_eq!(p.check(&s, 1_500, GRACE).unwrap(), Presence::Waiting);
        assert_eq!(p.check(&s, 11_000, GRACE).unwrap(), Presence::Waiting, "exactly the grace still waits");
        let err = p.check(&s, 11_001, GRACE).unwrap_err();
        assert!(err.message.contains("store b") && err.message.contains("longer than the operation grace"), "{}", err.message);
    }

    #[test]
    fn a_store_back_with_its_replica_lets_the_operation_go_on() {
        let (mut s, gens) = state_with(&["a", "b"], "ks", 1, 2);
        let p = Participants::of_shards(&s, "ks", [0]);
        s.store_down("b", gens["b"], 1_000);
        s.register("b", "b:1", &[info("ks", 0, 1)], 2_000);
        s.note_start("b", 7);
        assert_eq!(p.check(&s, 2_100, GRACE).unwrap(), Presence::AllUp);
    }

    #[test]
    fn a_store_back_as_another_start_of_its_process_rolls_back_at_once() {
        let (mut s, gens) = state_with(&["a", "b"], "ks", 1, 2);
        let p = Participants::of_shards(&s, "ks", [0]);
        s.store_down("b", gens["b"], 1_000);
        s.register("b", "b:1", &[info("ks", 0, 1)], 2_000);
        s.note_start("b", 8);
        let err = p.check(&s, 2_100, GRACE).unwrap_err();
        assert!(err.message.contains("restarted"), "{}", err.message);
    }

    #[test]
    fn a_store_back_without_its_replica_rolls_back_at_once() {
        let (mut s, gens) = state_with(&["a", "b"], "ks", 1, 2);
        let p = Participants::of_shards(&s, "ks", [0]);
        s.store_down("b", gens["b"], 1_000);
        s.register("b", "b:1", &[], 1_200);
        s.note_start("b", 7);
        let err = p.check(&s, 1_300, GRACE).unwrap_err();
        assert!(err.message.contains("came back without its replica"), "{}", err.message);
    }

    #[test]
    fn a_store_the_master_does_not_know_rolls_back() {
        let (s, _) = state_with(&["a"], "ks", 1, 1);
        let p = Participants::of_slots(&s, "ks", vec![("ghost".into(), 0)]);
        assert!(p.check(&s, 0, GRACE).is_err());
    }
}
