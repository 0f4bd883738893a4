//! Replies and their RESP2 / RESP3 encoding.
//!
//! A command produces a [`Reply`]; the connection encodes the replies of a pipeline in request
//! order into one output buffer that it reuses. A value read from the store moves into
//! [`Reply::Bulk`] as it is (no copy until it is written into the output buffer), and the
//! fixed replies (`+OK`, the usual errors) are static, so a GET or SET allocates nothing here.
use std::borrow::Cow;
use std::io::Write;

/// The protocol a connection speaks (changed by `HELLO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3: typed nulls, maps, doubles, verbatim strings.
    Resp3,
}

impl Proto {
    /// The protocol number `HELLO` reports.
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// One reply, independent of the protocol it is encoded in.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A simple string (`+PONG`, `+string`).
    Simple(&'static str),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// A bulk string known at compile time.
    Static(&'static [u8]),
    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// An array.
    Array(Vec<Reply>),
    /// A map: `%` in RESP3, a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set (`~` in RESP3, an array in RESP2).
    Set(Vec<Reply>),
    /// A text (`INFO`): a verbatim string `=...txt:` in RESP3, a bulk string in RESP2.
    Text(String),
    /// An error; the text starts with its code (`ERR ...`, `NOAUTH ...`). Line breaks in it are
    /// sent as spaces, so an error can never break the framing.
    Error(Cow<'static, str>),
}

impl Reply {
    /// An `ERR` error with `text`.
    pub fn err(text: impl std::fmt::Display) -> Reply {
        Reply::Error(Cow::Owned(format!("ERR {text}")))
    }

    /// A fixed error; `text` includes its code.
    pub const fn error(text: &'static str) -> Reply {
        Reply::Error(Cow::Borrowed(text))
    }

    /// A bulk string copied from `bytes`.
    pub fn bulk(bytes: &[u8]) -> Reply {
        Reply::Bulk(bytes.to_vec())
    }

    /// A bulk string, or the null reply.
    pub fn bulk_or_null(value: Option<Vec<u8>>) -> Reply {
        value.map_or(Reply::Null, Reply::Bulk)
    }

    /// Whether this reply is an error (the command counts as failed).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends this reply to `out` in protocol `proto`.
    pub fn encode(&self, proto: Proto, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Int(n) => header(out, b':', *n),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Static(b) => bulk(out, b),
            Reply::Null => out.extend_from_slice(if proto == Proto::Resp3 { b"_\r\n" } else { b"$-1\r\n" }),
            Reply::Array(items) => {
                header(out, b'*', items.len() as i64);
                items.iter().for_each(|r| r.encode(proto, out));
            }
            Reply::Set(items) => {
                header(out, if proto == Proto::Resp3 { b'~' } else { b'*' }, items.len() as i64);
                items.iter().for_each(|r| r.encode(proto, out));
            }
            Reply::Map(pairs) => {
                match proto {
                    Proto::Resp3 => header(out, b'%', pairs.len() as i64),
                    Proto::Resp2 => header(out, b'*', 2 * pairs.len() as i64),
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Text(text) => match proto {
                Proto::Resp3 => {
                    header(out, b'=', text.len() as i64 + 4);
                    out.extend_from_slice(b"txt:");
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Proto::Resp2 => bulk(out, text.as_bytes()),
            },
            Reply::Error(text) => {
                out.push(b'-');
                out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, kind: u8, n: i64) {
    out.push(kind);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The errors every command may answer, with Redis's texts.
pub mod errors {
    use super::Reply;

    /// A malformed option list.
    pub const SYNTAX: Reply = Reply::error("ERR syntax error");
    /// An argument that must be an integer is not one (or overflows).
    pub const NOT_INTEGER: Reply = Reply::error("ERR value is not an integer or out of range");
    /// An argument that must be a float is not one.
    pub const NOT_FLOAT: Reply = Reply::error("ERR value is not a valid float");
    /// A command other than AUTH, HELLO or QUIT before authenticating.
    pub const NOAUTH: Reply = Reply::error("NOAUTH Authentication required.");
    /// A wrong password or a user other than `default`.
    pub const WRONGPASS: Reply = Reply::error("WRONGPASS invalid username-password pair or user is disabled.");
    /// A value longer than the store takes (32 MiB).
    pub const VALUE_TOO_LARGE: Reply = Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len: values are limited to 32 MiB)");
    /// A key longer than the store takes (64 KiB).
    pub const KEY_TOO_LARGE: Reply = Reply::error("ERR key exceeds maximum allowed size (keys are limited to 64 KiB)");
    /// SELECT of a database other than 0.
    pub const DB_RANGE: Reply = Reply::error("ERR DB index is out of range");
    /// A SCAN cursor that is not a number or not (or no longer) known.
    pub const INVALID_CURSOR: Reply = Reply::error("ERR invalid cursor");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, proto: Proto) -> String {
        let mut out = Vec::new();
        r.encode(proto, &mut out);
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn replies_encode_in_both_protocols() {
        use Proto::*;
        assert_eq!(enc(&Reply::Ok, Resp2), "+OK\r\n");
        assert_eq!(enc(&Reply::Int(-7), Resp3), ":-7\r\n");
        assert_eq!(enc(&Reply::bulk(b"a\r\nb"), Resp2), "$4\r\na\r\nb\r\n");
        assert_eq!(enc(&Reply::Null, Resp2), "$-1\r\n");
        assert_eq!(enc(&Reply::Null, Resp3), "_\r\n");
        let arr = Reply::Array(vec![Reply::Static(b"x"), Reply::Null]);
        assert_eq!(enc(&arr, Resp2), "*2\r\n$1\r\nx\r\n$-1\r\n");
        let map = Reply::Map(vec![(Reply::Static(b"proto"), Reply::Int(3))]);
        assert_eq!(enc(&map, Resp3), "%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(&map, Resp2), "*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(enc(&Reply::Set(vec![Reply::Simple("a")]), Resp3), "~1\r\n+a\r\n");
        assert_eq!(enc(&Reply::Text("a:1\r\n".into()), Resp3), "=9\r\ntxt:a:1\r\n\r\n");
        assert_eq!(enc(&Reply::Text("a:1\r\n".into()), Resp2), "$5\r\na:1\r\n\r\n");
        assert_eq!(enc(&Reply::err("bad\r\nline"), Resp2), "-ERR bad  line\r\n");
        assert_eq!(enc(&errors::NOAUTH, Resp3), "-NOAUTH Authentication required.\r\n");
    }
}
