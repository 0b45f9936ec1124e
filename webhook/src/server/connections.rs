//! Accepting and serving connections, with bounds on what a slow or silent client may hold: a
//! cap on open connections, a TLS handshake deadline, and a watchdog per connection that closes
//! one whose request head does not arrive in time or that stays idle too long.
//!
//! axum-server, used before, had a handshake timeout but no other: hyper's header timeout needs
//! a timer it was not given, and nothing closed an idle connection, so 3,000 held connections
//! took the webhook from 14 to 94 MB. hyper's own `header_read_timeout` was not enough either:
//! its clock also runs while a keep-alive connection waits for its next request, so it cannot
//! tell a half-sent head (close in seconds) from an idle API server connection (keep it longer
//! than the client's own 90 s idle timeout, so the server never closes one the client is about to
//! reuse). The watchdog below tells them apart, for HTTP/1.1 and HTTP/2 alike.

use super::ServerLimits;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// What one connection buffers before the handler reads it: hyper's defaults are ~400 KiB for
/// HTTP/1.1 and a 1 MiB window per HTTP/2 connection, which the connection cap would multiply.
/// Request bodies count against the body budget as the handler reads them. (hyper wants at least
/// 8 KiB here; HTTP/2 at most 2^31 - 1.)
const CONNECTION_BUFFER: usize = 64 << 10;

/// Accepts connections until `stop` turns true, each served by a task of its own while it holds
/// one of `limits.max_connections` permits; then waits for the open ones to end, each within
/// `grace`. Beyond the cap, new connections wait in the kernel's accept queue (bounded by
/// `somaxconn`), where they cost the webhook nothing.
pub(super) async fn serve(
    listener: TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        let tcp = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors, or a connection reset before it was accepted: the
                // next one may well succeed.
                Err(err) => {
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            tcp,
            TlsAcceptor::from(tls.get_inner()),
            router.clone(),
            limits.clone(),
            stop.clone(),
            grace,
            permit,
        ));
    }
    tracing::info!("stopping: no new connections, finishing in-flight reviews");
    // The kernel refuses new connections once the listener is gone.
    drop(listener);
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(everyone))
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period: closed"
        );
    }
}

/// Resolves once the server stops (the guard that `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One connection, from the TLS handshake to its end. The permit is returned when it ends.
async fn connection(
    tcp: TcpStream,
    tls: TlsAcceptor,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    _permit: OwnedSemaphorePermit,
) {
    // TCP_NODELAY, as Go's net/http sets it on the API server's side: a review's response must
    // not wait for the ACK of the previous segment (Nagle) on a keep-alive connection.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(%err, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(limits.tls_handshake_timeout, tls.accept(tcp));
    let stream = tokio::select! {
        biased;
        // No request can be in flight yet: nothing to wait for.
        _ = stopped(&mut stop) => return,
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(timeout = ?limits.tls_handshake_timeout, "TLS handshake timed out: closed");
                return;
            }
        },
    };
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Arc::new(Activity::new(!http2));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let app = TowerToHyperService::new(router);
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let in_flight = InFlight::begin(activity.clone());
            let response = hyper::service::Service::call(&app, request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(CONNECTION_BUFFER);
    builder
        .http2()
        .initial_connection_window_size(CONNECTION_BUFFER as u32)
        .initial_stream_window_size(CONNECTION_BUFFER as u32);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    // Once the server stops: the end of the grace period.
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        let check = activity.next_check(&limits);
        let check = stopping.map_or(check, |end| check.min(end));
        tokio::select! {
            biased;
            result = served.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%err, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut stop), if stopping.is_none() => {
                // Idle HTTP/1.1 connections close at once, HTTP/2 ones get a GOAWAY; requests
                // in flight finish, while the grace period lasts and the watchdog allows.
                served.as_mut().graceful_shutdown();
                stopping = Some(tokio::time::Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(check) => {
                if stopping.is_some_and(|end| tokio::time::Instant::now() >= end) {
                    tracing::debug!(?grace, "closing a connection still busy after the grace period");
                    return;
                }
                if let Some(reason) = activity.expired(&limits) {
                    tracing::debug!(reason, "closing a connection");
                    return;
                }
            }
        }
    }
}

/// What the watchdog knows of a connection, shared by its reads and its requests (HTTP/2
/// requests run on tasks of their own). Times are milliseconds since the connection started.
struct Activity {
    started: Instant,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Since when bytes of a request head have been waiting for the head's end (plus one: 0
    /// means none are), while no request is in flight.
    head_since: AtomicU64,
    /// When the last request was answered (or the connection started).
    idle_since: AtomicU64,
    /// Whether bytes read while idle start a request head: true for HTTP/1.1. HTTP/2 clients
    /// send frames of their own (window updates, pings) between requests, so there only
    /// the first request is held to the head deadline.
    reads_start_heads: bool,
}

impl Activity {
    fn new(reads_start_heads: bool) -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // The first request is expected right away, as Go's ReadHeaderTimeout expects it.
            head_since: AtomicU64::new(1),
            idle_since: AtomicU64::new(0),
            reads_start_heads,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: u64) -> tokio::time::Instant {
        (self.started + Duration::from_millis(millis)).into()
    }

    /// Bytes arrived.
    fn read(&self) {
        if self.reads_start_heads && self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now() + 1;
            let _ = self
                .head_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ServerLimits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The handler bounds the body's arrival, and the API server its own wait.
            return None;
        }
        let now = self.now();
        let head_since = self.head_since.load(Ordering::Acquire);
        let elapsed = |since: u64| Duration::from_millis(now.saturating_sub(since));
        if head_since > 0 && elapsed(head_since - 1) >= limits.header_read_timeout {
            return Some("no complete request head within the header read timeout");
        }
        if elapsed(self.idle_since.load(Ordering::Acquire)) >= limits.idle_timeout {
            return Some("idle for the idle timeout");
        }
        None
    }

    /// When to look again: the next deadline, or half the head deadline from now when idle, so
    /// a head that starts meanwhile is noticed within 1.5 times its deadline.
    fn next_check(&self, limits: &ServerLimits) -> tokio::time::Instant {
        let soon = tokio::time::Instant::now() + limits.header_read_timeout / 2;
        let head_since = self.head_since.load(Ordering::Acquire);
        let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
            soon
        } else if head_since > 0 {
            self.at(head_since - 1) + limits.header_read_timeout
        } else {
            self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout
        };
        deadline.min(soon)
    }
}

/// A request in flight on a connection, from its head's end to its response (or to the
/// client's going away).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(0, Ordering::Release);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that tells the watchdog when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
