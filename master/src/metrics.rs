//! The master's Prometheus metrics, written at each scrape from the status document (built
//! under the hub's lock, written out after it is released).
use crate::hub::Shared;
use crate::status::ClusterStatus;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use vasto_metrics::{labels as l, Labels, Scrape};

/// What a scrape of the master reads.
pub(crate) struct MasterView {
    pub shared: Arc<Shared>,
    /// Connections open now (stores, clients, admins).
    pub connections: Arc<AtomicUsize>,
}

impl MasterView {
    /// Writes every master metric.
    pub fn collect(&self, s: &mut Scrape<'_>) -> fmt::Result {
        let status = self.shared.lock().state.status(crate::state::unix_ms());
        write_status(s, &status)?;
        s.gauge_one("vasto_master_connections", "Connections open (stores, clients, admins).", self.connections.load(Relaxed) as f64)
    }
}

/// The state of one replica as the metrics count it.
fn replica_state(up: bool, catching_up: bool, placed: bool) -> &'static str {
    match (placed, up, catching_up) {
        (false, _, _) => "unknown",
        (true, false, _) => "down",
        (true, true, true) => "catching_up",
        (true, true, false) => "serving",
    }
}

fn write_status(s: &mut Scrape<'_>, status: &ClusterStatus) -> fmt::Result {
    let up = status.stores.iter().filter(|st| st.up).count();
    s.gauge(
        "vasto_master_stores",
        "Stores registered since the master started, by whether their connection is alive.",
        [(l(&[("state", "up")]), up as f64), (l(&[("state", "down")]), (status.stores.len() - up) as f64)],
    )?;
    let store = |st: &crate::StoreStatus| l(&[("store", &st.id), ("zone", &st.zone)]);
    s.gauge(
        "vasto_master_store_up",
        "1 while the store's connection to the master is alive.",
        status.stores.iter().map(|st| (store(st), f64::from(u8::from(st.up)))),
    )?;
    s.gauge(
        "vasto_master_store_disk_full",
        "1 while the store reports its disk below its free-space reserve (it takes no new replicas).",
        status.stores.iter().map(|st| (store(st), f64::from(u8::from(st.disk_full)))),
    )?;
    s.gauge(
        "vasto_master_store_free_bytes",
        "Free bytes the store last reported on its data disk.",
        status.stores.iter().map(|st| (store(st), st.free_bytes as f64)),
    )?;
    s.gauge("vasto_master_store_replicas", "Shard replicas placed on the store.", status.stores.iter().map(|st| (store(st), st.replicas as f64)))?;
    s.gauge_one("vasto_master_keyspaces", "Keyspaces in the catalog.", status.keyspaces.len() as f64)?;
    let ks = |name: &str| l(&[("keyspace", name)]);
    s.gauge(
        "vasto_master_routing_version",
        "Version of the keyspace's routing table (it grows at every change pushed to clients).",
        status.keyspaces.iter().map(|k| (ks(&k.name), k.version as f64)),
    )?;
    s.gauge("vasto_master_keyspace_shards", "Shards of the keyspace.", status.keyspaces.iter().map(|k| (ks(&k.name), f64::from(k.shards))))?;
    let mut replicas: Vec<(Labels, f64)> = Vec::new();
    for k in &status.keyspaces {
        for state in ["serving", "catching_up", "down", "unknown"] {
            let n = k.routes.iter().flatten().filter(|r| replica_state(r.up, r.catching_up, !r.store_id.is_empty()) == state).count();
            replicas.push((l(&[("keyspace", &k.name), ("state", state)]), n as f64));
        }
    }
    s.gauge(
        "vasto_master_replicas",
        "Shard replicas by state: serving, catching_up (up, behind a live peer), down, unknown (no store has reported it).",
        replicas,
    )?;
    s.gauge(
        "vasto_master_repairs_pending",
        "Replicas the master is about to bring in line with the keyspace (0 when all match).",
        status.keyspaces.iter().map(|k| (ks(&k.name), f64::from(k.repairs))),
    )?;
    let running = || status.keyspaces.iter().filter_map(|k| k.operation.as_ref().map(|op| (k, op)));
    let kind = |op: &crate::OperationStatus| op.kind.split_whitespace().next().unwrap_or("").to_owned();
    s.gauge(
        "vasto_master_operation",
        "1 while a resize or replace runs on the keyspace, labelled with its kind and phase.",
        running().map(|(k, op)| (l(&[("keyspace", &k.name), ("kind", &kind(op)), ("phase", &op.phase)]), 1.0)),
    )?;
    s.gauge(
        "vasto_master_operation_running_seconds",
        "How long the keyspace's resize or replace has been running.",
        running().map(|(k, op)| (l(&[("keyspace", &k.name), ("kind", &kind(op))]), op.running_ms as f64 / 1000.0)),
    )?;
    s.gauge(
        "vasto_master_operation_entries_behind",
        "Change-log entries the copies of the running resize or replace still have to apply.",
        running().map(|(k, op)| (l(&[("keyspace", &k.name), ("kind", &kind(op))]), op.entries_behind as f64)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyspaceStatus, OperationStatus, RouteStatus, StoreStatus};

    #[test]
    fn status_becomes_store_keyspace_and_operation_families() {
        let route = |id: &str, up, catching_up| RouteStatus { store_id: id.into(), address: format!("{id}:1"), up, catching_up, lags: vec![] };
        let status = ClusterStatus {
            cluster_id: String::new(),
            stores: vec![
                StoreStatus { id: "a".into(), up: true, zone: "z1".into(), replicas: 2, ..Default::default() },
                StoreStatus { id: "b".into(), up: false, disk_full: true, replicas: 1, ..Default::default() },
            ],
            keyspaces: vec![KeyspaceStatus {
                name: "ks".into(),
                shards: 2,
                replicas: 1,
                version: 42,
                routes: vec![vec![route("a", true, false)], vec![route("b", false, false)], vec![route("a", true, true)]],
                operation: Some(OperationStatus { kind: "resize 2 -> 3 shards".into(), phase: "copying".into(), running_ms: 1500, ..Default::default() }),
                ..Default::default()
            }],
        };
        let text = vasto_metrics::render(move |s| write_status(s, &status)).expect("render");
        for line in [
            "vasto_master_stores{state=\"up\"} 1.0",
            "vasto_master_stores{state=\"down\"} 1.0",
            "vasto_master_store_disk_full{store=\"b\",zone=\"\"} 1.0",
            "vasto_master_keyspaces 1.0",
            "vasto_master_routing_version{keyspace=\"ks\"} 42.0",
            "vasto_master_replicas{keyspace=\"ks\",state=\"serving\"} 1.0",
            "vasto_master_replicas{keyspace=\"ks\",state=\"catching_up\"} 1.0",
            "vasto_master_replicas{keyspace=\"ks\",state=\"down\"} 1.0",
            "vasto_master_operation{keyspace=\"ks\",kind=\"resize\",phase=\"copying\"} 1.0",
            "vasto_master_operation_running_seconds{keyspace=\"ks\",kind=\"resize\"} 1.5",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in {text}");
        }
    }
}
