//! Shard metadata, kept in the shard's own `meta` column family (never in the user key space).

/// Identity of a shard replica, persisted with it so a restarted store can report what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardMeta {
    /// Keyspace name.
    pub keyspace: String,
    /// Shard index.
    pub shard: u32,
    /// Shards in the keyspace.
    pub shards: u32,
    /// Replica index (0 = primary).
    pub replica: u32,
    /// Replicas per shard.
    pub replicas: u32,
}

impl ShardMeta {
    /// Encodes as four u32 LE followed by the keyspace name.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.keyspace.len());
        for n in [self.shard, self.shards, self.replica, self.replicas] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(self.keyspace.as_bytes());
        out
    }

    /// Decodes what [`ShardMeta::encode`] wrote; `None` for anything else.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let (nums, name) = raw.split_at_checked(16)?;
        let n = |i: usize| nums.get(i * 4..i * 4 + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        Some(Self { keyspace: std::str::from_utf8(name).ok()?.to_owned(), shard: n(0)?, shards: n(1)?, replica: n(2)?, replicas: n(3)? })
    }
}

/// True for names usable as keyspace (and directory) names: 1-64 of `[A-Za-z0-9_.-]`, no leading dot.
pub fn valid_keyspace_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
