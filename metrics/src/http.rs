//! The `/metrics` endpoint: HTTP/1.1 `GET /metrics` on a thread of its own, one connection at
//! a time, each closed after its answer. Scrapes are rare (seconds apart), so this needs no
//! async runtime, and it shares nothing with the node's request path.
use crate::scrape::{encode, registry, CollectFn, Scrape, CONTENT_TYPE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Largest request head accepted (request line and headers).
const MAX_REQUEST_HEAD: usize = 8 << 10;
/// How long a scraper may take to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The serving thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// A running endpoint; it serves until the process ends.
#[derive(Debug, Clone, Copy)]
pub struct MetricsServer {
    /// The bound address (the port is chosen by the OS when asked for port 0).
    pub addr: SocketAddr,
}

/// Serves `GET /metrics` on `addr`, answering with what `collect` writes at that moment.
/// Anything else gets 404 (another path), 405 (another method) or 400 (not HTTP), and a
/// request head over 8 KiB or slower than 5 s is dropped.
pub fn serve(addr: SocketAddr, collect: impl Fn(&mut Scrape<'_>) -> std::fmt::Result + Send + Sync + 'static) -> Result<MetricsServer, MetricsError> {
    let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
    let collect: Box<CollectFn> = Box::new(collect);
    let registry = registry(collect);
    std::thread::Builder::new()
        .name("vasto-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => answer(stream, &registry),
                    Err(e) => tracing::debug!(error = %e, "metrics accept failed"),
                }
            }
        })
        .map_err(MetricsError::Thread)?;
    tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
    Ok(MetricsServer { addr: bound })
}

/// Reads one request and writes its answer; errors only end this connection.
fn answer(mut stream: TcpStream, registry: &prometheus_client::registry::Registry) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Some(head) = read_head(&mut stream) else { return };
    let (status, content_type, body) = match route(&head) {
        Ok(()) => match encode(registry) {
            Ok(text) => ("200 OK", CONTENT_TYPE, text),
            Err(_) => ("500 Internal Server Error", "text/plain", "the metrics could not be encoded\n".to_owned()),
        },
        Err((status, why)) => (status, "text/plain", format!("{why}\n")),
    };
    let header = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let head_only = head.starts_with(b"HEAD ");
    let _ = stream.write_all(header.as_bytes()).and_then(|()| if head_only { Ok(()) } else { stream.write_all(body.as_bytes()) });
}

/// The request head (up to the blank line), or `None` if the peer closed, stalled or sent too much.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST_HEAD {
            let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            // Read a little of what is still coming before closing, so the close is not a
            // reset that could destroy the answer before the peer reads it.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut drained = 0;
            while drained < (256 << 10) {
                match stream.read(&mut chunk) {
                    Ok(n) if n > 0 => drained += n,
                    _ => break,
                }
            }
            return None;
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}

/// `Ok` for `GET /metrics` (or HEAD, or with a query string), else the status and why.
fn route(head: &[u8]) -> Result<(), (&'static str, &'static str)> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| ("400 Bad Request", "not an HTTP request"))?.trim_end();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(("400 Bad Request", "not an HTTP request"));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err(("400 Bad Request", "not an HTTP/1 request"));
    }
    if method != "GET" && method != "HEAD" {
        return Err(("405 Method Not Allowed", "only GET /metrics is served"));
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Err(("404 Not Found", "metrics are at /metrics"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request).expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn serves_metrics_and_refuses_everything_else() {
        let server = serve("127.0.0.1:0".parse().expect("addr"), |s| s.gauge_one("vasto_test_answer", "The answer.", 42.0)).expect("serve");
        let ok = ask(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.contains(CONTENT_TYPE) && ok.contains("vasto_test_answer 42.0"), "{ok}");
        assert!(ask(server.addr, b"GET /metrics?x=1 HTTP/1.0\n\n").starts_with("HTTP/1.1 200 OK"));
        let head = ask(server.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK") && !head.contains("vasto_test_answer"), "{head}");
        assert!(ask(server.addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask(server.addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(ask(server.addr, b"\x00\x01\x02 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let huge = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; 20_000]].concat();
        assert!(ask(server.addr, &huge).starts_with("HTTP/1.1 431"));
        // A peer that closes at once does not stop the server.
        drop(TcpStream::connect(server.addr).expect("connect"));
        assert!(ask(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    }
}
