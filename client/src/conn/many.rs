//! Many requests on one connection at once: encoded under one lock, waited for by one task
//! that is woken once per reply it is waiting on next (not once per reply), so a batch of reads
//! costs one lock round for the sending and about one per reply batch for the waiting.
use super::{request_id, Conn, Reply};
use crate::ClientError;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;
use vasto_wire::FrameEncoder;

/// Requests sent together on one connection whose replies have not all been taken yet.
/// Dropping it before [`Sent::wait`] ends frees the slots of the replies not taken.
pub(crate) struct Sent<'c> {
    conn: &'c Conn,
    slots: Vec<u32>,
    /// Replies before this one have been taken (and their slots freed).
    next: usize,
}

impl Conn {
    /// Sends `n` requests, request `i` encoded by `encode(i, ...)` with the id it is given,
    /// under one lock of the connection; each times out after `timeout`.
    pub fn send_many(&self, timeout: Duration, n: usize, mut encode: impl FnMut(usize, &mut FrameEncoder, &mut Vec<u8>, u64)) -> Result<Sent<'_>, ClientError> {
        let deadline = self.deadline(timeout);
        let mut slots = Vec::with_capacity(n);
        {
            let mut st = self.lock();
            if self.is_closed() {
                return Err(ClientError::ConnectionLost);
            }
            for i in 0..n {
                let index = st.acquire(deadline);
                let id = request_id(index, st.slots[index as usize].generation);
                let super::State { enc, out, .. } = &mut *st;
                encode(i, enc, out, id);
                slots.push(index);
            }
        }
        self.wake.notify_one();
        Ok(Sent { conn: self, slots, next: 0 })
    }
}

impl Sent<'_> {
    /// Waits for every reply, in request order, and hands each to `each(i, outcome, value)`:
    /// the reply of request `i` (its value, if any, in `value`, taken by swapping buffers) or
    /// why it has none (connection lost, timed out). `each` runs under the connection's lock,
    /// so it only moves data.
    pub async fn wait(mut self, mut each: impl FnMut(usize, Result<Reply, ClientError>, &mut Vec<u8>)) {
        let mut value = Vec::new();
        poll_fn(|cx| {
            let mut st = self.conn.lock();
            while let Some(&index) = self.slots.get(self.next) {
                let Poll::Ready(outcome) = st.slots[index as usize].outcome(self.conn, &mut value, cx) else { return Poll::Pending };
                st.release(index);
                each(self.next, outcome, &mut value);
                self.next += 1;
            }
            Poll::Ready(())
        })
        .await
    }
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        if let Some(rest) = self.slots.get(self.next..).filter(|rest| !rest.is_empty()) {
            let mut st = self.conn.lock();
            rest.iter().for_each(|&index| st.release(index));
        }
    }
}
