//! A blocking facade over the async client, for synchronous code.
//!
//! ```no_run
//! let client = vasto_client::blocking::Client::connect("127.0.0.1:8278")?;
//! let ks = client.keyspace("default")?;
//! ks.put(b"k", b"v")?;
//! assert_eq!(ks.get(b"k")?, Some(b"v".to_vec()));
//! # Ok::<(), vasto_client::ClientError>(())
//! ```
use crate::{BatchOp, ClientConfig, ClientError, PutOptions, ScanPage};
use std::sync::Arc;
use tokio::runtime::Runtime;

/// A blocking client. Owns a one-worker tokio runtime that keeps the master subscription and the
/// store connections alive between calls. Do not use it from inside an async runtime.
#[derive(Clone)]
pub struct Client {
    rt: Arc<Runtime>,
    inner: crate::Client,
}

/// A blocking handle on one keyspace.
#[derive(Clone)]
pub struct Keyspace {
    rt: Arc<Runtime>,
    inner: crate::Keyspace,
}

impl Client {
    /// Connects to the master with default settings.
    pub fn connect(master: &str) -> Result<Self, ClientError> {
        Self::connect_with(master, ClientConfig::default())
    }

    /// Connects to the master with explicit settings.
    pub fn connect_with(master: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vasto-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Master(format!("cannot start the client runtime: {e}")))?;
        let inner = rt.block_on(crate::Client::connect_with(master, config))?;
        Ok(Self { rt: Arc::new(rt), inner })
    }

    /// A handle on keyspace `name`.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace, ClientError> {
        let inner = self.rt.block_on(self.inner.keyspace(name))?;
        Ok(Keyspace { rt: Arc::clone(&self.rt), inner })
    }
}

impl Keyspace {
    /// See [`crate::Keyspace::with_read_from`].
    pub fn with_read_from(&self, read_from: crate::ReadFrom) -> Keyspace {
        Keyspace { rt: Arc::clone(&self.rt), inner: self.inner.with_read_from(read_from) }
    }
    /// See [`crate::Keyspace::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.rt.block_on(self.inner.get(key))
    }
    /// See [`crate::Keyspace::get_many`].
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        self.rt.block_on(self.inner.get_many(keys))
    }
    /// See [`crate::Keyspace::put`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.put(key, value))
    }
    /// See [`crate::Keyspace::put_with`].
    pub fn put_with(&self, key: &[u8], value: &[u8], opts: PutOptions) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.put_with(key, value, opts))
    }
    /// See [`crate::Keyspace::delete`].
    pub fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.delete(key))
    }
    /// See [`crate::Keyspace::batch`].
    pub fn batch(&self, ops: &[BatchOp<'_>]) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.batch(ops))
    }
    /// See [`crate::Keyspace::scan_prefix`].
    pub fn scan_prefix(&self, prefix: &[u8], start_after: &[u8], limit: u32) -> Result<ScanPage, ClientError> {
        self.rt.block_on(self.inner.scan_prefix(prefix, start_after, limit))
    }
    /// See [`crate::Keyspace::with_write_to`].
    pub fn with_write_to(&self, write_to: crate::WriteTo) -> Keyspace {
        Keyspace { rt: Arc::clone(&self.rt), inner: self.inner.with_write_to(write_to) }
    }
    /// See [`crate::Keyspace::set`].
    pub fn set(&self, key: &[u8], value: &[u8], opts: crate::SetOptions) -> Result<crate::SetOutcome, ClientError> {
        self.rt.block_on(self.inner.set(key, value, opts))
    }
    /// See [`crate::Keyspace::incr_by`].
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, ClientError> {
        self.rt.block_on(self.inner.incr_by(key, delta))
    }
    /// See [`crate::Keyspace::incr_by_float`].
    pub fn incr_by_float(&self, key: &[u8], delta: f64) -> Result<f64, ClientError> {
        self.rt.block_on(self.inner.incr_by_float(key, delta))
    }
}
