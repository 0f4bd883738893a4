//! The store's Prometheus metrics. Requests are tallied per connection in plain integers and
//! added to the core's atomics once per read (every answer of one read is observed as taking
//! the time from that read to the write of the answers), so the hot path does no atomic
//! operation and reads no clock per request. Everything else (RocksDB, change logs, lags,
//! disk, value cache) is read when a scrape asks.
use crate::disk::DiskWatch;
use crate::registry::Registry;
use crate::replication::Replication;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use vasto_metrics::{labels as l, Histogram, HistogramTotals, Labels, Scrape};
use vasto_wire::Status;

/// What a request asked, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get = 0,
    Put,
    Delete,
    Batch,
    Scan,
    Update,
    /// Replication, snapshots, imports, and frames that are not requests.
    Other,
}

const OP_NAMES: [&str; 7] = ["get", "put", "delete", "batch", "scan", "update", "other"];
const OPS: usize = OP_NAMES.len();
/// Status codes 0..=14 by value; anything larger counts as the last.
const STATUSES: usize = 16;

/// The `status` label of each status index: the wire's names in snake case (`not_found`).
fn status_label(index: usize) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        (0..STATUSES)
            .map(|i| {
                let mut label = String::new();
                for (at, c) in vasto_wire::status_name(Status(i as u8)).chars().enumerate() {
                    if c.is_ascii_uppercase() && at > 0 {
                        label.push('_');
                    }
                    label.push(c.to_ascii_lowercase());
                }
                label
            })
            .collect()
    });
    labels.get(index).map_or("unknown", String::as_str)
}

fn status_index(status: Status) -> usize {
    usize::from(status.0).min(STATUSES - 1)
}

/// The answers one connection gave since its last [`Tally::flush`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: [[u32; STATUSES]; OPS],
    any: bool,
}

impl Tally {
    /// Counts one answer of `op` with `status`.
    #[inline]
    pub fn count(&mut self, op: Op, status: Status) {
        let c = &mut self.counts[op as usize][status_index(status)];
        *c = c.saturating_add(1);
        self.any = true;
    }

    /// Adds the tally to `core`, every answer observed as taking `elapsed_ns`, and clears it.
    pub fn flush(&mut self, core: &CoreMetrics, elapsed_ns: u64) {
        if !std::mem::take(&mut self.any) {
            return;
        }
        for (op, row) in self.counts.iter_mut().enumerate() {
            let mut answered = 0u64;
            for (status, c) in row.iter_mut().enumerate().filter(|(_, c)| **c > 0) {
                core.requests[op][status].fetch_add(u64::from(*c), Relaxed);
                answered += u64::from(*c);
                *c = 0;
            }
            core.latency[op].observe_ns(elapsed_ns, answered);
        }
    }
}

/// One core's request counters, on cache lines of their own.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CoreMetrics {
    requests: [[AtomicU64; STATUSES]; OPS],
    latency: [Histogram; OPS],
    /// How late the core's canary timer fires: how long a request arriving now would wait for
    /// its core (see `server::canary`).
    pub(crate) lateness: Histogram,
}

/// Everything the store counts as it serves.
#[derive(Debug)]
pub struct StoreMetrics {
    cores: Vec<CoreMetrics>,
    /// Data connections open now (every core's).
    pub(crate) connections: Arc<AtomicUsize>,
}

impl StoreMetrics {
    /// Counters for `cores` core threads.
    pub fn new(cores: usize) -> Self {
        Self { cores: (0..cores.max(1)).map(|_| CoreMetrics::default()).collect(), connections: Arc::new(AtomicUsize::new(0)) }
    }

    /// The counters of core `core`.
    pub(crate) fn core(&self, core: usize) -> &CoreMetrics {
        &self.cores[core % self.cores.len()]
    }

    /// The latencies of every data request (not replication, snapshots or imports) answered
    /// so far, and how late the cores' canaries woke, all cores together: what the pace
    /// governor watches.
    pub(crate) fn foreground_latency(&self) -> (HistogramTotals, HistogramTotals) {
        let (mut requests, mut lateness) = (HistogramTotals::default(), HistogramTotals::default());
        for core in &self.cores {
            for op in [Op::Get, Op::Put, Op::Delete, Op::Batch, Op::Scan, Op::Update] {
                core.latency[op as usize].add_to(&mut requests);
            }
            core.lateness.add_to(&mut lateness);
        }
        (requests, lateness)
    }
}

/// Bytes moved between stores and from importers since the start, by what moved them.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// Snapshot files sent to a re-bootstrapping follower or a replace target.
    pub snapshot_sent: AtomicU64,
    /// Snapshot files received from a peer.
    pub snapshot_received: AtomicU64,
    /// Resize copies sent (exports of the keys that move, and their change streams).
    pub resize_sent: AtomicU64,
    /// SST files received from `vasto import` (or a restore).
    pub imported: AtomicU64,
}

/// The process's data-movement counters.
pub(crate) static MOVED: Moved =
    Moved { snapshot_sent: AtomicU64::new(0), snapshot_received: AtomicU64::new(0), resize_sent: AtomicU64::new(0), imported: AtomicU64::new(0) };

/// What a scrape of the store reads.
pub(crate) struct StoreView {
    pub metrics: Arc<StoreMetrics>,
    /// The pace of data movement.
    pub moves: vasto_engine::MoveRate,
    pub registry: Arc<Registry>,
    pub replication: Replication,
    pub disk: DiskWatch,
}

impl StoreView {
    /// Writes every store metric.
    pub fn collect(&self, s: &mut Scrape<'_>) -> fmt::Result {
        self.requests(s)?;
        self.replicas(s)?;
        let lags = self.replication.lags();
        let lag_labels = |x: &vasto_wire::ReplicaLag| l(&[("keyspace", &x.keyspace), ("shard", &x.shard.to_string()), ("peer", &x.peer)]);
        s.gauge(
            "vasto_store_replication_lag_entries",
            "Changes of a peer replica not yet applied here.",
            lags.iter().map(|x| (lag_labels(x), x.entries as f64)),
        )?;
        s.gauge(
            "vasto_store_replication_lag_seconds",
            "Time since this replica last held everything the peer had (0: caught up).",
            lags.iter().map(|x| (lag_labels(x), x.lag_ms as f64 / 1000.0)),
        )?;
        let disk = self.disk.report();
        s.gauge_one("vasto_store_disk_capacity_bytes", "Size of the data filesystem.", disk.capacity_bytes as f64)?;
        s.gauge_one("vasto_store_disk_free_bytes", "Bytes of the data filesystem free to the store.", disk.free_bytes as f64)?;
        s.gauge_one("vasto_store_disk_full", "1 while free space is below the reserve: the store takes no new replicas.", f64::from(u8::from(disk.full)))?;
        let cache = self.registry.cache_stats().unwrap_or_default();
        s.counter("vasto_store_value_cache_hits", "Reads answered from the value cache.", [(Labels::new(), cache.hits)])?;
        s.counter("vasto_store_value_cache_misses", "Reads that went to RocksDB.", [(Labels::new(), cache.misses)])?;
        s.gauge_one("vasto_store_value_cache_bytes", "Bytes the value cache holds.", cache.bytes as f64)?;
        s.counter(
            "vasto_store_disk_gets",
            "Gets that needed a file read (not in the value cache, memtables or block cache), answered by a reader thread.",
            [(Labels::new(), crate::disk_reads::DISK_GETS.load(Relaxed))],
        )?;
        s.gauge_one(
            "vasto_store_move_rate_bytes_per_second",
            "Pace of each snapshot or resize copy this store sends, set from foreground latency (0: unlimited).",
            self.moves.get() as f64,
        )?;
        s.gauge_one("vasto_store_move_streams", "Snapshots and resize copies this store sends now.", self.moves.streams() as f64)?;
        let moved = [
            ("snapshot_sent", &MOVED.snapshot_sent),
            ("snapshot_received", &MOVED.snapshot_received),
            ("resize_sent", &MOVED.resize_sent),
            ("imported", &MOVED.imported),
        ];
        s.counter(
            "vasto_store_moved_bytes",
            "Bytes moved by snapshots (re-bootstrap, replace), resize copies and imports.",
            moved.iter().map(|(kind, n)| (l(&[("kind", kind)]), n.load(Relaxed))),
        )?;
        s.gauge_one("vasto_store_connections", "Data connections open.", self.metrics.connections.load(Relaxed) as f64)
    }

    fn requests(&self, s: &mut Scrape<'_>) -> fmt::Result {
        let mut counts = [[0u64; STATUSES]; OPS];
        let mut latency: Vec<HistogramTotals> = vec![HistogramTotals::default(); OPS];
        for core in &self.metrics.cores {
            for (op, row) in core.requests.iter().enumerate() {
                for (status, c) in row.iter().enumerate() {
                    counts[op][status] += c.load(Relaxed);
                }
                core.latency[op].add_to(&mut latency[op]);
            }
        }
        let samples = counts.iter().enumerate().flat_map(|(op, row)| {
            row.iter().enumerate().filter(|(_, c)| **c > 0).map(move |(status, c)| (l(&[("op", OP_NAMES[op]), ("status", status_label(status))]), *c))
        });
        s.counter("vasto_store_requests", "Requests answered, by operation and status.", samples)?;
        s.histogram(
            "vasto_store_request_duration_seconds",
            "From the read that brought a request to the write of its answer.",
            latency.into_iter().enumerate().filter(|(_, t)| t.count() > 0).map(|(op, t)| (l(&[("op", OP_NAMES[op])]), t)),
        )
    }

    fn replicas(&self, s: &mut Scrape<'_>) -> fmt::Result {
        let replicas: Vec<(Labels, vasto_engine::ShardStats)> =
            self.registry.all().iter().map(|r| (l(&[("keyspace", &r.meta().keyspace), ("shard", &r.meta().shard.to_string())]), r.shard.stats())).collect();
        type Field = fn(&vasto_engine::ShardStats) -> f64;
        let families: [(&str, &str, Field); 8] = [
            ("vasto_store_sst_bytes", "Bytes of SST files of a replica.", |x| x.sst_bytes as f64),
            ("vasto_store_memtable_bytes", "Bytes of memtables of a replica.", |x| x.memtable_bytes as f64),
            ("vasto_store_rocksdb_pending_compaction_bytes", "RocksDB's estimate of bytes compaction must rewrite.", |x| x.pending_compaction_bytes as f64),
            ("vasto_store_rocksdb_running_compactions", "Compactions running on a replica.", |x| x.running_compactions as f64),
            ("vasto_store_rocksdb_write_stopped", "1 while RocksDB stops the replica's writes (a write stall).", |x| f64::from(u8::from(x.write_stopped))),
            ("vasto_store_rocksdb_delayed_write_rate_bytes", "Rate RocksDB slows writes to, in bytes/s (0: not slowed).", |x| x.delayed_write_rate as f64),
            ("vasto_store_change_log_entries", "Entries the change log holds for followers.", |x| x.change_log_entries as f64),
            ("vasto_store_keys_estimate", "RocksDB's estimate of a replica's keys.", |x| x.estimated_keys as f64),
        ];
        for (name, help, field) in families {
            s.gauge(name, help, replicas.iter().map(|(labels, stats)| (labels.clone(), field(stats))))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_adds_each_answer_once_and_observes_its_time() {
        let metrics = StoreMetrics::new(2);
        let mut tally = Tally::default();
        tally.count(Op::Get, Status::Ok);
        tally.count(Op::Get, Status::NotFound);
        tally.count(Op::Put, Status::Unavailable);
        tally.flush(metrics.core(1), 300_000);
        tally.flush(metrics.core(1), 1); // nothing new
        let core = metrics.core(1);
        assert_eq!(core.requests[Op::Get as usize][0].load(Relaxed), 1);
        assert_eq!(core.requests[Op::Get as usize][1].load(Relaxed), 1);
        assert_eq!(core.requests[Op::Put as usize][status_index(Status::Unavailable)].load(Relaxed), 1);
        assert_eq!(core.latency[Op::Get as usize].totals().count(), 2);
        assert_eq!(core.latency[Op::Put as usize].totals().sum_ns, 300_000);
        assert_eq!(metrics.core(0).latency[Op::Get as usize].totals().count(), 0);
    }

    #[test]
    fn status_labels_are_snake_case() {
        assert_eq!(status_label(status_index(Status::Ok)), "ok");
        assert_eq!(status_label(status_index(Status::NotFound)), "not_found");
        assert_eq!(status_label(status_index(Status::UnknownKeyspace)), "unknown_keyspace");
    }
}
