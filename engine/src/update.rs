//! Read-modify-writes of one key (conditional sets, appends, expiry changes, increments), each
//! decided on what the replica holds and written under its change log's lock, so no other local
//! write of the replica comes between the read and the write. Replicated writes may: under
//! active-active replication a condition is checked against this replica only, and a write
//! made elsewhere at the same time is ordered by last-writer-wins (or, for increments, added).
use crate::counter::{self, Delta, Number};
use crate::header::{encode_value, Header};
use crate::shard::{reset_scratch, Scratch, SCRATCH};
use crate::{now_ns, EngineError, Shard};
use rocksdb::WriteBatch;

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

impl Shard {
    /// Runs one read-modify-write of `key` (see [`UpdateOp`]) atomically with respect to the
    /// replica's other local writes: read, decided and, if it writes, merged and logged under
    /// the change log's lock. A value it returns replaces `returned`'s contents. Refused with
    /// [`EngineError::Frozen`] while frozen, [`EngineError::NotOwned`] for a key the serving
    /// layout moved away, and [`EngineError::Refused`] when the value does not fit the
    /// operation.
    pub fn update(&self, key: &[u8], event_time_ns: u64, op: &UpdateOp<'_>, returned: &mut Vec<u8>) -> Result<Updated, EngineError> {
        let log_cf = self.log_cf()?;
        let append = self.log().begin_append()?;
        if !self.layout.owns(key) {
            return Err(EngineError::NotOwned);
        }
        let pinned = self.db().get_pinned(key)?;
        let origin = self.log().mark().incarnation;
        let outcome = SCRATCH.with(|s| {
            let Scratch { value, entry, written } = &mut *s.borrow_mut();
            let decision = decide(pinned.as_deref(), op, event_time_ns, now_ns(), origin, value, returned).map_err(EngineError::Refused)?;
            if decision.write {
                written.clear();
                let mut batch = WriteBatch::default();
                let seq = append.next_seq();
                self.add_local(&mut batch, log_cf, seq, key, value, entry, written);
                append.commit(self.db(), self.write_options(), batch, seq)?;
                self.note_written(written);
                reset_scratch(written);
            }
            Ok::<_, EngineError>(decision.outcome)
        })?;
        drop(pinned);
        self.log().trim(self.db(), log_cf, self.write_options())?;
        Ok(outcome)
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
