//! The cluster token: a shared secret every node and tool of a cluster holds, proven on every
//! connection by challenge-response (HMAC-SHA256 over fresh nonces) and never sent.
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Length of each side's random challenge.
pub const NONCE_LEN: usize = 16;
/// Shortest token accepted: 16 bytes, for example `openssl rand -hex 16` (32 characters).
pub const MIN_TOKEN_BYTES: usize = 16;
/// Length of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token is shorter than [`MIN_TOKEN_BYTES`] once surrounding whitespace is removed.
    #[error("the token in {path} is {len} bytes; at least {MIN_TOKEN_BYTES} are needed (for example `openssl rand -hex 16 > {path}`)")]
    TooShort {
        /// The file (or "the token" when it came from memory).
        path: String,
        /// Its length after trimming.
        len: usize,
    },
}

/// A cluster's shared secret. Cheap to clone; its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct ClusterToken(Arc<[u8]>);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterToken(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Labels that make a node's proof and a peer's proof different messages, so neither can be
/// reflected back as the other.
const NODE_LABEL: &[u8] = b"vasto node proof v1";
const PEER_LABEL: &[u8] = b"vasto peer proof v1";

impl ClusterToken {
    /// The token `bytes`, with leading and trailing ASCII whitespace (a file's newline) removed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        Self::parse(bytes, "the token")
    }

    /// Reads the token from `path` (its whole content, trimmed as in [`ClusterToken::from_bytes`]).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Read { path: path.to_owned(), source })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    fn parse(bytes: &[u8], origin: &str) -> Result<Self, TokenError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort { path: origin.to_owned(), len: trimmed.len() });
        }
        Ok(Self(Arc::from(trimmed)))
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        for part in parts {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac
    }

    /// The answering node's proof: it holds the token and saw `peer_nonce`.
    pub(crate) fn node_proof(&self, peer_nonce: &[u8], node_nonce: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(NODE_LABEL, &[peer_nonce, node_nonce]).finalize().into_bytes().into()
    }

    /// The connecting peer's proof: it holds the token, claims `role` and saw `node_nonce`.
    pub(crate) fn peer_proof(&self, role: u8, peer_nonce: &[u8], node_nonce: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(PEER_LABEL, &[&[role], peer_nonce, node_nonce]).finalize().into_bytes().into()
    }

    /// Whether `proof` is the node proof for these nonces (compared in constant time).
    pub(crate) fn verify_node(&self, peer_nonce: &[u8], node_nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(NODE_LABEL, &[peer_nonce, node_nonce]).verify_slice(proof).is_ok()
    }

    /// Whether `proof` is the peer proof for this role and these nonces (constant time).
    pub(crate) fn verify_peer(&self, role: u8, peer_nonce: &[u8], node_nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(PEER_LABEL, &[&[role], peer_nonce, node_nonce]).verify_slice(proof).is_ok()
    }
}

/// Fresh random bytes for a challenge.
pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    // The OS random source failing is not recoverable for a node that authenticates peers.
    getrandom::getrandom(&mut n).unwrap_or_else(|e| panic!("no OS randomness for a nonce: {e}"));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> ClusterToken {
        ClusterToken::from_bytes(s.as_bytes()).expect("token")
    }

    #[test]
    fn short_tokens_are_refused_and_whitespace_is_trimmed() {
        assert!(matches!(ClusterToken::from_bytes(b"  short\n"), Err(TokenError::TooShort { len: 5, .. })));
        let a = token("0123456789abcdef\n");
        let b = token("  0123456789abcdef");
        assert_eq!(a.0, b.0);
        assert_eq!(format!("{a:?}"), "ClusterToken(..)");
    }

    #[test]
    fn proofs_bind_token_role_and_both_nonces() {
        let (t, other) = (token("0123456789abcdef"), token("0123456789abcdeF"));
        let (p, n) = (nonce(), nonce());
        let proof = t.peer_proof(1, &p, &n);
        assert!(t.verify_peer(1, &p, &n, &proof));
        assert!(!other.verify_peer(1, &p, &n, &proof), "another token");
        assert!(!t.verify_peer(2, &p, &n, &proof), "another role");
        assert!(!t.verify_peer(1, &n, &p, &proof), "nonces swapped");
        assert!(!t.verify_peer(1, &p, &n, &proof[..31]), "truncated");
        // A node proof is never a peer proof for the same nonces (no reflection).
        let node = t.node_proof(&p, &n);
        assert!(t.verify_node(&p, &n, &node));
        assert!(!t.verify_peer(1, &p, &n, &node));
        assert!(!other.verify_node(&p, &n, &node));
    }
}
