//! Data commands, through the native client: the keyspace handle routes each key to its shard's
//! replica and fails over, so a gateway client never sees a wrong-shard answer.
//!
//! Conditional and read-modify-write commands are single client calls that the store runs
//! atomically on the replica that takes them. Multi-key commands touch keys in chunks of
//! [`CHUNK`] requests in flight, so one huge MGET or DEL cannot queue a million requests.
//! MSETNX checks the keys and then writes them: it is not atomic (another client may write one
//! of the keys in between), and neither are MSET and DEL across shards.
use crate::glob::{glob_match, literal_prefix};
use crate::options::{Cond, ExpireCond, Expiry, GetExChange, TypeFilter};
use crate::parse::Command;
use crate::reply::{errors, Reply};
use crate::{Shared, MAX_KEY, MAX_VALUE};
use futures_util::future::join_all;
use std::time::Duration;
use vasto_client::{ClientError, Condition, ExpireCondition, ExpiryChange, PutOptions, SetExpiry, SetOptions, Status};

/// Requests in flight at once for one multi-key command.
pub const CHUNK: usize = 1024;
/// Entries per scan page asked of the store (its page limit) for KEYS and DBSIZE.
const FULL_SCAN_PAGE: u32 = 10_000;

/// Runs data command `cmd`; `t` is the first of the event times reserved for its writes
/// ([`Command::event_times`]). Key and value sizes are checked before the store is asked.
pub async fn run(shared: &Shared, cmd: &Command<'_>, t: u64) -> Reply {
    if let Err(reply) = check_sizes(cmd) {
        return reply;
    }
    match exec(shared, cmd, t).await {
        Ok(reply) => reply,
        Err(e) => client_error(e),
    }
}

/// The reply for a failed client call: the store's own text for a refused command (they are
/// Redis's texts), otherwise the error as the client describes it.
pub fn client_error(e: ClientError) -> Reply {
    match e {
        ClientError::Server { status: Status::Refused, message } => Reply::err(message),
        other => Reply::err(other),
    }
}

fn check_sizes(cmd: &Command<'_>) -> Result<(), Reply> {
    let mut too_long = false;
    cmd.for_each_key(|k| too_long |= k.len() > MAX_KEY);
    if too_long {
        return Err(errors::KEY_TOO_LARGE);
    }
    let value_too_long = match cmd {
        Command::Set { value, .. } => value.len() > MAX_VALUE,
        Command::Append { suffix, .. } => suffix.len() > MAX_VALUE,
        Command::MSet(pairs) | Command::MSetNx(pairs) => pairs.iter().skip(1).step_by(2).any(|v| v.len() > MAX_VALUE),
        _ => false,
    };
    if value_too_long {
        return Err(errors::VALUE_TOO_LARGE);
    }
    Ok(())
}

async fn exec(shared: &Shared, cmd: &Command<'_>, t: u64) -> Result<Reply, ClientError> {
    let ks = &shared.keyspace;
    Ok(match *cmd {
        Command::Get(key) => Reply::bulk_or_null(ks.get(key).await?),
        Command::Set { key, value, args, reply_int } => {
            if args.is_blind() {
                // A plain put, ordered by its event time alone (a conditional update would be
                // stamped after the value it finds, which could reorder two pipelined SETs).
                // An absolute expiry becomes the TTL from the event time; one in the past, 1 ns.
                let ttl = match args.expiry {
                    Expiry::After(ns) => Some(Duration::from_nanos(ns)),
                    Expiry::At(at) => Some(Duration::from_nanos(at.saturating_sub(t).max(1))),
                    Expiry::Never | Expiry::Keep => None,
                };
                ks.put_with(key, value, PutOptions { ttl, event_time_ns: Some(t) }).await?;
                return Ok(Reply::Ok);
            }
            let opts = SetOptions {
                condition: match args.cond {
                    Cond::Always => Condition::Always,
                    Cond::Nx => Condition::IfAbsent,
                    Cond::Xx => Condition::IfPresent,
                },
                expiry: match args.expiry {
                    Expiry::Never => SetExpiry::None,
                    Expiry::Keep => SetExpiry::Keep,
                    e => SetExpiry::At(e.deadline(t).unwrap_or(1)),
                },
                return_old: args.get,
                event_time_ns: Some(t),
            };
            let outcome = ks.set(key, value, opts).await?;
            if reply_int {
                Reply::Int(i64::from(outcome.applied))
            } else if args.get {
                Reply::bulk_or_null(outcome.old)
            } else if outcome.applied {
                Reply::Ok
            } else {
                Reply::Null
            }
        }
        Command::GetDel(key) => Reply::bulk_or_null(ks.get_delete(key).await?),
        Command::GetEx { key, change: None } => Reply::bulk_or_null(ks.get(key).await?),
        Command::GetEx { key, change: Some(change) } => {
            let change = match change {
                GetExChange::At(at) => ExpiryChange::At(at),
                GetExChange::Persist => ExpiryChange::Persist,
            };
            Reply::bulk_or_null(ks.get_and_expire(key, Some(change)).await?)
        }
        Command::MGet(keys) => {
            let keys: Vec<&[u8]> = keys.iter().collect();
            let mut values = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(CHUNK) {
                values.extend(ks.get_many(chunk).await?.into_iter().map(Reply::bulk_or_null));
            }
            Reply::Array(values)
        }
        Command::MSet(pairs) => {
            mset(shared, pairs, t).await?;
            Reply::Ok
        }
        Command::MSetNx(pairs) => {
            let keys: Vec<&[u8]> = pairs.iter().step_by(2).collect();
            for chunk in keys.chunks(CHUNK) {
                if ks.get_many(chunk).await?.iter().any(Option::is_some) {
                    return Ok(Reply::Int(0));
                }
            }
            mset(shared, pairs, t).await?;
            Reply::Int(1)
        }
        Command::Append { key, suffix } => Reply::Int(ks.append(key, suffix).await? as i64),
        Command::Strlen(key) => Reply::Int(ks.get(key).await?.map_or(0, |v| v.len() as i64)),
        Command::IncrBy { key, delta } => Reply::Int(ks.incr_by(key, delta).await?),
        Command::IncrByFloat { key, delta } => Reply::Bulk(format_float(ks.incr_by_float(key, delta).await?).into_bytes()),
        Command::Del(keys) => {
            // A key named twice is deleted (and counted) once, as in Redis.
            let mut unique: Vec<&[u8]> = keys.iter().collect();
            unique.sort_unstable();
            unique.dedup();
            let mut deleted = 0;
            for (c, chunk) in unique.chunks(CHUNK).enumerate() {
                let base = t + (c * CHUNK) as u64;
                let done = join_all(chunk.iter().enumerate().map(|(i, k)| ks.delete_existing(k, base + i as u64))).await;
                for existed in done {
                    deleted += i64::from(existed?);
                }
            }
            Reply::Int(deleted)
        }
        Command::Exists(keys) => {
            let keys: Vec<&[u8]> = keys.iter().collect();
            let mut found = 0;
            for chunk in keys.chunks(CHUNK) {
                found += ks.get_many(chunk).await?.iter().filter(|v| v.is_some()).count() as i64;
            }
            Reply::Int(found)
        }
        Command::Type(key) => Reply::Simple(if ks.get(key).await?.is_some() { "string" } else { "none" }),
        Command::Expire { key, at_ns, cond } => {
            let condition = match cond {
                ExpireCond::Always => ExpireCondition::Always,
                ExpireCond::Nx => ExpireCondition::IfNoExpiry,
                ExpireCond::Xx => ExpireCondition::IfExpiry,
                ExpireCond::Gt => ExpireCondition::IfLater,
                ExpireCond::Lt => ExpireCondition::IfEarlier,
                ExpireCond::XxLt => {
                    // Two conditions in one: checked, then set (not atomic with each other).
                    if !matches!(ks.get_with_expiry(key).await?, Some((_, at)) if at != 0) {
                        return Ok(Reply::Int(0));
                    }
                    ExpireCondition::IfEarlier
                }
            };
            Reply::Int(i64::from(ks.expire_at(key, at_ns, condition).await?))
        }
        Command::Ttl { key, millis } => Reply::Int(match ks.get_with_expiry(key).await? {
            None => -2,
            Some((_, 0)) => -1,
            Some((_, at)) => {
                let ms = (at.saturating_sub(vasto_client::now_ns()) + 500_000) / 1_000_000;
                if millis {
                    ms as i64
                } else {
                    ((ms + 500) / 1000) as i64
                }
            }
        }),
        Command::Persist(key) => Reply::Int(i64::from(ks.persist(key).await?)),
        Command::Scan { cursor, pattern, count, filter } => return scan(shared, cursor, pattern, count, filter).await,
        Command::Keys(pattern) => {
            let mut keys = Vec::new();
            full_scan(shared, literal_prefix(pattern), |k| {
                if glob_match(pattern, &k) {
                    keys.push(Reply::Bulk(k));
                }
            })
            .await?;
            Reply::Array(keys)
        }
        Command::DbSize => {
            let mut n = 0;
            full_scan(shared, Vec::new(), |_| n += 1).await?;
            Reply::Int(n)
        }
        _ => Reply::err("command not handled by the gateway"),
    })
}

/// Writes `pairs` (key, value, key, value...), pair `i` with event time `t + i`, so a key named
/// twice ends with its later value.
async fn mset(shared: &Shared, pairs: crate::command::Args<'_>, t: u64) -> Result<(), ClientError> {
    let pairs: Vec<&[u8]> = pairs.iter().collect();
    for (c, chunk) in pairs.chunks(2 * CHUNK).enumerate() {
        let base = t + (c * CHUNK) as u64;
        let puts = chunk
            .chunks_exact(2)
            .enumerate()
            .map(|(i, kv)| shared.keyspace.put_with(kv[0], kv[1], PutOptions { ttl: None, event_time_ns: Some(base + i as u64) }));
        join_all(puts).await.into_iter().collect::<Result<(), _>>()?;
    }
    Ok(())
}

/// One SCAN call: continues after the key its cursor stands for, filters the page by the
/// pattern, and answers a new cursor for the page's last key (0 when the scan is complete).
async fn scan(shared: &Shared, cursor: u64, pattern: Option<&[u8]>, count: u64, filter: TypeFilter) -> Result<Reply, ClientError> {
    let after = match cursor {
        0 => Vec::new(),
        id => match shared.cursors.get(id) {
            Some(after) => after,
            None => return Ok(errors::INVALID_CURSOR),
        },
    };
    if filter == TypeFilter::Nothing {
        return Ok(Reply::Array(vec![Reply::Static(b"0"), Reply::Array(Vec::new())]));
    }
    let prefix = pattern.map(literal_prefix).unwrap_or_default();
    let limit = count.min(u64::from(FULL_SCAN_PAGE)) as u32;
    let page = shared.keyspace.scan_prefix(&prefix, &after, limit).await?;
    let keys = page.entries.into_iter().map(|(k, _)| k).filter(|k| pattern.is_none_or(|p| glob_match(p, k))).map(Reply::Bulk).collect();
    let next = page.next.map_or(0, |last| shared.cursors.insert(last));
    Ok(Reply::Array(vec![Reply::Bulk(next.to_string().into_bytes()), Reply::Array(keys)]))
}

/// Calls `f` with every key starting with `prefix`, page after page (O(keys): KEYS, DBSIZE).
async fn full_scan(shared: &Shared, prefix: Vec<u8>, mut f: impl FnMut(Vec<u8>)) -> Result<(), ClientError> {
    let mut after = Vec::new();
    loop {
        let page = shared.keyspace.scan_prefix(&prefix, &after, FULL_SCAN_PAGE).await?;
        page.entries.into_iter().for_each(|(k, _)| f(k));
        match page.next {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}

/// INCRBYFLOAT's reply: the shortest text that reads back as the same `f64`, never with an
/// exponent (`10.5`, `3000`, `0.1`), as Redis prints it.
pub fn format_float(v: f64) -> String {
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::format_float;

    #[test]
    fn floats_print_without_exponents() {
        assert_eq!(format_float(10.5), "10.5");
        assert_eq!(format_float(3000.0), "3000");
        assert_eq!(format_float(5.0e3), "5000");
        assert_eq!(format_float(-0.25), "-0.25");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(1.5e-7), "0.00000015");
    }
}
