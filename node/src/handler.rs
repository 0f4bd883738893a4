//! Turns one verified request frame into one response frame. Synchronous: RocksDB calls run on
//! the core that owns the connection (thread-per-core), with key and value slices borrowed
//! straight from the read buffer.
use crate::disk_reads::{answer_get, ReadBatch, Tier};
use crate::group::WriteGroup;
use crate::ingest::IngestSession;
use crate::metrics::{Op, Tally};
use crate::refusal::{checked_key, checked_value, engine_error, reject, Reject, FROZEN_MESSAGE, MAX_SCAN_BYTES, MAX_SCAN_LIMIT};
use crate::registry::{Lookup, Registry, Replica};
use crate::request::Request;
use crate::update_group::UpdateGroup;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use vasto_engine::{KeyUpdate, LogPosition, Write};
use vasto_wire::{fb, only_selector, parse_frame, Admission, ClusterToken, Doorman, FrameEncoder, OpKind, Role, ShardSelector, Status};

/// Per-connection request executor: owns the frame encoder so responses are encoded without
/// allocating once the connection is warm.
pub struct Handler {
    registry: Arc<Registry>,
    enc: FrameEncoder,
    /// The opening of the connection and the role the peer was admitted as.
    door: Doorman,
    /// Who is connected, for the log.
    peer: SocketAddr,
    /// How far ahead of this store's clock a write's event time may be, in nanoseconds.
    max_skew_ns: u64,
    /// The import being received on this connection, if any.
    ingest: Option<IngestSession>,
    /// Puts and deletes held for one group commit (see [`crate::group`]).
    group: WriteGroup,
    /// Read-modify-writes held for one group commit (see [`crate::update_group`]); only one of
    /// the two groups holds anything at a time, so answers keep the order of the requests.
    updates: UpdateGroup,
    /// Where the answers of the last flush end in the output, if `handle` flushed; else 0.
    flushed_to: usize,
    /// Whether a get that needs a file is deferred to the reader threads (see `disk_reads`).
    defer_reads: bool,
    /// The gets deferred from the current read buffer, in request order.
    pub(crate) reads: ReadBatch,
    /// The answers given since the connection last added them to the core's metrics.
    pub(crate) tally: Tally,
}

/// What the connection loop should do after a frame.
pub enum Next {
    /// Keep reading frames.
    Continue,
    /// Flush the output and close the connection.
    Close,
    /// The peer is a follower: from now on stream this replica's changes after the position.
    Tail(Arc<Replica>, LogPosition, Option<ShardSelector>),
    /// The peer is a follower too far behind: send it a full snapshot of this replica.
    Snapshot(Arc<Replica>, Option<ShardSelector>, Option<crate::snapshot_gate::SnapshotPermit>),
    /// The importer sent its last piece: ingest the files, answer request `id`, close.
    Ingest(IngestSession, u64),
    /// Not handled: deferred gets must be answered first, then this frame is handled again.
    Wait,
}

impl Handler {
    /// A handler serving the shards of `registry` to `peer`, admitting only peers that prove
    /// `token` when there is one, and refusing writes whose event time is more than
    /// `max_skew_ns` ahead of this store's clock (one would win over every later write until
    /// the clocks caught up).
    pub fn new(registry: Arc<Registry>, token: Option<ClusterToken>, peer: SocketAddr, max_skew_ns: u64) -> Self {
        let door = Doorman::new("store", token);
        Self {
            registry,
            enc: FrameEncoder::new(),
            door,
            peer,
            max_skew_ns,
            ingest: None,
            group: WriteGroup::default(),
            updates: UpdateGroup::default(),
            flushed_to: 0,
            defer_reads: false,
            reads: ReadBatch::default(),
            tally: Tally::default(),
        }
    }

    /// Defers gets that need a file to the reader threads (see `disk_reads`): the connection
    /// must then answer [`Handler::reads`] whenever it is pending after handling frames.
    pub fn deferring_reads(mut self, on: bool) -> Self {
        self.defer_reads = on;
        self
    }

    /// The encoder (for answering deferred gets without a reader thread) and the tally.
    pub(crate) fn encoder_and_tally(&mut self) -> (&mut FrameEncoder, &mut Tally) {
        (&mut self.enc, &mut self.tally)
    }

    /// A new handler on the same registry and the same admitted peer, with nothing held (used to
    /// recover from a panic mid-encode).
    pub fn fresh(&mut self) -> Self {
        let door = std::mem::replace(&mut self.door, Doorman::new("store", None));
        let tally = std::mem::take(&mut self.tally);
        // Gets deferred before the panic are still answered.
        let reads = std::mem::take(&mut self.reads);
        Self { door, tally, reads, ..Self::new(Arc::clone(&self.registry), None, self.peer, self.max_skew_ns).deferring_reads(self.defer_reads) }
    }

    /// Whether the peer has been admitted (every frame after that is a request).
    pub fn admitted(&self) -> bool {
        self.door.admitted().is_some()
    }

    /// Answers a frame of the connection's opening (see `vasto_wire::Doorman`): a hello with our
    /// protocol version and, when the peer knows its cluster, our cluster id; then, when this
    /// store has a token, the peer's proof of it.
    pub fn admit(&mut self, body: &[u8], out: &mut Vec<u8>) -> Next {
        match self.door.on_frame(body, self.registry.cluster_id(), &mut self.enc, out) {
            Admission::Wait | Admission::Admitted(_) => Next::Continue,
            Admission::Refused(why) => {
                tracing::warn!(peer = %self.peer, %why, "refused a connection");
                Next::Close
            }
        }
    }

    /// Executes one request frame body and appends exactly one response frame to `out` (the
    /// one-frame form of [`Handler::handle`], for tests).
    #[cfg(test)]
    pub fn request(&mut self, body: &[u8], out: &mut Vec<u8>) -> Next {
        let next = self.handle(body, 0..body.len(), out);
        self.flush_writes(body, out);
        next
    }

    /// Like [`Handler::request`] for the frame body at `body` in `input`, except that a put,
    /// delete or update may be held for a group commit: its answer is appended by the next
    /// [`Handler::flush_writes`], which must be called with the same `input` before it changes.
    /// Held writes are committed before any other request is handled, so answers stay in
    /// request order. A request the peer's role may not make is refused and closes the
    /// connection.
    pub fn handle(&mut self, input: &[u8], body: Range<usize>, out: &mut Vec<u8>) -> Next {
        self.flushed_to = 0;
        let frame = match parse_frame(&input[body]) {
            Ok(f) => f,
            Err(_) if self.reads.pending() => return Next::Wait,
            Err(e) => {
                // The framing is intact, so the connection can go on; the id is unknowable.
                self.flush_writes(input, out);
                self.tally.count(Op::Other, Status::BadRequest);
                self.enc.status(out, 0, Status::BadRequest, &e.to_string(), 0);
                return Next::Continue;
            }
        };
        let id = frame.id();
        let request = Request::of(&frame);
        if self.reads.pending() {
            // Only gets join deferred gets (answers keep request order); the rest waits.
            return match request {
                Some(Request::Get(r)) if !self.reads.is_full() && self.door.admitted().is_some_and(|role| Request::Get(r).permitted(role)) => {
                    self.defer_get(input, id, r)
                }
                _ => Next::Wait,
            };
        }
        let Some(request) = request else {
            self.flush_writes(input, out);
            self.tally.count(Op::Other, Status::BadRequest);
            self.enc.status(out, id, Status::BadRequest, "unexpected message on a data connection", 0);
            return Next::Continue;
        };
        let admitted = self.door.admitted();
        if !admitted.is_some_and(|role| request.permitted(role)) {
            let role = admitted.unwrap_or(Role::Client);
            self.flush_writes(input, out);
            let what = request.name();
            tracing::warn!(peer = %self.peer, ?role, request = what, "refused a request the peer's role may not make");
            self.tally.count(request.op(), Status::Unauthorized);
            self.enc.status(out, id, Status::Unauthorized, &format!("a {role:?} connection may not send a {what}"), 0);
            return Next::Close;
        }
        let op = request.op();
        let held = match request {
            Request::Put(r) => self.hold_put(input, id, r, out),
            Request::Delete(r) => self.hold_delete(input, id, r, out),
            Request::Update(r) => self.hold_update(input, id, r, out),
            other => {
                self.flush_writes(input, out);
                return self.serve(input, out, id, other);
            }
        };
        if let Err(Reject(status, msg)) = held {
            self.flush_writes(input, out);
            self.tally.count(op, status);
            self.enc.status(out, id, status, &msg, 0);
        }
        Next::Continue
    }

    /// Serves every request but puts and deletes, once the held writes are committed.
    fn serve(&mut self, input: &[u8], out: &mut Vec<u8>, id: u64, request: Request<'_>) -> Next {
        let op = request.op();
        let result = match request {
            Request::Tail(tail) => {
                let from = LogPosition { incarnation: tail.incarnation(), seq: tail.after() };
                return match self.shard(tail.keyspace(), tail.shard()) {
                    Ok(replica) => Next::Tail(replica, from, only_selector(tail.only_shard(), tail.only_shards())),
                    Err(Reject(status, msg)) => {
                        self.enc.changes_status(out, status, tail.after(), 0, 0);
                        tracing::warn!(follower = tail.follower().unwrap_or_default(), %msg, "refused a tail");
                        Next::Close
                    }
                };
            }
            Request::Snapshot(req) => {
                let only = only_selector(req.only_shard(), req.only_shards());
                let admitted = self.shard(req.keyspace(), req.shard()).and_then(|replica| {
                    // A full snapshot is a whole export: rate-limited. Resize copies share one.
                    let permit = match only {
                        Some(_) => None,
                        None => {
                            let name = format!("{}/{}", req.keyspace().unwrap_or_default(), req.shard());
                            let follower = req.follower().unwrap_or_default();
                            let permit = self.registry.snapshots.admit(&name, follower, std::time::Instant::now()).map_err(|why| {
                                tracing::info!(follower, replica = %name, %why, "refused a snapshot");
                                Reject(Status::Unavailable, why.into())
                            })?;
                            Some(permit)
                        }
                    };
                    Ok((replica, permit))
                });
                return match admitted {
                    Ok((replica, permit)) => Next::Snapshot(replica, only, permit),
                    Err(Reject(status, msg)) => {
                        self.enc.snapshot_chunk(out, status, &msg, 0, b"", true, 0, 0);
                        Next::Close
                    }
                };
            }
            Request::Ingest(req) => return self.ingest(out, id, req),
            Request::Get(r) => self.get(input, out, id, r),
            Request::Batch(r) => self.batch(r),
            Request::Scan(r) => self.scan(out, id, r),
            Request::Put(_) | Request::Delete(_) | Request::Update(_) => Err(reject(Status::Internal, "a write reached the unheld path")),
        };
        match result {
            Ok(Responded::Yes(status)) => self.tally.count(op, status),
            Ok(Responded::Later) => {}
            Ok(Responded::No) => {
                self.tally.count(op, Status::Ok);
                self.enc.status(out, id, Status::Ok, "", 0);
            }
            Err(Reject(status, msg)) => {
                self.tally.count(op, status);
                self.enc.status(out, id, status, &msg, 0);
            }
        }
        Next::Continue
    }

    /// One piece of an import (no answer), or its end (answered once the files are ingested).
    /// Any error is answered at once and closes the connection; the files received are removed.
    fn ingest(&mut self, out: &mut Vec<u8>, id: u64, req: fb::Ingest<'_>) -> Next {
        let session = match self.ingest.take() {
            Some(s) if s.is_for(req.keyspace().unwrap_or_default(), req.shard()) => Ok(s),
            Some(_) => Err((Status::BadRequest, "one import connection carries one shard".to_owned())),
            None => self.shard(req.keyspace(), req.shard()).map_err(|Reject(s, m)| (s, m.into_owned())).and_then(|r| IngestSession::start(r, req.shards())),
        };
        let mut session = match session {
            Ok(s) => s,
            Err((status, msg)) => {
                self.enc.status(out, id, status, &msg, 0);
                return Next::Close;
            }
        };
        if req.done() {
            return Next::Ingest(session, id);
        }
        if let Err(msg) = session.piece(req.file(), req.data().unwrap_or_default()) {
            self.enc.status(out, id, Status::Internal, &msg, 0);
            return Next::Close;
        }
        self.ingest = Some(session);
        Next::Continue
    }

    fn shard(&self, keyspace: Option<&str>, shard: u32) -> Result<Arc<Replica>, Reject> {
        let keyspace = keyspace.ok_or(reject(Status::BadRequest, "missing keyspace"))?;
        match self.registry.lookup(keyspace, shard) {
            Lookup::Found(s) => Ok(s),
            Lookup::UnknownKeyspace => Err(reject(Status::UnknownKeyspace, "this store holds no shard of that keyspace")),
            Lookup::WrongShard => Err(reject(Status::WrongShard, "this store does not hold that shard")),
        }
    }

    /// Answers a get from memory, or defers it when it needs a file (and deferring is on).
    fn get(&mut self, input: &[u8], out: &mut Vec<u8>, id: u64, r: fb::Get<'_>) -> Result<Responded, Reject> {
        let replica = self.shard(r.keyspace(), r.shard())?;
        let key = checked_key(&replica, r.key())?;
        let tier = if self.defer_reads { Tier::Memory } else { Tier::Any };
        match answer_get(&mut self.enc, out, id, &replica, key, r.with_expiry(), tier).map_err(engine_error)? {
            Some(status) => Ok(Responded::Yes(status)),
            None => {
                self.reads.defer(input, id, &replica, key, r.with_expiry());
                Ok(Responded::Later)
            }
        }
    }

    /// Adds a get to the deferred ones; one that would be refused waits instead, so that its
    /// refusal is not answered before the gets ahead of it.
    fn defer_get(&mut self, input: &[u8], id: u64, r: fb::Get<'_>) -> Next {
        let Ok(replica) = self.shard(r.keyspace(), r.shard()) else { return Next::Wait };
        let Ok(key) = checked_key(&replica, r.key()) else { return Next::Wait };
        self.reads.defer(input, id, &replica, key, r.with_expiry());
        Next::Continue
    }

    /// Validates a read-modify-write and holds it for the group commit (run under the
    /// replica's change-log lock: see `vasto_engine::UpdateOp`).
    fn hold_update(&mut self, input: &[u8], id: u64, r: fb::Update<'_>, out: &mut Vec<u8>) -> Result<(), Reject> {
        let replica = self.writable(r.keyspace(), r.shard())?;
        let key = checked_key(&replica, r.key())?;
        let value = checked_value(r.value())?;
        let event_time_ns = self.checked_time(r.event_time_ns())?;
        let op = crate::update::operation(&r, value).map_err(|why| reject(Status::BadRequest, why))?;
        if !self.group.is_empty() || self.updates.is_full() {
            self.flush_writes(input, out);
        }
        self.updates.hold(input, id, &replica, KeyUpdate { key, event_time_ns, op });
        Ok(())
    }

    /// The replica for a write: refused with `Unavailable` while it is frozen (checked again,
    /// authoritatively, under the change log's lock when the write is committed).
    fn writable(&self, keyspace: Option<&str>, shard: u32) -> Result<Arc<Replica>, Reject> {
        let replica = self.shard(keyspace, shard)?;
        if replica.frozen() {
            return Err(reject(Status::Unavailable, FROZEN_MESSAGE));
        }
        Ok(replica)
    }

    /// Validates a put and holds it for the group commit.
    fn hold_put(&mut self, input: &[u8], id: u64, r: fb::Put<'_>, out: &mut Vec<u8>) -> Result<(), Reject> {
        let replica = self.writable(r.keyspace(), r.shard())?;
        let key = checked_key(&replica, r.key())?;
        let value = checked_value(r.value())?;
        let event_time_ns = self.checked_time(r.event_time_ns())?;
        self.hold(input, out, id, &replica, Write::Put { key, value, event_time_ns, ttl_ns: r.ttl_ns() });
        Ok(())
    }

    /// Validates a delete and holds it for the group commit.
    fn hold_delete(&mut self, input: &[u8], id: u64, r: fb::Delete<'_>, out: &mut Vec<u8>) -> Result<(), Reject> {
        let replica = self.writable(r.keyspace(), r.shard())?;
        let key = checked_key(&replica, r.key())?;
        let event_time_ns = self.checked_time(r.event_time_ns())?;
        self.hold(input, out, id, &replica, Write::Delete { key, event_time_ns });
        Ok(())
    }

    /// The event time of a write, refused when it is too far ahead of this store's clock.
    fn checked_time(&self, event_time_ns: u64) -> Result<u64, Reject> {
        let now = vasto_engine::now_ns();
        if event_time_ns > now.saturating_add(self.max_skew_ns) {
            let ahead = (event_time_ns - now) as f64 / 1e9;
            let allowed = self.max_skew_ns as f64 / 1e9;
            return Err(Reject(
                Status::BadRequest,
                Cow::Owned(format!("event time {ahead:.1} s ahead of this store's clock (at most {allowed:.1} s allowed): check the writer's clock")),
            ));
        }
        Ok(event_time_ns)
    }

    fn hold(&mut self, input: &[u8], out: &mut Vec<u8>, id: u64, replica: &Arc<Replica>, write: Write<'_>) {
        if self.group.is_full() || !self.updates.is_empty() {
            self.flush_writes(input, out);
        }
        self.group.hold(input, id, replica, write);
    }

    /// Commits the held writes or updates and appends their answers (see [`Handler::handle`]).
    pub fn flush_writes(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.group.flush(input, &mut self.enc, out, &mut self.tally);
        self.updates.flush(input, &mut self.enc, out, &mut self.tally);
        self.flushed_to = out.len();
    }

    /// The end of the complete answers in the output: where the last flush of the current
    /// [`Handler::handle`] call ended (0 if it did not flush). After a panic, the output is cut
    /// back to here or to where the call started, whichever is later.
    pub fn answered_to(&self) -> usize {
        self.flushed_to
    }

    /// Answers every held write and update `Internal` without running it (the handler panicked).
    pub fn abandon_writes(&mut self, out: &mut Vec<u8>) {
        self.group.abandon(&mut self.enc, out, &mut self.tally);
        self.updates.abandon(&mut self.enc, out, &mut self.tally);
    }

    fn batch(&mut self, r: fb::Batch<'_>) -> Result<Responded, Reject> {
        let shard = self.writable(r.keyspace(), r.shard())?;
        let ops = r.ops().ok_or(reject(Status::BadRequest, "batch without ops"))?;
        // Validate everything before writing anything: a batch is all or nothing.
        for op in ops.iter() {
            checked_key(&shard, op.key())?;
            self.checked_time(op.event_time_ns())?;
            if op.kind() == OpKind::Put {
                checked_value(op.value())?;
            } else if op.kind() != OpKind::Delete {
                return Err(reject(Status::BadRequest, "unknown batch op kind"));
            }
        }
        let writes = ops.iter().map(|op| {
            let key = op.key().unwrap_or_default();
            match op.kind() {
                OpKind::Put => Write::Put { key, value: op.value().unwrap_or_default(), event_time_ns: op.event_time_ns(), ttl_ns: op.ttl_ns() },
                _ => Write::Delete { key, event_time_ns: op.event_time_ns() },
            }
        });
        shard.write_batch(writes).map_err(engine_error)?;
        shard.appended();
        Ok(Responded::No)
    }

    fn scan(&mut self, out: &mut Vec<u8>, id: u64, r: fb::Scan<'_>) -> Result<Responded, Reject> {
        let shard = self.shard(r.keyspace(), r.shard())?;
        let limit = r.limit().clamp(1, MAX_SCAN_LIMIT) as usize;
        let mut page = self.enc.entries_builder();
        let more = shard
            .scan(r.prefix().unwrap_or_default(), r.start_after().unwrap_or_default(), limit, MAX_SCAN_BYTES, |k, v| page.push(k, v))
            .map_err(engine_error)?;
        page.finish_scan_page(out, id, more);
        Ok(Responded::Yes(Status::Ok))
    }
}

enum Responded {
    /// The handler already appended the response, with this status.
    Yes(Status),
    /// Deferred: answered (and counted) once the deferred gets are.
    Later,
    /// Success without a payload: the caller appends a plain Ok.
    No,
}
