//! The request side of RESP: multibulk (`*N\r\n$len\r\n...`) and inline (`PING\r\n`) requests,
//! parsed incrementally from the connection's read buffer without copying.
//!
//! Arguments are [`Span`]s of the read buffer. An inline argument with quotes or escapes is
//! unescaped in place (the unescaped text is never longer than the raw one), so multibulk and
//! inline requests look the same to the caller. A request that is not complete yet is resumed
//! on the next call instead of parsed again from its start, so a 1M-argument request arriving in
//! many reads costs O(its size). Every length is checked before anything is buffered for it,
//! and the errors are Redis's own texts; after one the connection must be closed (the framing
//! is lost), as Redis does.
use std::ops::Range;

/// Largest inline request, and longest `*N` / `$N` header line (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;

/// What one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (one argument).
    pub max_bulk: usize,
    /// Most arguments in one request, its name included.
    pub max_args: usize,
    /// Largest request in bytes, headers included (the query-buffer limit).
    pub max_request: usize,
    /// Whether these are the limits for an authenticated client (only the error texts differ).
    pub authenticated: bool,
}

impl Limits {
    /// The store's value limit (32 MiB) plus 1 MiB, so a value just over the store's limit is
    /// answered with a clear error instead of closing the connection; 1M arguments; 512 MiB in
    /// all (Redis's `client-query-buffer-limit` is 1 GiB).
    pub const DEFAULT: Limits = Limits { max_bulk: (32 << 20) + (1 << 20), max_args: 1 << 20, max_request: 512 << 20, authenticated: true };
    /// What a client that has not authenticated yet may send (Redis's rule): 10 arguments of
    /// at most 16 KiB each.
    pub const UNAUTHENTICATED: Limits = Limits { max_bulk: 16 * 1024, max_args: 10, max_request: 256 * 1024, authenticated: false };
}

/// One argument of a request: `buf[start..end]` of the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its arguments, as a range of the span list given to [`RequestParser::next`]; never empty.
    pub args: Range<usize>,
    /// Offset one past its last byte in the read buffer.
    pub end: usize,
}

/// A request that breaks the protocol or a limit. Its `Display` is the Redis error text (without
/// the `ERR ` prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A `*N` count that is not a number, negative beyond -1 or too large.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// More arguments than an unauthenticated client may send.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    /// A `$N` length that is not a number or over the limit.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// A bulk string larger than an unauthenticated client may send.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulk,
    /// An argument header that does not start with `$`.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: expected CRLF after a bulk string")]
    MissingCrlf,
    /// A `*N` line longer than [`MAX_INLINE`].
    #[error("Protocol error: too big mbulk count string")]
    BigCount,
    /// A `$N` line longer than [`MAX_INLINE`].
    #[error("Protocol error: too big bulk count string")]
    BigBulkCount,
    /// An inline request longer than [`MAX_INLINE`].
    #[error("Protocol error: too big inline request")]
    BigInline,
    /// An inline request with an unterminated quote, or a closing quote not followed by a space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A request larger than [`Limits::max_request`].
    #[error("Protocol error: request larger than the query buffer limit")]
    TooLarge,
}

/// Progress inside a multibulk request that is not complete yet; offsets are relative to the
/// request's first byte.
#[derive(Debug, Default)]
struct Partial {
    expected: usize,
    next: usize,
    args: Vec<Span>,
}

/// Parses requests one at a time. The caller passes the read buffer and the offset where the
/// next request starts; when a call returns `Ok(None)` (incomplete), the next call must pass
/// the same request at the same offset or, after dropping the bytes before it, at offset 0.
#[derive(Debug, Default)]
pub struct RequestParser {
    partial: Option<Partial>,
}

impl RequestParser {
    /// A parser with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the request at `buf[from..]`: `Ok(Some(request))` with its arguments appended to
    /// `spans`, `Ok(None)` when it is not complete yet (nothing appended). Empty requests (`*0`,
    /// blank inline lines) are skipped. Never panics, whatever the bytes.
    pub fn next(&mut self, buf: &mut [u8], mut from: usize, spans: &mut Vec<Span>, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
        loop {
            let Some(&first) = buf.get(from) else { return Ok(None) };
            let parsed = if self.partial.is_some() || first == b'*' { self.multibulk(buf, from, spans, limits)? } else { inline(buf, from, spans, limits)? };
            match parsed {
                Step::Incomplete => return Ok(None),
                Step::Empty(end) => from = end,
                Step::Done(request) => return Ok(Some(request)),
            }
        }
    }

    fn multibulk(&mut self, buf: &[u8], from: usize, spans: &mut Vec<Span>, limits: &Limits) -> Result<Step, ProtocolError> {
        let data = &buf[from..];
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some((line, next)) = header_line(data, 1, ProtocolError::BigCount)? else { return Ok(Step::Incomplete) };
                let count = parse_i64(line).ok_or(ProtocolError::MultibulkLength)?;
                if count <= 0 {
                    return Ok(Step::Empty(from + next));
                }
                if count > limits.max_args as i64 {
                    return Err(if limits.authenticated { ProtocolError::MultibulkLength } else { ProtocolError::UnauthenticatedMultibulk });
                }
                Partial { expected: count as usize, next, args: Vec::new() }
            }
        };
        while p.args.len() < p.expected {
            let rest = &data[p.next..];
            let header = match rest.first() {
                None => None,
                Some(b'$') => header_line(rest, 1, ProtocolError::BigBulkCount)?,
                Some(&other) => return Err(ProtocolError::ExpectedDollar(other as char)),
            };
            let Some((line, header_len)) = header else {
                self.partial = Some(p);
                return Ok(Step::Incomplete);
            };
            let len = parse_i64(line).filter(|&n| n >= 0).ok_or(ProtocolError::BulkLength)? as u64;
            if len > limits.max_bulk as u64 {
                return Err(if limits.authenticated { ProtocolError::BulkLength } else { ProtocolError::UnauthenticatedBulk });
            }
            let len = len as usize;
            let start = p.next + header_len;
            if start + len + 2 > limits.max_request {
                return Err(ProtocolError::TooLarge);
            }
            if data.len() < start + len + 2 {
                self.partial = Some(p);
                return Ok(Step::Incomplete);
            }
            if &data[start + len..start + len + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            p.args.push(Span { start, end: start + len });
            p.next = start + len + 2;
        }
        let first = spans.len();
        spans.extend(p.args.iter().map(|s| Span { start: from + s.start, end: from + s.end }));
        Ok(Step::Done(Request { args: first..spans.len(), end: from + p.next }))
    }
}

enum Step {
    Incomplete,
    /// Nothing to run; the next request starts here.
    Empty(usize),
    Done(Request),
}

/// The header line of `data` after its first `skip` bytes: the text before `\r\n` and the
/// offset after it, or `None` when the line is not complete yet.
fn header_line(data: &[u8], skip: usize, too_long: ProtocolError) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window = &data[..data.len().min(MAX_INLINE + 2)];
    match window.iter().position(|&b| b == b'\r') {
        Some(cr) if cr + 1 < data.len() => {
            if data[cr + 1] != b'\n' {
                return Err(too_long_or(too_long));
            }
            Ok(Some((&data[skip.min(cr)..cr], cr + 2)))
        }
        Some(_) => Ok(None),
        None if data.len() > MAX_INLINE => Err(too_long),
        None => Ok(None),
    }
}

/// A header line with a bare `\r` is as malformed as a length that is not a number.
fn too_long_or(kind: ProtocolError) -> ProtocolError {
    match kind {
        ProtocolError::BigCount => ProtocolError::MultibulkLength,
        _ => ProtocolError::BulkLength,
    }
}

/// Redis's `string2ll`: an optional `-`, then `0` or digits without a leading zero, fitting an
/// `i64`; nothing else (no `+`, no spaces).
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    if digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// An inline request: one line split like Redis's `sdssplitargs` (double quotes with `\n`,
/// `\r`, `\t`, `\b`, `\a`, `\xHH` and `\c` escapes; single quotes with `\'`), unescaped in place.
fn inline(buf: &mut [u8], from: usize, spans: &mut Vec<Span>, limits: &Limits) -> Result<Step, ProtocolError> {
    let data = &buf[from..];
    let window = &data[..data.len().min(MAX_INLINE + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if data.len() > MAX_INLINE { Err(ProtocolError::BigInline) } else { Ok(Step::Incomplete) };
    };
    let end = from + nl + 1;
    let mut line_end = from + nl;
    if line_end > from && buf[line_end - 1] == b'\r' {
        line_end -= 1;
    }
    // A NUL ends the line, as in Redis's C string handling.
    if let Some(nul) = buf[from..line_end].iter().position(|&b| b == 0) {
        line_end = from + nul;
    }
    let first = spans.len();
    let line = &mut buf[from..line_end];
    let mut r = 0;
    loop {
        while r < line.len() && is_space(line[r]) {
            r += 1;
        }
        if r == line.len() {
            break;
        }
        let (start, mut w) = (r, r);
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = line.get(r).copied();
            let next = line.get(r + 1).copied();
            if in_double {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if next == Some(b'x') && hex(line.get(r + 2)).is_some() && hex(line.get(r + 3)).is_some() => {
                        line[w] = hex(line.get(r + 2)).unwrap_or(0) * 16 + hex(line.get(r + 3)).unwrap_or(0);
                        r += 4;
                        w += 1;
                    }
                    Some(b'\\') if next.is_some() => {
                        line[w] = match next.unwrap_or(0) {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        };
                        r += 2;
                        w += 1;
                    }
                    Some(b'"') => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        r += 1;
                        break;
                    }
                    Some(other) => {
                        line[w] = other;
                        r += 1;
                        w += 1;
                    }
                }
            } else if in_single {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if next == Some(b'\'') => {
                        line[w] = b'\'';
                        r += 2;
                        w += 1;
                    }
                    Some(b'\'') => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        r += 1;
                        break;
                    }
                    Some(other) => {
                        line[w] = other;
                        r += 1;
                        w += 1;
                    }
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => {
                        in_double = true;
                        r += 1;
                    }
                    Some(b'\'') => {
                        in_single = true;
                        r += 1;
                    }
                    Some(other) => {
                        line[w] = other;
                        r += 1;
                        w += 1;
                    }
                }
            }
        }
        if spans.len() - first >= limits.max_args {
            spans.truncate(first);
            return Err(ProtocolError::MultibulkLength);
        }
        spans.push(Span { start: from + start, end: from + w });
    }
    if spans.len() == first {
        return Ok(Step::Empty(end));
    }
    Ok(Step::Done(Request { args: first..spans.len(), end }))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    (*b? as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
