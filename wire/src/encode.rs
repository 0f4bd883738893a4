use crate::control::{DiskReport, ReplicaLag, RoutingTable, ShardInfo};
use crate::fb::{self, Body, OpKind, Role, Status};
use crate::frame::write_len_prefix;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use vasto_hash::ShardSelector;

/// One operation of a batch, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct BatchOpRef<'a> {
    /// Put or delete.
    pub kind: OpKind,
    /// The key.
    pub key: &'a [u8],
    /// The value (ignored for deletes).
    pub value: &'a [u8],
    /// Writer's event time in nanoseconds since the Unix epoch.
    pub event_time_ns: u64,
    /// Time to live in nanoseconds, 0 for none.
    pub ttl_ns: u64,
}

/// Builds frames and appends them, length prefix included, to a caller-owned buffer.
///
/// The builder is reset after every frame and keeps its capacity, so encoding on a warmed-up
/// connection does not allocate. Each method appends exactly one frame to `out`.
pub struct FrameEncoder {
    pub(crate) fbb: FlatBufferBuilder<'static>,
    entries: Vec<WIPOffset<fb::KeyValue<'static>>>,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    /// A new encoder with a 4 KiB builder.
    pub fn new() -> Self {
        Self { fbb: FlatBufferBuilder::with_capacity(4096), entries: Vec::new() }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, id: u64, body_type: Body, body: WIPOffset<UnionWIPOffset>) {
        let frame = fb::Frame::create(&mut self.fbb, &fb::FrameArgs { id, body_type, body: Some(body) });
        self.fbb.finish(frame, None);
        let data = self.fbb.finished_data();
        write_len_prefix(out, data.len());
        out.extend_from_slice(data);
        self.fbb.reset();
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> WIPOffset<flatbuffers::Vector<'static, u8>> {
        self.fbb.create_vector_direct(b)
    }

    /// Connection opening: protocol version, role, the sender's cluster id (0: unknown) and its
    /// half of the token challenge (see [`crate::Greeter`]).
    pub fn hello(&mut self, out: &mut Vec<u8>, role: Role, cluster_id: u64, nonce: &[u8]) {
        let nonce = self.bytes(nonce);
        let args = fb::HelloArgs { protocol_version: crate::PROTOCOL_VERSION, role, cluster_id, nonce: Some(nonce) };
        let b = fb::Hello::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::Hello, b.as_union_value());
    }

    /// Answer to a hello with the answering node's cluster id (0: unknown) and no challenge;
    /// `status` is `VersionMismatch` when the versions differ, `WrongCluster` when the cluster ids
    /// do, `Ok` when the node runs without a token.
    pub fn hello_reply(&mut self, out: &mut Vec<u8>, status: Status, message: &str, cluster_id: u64) {
        self.hello_reply_with(out, status, message, cluster_id, b"", b"");
    }

    /// Acceptance of a hello by a node with a token: its nonce and its proof of the token; the
    /// peer must answer with `Auth`.
    pub fn hello_challenge(&mut self, out: &mut Vec<u8>, cluster_id: u64, nonce: &[u8], proof: &[u8]) {
        self.hello_reply_with(out, Status::Ok, "", cluster_id, nonce, proof);
    }

    fn hello_reply_with(&mut self, out: &mut Vec<u8>, status: Status, message: &str, cluster_id: u64, nonce: &[u8], proof: &[u8]) {
        let message = self.fbb.create_string(message);
        let (nonce, proof) = (self.bytes(nonce), self.bytes(proof));
        let args = fb::HelloReplyArgs {
            protocol_version: crate::PROTOCOL_VERSION,
            status,
            message: Some(message),
            cluster_id,
            nonce: Some(nonce),
            proof: Some(proof),
        };
        let b = fb::HelloReply::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::HelloReply, b.as_union_value());
    }

    /// The peer's answer to a challenge.
    pub fn auth(&mut self, out: &mut Vec<u8>, proof: &[u8]) {
        let proof = self.bytes(proof);
        let b = fb::Auth::create(&mut self.fbb, &fb::AuthArgs { proof: Some(proof) });
        self.finish(out, 0, Body::Auth, b.as_union_value());
    }

    /// The node's verdict on an `Auth`.
    pub fn auth_reply(&mut self, out: &mut Vec<u8>, status: Status, message: &str) {
        let message = self.fbb.create_string(message);
        let b = fb::AuthReply::create(&mut self.fbb, &fb::AuthReplyArgs { status, message: Some(message) });
        self.finish(out, 0, Body::AuthReply, b.as_union_value());
    }

    /// A get of `key` on shard `shard` of `keyspace`.
    pub fn get(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, key: &[u8]) {
        self.get_with(out, id, keyspace, shard, key, false);
    }

    /// A get whose answer also carries the value's expiry when `with_expiry` is set.
    pub fn get_with(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, key: &[u8], with_expiry: bool) {
        let keyspace = self.fbb.create_string(keyspace);
        let key = self.bytes(key);
        let b = fb::Get::create(&mut self.fbb, &fb::GetArgs { keyspace: Some(keyspace), shard, key: Some(key), with_expiry });
        self.finish(out, id, Body::Get, b.as_union_value());
    }

    /// A put; `ttl_ns` 0 means the value never expires.
    #[allow(clippy::too_many_arguments)]
    pub fn put(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, key: &[u8], value: &[u8], event_time_ns: u64, ttl_ns: u64) {
        let keyspace = self.fbb.create_string(keyspace);
        let key = self.bytes(key);
        let value = self.bytes(value);
        let args = fb::PutArgs { keyspace: Some(keyspace), shard, key: Some(key), value: Some(value), event_time_ns, ttl_ns };
        let b = fb::Put::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Put, b.as_union_value());
    }

    /// A delete, recorded as a tombstone at `event_time_ns`.
    pub fn delete(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, key: &[u8], event_time_ns: u64) {
        let keyspace = self.fbb.create_string(keyspace);
        let key = self.bytes(key);
        let b = fb::Delete::create(&mut self.fbb, &fb::DeleteArgs { keyspace: Some(keyspace), shard, key: Some(key), event_time_ns });
        self.finish(out, id, Body::Delete, b.as_union_value());
    }

    /// An atomic batch of puts and deletes, all on one shard.
    pub fn batch(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, ops: &[BatchOpRef<'_>]) {
        let keyspace = self.fbb.create_string(keyspace);
        let mut offsets = Vec::with_capacity(ops.len());
        for op in ops {
            let key = self.bytes(op.key);
            let value = self.bytes(op.value);
            let args = fb::BatchOpArgs { kind: op.kind, key: Some(key), value: Some(value), event_time_ns: op.event_time_ns, ttl_ns: op.ttl_ns };
            offsets.push(fb::BatchOp::create(&mut self.fbb, &args));
        }
        let ops = self.fbb.create_vector(&offsets);
        let b = fb::Batch::create(&mut self.fbb, &fb::BatchArgs { keyspace: Some(keyspace), shard, ops: Some(ops) });
        self.finish(out, id, Body::Batch, b.as_union_value());
    }

    /// A prefix scan of one shard: up to `limit` keys with `prefix`, strictly after `start_after`.
    #[allow(clippy::too_many_arguments)]
    pub fn scan(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, prefix: &[u8], start_after: &[u8], limit: u32) {
        let keyspace = self.fbb.create_string(keyspace);
        let prefix = self.bytes(prefix);
        let start_after = self.bytes(start_after);
        let args = fb::ScanArgs { keyspace: Some(keyspace), shard, prefix: Some(prefix), start_after: Some(start_after), limit };
        let b = fb::Scan::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Scan, b.as_union_value());
    }

    /// A response carrying only a status (and an optional message; empty means none).
    pub fn status(&mut self, out: &mut Vec<u8>, id: u64, status: Status, message: &str, routing_version: u64) {
        let message = (!message.is_empty()).then(|| self.fbb.create_string(message));
        let args = fb::ResponseArgs { status, message, routing_version, ..Default::default() };
        let b = fb::Response::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Response, b.as_union_value());
    }

    /// A found value (possibly empty).
    pub fn value(&mut self, out: &mut Vec<u8>, id: u64, value: &[u8]) {
        self.value_expiring(out, id, value, 0);
    }

    /// A found value and its expiry (ns since the Unix epoch, 0 = never).
    pub fn value_expiring(&mut self, out: &mut Vec<u8>, id: u64, value: &[u8], expires_at_ns: u64) {
        let value = self.bytes(value);
        let args = fb::ResponseArgs { status: Status::Ok, value: Some(value), expires_at_ns, ..Default::default() };
        let b = fb::Response::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Response, b.as_union_value());
    }

    /// A scan page: the entries in key order and whether more may follow.
    pub fn scan_page<K, V, I>(&mut self, out: &mut Vec<u8>, id: u64, entries: I, more: bool)
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut page = self.entries_builder();
        for (k, v) in entries {
            page.push(k.as_ref(), v.as_ref());
        }
        page.finish_scan_page(out, id, more);
    }

    /// Starts a frame of key/value entries pushed one at a time (a scan page or a `Changes`
    /// frame), for callback-style sources.
    pub fn entries_builder(&mut self) -> EntriesBuilder<'_> {
        self.entries.clear();
        EntriesBuilder { enc: self }
    }

    fn shard_info(&mut self, s: &ShardInfo) -> WIPOffset<fb::ShardInfo<'static>> {
        let keyspace = self.fbb.create_string(&s.keyspace);
        let args = fb::ShardInfoArgs {
            keyspace: Some(keyspace),
            shard: s.shard,
            shards: s.shards,
            replica: s.replica,
            replicas: s.replicas,
            committed: s.committed,
            committed_at: s.committed_at_ms,
            keyspace_incarnation: s.keyspace_incarnation,
            frozen: s.frozen,
            created_at: s.created_at_ms,
        };
        fb::ShardInfo::create(&mut self.fbb, &args)
    }

    /// Store -> master registration with every shard replica the store holds, and the id of
    /// this start of the store process.
    #[allow(clippy::too_many_arguments)]
    pub fn register(&mut self, out: &mut Vec<u8>, store_id: &str, address: &str, zone: &str, disk: DiskReport, shards: &[ShardInfo], start_id: u64) {
        let infos: Vec<_> = shards.iter().map(|s| self.shard_info(s)).collect();
        let shards = self.fbb.create_vector(&infos);
        let store_id = self.fbb.create_string(store_id);
        let address = self.fbb.create_string(address);
        let zone = self.fbb.create_string(zone);
        let args = fb::RegisterArgs {
            store_id: Some(store_id),
            address: Some(address),
            capacity_bytes: disk.capacity_bytes,
            shards: Some(shards),
            start_id,
            zone: Some(zone),
            free_bytes: disk.free_bytes,
            disk_full: disk.full,
        };
        let b = fb::Register::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::Register, b.as_union_value());
    }

    /// Store -> master liveness signal, with the replication lag of every followed peer and the
    /// state of its disk.
    pub fn heartbeat(&mut self, out: &mut Vec<u8>, store_id: &str, lags: &[ReplicaLag], disk: DiskReport) {
        let mut offsets = Vec::with_capacity(lags.len());
        for l in lags {
            let keyspace = self.fbb.create_string(&l.keyspace);
            let peer = self.fbb.create_string(&l.peer);
            let args = fb::ReplicaLagArgs {
                keyspace: Some(keyspace),
                shard: l.shard,
                peer: Some(peer),
                entries: l.entries,
                lag_ms: l.lag_ms,
                caught_up: l.caught_up,
                position: l.position,
                incarnation: l.incarnation,
            };
            offsets.push(fb::ReplicaLag::create(&mut self.fbb, &args));
        }
        let lags = self.fbb.create_vector(&offsets);
        let store_id = self.fbb.create_string(store_id);
        let b = fb::Heartbeat::create(
            &mut self.fbb,
            &fb::HeartbeatArgs {
                store_id: Some(store_id),
                lags: Some(lags),
                capacity_bytes: disk.capacity_bytes,
                free_bytes: disk.free_bytes,
                disk_full: disk.full,
            },
        );
        self.finish(out, 0, Body::Heartbeat, b.as_union_value());
    }

    /// Follower -> store: stream this shard's local writes after position `after` of change-log
    /// incarnation `incarnation`. With `only`, the sender streams just the keys it selects (a
    /// resize copy).
    #[allow(clippy::too_many_arguments)]
    pub fn tail(&mut self, out: &mut Vec<u8>, keyspace: &str, shard: u32, incarnation: u64, after: u64, follower: &str, only: Option<ShardSelector>) {
        let keyspace = self.fbb.create_string(keyspace);
        let follower = self.fbb.create_string(follower);
        let (only_shard, only_shards) = only.map_or((0, 0), |o| (o.shard, o.shards));
        let args = fb::TailArgs { keyspace: Some(keyspace), shard, after, follower: Some(follower), only_shard, only_shards, incarnation };
        let b = fb::Tail::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::Tail, b.as_union_value());
    }

    /// Follower -> store: ask for a full snapshot of a shard replica.
    /// With `only`, the snapshot holds just the keys it selects (a resize copy).
    pub fn snapshot_request(&mut self, out: &mut Vec<u8>, keyspace: &str, shard: u32, follower: &str, only: Option<ShardSelector>) {
        let keyspace = self.fbb.create_string(keyspace);
        let follower = self.fbb.create_string(follower);
        let (only_shard, only_shards) = only.map_or((0, 0), |o| (o.shard, o.shards));
        let args = fb::SnapshotRequestArgs { keyspace: Some(keyspace), shard, follower: Some(follower), only_shard, only_shards };
        let b = fb::SnapshotRequest::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::SnapshotRequest, b.as_union_value());
    }

    /// Store -> follower: one piece of a snapshot file (or, with a non-Ok status, why there is
    /// none). The last piece (`done`) carries the position to tail from and its log incarnation.
    #[allow(clippy::too_many_arguments)]
    pub fn snapshot_chunk(&mut self, out: &mut Vec<u8>, status: Status, message: &str, file: u32, data: &[u8], done: bool, position: u64, incarnation: u64) {
        let message = (!message.is_empty()).then(|| self.fbb.create_string(message));
        let data = self.bytes(data);
        let args = fb::SnapshotChunkArgs { status, message, file, data: Some(data), done, position, incarnation };
        let b = fb::SnapshotChunk::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::SnapshotChunk, b.as_union_value());
    }

    /// Importer -> store: one piece of an SST file for `shard` of `shards`; `done` (with no data)
    /// asks the store to ingest what it received.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, shards: u32, file: u32, data: &[u8], done: bool) {
        let keyspace = self.fbb.create_string(keyspace);
        let data = self.bytes(data);
        let args = fb::IngestArgs { keyspace: Some(keyspace), shard, shards, file, data: Some(data), done };
        let b = fb::Ingest::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Ingest, b.as_union_value());
    }

    /// A `Changes` frame without entries: a keep-alive (`Ok`) or a refusal such as `Trimmed`.
    pub fn changes_status(&mut self, out: &mut Vec<u8>, status: Status, position: u64, head: u64, incarnation: u64) {
        let b = fb::Changes::create(&mut self.fbb, &fb::ChangesArgs { status, entries: None, position, head, incarnation });
        self.finish(out, 0, Body::Changes, b.as_union_value());
    }

    /// Master -> store: create or drop one shard replica. The store answers with a
    /// `ShardCommandAck`.
    pub fn shard_command(&mut self, out: &mut Vec<u8>, id: u64, kind: fb::ShardCommandKind, shard: &ShardInfo, dir: &str) {
        let shard = self.shard_info(shard);
        let dir = (!dir.is_empty()).then(|| self.fbb.create_string(dir));
        let b = fb::ShardCommand::create(&mut self.fbb, &fb::ShardCommandArgs { kind, shard: Some(shard), dir });
        self.finish(out, id, Body::ShardCommand, b.as_union_value());
    }

    /// Store -> master: the outcome of shard command `id`, with the replica's change-log head and
    /// incarnation once it took effect (0 when there is no replica).
    pub fn shard_command_ack(&mut self, out: &mut Vec<u8>, id: u64, status: Status, message: &str, log_head: u64, log_incarnation: u64) {
        let message = (!message.is_empty()).then(|| self.fbb.create_string(message));
        let b = fb::ShardCommandAck::create(&mut self.fbb, &fb::ShardCommandAckArgs { status, message, log_head, log_incarnation });
        self.finish(out, id, Body::ShardCommandAck, b.as_union_value());
    }

    /// Importer -> master: an import into `keyspace` starts (no resize or replace may start until
    /// it ends).
    pub fn begin_import(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::BeginImport::create(&mut self.fbb, &fb::BeginImportArgs { keyspace: Some(keyspace) });
        self.finish(out, id, Body::BeginImport, b.as_union_value());
    }

    /// Importer -> master: the import into `keyspace` is over.
    pub fn end_import(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::EndImport::create(&mut self.fbb, &fb::EndImportArgs { keyspace: Some(keyspace) });
        self.finish(out, id, Body::EndImport, b.as_union_value());
    }

    /// Client -> master: subscribe to a keyspace's routing table.
    pub fn subscribe(&mut self, out: &mut Vec<u8>, keyspace: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::Subscribe::create(&mut self.fbb, &fb::SubscribeArgs { keyspace: Some(keyspace) });
        self.finish(out, 0, Body::Subscribe, b.as_union_value());
    }

    /// Master -> client: a full routing table.
    pub fn routing_table(&mut self, out: &mut Vec<u8>, table: &RoutingTable) {
        let mut shard_offsets = Vec::with_capacity(table.routes.len());
        for (shard, replicas) in table.routes.iter().enumerate() {
            let mut replica_offsets = Vec::with_capacity(replicas.len());
            for r in replicas {
                let store_id = self.fbb.create_string(&r.store_id);
                let address = self.fbb.create_string(&r.address);
                let args = fb::ReplicaRouteArgs { store_id: Some(store_id), address: Some(address), up: r.up, catching_up: r.catching_up };
                replica_offsets.push(fb::ReplicaRoute::create(&mut self.fbb, &args));
            }
            let replicas = self.fbb.create_vector(&replica_offsets);
            let args = fb::ShardRouteArgs { shard: shard as u32, replicas: Some(replicas) };
            shard_offsets.push(fb::ShardRoute::create(&mut self.fbb, &args));
        }
        let routes = self.fbb.create_vector(&shard_offsets);
        let keyspace = self.fbb.create_string(&table.keyspace);
        let args = fb::RoutingTableArgs {
            keyspace: Some(keyspace),
            exists: table.exists,
            version: table.version,
            shards: table.shards,
            replicas: table.replicas,
            routes: Some(routes),
            resizing_to: table.resizing_to,
        };
        let b = fb::RoutingTable::create(&mut self.fbb, &args);
        self.finish(out, 0, Body::RoutingTable, b.as_union_value());
    }

    /// Admin -> master: create a keyspace.
    /// With `require_zones` the master refuses a placement that puts two replicas of a shard in
    /// one zone.
    pub fn create_keyspace(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shards: u32, replicas: u32, require_zones: bool) {
        let keyspace = self.fbb.create_string(keyspace);
        let args = fb::CreateKeyspaceArgs { keyspace: Some(keyspace), shards, replicas, require_zones };
        let b = fb::CreateKeyspace::create(&mut self.fbb, &args);
        self.finish(out, id, Body::CreateKeyspace, b.as_union_value());
    }

    /// Admin -> master: back up `keyspace` into the absolute directory `dir` (see
    /// `vasto admin backup`).
    pub fn backup_keyspace(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, dir: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let dir = self.fbb.create_string(dir);
        let b = fb::BackupKeyspace::create(&mut self.fbb, &fb::BackupKeyspaceArgs { keyspace: Some(keyspace), dir: Some(dir) });
        self.finish(out, id, Body::BackupKeyspace, b.as_union_value());
    }

    /// Admin -> master: start a full compaction of every replica of `keyspace`.
    pub fn compact_keyspace(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::CompactKeyspace::create(&mut self.fbb, &fb::CompactKeyspaceArgs { keyspace: Some(keyspace) });
        self.finish(out, id, Body::CompactKeyspace, b.as_union_value());
    }

    /// Admin -> master: delete a keyspace and all its data.
    pub fn delete_keyspace(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::DeleteKeyspace::create(&mut self.fbb, &fb::DeleteKeyspaceArgs { keyspace: Some(keyspace) });
        self.finish(out, id, Body::DeleteKeyspace, b.as_union_value());
    }

    /// Admin -> master: hand every replica of `keyspace` on store `from` over to store `to`.
    pub fn replace_store(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, from: &str, to: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let from = self.fbb.create_string(from);
        let to = self.fbb.create_string(to);
        let b = fb::ReplaceStore::create(&mut self.fbb, &fb::ReplaceStoreArgs { keyspace: Some(keyspace), from: Some(from), to: Some(to) });
        self.finish(out, id, Body::ReplaceStore, b.as_union_value());
    }

    /// Admin -> master: change the shard count of `keyspace`.
    pub fn resize_keyspace(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shards: u32) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::ResizeKeyspace::create(&mut self.fbb, &fb::ResizeKeyspaceArgs { keyspace: Some(keyspace), shards });
        self.finish(out, id, Body::ResizeKeyspace, b.as_union_value());
    }

    /// Admin -> master: cancel the operation in progress on `keyspace`.
    pub fn cancel_operation(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str) {
        let keyspace = self.fbb.create_string(keyspace);
        let b = fb::CancelOperation::create(&mut self.fbb, &fb::CancelOperationArgs { keyspace: Some(keyspace) });
        self.finish(out, id, Body::CancelOperation, b.as_union_value());
    }

    /// Admin -> master: ask for the cluster status document.
    pub fn status_request(&mut self, out: &mut Vec<u8>, id: u64) {
        let b = fb::StatusRequest::create(&mut self.fbb, &fb::StatusRequestArgs {});
        self.finish(out, id, Body::StatusRequest, b.as_union_value());
    }

    /// Master -> admin: the outcome of an admin request.
    pub fn admin_reply(&mut self, out: &mut Vec<u8>, id: u64, status: Status, message: &str, json: &str) {
        let message = self.fbb.create_string(message);
        let json = self.fbb.create_string(json);
        let b = fb::AdminReply::create(&mut self.fbb, &fb::AdminReplyArgs { status, message: Some(message), json: Some(json) });
        self.finish(out, id, Body::AdminReply, b.as_union_value());
    }
}

/// A frame of entries under construction; see [`FrameEncoder::entries_builder`].
pub struct EntriesBuilder<'e> {
    enc: &'e mut FrameEncoder,
}

impl EntriesBuilder<'_> {
    /// Appends one entry; entries must be pushed in the order the reader should see them.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let key = self.enc.bytes(key);
        let value = self.enc.bytes(value);
        let kv = fb::KeyValue::create(&mut self.enc.fbb, &fb::KeyValueArgs { key: Some(key), value: Some(value) });
        self.enc.entries.push(kv);
    }

    /// Number of entries pushed so far.
    pub fn len(&self) -> usize {
        self.enc.entries.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.enc.entries.is_empty()
    }

    /// Appends the entries as a scan page (an Ok `Response`) to `out`.
    pub fn finish_scan_page(self, out: &mut Vec<u8>, id: u64, more: bool) {
        let entries = self.enc.fbb.create_vector(&self.enc.entries);
        let args = fb::ResponseArgs { status: Status::Ok, entries: Some(entries), more, ..Default::default() };
        let b = fb::Response::create(&mut self.enc.fbb, &args);
        self.enc.finish(out, id, Body::Response, b.as_union_value());
    }

    /// Appends the entries as a replication `Changes` frame to `out`.
    pub fn finish_changes(self, out: &mut Vec<u8>, position: u64, head: u64, incarnation: u64) {
        let entries = self.enc.fbb.create_vector(&self.enc.entries);
        let args = fb::ChangesArgs { status: Status::Ok, entries: Some(entries), position, head, incarnation };
        let b = fb::Changes::create(&mut self.enc.fbb, &args);
        self.enc.finish(out, 0, Body::Changes, b.as_union_value());
    }
}
