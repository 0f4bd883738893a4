//! The opening of every connection, without I/O so that the store (monoio), the master and the
//! client (tokio) and blocking callers all run the same rules:
//!
//! 1. peer -> node `Hello` (protocol version, role, cluster id, 16-byte nonce);
//! 2. node -> peer `HelloReply`: a refusal (version, cluster, role), or acceptance; a node with a
//!    cluster token adds its own nonce and a proof that it holds the token;
//! 3. when challenged, peer -> node `Auth` (its proof), node -> peer `AuthReply`.
//!
//! A peer that holds a token refuses a node that cannot prove it (or has none), so a token
//! protects clients from impostors as well as nodes from strangers. Nothing but these frames is
//! accepted before the node admits the peer.
use crate::fb::{Body, Role, Status};
use crate::token::{nonce, ClusterToken, NONCE_LEN};
use crate::{parse_frame, FrameEncoder, PROTOCOL_VERSION};

/// Why a connection could not be opened, as the connecting side sees it.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The node answered the hello with a refusal (version, cluster, role).
    #[error("{status:?}: {message}")]
    Refused {
        /// The node's status code.
        status: Status,
        /// The node's explanation.
        message: String,
    },
    /// The node rejected the token proof, or demands one this side does not have.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The peer did not answer like a vasto node, or the connection broke or timed out.
    #[error("{0}")]
    Broken(String),
}

impl HandshakeError {
    /// Whether this is an authentication failure (the CLI exits with code 2 on these).
    pub fn is_authentication(&self) -> bool {
        matches!(self, HandshakeError::AuthenticationFailed(_))
    }
}

/// What the connecting side waits for.
#[derive(Debug, Clone, Copy)]
enum Awaiting {
    /// The answer to the `Hello`.
    HelloReply,
    /// The answer to the `Auth` sent after the node's challenge, from cluster `cluster_id`.
    AuthReply { cluster_id: u64 },
}

/// The connecting side of the opening. Drive it with [`Greeter::hello`], then feed every
/// answer of the node to [`Greeter::on_answer`] until it says the peer is admitted.
pub struct Greeter<'t> {
    role: Role,
    cluster_id: u64,
    token: Option<&'t ClusterToken>,
    nonce: [u8; NONCE_LEN],
    awaiting: Awaiting,
}

impl<'t> Greeter<'t> {
    /// A greeter for a peer of `role`, claiming `cluster_id` (0: none), proving `token` if any.
    pub fn new(role: Role, cluster_id: u64, token: Option<&'t ClusterToken>) -> Self {
        Self { role, cluster_id, token, nonce: nonce(), awaiting: Awaiting::HelloReply }
    }

    /// Appends the `Hello` frame: the first thing to send.
    pub fn hello(&mut self, enc: &mut FrameEncoder, out: &mut Vec<u8>) {
        self.awaiting = Awaiting::HelloReply;
        enc.hello(out, self.role, self.cluster_id, &self.nonce);
    }

    /// Checks the node's answer (the frame body in `reply`) to the last frame sent. `Some` is
    /// the node's cluster id (0: it does not know yet) once the peer is admitted; `None` means
    /// a frame was appended to `out`: send it and pass its answer here too.
    pub fn on_answer(&mut self, reply: &[u8], enc: &mut FrameEncoder, out: &mut Vec<u8>) -> Result<Option<u64>, HandshakeError> {
        match self.awaiting {
            Awaiting::HelloReply => {
                let (cluster_id, challenged) = self.on_hello_reply(reply, enc, out)?;
                if !challenged {
                    return Ok(Some(cluster_id));
                }
                self.awaiting = Awaiting::AuthReply { cluster_id };
                Ok(None)
            }
            Awaiting::AuthReply { cluster_id } => self.on_auth_reply(reply).map(|()| Some(cluster_id)),
        }
    }

    /// What the greeter waits for, for messages about a node that does not answer.
    pub fn awaited(&self) -> &'static str {
        match self.awaiting {
            Awaiting::HelloReply => "the answer to the hello",
            Awaiting::AuthReply { .. } => "the answer to the token proof",
        }
    }

    /// Checks the node's `HelloReply`: its cluster id, and whether it challenged us (then the
    /// `Auth` frame was appended to `out`).
    fn on_hello_reply(&self, reply: &[u8], enc: &mut FrameEncoder, out: &mut Vec<u8>) -> Result<(u64, bool), HandshakeError> {
        let reply =
            parse_frame(reply).ok().and_then(|f| f.body_as_hello_reply()).ok_or_else(|| HandshakeError::Broken("the peer is not a vasto node".into()))?;
        if reply.status() != Status::Ok {
            let message = reply.message().unwrap_or_default().to_owned();
            if reply.status() == Status::Unauthorized {
                return Err(HandshakeError::AuthenticationFailed(message));
            }
            return Err(HandshakeError::Refused { status: reply.status(), message });
        }
        let cluster_id = reply.cluster_id();
        let theirs = reply.nonce().unwrap_or_default();
        match (self.token, theirs.is_empty()) {
            (None, true) => Ok((cluster_id, false)),
            (None, false) => Err(HandshakeError::AuthenticationFailed("the cluster requires a token (--token-file or VASTO_TOKEN_FILE)".into())),
            (Some(_), true) => {
                Err(HandshakeError::AuthenticationFailed("the node runs without a cluster token, but this side has one; refusing to talk to it".into()))
            }
            (Some(token), false) => {
                let proof = reply.proof().unwrap_or_default();
                if theirs.len() != NONCE_LEN || !token.verify_node(&self.nonce, theirs, proof) {
                    return Err(HandshakeError::AuthenticationFailed("the node does not hold this cluster's token".into()));
                }
                enc.auth(out, &token.peer_proof(self.role.0, &self.nonce, theirs));
                Ok((cluster_id, true))
            }
        }
    }

    /// Checks the node's `AuthReply`.
    fn on_auth_reply(&self, reply: &[u8]) -> Result<(), HandshakeError> {
        let reply = parse_frame(reply)
            .ok()
            .and_then(|f| f.body_as_auth_reply())
            .ok_or_else(|| HandshakeError::Broken("the node did not answer the token proof".into()))?;
        match reply.status() {
            Status::Ok => Ok(()),
            _ => Err(HandshakeError::AuthenticationFailed(reply.message().unwrap_or("wrong cluster token").to_owned())),
        }
    }
}

/// The node's verdict on a frame of the opening.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The answer was appended; the opening goes on (an `Auth` is expected next).
    Wait,
    /// The peer is admitted as `role`; every later frame is a request.
    Admitted(Role),
    /// The refusal was appended: send it and close. The text is for the node's log.
    Refused(String),
}

enum DoorState {
    AwaitHello,
    AwaitAuth { role: Role, peer_nonce: [u8; NONCE_LEN], mine: [u8; NONCE_LEN] },
    Admitted(Role),
    Closed,
}

/// The accepting side of the opening, one per connection.
pub struct Doorman {
    token: Option<ClusterToken>,
    node: &'static str,
    state: DoorState,
}

impl Doorman {
    /// A doorman for a node (named `node` in refusals: "store", "master") that demands `token`
    /// when it has one and admits anyone speaking the protocol otherwise.
    pub fn new(node: &'static str, token: Option<ClusterToken>) -> Self {
        Self { token, node, state: DoorState::AwaitHello }
    }

    /// The role the peer was admitted as, once it was.
    pub fn admitted(&self) -> Option<Role> {
        match self.state {
            DoorState::Admitted(role) => Some(role),
            _ => None,
        }
    }

    /// Handles one frame body of the opening; `ours` is this node's cluster id (0: unknown).
    pub fn on_frame(&mut self, body: &[u8], ours: u64, enc: &mut FrameEncoder, out: &mut Vec<u8>) -> Admission {
        let state = std::mem::replace(&mut self.state, DoorState::Closed);
        let frame = parse_frame(body).ok();
        let verdict = match state {
            DoorState::AwaitHello => self.hello(frame.and_then(|f| f.body_as_hello()), ours, enc, out),
            DoorState::AwaitAuth { role, peer_nonce, mine } => match frame.filter(|f| f.body_type() == Body::Auth).and_then(|f| f.body_as_auth()) {
                Some(auth) if self.token.as_ref().is_some_and(|t| t.verify_peer(role.0, &peer_nonce, &mine, auth.proof().unwrap_or_default())) => {
                    enc.auth_reply(out, Status::Ok, "");
                    Admission::Admitted(role)
                }
                Some(_) => {
                    enc.auth_reply(out, Status::Unauthorized, "wrong cluster token");
                    Admission::Refused(format!("a {role:?} peer proved the wrong token"))
                }
                None => {
                    enc.auth_reply(out, Status::Unauthorized, "the cluster requires a token: answer the challenge before anything else");
                    Admission::Refused(format!("a {role:?} peer sent a request without proving the token"))
                }
            },
            DoorState::Admitted(_) | DoorState::Closed => Admission::Refused("frame after the opening was over".into()),
        };
        if let Admission::Admitted(role) = verdict {
            self.state = DoorState::Admitted(role);
        }
        verdict
    }

    fn hello(&mut self, hello: Option<crate::fb::Hello<'_>>, ours: u64, enc: &mut FrameEncoder, out: &mut Vec<u8>) -> Admission {
        let Some(hello) = hello else {
            enc.hello_reply(out, Status::BadRequest, "the first frame must be a hello", ours);
            return Admission::Refused("the first frame was not a hello".into());
        };
        if hello.protocol_version() != PROTOCOL_VERSION {
            let msg = format!("protocol version {} is not supported; this {} speaks {PROTOCOL_VERSION}", hello.protocol_version(), self.node);
            enc.hello_reply(out, Status::VersionMismatch, &msg, ours);
            return Admission::Refused(msg);
        }
        let role = hello.role();
        if role.variant_name().is_none() {
            enc.hello_reply(out, Status::BadRequest, "unknown role", ours);
            return Admission::Refused(format!("unknown role {}", role.0));
        }
        let theirs = hello.cluster_id();
        if theirs != 0 && ours != 0 && theirs != ours {
            let msg = format!("this {} belongs to cluster {ours:016x}, the peer to cluster {theirs:016x}", self.node);
            enc.hello_reply(out, Status::WrongCluster, &msg, ours);
            return Admission::Refused(msg);
        }
        let Some(token) = &self.token else {
            enc.hello_reply(out, Status::Ok, "", ours);
            return Admission::Admitted(role);
        };
        let Ok(peer_nonce) = <[u8; NONCE_LEN]>::try_from(hello.nonce().unwrap_or_default()) else {
            enc.hello_reply(out, Status::BadRequest, "the hello carries no challenge nonce", ours);
            return Admission::Refused("a hello without a nonce".into());
        };
        let mine = nonce();
        enc.hello_challenge(out, ours, &mine, &token.node_proof(&peer_nonce, &mine));
        self.state = DoorState::AwaitAuth { role, peer_nonce, mine };
        Admission::Wait
    }
}

/// One connection counted against a node's connection limit until dropped (also when the
/// task serving it panics).
pub struct ConnectionSlot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl ConnectionSlot {
    /// Takes one of `max` slots counted in `count`, or `None` when all are taken.
    pub fn take(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok().map(|_| Self(std::sync::Arc::clone(count)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs the connecting side of the opening on a blocking stream; returns the node's cluster id.
pub fn greet_blocking<S: std::io::Read + std::io::Write>(stream: &mut S, mut greeter: Greeter<'_>) -> Result<u64, HandshakeError> {
    let broken = |e: &dyn std::fmt::Display| HandshakeError::Broken(e.to_string());
    let (mut enc, mut out, mut buf) = (FrameEncoder::new(), Vec::new(), Vec::new());
    greeter.hello(&mut enc, &mut out);
    loop {
        stream.write_all(&out).map_err(|e| broken(&e))?;
        crate::read_frame_blocking(stream, &mut buf, crate::DEFAULT_MAX_FRAME).map_err(|e| broken(&e))?;
        out.clear();
        if let Some(cluster_id) = greeter.on_answer(&buf, &mut enc, &mut out)? {
            return Ok(cluster_id);
        }
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
