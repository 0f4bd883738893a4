//! The sending side of replication: a follower's connection, once it has sent `Tail`, receives
//! this replica's locally-originated writes as `Changes` frames, pushed as soon as they are
//! written (the write path wakes this task), with a keep-alive when idle.
use crate::registry::Replica;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vasto_engine::EngineError;
use vasto_wire::{FrameEncoder, Status};

/// Largest batch of changes per frame (about).
const MAX_FRAME_BYTES: usize = 256 << 10;
/// An idle tail sends an empty `Changes` this often so the follower knows the sender is alive.
pub const KEEPALIVE: Duration = Duration::from_millis(500);

/// Streams changes after `position` until the follower goes away.
pub async fn stream_changes(mut stream: TcpStream, replica: Arc<Replica>, mut position: u64) {
    let mut enc = FrameEncoder::new();
    let mut out: Vec<u8> = Vec::with_capacity(MAX_FRAME_BYTES + 4096);
    let mut last_sent = Instant::now() - KEEPALIVE;
    loop {
        let next = replica.next_append();
        let mut next = std::pin::pin!(next);
        next.as_mut().enable();
        let head = replica.head_position();
        out.clear();
        let mut page = enc.entries_builder();
        let read = replica.read_changes(position, MAX_FRAME_BYTES, |k, v| page.push(k, v));
        let caught_up = match read {
            Ok(read) => {
                let page_len = page.len();
                let moved = read.position != position || !page.is_empty();
                if moved || last_sent.elapsed() >= KEEPALIVE {
                    page.finish_changes(&mut out, read.position, head);
                }
                tracing::debug!(entries = page_len, position = read.position, head, "tail read");
                position = read.position;
                position >= head
            }
            Err(EngineError::Trimmed { after }) => {
                tracing::warn!(keyspace = %replica.meta().keyspace, shard = replica.meta().shard, after, "follower is behind the change log; it must re-bootstrap");
                enc.changes_status(&mut out, Status::Trimmed, after, head);
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
        }
        if caught_up {
            let _ = monoio::time::timeout(KEEPALIVE, next).await;
        }
    }
}
