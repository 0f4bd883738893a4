//! A backup's manifest (`DIR/manifest.json`, written last) and the checks a backup passes
//! before anything of it is restored: every shard present once, every file at its recorded
//! size, and every checkpoint the replica of the recorded keyspace, shard and shard count.
use crate::BackupError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this version writes and reads.
pub const FORMAT: u32 = 1;

/// Everything a backup holds, per shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    /// The manifest format ([`FORMAT`]).
    pub format: u32,
    /// The keyspace backed up.
    pub keyspace: String,
    /// Its incarnation (hex): which keyspace of that name.
    pub keyspace_incarnation: String,
    /// Its shard count.
    pub shards: u32,
    /// Its replicas per shard.
    pub replicas: u32,
    /// Its routing version when the backup was planned.
    pub routing_version: u64,
    /// When the backup began (ms since the Unix epoch): every write acknowledged before it is in
    /// the backup, unless a replica that took it was down (see [`ShardBackup::peers_down`]).
    pub started_at_ms: u64,
    /// When the last checkpoint was written.
    pub finished_at_ms: u64,
    /// One entry per shard, in shard order.
    pub taken: Vec<ShardBackup>,
}

/// One shard's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardBackup {
    /// The shard.
    pub shard: u32,
    /// The store its replica was on, and the replica index.
    pub store: String,
    /// The replica index.
    pub replica: u32,
    /// The checkpoint's directory, relative to the backup directory.
    pub dir: String,
    /// The change-log incarnation and position the checkpoint covers (of that replica's log).
    pub log_incarnation: u64,
    /// See `log_incarnation`.
    pub log_position: u64,
    /// Stores holding other replicas of the shard that were down: writes they took and had not
    /// replicated when they went down are not in the backup.
    pub peers_down: Vec<String>,
    /// Entries of the shard (tombstones and values past their expiry included).
    pub entries: u64,
    /// The greatest event time among them (ns since the Unix epoch; 0: none).
    pub max_event_time_ns: u64,
    /// The checkpoint's files, with their sizes.
    pub files: Vec<BackupFile>,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl BackupManifest {
    /// Reads and parses `DIR/manifest.json`, refusing a directory without one (a backup that did
    /// not finish, or not a backup) and a manifest of another format.
    pub fn load(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::Partial(format!(
                    "{} has no {MANIFEST_FILE}: it is not a backup, or a backup that did not finish (the manifest is written last)",
                    dir.display()
                )));
            }
            Err(source) => return Err(BackupError::Io { path, source }),
        };
        let manifest: Self = serde_json::from_slice(&text).map_err(|e| BackupError::Corrupt(format!("{}: {e}", path.display())))?;
        if manifest.format != FORMAT {
            return Err(BackupError::Corrupt(format!("{}: format {} (this vasto reads format {FORMAT})", path.display(), manifest.format)));
        }
        manifest.check_complete()?;
        Ok(manifest)
    }

    /// Every shard of the keyspace appears exactly once, in order.
    pub(crate) fn check_complete(&self) -> Result<(), BackupError> {
        if self.shards == 0 || self.taken.len() != self.shards as usize || self.taken.iter().enumerate().any(|(i, s)| s.shard != i as u32) {
            let listed: Vec<u32> = self.taken.iter().map(|s| s.shard).collect();
            return Err(BackupError::Partial(format!("the manifest lists shards {listed:?} of a keyspace of {} shards", self.shards)));
        }
        // Names are joined to the backup directory: only the ones a backup writes are accepted,
        // so a manifest never makes a restore read outside it.
        let plain = |name: &str| !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
        for s in &self.taken {
            if s.dir != shard_dir_name(s.shard) || !s.files.iter().all(|f| plain(&f.name)) {
                return Err(BackupError::Corrupt(format!("shard {}: the manifest names a directory or file outside the backup ({:?})", s.shard, s.dir)));
            }
        }
        Ok(())
    }

    /// Checks every shard's files against their recorded sizes (cheap, before any data is read).
    pub fn check_files(&self, dir: &Path) -> Result<(), BackupError> {
        self.taken.iter().try_for_each(|s| check_files(&dir.join(&s.dir), &s.files))
    }
}

impl ShardBackup {
    /// The checkpoint read back is the replica this entry says, of the keyspace backed up.
    pub(crate) fn check_identity(&self, summary: &vasto_engine::CheckpointSummary, keyspace: &str, incarnation: &str, shards: u32) -> Result<(), BackupError> {
        let meta = &summary.meta;
        let held = (meta.keyspace.as_str(), format!("{:016x}", meta.keyspace_incarnation), meta.shard, summary.layout.committed);
        if held != (keyspace, incarnation.to_owned(), self.shard, shards) {
            return Err(BackupError::Corrupt(format!(
                "{} holds shard {} of {} ({} shards, incarnation {}), not shard {} of {keyspace} ({shards} shards, incarnation {incarnation})",
                self.dir, held.2, held.0, held.3, held.1, self.shard
            )));
        }
        Ok(())
    }

    /// The checkpoint read back holds the entries recorded.
    pub(crate) fn check_contents(&self, summary: &vasto_engine::CheckpointSummary) -> Result<(), BackupError> {
        if (summary.entries, summary.max_event_time_ns) != (self.entries, self.max_event_time_ns) {
            return Err(BackupError::Corrupt(format!(
                "{} holds {} entries (newest event time {}), the manifest says {} (newest {})",
                self.dir, summary.entries, summary.max_event_time_ns, self.entries, self.max_event_time_ns
            )));
        }
        Ok(())
    }
}

/// The directory of shard `shard`'s checkpoint inside a backup (as the master names it).
pub(crate) fn shard_dir_name(shard: u32) -> String {
    format!("shard-{shard:05}")
}

/// Files RocksDB may add to a checkpoint when it is opened read-only (its info log), which
/// the manifest therefore does not record.
fn recorded(name: &str) -> bool {
    !name.starts_with("LOG") && name != "LOCK"
}

/// The files of the checkpoint in `dir`, sorted by name, with their sizes.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<BackupFile>, BackupError> {
    let io = |source| BackupError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if recorded(&name) && entry.file_type().map_err(io)?.is_file() {
            files.push(BackupFile { name, bytes: entry.metadata().map_err(io)?.len() });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Every file in `files` is in `dir` at its recorded size.
pub(crate) fn check_files(dir: &Path, files: &[BackupFile]) -> Result<(), BackupError> {
    if !dir.is_dir() {
        return Err(BackupError::Partial(format!("{} is missing", dir.display())));
    }
    for f in files {
        let path = dir.join(&f.name);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == f.bytes => {}
            Ok(m) => return Err(BackupError::Corrupt(format!("{} is {} bytes, the manifest says {}", path.display(), m.len(), f.bytes))),
            Err(e) => return Err(BackupError::Partial(format!("{}: {e}", path.display()))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &str, file: &str) -> BackupManifest {
        let files = vec![BackupFile { name: file.into(), bytes: 1 }];
        let shard = ShardBackup {
            shard: 0,
            store: "s".into(),
            replica: 0,
            dir: dir.into(),
            log_incarnation: 1,
            log_position: 1,
            peers_down: Vec::new(),
            entries: 0,
            max_event_time_ns: 0,
            files,
        };
        BackupManifest {
            format: FORMAT,
            keyspace: "ks".into(),
            keyspace_incarnation: "01".into(),
            shards: 1,
            replicas: 1,
            routing_version: 1,
            started_at_ms: 0,
            finished_at_ms: 0,
            taken: vec![shard],
        }
    }

    #[test]
    fn names_outside_the_backup_are_refused() {
        assert!(manifest("shard-00000", "000012.sst").check_complete().is_ok());
        for (dir, file) in [("../other", "CURRENT"), ("/var/lib/vasto/ks/0", "CURRENT"), ("shard-00000", "../../x"), ("shard-00000", "")] {
            let err = manifest(dir, file).check_complete().unwrap_err();
            assert!(matches!(err, BackupError::Corrupt(_)), "{dir} {file}: {err}");
        }
        let mut two = manifest("shard-00000", "CURRENT");
        two.shards = 2;
        assert!(matches!(two.check_complete(), Err(BackupError::Partial(_))), "a shard missing from the list");
    }
}
