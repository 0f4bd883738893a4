//! One pipelined connection to a store: any number of requests in flight, matched to responses
//! by id. Requests are encoded straight into a shared output buffer that a writer task flushes,
//! so concurrent callers share write syscalls.
//!
//! Waiting callers live in reusable slots (a free list, not a map of channels): a request
//! allocates nothing once the connection has warmed up, and a reply's value is copied into
//! the slot's buffer, which is swapped with the caller's, so buffers circulate instead of
//! being allocated per reply.
//!
//! Timeouts cost no timer per request: each slot carries a deadline in ticks of a coarse
//! per-connection clock, and one sweeper task per connection advances the clock every
//! [`TICK`] and fails the requests past their deadline (a timer per request was a tenth of
//! the load generator's profile: timer-wheel inserts, removals and re-registrations).
use crate::ClientError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Status, DEFAULT_MAX_FRAME};

/// Period of the coarse clock request deadlines are kept in; a request times out within one
/// tick after its timeout.
const TICK: Duration = Duration::from_millis(50);

mod many;
pub(crate) use many::Sent;

/// A decoded response, without its value (which goes to the caller's buffer).
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub status: Status,
    pub message: String,
    /// Whether the response carried a value (then it is in the caller's buffer).
    pub has_value: bool,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub more: bool,
    /// A get with expiry: the value's expiry (0 = never).
    pub expires_at_ns: u64,
    /// An update: whether it wrote, and its integer and float results.
    pub applied: bool,
    pub number: i64,
    pub float_number: f64,
}

/// One waiting request. `generation` changes every time the slot is reused, so a late reply
/// for an abandoned request (timed out, cancelled) is recognised and dropped.
#[derive(Default)]
struct Slot {
    generation: u32,
    in_use: bool,
    done: bool,
    /// The sweeper found the request past its deadline.
    timed_out: bool,
    /// Tick of [`Conn::ticks`] after which the request has timed out.
    deadline: u64,
    waker: Option<Waker>,
    reply: Reply,
    value: Vec<u8>,
}

struct State {
    enc: FrameEncoder,
    out: Vec<u8>,
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl State {
    /// A free slot's index, growing the table when all are taken; the request it is for times
    /// out after tick `deadline`.
    fn acquire(&mut self, deadline: u64) -> u32 {
        let index = self.free.pop().unwrap_or_else(|| {
            // Generation 0 is never used: id 0 is how a store answers a frame it could not read.
            self.slots.push(Slot { generation: 1, ..Slot::default() });
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.in_use = true;
        slot.done = false;
        slot.timed_out = false;
        slot.deadline = deadline;
        index
    }

    fn release(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.in_use = false;
        slot.waker = None;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push(index);
    }

    /// The waiting slot `id` names, if it is still waiting for it.
    fn waiting(&mut self, id: u64) -> Option<&mut Slot> {
        let (index, generation) = ((id & u64::from(u32::MAX)) as usize, (id >> 32) as u32);
        self.slots.get_mut(index).filter(|s| s.in_use && !s.done && s.generation == generation)
    }
}

fn request_id(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

/// A live connection; [`Conn::is_closed`] turns true once it fails, and every waiter is woken.
pub(crate) struct Conn {
    state: Mutex<State>,
    wake: Notify,
    closed: AtomicBool,
    /// The coarse clock: ticks of [`TICK`] since the connection opened, advanced by the sweeper.
    ticks: AtomicU64,
}

impl Conn {
    /// Connects, exchanges hellos, and starts the reader and writer tasks.
    pub async fn connect(addr: &str, config: &crate::ClientConfig) -> Result<Arc<Conn>, ClientError> {
        let stream = crate::connect_store(addr, vasto_wire::Role::Client, config).await?;
        let (read, write) = stream.into_split();
        let conn = Arc::new(Conn {
            state: Mutex::new(State { enc: FrameEncoder::new(), out: Vec::with_capacity(16 << 10), slots: Vec::new(), free: Vec::new() }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        });
        tokio::spawn(writer(Arc::clone(&conn), write));
        tokio::spawn(reader(Arc::clone(&conn), read));
        tokio::spawn(sweeper(Arc::downgrade(&conn)));
        Ok(conn)
    }

    /// True once the connection has failed; it will never succeed again.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The tick after which a request sent now with `timeout` has timed out: whole ticks,
    /// rounded up, plus the partial tick already running.
    fn deadline(&self, timeout: Duration) -> u64 {
        let ticks = timeout.as_nanos().div_ceil(TICK.as_nanos()).min(u128::from(u32::MAX)) as u64 + 1;
        self.ticks.load(Ordering::Relaxed) + ticks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request (encoded by `encode` with the id it is given) and waits for its reply.
    /// A value in the reply ends up in `value` (swapped in: `value`'s old buffer is kept for a
    /// later reply, so a caller that reuses its buffer causes no allocation); without one,
    /// `value` is left empty.
    pub async fn call(&self, timeout: Duration, value: &mut Vec<u8>, encode: impl FnOnce(&mut FrameEncoder, &mut Vec<u8>, u64)) -> Result<Reply, ClientError> {
        let deadline = self.deadline(timeout);
        let index = {
            let mut st = self.lock();
            if self.is_closed() {
                return Err(ClientError::ConnectionLost);
            }
            let index = st.acquire(deadline);
            let id = request_id(index, st.slots[index as usize].generation);
            let State { enc, out, .. } = &mut *st;
            encode(enc, out, id);
            index
        };
        self.wake.notify_one();
        Waiting { conn: self, index, value, finished: false }.await
    }

    fn fail(&self) {
        self.closed.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self.lock().slots.iter_mut().filter_map(|s| s.waker.take()).collect();
        wakers.into_iter().for_each(Waker::wake);
        self.wake.notify_one();
    }
}

/// The wait for one reply; dropping it (timeout, cancelled caller) frees its slot.
struct Waiting<'a> {
    conn: &'a Conn,
    index: u32,
    value: &'a mut Vec<u8>,
    finished: bool,
}

impl Future for Waiting<'_> {
    type Output = Result<Reply, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut st = this.conn.lock();
        let slot = &mut st.slots[this.index as usize];
        let Poll::Ready(outcome) = slot.outcome(this.conn, this.value, cx) else { return Poll::Pending };
        st.release(this.index);
        this.finished = true;
        Poll::Ready(outcome)
    }
}

impl Slot {
    /// The request's outcome once it has one (its reply, with the value swapped into `value`,
    /// or why there will be none); until then the task of `cx` is registered to be woken.
    fn outcome(&mut self, conn: &Conn, value: &mut Vec<u8>, cx: &mut Context<'_>) -> Poll<Result<Reply, ClientError>> {
        Poll::Ready(if self.done {
            if self.reply.has_value {
                std::mem::swap(value, &mut self.value);
            } else {
                value.clear();
            }
            let reply = &mut self.reply;
            Ok(Reply {
                status: reply.status,
                message: std::mem::take(&mut reply.message),
                has_value: reply.has_value,
                entries: std::mem::take(&mut reply.entries),
                more: reply.more,
                expires_at_ns: reply.expires_at_ns,
                applied: reply.applied,
                number: reply.number,
                float_number: reply.float_number,
            })
        } else if conn.is_closed() {
            Err(ClientError::ConnectionLost)
        } else if self.timed_out {
            Err(ClientError::Timeout)
        } else {
            if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                self.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.lock().release(self.index);
        }
    }
}

/// Advances the connection's coarse clock every [`TICK`] and wakes the requests past their
/// deadline (they then fail with [`ClientError::Timeout`]); ends with the connection.
async fn sweeper(conn: Weak<Conn>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired = Vec::new();
    loop {
        ticks.tick().await;
        let Some(conn) = conn.upgrade().filter(|c| !c.is_closed()) else { return };
        let now = conn.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut st = conn.lock();
            for slot in st.slots.iter_mut().filter(|s| s.in_use && !s.done && !s.timed_out && s.deadline <= now) {
                slot.timed_out = true;
                expired.extend(slot.waker.take());
            }
        }
        expired.drain(..).for_each(Waker::wake);
    }
}

async fn writer(conn: Arc<Conn>, mut write: OwnedWriteHalf) {
    let mut spare = Vec::with_capacity(16 << 10);
    while !conn.is_closed() {
        conn.wake.notified().await;
        // Let the callers that are ready to run (typically those woken by the same batch of
        // replies) encode their requests first, so one write carries them all: without this,
        // a pipelined connection made one send syscall per request.
        tokio::task::yield_now().await;
        {
            let mut st = conn.lock();
            std::mem::swap(&mut st.out, &mut spare);
        }
        if spare.is_empty() {
            continue;
        }
        if write.write_all(&spare).await.is_err() {
            conn.fail();
            return;
        }
        spare.clear();
    }
}

async fn reader(conn: Arc<Conn>, read: OwnedReadHalf) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        if read_frame(&mut read, &mut buf, DEFAULT_MAX_FRAME).await.is_err() {
            break;
        }
        let Ok(frame) = parse_frame(&buf) else { break };
        let Some(resp) = frame.body_as_response() else { break };
        if frame.id() == 0 {
            // The store could not even read a request of ours; nothing can be matched any more.
            tracing::warn!(status = ?resp.status(), message = resp.message().unwrap_or_default(), "store rejected a frame");
            break;
        }
        let waker = {
            let mut st = conn.lock();
            // A reply nobody waits for any more (timed out) is dropped.
            let Some(slot) = st.waiting(frame.id()) else { continue };
            let reply = &mut slot.reply;
            reply.status = resp.status();
            reply.message.clear();
            reply.message.push_str(resp.message().unwrap_or_default());
            reply.has_value = resp.value().is_some();
            slot.value.clear();
            slot.value.extend_from_slice(resp.value().unwrap_or_default());
            reply.entries.clear();
            if let Some(entries) = resp.entries() {
                reply.entries.extend(entries.iter().map(|kv| (kv.key().unwrap_or_default().to_vec(), kv.value().unwrap_or_default().to_vec())));
            }
            reply.more = resp.more();
            reply.expires_at_ns = resp.expires_at_ns();
            reply.applied = resp.applied();
            reply.number = resp.number();
            reply.float_number = resp.float_number();
            slot.done = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
    conn.fail();
}

#[cfg(test)]
mod tests {
    use super::{request_id, Conn, State};
    use crate::ClientError;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    use vasto_wire::{read_frame, FrameEncoder, Status, DEFAULT_MAX_FRAME};

    /// A store that answers the hello and then never answers anything.
    async fn silent_store() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            read_frame(&mut stream, &mut buf, DEFAULT_MAX_FRAME).await.unwrap();
            let mut reply = Vec::new();
            FrameEncoder::new().hello_reply(&mut reply, Status::Ok, "", 0);
            stream.write_all(&reply).await.unwrap();
            // Swallow requests until the client goes away.
            while read_frame(&mut stream, &mut buf, DEFAULT_MAX_FRAME).await.is_ok() {}
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_frees_its_slot() {
        let (addr, store) = silent_store().await;
        let config = crate::ClientConfig { connect_timeout: Duration::from_secs(5), ..Default::default() };
        let conn = Conn::connect(&addr, &config).await.unwrap();
        let started = Instant::now();
        let timeout = Duration::from_millis(120);
        let mut value = Vec::new();
        let outcome = conn.call(timeout, &mut value, |enc, out, id| enc.get(out, id, "ks", 0, b"k")).await;
        let waited = started.elapsed();
        assert!(matches!(outcome, Err(ClientError::Timeout)), "{outcome:?}");
        // The upper bound only shows the request did not wait for the connect timeout (5 s);
        // a loaded machine can stall the sweeper well past a tick.
        assert!(waited >= timeout && waited < Duration::from_secs(3), "timed out after {waited:?}");
        let st = conn.lock();
        assert!(st.slots.iter().all(|s| !s.in_use), "the timed-out request's slot is free again");
        drop(st);
        store.abort();
    }

    fn state() -> State {
        State { enc: FrameEncoder::new(), out: Vec::new(), slots: Vec::new(), free: Vec::new() }
    }

    fn id_of(st: &State, index: u32) -> u64 {
        request_id(index, st.slots[index as usize].generation)
    }

    #[test]
    fn a_reused_slot_ignores_replies_meant_for_its_previous_request() {
        let mut st = state();
        let a = st.acquire(0);
        let first = id_of(&st, a);
        assert_ne!(first, 0, "id 0 is reserved for answers to unreadable frames");
        assert!(st.waiting(first).is_some());
        // The request times out: its slot is released and taken by the next request.
        st.release(a);
        assert!(st.waiting(first).is_none(), "a released slot waits for nothing");
        let b = st.acquire(0);
        assert_eq!(a, b, "slots are reused");
        let second = id_of(&st, b);
        assert_ne!(first, second);
        assert!(st.waiting(first).is_none(), "the late reply to the first request is dropped");
        st.waiting(second).expect("the second request waits").done = true;
        assert!(st.waiting(second).is_none(), "a slot is completed once");
    }

    #[test]
    fn concurrent_requests_get_distinct_slots_and_generations_skip_zero() {
        let mut st = state();
        let indexes: Vec<u32> = (0..3).map(|_| st.acquire(0)).collect();
        let ids: Vec<u64> = indexes.into_iter().map(|i| id_of(&st, i)).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        st.slots[0].generation = u32::MAX;
        st.release(0);
        assert_eq!(st.slots[0].generation, 1, "the generation wraps past 0");
        assert!(st.waiting(u64::MAX).is_none() && st.waiting(1 << 40).is_none(), "unknown ids match nothing");
    }
}
