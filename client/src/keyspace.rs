//! Data operations on one keyspace: routing by jump hash, failover to the next live replica,
//! refresh on wrong-shard answers.
use crate::conn::Reply;
use crate::routing::TableWatch;
use crate::{ClientError, Inner};
use futures_util::future::join_all;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vasto_wire::{BatchOpRef, FrameEncoder, OpKind, ReplicaRoute, RoutingTable, Status};

/// Failed attempts per request (a replica unreachable, unavailable or timing out); waits for a
/// newer table after a wrong-shard answer are bounded by the request timeout instead.
const MAX_ATTEMPTS: usize = 6;
/// How long a request waits for a newer routing table after a wrong-shard answer.
const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// Options of a put.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// Expire the value this long after its event time.
    pub ttl: Option<Duration>,
    /// Event time in ns since the Unix epoch for last-writer-wins; default: the client's clock.
    pub event_time_ns: Option<u64>,
}

/// One operation of [`Keyspace::batch`].
#[derive(Debug, Clone, Copy)]
pub enum BatchOp<'a> {
    /// Store `value` under `key`.
    Put { key: &'a [u8], value: &'a [u8] },
    /// Delete `key`.
    Delete { key: &'a [u8] },
}

/// One page of a prefix scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Entries in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Pass this as `start_after` to get the next page; `None` when the scan is complete.
    pub next: Option<Vec<u8>>,
}

/// A handle on one keyspace. Cheap to clone; all clones share the client's connections.
#[derive(Clone)]
pub struct Keyspace {
    pub(crate) inner: Arc<Inner>,
    pub(crate) name: Arc<str>,
    pub(crate) table: TableWatch,
    pub(crate) read_from: ReadFrom,
    pub(crate) write_to: WriteTo,
    pub(crate) next_replica: Arc<AtomicUsize>,
}

/// Nanoseconds since the Unix epoch by this machine's clock, strictly increasing within the
/// process (two writes of one key made one after the other are ordered even within one
/// nanosecond, or across a small step back of the clock): the default event time.
pub fn now_ns() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let previous = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(clock.max(last + 1))).unwrap_or(clock);
    clock.max(previous + 1)
}

impl Keyspace {
    /// A handle on the same keyspace that reads from `read_from` (writes are unaffected).
    pub fn with_read_from(&self, read_from: ReadFrom) -> Keyspace {
        Keyspace { read_from, ..self.clone() }
    }

    /// A handle on the same keyspace that writes to `write_to` (reads are unaffected).
    pub fn with_write_to(&self, write_to: WriteTo) -> Keyspace {
        Keyspace { write_to, ..self.clone() }
    }

    /// The keyspace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routing table in use (as last pushed by the master).
    pub fn routing_table(&self) -> Option<Arc<RoutingTable>> {
        self.table.borrow().clone()
    }

    /// Reads `key`: `Ok(None)` when it is missing, deleted or expired.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let mut value = Vec::new();
        Ok(self.get_into(key, &mut value).await?.then_some(value))
    }

    /// Reads `key` into `value` (replacing its contents): `Ok(false)`, with `value` empty, when
    /// the key is missing, deleted or expired. Reusing one buffer across calls makes a read
    /// allocate nothing: the buffer is exchanged with the connection's, not copied into.
    pub async fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool, ClientError> {
        let now = tokio::time::Instant::now();
        self.get_into_until(key, value, now, now + self.inner.config.timeout).await
    }

    /// [`Keyspace::get_into`] within `deadline` (`now` is the current time).
    pub(crate) async fn get_into_until(
        &self,
        key: &[u8],
        value: &mut Vec<u8>,
        now: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> Result<bool, ClientError> {
        let name = &*self.name;
        let reply = self.route_until(Target::Key(key), Op::Read, value, now, deadline, |enc, out, id, shard| enc.get(out, id, name, shard, key)).await?;
        match reply.status {
            Status::Ok => Ok(true),
            Status::NotFound => Ok(false),
            status => Err(ClientError::Server { status, message: reply.message }),
        }
    }

    /// Reads many keys; results come back in request order, missing keys as `None`.
    /// The first error of any key fails the whole call; [`Keyspace::get_each`] reports each
    /// key's outcome.
    pub async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let mut results = Vec::with_capacity(keys.len());
        self.get_each(keys, &mut results).await;
        results.into_iter().collect()
    }

    /// Stores `value` under `key` with the client's clock as event time and no expiry.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Stores `value` under `key`. An older event time than the stored one is ignored
    /// (last writer wins), and the call still succeeds.
    pub async fn put_with(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<(), ClientError> {
        let t = opts.event_time_ns.unwrap_or_else(now_ns);
        let ttl = opts.ttl.map(|d| d.as_nanos().min(u64::MAX as u128) as u64).unwrap_or(0);
        let name = &*self.name;
        let reply = self.route(Target::Key(key), Op::Write, &mut Vec::new(), |enc, out, id, shard| enc.put(out, id, name, shard, key, value, t, ttl)).await?;
        ok(reply)
    }

    /// Deletes `key` (a tombstone at the client's current time).
    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        self.delete_at(key, now_ns()).await
    }

    /// Deletes `key` with an explicit event time.
    pub async fn delete_at(&self, key: &[u8], event_time_ns: u64) -> Result<(), ClientError> {
        let name = &*self.name;
        let reply =
            self.route(Target::Key(key), Op::Write, &mut Vec::new(), |enc, out, id, shard| enc.delete(out, id, name, shard, key, event_time_ns)).await?;
        ok(reply)
    }

    /// Applies puts and deletes with one event time. Operations on the same shard are applied
    /// atomically together; different shards are written in parallel and independently.
    pub async fn batch(&self, ops: &[BatchOp<'_>]) -> Result<(), ClientError> {
        let t = now_ns();
        let shards = self.table().await?.shards;
        let mut by_shard: Vec<Vec<BatchOpRef<'_>>> = vec![Vec::new(); shards as usize];
        for op in ops {
            let (kind, key, value) = match *op {
                BatchOp::Put { key, value } => (OpKind::Put, key, value),
                BatchOp::Delete { key } => (OpKind::Delete, key, &b""[..]),
            };
            let shard = vasto_hash::shard_of(key, shards) as usize;
            by_shard[shard].push(BatchOpRef { kind, key, value, event_time_ns: t, ttl_ns: 0 });
        }
        let name = &*self.name;
        let sends = by_shard.iter().filter(|g| !g.is_empty()).map(|group| {
            let first = group[0].key;
            async move {
                let reply = self.route(Target::Key(first), Op::Write, &mut Vec::new(), |enc, out, id, shard| enc.batch(out, id, name, shard, group)).await?;
                ok(reply)
            }
        });
        join_all(sends).await.into_iter().collect()
    }

    /// One page of the keys starting with `prefix`, in key order across all shards, strictly
    /// after `start_after` (empty for the first page), at most `limit` entries (fewer when the
    /// values are large: a store sends at most 4 MiB per page). Continuing from `next` visits
    /// every key exactly once.
    pub async fn scan_prefix(&self, prefix: &[u8], start_after: &[u8], limit: u32) -> Result<ScanPage, ClientError> {
        let limit = limit.max(1);
        let table = self.table().await?;
        let name = &*self.name;
        let pages = join_all((0..table.shards).map(|shard| async move {
            let reply = self
                .route(Target::Shard(shard), Op::Read, &mut Vec::new(), |enc, out, id, shard| enc.scan(out, id, name, shard, prefix, start_after, limit))
                .await?;
            match reply.status {
                Status::Ok => Ok((reply.entries, reply.more)),
                status => Err(ClientError::Server { status, message: reply.message }),
            }
        }))
        .await;
        let mut entries = Vec::new();
        let mut more = false;
        // A shard that stopped early may hold keys below other shards' last ones: the page
        // ends at the smallest last key of the shards that have more, so none is skipped.
        let mut cutoff: Option<Vec<u8>> = None;
        for page in pages {
            let (e, m) = page?;
            if m {
                more = true;
                if let Some((last, _)) = e.last() {
                    if cutoff.as_ref().is_none_or(|c| last < c) {
                        cutoff = Some(last.clone());
                    }
                }
            }
            entries.extend(e);
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(cutoff) = &cutoff {
            entries.retain(|(k, _)| k <= cutoff);
        }
        if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            more = true;
        }
        let next = if more { entries.last().map(|e| e.0.clone()) } else { None };
        Ok(ScanPage { entries, next })
    }

    /// Waits for the first routing table; errors if the keyspace does not exist.
    pub(crate) async fn routing_table_ready(&self) -> Result<(), ClientError> {
        self.table().await.map(drop)
    }

    /// The current table, waiting for the first one; errors if the keyspace does not exist.
    pub(crate) async fn table(&self) -> Result<Arc<RoutingTable>, ClientError> {
        let current = self.table.borrow().clone();
        let table = match current {
            Some(t) => Some(t),
            None => {
                let mut rx = self.table.clone();
                let first = tokio::time::timeout(self.inner.config.timeout, rx.wait_for(|t| t.is_some()))
                    .await
                    .map_err(|_| ClientError::Master("no routing table received in time".into()))?
                    .map_err(|_| ClientError::Master("client shut down".into()))?
                    .clone();
                first
            }
        };
        match table {
            Some(t) if t.exists && t.shards > 0 => Ok(t),
            _ => Err(ClientError::UnknownKeyspace(self.name.to_string())),
        }
    }

    /// Sends to the first live replica of the target shard; on a connection failure tries the
    /// next one (at most [`MAX_ATTEMPTS`] failures), on a wrong-shard answer waits for a newer
    /// table and tries again for as long as the request timeout allows: a resize's drain answers
    /// wrong-shard for the keys that move until its commit, however many tables are pushed
    /// meanwhile. Writes are safe to resend: the event time is fixed before the first attempt,
    /// so a repeat is a no-op under LWW.
    /// An [`Op::Update`] is not idempotent, so it is resent only when it surely was not applied
    /// (no connection, or a refusal): after a timeout or a lost connection it fails.
    /// A value in the reply is put in `value` (see [`crate::conn::Conn::call`]).
    pub(crate) async fn route(
        &self,
        target: Target<'_>,
        op: Op,
        value: &mut Vec<u8>,
        encode: impl Fn(&mut FrameEncoder, &mut Vec<u8>, u64, u32),
    ) -> Result<Reply, ClientError> {
        let now = tokio::time::Instant::now();
        self.route_until(target, op, value, now, now + self.inner.config.timeout, encode).await
    }

    /// [`Keyspace::route`] with the request's deadline given (`now` is the current time, taken
    /// by the caller): reading the clock was a twentieth of a busy gateway's profile.
    pub(crate) async fn route_until(
        &self,
        target: Target<'_>,
        op: Op,
        value: &mut Vec<u8>,
        mut now: tokio::time::Instant,
        deadline: tokio::time::Instant,
        encode: impl Fn(&mut FrameEncoder, &mut Vec<u8>, u64, u32),
    ) -> Result<Reply, ClientError> {
        let spread = match op {
            Op::Read => self.read_from == ReadFrom::AnyReplica,
            Op::Write | Op::Update => self.write_to == WriteTo::AnyReplica,
        };
        let start = if spread { self.next_replica.fetch_add(1, Ordering::Relaxed) } else { 0 };
        // Built only on a failure: a request that succeeds first time allocates nothing.
        let mut last_err = None;
        let mut skip = 0usize;
        let mut failures = 0usize;
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                now = tokio::time::Instant::now();
            }
            if failures >= MAX_ATTEMPTS || now >= deadline {
                break;
            }
            let table = self.table().await?;
            let shard = match target {
                Target::Key(k) => vasto_hash::shard_of(k, table.shards),
                Target::Shard(s) => s,
            };
            let replicas = table.routes.get(shard as usize).map(Vec::as_slice).unwrap_or_default();
            let Some(addr) = pick(replicas, spread, start, skip) else {
                last_err = Some(ClientError::Unavailable(format!("no live replica of shard {shard} of {}", self.name)));
                failures += 1;
                self.wait_newer(table.version).await;
                continue;
            };
            let conn = match self.inner.pool.get(addr).await {
                Ok(c) => c,
                Err(e) => {
                    last_err = Some(e);
                    skip += 1;
                    failures += 1;
                    continue;
                }
            };
            // One attempt may not take the whole budget: a replica that went silent (no FIN, no
            // answer) costs one attempt timeout, then the next replica is tried.
            let left = deadline.saturating_duration_since(now);
            let attempt = self.inner.config.attempt_timeout.min(left);
            match conn.call(attempt, value, |enc, out, id| encode(enc, out, id, shard)).await {
                Ok(reply) if matches!(reply.status, Status::WrongShard | Status::UnknownKeyspace) => {
                    // Not a failure of the replica: the table is behind. Bounded by the deadline.
                    last_err = Some(ClientError::Server { status: reply.status, message: reply.message });
                    self.wait_newer(table.version).await;
                }
                Ok(reply) if reply.status == Status::Unavailable => {
                    last_err = Some(ClientError::Server { status: reply.status, message: reply.message });
                    skip += 1;
                    failures += 1;
                }
                Ok(reply) => return Ok(reply),
                Err(e @ (ClientError::ConnectionLost | ClientError::Timeout)) if op == Op::Update => return Err(e),
                Err(e @ (ClientError::ConnectionLost | ClientError::Timeout)) => {
                    last_err = Some(e);
                    skip += 1;
                    failures += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::Unavailable("no live replica".into())))
    }

    async fn wait_newer(&self, version: u64) {
        let mut rx = self.table.clone();
        let _ = tokio::time::timeout(REFRESH_WAIT, rx.wait_for(|t| t.as_ref().is_some_and(|t| t.version > version))).await;
    }
}

/// Replica order for one attempt: live replicas that are not catching up first (primary first),
/// then live ones still catching up. With `spread`, reads rotate over the healthy replicas.
pub(crate) fn pick(replicas: &[ReplicaRoute], spread: bool, start: usize, skip: usize) -> Option<&str> {
    let live = |r: &&ReplicaRoute| r.up && !r.address.is_empty();
    let healthy = replicas.iter().filter(live).filter(|r| !r.catching_up);
    let catching = replicas.iter().filter(live).filter(|r| r.catching_up);
    let n_healthy = healthy.clone().count();
    let count = n_healthy + catching.clone().count();
    if count == 0 {
        return None;
    }
    let n = if spread && skip < n_healthy { (start + skip) % n_healthy } else { skip % count };
    healthy.chain(catching).nth(n).map(|r| r.address.as_str())
}

/// Which replica serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The primary (replica 0) while it is up and caught up, else the next live replica.
    #[default]
    Primary,
    /// Any live, caught-up replica, rotating: spreads read load, may read slightly stale data.
    AnyReplica,
}

/// Which replica takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteTo {
    /// The primary (replica 0) while it is up and caught up, else the next live replica.
    #[default]
    Primary,
    /// Any live, caught-up replica, rotating (replication is active-active: every replica
    /// takes writes and they converge): spreads write load.
    AnyReplica,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    /// Idempotent: a resend with the same event time is a no-op under last-writer-wins.
    Write,
    /// A read-modify-write: not idempotent.
    Update,
}

#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    Key(&'a [u8]),
    Shard(u32),
}

pub(crate) fn ok(reply: Reply) -> Result<(), ClientError> {
    match reply.status {
        Status::Ok => Ok(()),
        status => Err(ClientError::Server { status, message: reply.message }),
    }
}

#[cfg(test)]
mod tests {
    use super::pick;
    use vasto_wire::ReplicaRoute;

    fn r(addr: &str, up: bool, catching_up: bool) -> ReplicaRoute {
        ReplicaRoute { store_id: addr.into(), address: addr.into(), up, catching_up }
    }

    #[test]
    fn primary_first_then_failover_and_catching_up_last() {
        let rs = [r("a", true, false), r("b", true, false), r("c", true, true)];
        assert_eq!(pick(&rs, false, 0, 0), Some("a"));
        assert_eq!(pick(&rs, false, 0, 1), Some("b"));
        assert_eq!(pick(&rs, false, 0, 2), Some("c"));
        let down_primary = [r("a", false, false), r("b", true, true), r("c", true, false)];
        assert_eq!(pick(&down_primary, false, 0, 0), Some("c"), "a caught-up replica beats one catching up");
        assert_eq!(pick(&[r("a", false, false)], false, 0, 0), None);
    }

    #[test]
    fn any_replica_reads_rotate_over_healthy_replicas() {
        let rs = [r("a", true, false), r("b", true, false), r("c", true, true)];
        let picked: Vec<_> = (0..4).map(|start| pick(&rs, true, start, 0)).collect();
        assert_eq!(picked, vec![Some("a"), Some("b"), Some("a"), Some("b")]);
    }
}
