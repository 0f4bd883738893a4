//! Opening a connection: TCP connect, then the opening of `vasto_wire::Greeter` (hello and,
//! when the cluster has a token, its proof), each step within the configured timeout.
use crate::ClientConfig;
use tokio::net::TcpStream;
use vasto_wire::{greet, Greeter, HandshakeError, Role, Status};

/// Why a dial failed.
pub(crate) enum DialError {
    /// Could not connect, or the conversation broke (the text says how).
    Unreachable(String),
    /// The peer answered the hello with a refusal.
    Refused(Status, String),
    /// The token was missing, wrong, or not proven by the peer.
    Unauthenticated(String),
}

/// Connects to `addr` and opens the connection as `role`, proving the configured token.
pub(crate) async fn dial(addr: &str, role: Role, config: &ClientConfig) -> Result<TcpStream, DialError> {
    let timeout = config.connect_timeout;
    let io = |e: std::io::Error| DialError::Unreachable(e.to_string());
    let mut stream =
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| DialError::Unreachable("connect timed out".into()))?.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    // Clients do not claim a cluster (0): stores and masters check the cluster id of stores;
    // authenticating clients is the cluster token's job.
    let greeter = Greeter::new(role, 0, config.token.as_ref());
    match greet(&mut stream, greeter, timeout).await {
        Ok(_) => Ok(stream),
        Err(HandshakeError::Refused { status, message }) => Err(DialError::Refused(status, message)),
        Err(HandshakeError::AuthenticationFailed(why)) => Err(DialError::Unauthenticated(why)),
        Err(HandshakeError::Broken(why)) => Err(DialError::Unreachable(why)),
    }
}

impl DialError {
    /// The client error for a failed connection to a store at `addr`.
    pub(crate) fn store_error(self, addr: &str) -> crate::ClientError {
        match self {
            DialError::Unreachable(why) => crate::ClientError::Unavailable(format!("{addr}: {why}")),
            DialError::Refused(status, message) => crate::ClientError::Server { status, message },
            DialError::Unauthenticated(why) => crate::ClientError::Unauthenticated(format!("{addr}: {why}")),
        }
    }
}

/// The error for a failed connection to the master.
pub(crate) fn master_error(master: &str, e: DialError) -> crate::ClientError {
    match e {
        DialError::Unreachable(why) | DialError::Refused(_, why) => crate::ClientError::Master(format!("{master}: {why}")),
        DialError::Unauthenticated(why) => crate::ClientError::Unauthenticated(format!("master {master}: {why}")),
    }
}
