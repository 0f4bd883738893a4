//! Opening a connection: TCP connect, hello, hello reply, all within one timeout each.
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vasto_wire::{parse_frame, read_frame, FrameEncoder, Role, Status, DEFAULT_MAX_FRAME};

/// Why a dial failed.
pub(crate) enum DialError {
    /// Could not connect, or the conversation broke (the text says how).
    Unreachable(String),
    /// The peer answered the hello with a refusal.
    Refused(Status, String),
}

/// Connects to `addr` and exchanges hellos as `role`.
pub(crate) async fn dial(addr: &str, role: Role, timeout: Duration) -> Result<TcpStream, DialError> {
    let io = |e: std::io::Error| DialError::Unreachable(e.to_string());
    let mut stream =
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| DialError::Unreachable("connect timed out".into()))?.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut buf = Vec::new();
    // Clients do not claim a cluster (0): stores and masters check the cluster id of stores;
    // authenticating clients is the cluster token's job.
    FrameEncoder::new().hello(&mut buf, role, 0);
    stream.write_all(&buf).await.map_err(io)?;
    tokio::time::timeout(timeout, read_frame(&mut stream, &mut buf, DEFAULT_MAX_FRAME))
        .await
        .map_err(|_| DialError::Unreachable("no answer to the hello".into()))?
        .map_err(|e| DialError::Unreachable(e.to_string()))?;
    let reply = parse_frame(&buf).ok().and_then(|f| f.body_as_hello_reply()).ok_or_else(|| DialError::Unreachable("the peer is not a vasto node".into()))?;
    if reply.status() != Status::Ok {
        return Err(DialError::Refused(reply.status(), reply.message().unwrap_or_default().to_owned()));
    }
    Ok(stream)
}

/// The error for a failed connection to the master.
pub(crate) fn master_error(master: &str, e: DialError) -> crate::ClientError {
    match e {
        DialError::Unreachable(why) | DialError::Refused(_, why) => crate::ClientError::Master(format!("{master}: {why}")),
    }
}
