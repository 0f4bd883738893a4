//! Thread-per-core data server: one monoio runtime (io_uring, epoll fallback) per core, each with
//! its own SO_REUSEPORT listener on the same address, so the kernel spreads connections.
use crate::disk_reads::ReadPool;
use crate::handler::{Handler, Next};
use crate::metrics::StoreMetrics;
use crate::registry::{Registry, Replica};
use crate::NodeError;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;
use vasto_engine::MoveRate;
use vasto_wire::{frame_len, ClusterToken, ConnectionSlot, FrameEncoder, ShardSelector, Status, WireError, LEN_PREFIX, OPENING_MAX_FRAME};

const READ_CHUNK: usize = 64 << 10;
/// Buffers grown past this by a large frame are shrunk back once idle.
const KEEP_CAPACITY: usize = 1 << 20;

/// Per-connection limits of the data server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted frame body in bytes.
    pub max_frame: usize,
    /// Writes whose event time is further ahead of the store's clock than this are refused.
    pub max_skew_ns: u64,
    /// Connections served at once by the whole store; one more is refused at its hello.
    pub max_connections: usize,
    /// How long a peer may take for its whole opening, and go without sending a byte while a
    /// frame it started is unfinished: a peer that stalls longer (a slowloris) is disconnected.
    pub read_timeout: Duration,
    /// A connection with no request for this long is closed (clients dial again when needed).
    pub idle_timeout: Duration,
}

/// Answers are written once they pass this many bytes, before more requests are handled: the
/// output buffer of a connection stays near this (plus one answer) even when a few kilobytes of
/// pipelined gets ask for gigabytes of values.
pub(crate) const OUTPUT_BOUND: usize = 8 << 20;

/// Starts `threads` core threads serving `listen`. Returns the bound address (useful with port 0)
/// and the thread handles; fails if any core cannot bind.
/// What the cores share is in `shared`.
pub(crate) fn spawn_cores(listen: SocketAddr, threads: usize, shared: CoreShared) -> Result<(SocketAddr, Vec<JoinHandle<()>>), NodeError> {
    // The cores share the port with SO_REUSEPORT, which would just as well let a second store
    // (a typo, a stale process, a port handed out twice) bind it and silently take half of the
    // connections. A plain bind first fails if anything already holds the port.
    if listen.port() != 0 {
        std::net::TcpListener::bind(listen).map_err(|e| NodeError::Bind {
            addr: listen.to_string(),
            source: std::io::Error::new(e.kind(), format!("{e} (is another store running on this address?)")),
        })?;
    }
    let mut handles = Vec::with_capacity(threads);
    let mut addr = listen;
    for core in 0..threads.max(1) {
        let (tx, rx) = mpsc::channel();
        let shared = shared.clone();
        let handle = std::thread::Builder::new().name(format!("vasto-core-{core}")).spawn(move || core_main(core, addr, shared, tx))?;
        match rx.recv() {
            Ok(Ok(bound)) => addr = bound,
            Ok(Err(e)) => return Err(NodeError::Bind { addr: addr.to_string(), source: e }),
            Err(_) => return Err(NodeError::Bind { addr: addr.to_string(), source: std::io::Error::other("core thread died while binding") }),
        }
        handles.push(handle);
    }
    Ok((addr, handles))
}

/// What every core shares.
#[derive(Clone)]
pub(crate) struct CoreShared {
    pub registry: Arc<Registry>,
    pub limits: Limits,
    /// The token peers must prove, when there is one.
    pub token: Option<ClusterToken>,
    /// Request counters (one set per core) and the connections served by all cores together.
    pub metrics: Arc<StoreMetrics>,
    /// The reader threads gets that need a file are handed to.
    pub reads: Arc<ReadPool>,
    /// The pace of snapshots and resize copies (see `pace`).
    pub moves: MoveRate,
}

fn core_main(core: usize, addr: SocketAddr, shared: CoreShared, bound: mpsc::Sender<std::io::Result<SocketAddr>>) {
    let uring = monoio::utils::detect_uring();
    let mut rt = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind_with_config(addr, &ListenerOpts::new().reuse_port(true)).and_then(|l| l.local_addr().map(|a| (l, a))) {
            Ok((l, a)) => {
                let _ = bound.send(Ok(a));
                l
            }
            Err(e) => {
                let _ = bound.send(Err(e));
                return;
            }
        };
        tracing::info!(core, io_uring = uring, "core serving");
        monoio::spawn(canary(Arc::clone(&shared.metrics), core));
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match ConnectionSlot::take(&shared.metrics.connections, shared.limits.max_connections) {
                    Some(slot) => {
                        let (registry, metrics, reads) = (Arc::clone(&shared.registry), Arc::clone(&shared.metrics), Arc::clone(&shared.reads));
                        let moves = shared.moves.clone();
                        let conn = Connection { peer, registry, limits: shared.limits, token: shared.token.clone(), metrics, reads, moves, core, _slot: slot };
                        monoio::spawn(serve_connection(stream, conn));
                    }
                    None => {
                        monoio::spawn(refuse_connection(stream, peer, shared.limits.max_connections));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                }
            }
        }
    });
}

/// How often a core's canary wakes.
const CANARY_PERIOD: Duration = Duration::from_millis(5);

/// Wakes every [`CANARY_PERIOD`] and records how late it woke: the time a request arriving on
/// this core waits before the core runs it, which data movement stealing the CPU lengthens
/// and a request's own service time does not show (the pace governor watches both).
async fn canary(metrics: Arc<StoreMetrics>, core: usize) {
    loop {
        let due = Instant::now() + CANARY_PERIOD;
        monoio::time::sleep(CANARY_PERIOD).await;
        let late = Instant::now().saturating_duration_since(due);
        metrics.core(core).lateness.observe_ns(u64::try_from(late.as_nanos()).unwrap_or(u64::MAX), 1);
    }
}

/// Answers the hello of a connection over the limit with `Unavailable` (clients then use
/// another replica) and closes it.
async fn refuse_connection(mut stream: TcpStream, peer: SocketAddr, max: usize) {
    tracing::warn!(%peer, max, "refused a connection: too many connections");
    let mut out = Vec::new();
    let message = format!("this store serves at most {max} connections");
    FrameEncoder::new().hello_reply(&mut out, Status::Unavailable, &message, 0);
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(out)).await;
}

/// Reads frames, answers each in order, and writes all answers of one read in one write.
/// Closes a connection whose peer stalls in its opening or in the middle of a frame for
/// longer than the read timeout, or sends nothing for longer than the idle timeout.
async fn serve_connection(mut stream: TcpStream, conn: Connection) {
    let Connection { peer, registry, limits, token, metrics, reads, moves, core, _slot } = conn;
    let metrics = metrics.core(core);
    let _ = stream.set_nodelay(true);
    let mut handler = Handler::new(registry, token, peer, limits.max_skew_ns).deferring_reads(reads.enabled());
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // The whole opening must fit in one read timeout, however the peer dribbles its bytes.
    let opening_deadline = std::time::Instant::now() + limits.read_timeout;
    loop {
        // Frames already buffered (left by the output bound) are handled before reading more.
        let limit = if handler.admitted() { limits.max_frame } else { OPENING_MAX_FRAME };
        if !matches!(frame_len(&input, limit), Ok(None)) {
            let started = Instant::now();
            let Some((i, o, consumed, after)) = handle_frames(&mut handler, &reads, &mut stream, input, out, limits.max_frame).await else { return };
            (input, out) = (i, o);
            input.drain(..consumed);
            let sent = send_and_go_on(stream, out, after, &moves).await;
            handler.tally.flush(metrics, elapsed_ns(started));
            let Some((s, o)) = sent else { return };
            (stream, out) = (s, o);
            continue;
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        // Read after the bytes already buffered (a plain Vec would be filled from its start).
        let len = input.len();
        let patience = if !handler.admitted() {
            opening_deadline.saturating_duration_since(std::time::Instant::now())
        } else if input.is_empty() {
            limits.idle_timeout
        } else {
            limits.read_timeout
        };
        let Ok((res, buf)) = monoio::time::timeout(patience, stream.read(input.slice_mut(len..))).await else {
            let what = if !handler.admitted() {
                "did not finish its opening"
            } else if len > 0 {
                "stalled in the middle of a frame"
            } else {
                "was idle"
            };
            tracing::info!(%peer, ?patience, "closing a connection that {what}");
            // The timed-out read may still be in flight (io_uring), which keeps the socket open
            // after the stream is dropped: shut it down so the peer sees the close now.
            // SAFETY: shutdown(2) on the descriptor this stream owns and has not closed.
            unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&stream), libc::SHUT_RDWR) };
            return;
        };
        input = buf.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let started = Instant::now();
        let Some((i, o, consumed, after)) = handle_frames(&mut handler, &reads, &mut stream, input, out, limits.max_frame).await else { return };
        (input, out) = (i, o);
        input.drain(..consumed);
        if let Some(needed) = declared_len(&input) {
            // Grow towards a large frame as its bytes arrive (at most doubling per read), so a
            // peer that only declares a huge frame does not make the store allocate it.
            if needed > input.capacity() {
                input.reserve((needed - input.len()).min(input.capacity().max(READ_CHUNK)));
            }
        } else if input.is_empty() && input.capacity() > KEEP_CAPACITY {
            input = Vec::with_capacity(READ_CHUNK);
        }
        let sent = send_and_go_on(stream, out, after, &moves).await;
        handler.tally.flush(metrics, elapsed_ns(started));
        let Some((s, o)) = sent else { return };
        (stream, out) = (s, o);
    }
}

/// One accepted data connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    registry: Arc<Registry>,
    limits: Limits,
    token: Option<ClusterToken>,
    metrics: Arc<StoreMetrics>,
    reads: Arc<ReadPool>,
    moves: MoveRate,
    /// The core serving it (whose counters it adds to).
    core: usize,
    _slot: ConnectionSlot,
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Writes all of `out` to `stream` and hands the buffer back emptied (a large one replaced by
/// a small one, so one big answer does not pin its memory); `None` if the connection failed.
async fn send_out(stream: &mut TcpStream, out: Vec<u8>) -> Option<Vec<u8>> {
    let (res, mut out) = stream.write_all(out).await;
    out.clear();
    if out.capacity() > KEEP_CAPACITY {
        out = Vec::with_capacity(READ_CHUNK);
    }
    res.ok()?;
    Some(out)
}

/// Writes the answers in `out`, then hands the stream and the emptied buffer back to read
/// more, or hands the connection over (a tail, a snapshot, an ingest) or closes it (`None`).
async fn send_and_go_on(mut stream: TcpStream, mut out: Vec<u8>, after: After, moves: &MoveRate) -> Option<(TcpStream, Vec<u8>)> {
    if !out.is_empty() {
        out = send_out(&mut stream, out).await?;
    }
    match after {
        After::Read => return Some((stream, out)),
        After::Close => {}
        After::Tail(replica, position, only) => crate::tail::stream_changes(stream, replica, position, only, moves).await,
        After::Snapshot(replica, only, permit) => {
            crate::tail::stream_snapshot(stream, replica, only, moves).await;
            drop(permit);
        }
        After::Ingest(session, id) => crate::ingest::finish(stream, session, id).await,
    }
    None
}

fn declared_len(input: &[u8]) -> Option<usize> {
    let p = input.get(..LEN_PREFIX)?;
    Some(LEN_PREFIX + u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize)
}

/// What the connection does once the frames at hand are answered.
pub(crate) enum After {
    /// Read more frames.
    Read,
    /// Close the connection.
    Close,
    /// Switch to streaming this replica's changes after the position (a follower connected),
    /// only the keys selected if any (a resize copy).
    Tail(Arc<Replica>, vasto_engine::LogPosition, Option<ShardSelector>),
    /// Send a snapshot of this replica (only the keys selected, if any), then close.
    Snapshot(Arc<Replica>, Option<ShardSelector>, Option<crate::snapshot_gate::SnapshotPermit>),
    /// Ingest an import's files, answer request `id`, then close.
    Ingest(crate::ingest::IngestSession, u64),
}

/// Handles the frames in `input` (see [`process`]), then has the gets it deferred answered by
/// the reader threads while this core serves other connections (see [`crate::disk_reads`]),
/// writing the answers to `stream` whenever they reach the output bound. Returns the buffers,
/// the bytes consumed and what to do next; `None` if the connection failed or a reader thread
/// died with a part of the gets (only when the process is ending).
async fn handle_frames(
    handler: &mut Handler,
    reads: &ReadPool,
    stream: &mut TcpStream,
    input: Vec<u8>,
    mut out: Vec<u8>,
    max_frame: usize,
) -> Option<(Vec<u8>, Vec<u8>, usize, After)> {
    let (consumed, after) = process(handler, &input, &mut out, max_frame);
    while handler.reads.pending() {
        let mut batch = std::mem::take(&mut handler.reads);
        let (enc, tally) = handler.encoder_and_tally();
        let answered = reads.run(&mut batch, &input, &mut out, enc, tally).await;
        handler.reads = batch;
        if !answered {
            return None;
        }
        if handler.reads.pending() {
            out = send_out(stream, out).await?;
        }
    }
    Some((input, out, consumed, after))
}

/// Handles every complete frame in `input`; returns the bytes consumed and what to do next.
/// Gets deferred to the reader threads (see [`crate::disk_reads`]) are answered after this
/// returns; the frames after them that are not gets are left in `input` (not consumed).
/// Puts and deletes among them are committed in groups (see [`crate::group`]); all are
/// committed and answered before this returns.
pub(crate) fn process(handler: &mut Handler, input: &[u8], out: &mut Vec<u8>, max_frame: usize) -> (usize, After) {
    let mut consumed = 0;
    loop {
        let limit = if handler.admitted() { max_frame } else { OPENING_MAX_FRAME };
        match frame_len(&input[consumed..], limit) {
            Ok(Some(n)) => {
                let body = consumed + LEN_PREFIX..consumed + n;
                consumed += n;
                let mark = out.len();
                let next =
                    catch_unwind(AssertUnwindSafe(|| if handler.admitted() { handler.handle(input, body, out) } else { handler.admit(&input[body], out) }));
                match next {
                    Ok(Next::Continue) => {}
                    Ok(Next::Wait) => return (consumed - n, After::Read),
                    Ok(Next::Close) => return (consumed, After::Close),
                    Ok(Next::Tail(replica, position, only)) => return (consumed, After::Tail(replica, position, only)),
                    Ok(Next::Snapshot(replica, only, permit)) => return (consumed, After::Snapshot(replica, only, permit)),
                    Ok(Next::Ingest(session, id)) => return (consumed, After::Ingest(session, id)),
                    Err(_) => {
                        // A bug in one request must not take the node down: answer and go on.
                        tracing::error!("request handler panicked; answering Internal");
                        // Keep the answers of writes committed before the panic; drop the
                        // partial answer.
                        out.truncate(mark.max(handler.answered_to()).min(out.len()));
                        handler.abandon_writes(out);
                        *handler = handler.fresh();
                        FrameEncoder::new().status(out, 0, Status::Internal, "internal error while handling the request", 0);
                    }
                }
                if out.len() >= OUTPUT_BOUND {
                    // Enough answers to send: write them before handling the rest, so the
                    // output of one read stays bounded whatever the requests ask for.
                    handler.flush_writes(input, out);
                    return (consumed, After::Read);
                }
            }
            Ok(None) => {
                // The rest of the buffer is an incomplete frame: commit the writes held from it.
                handler.flush_writes(input, out);
                return (consumed, After::Read);
            }
            Err(e) => {
                handler.flush_writes(input, out);
                // The stream can no longer be split into frames: say why and close.
                let status = if matches!(e, WireError::TooLarge { .. }) { Status::TooLarge } else { Status::BadRequest };
                FrameEncoder::new().status(out, 0, status, &e.to_string(), 0);
                return (input.len(), After::Close);
            }
        }
    }
}
