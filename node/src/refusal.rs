//! What a request is refused with: the limits on keys, values and scans, the checks of a
//! request's key and value against them, and the answer each engine error gets.
use std::borrow::Cow;
use vasto_engine::{EngineError, Shard};
use vasto_wire::Status;

/// Largest accepted value, in bytes.
pub const MAX_VALUE_BYTES: usize = 32 << 20;
/// Largest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Largest page a scan returns, whatever the client asks.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// Keys and values a scan page carries at most (a page always has at least one entry, so one
/// value of up to [`MAX_VALUE_BYTES`] still fits): bounds a scan answer's memory on both sides.
pub const MAX_SCAN_BYTES: usize = 4 << 20;

/// A refused request: the status and message its answer carries.
pub(crate) struct Reject(pub Status, pub Cow<'static, str>);

/// A refusal with a fixed message.
pub(crate) fn reject(status: Status, msg: &'static str) -> Reject {
    Reject(status, Cow::Borrowed(msg))
}

/// The request's key, refused when empty, over [`MAX_KEY_BYTES`] or not owned by `shard`.
pub(crate) fn checked_key<'a>(shard: &Shard, key: Option<&'a [u8]>) -> Result<&'a [u8], Reject> {
    let key = key.unwrap_or_default();
    if key.is_empty() {
        return Err(reject(Status::BadRequest, "empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(reject(Status::TooLarge, "key larger than 64 KiB"));
    }
    if !shard.owns(key) {
        return Err(reject(Status::WrongShard, NOT_OWNED_MESSAGE));
    }
    Ok(key)
}

/// The request's value (empty when absent), refused when over [`MAX_VALUE_BYTES`].
pub(crate) fn checked_value(value: Option<&[u8]>) -> Result<&[u8], Reject> {
    let value = value.unwrap_or_default();
    if value.len() > MAX_VALUE_BYTES {
        return Err(reject(Status::TooLarge, "value larger than 32 MiB"));
    }
    Ok(value)
}

/// What a write to a frozen replica is told.
pub(crate) const FROZEN_MESSAGE: &str = "this replica is being retired; write to another replica";
/// What a write of a key the shard no longer owns is told.
pub(crate) const NOT_OWNED_MESSAGE: &str = "key does not belong to this shard";

/// The answer to a failed write or read: a refusal the client acts on (`Unavailable`: try another
/// replica, also when the disk is full or failing; `WrongShard`: wait for a newer table), or
/// `Internal` for any other storage failure.
pub(crate) fn engine_status(e: &EngineError) -> (Status, Cow<'static, str>) {
    match e {
        EngineError::Frozen => (Status::Unavailable, Cow::Borrowed(FROZEN_MESSAGE)),
        EngineError::NotOwned => (Status::WrongShard, Cow::Borrowed(NOT_OWNED_MESSAGE)),
        EngineError::Refused(why) => (Status::Refused, Cow::Borrowed(why)),
        e if e.is_disk_failure() => {
            if once_a_second() {
                tracing::error!(error = %e, "the disk refused an operation; clients are sent to other replicas");
            }
            (Status::Unavailable, Cow::Owned(format!("this replica's disk refused the operation ({e}); use another replica")))
        }
        e => {
            if once_a_second() {
                tracing::error!(error = %e, "storage error");
            }
            (Status::Internal, Cow::Owned(format!("storage error: {e}")))
        }
    }
}

/// True at most once a second across the process: a failing disk fails every request, and one
/// line a second says so as well as thousands would.
fn once_a_second() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now != last && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// The refusal an engine error is answered with (see [`engine_status`]).
pub(crate) fn engine_error(e: EngineError) -> Reject {
    let (status, message) = engine_status(&e);
    Reject(status, message)
}
