//! An HTTP proxy that fails a share of the requests it forwards, for fault-injection tests: in
//! front of the S3 server it answers some requests with 500 or 503, drops the connection on
//! others (a reset, as the client sees it), and delays some before forwarding them. Decisions
//! come from a seeded generator, one per request, so the mix is the same in every run.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the proxy did, so tests can check that faults really happened.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub forwarded: AtomicU64,
    /// Parts of multipart uploads (`PUT …?partNumber=`) forwarded.
    pub parts: AtomicU64,
    pub errors: AtomicU64,
    pub resets: AtomicU64,
    pub delayed: AtomicU64,
}

pub struct FaultyProxy {
    port: u16,
    counts: Arc<FaultCounts>,
    /// Dropping it stops the proxy's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Body = BoxBody<Bytes, hyper::Error>;

impl FaultyProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`), failing `fail_share` of requests
    /// (half answered 500/503, a quarter reset, a quarter delayed by 200 ms then forwarded).
    /// Runs on a thread of its own, so it serves async and blocking tests alike.
    pub fn start(upstream: &str, fail_share: f64, seed: u64) -> Result<FaultyProxy> {
        FaultyProxy::start_with(upstream, fail_share, seed, None)
    }

    /// A proxy that fails nothing and delays every request by `delay` (a slow link, so a test
    /// can act while an upload is under way).
    pub fn slow(upstream: &str, delay: Duration) -> Result<FaultyProxy> {
        FaultyProxy::start_with(upstream, 0.0, 0, Some(delay))
    }

    fn start_with(
        upstream: &str,
        fail_share: f64,
        seed: u64,
        always_delay: Option<Duration>,
    ) -> Result<FaultyProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(FaultCounts::default());
        let rng = Arc::new(Mutex::new(seed));
        let upstream: hyper::Uri = upstream.parse()?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let c = counts.clone();
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let client: Client<_, Incoming> =
                    Client::builder(TokioExecutor::new()).build_http();
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                        _ = &mut stop_rx => return,
                    };
                    let (counts, rng, client, upstream) =
                        (c.clone(), rng.clone(), client.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (counts, client, upstream) =
                                (counts.clone(), client.clone(), upstream.clone());
                            let roll = next(&rng);
                            async move {
                                if let Some(d) = always_delay {
                                    tokio::time::sleep(d).await;
                                }
                                handle(req, roll, fail_share, &counts, &client, &upstream).await
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Ok(FaultyProxy {
            port,
            counts,
            _stop: stop_tx,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }
}

/// Uniform in [0, 1) from a shared SplitMix64 state.
fn next(state: &Mutex<u64>) -> f64 {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A failure to report to hyper: it then drops the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for Reset {}

async fn handle(
    req: Request<Incoming>,
    roll: f64,
    fail_share: f64,
    counts: &FaultCounts,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    upstream: &hyper::Uri,
) -> Result<Response<Body>, Reset> {
    let empty = || {
        Empty::<Bytes>::new()
            .map_err(|e: Infallible| match e {})
            .boxed()
    };
    if roll < fail_share * 0.5 {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        let status = if roll < fail_share * 0.25 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut resp = Response::new(empty());
        *resp.status_mut() = status;
        return Ok(resp);
    }
    if roll < fail_share * 0.75 {
        counts.resets.fetch_add(1, Ordering::Relaxed);
        return Err(Reset);
    }
    if roll < fail_share {
        counts.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let is_part = req.method() == hyper::Method::PUT
        && req.uri().query().is_some_and(|q| q.contains("partNumber="));
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    parts.uri = format!(
        "http://{}{path}",
        upstream.authority().map_or("127.0.0.1", |a| a.as_str())
    )
    .parse()
    .map_err(|_| Reset)?;
    // The Host header stays the proxy's: S3 signatures cover it.
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            counts.forwarded.fetch_add(1, Ordering::Relaxed);
            if is_part {
                counts.parts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp.map(|b| b.boxed()))
        }
        Err(_) => Err(Reset),
    }
}
