use thiserror::Error;

/// Everything that can go wrong reading or decoding a frame.
#[derive(Debug, Error)]
pub enum WireError {
    /// The declared body length exceeds the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The body is not a valid `Frame` FlatBuffer.
    #[error("malformed frame: {0}")]
    Invalid(#[from] flatbuffers::InvalidFlatbuffer),
    /// A zero-length frame, which can never hold a `Frame`.
    #[error("empty frame")]
    Empty,
    /// The peer closed the connection (cleanly, between frames).
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A frame arrived that does not fit the conversation (for example a put sent to the master).
    #[error("unexpected message: {0}")]
    Unexpected(String),
    /// An I/O error on the underlying socket.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
