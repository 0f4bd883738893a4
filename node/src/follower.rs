//! One follower: copies a peer replica's local writes into a local replica, forever.
//!
//! A session connects to the peer, sends `Tail` with the position saved here (the peer's log
//! incarnation and sequence number) and applies every `Changes` frame with its new position in
//! the same batch. Without a saved position, or when the peer answers that the position is not
//! in its log (`Diverged`: another incarnation or beyond its head) or no longer in it
//! (`Trimmed`), the follower first copies a snapshot of the peer. The state the store reports
//! in its heartbeats (position, entries behind, caught up) describes the current session only:
//! when a session ends the follower is no longer caught up.
use crate::registry::{Registry, Replica};
use crate::replication::{FollowerKey, Source};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vasto_engine::header::Header;
use vasto_engine::LogPosition;
use vasto_wire::{greet, parse_frame, read_frame, ClusterToken, FrameEncoder, Greeter, Role, Status, DEFAULT_MAX_FRAME};

const RETRY: Duration = Duration::from_millis(250);
/// A tail silent for this long (keep-alives come every 500 ms) is considered dead.
const SILENCE: Duration = Duration::from_secs(3);
/// How long a follower waits for the next piece of a snapshot (the first one waits for the export).
const SNAPSHOT_SILENCE: Duration = Duration::from_secs(600);
/// The wait before the next snapshot after one failed (doubling with each failure in a row).
const SNAPSHOT_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between snapshot attempts.
const SNAPSHOT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Spaces out one follower's snapshot attempts: a snapshot is a whole export for the peer, so
/// one that keeps failing (the peer refuses, the ingestion fails) is asked for less and less often.
#[derive(Default)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// Waits until the next attempt is due.
    async fn turn(&self) {
        if let Some(at) = self.not_before {
            tokio::time::sleep_until(at.into()).await;
        }
    }

    /// Records the outcome of an attempt.
    fn record<T, E>(&mut self, result: &Result<T, E>) {
        if result.is_ok() {
            *self = Self::default();
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(Instant::now() + Self::wait_after(self.failures));
    }

    /// The wait after `failures` failed attempts in a row (at least one).
    fn wait_after(failures: u32) -> Duration {
        SNAPSHOT_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(SNAPSHOT_BACKOFF_MAX)
    }
}

/// Replication state of one (keyspace, shard, peer) follower, as reported in heartbeats.
#[derive(Debug, Clone, Default)]
pub(crate) struct FollowState {
    /// The peer's position applied here.
    pub position: LogPosition,
    pub entries_behind: u64,
    pub behind_since: Option<Instant>,
    /// The current session has reached the peer's head.
    pub caught_up: bool,
}

/// What one follower task needs.
pub(crate) struct FollowCtx {
    pub registry: Arc<Registry>,
    pub me: String,
    /// The cluster token proven to the peer, if the cluster has one.
    pub token: Option<ClusterToken>,
    pub key: FollowerKey,
    pub source: Source,
    pub state: Arc<Mutex<HashMap<FollowerKey, FollowState>>>,
    pub lag: Arc<Mutex<LagSamples>>,
}

impl FollowCtx {
    fn update(&self, f: impl FnOnce(&mut FollowState)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = state.get_mut(&self.key) {
            f(s);
        }
    }

    fn record(&self, position: LogPosition, head: u64) {
        self.update(|s| {
            s.position = position;
            s.entries_behind = head.saturating_sub(position.seq);
            if position.seq >= head {
                s.caught_up = true;
                s.behind_since = None;
            } else if s.behind_since.is_none() {
                s.behind_since = Some(Instant::now());
            }
        });
    }
}

/// Runs sessions with the peer until the task is aborted (the follower is no longer wanted).
///
/// A resize copy (`only` set) always starts from the source's export: a position saved by an
/// earlier attempt (a resize that was rolled back, or interrupted by a restart) is forgotten
/// first. The source's change log holds only the source's own writes, so resuming it would miss
/// whatever reached the source otherwise since that attempt (an import, a snapshot).
pub(crate) async fn follow(ctx: FollowCtx) {
    if ctx.source.only.is_some() {
        if let Some(replica) = ctx.registry.get(&ctx.key.0, ctx.key.1) {
            if let Err(e) = replica.forget_peer(&ctx.key.2) {
                tracing::warn!(keyspace = %ctx.key.0, shard = ctx.key.1, peer = %ctx.key.2, error = %e, "could not forget an earlier resize copy's position");
            }
        }
    }
    let mut backoff = Backoff::default();
    loop {
        if let Err(e) = follow_once(&ctx, &mut backoff).await {
            tracing::debug!(keyspace = %ctx.key.0, shard = ctx.key.1, peer = %ctx.key.2, error = %e, "tail ended; reconnecting");
        }
        // Whatever ended the session, nothing says this replica still holds the peer's head.
        ctx.update(|s| {
            s.caught_up = false;
            s.behind_since.get_or_insert_with(Instant::now);
        });
        tokio::time::sleep(RETRY).await;
    }
}

/// Connects to a peer store, opens the connection as a store of our cluster (proving the token)
/// and sends `request`.
async fn connect_peer(ctx: &FollowCtx, request: &[u8]) -> Result<BufReader<TcpStream>, String> {
    let address = &ctx.source.address;
    let mut stream =
        tokio::time::timeout(SILENCE, TcpStream::connect(address)).await.map_err(|_| "connect timed out".to_string())?.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let greeter = Greeter::new(Role::Store, ctx.registry.cluster_id(), ctx.token.as_ref());
    greet(&mut stream, greeter, SILENCE).await.map_err(|e| format!("peer refused: {e}"))?;
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    Ok(BufReader::with_capacity(256 << 10, stream))
}

/// One tail session: connect, ask for changes after the saved position, apply until it breaks.
async fn follow_once(ctx: &FollowCtx, backoff: &mut Backoff) -> Result<(), String> {
    let (keyspace, shard, peer) = &ctx.key;
    let replica = ctx.registry.get(keyspace, *shard).ok_or("replica no longer held")?;
    let Some(after) = replica.peer_position(peer).map_err(|e| e.to_string())? else {
        // Never copied from this peer: its log only has its own writes, so start from a snapshot.
        return bootstrap(ctx, &replica, backoff).await;
    };
    ctx.update(|s| s.position = after);
    let epoch = replica.recopy_epoch();
    let mut request = Vec::new();
    FrameEncoder::new().tail(&mut request, keyspace, ctx.source.shard, after.incarnation, after.seq, &ctx.me, ctx.source.only);
    let mut reader = connect_peer(ctx, &request).await?;
    let mut buf = Vec::new();
    let mut saved = after;
    loop {
        tokio::time::timeout(SILENCE, read_frame(&mut reader, &mut buf, DEFAULT_MAX_FRAME))
            .await
            .map_err(|_| "peer went silent".to_string())?
            .map_err(|e| e.to_string())?;
        if replica.retired() {
            return Err("replica dropped".into());
        }
        if replica.recopy_epoch() != epoch {
            return Err("copying every peer again".into());
        }
        let frame = parse_frame(&buf).map_err(|e| e.to_string())?;
        let changes = frame.body_as_changes().ok_or("unexpected frame on a tail")?;
        match changes.status() {
            Status::Ok => {}
            status @ (Status::Trimmed | Status::Diverged) => {
                let why = if status == Status::Trimmed { "too far behind the peer's change log" } else { "the saved position is not in the peer's change log" };
                tracing::warn!(
                    keyspace = %keyspace,
                    shard,
                    peer = %peer,
                    after = after.seq,
                    saved_incarnation = %format!("{:x}", after.incarnation),
                    peer_incarnation = %format!("{:x}", changes.incarnation()),
                    "{why}; re-bootstrapping from a snapshot"
                );
                if status == Status::Diverged && ctx.source.only.is_none() {
                    // The peer's log is another incarnation: what it took before may survive
                    // only on the replicas that applied it. Copy every peer again.
                    tracing::warn!(keyspace = %keyspace, shard, peer = %peer, "a peer's change log changed incarnation; copying every peer again");
                    replica.recopy_from_every_peer().map_err(|e| e.to_string())?;
                }
                return bootstrap(ctx, &replica, backoff).await;
            }
            other => return Err(format!("peer refused the tail: {}", vasto_wire::status_name(other))),
        }
        if changes.incarnation() != saved.incarnation {
            return Err(format!("the peer streamed change-log incarnation {:x} for a tail of {:x}", changes.incarnation(), saved.incarnation));
        }
        let entries = changes.entries();
        let now = vasto_engine::now_ns();
        // A copy from another shard (resize) keeps only the keys that move here (the sender
        // already filters; this guards against a sender that does not).
        let only = ctx.source.only;
        let pairs =
            entries.iter().flat_map(|e| e.iter()).filter_map(|kv| Some((kv.key()?, kv.value()?))).filter(move |(k, _)| only.is_none_or(|sel| sel.contains(k)));
        let position = LogPosition { incarnation: saved.incarnation, seq: changes.position() };
        // Positions only advance with entries of the peer's log; a keep-alive repeats the last one.
        if position.seq > saved.seq {
            saved = position;
            replica.apply_replicated(peer, pairs.clone(), position).map_err(|e| e.to_string())?;
            if only.is_none() && pairs.clone().any(|(k, _)| !replica.keeps(k)) {
                // The peer took these before a resize moved them away from this shard.
                replica.note_unkept_keys().map_err(|e| e.to_string())?;
            }
            let mut lag = ctx.lag.lock().unwrap_or_else(|p| p.into_inner());
            for (_, v) in pairs {
                if let Some((h, _)) = Header::split(v) {
                    lag.record(now.saturating_sub(h.event_time_ns) / 1000);
                }
            }
        }
        ctx.record(saved, changes.head());
    }
}

/// Replication lag samples (write event time to apply time, in µs) for the periodic log line.
pub(crate) struct LagSamples {
    hist: hdrhistogram::Histogram<u64>,
}

impl LagSamples {
    pub fn new() -> Self {
        Self { hist: hdrhistogram::Histogram::new(3).expect("3 significant digits is a valid precision") }
    }

    fn record(&mut self, micros: u64) {
        let _ = self.hist.record(micros.max(1));
    }

    /// Logs the distribution since the last call, if anything was applied.
    pub fn log_and_reset(&mut self) {
        if self.hist.is_empty() {
            return;
        }
        let h = &self.hist;
        tracing::info!(
            entries = h.len(),
            p50_us = h.value_at_quantile(0.5),
            p99_us = h.value_at_quantile(0.99),
            p999_us = h.value_at_quantile(0.999),
            max_us = h.max(),
            "replication lag (write event time to applied here) over the last 10 s"
        );
        self.hist.reset();
    }
}

/// Fetches a full snapshot of the peer's replica, ingests it (last-writer-wins against what is
/// here), and records the position (with the peer's log incarnation) to tail from. The caller
/// then resumes tailing. Attempts in a row that fail are spaced out by `backoff`.
async fn bootstrap(ctx: &FollowCtx, replica: &Replica, backoff: &mut Backoff) -> Result<(), String> {
    backoff.turn().await;
    let result = bootstrap_once(ctx, replica).await;
    backoff.record(&result);
    result
}

async fn bootstrap_once(ctx: &FollowCtx, replica: &Replica) -> Result<(), String> {
    let (keyspace, shard, peer) = &ctx.key;
    let epoch = replica.recopy_epoch();
    let mut request = Vec::new();
    FrameEncoder::new().snapshot_request(&mut request, keyspace, ctx.source.shard, &ctx.me, ctx.source.only);
    let mut reader = connect_peer(ctx, &request).await?;
    let dir = replica.dir().with_extension(format!("snapshot-in-{}", vasto_engine::now_ns()));
    let result = receive_snapshot(&mut reader, replica, &dir).await.and_then(|(files, position)| {
        if position.incarnation == 0 {
            return Err("the peer sent a snapshot without its change-log incarnation".to_string());
        }
        replica.ingest_snapshot(peer, &files, position).map_err(|e| e.to_string())?;
        replica.received_outside_the_log();
        if replica.recopy_epoch() != epoch {
            // Every peer must be copied again, from a snapshot taken after that was decided.
            replica.forget_peer(peer).map_err(|e| e.to_string())?;
            return Err("copying every peer again".to_string());
        }
        tracing::info!(keyspace = %keyspace, shard, peer = %peer, files = files.len(), position = position.seq, incarnation = %format!("{:x}", position.incarnation), "snapshot ingested; tailing from there");
        Ok(())
    });
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove received snapshot files");
        }
    }
    result
}

/// Writes the snapshot pieces into files under `dir`; returns the files and the tail position.
async fn receive_snapshot(
    reader: &mut BufReader<TcpStream>,
    replica: &Replica,
    dir: &std::path::Path,
) -> Result<(Vec<std::path::PathBuf>, LogPosition), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut current: Option<std::fs::File> = None;
    let mut buf = Vec::new();
    loop {
        // Exporting a large shard takes a while before the first piece arrives.
        tokio::time::timeout(SNAPSHOT_SILENCE, read_frame(reader, &mut buf, DEFAULT_MAX_FRAME))
            .await
            .map_err(|_| "snapshot stalled".to_string())?
            .map_err(|e| e.to_string())?;
        if replica.retired() {
            return Err("replica dropped".into());
        }
        let frame = parse_frame(&buf).map_err(|e| e.to_string())?;
        let chunk = frame.body_as_snapshot_chunk().ok_or("unexpected frame during a snapshot")?;
        if chunk.status() != Status::Ok {
            return Err(format!("peer could not send a snapshot: {}", chunk.message().unwrap_or_default()));
        }
        if chunk.done() {
            if let Some(f) = current.take() {
                f.sync_all().map_err(|e| e.to_string())?;
            }
            return Ok((files, LogPosition { incarnation: chunk.incarnation(), seq: chunk.position() }));
        }
        let index = chunk.file() as usize;
        if index >= files.len() {
            if let Some(f) = current.take() {
                f.sync_all().map_err(|e| e.to_string())?;
            }
            let path = dir.join(format!("{index:06}.sst"));
            current = Some(std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?);
            files.push(path);
        }
        let file = current.as_mut().ok_or("snapshot pieces out of order")?;
        let data = chunk.data().unwrap_or_default();
        file.write_all(data).map_err(|e| e.to_string())?;
        crate::metrics::MOVED.snapshot_received.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn snapshot_attempts_that_fail_are_spaced_out_more_and_more_and_a_success_resets() {
        let waits: Vec<Duration> = (1..=8).map(Backoff::wait_after).collect();
        assert_eq!(waits[..3], [SNAPSHOT_BACKOFF, SNAPSHOT_BACKOFF * 2, SNAPSHOT_BACKOFF * 4]);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]) && waits[7] == SNAPSHOT_BACKOFF_MAX, "{waits:?}");
        assert_eq!(Backoff::wait_after(u32::MAX), SNAPSHOT_BACKOFF_MAX);
        let mut b = Backoff::default();
        assert!(b.not_before.is_none(), "the first attempt is at once");
        b.record(&Err::<(), ()>(()));
        b.record(&Err::<(), ()>(()));
        assert!(b.failures == 2 && b.not_before.is_some_and(|at| at > Instant::now()));
        b.record(&Ok::<(), ()>(()));
        assert!(b.not_before.is_none() && b.failures == 0, "a success resets");
    }
}
