//! Translates a wire `Update` into the engine's read-modify-write.
use crate::refusal::MAX_VALUE_BYTES;
use vasto_engine::counter::Delta;
use vasto_engine::{ExpireCondition, ExpiryChange, SetCondition, UpdateOp};
use vasto_wire::{fb, Condition, ExpiryMode, UpdateKind};

/// The engine operation an `Update` asks for (`value` already checked against the value
/// limit); `Err` names what is malformed.
pub(crate) fn operation<'v>(r: &fb::Update<'_>, value: &'v [u8]) -> Result<UpdateOp<'v>, &'static str> {
    let expiry = match r.expiry() {
        ExpiryMode::Clear => ExpiryChange::Clear,
        ExpiryMode::At => ExpiryChange::At(r.expires_at_ns()),
        ExpiryMode::Keep => ExpiryChange::Keep,
        _ => return Err("unknown expiry mode"),
    };
    Ok(match r.kind() {
        UpdateKind::Set => {
            let condition = match r.condition() {
                Condition::Always => SetCondition::Always,
                Condition::IfAbsent => SetCondition::IfAbsent,
                Condition::IfPresent => SetCondition::IfPresent,
                _ => return Err("unknown set condition"),
            };
            UpdateOp::Set { value, condition, expiry, return_old: r.return_old() }
        }
        UpdateKind::Delete => UpdateOp::Delete { return_old: r.return_old() },
        UpdateKind::Append => UpdateOp::Append { suffix: value, max_len: MAX_VALUE_BYTES },
        UpdateKind::Expire => {
            let condition = match r.expire_condition() {
                fb::ExpireCondition::Always => ExpireCondition::Always,
                fb::ExpireCondition::IfNoExpiry => ExpireCondition::IfNoExpiry,
                fb::ExpireCondition::IfExpiry => ExpireCondition::IfExpiry,
                fb::ExpireCondition::IfLater => ExpireCondition::IfLater,
                fb::ExpireCondition::IfEarlier => ExpireCondition::IfEarlier,
                _ => return Err("unknown expire condition"),
            };
            if expiry == ExpiryChange::Keep {
                return Err("an expire must set or clear the expiry");
            }
            UpdateOp::Expire { expiry, condition }
        }
        UpdateKind::GetExpire => UpdateOp::GetExpire { expiry },
        UpdateKind::IncrInt => UpdateOp::Increment(Delta::Int(r.delta())),
        UpdateKind::IncrFloat if r.delta_float().is_finite() => UpdateOp::Increment(Delta::Float(r.delta_float())),
        UpdateKind::IncrFloat => return Err("increment is not a finite number"),
        _ => return Err("unknown update kind"),
    })
}
