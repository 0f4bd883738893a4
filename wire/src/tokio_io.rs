use crate::error::WireError;
use crate::frame::LEN_PREFIX;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads exactly one frame from a tokio stream into `buf` (body only, prefix stripped).
/// Returns [`WireError::Closed`] on a clean end of stream before the prefix.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>, max_body: usize) -> Result<(), WireError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        match reader.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Err(WireError::Closed),
            0 => return Err(WireError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len == 0 {
        return Err(WireError::Empty);
    }
    if len > max_body {
        return Err(WireError::TooLarge { len, max: max_body });
    }
    // Grow as the body arrives, so a peer that only declares a large frame costs little.
    buf.clear();
    let mut filled = 0;
    while let Some(end) = crate::frame::next_body_step(filled, len) {
        buf.resize(end, 0);
        reader.read_exact(&mut buf[filled..end]).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
            _ => WireError::Io(e),
        })?;
        filled = end;
    }
    Ok(())
}

/// Runs the connecting side of the opening (see [`crate::Greeter`]) on a tokio stream, each
/// read bounded by `timeout`; returns the node's cluster id.
pub async fn greet<S>(stream: &mut S, mut greeter: crate::Greeter<'_>, timeout: std::time::Duration) -> Result<u64, crate::HandshakeError>
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::HandshakeError;
    use tokio::io::AsyncWriteExt;
    let broken = |e: &dyn std::fmt::Display| HandshakeError::Broken(e.to_string());
    let (mut enc, mut out, mut buf) = (crate::FrameEncoder::new(), Vec::new(), Vec::new());
    greeter.hello(&mut enc, &mut out);
    loop {
        stream.write_all(&out).await.map_err(|e| broken(&e))?;
        let answer = tokio::time::timeout(timeout, read_frame(stream, &mut buf, crate::DEFAULT_MAX_FRAME)).await;
        answer.map_err(|_| HandshakeError::Broken(format!("no {} within {timeout:?}", greeter.awaited())))?.map_err(|e| broken(&e))?;
        out.clear();
        if let Some(cluster_id) = greeter.on_answer(&buf, &mut enc, &mut out)? {
            return Ok(cluster_id);
        }
    }
}
