// SPDX-License-Identifier: MPL-2.0
//! What operators see: JSON log lines, and /metrics (Prometheus text),
//! /healthz and /readyz on a port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};

/// One JSON line on stdout: time, level, message, contact id and fields.
pub fn log(level: &str, contact: Option<&str>, msg: &str, fields: &[(&str, String)]) {
    let mut line = Map::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    line.insert("ts".into(), Value::from(now.as_millis() as u64));
    line.insert("level".into(), level.into());
    line.insert("msg".into(), msg.into());
    if let Some(c) = contact {
        line.insert("contact_id".into(), c.into());
    }
    for (k, v) in fields {
        line.insert((*k).into(), v.as_str().into());
    }
    println!("{}", Value::Object(line));
}

/// A Prometheus histogram with fixed buckets: its series stay the same
/// however many calls come and go.
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds; +Inf follows.
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ms: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }

    pub fn observe_ms(&self, ms: u64) {
        let seconds = ms as f64 / 1000.0;
        let i = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        *out += &format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".into(), |b| b.to_string());
            *out += &format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n");
        }
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        *out += &format!("{name}_sum {sum}\n{name}_count {cumulative}\n");
    }
}

/// How far behind live a fragment was recorded, in seconds.
const BEHIND_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
/// How long a recorded call's audio was, in seconds.
const LENGTH_BUCKETS: &[f64] = &[30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];

/// A running call's figures.
pub struct Call {
    pub bytes: AtomicU64,
    behind_ms: AtomicU64,
    behind_max_ms: AtomicU64,
    /// Every fragment's lag goes here too.
    behind: Arc<Histogram>,
    pub src: Mutex<Option<gst::glib::WeakRef<gst::Element>>>,
    /// Reconnects and throttles, kept when the source goes away.
    pub counts: Mutex<(u64, u64)>,
}

impl Call {
    /// A fragment was recorded `ms` behind live.
    pub fn behind(&self, ms: u64) {
        self.behind_ms.store(ms, Ordering::Relaxed);
        self.behind_max_ms.fetch_max(ms, Ordering::Relaxed);
        self.behind.observe_ms(ms);
    }
}

pub struct Metrics {
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub released: AtomicU64,
    pub receive_errors: AtomicU64,
    /// Receives that failed since the last one that worked.
    pub receives_failing: AtomicU64,
    /// Audio bytes, reconnects and throttles of calls that ended.
    ended: Mutex<(u64, u64, u64)>,
    calls: Mutex<BTreeMap<String, Arc<Call>>>,
    behind: Arc<Histogram>,
    /// Seconds of audio of each call recorded whole.
    lengths: Histogram,
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            released: AtomicU64::new(0),
            receive_errors: AtomicU64::new(0),
            receives_failing: AtomicU64::new(0),
            ended: Mutex::default(),
            calls: Mutex::default(),
            behind: Arc::new(Histogram::new(BEHIND_BUCKETS)),
            lengths: Histogram::new(LENGTH_BUCKETS),
            ready: AtomicBool::new(false),
        }
    }
}

/// Receives in a row that may fail before the worker says it is not ready.
const FAILING_RECEIVES: u64 = 3;

impl Metrics {
    /// What /readyz answers: not ready while draining, or while the queue
    /// cannot be read.
    fn readiness(&self) -> (StatusCode, String) {
        let failing = self.receives_failing.load(Ordering::Relaxed);
        if !self.ready.load(Ordering::Relaxed) {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        } else if failing >= FAILING_RECEIVES {
            let why = format!("the queue cannot be read: the last {failing} receives failed\n");
            (StatusCode::SERVICE_UNAVAILABLE, why)
        } else {
            (StatusCode::OK, "ready\n".into())
        }
    }
}

fn counters(call: &Call) -> (u64, u64) {
    let src = call.src.lock().unwrap().as_ref().and_then(|w| w.upgrade());
    src.map_or(*call.counts.lock().unwrap(), |s| source_stats(&s))
}

impl Metrics {
    pub fn start_call(&self, contact: &str) -> Arc<Call> {
        let call = Arc::new(Call {
            bytes: AtomicU64::new(0),
            behind_ms: AtomicU64::new(0),
            behind_max_ms: AtomicU64::new(0),
            behind: self.behind.clone(),
            src: Mutex::default(),
            counts: Mutex::default(),
        });
        self.calls
            .lock()
            .unwrap()
            .insert(contact.to_string(), call.clone());
        call
    }

    /// The call is over; returns the most it was behind live, in ms.
    pub fn end_call(&self, contact: &str) -> u64 {
        let Some(call) = self.calls.lock().unwrap().remove(contact) else {
            return 0;
        };
        let (reconnects, throttles) = counters(&call);
        let mut ended = self.ended.lock().unwrap();
        ended.0 += call.bytes.load(Ordering::Relaxed);
        ended.1 += reconnects;
        ended.2 += throttles;
        call.behind_max_ms.load(Ordering::Relaxed)
    }

    /// A call was recorded whole: `seconds` of audio.
    pub fn recorded(&self, seconds: f64) {
        self.lengths.observe_ms((seconds * 1000.0) as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let calls: Vec<(String, Arc<Call>)> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (mut bytes, mut reconnects, mut throttles) = *self.ended.lock().unwrap();
        let mut behind_max = 0;
        for (_, call) in &calls {
            bytes += call.bytes.load(Ordering::Relaxed);
            let (r, t) = counters(call);
            reconnects += r;
            throttles += t;
            behind_max = behind_max.max(call.behind_ms.load(Ordering::Relaxed));
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = format!(
            "# HELP kvs_record_build_info The worker's version.\n# TYPE kvs_record_build_info gauge\n\
             kvs_record_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        };
        let counted = [
            (
                "kvs_record_calls_done_total",
                "Calls recorded completely.",
                load(&self.done),
            ),
            (
                "kvs_record_calls_failed_total",
                "Calls that failed (the message comes back or goes to the dead-letter queue).",
                load(&self.failed),
            ),
            (
                "kvs_record_calls_released_total",
                "Calls handed back to the queue on shutdown.",
                load(&self.released),
            ),
            ("kvs_record_audio_bytes_total", "PCM bytes recorded.", bytes),
            (
                "kvs_record_reconnects_total",
                "GetMedia reconnections.",
                reconnects,
            ),
            (
                "kvs_record_throttles_total",
                "KVS throttling answers.",
                throttles,
            ),
            (
                "kvs_record_queue_receive_errors_total",
                "Failed SQS receives.",
                load(&self.receive_errors),
            ),
            (
                "kvs_record_s3_requests_total",
                "S3 requests made.",
                super::s3::REQUESTS.load(Ordering::Relaxed),
            ),
        ];
        metric(
            "kvs_record_active_calls",
            "gauge",
            "Calls being recorded.",
            calls.len().to_string(),
        );
        for (name, help, value) in counted {
            metric(name, "counter", help, value.to_string());
        }
        metric(
            "kvs_record_behind_live_max_seconds",
            "gauge",
            "How far behind live the running call furthest behind is (KVS's MillisBehindNow of its last fragment).",
            (behind_max as f64 / 1000.0).to_string(),
        );
        self.behind.render(
            &mut out,
            "kvs_record_behind_live_seconds",
            "How far behind live each fragment of each call was recorded.",
        );
        self.lengths.render(
            &mut out,
            "kvs_record_call_audio_seconds",
            "Seconds of audio of each call recorded whole.",
        );
        out
    }
}

async fn answer(
    metrics: Arc<Metrics>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".into()),
        "/readyz" => metrics.readiness(),
        _ => (
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// Serves /metrics, /healthz and /readyz on `listen`; returns the bound
/// address.
pub async fn serve(
    listen: std::net::SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(metrics.clone(), req));
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Reads a source's counters for /metrics.
pub fn source_stats(src: &gst::Element) -> (u64, u64) {
    use gst::prelude::*;
    let stats = src.property::<gst::Structure>("stats");
    (
        stats.get::<u64>("reconnects").unwrap_or(0),
        stats.get::<u64>("throttles").unwrap_or(0),
    )
}
