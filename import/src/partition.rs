//! Partitioning records by shard and turning them into sorted SST files within a memory budget
//! (an external sort): records are buffered per shard; when the buffers reach the budget, each
//! shard's buffer is sorted and written as one SST run, and buffering starts again. A shard's
//! runs may overlap one another; the store ingests them together (RocksDB places overlapping
//! files in level 0 and merges them by compaction). A key repeated in the input keeps its last
//! value: within a run by keeping the last line, across runs because each spill writes with an
//! event time one nanosecond after the previous spill's.
use crate::ImportError;
use std::path::{Path, PathBuf};
use vasto_engine::ImportWriter;

/// One shard's buffered records: bytes in one arena, `(start, key length, value length)`.
#[derive(Default)]
struct ShardBuffer {
    arena: Vec<u8>,
    entries: Vec<(usize, u32, u32)>,
}

impl ShardBuffer {
    fn entry(&self, i: usize) -> (&[u8], &[u8]) {
        let (start, klen, vlen) = self.entries[i];
        let key_end = start + klen as usize;
        (&self.arena[start..key_end], &self.arena[key_end..key_end + vlen as usize])
    }
}

/// Buffers records per shard and spills sorted SST runs into a work directory.
pub struct Partitioner {
    shards: u32,
    budget: usize,
    buffered: usize,
    buffers: Vec<ShardBuffer>,
    runs: Vec<Vec<PathBuf>>,
    /// Bytes of SST files written per shard.
    bytes: Vec<u64>,
    spills: u64,
    dir: PathBuf,
    /// The event time records get; `None`: the values pushed are stored values already (a
    /// restore), written as they are.
    event_time_ns: Option<u64>,
    writer: ImportWriter,
}

impl Partitioner {
    /// Partitions for a keyspace of `shards` shards, spilling into `dir` whenever about
    /// `budget_bytes` of records are buffered; every record gets event time `event_time_ns`.
    pub fn new(shards: u32, budget_bytes: usize, dir: &Path, event_time_ns: u64) -> Self {
        Self::with_values(shards, budget_bytes, dir, Some(event_time_ns))
    }

    /// Like [`Partitioner::new`] for stored values (header included, from a backup's
    /// checkpoints): they are written unchanged, keeping their own event times and expiries. A
    /// key must be pushed at most once.
    pub fn for_stored_values(shards: u32, budget_bytes: usize, dir: &Path) -> Self {
        Self::with_values(shards, budget_bytes, dir, None)
    }

    fn with_values(shards: u32, budget_bytes: usize, dir: &Path, event_time_ns: Option<u64>) -> Self {
        Self {
            shards,
            budget: budget_bytes.max(1 << 20),
            buffered: 0,
            buffers: (0..shards).map(|_| ShardBuffer::default()).collect(),
            runs: vec![Vec::new(); shards as usize],
            bytes: vec![0; shards as usize],
            spills: 0,
            dir: dir.to_path_buf(),
            event_time_ns,
            writer: ImportWriter::new(),
        }
    }

    /// Adds one record (to the shard its key hashes to).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ImportError> {
        let shard = vasto_hash::shard_of(key, self.shards) as usize;
        let buf = &mut self.buffers[shard];
        let start = buf.arena.len();
        buf.arena.extend_from_slice(key);
        buf.arena.extend_from_slice(value);
        // Lengths fit: keys and values were checked against the stores' limits.
        buf.entries.push((start, key.len() as u32, value.len() as u32));
        self.buffered += key.len() + value.len() + std::mem::size_of::<(usize, u32, u32)>();
        if self.buffered >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes every buffered shard as a sorted run and empties the buffers.
    fn spill(&mut self) -> Result<(), ImportError> {
        let event_time_ns = self.event_time_ns.map(|t| t.saturating_add(self.spills));
        self.spills += 1;
        for (shard, buf) in self.buffers.iter_mut().enumerate() {
            if buf.entries.is_empty() {
                continue;
            }
            let mut order: Vec<usize> = (0..buf.entries.len()).collect();
            // Stable: equal keys stay in input order, so the last of each group is the last line.
            order.sort_by(|&a, &b| buf.entry(a).0.cmp(buf.entry(b).0));
            let last_of_each_key = order.iter().enumerate().filter(|&(i, &e)| order.get(i + 1).is_none_or(|&next| buf.entry(next).0 != buf.entry(e).0));
            let path = self.dir.join(format!("shard{shard:05}-run{:05}.sst", self.runs[shard].len()));
            let pairs = last_of_each_key.map(|(_, &e)| buf.entry(e));
            let written = match event_time_ns {
                Some(t) => self.writer.write(&path, pairs, t),
                None => self.writer.write_stored(&path, pairs),
            };
            self.bytes[shard] += written.map_err(|e| ImportError::Sst(path.clone(), e))?;
            self.runs[shard].push(path);
            buf.arena.clear();
            buf.entries.clear();
        }
        self.buffered = 0;
        Ok(())
    }

    /// Spills what is left; returns every shard's SST files and their size in bytes.
    pub fn finish(mut self) -> Result<(Vec<Vec<PathBuf>>, Vec<u64>), ImportError> {
        self.spill()?;
        Ok((self.runs, self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use vasto_engine::{Engine, EngineOptions, ShardMeta};

    #[test]
    fn a_small_budget_spills_several_runs_per_shard_and_the_last_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Partitioner::new(3, 1 << 20, dir.path(), 1_000);
        let value = vec![b'v'; 1000];
        for i in 0..3000u32 {
            p.push(format!("key{i}").as_bytes(), &value).unwrap();
        }
        p.push(b"key7", b"last").unwrap();
        p.push(b"key8", b"first").unwrap();
        p.push(b"key8", b"second").unwrap();
        let (runs, bytes) = p.finish().unwrap();
        assert_eq!(runs.len(), 3);
        for (files, size) in runs.iter().zip(&bytes) {
            assert_eq!(*size, files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>(), "sizes are counted as written");
        }
        assert!(runs.iter().all(|r| r.len() >= 2), "about 3 MB over a 1 MB budget: {runs:?}");
        // Each shard's runs, ingested into a store shard, hold its keys once with the last values.
        let engine = Engine::new(&dir.path().join("db"), &EngineOptions::default()).unwrap();
        let mut total = 0;
        for (shard, files) in runs.iter().enumerate() {
            let meta = ShardMeta { keyspace: "imp".into(), shard: 0, shards: 1, replica: shard as u32, replicas: 3, ..Default::default() };
            let db = engine.create_shard(&ShardMeta { keyspace: format!("imp{shard}"), ..meta }).unwrap();
            db.ingest_import(files, 1).unwrap();
            total += db.raw_entry_count().unwrap();
            for (key, want) in [(&b"key7"[..], &b"last"[..]), (b"key8", b"second")] {
                if vasto_hash::shard_of(key, 3) == shard as u32 {
                    let got = db.get(key, |v| v.map(<[u8]>::to_vec)).unwrap();
                    assert_eq!(got.as_deref(), Some(want));
                }
            }
        }
        assert_eq!(total, 3000);
    }
}
