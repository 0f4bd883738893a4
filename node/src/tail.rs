//! The sending side of replication: a follower's connection, once it has sent `Tail`, receives
//! this replica's locally-originated writes as `Changes` frames, pushed as soon as they are
//! written (the write path wakes this task), with a keep-alive when idle. A resize copy asks for
//! only the keys that move to it; those streams, and snapshots, are paced by `--max-mbps`.
use crate::metrics::MOVED;
use crate::registry::Replica;
use crate::split::on_helper_thread;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vasto_engine::{EngineError, LogPosition, MoveRate, Pacer};
use vasto_wire::{FrameEncoder, ShardSelector, Status};

/// Largest batch of changes per frame (about).
const MAX_FRAME_BYTES: usize = 256 << 10;
/// An idle tail sends an empty `Changes` this often so the follower knows the sender is alive.
pub const KEEPALIVE: Duration = Duration::from_millis(500);

/// Streams changes after `position` until the follower goes away or the replica is dropped:
/// every change, or with `only` just the keys it selects, paced by `rate` (applies to `only` streams, which are resize copies, not to replication between
/// replicas of a shard). A position of another incarnation of the log, or beyond its head, is
/// answered `Diverged`, one the log no longer reaches `Trimmed`: the follower re-bootstraps.
pub async fn stream_changes(mut stream: TcpStream, replica: Arc<Replica>, mut position: LogPosition, only: Option<ShardSelector>, rate: &MoveRate) {
    let mut enc = FrameEncoder::new();
    let mut out: Vec<u8> = Vec::with_capacity(MAX_FRAME_BYTES + 4096);
    let mut last_sent = Instant::now() - KEEPALIVE;
    let mut pacer = only.is_some().then(|| Pacer::new(rate));
    loop {
        if replica.retired() {
            return;
        }
        let next = replica.next_append();
        let mut next = std::pin::pin!(next);
        next.as_mut().enable();
        let head = replica.head_position();
        out.clear();
        let mut page = enc.entries_builder();
        let read = replica.read_changes(position, MAX_FRAME_BYTES, |k, v| {
            if only.is_none_or(|sel| sel.contains(k)) {
                page.push(k, v)
            }
        });
        let caught_up = match read {
            Ok(read) => {
                let moved = read.position != position || !page.is_empty();
                if moved || last_sent.elapsed() >= KEEPALIVE {
                    page.finish_changes(&mut out, read.position.seq, head, read.position.incarnation);
                }
                position = read.position;
                position.seq >= head
            }
            Err(EngineError::Trimmed { after }) => {
                tracing::warn!(keyspace = %replica.meta().keyspace, shard = replica.meta().shard, after, "follower is behind the change log; it must re-bootstrap");
                enc.changes_status(&mut out, Status::Trimmed, after, head, replica.log_mark().incarnation);
                let _ = stream.write_all(out).await;
                return;
            }
            Err(EngineError::Diverged { incarnation, after }) => {
                let ours = replica.log_mark().incarnation;
                tracing::warn!(
                    keyspace = %replica.meta().keyspace,
                    shard = replica.meta().shard,
                    after,
                    follower_incarnation = %format!("{incarnation:x}"),
                    log_incarnation = %format!("{ours:x}"),
                    head,
                    "a follower's position is not in this change log; it must re-bootstrap"
                );
                enc.changes_status(&mut out, Status::Diverged, after, head, ours);
                let _ = stream.write_all(out).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the change log failed; closing the tail");
                return;
            }
        };
        if !out.is_empty() {
            let (res, buf) = stream.write_all(out).await;
            out = buf;
            if res.is_err() {
                return;
            }
            last_sent = Instant::now();
            if only.is_some() {
                MOVED.resize_sent.fetch_add(out.len() as u64, Relaxed);
            }
            if let Some(wait) = pacer.as_mut().and_then(|p| p.after(out.len() as u64)) {
                monoio::time::sleep(wait).await;
            }
        }
        if caught_up {
            let _ = monoio::time::timeout(KEEPALIVE, next).await;
        }
    }
}

/// Size of the pieces a snapshot file is sent in.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Target size of one snapshot SST file.
const SNAPSHOT_FILE_BYTES: u64 = 64 << 20;

/// Sends a snapshot of the replica in pieces, paced by `rate`; the last
/// piece carries the position to tail from. Without `only`, a full export made for this request
/// (on a helper thread, so this core keeps serving); with `only` (a resize copy), the selected
/// shard's files of the export all resize copies of this replica share.
pub async fn stream_snapshot(mut stream: TcpStream, replica: Arc<Replica>, only: Option<ShardSelector>, rate: &MoveRate) {
    let meta = replica.meta().clone();
    let mut enc = FrameEncoder::new();
    let mut out = Vec::with_capacity(SNAPSHOT_CHUNK + 4096);
    let result = match only {
        None => {
            let dir = replica.dir().with_extension(format!("snapshot-out-{}", vasto_engine::now_ns()));
            let (source, out_dir, export_rate) = (Arc::clone(&replica), dir.clone(), rate.clone());
            let exported = on_helper_thread("vasto-snapshot", move || {
                let _turn = crate::split::export_turn(source.estimated_keys());
                source.export_snapshot(&out_dir, SNAPSHOT_FILE_BYTES, &export_rate)
            })
            .await;
            let sent = match exported {
                Ok(s) => send_snapshot_files(&mut stream, &mut enc, &mut out, &replica, &s.files, s.position, Metered::new(rate, &MOVED.snapshot_sent)).await,
                Err(e) => refuse(&mut stream, &mut enc, out, e.to_string()).await,
            };
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the snapshot files");
            }
            sent
        }
        Some(sel) => match replica.split.get(&replica, sel.shards, rate).await {
            Ok(split) => {
                send_snapshot_files(
                    &mut stream,
                    &mut enc,
                    &mut out,
                    &replica,
                    split.files_for(sel.shard),
                    split.position(),
                    Metered::new(rate, &MOVED.resize_sent),
                )
                .await
            }
            Err(e) => refuse(&mut stream, &mut enc, out, e).await,
        },
    };
    match result {
        Ok(()) => tracing::info!(keyspace = %meta.keyspace, shard = meta.shard, ?only, "sent a snapshot to a follower"),
        Err(e) => tracing::warn!(keyspace = %meta.keyspace, shard = meta.shard, error = %e, "snapshot not sent"),
    }
}

/// Tells the follower the snapshot failed; returns the reason as the error.
async fn refuse(stream: &mut TcpStream, enc: &mut FrameEncoder, mut out: Vec<u8>, why: String) -> Result<(), String> {
    out.clear();
    enc.snapshot_chunk(&mut out, Status::Internal, &format!("snapshot failed: {why}"), 0, b"", true, 0, 0);
    let _ = stream.write_all(out).await;
    Err(why)
}

/// The pace a snapshot is sent at and the counter its bytes are added to.
struct Metered<'a> {
    pacer: Pacer,
    moved: &'a AtomicU64,
}

impl<'a> Metered<'a> {
    fn new(rate: &MoveRate, moved: &'a AtomicU64) -> Self {
        Metered { pacer: Pacer::new(rate), moved }
    }
}

async fn send_snapshot_files(
    stream: &mut TcpStream,
    enc: &mut FrameEncoder,
    out: &mut Vec<u8>,
    replica: &Replica,
    files: &[std::path::PathBuf],
    position: LogPosition,
    mut metered: Metered<'_>,
) -> Result<(), String> {
    use std::io::Read;
    let mut piece = vec![0u8; SNAPSHOT_CHUNK];
    for (index, path) in files.iter().enumerate() {
        let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        loop {
            if replica.retired() {
                return Err("the replica was dropped".into());
            }
            let n = file.read(&mut piece).map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            out.clear();
            enc.snapshot_chunk(out, Status::Ok, "", index as u32, &piece[..n], false, 0, 0);
            let (res, buf) = stream.write_all(std::mem::take(out)).await;
            *out = buf;
            res.map_err(|e| e.to_string())?;
            metered.moved.fetch_add(n as u64, Relaxed);
            if let Some(wait) = metered.pacer.after(n as u64) {
                monoio::time::sleep(wait).await;
            }
        }
    }
    out.clear();
    enc.snapshot_chunk(out, Status::Ok, "", files.len() as u32, b"", true, position.seq, position.incarnation);
    let (res, buf) = stream.write_all(std::mem::take(out)).await;
    *out = buf;
    res.map(drop).map_err(|e| e.to_string())
}
