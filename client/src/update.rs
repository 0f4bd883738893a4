//! Read-modify-writes of one key: conditional sets, appends, deletes that report, expiry
//! changes and counters. Each runs atomically on the replica that takes it, under that
//! replica's write path; under active-active replication a condition is checked against that
//! replica, and a write made on another replica at the same time is ordered by last-writer-wins
//! (increments are added: see `vasto_engine::counter`).
//!
//! None of them is idempotent, so none is resent after an attempt whose outcome is unknown: a
//! [`ClientError::Timeout`] or [`ClientError::ConnectionLost`] means it may or may not have been
//! applied. (They are resent when the replica surely did not apply them: it could not be
//! reached, it refused as frozen, or the key had moved.)
use crate::conn::Reply;
use crate::keyspace::{now_ns, Op, Target};
use crate::{ClientError, Keyspace};
use vasto_wire::{fb, ExpiryMode, Status, UpdateKind, UpdateRequest};

/// When a [`Keyspace::set`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Always (SET).
    #[default]
    Always,
    /// Only when the key has no live value (SET NX).
    IfAbsent,
    /// Only when it has one (SET XX).
    IfPresent,
}

/// The expiry a [`Keyspace::set`] gives the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// None: the value lives until overwritten or deleted.
    #[default]
    None,
    /// Expire at this time, ns since the Unix epoch.
    At(u64),
    /// The expiry the current value has (KEEPTTL).
    Keep,
}

/// Options of [`Keyspace::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// When to write.
    pub condition: Condition,
    /// The new value's expiry.
    pub expiry: SetExpiry,
    /// Return the value replaced (SET ... GET).
    pub return_old: bool,
    /// Event time for last-writer-wins; default: the client's clock. The store writes it later
    /// than the value it replaces in any case, since the write was decided on that value.
    pub event_time_ns: Option<u64>,
}

/// What a [`Keyspace::set`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetOutcome {
    /// Whether the value was written (the condition held).
    pub applied: bool,
    /// With `return_old`: the value that was there, if any.
    pub old: Option<Vec<u8>>,
}

/// Redis's EXPIRE options for [`Keyspace::expire_at`]; a key without expiry counts as expiring
/// never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCondition {
    /// Always.
    #[default]
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

/// How [`Keyspace::get_and_expire`] changes the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryChange {
    /// Expire at this time, ns since the Unix epoch (not after the store's clock: delete).
    At(u64),
    /// Remove the expiry.
    Persist,
}

impl Keyspace {
    /// Sends one update of `key` and returns the reply; a value it carries ends up in `value`.
    async fn update(&self, request: UpdateRequest<'_>, value: &mut Vec<u8>) -> Result<Reply, ClientError> {
        let name = &*self.name;
        let reply = self.route(Target::Key(request.key), Op::Update, value, |enc, out, id, shard| enc.update(out, id, name, shard, &request)).await?;
        match reply.status {
            Status::Ok => Ok(reply),
            status => Err(ClientError::Server { status, message: reply.message }),
        }
    }

    /// Stores `value` under `key` if `opts.condition` holds, with `opts.expiry`; returns whether
    /// it did and, with `opts.return_old`, the value it replaced (or found, when not applied).
    pub async fn set(&self, key: &[u8], value: &[u8], opts: SetOptions) -> Result<SetOutcome, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::Set, key, opts.event_time_ns.unwrap_or_else(now_ns));
        request.value = value;
        request.condition = match opts.condition {
            Condition::Always => fb::Condition::Always,
            Condition::IfAbsent => fb::Condition::IfAbsent,
            Condition::IfPresent => fb::Condition::IfPresent,
        };
        (request.expiry, request.expires_at_ns) = match opts.expiry {
            SetExpiry::None => (ExpiryMode::Clear, 0),
            SetExpiry::At(at) => (ExpiryMode::At, at),
            SetExpiry::Keep => (ExpiryMode::Keep, 0),
        };
        request.return_old = opts.return_old;
        let mut old = Vec::new();
        let reply = self.update(request, &mut old).await?;
        Ok(SetOutcome { applied: reply.applied, old: reply.has_value.then_some(old) })
    }

    /// Appends `suffix` to the value of `key` (created if missing), keeping its expiry; returns
    /// the new length.
    pub async fn append(&self, key: &[u8], suffix: &[u8]) -> Result<u64, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::Append, key, now_ns());
        request.value = suffix;
        Ok(self.update(request, &mut Vec::new()).await?.number.max(0) as u64)
    }

    /// Deletes `key` and returns the value it had (GETDEL).
    pub async fn get_delete(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::Delete, key, now_ns());
        request.return_old = true;
        let mut old = Vec::new();
        let reply = self.update(request, &mut old).await?;
        Ok(reply.has_value.then_some(old))
    }

    /// Deletes `key` at `event_time_ns` and returns whether the replica held a live value (what
    /// Redis's DEL counts). The delete is written either way, so copies elsewhere go too.
    pub async fn delete_existing(&self, key: &[u8], event_time_ns: u64) -> Result<bool, ClientError> {
        Ok(self.update(UpdateRequest::new(UpdateKind::Delete, key, event_time_ns), &mut Vec::new()).await?.applied)
    }

    /// Makes `key` expire at `at_ns` (ns since the Unix epoch) if it exists and `condition`
    /// holds; returns whether it did. A time not after the store's clock deletes the key.
    pub async fn expire_at(&self, key: &[u8], at_ns: u64, condition: ExpireCondition) -> Result<bool, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::Expire, key, now_ns());
        (request.expiry, request.expires_at_ns) = (ExpiryMode::At, at_ns);
        request.expire_condition = match condition {
            ExpireCondition::Always => fb::ExpireCondition::Always,
            ExpireCondition::IfNoExpiry => fb::ExpireCondition::IfNoExpiry,
            ExpireCondition::IfExpiry => fb::ExpireCondition::IfExpiry,
            ExpireCondition::IfLater => fb::ExpireCondition::IfLater,
            ExpireCondition::IfEarlier => fb::ExpireCondition::IfEarlier,
        };
        Ok(self.update(request, &mut Vec::new()).await?.applied)
    }

    /// Removes the expiry of `key`; returns whether it had one.
    pub async fn persist(&self, key: &[u8]) -> Result<bool, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::Expire, key, now_ns());
        request.expiry = ExpiryMode::Clear;
        Ok(self.update(request, &mut Vec::new()).await?.applied)
    }

    /// Reads `key` and, with `change`, changes its expiry in the same step (GETEX).
    pub async fn get_and_expire(&self, key: &[u8], change: Option<ExpiryChange>) -> Result<Option<Vec<u8>>, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::GetExpire, key, now_ns());
        (request.expiry, request.expires_at_ns) = match change {
            None => (ExpiryMode::Keep, 0),
            Some(ExpiryChange::At(at)) => (ExpiryMode::At, at),
            Some(ExpiryChange::Persist) => (ExpiryMode::Clear, 0),
        };
        let mut value = Vec::new();
        let reply = self.update(request, &mut value).await?;
        Ok(reply.has_value.then_some(value))
    }

    /// Reads `key` with its expiry (ns since the Unix epoch, 0 = never); `None` when missing,
    /// deleted or expired.
    pub async fn get_with_expiry(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>, ClientError> {
        let name = &*self.name;
        let mut value = Vec::new();
        let reply = self.route(Target::Key(key), Op::Read, &mut value, |enc, out, id, shard| enc.get_with(out, id, name, shard, key, true)).await?;
        match reply.status {
            Status::Ok => Ok(Some((value, reply.expires_at_ns))),
            Status::NotFound => Ok(None),
            status => Err(ClientError::Server { status, message: reply.message }),
        }
    }

    /// Adds `delta` to the integer counter `key` and returns the new total. A missing key
    /// counts from 0, a plain value must be an integer in Redis's form, and the total must stay
    /// within i64 (else [`Status::Refused`] with Redis's text). Increments taken on different
    /// replicas at the same time all count: every replica converges to their sum.
    pub async fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, ClientError> {
        let mut request = UpdateRequest::new(UpdateKind::IncrInt, key, now_ns());
        request.delta = delta;
        Ok(self.update(request, &mut Vec::new()).await?.number)
    }

    /// Adds `delta` to the counter `key` as a float (it stays a float from then on) and returns
    /// the new total; refused when the total would not be finite. Converges like
    /// [`Keyspace::incr_by`]; replicas sum their parts in one order, so they agree to the bit.
    pub async fn incr_by_float(&self, key: &[u8], delta: f64) -> Result<f64, ClientError> {
        if !delta.is_finite() {
            return Err(ClientError::Server { status: Status::Refused, message: "increment would produce NaN or Infinity".into() });
        }
        let mut request = UpdateRequest::new(UpdateKind::IncrFloat, key, now_ns());
        request.delta_float = delta;
        Ok(self.update(request, &mut Vec::new()).await?.float_number)
    }
}
