//! Read-modify-write requests (`Update`) and their answers.
use crate::fb::{self, Body, Condition, ExpireCondition, ExpiryMode, Status, UpdateKind};
use crate::FrameEncoder;

/// One `Update` request, borrowed from the caller (field meanings in `schema/vasto.fbs`).
#[derive(Debug, Clone, Copy)]
pub struct UpdateRequest<'a> {
    /// What the update does.
    pub kind: UpdateKind,
    /// The key.
    pub key: &'a [u8],
    /// The writer's event time, ns since the Unix epoch.
    pub event_time_ns: u64,
    /// `Set`: the value; `Append`: the suffix; ignored otherwise.
    pub value: &'a [u8],
    /// `Set`: when to write.
    pub condition: Condition,
    /// `Set`, `Expire`, `GetExpire`: what becomes of the expiry.
    pub expiry: ExpiryMode,
    /// With `ExpiryMode::At`: the absolute expiry, ns since the Unix epoch.
    pub expires_at_ns: u64,
    /// `Expire`: when to change the expiry.
    pub expire_condition: ExpireCondition,
    /// `Set`, `Delete`: answer with the value replaced.
    pub return_old: bool,
    /// `IncrInt`: the amount added.
    pub delta: i64,
    /// `IncrFloat`: the amount added.
    pub delta_float: f64,
}

impl<'a> UpdateRequest<'a> {
    /// A request of `kind` on `key` with every option at its neutral value (write always, no
    /// expiry, nothing returned, zero deltas).
    pub fn new(kind: UpdateKind, key: &'a [u8], event_time_ns: u64) -> Self {
        Self {
            kind,
            key,
            event_time_ns,
            value: b"",
            condition: Condition::Always,
            expiry: ExpiryMode::Clear,
            expires_at_ns: 0,
            expire_condition: ExpireCondition::Always,
            return_old: false,
            delta: 0,
            delta_float: 0.0,
        }
    }
}

/// The answer to an `Update` (field meanings in `schema/vasto.fbs`); `value` is the old value
/// (`Set` and `Delete` with `return_old`) or the current one (`GetExpire`), `None` when there
/// was none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpdateOutcome<'a> {
    /// Whether the update wrote (a condition held, a key existed).
    pub applied: bool,
    /// The value returned, if any.
    pub value: Option<&'a [u8]>,
    /// New integer total or new length.
    pub number: i64,
    /// New float total.
    pub float_number: f64,
}

impl FrameEncoder {
    /// An `Update` of one key on shard `shard` of `keyspace`.
    pub fn update(&mut self, out: &mut Vec<u8>, id: u64, keyspace: &str, shard: u32, r: &UpdateRequest<'_>) {
        let keyspace = self.fbb.create_string(keyspace);
        let key = self.bytes(r.key);
        let value = self.bytes(r.value);
        let args = fb::UpdateArgs {
            keyspace: Some(keyspace),
            shard,
            key: Some(key),
            kind: r.kind,
            event_time_ns: r.event_time_ns,
            value: Some(value),
            condition: r.condition,
            expiry: r.expiry,
            expires_at_ns: r.expires_at_ns,
            expire_condition: r.expire_condition,
            return_old: r.return_old,
            delta: r.delta,
            delta_float: r.delta_float,
        };
        let b = fb::Update::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Update, b.as_union_value());
    }

    /// The successful answer to an `Update`.
    pub fn update_outcome(&mut self, out: &mut Vec<u8>, id: u64, outcome: &UpdateOutcome<'_>) {
        let value = outcome.value.map(|v| self.bytes(v));
        let args = fb::ResponseArgs {
            status: Status::Ok,
            value,
            applied: outcome.applied,
            number: outcome.number,
            float_number: outcome.float_number,
            ..Default::default()
        };
        let b = fb::Response::create(&mut self.fbb, &args);
        self.finish(out, id, Body::Response, b.as_union_value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_frame, LEN_PREFIX};

    #[test]
    fn an_update_and_its_outcome_round_trip() {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        let mut r = UpdateRequest::new(UpdateKind::IncrFloat, b"k", 7);
        r.delta_float = 2.5;
        r.expire_condition = ExpireCondition::IfLater;
        enc.update(&mut out, 3, "ks", 1, &r);
        let frame = parse_frame(&out[LEN_PREFIX..]).expect("verifies");
        let u = frame.body_as_update().expect("an update");
        assert_eq!((u.kind(), u.key(), u.event_time_ns(), u.delta_float()), (UpdateKind::IncrFloat, Some(&b"k"[..]), 7, 2.5));
        assert_eq!((u.keyspace(), u.shard(), u.expire_condition(), frame.id()), (Some("ks"), 1, ExpireCondition::IfLater, 3));
        out.clear();
        enc.update_outcome(&mut out, 4, &UpdateOutcome { applied: true, value: None, number: -5, float_number: 0.0 });
        let frame = parse_frame(&out[LEN_PREFIX..]).expect("verifies");
        let resp = frame.body_as_response().expect("a response");
        assert_eq!((resp.applied(), resp.number(), resp.value().is_none()), (true, -5, true));
    }
}
