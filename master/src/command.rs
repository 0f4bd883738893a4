//! Every request a master serves on a client, admin or importer connection, decoded once, and
//! the one place where the role the peer was admitted as is checked against it.
use vasto_wire::{fb, Body, Role};

/// One request on a non-store connection, borrowing the frame.
pub(crate) enum Command<'a> {
    /// Push me the routing table of a keyspace now and on every change.
    Subscribe(fb::Subscribe<'a>),
    /// A keep-alive.
    KeepAlive,
    /// Create a keyspace (idempotent).
    Create(fb::CreateKeyspace<'a>),
    /// Delete a keyspace and its data.
    Delete(fb::DeleteKeyspace<'a>),
    /// Move a keyspace's replicas from one store to another.
    Replace(fb::ReplaceStore<'a>),
    /// Change a keyspace's shard count.
    Resize(fb::ResizeKeyspace<'a>),
    /// Stop the operation running on a keyspace.
    Cancel(fb::CancelOperation<'a>),
    /// Compact every replica of a keyspace.
    Compact(fb::CompactKeyspace<'a>),
    /// Back up every shard of a keyspace into a directory.
    Backup(fb::BackupKeyspace<'a>),
    /// Hold a keyspace for a bulk import.
    BeginImport(fb::BeginImport<'a>),
    /// Release the hold of [`Command::BeginImport`].
    EndImport(fb::EndImport<'a>),
    /// The cluster status document.
    Status,
}

impl<'a> Command<'a> {
    /// The command a frame carries; `None` for a message the master does not take here.
    pub(crate) fn of(frame: &fb::Frame<'a>) -> Option<Self> {
        match frame.body_type() {
            Body::Subscribe => frame.body_as_subscribe().map(Command::Subscribe),
            Body::Heartbeat => Some(Command::KeepAlive),
            Body::CreateKeyspace => frame.body_as_create_keyspace().map(Command::Create),
            Body::DeleteKeyspace => frame.body_as_delete_keyspace().map(Command::Delete),
            Body::ReplaceStore => frame.body_as_replace_store().map(Command::Replace),
            Body::ResizeKeyspace => frame.body_as_resize_keyspace().map(Command::Resize),
            Body::CancelOperation => frame.body_as_cancel_operation().map(Command::Cancel),
            Body::CompactKeyspace => frame.body_as_compact_keyspace().map(Command::Compact),
            Body::BackupKeyspace => frame.body_as_backup_keyspace().map(Command::Backup),
            Body::BeginImport => frame.body_as_begin_import().map(Command::BeginImport),
            Body::EndImport => frame.body_as_end_import().map(Command::EndImport),
            Body::StatusRequest => Some(Command::Status),
            _ => None,
        }
    }

    /// Whether a peer admitted as `role` may send this: routing tables and keep-alives for
    /// anyone, import holds for admins and importers, everything else for admins only.
    pub(crate) fn permitted(&self, role: Role) -> bool {
        match self {
            Command::Subscribe(_) | Command::KeepAlive => true,
            Command::BeginImport(_) | Command::EndImport(_) => role == Role::Admin || role == Role::Importer,
            Command::Create(_)
            | Command::Delete(_)
            | Command::Replace(_)
            | Command::Resize(_)
            | Command::Cancel(_)
            | Command::Compact(_)
            | Command::Backup(_)
            | Command::Status => role == Role::Admin,
        }
    }

    /// The command's name, for refusals and logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Subscribe(_) => "subscribe",
            Command::KeepAlive => "keep-alive",
            Command::Create(_) => "create keyspace",
            Command::Delete(_) => "delete keyspace",
            Command::Replace(_) => "replace store",
            Command::Resize(_) => "resize keyspace",
            Command::Cancel(_) => "cancel",
            Command::Compact(_) => "compact keyspace",
            Command::Backup(_) => "backup keyspace",
            Command::BeginImport(_) => "begin import",
            Command::EndImport(_) => "end import",
            Command::Status => "status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vasto_wire::{parse_frame, FrameEncoder, LEN_PREFIX};

    #[test]
    fn only_admins_change_the_cluster() {
        let mut enc = FrameEncoder::new();
        let (mut delete, mut subscribe, mut import) = (Vec::new(), Vec::new(), Vec::new());
        enc.delete_keyspace(&mut delete, 1, "ks");
        enc.subscribe(&mut subscribe, "ks");
        enc.begin_import(&mut import, 1, "ks");
        fn command(bytes: &[u8]) -> Command<'_> {
            let frame = parse_frame(&bytes[LEN_PREFIX..]).expect("frame");
            Command::of(&frame).expect("a master command")
        }
        let (delete, subscribe, import) = (command(&delete), command(&subscribe), command(&import));
        for role in [Role::Client, Role::Store, Role::Importer] {
            assert!(!delete.permitted(role), "{role:?} may not delete");
        }
        assert!(delete.permitted(Role::Admin));
        assert!(subscribe.permitted(Role::Client) && subscribe.permitted(Role::Importer));
        assert!(import.permitted(Role::Importer) && !import.permitted(Role::Client));
    }
}
