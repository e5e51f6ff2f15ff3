//! Balancing and failover across control-plane replicas.
//!
//! tonic's own balanced channel keeps handing calls to a replica it cannot
//! connect to (the call fails even though another replica is up), so the data
//! plane picks replicas itself: round robin over those not marked down; a
//! replica that fails to answer is marked down with a growing back-off; a call
//! whose connection could not even be made goes to the next replica.
//!
//! Only calls that never reached a control plane are sent again: a call that
//! was sent and then lost (the replica died mid-call) fails as unavailable,
//! because sending it twice could run a one-time step (a code exchange) twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt as _};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// First wait before a failed replica is tried again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The control-plane replicas as one gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct Failover {
    inner: Arc<Inner>,
}

struct Inner {
    replicas: Vec<Replica>,
    next: AtomicUsize,
}

struct Replica {
    url: String,
    channel: Channel,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

impl Failover {
    /// Replicas by URL, each with its lazily connecting channel.
    pub(crate) fn new(replicas: Vec<(String, Channel)>) -> Self {
        assert!(!replicas.is_empty(), "at least one control-plane replica");
        Self {
            inner: Arc::new(Inner {
                replicas: replicas
                    .into_iter()
                    .map(|(url, channel)| Replica {
                        url,
                        channel,
                        health: Mutex::default(),
                    })
                    .collect(),
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// The order in which one call tries the replicas: those not marked down,
    /// round robin; then those marked down, the soonest back first (a call is
    /// never refused without trying, even when every replica looks down).
    fn order(&self, now: Instant) -> Vec<usize> {
        let replicas = &self.inner.replicas;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % replicas.len();
        let mut up = Vec::with_capacity(replicas.len());
        let mut down = Vec::new();
        for k in 0..replicas.len() {
            let i = (start + k) % replicas.len();
            match replicas[i].health().down_until {
                Some(until) if until > now => down.push((until, i)),
                _ => up.push(i),
            }
        }
        down.sort();
        up.extend(down.into_iter().map(|(_, i)| i));
        up
    }

    /// The URLs of the replicas currently marked down.
    #[cfg(test)]
    fn down(&self) -> Vec<String> {
        let now = Instant::now();
        self.inner
            .replicas
            .iter()
            .filter(|r| r.health().down_until.is_some_and(|until| until > now))
            .map(|r| r.url.clone())
            .collect()
    }
}

impl Replica {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.failures > 0 {
            tracing::info!(target: "gatehouse::cp_client", url = %self.url, "control-plane replica answers again");
        }
        *health = Health::default();
    }

    fn failed(&self, error: &BoxError) {
        let mut health = self.health();
        health.failures = health.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << health.failures.saturating_sub(1).min(6))
            .min(MAX_BACKOFF);
        health.down_until = Some(Instant::now() + backoff);
        tracing::warn!(target: "gatehouse::cp_client", url = %self.url, error = %error, retry_in_ms = backoff.as_millis() as u64, "control-plane replica unreachable");
    }

    async fn send(&self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        match self.channel.clone().oneshot(request).await {
            Ok(response) => {
                self.succeeded();
                Ok(response)
            }
            Err(error) => {
                let error: BoxError = error.into();
                self.failed(&error);
                Err(error)
            }
        }
    }
}

/// Whether `error` says the connection could not be made, so the request
/// never reached the replica and may go to another one.
fn never_sent(error: &BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            ) {
                return true;
            }
        }
        if err.to_string().contains("tcp connect error") {
            return true;
        }
        source = err.source();
    }
    false
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each replica's channel is made ready in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let order = this.order(Instant::now());
            if let [only] = order.as_slice() {
                return this.inner.replicas[*only].send(request).await;
            }
            // A request may have to be sent again: keep its bytes (unary and
            // server-streaming requests are one small message).
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let mut last_error = None;
            for i in order {
                let attempt = http::Request::from_parts(parts.clone(), Body::new(Full::new(bytes.clone())));
                match this.inner.replicas[i].send(attempt).await {
                    Ok(response) => return Ok(response),
                    Err(error) if never_sent(&error) => last_error = Some(error),
                    Err(error) => return Err(error),
                }
            }
            Err(last_error.expect("at least one replica was tried"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy(url: &str) -> (String, Channel) {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        (url.to_owned(), channel)
    }

    #[tokio::test]
    async fn replicas_take_turns_and_a_failed_one_goes_last() {
        let failover = Failover::new(vec![lazy("http://127.0.0.1:1"), lazy("http://127.0.0.1:2")]);
        let now = Instant::now();
        let first = failover.order(now);
        let second = failover.order(now);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], second[0], "round robin");

        let error: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        failover.inner.replicas[0].failed(&error);
        for _ in 0..4 {
            assert_eq!(
                failover.order(Instant::now()),
                vec![1, 0],
                "a replica marked down is tried last"
            );
        }
        assert_eq!(failover.down(), vec!["http://127.0.0.1:1".to_owned()]);
        failover.inner.replicas[0].succeeded();
        assert!(failover.down().is_empty());
    }

    #[test]
    fn only_connection_failures_are_sent_again() {
        let refused: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(never_sent(&refused));
        let reset: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!never_sent(&reset), "a reset may come after the request was sent");
    }

    #[tokio::test]
    async fn the_back_off_grows_and_is_capped() {
        let failover = Failover::new(vec![lazy("http://127.0.0.1:1")]);
        let replica = &failover.inner.replicas[0];
        let error: BoxError = "down".into();
        let mut waits = Vec::new();
        for _ in 0..12 {
            let before = Instant::now();
            replica.failed(&error);
            waits.push(replica.health().down_until.unwrap() - before);
        }
        assert!(waits[1] > waits[0]);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF + Duration::from_millis(50)));
    }
}
