//! Bulk import: SST files written away from the store (by `vasto import`) holding stored values
//! (header included) as merge operands, and their ingestion into a shard replica. Ingesting merge
//! operands goes through the last-writer-wins merge, so an import never overwrites a write with
//! a newer event time.
use crate::header::{encode_value, Header};
use crate::shard::Shard;
use crate::EngineError;
use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter};
use std::path::{Path, PathBuf};

/// Writes import SST files with the same table settings the stores use.
pub struct ImportWriter {
    opts: Options,
    scratch: Vec<u8>,
}

impl Default for ImportWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ImportWriter {
    /// A writer with the stores' table format (bloom filters, LZ4) and merge operator name.
    pub fn new() -> Self {
        Self { opts: crate::sst_options(&crate::block_table()), scratch: Vec::with_capacity(4096) }
    }

    /// Writes `pairs` (keys strictly increasing) to a new SST file at `path` as values with
    /// event time `event_time_ns` and no expiry; returns the file's size in bytes. Nothing is
    /// written for an empty iterator (and 0 returned).
    pub fn write<'a>(&mut self, path: &Path, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, event_time_ns: u64) -> Result<u64, EngineError> {
        let header = Header { event_time_ns, expires_at_ns: 0, tombstone: false, counter: false };
        self.write_with(path, pairs, Some(header))
    }

    /// Writes `pairs` (keys strictly increasing) whose values are already stored values
    /// (header included, as [`crate::read_checkpoint`] yields them) to a new SST file at `path`,
    /// unchanged; returns the file's size in bytes (0, and no file, for an empty iterator).
    pub fn write_stored<'a>(&mut self, path: &Path, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<u64, EngineError> {
        self.write_with(path, pairs, None)
    }

    /// Writes the values with `header` in front, or as they are when `None`.
    fn write_with<'a>(&mut self, path: &Path, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, header: Option<Header>) -> Result<u64, EngineError> {
        let mut pairs = pairs.into_iter().peekable();
        if pairs.peek().is_none() {
            return Ok(0);
        }
        let mut writer = SstFileWriter::create(&self.opts);
        writer.open(path)?;
        for (key, value) in pairs {
            match header {
                Some(header) => {
                    encode_value(&mut self.scratch, header, value);
                    writer.merge(key, &self.scratch)?;
                }
                None => writer.merge(key, value)?,
            }
        }
        writer.finish()?;
        std::fs::metadata(path).map(|m| m.len()).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })
    }
}

impl Shard {
    /// Ingests import files made by [`ImportWriter`] for a keyspace of `shards` shards (they may
    /// overlap each other). Refused with [`EngineError::LayoutChanged`] unless the replica
    /// serves and keeps exactly `shards` shards, checked while no layout change can happen, so
    /// an import partitioned for one shard count never lands under another. The files are moved
    /// (hard-linked) into the shard, so they must be on the same filesystem for that to be
    /// cheap; RocksDB copies them otherwise.
    pub fn ingest_import(&self, files: &[PathBuf], shards: u32) -> Result<(), EngineError> {
        self.with_layout_fixed(|layout| {
            if (layout.serving, layout.committed) != (shards, shards) {
                return Err(EngineError::LayoutChanged { serving: layout.serving, committed: layout.committed, expected: shards });
            }
            if files.is_empty() {
                return Ok(());
            }
            let mut opts = IngestExternalFileOptions::default();
            opts.set_move_files(true);
            self.db().ingest_external_file_opts(&opts, files.to_vec())?;
            self.renew_cache_owner();
            Ok(())
        })
    }
}
