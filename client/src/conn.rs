//! One pipelined connection to a store: any number of requests in flight, matched to responses
//! by id. Requests are encoded straight into a shared output buffer that a writer task flushes,
//! so concurrent callers share write syscalls.
use crate::ClientError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, Notify};
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Status, DEFAULT_MAX_FRAME};

/// A decoded response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: Status,
    pub message: String,
    pub value: Option<Vec<u8>>,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub more: bool,
}

type Waiter = oneshot::Sender<Reply>;

struct State {
    enc: FrameEncoder,
    out: Vec<u8>,
    pending: HashMap<u64, Waiter>,
    next_id: u64,
}

/// A live connection; [`Conn::is_closed`] turns true once it fails, and every waiter is woken.
pub(crate) struct Conn {
    state: Mutex<State>,
    wake: Notify,
    closed: AtomicBool,
}

impl Conn {
    /// Connects, exchanges hellos, and starts the reader and writer tasks.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Arc<Conn>, ClientError> {
        let stream = crate::connect_store(addr, timeout).await?;
        let (read, write) = stream.into_split();
        let conn = Arc::new(Conn {
            state: Mutex::new(State { enc: FrameEncoder::new(), out: Vec::with_capacity(16 << 10), pending: HashMap::new(), next_id: 1 }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(writer(Arc::clone(&conn), write));
        tokio::spawn(reader(Arc::clone(&conn), read));
        Ok(conn)
    }

    /// True once the connection has failed; it will never succeed again.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request (encoded by `encode` with the id it is given) and waits for its reply.
    pub async fn call(&self, timeout: Duration, encode: impl FnOnce(&mut FrameEncoder, &mut Vec<u8>, u64)) -> Result<Reply, ClientError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.lock();
            if self.is_closed() {
                return Err(ClientError::ConnectionLost);
            }
            let id = st.next_id;
            st.next_id += 1;
            let State { enc, out, pending, .. } = &mut *st;
            encode(enc, out, id);
            pending.insert(id, tx);
            id
        };
        self.wake.notify_one();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::ConnectionLost),
            Err(_) => {
                self.lock().pending.remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    fn fail(&self) {
        self.closed.store(true, Ordering::Release);
        // Dropping the senders wakes every waiter with `ConnectionLost`.
        self.lock().pending.clear();
        self.wake.notify_one();
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
        let reply = Reply {
            status: resp.status(),
            message: resp.message().unwrap_or_default().to_owned(),
            value: resp.value().map(<[u8]>::to_vec),
            entries: resp
                .entries()
                .map(|es| es.iter().map(|kv| (kv.key().unwrap_or_default().to_vec(), kv.value().unwrap_or_default().to_vec())).collect())
                .unwrap_or_default(),
            more: resp.more(),
        };
        if frame.id() == 0 {
            // The store could not even read a request of ours; nothing can be matched any more.
            tracing::warn!(status = ?reply.status, message = %reply.message, "store rejected a frame");
            break;
        }
        let waiter = conn.lock().pending.remove(&frame.id());
        if let Some(w) = waiter {
            let _ = w.send(reply);
        }
    }
    conn.fail();
}
