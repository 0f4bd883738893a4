//! Connections to stores, one pipelined connection per store address (re-dialled after failure).
use crate::conn::Conn;
use crate::ClientConfig;
use crate::ClientError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) struct Pool {
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    dialing: tokio::sync::Mutex<()>,
    config: ClientConfig,
}

impl Pool {
    pub fn new(config: ClientConfig) -> Self {
        Self { conns: Mutex::new(HashMap::new()), dialing: tokio::sync::Mutex::new(()), config }
    }

    fn cached(&self, addr: &str) -> Option<Arc<Conn>> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.get(addr).filter(|c| !c.is_closed()).cloned()
    }

    /// A live connection to `addr`, dialling one if needed.
    pub async fn get(&self, addr: &str) -> Result<Arc<Conn>, ClientError> {
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let conn = Conn::connect(addr, &self.config).await?;
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_owned(), Arc::clone(&conn));
        Ok(conn)
    }
}
