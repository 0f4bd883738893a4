//! Shard metadata, kept in the shard's own `meta` column family (never in the user key space).

/// Key, in `meta`, of the current metadata record ([`ShardMeta::encode`]).
pub(crate) const META_KEY: &[u8] = b"replica";
/// Key, in `meta`, of the metadata record of earlier versions (no incarnation, no creation time).
pub(crate) const LEGACY_META_KEY: &[u8] = b"shard";
/// Version byte of the current record.
const META_VERSION: u8 = 2;

/// Identity of a shard replica, persisted with it so a restarted store can report what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ShardMeta {
    /// Keyspace name.
    pub keyspace: String,
    /// Which keyspace of that name (chosen at create-keyspace): a re-created keyspace of the same
    /// name has another, so it never adopts this replica. 0 for replicas from before keyspaces
    /// had incarnations.
    pub keyspace_incarnation: u64,
    /// Shard index.
    pub shard: u32,
    /// Shards in the keyspace when the replica was created.
    pub shards: u32,
    /// Replica index (0 = primary).
    pub replica: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// When the master created this replica (ms since the Unix epoch; 0 if unknown), for
    /// operators telling two copies of one slot apart.
    pub created_at_ms: u64,
}

impl ShardMeta {
    /// Encodes as a version byte (2), shard, shards, replica, replicas (u32 LE), keyspace
    /// incarnation, creation time (u64 LE), then the keyspace name.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33 + self.keyspace.len());
        out.push(META_VERSION);
        for n in [self.shard, self.shards, self.replica, self.replicas] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.keyspace_incarnation.to_le_bytes());
        out.extend_from_slice(&self.created_at_ms.to_le_bytes());
        out.extend_from_slice(self.keyspace.as_bytes());
        out
    }

    /// Decodes what [`ShardMeta::encode`] wrote; `None` for anything else.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let (&version, rest) = raw.split_first()?;
        if version != META_VERSION {
            return None;
        }
        let (nums, rest) = rest.split_at_checked(16)?;
        let (ids, name) = rest.split_at_checked(16)?;
        let n = |i: usize| nums.get(i * 4..i * 4 + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let id = |i: usize| ids.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        Some(Self {
            keyspace: std::str::from_utf8(name).ok()?.to_owned(),
            keyspace_incarnation: id(0)?,
            shard: n(0)?,
            shards: n(1)?,
            replica: n(2)?,
            replicas: n(3)?,
            created_at_ms: id(1)?,
        })
    }

    /// Decodes the record of earlier versions: four u32 LE (shard, shards, replica, replicas)
    /// followed by the keyspace name; incarnation and creation time read as 0.
    pub(crate) fn decode_legacy(raw: &[u8]) -> Option<Self> {
        let (nums, name) = raw.split_at_checked(16)?;
        let n = |i: usize| nums.get(i * 4..i * 4 + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        Some(Self {
            keyspace: std::str::from_utf8(name).ok()?.to_owned(),
            keyspace_incarnation: 0,
            shard: n(0)?,
            shards: n(1)?,
            replica: n(2)?,
            replicas: n(3)?,
            created_at_ms: 0,
        })
    }

    /// Reads the record from a shard's `meta` column family, current or legacy; `None` when
    /// there is none, an error when there is one that cannot be read.
    pub(crate) fn read(db: &rocksdb::DB, meta_cf: &rocksdb::ColumnFamily, dir: &std::path::Path) -> Result<Option<Self>, crate::EngineError> {
        let unreadable = || crate::EngineError::Corrupt(format!("{}: unreadable shard metadata", dir.display()));
        if let Some(raw) = db.get_cf(meta_cf, META_KEY)? {
            return Self::decode(&raw).map(Some).ok_or_else(unreadable);
        }
        match db.get_cf(meta_cf, LEGACY_META_KEY)? {
            Some(raw) => Self::decode_legacy(&raw).map(Some).ok_or_else(unreadable),
            None => Ok(None),
        }
    }
}

/// True for names usable as keyspace (and directory) names: 1-64 of `[A-Za-z0-9_.-]`, no leading dot.
pub fn valid_keyspace_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_encoded_byte_for_byte() {
        let meta = ShardMeta { keyspace: "ks".into(), keyspace_incarnation: 0x1122, shard: 1, shards: 3, replica: 0, replicas: 2, created_at_ms: 5 };
        let raw = meta.encode();
        #[rustfmt::skip]
        let expected = [
            2, // version
            1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, // shard, shards, replica, replicas
            0x22, 0x11, 0, 0, 0, 0, 0, 0, // keyspace incarnation
            5, 0, 0, 0, 0, 0, 0, 0, // created at
            b'k', b's',
        ];
        assert_eq!(raw, expected);
        assert_eq!(ShardMeta::decode(&raw), Some(meta));
        assert_eq!(ShardMeta::decode(&raw[..20]), None, "truncated");
        let legacy = [1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'k', b's'];
        let old = ShardMeta::decode_legacy(&legacy).expect("the earlier record");
        assert_eq!((old.keyspace.as_str(), old.shard, old.shards, old.replicas, old.keyspace_incarnation), ("ks", 1, 3, 2, 0));
    }
}
