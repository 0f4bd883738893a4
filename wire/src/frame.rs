use crate::error::WireError;
use crate::fb;
use std::io::Read;

/// Size of the length prefix in front of every frame body.
pub const LEN_PREFIX: usize = 4;

/// Looks at the start of `buf`: `Ok(Some(n))` when a whole frame of `n` bytes (prefix included)
/// is present, `Ok(None)` when more bytes are needed, an error when the declared length is 0 or
/// over `max_body`. Never reads past `buf`.
#[inline]
pub fn frame_len(buf: &[u8], max_body: usize) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else { return Ok(None) };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len == 0 {
        return Err(WireError::Empty);
    }
    if len > max_body {
        return Err(WireError::TooLarge { len, max: max_body });
    }
    Ok((buf.len() >= LEN_PREFIX + len).then_some(LEN_PREFIX + len))
}

/// Verifies a frame body (without its length prefix) and returns the borrowed view.
#[inline]
pub fn parse_frame(body: &[u8]) -> Result<fb::Frame<'_>, WireError> {
    let opts = flatbuffers::VerifierOptions { max_tables: 10_000_000, max_apparent_size: 1 << 31, ..Default::default() };
    Ok(flatbuffers::root_with_opts::<fb::Frame>(&opts, body)?)
}

/// Writes the length prefix of a body of `len` bytes.
#[inline]
pub fn write_len_prefix(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Reads exactly one frame from a blocking reader into `buf` (replacing its contents with the
/// body only). Returns [`WireError::Closed`] on a clean end of stream before the prefix.
pub fn read_frame_blocking(reader: &mut impl Read, buf: &mut Vec<u8>, max_body: usize) -> Result<(), WireError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        match reader.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
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
    while let Some(end) = next_body_step(filled, len) {
        buf.resize(end, 0);
        reader.read_exact(&mut buf[filled..end]).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
            _ => WireError::Io(e),
        })?;
        filled = end;
    }
    Ok(())
}

/// Bytes of a body read before the buffer is first grown.
const FIRST_BODY_STEP: usize = 64 << 10;

/// Where the next read of a `len`-byte body whose first `filled` bytes are in should end
/// (`None`: complete): the buffer at most doubles per step.
pub(crate) fn next_body_step(filled: usize, len: usize) -> Option<usize> {
    (filled < len).then(|| len.min(filled.saturating_mul(2).max(FIRST_BODY_STEP)))
}
