//! The HTTP listener: hyper serving the API, guarded against clients that hold
//! connections without using them.
//!
//! hyper alone waits forever for a request head, keeps idle keep-alive connections
//! open forever, accepts until file descriptors run out, and answers its own errors
//! (400, 414, 431) with empty bodies. Measured before this module: 1,000 silent
//! connections were all still open after 45 s; at 20,000 `/healthz` died.
//!
//! Here every connection's bytes pass through [`Guarded`], which knows whether the
//! connection waits for a request head (timers and size caps apply) or serves a
//! request (nothing applies: the handler and body limits are the API's business).
//! A response hyper writes on its own, before any request reached the API, is
//! replaced by the API's JSON error shape.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

/// What the listener allows a client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must be complete this long after the connection opens, or after
    /// its first byte on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// The largest request head, request line included.
    pub max_header_bytes: usize,
}

/// Header lines allowed in one request head (hyper's own default).
const MAX_HEADERS: usize = 100;

/// How long connections get to finish their request once connectord stops.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Serves `app` until `stop` turns true, then lets requests in progress finish
/// (bounded) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // A permit before accepting: past the limit, clients wait in the kernel's
        // queue and cost this process nothing.
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: back off rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            serve_connection(stream, app, limits, stop).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_BOUND, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "stopping: closing connections still open"
        );
        connections.abort_all();
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let phase = Arc::new(PhaseCell::new(Phase::awaiting(Instant::now(), true)));
    let io = hyper_util::rt::TokioIo::new(Guarded::new(stream, Arc::clone(&phase), limits));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        phase.set(Phase::Serving);
        let mut app = app.clone();
        let phase = Arc::clone(&phase);
        async move {
            let response = app.call(request.map(Body::new)).await;
            response.map(|response| {
                // A response that closes the connection (a body refused unread) is
                // its last: what the client still sends is the rest of that body,
                // not a request head to judge.
                let closes = response
                    .headers()
                    .get(axum::http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                response.map(|body| {
                    Body::new(EndsRequest {
                        body,
                        phase: (!closes).then_some(phase),
                    })
                })
            })
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // Our own cap (MAX_HEADERS) answers first, with the JSON error shape.
        .max_headers(MAX_HEADERS * 4)
        .max_buf_size(limits.max_header_bytes.max(8192) * 2)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// A connection's phase, shared by its stream, its service and its response body.
#[derive(Debug)]
struct PhaseCell {
    inner: Mutex<(Phase, Option<Waker>)>,
}

impl PhaseCell {
    fn new(phase: Phase) -> Self {
        PhaseCell {
            inner: Mutex::new((phase, None)),
        }
    }

    fn get(&self) -> Phase {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Changes the phase. Entering `Awaiting` wakes the reader: it may have gone to
    /// sleep on the socket while the response was still out, with no timer armed.
    fn set(&self, to: Phase) {
        let waker = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.0 = to;
            if matches!(to, Phase::Awaiting(_)) {
                inner.1.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Remembers who reads the stream, for [`PhaseCell::set`] to wake.
    fn park(&self, waker: &Waker) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.1.as_ref().is_some_and(|w| w.will_wake(waker)) {
            inner.1 = Some(waker.clone());
        }
    }
}

/// Where a connection is in its request/response cycle.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Awaiting(Head),
    /// The head is complete; hyper has not called the API yet.
    HeadRead,
    /// The API has the request; its response has not been sent yet.
    Serving,
}

impl Phase {
    fn awaiting(since: Instant, fresh: bool) -> Self {
        Phase::Awaiting(Head {
            since,
            fresh,
            first_byte: None,
            bytes: 0,
            lines: 0,
            after_newline: Blank::No,
            flushed: fresh,
        })
    }
}

/// What the bytes of a head in progress have shown so far.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The connection opened, or the previous response ended.
    since: Instant,
    /// No request yet on this connection: the head timer runs from `since`.
    fresh: bool,
    first_byte: Option<Instant>,
    bytes: usize,
    lines: usize,
    after_newline: Blank,
    /// The previous response is flushed out. Until then hyper's writes are the end of
    /// that response, not an answer of its own.
    flushed: bool,
}

/// Progress towards the empty line that ends a head (`\n\n` or `\n\r\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blank {
    No,
    Newline,
    NewlineCr,
}

/// What to do with a head that broke a limit.
enum Verdict {
    Fine,
    Complete,
    Reject(StatusCode, String),
}

impl Head {
    /// Scans newly read bytes. Bytes after the end of the head (a body, a pipelined
    /// request) are not looked at.
    fn scan(&mut self, bytes: &[u8], limits: &Limits, now: Instant) -> Verdict {
        if !bytes.is_empty() && self.first_byte.is_none() {
            self.first_byte = Some(now);
        }
        for &b in bytes {
            self.bytes += 1;
            if self.bytes > limits.max_header_bytes {
                return if self.lines == 0 {
                    Verdict::Reject(
                        StatusCode::URI_TOO_LONG,
                        format!(
                            "the request line is longer than {} bytes (server.max_header_bytes)",
                            limits.max_header_bytes
                        ),
                    )
                } else {
                    Verdict::Reject(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        format!(
                            "the request head is larger than {} bytes (server.max_header_bytes)",
                            limits.max_header_bytes
                        ),
                    )
                };
            }
            self.after_newline = match (b, self.after_newline) {
                (b'\n', Blank::Newline | Blank::NewlineCr) => return Verdict::Complete,
                (b'\n', Blank::No) => {
                    self.lines += 1;
                    if self.lines > MAX_HEADERS + 1 {
                        return Verdict::Reject(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            format!("the request has more than {MAX_HEADERS} header lines"),
                        );
                    }
                    Blank::Newline
                }
                (b'\r', Blank::Newline) => Blank::NewlineCr,
                _ => Blank::No,
            };
        }
        Verdict::Fine
    }

    /// When this head runs out of time, and what the client is told then (`None`:
    /// an idle connection, closed without a word).
    fn deadline(&self, limits: &Limits) -> (Instant, Option<(StatusCode, String)>) {
        let timed_out = || {
            Some((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request head did not arrive within {} ms (server.header_read_timeout_ms)",
                    limits.header_read_timeout.as_millis()
                ),
            ))
        };
        match (self.fresh, self.first_byte) {
            (_, Some(first)) => (first + limits.header_read_timeout, timed_out()),
            (true, None) => (self.since + limits.header_read_timeout, timed_out()),
            (false, None) => (self.since + limits.idle_timeout, None),
        }
    }
}

/// A response in the API's error shape, closing the connection.
fn error_response(status: StatusCode, message: &str) -> Vec<u8> {
    let code = match status {
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_too_large",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "invalid_request",
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// hyper's own response to a head it could not parse, as the API's error shape.
fn replace_automatic(written: &[u8]) -> Vec<u8> {
    let status = written
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let message = match status {
        StatusCode::URI_TOO_LONG => "the request URI is too long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "the request head is too large",
        _ => "the request head is not valid HTTP/1.1",
    };
    error_response(status, message)
}

/// A connection's stream, watching the request heads that pass through it.
struct Guarded {
    stream: TcpStream,
    phase: Arc<PhaseCell>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    /// An error response being written, and how much of it is out; then EOF.
    rejection: Option<(Vec<u8>, usize)>,
}

impl Guarded {
    fn new(stream: TcpStream, phase: Arc<PhaseCell>, limits: Limits) -> Self {
        Guarded {
            stream,
            phase,
            limits,
            timer: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
            rejection: None,
        }
    }

    fn reject(&mut self, response: Vec<u8>) {
        if self.rejection.is_none() {
            self.rejection = Some((response, 0));
        }
    }

    /// Writes the pending rejection out; ready once all of it is written.
    fn poll_rejection(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, written)) = &mut self.rejection else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn phase(&self) -> Phase {
        self.phase.get()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rejection.is_some() {
            // After the error response the client gets EOF; hyper ends the connection.
            ready!(this.poll_rejection(cx))?;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        this.phase.park(cx.waker());
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Phase::Awaiting(mut head) = this.phase() else {
            return read;
        };
        let now = Instant::now();
        if let Poll::Ready(Ok(())) = read {
            let fresh = &buf.filled()[before..];
            match head.scan(fresh, &this.limits, now) {
                Verdict::Fine => this.phase.set(Phase::Awaiting(head)),
                Verdict::Complete => this.phase.set(Phase::HeadRead),
                Verdict::Reject(status, message) => {
                    buf.set_filled(before);
                    this.reject(error_response(status, &message));
                    ready!(this.poll_rejection(cx))?;
                    return Poll::Ready(Ok(()));
                }
            }
            return read;
        }
        let (deadline, told) = head.deadline(&this.limits);
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            match told {
                Some((status, message)) => {
                    this.reject(error_response(status, &message));
                    ready!(this.poll_rejection(cx))?;
                }
                None => tracing::debug!("closing an idle keep-alive connection"),
            }
            // EOF: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let automatic = match this.phase() {
            Phase::Awaiting(head) => head.flushed,
            Phase::HeadRead => true,
            Phase::Serving => false,
        };
        if this.rejection.is_none() && automatic {
            // No request reached the API, so hyper is answering a head it refused.
            this.reject(replace_automatic(buf));
        }
        if this.rejection.is_some() {
            ready!(this.poll_rejection(cx))?;
            // hyper's own bytes are dropped: ours went instead.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rejection(cx))?;
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        if let Phase::Awaiting(mut head) = this.phase()
            && !head.flushed
        {
            head.flushed = true;
            this.phase.set(Phase::Awaiting(head));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rejection(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// A response body that, once sent (or dropped), puts its connection back to waiting
/// for the next request head, with the idle timer running.
struct EndsRequest {
    body: Body,
    phase: Option<Arc<PhaseCell>>,
}

impl Drop for EndsRequest {
    fn drop(&mut self) {
        if let Some(phase) = self.phase.take() {
            phase.set(Phase::awaiting(Instant::now(), false));
        }
    }
}

impl http_body::Body for EndsRequest {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
            max_header_bytes: 64,
        }
    }

    fn head() -> Head {
        let Phase::Awaiting(head) = Phase::awaiting(Instant::now(), true) else {
            unreachable!()
        };
        head
    }

    #[test]
    fn a_head_ends_at_the_first_empty_line_across_reads() {
        let now = Instant::now();
        let mut h = head();
        assert!(matches!(
            h.scan(b"GET / HTTP/1.1\r\nHost: x\r", &limits(), now),
            Verdict::Fine
        ));
        assert!(matches!(h.scan(b"\n\r", &limits(), now), Verdict::Fine));
        assert!(matches!(
            h.scan(b"\nbody", &limits(), now),
            Verdict::Complete
        ));
        let mut bare = head();
        assert!(matches!(
            bare.scan(b"GET / HTTP/1.0\n\n", &limits(), now),
            Verdict::Complete
        ));
    }

    #[test]
    fn a_long_request_line_is_414_and_long_headers_are_431() {
        let now = Instant::now();
        let mut line = head();
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert!(matches!(
            line.scan(long.as_bytes(), &limits(), now),
            Verdict::Reject(StatusCode::URI_TOO_LONG, _)
        ));
        let mut headers = head();
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "b".repeat(100));
        assert!(matches!(
            headers.scan(big.as_bytes(), &limits(), now),
            Verdict::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, _)
        ));
    }

    #[test]
    fn deadlines_follow_the_first_byte_and_idle_connections_close_silently() {
        let l = limits();
        let start = Instant::now();
        let Phase::Awaiting(idle) = Phase::awaiting(start, false) else {
            unreachable!()
        };
        assert_eq!(idle.deadline(&l).0, start + l.idle_timeout);
        assert!(idle.deadline(&l).1.is_none());
        let mut started = idle;
        let later = start + Duration::from_secs(30);
        let _ = started.scan(b"GE", &l, later);
        let (deadline, told) = started.deadline(&l);
        assert_eq!(deadline, later + l.header_read_timeout);
        assert_eq!(told.map(|t| t.0), Some(StatusCode::REQUEST_TIMEOUT));
        let fresh = head();
        assert_eq!(fresh.deadline(&l).0, fresh.since + l.header_read_timeout);
    }

    #[test]
    fn automatic_responses_become_json() {
        let replaced = replace_automatic(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n");
        let text = String::from_utf8(replaced).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
    }
}
