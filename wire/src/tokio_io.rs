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
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
        _ => WireError::Io(e),
    })?;
    Ok(())
}
