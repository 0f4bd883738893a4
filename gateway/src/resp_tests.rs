use super::*;
use proptest::prelude::*;

type Args = Vec<Vec<u8>>;

/// Feeds `chunks` one after another the way the connection does (parse every complete request,
/// then drop the consumed bytes) and returns every request's arguments.
fn feed(chunks: &[&[u8]], limits: &Limits) -> Result<Vec<Args>, ProtocolError> {
    let mut parser = RequestParser::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(req) = parser.next(&mut buf, from, &mut spans, limits)? {
            out.push(spans[req.args.clone()].iter().map(|s| buf[s.start..s.end].to_vec()).collect());
            from = req.end;
        }
        buf.drain(..from);
    }
    Ok(out)
}

fn one(bytes: &[u8]) -> Result<Vec<Args>, ProtocolError> {
    feed(&[bytes], &Limits::DEFAULT)
}

fn args(list: &[&str]) -> Args {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn encode(req: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", req.len()).into_bytes();
    for a in req {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn multibulk_requests_and_pipelines() {
    assert_eq!(one(b"*1\r\n$4\r\nPING\r\n").unwrap(), vec![args(&["PING"])]);
    let pipeline = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    assert_eq!(one(pipeline).unwrap(), vec![args(&["SET", "k", ""]), args(&["GET", "k"])]);
    // Binary data, CRLF inside a value.
    assert_eq!(one(b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n").unwrap(), vec![args(&["ECHO", "a\r\nb"])]);
    // Empty requests are skipped.
    assert_eq!(one(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap(), vec![args(&["PING"])]);
}

#[test]
fn partial_frames_resume_byte_by_byte() {
    let bytes = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$11\r\nhello world\r\nPING\r\n";
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(feed(&chunks, &Limits::DEFAULT).unwrap(), vec![args(&["SET", "hello", "hello world"]), args(&["PING"])]);
    // Nothing is returned before the last byte of a request arrived.
    let mut parser = RequestParser::new();
    let mut spans = Vec::new();
    let full = encode(&args(&["GET", "key"]));
    for n in 0..full.len() {
        let mut buf = full[..n].to_vec();
        assert_eq!(parser.next(&mut buf, 0, &mut spans, &Limits::DEFAULT), Ok(None), "prefix of {n} bytes");
        assert!(spans.is_empty());
    }
}

#[test]
fn inline_requests_split_like_redis() {
    assert_eq!(one(b"PING\r\n").unwrap(), vec![args(&["PING"])]);
    assert_eq!(one(b"  set  k   v \n").unwrap(), vec![args(&["set", "k", "v"])]);
    assert_eq!(one(b"\r\n\n").unwrap(), Vec::<Args>::new());
    assert_eq!(one(b"SET \"a b\" 'c d'\r\n").unwrap(), vec![args(&["SET", "a b", "c d"])]);
    assert_eq!(one(b"ECHO \"\\x41\\n\\t\\\"q\\\\\"\r\n").unwrap(), vec![args(&["ECHO", "A\n\t\"q\\"])]);
    assert_eq!(one(b"ECHO 'it\\'s'\r\n").unwrap(), vec![args(&["ECHO", "it's"])]);
    assert_eq!(one(b"ECHO \"\"\r\n").unwrap(), vec![args(&["ECHO", ""])]);
    assert_eq!(one(b"ECHO \"abc\r\n"), Err(ProtocolError::UnbalancedQuotes));
    assert_eq!(one(b"ECHO \"abc\"d\r\n"), Err(ProtocolError::UnbalancedQuotes));
    assert_eq!(one(b"ECHO 'abc\r\n"), Err(ProtocolError::UnbalancedQuotes));
    // Inline and multibulk mixed in one pipeline.
    assert_eq!(one(b"PING\r\n*1\r\n$4\r\nPING\r\nPING x\n").unwrap(), vec![args(&["PING"]), args(&["PING"]), args(&["PING", "x"])]);
}

#[test]
fn malformed_requests_get_redis_errors() {
    assert_eq!(one(b"*x\r\n"), Err(ProtocolError::MultibulkLength));
    assert_eq!(one(b"*01\r\n"), Err(ProtocolError::MultibulkLength));
    assert_eq!(one(b"*1\r\n+PING\r\n"), Err(ProtocolError::ExpectedDollar('+')));
    assert_eq!(one(b"*1\r\n$-1\r\n"), Err(ProtocolError::BulkLength));
    assert_eq!(one(b"*1\r\n$abc\r\n"), Err(ProtocolError::BulkLength));
    assert_eq!(one(b"*1\r\n$4\r\nPINGxx"), Err(ProtocolError::MissingCrlf));
    assert_eq!(one(b"*1\rx"), Err(ProtocolError::MultibulkLength));
    assert_eq!(ProtocolError::ExpectedDollar('+').to_string(), "Protocol error: expected '$', got '+'");
    // The requests before a bad one are still returned by the calls before the error.
    let mut parser = RequestParser::new();
    let mut buf = b"PING\r\n*1\r\n$x\r\n".to_vec();
    let mut spans = Vec::new();
    let first = parser.next(&mut buf, 0, &mut spans, &Limits::DEFAULT).unwrap().unwrap();
    assert_eq!(parser.next(&mut buf, first.end, &mut spans, &Limits::DEFAULT), Err(ProtocolError::BulkLength));
}

#[test]
fn limits_are_checked_before_buffering() {
    let small = Limits { max_bulk: 10, max_args: 3, max_request: 100, authenticated: true };
    assert_eq!(feed(&[b"*4\r\n"], &small), Err(ProtocolError::MultibulkLength));
    assert_eq!(feed(&[b"*1\r\n$11\r\n"], &small), Err(ProtocolError::BulkLength));
    assert_eq!(feed(&[b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n"], &small).unwrap().len(), 1);
    let tiny_total = Limits { max_request: 30, ..small };
    assert_eq!(feed(&[b"*3\r\n$10\r\n0123456789\r\n$10\r\n"], &tiny_total), Err(ProtocolError::TooLarge));
    assert_eq!(feed(&[b"*11\r\n"], &Limits::UNAUTHENTICATED), Err(ProtocolError::UnauthenticatedMultibulk));
    assert_eq!(feed(&[b"*1\r\n$16385\r\n"], &Limits::UNAUTHENTICATED), Err(ProtocolError::UnauthenticatedBulk));
    // The default bulk limit: the store's 32 MiB value limit plus a margin; 2^63 and more is no length.
    assert_eq!(one(format!("*1\r\n${}\r\n", (33 << 20) + 1).as_bytes()), Err(ProtocolError::BulkLength));
    assert_eq!(one(b"*1\r\n$99999999999999999999\r\n"), Err(ProtocolError::BulkLength));
    assert_eq!(one(format!("*{}\r\n", (1 << 20) + 1).as_bytes()), Err(ProtocolError::MultibulkLength));
    // Header and inline lines are bounded too.
    let long = vec![b'1'; MAX_INLINE + 10];
    assert_eq!(one(&[b"*".as_slice(), &long].concat()), Err(ProtocolError::BigCount));
    assert_eq!(one(&[b"*1\r\n$".as_slice(), &long].concat()), Err(ProtocolError::BigBulkCount));
    assert_eq!(one(&vec![b'a'; MAX_INLINE + 10]), Err(ProtocolError::BigInline));
}

#[test]
fn integers_follow_string2ll() {
    for (text, want) in [("0", Some(0)), ("-1", Some(-1)), ("9223372036854775807", Some(i64::MAX)), ("-9223372036854775808", Some(i64::MIN))] {
        assert_eq!(parse_i64(text.as_bytes()), want, "{text}");
    }
    for bad in ["", "-", "-0", "01", "+1", " 1", "1 ", "9223372036854775808", "-9223372036854775809", "1a", "99999999999999999999"] {
        assert_eq!(parse_i64(bad.as_bytes()), None, "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes, in any chunks: the parser answers requests or an error, and never panics.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 1usize..64) {
        let chunks: Vec<&[u8]> = bytes.chunks(cut).collect();
        let _ = feed(&chunks, &Limits { max_bulk: 100, max_args: 8, max_request: 300, authenticated: true });
        let _ = feed(&chunks, &Limits::UNAUTHENTICATED);
    }

    /// Protocol-looking noise reaches the deeper states more often than random bytes do.
    #[test]
    fn protocol_noise_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()), Just(b"\r".to_vec()), Just(b"\"".to_vec()),
        Just(b"'".to_vec()), Just(b"\\x4".to_vec()), Just(b" ".to_vec()), Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"ab".to_vec()),
    ], 0..64), cut in 1usize..16) {
        let bytes = parts.concat();
        let chunks: Vec<&[u8]> = bytes.chunks(cut).collect();
        let _ = feed(&chunks, &Limits::DEFAULT);
    }

    /// Any requests, encoded as multibulk and split anywhere, come back unchanged and in order.
    #[test]
    fn multibulk_round_trip(reqs in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6), 1..8),
                            cuts in proptest::collection::vec(1usize..50, 1..20)) {
        let bytes: Vec<u8> = reqs.iter().flat_map(|r| encode(r)).collect();
        let mut chunks = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - at);
            chunks.push(&bytes[at..at + n]);
            at += n;
            i += 1;
        }
        prop_assert_eq!(feed(&chunks, &Limits::DEFAULT).unwrap(), reqs);
    }

    /// Plain inline words come back as the words.
    #[test]
    fn inline_round_trip(words in proptest::collection::vec("[a-zA-Z0-9:_.-]{1,12}", 1..8)) {
        let line = format!("{}\r\n", words.join(" "));
        let want: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        prop_assert_eq!(one(line.as_bytes()).unwrap(), vec![want]);
    }
}
