//! The load generator's own HTTP/1.1 client: keep-alive connections, requests written into a
//! reused buffer, responses framed by `Content-Length` and handed back as borrowed bytes.
//!
//! Why not reqwest: in a profile of the drop with the server in the same two cores, reqwest
//! and hyper (connection pool, header maps, per-request allocations and wake-ups) were most
//! of the generator's half of the CPU; the server was measured against its own load
//! generator. This client does only what the drop needs: plain HTTP, one request at a time
//! per connection, sized bodies (the server never sends chunked ones). Anything else is an
//! error, never a guess.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head or body read before the answer is called broken: a seat map of
/// 20,000 seats is about 1.4 MB.
const MAX_RESPONSE: usize = 8 << 20;
const HEADERS: usize = 32;

/// Where the server is: the address to connect to and the `Host` header to send.
pub struct Target {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
}

impl Target {
    /// From a base URL `http://HOST:PORT` (no path, no TLS).
    pub async fn resolve(base: &str, timeout: Duration) -> Result<Target, String> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: only http:// base URLs are supported"))?
            .trim_end_matches('/');
        if host.contains('/') {
            return Err(format!("{base}: a base URL has no path"));
        }
        let with_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{base}: {e}"))?
            .next()
            .ok_or_else(|| format!("{base}: no address"))?;
        Ok(Target {
            addr,
            host: host.to_string(),
            timeout,
        })
    }
}

/// A `Retry-After` in whole seconds (the form the server sends); an HTTP date or anything
/// else is `None`, and the policy's own backoff applies.
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for a u64 is still "a long time": the cap applies anyway.
    Some(Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX)))
}

/// A request written once and sent as often as it must be (a retry after a 503, or on a new
/// connection); the buffers are kept, so a request allocates nothing once they have grown.
pub struct RequestBuf {
    out: Vec<u8>,
    body: Vec<u8>,
}

impl RequestBuf {
    pub fn new() -> RequestBuf {
        RequestBuf {
            out: Vec::with_capacity(512),
            body: Vec::with_capacity(256),
        }
    }

    /// Writes the request: method, path, `Host`, the `TOKEN-ID` and `Idempotency-Key`
    /// headers if any, and a JSON body if any.
    pub fn prepare(
        &mut self,
        target: &Target,
        method: &str,
        path: std::fmt::Arguments<'_>,
        token: Option<i64>,
        key: Option<&str>,
        body: Option<std::fmt::Arguments<'_>>,
    ) {
        // Writing into a Vec cannot fail.
        self.out.clear();
        self.body.clear();
        let _ = write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            target.host
        );
        if let Some(token) = token {
            let _ = write!(self.out, "TOKEN-ID: {token}\r\n");
        }
        if let Some(key) = key {
            let _ = write!(self.out, "Idempotency-Key: {key}\r\n");
        }
        if let Some(body) = body {
            let _ = self.body.write_fmt(body);
            let _ = write!(
                self.out,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                self.body.len()
            );
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(&self.body);
    }

    /// Adds a header to the request [`RequestBuf::prepare`] wrote (before the blank line).
    pub fn add_header(&mut self, name: &str, value: &str) {
        let at = self.out.len() - self.body.len() - 2;
        let line = format!("{name}: {value}\r\n");
        self.out.splice(at..at, line.into_bytes());
    }
}

/// One keep-alive connection and the buffer its answers are read into.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where the last answer's body is in `buf`.
    body: std::ops::Range<usize>,
    /// Answered at least once: a failure before the first byte of the next answer may be the
    /// server closing an idle connection, and the request may be sent again on a new one.
    used: bool,
    /// The server said `Connection: close`, or the framing broke: do not reuse.
    dead: bool,
    /// The last answer's `Retry-After`, in whole seconds, if it had one.
    retry_after: Option<Duration>,
}

/// Why no response came.
#[derive(Debug)]
pub enum Failure {
    /// Nothing of an answer arrived on a connection that had answered before.
    Stale(io::Error),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Stale(e) => write!(f, "connection closed before the answer: {e}"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn, String> {
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", target.addr))?;
        // Requests are one write each; Nagle would hold the next one behind a delayed ACK.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 << 10),
            body: 0..0,
            used: false,
            dead: false,
            retry_after: None,
        })
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The last answer's `Retry-After` (whole seconds only).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// Sends `request` and reads the whole answer, within the target's timeout; returns its
    /// status (the body is [`Conn::body`]).
    pub async fn send(&mut self, target: &Target, request: &RequestBuf) -> Result<u16, Failure> {
        match tokio::time::timeout(target.timeout, self.exchange(&request.out)).await {
            Ok(Ok((status, head, len))) => {
                self.body = head..head + len;
                Ok(status)
            }
            Ok(Err(failure)) => {
                self.dead = true;
                Err(failure)
            }
            Err(_) => {
                self.dead = true;
                Err(Failure::Other(format!(
                    "no answer within {:?}",
                    target.timeout
                )))
            }
        }
    }

    /// Writes the request and reads one answer: (status, head length, body length).
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, usize, usize), Failure> {
        let used = self.used;
        let fail = |e: io::Error, got: usize| {
            if used && got == 0 {
                Failure::Stale(e)
            } else {
                Failure::Other(format!("transport: {e}"))
            }
        };
        if let Err(e) = self.stream.write_all(request).await {
            return Err(fail(e, 0));
        }
        self.buf.clear();
        self.retry_after = None;
        let (status, head, len) = loop {
            if let Some(parsed) = self.parse_head()? {
                break parsed;
            }
            self.read_more()
                .await
                .map_err(|e| fail(e, self.buf.len()))?;
        };
        let end = head + len;
        if end > MAX_RESPONSE {
            return Err(Failure::Other(format!("a {len}-byte body is too large")));
        }
        while self.buf.len() < end {
            self.read_more()
                .await
                .map_err(|e| Failure::Other(format!("transport: {e}")))?;
        }
        if self.buf.len() > end {
            // One request at a time: nothing may follow the answer.
            self.dead = true;
        }
        self.used = true;
        Ok((status, head, len))
    }

    /// The status, head length and body length once the whole head is in.
    fn parse_head(&mut self) -> Result<Option<(u16, usize, usize)>, Failure> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&self.buf) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_RESPONSE => return Ok(None),
            Ok(httparse::Status::Partial) => {
                return Err(Failure::Other("an endless response head".into()))
            }
            Err(e) => return Err(Failure::Other(format!("a malformed response: {e}"))),
        };
        let status = response.code.unwrap_or(0);
        let mut len = None;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                len = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(Failure::Other(
                    "a chunked response (this client reads sized bodies only)".into(),
                ));
            } else if header.name.eq_ignore_ascii_case("retry-after") {
                self.retry_after = parse_retry_after(header.value);
            } else if header.name.eq_ignore_ascii_case("connection")
                && header.value.eq_ignore_ascii_case(b"close")
            {
                self.dead = true;
            }
        }
        match len {
            Some(len) => Ok(Some((status, head, len))),
            None => Err(Failure::Other(format!(
                "a {status} response without a Content-Length"
            ))),
        }
    }

    async fn read_more(&mut self) -> io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 8 << 10 {
            self.buf.reserve(self.buf.capacity().max(16 << 10));
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }
}

/// Idle connections, shared by the virtual users: a user takes one for its whole drop and
/// gives it back, so connections number the users in flight.
pub struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one.
    pub async fn take(&self, target: &Target) -> Result<Conn, String> {
        // A poisoned lock only means another user panicked mid-push; the Vec is still whole.
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => Conn::open(target).await,
        }
    }

    pub fn give(&self, conn: Conn) {
        if !conn.dead {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on one connection with the next of `answers`,
    /// written in pieces of `piece` bytes, then closes.
    async fn serve(answers: Vec<&'static [u8]>, piece: usize) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            for answer in answers {
                // Read one request head (these tests send no bodies).
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if socket.read(&mut byte).await.expect("read") == 0 {
                        return;
                    }
                    request.push(byte[0]);
                }
                for chunk in answer.chunks(piece) {
                    socket.write_all(chunk).await.expect("write");
                    socket.flush().await.expect("flush");
                    tokio::task::yield_now().await;
                }
            }
        });
        Target::resolve(&format!("http://{addr}"), Duration::from_secs(5))
            .await
            .expect("a local address resolves")
    }

    fn get(target: &Target) -> RequestBuf {
        let mut request = RequestBuf::new();
        request.prepare(target, "GET", format_args!("/x"), Some(7), None, None);
        request
    }

    #[tokio::test]
    async fn an_answer_split_across_reads_is_framed_by_its_content_length() {
        let target = serve(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world"],
            3,
        )
        .await;
        let mut conn = Conn::open(&target).await.expect("connect");
        let status = conn.send(&target, &get(&target)).await.expect("an answer");
        assert_eq!(status, 200);
        assert_eq!(conn.body(), b"hello world");
        assert!(!conn.is_dead());
    }

    #[tokio::test]
    async fn one_connection_carries_requests_until_the_server_says_close() {
        let target = serve(
            vec![
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbad",
            ],
            1024,
        )
        .await;
        let mut conn = Conn::open(&target).await.expect("connect");
        let request = get(&target);
        assert_eq!(conn.send(&target, &request).await.expect("first"), 201);
        assert_eq!(conn.body(), b"{}");
        assert!(!conn.is_dead());
        assert_eq!(conn.send(&target, &request).await.expect("second"), 400);
        assert_eq!(conn.body(), b"bad");
        assert!(conn.is_dead(), "Connection: close");
    }

    #[tokio::test]
    async fn an_idle_connection_closed_by_the_server_is_stale_and_may_be_retried() {
        let target = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], 1024).await;
        let mut conn = Conn::open(&target).await.expect("connect");
        let request = get(&target);
        assert_eq!(conn.send(&target, &request).await.expect("first"), 200);
        match conn.send(&target, &request).await {
            Err(Failure::Stale(_)) => {}
            other => panic!("expected a stale connection, got {other:?}"),
        }
        assert!(conn.is_dead());
    }

    #[tokio::test]
    async fn a_retry_after_is_read_from_its_answer_and_from_no_other() {
        let target = serve(
            vec![
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ],
            1024,
        )
        .await;
        let mut conn = Conn::open(&target).await.expect("connect");
        let request = get(&target);
        assert_eq!(conn.send(&target, &request).await.expect("first"), 503);
        assert_eq!(conn.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(conn.send(&target, &request).await.expect("second"), 200);
        assert_eq!(conn.retry_after(), None);
    }

    #[tokio::test]
    async fn unsized_and_chunked_answers_are_errors_not_guesses() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\n\r\nno length"[..],
            &b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"[..],
        ] {
            let target = serve(vec![answer], 1024).await;
            let mut conn = Conn::open(&target).await.expect("connect");
            match conn.send(&target, &get(&target)).await {
                Err(Failure::Other(_)) => assert!(conn.is_dead()),
                other => panic!(
                    "{:?} was accepted: {other:?}",
                    String::from_utf8_lossy(answer)
                ),
            }
        }
    }

    #[tokio::test]
    async fn a_request_carries_its_token_and_a_sized_json_body() {
        let target = Target::resolve("http://127.0.0.1:9", Duration::from_secs(1))
            .await
            .expect("a literal address resolves");
        let mut request = RequestBuf::new();
        request.prepare(
            &target,
            "POST",
            format_args!("/v1/payments/users/{}", 5),
            Some(42),
            None,
            Some(format_args!(r#"{{"reservationId":{}}}"#, 9)),
        );
        assert_eq!(
            String::from_utf8(request.out.clone()).expect("ASCII"),
            "POST /v1/payments/users/5 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nTOKEN-ID: 42\r\n\
             Content-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"reservationId\":9}"
        );
        request.prepare(
            &target,
            "POST",
            format_args!("/v1/payments/users/{}", 5),
            Some(42),
            Some("drop-1-5-2"),
            Some(format_args!(r#"{{"reservationId":{}}}"#, 9)),
        );
        assert!(String::from_utf8(request.out.clone())
            .expect("ASCII")
            .contains("TOKEN-ID: 42\r\nIdempotency-Key: drop-1-5-2\r\nContent-Type"));
        request.add_header("X-Queue-Pow", "c.1");
        assert!(String::from_utf8(request.out.clone())
            .expect("ASCII")
            .ends_with("Content-Length: 19\r\nX-Queue-Pow: c.1\r\n\r\n{\"reservationId\":9}"));
        assert!(
            Target::resolve("https://example.com", Duration::from_secs(1))
                .await
                .is_err()
        );
    }

    #[test]
    fn retry_after_is_read_in_whole_seconds_only() {
        assert_eq!(parse_retry_after(b"1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(b" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after(b"99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        for odd in [
            &b""[..],
            b"-1",
            b"1.5",
            b"Wed, 21 Oct 2015 07:28:00 GMT",
            b"\xff",
        ] {
            assert_eq!(parse_retry_after(odd), None, "{odd:?}");
        }
    }
}
