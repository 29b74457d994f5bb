//! The accept loop: connections bounded in number and in time.
//!
//! `axum::serve` accepts every connection it can and keeps it as long as
//! the client likes. Under a 1024-descriptor limit, 1,100 idle connections
//! used every descriptor: each `GET /` then timed out, and each failed
//! accept wrote a log line. Here:
//! - a connection takes a permit before it is accepted, so past the cap
//!   clients wait in the kernel's backlog instead of failing with EMFILE;
//! - hyper drops a client that does not send a whole head in time, and a
//!   connection with no request in flight is closed after `idle_timeout`;
//! - an accept error backs off, and is logged once per burst;
//! - on shutdown, idle connections close at once and requests in flight
//!   are finished; `serve` returns when every connection has ended.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Settings;

/// Descriptors kept back from the connection cap, besides the database
/// pool and the SMTP connections: the listener, log and template files,
/// outbox files, DNS lookups, the runtime's own.
const DESCRIPTOR_RESERVE: u64 = 64;

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ServerLimits {
    /// Raises the descriptor soft limit to the hard one, and fits the
    /// connection cap below it. Logs both.
    pub fn from_settings(settings: &Settings) -> Self {
        let descriptors = raise_descriptor_limit();
        let reserve = DESCRIPTOR_RESERVE
            + u64::from(settings.database.max_connections)
            + 2
            + settings.smtp.concurrency as u64;
        let fits = descriptors.map_or(usize::MAX, |limit| {
            usize::try_from(limit.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
        });
        let max_connections = settings.http.max_connections.min(fits);
        tracing::info!(
            descriptor_limit = descriptors,
            max_connections,
            configured = settings.http.max_connections,
            "connection cap"
        );
        Self {
            max_connections,
            header_read_timeout: settings.http.header_read_timeout,
            idle_timeout: settings.http.idle_timeout,
        }
    }
}

/// The soft limit after raising it as far as the hard limit allows.
fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the file-descriptor limit");
            rlimit::Resource::NOFILE
                .get()
                .ok()
                .map(|(soft, _hard)| soft)
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets the connections
/// finish what they are doing, and returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_errors = AcceptErrors::default();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    let pause = accept_errors.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        accept_errors.succeeded();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let guard = seen.begin();
        async move {
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            drop(guard);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    loop {
        let idle_check = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_check.into()), if !closing => {
                if activity.is_idle_for(limits.idle_timeout) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Requests in flight on a connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When to look again: a busy connection is looked at a full timeout
    /// from now, an idle one when its timeout runs out.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Instant::now() + idle;
        }
        *self.last.lock().expect("activity lock") + idle
    }

    fn is_idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && self.last.lock().expect("activity lock").elapsed() >= idle
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().expect("activity lock") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept failures (EMFILE above all) come in bursts: back off, doubling,
/// and log the first of a burst and how many there were once it ends.
#[derive(Default)]
struct AcceptErrors {
    in_a_row: u32,
}

impl AcceptErrors {
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.in_a_row == 0 {
            tracing::warn!(%error, "cannot accept connections; backing off");
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let exponent = self.in_a_row.min(5);
        Duration::from_millis(50) * 2u32.pow(exponent)
    }

    fn succeeded(&mut self) {
        if self.in_a_row > 0 {
            tracing::warn!(
                failures = self.in_a_row,
                "accepting connections again after failures"
            );
            self.in_a_row = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_reset() {
        let mut errors = AcceptErrors::default();
        let error = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..8).map(|_| errors.failed(&error)).collect();
        assert_eq!(pauses[0], Duration::from_millis(100));
        assert!(pauses.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(pauses[7], Duration::from_millis(1600));
        errors.succeeded();
        assert_eq!(errors.failed(&error), Duration::from_millis(100));
    }
}
