//! The Vasto frame codec.
//!
//! A frame is a little-endian `u32` body length followed by one verified FlatBuffers `Frame`
//! (schema in `schema/vasto.fbs`). [`FrameEncoder`] appends frames to a caller-owned buffer,
//! reusing its builder, so a warmed-up connection encodes without allocating; [`parse_frame`]
//! verifies a body and returns a borrowed view whose key/value slices point into the read buffer.
//! This crate knows nothing of RocksDB or of any async runtime except, behind the `tokio`
//! feature, a frame reader for tokio streams.

mod control;
mod encode;
mod error;
mod frame;
mod handshake;
#[cfg(feature = "hostile")]
pub mod hostile;
mod token;
#[cfg(feature = "tokio")]
mod tokio_io;
mod update;

pub use control::{resize_ranges, DiskReport, ReplicaLag, ReplicaRoute, RoutingTable, ShardInfo, MAX_REPLICAS, MAX_SHARDS};
pub use encode::{BatchOpRef, EntriesBuilder, FrameEncoder};
pub use error::WireError;
pub use frame::{frame_len, parse_frame, read_frame_blocking, write_len_prefix, LEN_PREFIX};
pub use handshake::{greet_blocking, Admission, ConnectionSlot, Doorman, Greeter, HandshakeError};
pub use token::{ClusterToken, TokenError, MIN_TOKEN_BYTES};
#[cfg(feature = "tokio")]
pub use tokio_io::{greet, read_frame};
pub use update::{UpdateOutcome, UpdateRequest};
pub use vasto_hash::ShardSelector;
pub use vasto_schema::fb;
pub use vasto_schema::fb::{Body, Condition, ExpireCondition, ExpiryMode, OpKind, Role, Status, UpdateKind};

/// Protocol version carried in every hello; peers with another version are refused.
/// Version 2: cluster ids in hellos, change-log incarnations in tails, keyspace incarnations in
/// shard reports, shard command acks with log heads, import leases.
/// Version 3: cluster-token challenge-response in the opening (`Auth`), the `Importer` role.
/// Version 4: `Update` (read-modify-writes and counters), gets with expiry, status `Refused`.
pub const PROTOCOL_VERSION: u32 = 4;

/// How often the master sends a keep-alive (an empty `Heartbeat`) on a connection it has
/// nothing else to send on, so its peers can tell a silent master from an idle one.
pub const MASTER_KEEPALIVE: std::time::Duration = std::time::Duration::from_millis(500);
/// A master connection that brings no frame for this long is taken for dead (the master went
/// away without closing it, or the network between is cut) and is dialled again.
pub const MASTER_SILENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Largest frame a node reads before it has admitted the peer: a hello or a token proof is a
/// few dozen bytes, so a stranger cannot make it buffer more.
pub const OPENING_MAX_FRAME: usize = 4096;

/// Default limit on a frame body (64 MiB); larger frames are refused before they are buffered.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// A human-readable name for a status code, for error messages and the CLI.
pub fn status_name(status: Status) -> &'static str {
    status.variant_name().unwrap_or("Unknown")
}

/// The key selector a `Tail` or `SnapshotRequest` carries in `only_shard`/`only_shards`
/// (`None`: every key).
pub fn only_selector(only_shard: u32, only_shards: u32) -> Option<ShardSelector> {
    (only_shards > 0).then_some(ShardSelector { shard: only_shard, shards: only_shards })
}

#[cfg(test)]
mod tests;
