//! Reads of many keys sent together: routed once, the requests to each store encoded under one
//! lock of its connection and waited for by one task, instead of a routed request and a future
//! per key. A key whose first attempt meets a failover, a stale table or a lost connection is
//! retried alone under [`Keyspace::get`]'s rules, within the same deadline.
use crate::conn::Sent;
use crate::keyspace::pick;
use crate::{ClientError, Keyspace, ReadFrom};
use futures_util::future::join_all;
use std::sync::atomic::Ordering;
use vasto_wire::Status;

/// One key's outcome of [`Keyspace::get_each`]: its value, `None` when it is missing, deleted
/// or expired, or why it could not be read.
pub type GetResult = Result<Option<Vec<u8>>, ClientError>;

impl Keyspace {
    /// Reads every key of `keys`; `results` is cleared and then holds each key's outcome in
    /// the order of `keys`. Each key succeeds or fails on its own (as if read with
    /// [`Keyspace::get`]), but the reads go out together: one round of routing, one lock of
    /// each store connection, one wake of the caller per batch of replies.
    pub async fn get_each(&self, keys: &[&[u8]], results: &mut Vec<GetResult>) {
        let now = tokio::time::Instant::now();
        let deadline = now + self.inner.config.timeout;
        results.clear();
        results.resize_with(keys.len(), || Ok(None));
        // Keys whose first attempt failed in a way a retry may fix.
        let mut retry: Vec<usize> = Vec::new();
        match self.table().await {
            Ok(table) => {
                let spread = self.read_from == ReadFrom::AnyReplica;
                let start = if spread { self.next_replica.fetch_add(1, Ordering::Relaxed) } else { 0 };
                // (store address, the keys sent there with their shards); stores are few.
                let mut groups: Vec<(&str, Vec<(usize, u32)>)> = Vec::new();
                for (i, key) in keys.iter().enumerate() {
                    let shard = vasto_hash::shard_of(key, table.shards);
                    let replicas = table.routes.get(shard as usize).map(Vec::as_slice).unwrap_or_default();
                    match pick(replicas, spread, start, 0) {
                        Some(addr) => match groups.iter_mut().find(|(a, _)| *a == addr) {
                            Some((_, members)) => members.push((i, shard)),
                            None => groups.push((addr, vec![(i, shard)])),
                        },
                        None => retry.push(i),
                    }
                }
                let mut conns = Vec::with_capacity(groups.len());
                for (addr, members) in &groups {
                    match self.inner.pool.get(addr).await {
                        Ok(conn) => conns.push((conn, members)),
                        Err(_) => retry.extend(members.iter().map(|&(i, _)| i)),
                    }
                }
                let attempt = self.inner.config.attempt_timeout.min(deadline.saturating_duration_since(now));
                let name = &*self.name;
                let mut sent: Vec<(Sent<'_>, &Vec<(usize, u32)>)> = Vec::with_capacity(conns.len());
                for (conn, members) in &conns {
                    let encode = |j: usize, enc: &mut vasto_wire::FrameEncoder, out: &mut Vec<u8>, id| {
                        let (i, shard) = members[j];
                        enc.get(out, id, name, shard, keys[i]);
                    };
                    match conn.send_many(attempt, members.len(), encode) {
                        Ok(s) => sent.push((s, members)),
                        Err(_) => retry.extend(members.iter().map(|&(i, _)| i)),
                    }
                }
                for (s, members) in sent {
                    s.wait(|j, outcome, value| {
                        let i = members[j].0;
                        match outcome.map(|reply| (reply.status, reply.message)) {
                            Ok((Status::Ok, _)) => results[i] = Ok(Some(std::mem::take(value))),
                            Ok((Status::NotFound, _)) => results[i] = Ok(None),
                            Ok((Status::WrongShard | Status::UnknownKeyspace | Status::Unavailable, _))
                            | Err(ClientError::ConnectionLost | ClientError::Timeout) => retry.push(i),
                            Ok((status, message)) => results[i] = Err(ClientError::Server { status, message }),
                            Err(e) => results[i] = Err(e),
                        }
                    })
                    .await;
                }
            }
            // No usable table: every key takes the slow path, which waits for one or fails.
            Err(_) => retry.extend(0..keys.len()),
        }
        if retry.is_empty() {
            return;
        }
        let now = tokio::time::Instant::now();
        let retried = join_all(retry.iter().map(|&i| self.get_until(keys[i], now, deadline))).await;
        for (i, outcome) in retry.into_iter().zip(retried) {
            results[i] = outcome;
        }
    }

    /// [`Keyspace::get`] within `deadline`.
    async fn get_until(&self, key: &[u8], now: tokio::time::Instant, deadline: tokio::time::Instant) -> GetResult {
        let mut value = Vec::new();
        Ok(self.get_into_until(key, &mut value, now, deadline).await?.then_some(value))
    }
}
