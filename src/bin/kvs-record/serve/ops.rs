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

/// A running call's figures.
#[derive(Default)]
pub struct Call {
    pub bytes: AtomicU64,
    pub behind_ms: AtomicU64,
    pub src: Mutex<Option<gst::glib::WeakRef<gst::Element>>>,
    /// Reconnects and throttles, kept when the source goes away.
    pub counts: Mutex<(u64, u64)>,
}

#[derive(Default)]
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
    pub ready: AtomicBool,
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
    src.map_or(*call.counts.lock().unwrap(), |s| {
        super::call::source_stats(&s)
    })
}

impl Metrics {
    pub fn start_call(&self, contact: &str) -> Arc<Call> {
        let call = Arc::new(Call::default());
        self.calls
            .lock()
            .unwrap()
            .insert(contact.to_string(), call.clone());
        call
    }

    pub fn end_call(&self, contact: &str) {
        let Some(call) = self.calls.lock().unwrap().remove(contact) else {
            return;
        };
        let (reconnects, throttles) = counters(&call);
        let mut ended = self.ended.lock().unwrap();
        ended.0 += call.bytes.load(Ordering::Relaxed);
        ended.1 += reconnects;
        ended.2 += throttles;
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
        let mut behind = String::new();
        let mut recorded = String::new();
        for (contact, call) in &calls {
            bytes += call.bytes.load(Ordering::Relaxed);
            let (r, t) = counters(call);
            reconnects += r;
            throttles += t;
            behind += &format!(
                "kvs_record_call_millis_behind_live{{contact_id=\"{contact}\"}} {}\n",
                call.behind_ms.load(Ordering::Relaxed)
            );
            recorded += &format!(
                "kvs_record_call_audio_bytes{{contact_id=\"{contact}\"}} {}\n",
                call.bytes.load(Ordering::Relaxed)
            );
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        };
        metric(
            "kvs_record_active_calls",
            "gauge",
            "Calls being recorded.",
            calls.len() as u64,
        );
        metric(
            "kvs_record_calls_done_total",
            "counter",
            "Calls recorded completely in S3.",
            load(&self.done),
        );
        metric(
            "kvs_record_calls_failed_total",
            "counter",
            "Calls that failed (the message comes back or goes to the dead-letter queue).",
            load(&self.failed),
        );
        metric(
            "kvs_record_calls_released_total",
            "counter",
            "Calls handed back to the queue on shutdown.",
            load(&self.released),
        );
        metric(
            "kvs_record_audio_bytes_total",
            "counter",
            "PCM bytes recorded.",
            bytes,
        );
        metric(
            "kvs_record_reconnects_total",
            "counter",
            "GetMedia reconnections.",
            reconnects,
        );
        metric(
            "kvs_record_throttles_total",
            "counter",
            "KVS throttling answers.",
            throttles,
        );
        metric(
            "kvs_record_queue_receive_errors_total",
            "counter",
            "Failed SQS receives.",
            load(&self.receive_errors),
        );
        metric(
            "kvs_record_s3_requests_total",
            "counter",
            "S3 requests made.",
            super::store::REQUESTS.load(Ordering::Relaxed),
        );
        out += "# HELP kvs_record_call_millis_behind_live How far behind live each call is, in milliseconds.\n";
        out += "# TYPE kvs_record_call_millis_behind_live gauge\n";
        out += &behind;
        out += "# HELP kvs_record_call_audio_bytes PCM bytes recorded of each running call.\n";
        out += "# TYPE kvs_record_call_audio_bytes gauge\n";
        out + &recorded
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

/// Serves /metrics, /healthz and /readyz; returns the bound address.
pub async fn serve(port: u16, metrics: Arc<Metrics>) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
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
