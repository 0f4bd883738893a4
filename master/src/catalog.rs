//! The few facts the master keeps on disk (`--dir`), everything else being rebuilt from the
//! stores' reports:
//!
//! * `cluster-id`: created at the first start and sent in every hello; stores adopt it at their
//!   first registration and refuse any other master afterwards.
//! * `catalog.json`: which keyspaces exist, each with its *incarnation* (a random id chosen at
//!   create-keyspace and kept in every replica's metadata), and the incarnations of deleted
//!   keyspaces. With it, a replica reported by a store is adopted only into the keyspace it was
//!   created for: a re-created keyspace of the same name never adopts an earlier one's replicas
//!   (they are dropped: their keyspace was deleted), a create after a master restart finds the
//!   keyspace even when none of its stores has reported yet (so it never forks a second one),
//!   and a create interrupted by a master crash is rolled back rather than half adopted.
//!
//! Placement, layouts and lags stay soft state: the shape recorded here (shards, replicas, last
//! commit) is only the starting point until the stores report, and the newest commit any
//! replica reports wins.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Catalog files written by this version.
const CATALOG_VERSION: u32 = 1;
const CATALOG_FILE: &str = "catalog.json";
const CLUSTER_ID_FILE: &str = "cluster-id";
/// Incarnations of deleted keyspaces kept (the oldest are forgotten first).
const DELETED_KEPT: usize = 10_000;

/// Why the master's directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file holds something this version cannot read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `--cluster-id` disagrees with the id recorded in the directory.
    #[error("{path} records cluster {recorded:016x}, but --cluster-id says {given:016x}")]
    ClusterMismatch {
        /// The file.
        path: PathBuf,
        /// The id on disk.
        recorded: u64,
        /// The id asked for.
        given: u64,
    },
}

/// Where a keyspace of the catalog stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EntryState {
    /// Its replicas are being created; it serves nobody yet. A master that restarts with a
    /// keyspace in this state rolls the create back.
    Creating,
    /// Created and serving.
    Live,
}

/// One keyspace as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub incarnation: u64,
    pub state: EntryState,
    /// Shard count as last committed by this master (the newest commit a replica reports wins).
    pub shards: u32,
    pub replicas: u32,
    pub committed_at_ms: u64,
    pub created_at_ms: u64,
}

/// What a report's (keyspace, incarnation) is, according to the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// The keyspace of that name and incarnation exists (or is being created).
    Current,
    /// That incarnation of the name was deleted: its replicas are leftovers to drop.
    Deleted,
    /// The name exists with another incarnation, not a deleted one: not adopted, never dropped
    /// automatically (shown in the status).
    Foreign,
    /// The name is not in the catalog at all (a catalog that was lost, or data from before
    /// catalogs): adopted from the reports.
    Unknown,
}

/// The catalog's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Catalog {
    pub version: u32,
    pub keyspaces: BTreeMap<String, Entry>,
    /// `(name, incarnation)` of deleted keyspaces, oldest first.
    pub deleted: Vec<(String, u64)>,
}

impl Catalog {
    /// What the catalog says of a replica of keyspace `name`, incarnation `incarnation`.
    pub fn classify(&self, name: &str, incarnation: u64) -> Known {
        if self.deleted.iter().any(|(n, i)| n == name && *i == incarnation) {
            return Known::Deleted;
        }
        match self.keyspaces.get(name) {
            Some(e) if e.incarnation == incarnation => Known::Current,
            Some(_) => Known::Foreign,
            None => Known::Unknown,
        }
    }

    /// Forgets `name` and remembers its incarnation as deleted.
    pub fn delete(&mut self, name: &str) {
        if let Some(entry) = self.keyspaces.remove(name) {
            self.deleted.push((name.to_owned(), entry.incarnation));
            if self.deleted.len() > DELETED_KEPT {
                let excess = self.deleted.len() - DELETED_KEPT;
                self.deleted.drain(..excess);
            }
        }
    }
}

/// The master's directory: where the catalog is read from and written to.
#[derive(Debug)]
pub(crate) struct CatalogDir {
    dir: PathBuf,
}

impl CatalogDir {
    /// Opens (creating if needed) the master's directory: returns it, the cluster id (created
    /// at the first start, or `given` when the directory has none yet) and the catalog (empty
    /// when there is none).
    pub fn open(dir: &Path, given_cluster_id: Option<u64>) -> Result<(Self, u64, Catalog), CatalogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CatalogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let me = Self { dir: dir.to_path_buf() };
        let id_path = dir.join(CLUSTER_ID_FILE);
        let recorded = match std::fs::read_to_string(&id_path) {
            Ok(text) => Some(
                u64::from_str_radix(text.trim(), 16)
                    .ok()
                    .filter(|&id| id != 0)
                    .ok_or_else(|| CatalogError::Unreadable { path: id_path.clone(), reason: format!("not a cluster id: {:?}", text.trim()) })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&id_path)(e)),
        };
        let cluster_id = match (recorded, given_cluster_id) {
            (Some(recorded), Some(given)) if recorded != given => return Err(CatalogError::ClusterMismatch { path: id_path, recorded, given }),
            (Some(recorded), _) => recorded,
            (None, given) => {
                let id = given.unwrap_or_else(vasto_hash::random_id);
                me.write(CLUSTER_ID_FILE, &format!("{id:016x}\n"))?;
                id
            }
        };
        let catalog_path = dir.join(CATALOG_FILE);
        let catalog = match std::fs::read_to_string(&catalog_path) {
            Ok(text) => {
                let catalog: Catalog =
                    serde_json::from_str(&text).map_err(|e| CatalogError::Unreadable { path: catalog_path.clone(), reason: e.to_string() })?;
                if catalog.version != CATALOG_VERSION {
                    return Err(CatalogError::Unreadable {
                        path: catalog_path,
                        reason: format!("catalog version {} is not {CATALOG_VERSION}", catalog.version),
                    });
                }
                catalog
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Catalog { version: CATALOG_VERSION, ..Default::default() },
            Err(e) => return Err(io(&catalog_path)(e)),
        };
        Ok((me, cluster_id, catalog))
    }

    /// Writes `catalog` durably (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        let text = serde_json::to_string_pretty(catalog).map_err(|e| CatalogError::Unreadable { path: self.dir.join(CATALOG_FILE), reason: e.to_string() })?;
        self.write(CATALOG_FILE, &text)
    }

    fn write(&self, name: &str, text: &str) -> Result<(), CatalogError> {
        let (path, tmp) = (self.dir.join(name), self.dir.join(format!("{name}.tmp")));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CatalogError::Io { path, source }
        };
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(incarnation: u64) -> Entry {
        Entry { incarnation, state: EntryState::Live, shards: 2, replicas: 1, committed_at_ms: 0, created_at_ms: 5 }
    }

    #[test]
    fn the_catalog_and_cluster_id_persist_and_classify_reports() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id, mut catalog) = CatalogDir::open(dir.path(), None).unwrap();
        assert_ne!(id, 0);
        assert!(catalog.keyspaces.is_empty());
        catalog.keyspaces.insert("ks".into(), entry(7));
        store.save(&catalog).unwrap();
        let (_, again, read) = CatalogDir::open(dir.path(), None).unwrap();
        assert_eq!((again, &read), (id, &catalog), "the same cluster and catalog after a restart");
        assert!(matches!(CatalogDir::open(dir.path(), Some(id ^ 1)), Err(CatalogError::ClusterMismatch { .. })));
        assert_eq!(catalog.classify("ks", 7), Known::Current);
        assert_eq!(catalog.classify("ks", 8), Known::Foreign);
        assert_eq!(catalog.classify("other", 8), Known::Unknown);
        catalog.delete("ks");
        assert_eq!(catalog.classify("ks", 7), Known::Deleted);
        catalog.keyspaces.insert("ks".into(), entry(9));
        assert_eq!((catalog.classify("ks", 7), catalog.classify("ks", 9)), (Known::Deleted, Known::Current), "re-created");
        // A directory restored with a known cluster id.
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(CatalogDir::open(fresh.path(), Some(0x42)).unwrap().1, 0x42);
    }

    #[test]
    fn the_catalog_format_is_stable() {
        let mut catalog = Catalog { version: 1, ..Default::default() };
        catalog.keyspaces.insert("ks".into(), entry(7));
        catalog.deleted.push(("old".into(), 3));
        let text = serde_json::to_string(&catalog).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"keyspaces":{"ks":{"incarnation":7,"state":"live","shards":2,"replicas":1,"committed_at_ms":0,"created_at_ms":5}},"deleted":[["old",3]]}"#
        );
    }
}
