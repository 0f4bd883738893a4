//! Where new replicas go: on stores that are up and whose disk is not full; the replicas of a
//! shard in distinct zones first, then on distinct stores; the least loaded store first, then
//! the one with the most free disk.
use crate::state::{Reject, State};
use std::collections::HashMap;
use vasto_wire::DiskReport;

/// What a create with replicas it could not spread over zones is answered after "keyspace X
/// created" (the CLI prints what follows as a warning).
pub const ZONE_WARNING: &str = "; warning: ";

/// A store new replicas may be placed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    pub id: &'a str,
    /// Its failure domain; a store without one is a domain of its own.
    pub zone: &'a str,
    pub free_bytes: u64,
}

impl Candidate<'_> {
    /// The failure domain two replicas of one shard should not share.
    fn domain(&self) -> (&str, &str) {
        if self.zone.is_empty() {
            ("", self.id)
        } else {
            (self.zone, "")
        }
    }
}

impl State {
    /// Records the zone a store's registration carried.
    pub fn note_zone(&mut self, id: &str, zone: &str) {
        if let Some(record) = self.stores.get_mut(id) {
            zone.clone_into(&mut record.zone);
        }
    }

    /// Records the disk a store reported (registration or heartbeat; a report without a size
    /// says nothing).
    pub fn note_disk(&mut self, id: &str, disk: DiskReport) {
        if let Some(record) = self.stores.get_mut(id).filter(|_| disk.capacity_bytes > 0) {
            if record.disk_full != disk.full {
                tracing::warn!(
                    store = id,
                    free_bytes = disk.free_bytes,
                    full = disk.full,
                    "store disk {}",
                    if disk.full { "is full: it takes no new replicas" } else { "has room again" }
                );
            }
            (record.capacity_bytes, record.free_bytes, record.disk_full) = (disk.capacity_bytes, disk.free_bytes, disk.full);
        }
    }

    /// The stores new replicas may be placed on: up, with a disk that is not full.
    pub(crate) fn candidates(&self) -> Vec<Candidate<'_>> {
        self.stores.iter().filter(|(_, s)| s.up && !s.disk_full).map(|(id, s)| Candidate { id, zone: &s.zone, free_bytes: s.free_bytes }).collect()
    }

    /// Refuses a placement needing `replicas` distinct stores when fewer can take replicas,
    /// saying why (down, or disk full).
    pub(crate) fn enough_candidates(&self, what: &str, replicas: u32) -> Result<Vec<Candidate<'_>>, Reject> {
        let candidates = self.candidates();
        if replicas as usize <= candidates.len() {
            return Ok(candidates);
        }
        let up = self.stores.values().filter(|s| s.up).count();
        let full: Vec<&str> = self.stores.iter().filter(|(_, s)| s.up && s.disk_full).map(|(id, _)| id.as_str()).collect();
        let mut why = format!("{what} {replicas} distinct stores but only {up} are alive");
        if !full.is_empty() {
            why.push_str(&format!(" and of those {} has a full disk (takes no new replicas)", full.join(", ")));
        }
        Err(Reject::bad(why))
    }

    /// The shards of `placement` with two replicas in one zone, and the zones there are.
    pub(crate) fn zone_clashes(&self, placement: &[Vec<String>]) -> Option<String> {
        let zone = |id: &String| self.stores.get(id).map_or("", |s| s.zone.as_str());
        let clashing: Vec<String> = placement
            .iter()
            .enumerate()
            .filter(|(_, row)| row.iter().enumerate().any(|(i, a)| !zone(a).is_empty() && row[..i].iter().any(|b| zone(b) == zone(a))))
            .map(|(shard, _)| shard.to_string())
            .collect();
        if clashing.is_empty() {
            return None;
        }
        let mut zones: Vec<&str> = self.candidates().iter().map(|c| c.zone).filter(|z| !z.is_empty()).collect();
        zones.sort_unstable();
        zones.dedup();
        let shown: Vec<&str> = clashing.iter().take(8).map(String::as_str).collect();
        let more = if clashing.len() > shown.len() { format!(" and {} more", clashing.len() - shown.len()) } else { String::new() };
        Some(format!(
            "replicas of shard(s) {}{more} share a zone: the stores that can take replicas are in {} zone(s) ({})",
            shown.join(", "),
            zones.len(),
            zones.join(", ")
        ))
    }
}

/// Places `replicas` copies of each of `shards` shards on distinct stores of `candidates`:
/// in zones the shard has no replica in yet when there are any, then the least loaded, then
/// the one with the most free disk (in whole GiB, so stores on one filesystem tie), then by
/// id. Caller guarantees `replicas <= candidates.len()`.
pub(crate) fn place<'a>(candidates: &[Candidate<'a>], mut load: HashMap<&'a str, usize>, shards: u32, replicas: u32) -> Vec<Vec<String>> {
    let mut placement = Vec::with_capacity(shards as usize);
    for _ in 0..shards {
        let mut row: Vec<&Candidate<'a>> = Vec::with_capacity(replicas as usize);
        for _ in 0..replicas {
            let pick = candidates.iter().filter(|c| !row.iter().any(|r| r.id == c.id)).min_by_key(|c| {
                let zone_taken = row.iter().any(|r| r.domain() == c.domain());
                (zone_taken, load.get(c.id).copied().unwrap_or(0), std::cmp::Reverse(c.free_bytes >> 30), c.id)
            });
            let Some(pick) = pick else { break };
            *load.entry(pick.id).or_insert(0) += 1;
            row.push(pick);
        }
        placement.push(row.iter().map(|c| c.id.to_owned()).collect());
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(id: &'a str, zone: &'a str, free_gib: u64) -> Candidate<'a> {
        Candidate { id, zone, free_bytes: free_gib << 30 }
    }

    fn zones_of(placement: &[Vec<String>], candidates: &[Candidate<'_>]) -> Vec<Vec<String>> {
        let zone = |id: &String| candidates.iter().find(|c| c.id == id).map(|c| c.zone.to_owned()).unwrap_or_default();
        placement.iter().map(|row| row.iter().map(zone).collect()).collect()
    }

    #[test]
    fn replicas_of_a_shard_go_to_distinct_zones_before_they_balance_load() {
        // Two stores in zone a, one in b: every shard has one replica in each zone, so the
        // store in b holds every shard even though that loads it most.
        let cands = [c("s1", "a", 10), c("s2", "a", 10), c("s3", "b", 10)];
        let placement = place(&cands, HashMap::new(), 6, 2);
        for zones in zones_of(&placement, &cands) {
            let mut sorted = zones.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b"], "{placement:?}");
        }
        // Within zone a the load is still spread.
        let on = |id: &str| placement.iter().filter(|row| row.iter().any(|s| s == id)).count();
        assert_eq!((on("s1"), on("s2"), on("s3")), (3, 3, 6));
    }

    #[test]
    fn without_enough_zones_replicas_still_go_to_distinct_stores() {
        let cands = [c("s1", "a", 10), c("s2", "a", 10), c("s3", "b", 10)];
        let placement = place(&cands, HashMap::new(), 4, 3);
        for row in &placement {
            let mut ids = row.clone();
            ids.sort();
            assert_eq!(ids, ["s1", "s2", "s3"]);
        }
    }

    #[test]
    fn stores_without_a_zone_are_each_a_domain_of_their_own() {
        let cands = [c("s1", "", 10), c("s2", "", 10), c("s3", "", 10)];
        let placement = place(&cands, HashMap::new(), 3, 2);
        let on = |id: &str| placement.iter().filter(|row| row.iter().any(|s| s == id)).count();
        assert_eq!((on("s1"), on("s2"), on("s3")), (2, 2, 2), "{placement:?}");
    }

    fn state(stores: &[(&str, &str, bool)]) -> State {
        let mut st = State::default();
        for (id, zone, full) in stores {
            st.register(id, &format!("{id}:1"), &[], 1);
            st.note_zone(id, zone);
            st.note_disk(id, vasto_wire::DiskReport { capacity_bytes: 100 << 30, free_bytes: if *full { 1 << 20 } else { 50 << 30 }, full: *full });
        }
        st
    }

    fn planned(st: &State, shards: u32, replicas: u32) -> Result<Vec<Vec<String>>, String> {
        match st.plan_create("ks", shards, replicas) {
            Ok(crate::state::CreatePlan::New(p)) => Ok(p),
            Ok(crate::state::CreatePlan::AlreadyExists) => Err("exists".into()),
            Err(r) => Err(r.message),
        }
    }

    #[test]
    fn a_store_with_a_full_disk_takes_no_new_replica_and_the_refusal_says_so() {
        let st = state(&[("a", "", false), ("b", "", true), ("c", "", false)]);
        let placement = planned(&st, 4, 2).expect("two stores have room");
        assert!(placement.iter().flatten().all(|s| s != "b"), "{placement:?}");
        let refused = planned(&st, 1, 3).expect_err("only two stores have room");
        assert!(refused.contains("b has a full disk"), "{refused}");
    }

    #[test]
    fn a_placement_that_shares_a_zone_is_named_with_the_zones_there_are() {
        let st = state(&[("a", "east", false), ("b", "east", false), ("c", "west", false)]);
        let two = planned(&st, 3, 2).expect("plan");
        assert_eq!(st.zone_clashes(&two), None, "two zones hold two replicas apart: {two:?}");
        let three = planned(&st, 2, 3).expect("plan");
        let clash = st.zone_clashes(&three).expect("three replicas in two zones");
        assert!(clash.contains("shard(s) 0, 1") && clash.contains("2 zone(s) (east, west)"), "{clash}");
        // Stores without zones never clash.
        let plain = state(&[("a", "", false), ("b", "", false)]);
        assert_eq!(plain.zone_clashes(&planned(&plain, 2, 2).expect("plan")), None);
    }

    #[test]
    fn among_equally_loaded_stores_the_one_with_more_free_disk_is_chosen() {
        let cands = [c("s1", "", 5), c("s2", "", 50), c("s3", "", 20)];
        assert_eq!(place(&cands, HashMap::new(), 1, 1), [["s2"]]);
        let loaded = HashMap::from([("s2", 1)]);
        assert_eq!(place(&cands, loaded, 1, 2), [["s3", "s1"]]);
    }
}
