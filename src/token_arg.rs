//! `--token-file`: the cluster token, for every command that runs a node or talks to one.
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use vasto_client::{ClientConfig, ClientError, ClusterToken};

/// The cluster token flag, flattened into each command.
#[derive(Args, Clone, Debug, Default)]
pub struct TokenArg {
    /// File holding the cluster's shared secret (at least 16 bytes, for example made with
    /// `openssl rand -hex 32 > FILE`); every node and tool of the cluster uses the same one, and
    /// proves it on every connection without sending it. Without one the cluster is open to
    /// anyone who can connect, so nodes then listen on loopback only.
    #[arg(long = "token-file", env = "VASTO_TOKEN_FILE", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

impl TokenArg {
    /// Reads the token, if one was given.
    pub fn load(&self) -> anyhow::Result<Option<ClusterToken>> {
        self.path.as_deref().map(ClusterToken::from_file).transpose().context("--token-file")
    }

    /// Client settings with the token and `timeout`.
    pub fn client(&self, timeout: std::time::Duration) -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig { timeout, token: self.load()?, ..ClientConfig::default() })
    }
}

/// Whether `e` is an authentication failure anywhere in its chain (the CLI exits with code 2).
pub fn is_authentication_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let client = cause.downcast_ref::<ClientError>().or_else(|| match cause.downcast_ref::<vasto_import::ImportError>() {
            Some(vasto_import::ImportError::Client(c)) => Some(c),
            _ => None,
        });
        matches!(client, Some(ClientError::Unauthenticated(_)))
    })
}
