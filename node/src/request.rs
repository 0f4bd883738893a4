//! Every request a store serves, decoded once from a verified frame, and the one place where the
//! role a peer was admitted as is checked against what it asks.
use vasto_wire::{fb, Body, Role};

/// One request on a data connection, borrowing the frame.
pub(crate) enum Request<'a> {
    /// Read one key.
    Get(fb::Get<'a>),
    /// Write one key (group-committed).
    Put(fb::Put<'a>),
    /// Delete one key (group-committed).
    Delete(fb::Delete<'a>),
    /// Write several keys of one shard atomically.
    Batch(fb::Batch<'a>),
    /// One page of keys in order.
    Scan(fb::Scan<'a>),
    /// A read-modify-write of one key.
    Update(fb::Update<'a>),
    /// A follower asks for the change stream of a replica.
    Tail(fb::Tail<'a>),
    /// A follower asks for a full copy of a replica.
    Snapshot(fb::SnapshotRequest<'a>),
    /// One piece of a bulk import.
    Ingest(fb::Ingest<'a>),
}

impl<'a> Request<'a> {
    /// The request a frame carries; `None` for a message a store does not serve.
    pub(crate) fn of(frame: &fb::Frame<'a>) -> Option<Self> {
        match frame.body_type() {
            Body::Get => frame.body_as_get().map(Request::Get),
            Body::Put => frame.body_as_put().map(Request::Put),
            Body::Delete => frame.body_as_delete().map(Request::Delete),
            Body::Batch => frame.body_as_batch().map(Request::Batch),
            Body::Scan => frame.body_as_scan().map(Request::Scan),
            Body::Update => frame.body_as_update().map(Request::Update),
            Body::Tail => frame.body_as_tail().map(Request::Tail),
            Body::SnapshotRequest => frame.body_as_snapshot_request().map(Request::Snapshot),
            Body::Ingest => frame.body_as_ingest().map(Request::Ingest),
            _ => None,
        }
    }

    /// Whether a peer admitted as `role` may make this request: replication (tails and
    /// snapshots) only from stores, imports only from importers, data requests from anyone
    /// admitted.
    pub(crate) fn permitted(&self, role: Role) -> bool {
        match self {
            Request::Tail(_) | Request::Snapshot(_) => role == Role::Store,
            Request::Ingest(_) => role == Role::Importer,
            Request::Get(_) | Request::Put(_) | Request::Delete(_) | Request::Batch(_) | Request::Scan(_) | Request::Update(_) => true,
        }
    }

    /// What the metrics count it as.
    pub(crate) fn op(&self) -> crate::metrics::Op {
        use crate::metrics::Op;
        match self {
            Request::Get(_) => Op::Get,
            Request::Put(_) => Op::Put,
            Request::Delete(_) => Op::Delete,
            Request::Batch(_) => Op::Batch,
            Request::Scan(_) => Op::Scan,
            Request::Update(_) => Op::Update,
            Request::Tail(_) | Request::Snapshot(_) | Request::Ingest(_) => Op::Other,
        }
    }

    /// The request's name, for refusals and logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::Get(_) => "get",
            Request::Put(_) => "put",
            Request::Delete(_) => "delete",
            Request::Batch(_) => "batch",
            Request::Scan(_) => "scan",
            Request::Update(_) => "update",
            Request::Tail(_) => "tail",
            Request::Snapshot(_) => "snapshot request",
            Request::Ingest(_) => "ingest",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vasto_wire::{parse_frame, FrameEncoder, LEN_PREFIX};

    #[test]
    fn replication_and_import_are_reserved_to_their_roles() {
        let mut enc = FrameEncoder::new();
        let (mut tail, mut get, mut ingest) = (Vec::new(), Vec::new(), Vec::new());
        enc.tail(&mut tail, "ks", 0, 1, 0, "me", None);
        enc.get(&mut get, 1, "ks", 0, b"k");
        enc.ingest(&mut ingest, 1, "ks", 0, 1, 0, b"", true);
        fn request(bytes: &[u8]) -> Option<vasto_wire::fb::Frame<'_>> {
            parse_frame(&bytes[LEN_PREFIX..]).ok()
        }
        let (tail, get, ingest) = (request(&tail).expect("tail"), request(&get).expect("get"), request(&ingest).expect("ingest"));
        let (tail, get, ingest) = (Request::of(&tail).expect("tail"), Request::of(&get).expect("get"), Request::of(&ingest).expect("ingest"));
        for role in [Role::Client, Role::Admin, Role::Importer] {
            assert!(!tail.permitted(role), "{role:?} may not tail");
        }
        assert!(tail.permitted(Role::Store));
        assert!(ingest.permitted(Role::Importer) && !ingest.permitted(Role::Client) && !ingest.permitted(Role::Store));
        assert!([Role::Client, Role::Admin, Role::Store, Role::Importer].iter().all(|r| get.permitted(*r)));
    }
}
