//! Read-modify-writes of one key (conditional sets, appends, expiry changes, increments), each
//! decided on what the replica holds and written under its change log's lock, so no other local
//! write of the replica comes between the read and the write. Replicated writes may: under
//! active-active replication a condition is checked against this replica only, and a write
//! made elsewhere at the same time is ordered by last-writer-wins (or, for increments, added).
use crate::changelog::Appending;
use crate::counter::{self, Delta, Number};
use crate::header::{encode_value, Header};
use crate::shard::{reset_scratch, Scratch, SCRATCH};
use crate::{now_ns, EngineError, Shard};
use rocksdb::WriteBatch;
use std::cell::RefCell;
use std::collections::HashSet;

/// When a set writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    /// Always (SET).
    Always,
    /// Only when the key has no live value (SET NX).
    IfAbsent,
    /// Only when it has one (SET XX).
    IfPresent,
}

/// What becomes of a value's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryChange {
    /// No expiry.
    Clear,
    /// Expire at this time, ns since the Unix epoch.
    At(u64),
    /// Keep the current one (KEEPTTL; GETEX without options).
    Keep,
}

/// Redis's EXPIRE options; a key without expiry counts as expiring never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCondition {
    /// Always.
    Always,
    /// NX: only when the key has no expiry.
    IfNoExpiry,
    /// XX: only when it has one.
    IfExpiry,
    /// GT: only when the new expiry is later.
    IfLater,
    /// LT: only when the new expiry is earlier.
    IfEarlier,
}

/// One read-modify-write.
#[derive(Debug, Clone, Copy)]
pub enum UpdateOp<'a> {
    /// Store `value` if `condition` holds; `return_old` returns the value it replaced.
    Set { value: &'a [u8], condition: SetCondition, expiry: ExpiryChange, return_old: bool },
    /// Delete the key (a tombstone is written even when this replica holds no value, so a copy
    /// another replica holds goes too); `applied` says whether this replica held one.
    Delete { return_old: bool },
    /// Append `suffix` to the value shown by a read (created if missing), keeping its expiry.
    /// Refused when the result would exceed `max_len` bytes.
    Append { suffix: &'a [u8], max_len: usize },
    /// Change the expiry of a live key if `condition` holds; an expiry not after the replica's
    /// clock deletes it.
    Expire { expiry: ExpiryChange, condition: ExpireCondition },
    /// Return the value shown by a read, changing its expiry as `Expire` does unless `Keep`.
    GetExpire { expiry: ExpiryChange },
    /// Add to the counter (see `counter`).
    Increment(Delta),
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Updated {
    /// It wrote (its condition held; for a delete or expire: the key existed).
    pub applied: bool,
    /// A value was returned (the buffer passed to [`Shard::update`] holds it).
    pub returned: bool,
    /// The new integer total of an increment, or the new length after an append.
    pub number: i64,
    /// The new total of a float increment.
    pub float_number: f64,
}

/// The decision for one update: `write` set means the stored value in the write buffer is to
/// be merged and logged.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Decision {
    pub write: bool,
    pub outcome: Updated,
}

/// The live value of `current` at `now_ns` (not deleted, not expired) and its header.
fn live(current: Option<&[u8]>, now_ns: u64) -> Option<(Header, &[u8])> {
    current.and_then(Header::split).filter(|(h, _)| !h.tombstone && !h.expired(now_ns))
}

/// Appends what a read shows for a live value: a counter's total, a plain value's bytes.
pub(crate) fn shown(h: Header, user: &[u8], out: &mut Vec<u8>) {
    if !h.counter || !counter::render(user, out) {
        out.extend_from_slice(user);
    }
}

/// Decides `op` on `current` (the stored value this replica holds). A write it makes gets an
/// event time after `current`'s, since it was decided on it. Increments count under `origin`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(
    current: Option<&[u8]>,
    op: &UpdateOp<'_>,
    event_time_ns: u64,
    now_ns: u64,
    origin: u64,
    write: &mut Vec<u8>,
    returned: &mut Vec<u8>,
) -> Result<Decision, &'static str> {
    returned.clear();
    let held = current.and_then(Header::split).map(|(h, _)| h);
    let t = held.map_or(event_time_ns, |h| event_time_ns.max(h.event_time_ns.saturating_add(1)));
    let live = live(current, now_ns);
    let mut outcome = Updated::default();
    let wrote = match *op {
        UpdateOp::Set { value, condition, expiry, return_old } => {
            if let (true, Some((h, user))) = (return_old, live) {
                shown(h, user, returned);
                outcome.returned = true;
            }
            let holds = match condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => live.is_none(),
                SetCondition::IfPresent => live.is_some(),
            };
            if holds {
                let expires_at_ns = match expiry {
                    ExpiryChange::Clear => 0,
                    ExpiryChange::At(at) => at,
                    ExpiryChange::Keep => live.map_or(0, |(h, _)| h.expires_at_ns),
                };
                put_plain(write, t, value, expires_at_ns);
            }
            holds
        }
        UpdateOp::Delete { return_old } => {
            if let (true, Some((h, user))) = (return_old, live) {
                shown(h, user, returned);
                outcome.returned = true;
            }
            outcome.applied = live.is_some();
            put_tombstone(write, t);
            return Ok(Decision { write: true, outcome });
        }
        UpdateOp::Append { suffix, max_len } => {
            let mut value = Vec::new();
            if let Some((h, user)) = live {
                shown(h, user, &mut value);
            }
            if value.len() + suffix.len() > max_len {
                return Err("string exceeds maximum allowed size (proto-max-bulk-len)");
            }
            value.extend_from_slice(suffix);
            outcome.number = value.len() as i64;
            put_plain(write, t, &value, live.map_or(0, |(h, _)| h.expires_at_ns));
            true
        }
        UpdateOp::Expire { expiry, condition } => {
            let Some((h, user)) = live else { return Ok(Decision::default()) };
            let holds = expiry_condition_holds(h.expires_at_ns, expiry, condition);
            holds && change_expiry(h, user, current.unwrap_or_default(), expiry, t, now_ns, write)
        }
        UpdateOp::GetExpire { expiry } => {
            let Some((h, user)) = live else { return Ok(Decision::default()) };
            shown(h, user, returned);
            outcome.returned = true;
            change_expiry(h, user, current.unwrap_or_default(), expiry, t, now_ns, write)
        }
        UpdateOp::Increment(delta) => {
            match counter::increment(current, origin, delta, t, now_ns, write)? {
                Number::Int(i) => outcome.number = i,
                Number::Float(f) => outcome.float_number = f,
            }
            true
        }
    };
    outcome.applied = wrote;
    Ok(Decision { write: wrote, outcome })
}

fn put_plain(write: &mut Vec<u8>, event_time_ns: u64, user: &[u8], expires_at_ns: u64) {
    encode_value(write, Header { event_time_ns, expires_at_ns, ..Header::default() }, user);
}

fn put_tombstone(write: &mut Vec<u8>, event_time_ns: u64) {
    encode_value(write, Header { event_time_ns, tombstone: true, ..Header::default() }, b"");
}

fn expiry_condition_holds(current_ns: u64, expiry: ExpiryChange, condition: ExpireCondition) -> bool {
    // A key without expiry (0) expires never: later than any time.
    let never = |at: u64| if at == 0 { u64::MAX } else { at };
    let new = match expiry {
        ExpiryChange::At(at) => at,
        ExpiryChange::Clear | ExpiryChange::Keep => 0,
    };
    match condition {
        ExpireCondition::Always => true,
        ExpireCondition::IfNoExpiry => current_ns == 0,
        ExpireCondition::IfExpiry => current_ns != 0,
        ExpireCondition::IfLater => never(new) > never(current_ns),
        ExpireCondition::IfEarlier => never(new) < never(current_ns),
    }
}

/// Writes the change of a live value's expiry; false when there is nothing to change.
fn change_expiry(h: Header, user: &[u8], stored: &[u8], expiry: ExpiryChange, t: u64, now_ns: u64, write: &mut Vec<u8>) -> bool {
    let expires_at_ns = match expiry {
        ExpiryChange::Keep => return false,
        ExpiryChange::Clear if h.expires_at_ns == 0 => return false,
        ExpiryChange::Clear => 0,
        ExpiryChange::At(at) if at <= now_ns => {
            put_tombstone(write, t);
            return true;
        }
        ExpiryChange::At(at) => at,
    };
    if h.counter && counter::set_expiry(stored, expires_at_ns, t, write) {
        return true;
    }
    put_plain(write, t, user, expires_at_ns);
    true
}

/// One update of [`Shard::update_many`].
#[derive(Debug, Clone, Copy)]
pub struct KeyUpdate<'a> {
    /// The key it reads and writes.
    pub key: &'a [u8],
    /// The writer's event time (a write it makes is stamped no earlier than this and after
    /// the value it read).
    pub event_time_ns: u64,
    /// What it does.
    pub op: UpdateOp<'a>,
}

/// An update decided, waiting for its part of the group to be committed.
struct Decided {
    index: usize,
    outcome: Updated,
    wrote: bool,
    /// Its returned value in [`Grouped::returned`].
    returned: std::ops::Range<usize>,
}

/// Per-thread buffers of [`Shard::update_many`], reused so a warm group allocates nothing.
#[derive(Default)]
struct Grouped {
    decided: Vec<Decided>,
    returned: Vec<u8>,
    one: Vec<u8>,
    /// Hashes of the keys of the part being built (a collision only commits early).
    keys: HashSet<u64>,
}

thread_local! {
    static GROUPED: RefCell<Grouped> = RefCell::new(Grouped::default());
}

impl Shard {
    /// Runs one read-modify-write of `key` (see [`UpdateOp`]) atomically with respect to the
    /// replica's other local writes: read, decided and, if it writes, merged and logged under
    /// the change log's lock. A value it returns replaces `returned`'s contents. Refused with
    /// [`EngineError::Frozen`] while frozen, [`EngineError::NotOwned`] for a key the serving
    /// layout moved away, and [`EngineError::Refused`] when the value does not fit the
    /// operation.
    pub fn update(&self, key: &[u8], event_time_ns: u64, op: &UpdateOp<'_>, returned: &mut Vec<u8>) -> Result<Updated, EngineError> {
        let mut result = Err(EngineError::Corrupt("the update was not run".into()));
        self.update_many([KeyUpdate { key, event_time_ns, op: *op }], |_, outcome, value| {
            returned.clear();
            returned.extend_from_slice(value);
            result = outcome;
        });
        result
    }

    /// Runs `updates` in order, each exactly as [`Shard::update`] runs it after the ones
    /// before, all under one hold of the change log's lock and with their writes committed
    /// together in one RocksDB write: a pipeline of updates costs one WAL append, not one per
    /// update. Where a key comes back, the updates before it are committed first, so it reads
    /// them. `each(i, outcome, returned)` reports update `i` (with the value it returns): a
    /// refused one at once, a decided one once its part is committed; a failed commit fails
    /// every update that wrote in it, and none of their writes is kept.
    pub fn update_many<'a>(&self, updates: impl IntoIterator<Item = KeyUpdate<'a>>, mut each: impl FnMut(usize, Result<Updated, EngineError>, &[u8])) {
        let begun = self.log_cf().and_then(|cf| Ok((cf, self.log().begin_append()?)));
        let (log_cf, append) = match begun {
            Ok(begun) => begun,
            Err(e) => {
                updates.into_iter().enumerate().for_each(|(i, _)| each(i, Err(e.clone()), &[]));
                return;
            }
        };
        let origin = self.log().mark().incarnation;
        let now = now_ns();
        GROUPED.with(|g| {
            SCRATCH.with(|s| {
                let g = &mut *g.borrow_mut();
                // Nothing is left from a group a panic cut short on this thread.
                g.decided.clear();
                g.keys.clear();
                g.returned.clear();
                let Scratch { value, entry, written } = &mut *s.borrow_mut();
                let mut batch = WriteBatch::default();
                let mut seq = append.next_seq() - 1;
                written.clear();
                for (index, u) in updates.into_iter().enumerate() {
                    if !g.keys.insert(xxhash_rust::xxh3::xxh3_64(u.key)) {
                        self.commit_part(&append, &mut batch, seq, g, written, &mut each);
                        seq = append.next_seq() - 1;
                        g.keys.insert(xxhash_rust::xxh3::xxh3_64(u.key));
                    }
                    if !self.layout.owns(u.key) {
                        each(index, Err(EngineError::NotOwned), &[]);
                        continue;
                    }
                    let decision = match self.db().get_pinned(u.key) {
                        Ok(pinned) => decide(pinned.as_deref(), &u.op, u.event_time_ns, now, origin, value, &mut g.one).map_err(EngineError::Refused),
                        Err(e) => Err(e.into()),
                    };
                    match decision {
                        Ok(d) => {
                            if d.write {
                                seq += 1;
                                self.add_local(&mut batch, log_cf, seq, u.key, value, entry, written);
                            }
                            let start = g.returned.len();
                            g.returned.extend_from_slice(&g.one);
                            g.decided.push(Decided { index, outcome: d.outcome, wrote: d.write, returned: start..g.returned.len() });
                        }
                        Err(e) => each(index, Err(e), &[]),
                    }
                }
                self.commit_part(&append, &mut batch, seq, g, written, &mut each);
                reset_scratch(written);
                reset_scratch(&mut g.returned);
                reset_scratch(&mut g.one);
            })
        });
        drop(append);
        if let Err(e) = self.log().trim(self.db(), log_cf, self.write_options()) {
            tracing::warn!("trimming the change log after updates: {e}");
        }
    }

    /// Commits the part of a group decided so far (when it wrote anything) and reports its
    /// updates; the part's buffers are empty after.
    fn commit_part(
        &self,
        append: &Appending<'_>,
        batch: &mut WriteBatch,
        last_seq: u64,
        g: &mut Grouped,
        written: &mut Vec<u8>,
        each: &mut impl FnMut(usize, Result<Updated, EngineError>, &[u8]),
    ) {
        let committed = if batch.is_empty() { Ok(()) } else { append.commit(self.db(), self.write_options(), std::mem::take(batch), last_seq) };
        if committed.is_ok() {
            self.note_written(written);
        }
        written.clear();
        for d in g.decided.drain(..) {
            match &committed {
                Err(e) if d.wrote => each(d.index, Err(e.clone()), &[]),
                _ => each(d.index, Ok(d.outcome), &g.returned[d.returned]),
            }
        }
        g.returned.clear();
        g.keys.clear();
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
