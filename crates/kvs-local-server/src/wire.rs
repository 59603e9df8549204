// SPDX-License-Identifier: MPL-2.0
//! What every handler of the local server answers with: JSON errors the SDK
//! maps to its modeled errors, whole and streaming bodies, and the body
//! writer that applies the cut, stall, pause and session-end faults.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use kvs_mkv::writer::Chunk;
use serde_json::json;
use tokio::sync::mpsc;

use super::State;

pub(super) type Body = BoxBody<Bytes, io::Error>;

pub(super) fn full(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-RequestId", "00000000-0000-4000-8000-000000000000")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .unwrap()
}

/// A KVS error reply.
pub(super) struct KvsError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

impl KvsError {
    /// The reply: the SDK reads the name from `x-amzn-ErrorType`.
    pub(super) fn response(self) -> Response<Body> {
        let body = json!({ "__type": self.name, "Message": self.message }).to_string();
        let mut resp = full(self.status, "application/json", body.into_bytes());
        resp.headers_mut()
            .insert("x-amzn-ErrorType", self.name.parse().unwrap());
        resp
    }
}

pub(super) fn error(status: StatusCode, name: &'static str, message: String) -> KvsError {
    KvsError {
        status,
        name,
        message,
    }
}

pub(super) fn invalid(message: impl Into<String>) -> KvsError {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidArgumentException",
        message.into(),
    )
}

/// Checks the SigV4 signature and returns the access key id: in full for
/// keys whose secret the server knows, by the form of the header otherwise.
/// Refuses the call if the throttle fault says so.
pub(super) fn throttle(state: &State, api: &str) -> Result<(), KvsError> {
    if !super::take(&state.faults.throttle) {
        return Ok(());
    }
    state.counters.throttled.fetch_add(1, Ordering::SeqCst);
    let msg = format!("Too many {api} calls for this stream (limit: 5 per second)");
    Err(error(
        StatusCode::BAD_REQUEST,
        "ClientLimitExceededException",
        msg,
    ))
}

/// A response body fed by a task through `rx`; an `Err` aborts the
/// connection.
pub(super) fn channel_body(mut rx: mpsc::Receiver<io::Result<Bytes>>) -> Body {
    StreamBody::new(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }))
    .boxed()
}

/// Writes a body, applying the cut and stall faults and the session end.
pub(super) struct Writer {
    tx: mpsc::Sender<io::Result<Bytes>>,
    sent: u64,
    cut: Option<u64>,
    stall: Option<(u64, Duration)>,
    /// When a GetMedia response ends, and whether mid-chunk.
    ends: Option<(Instant, bool)>,
}

impl Writer {
    /// A body writer with the next cut and stall faults.
    pub(super) fn new(state: &State, tx: mpsc::Sender<io::Result<Bytes>>) -> Writer {
        Writer {
            tx,
            sent: 0,
            cut: state.faults.next_cut(),
            stall: state.faults.next_stall(),
            ends: None,
        }
    }

    /// Ends this response as `end` says, from now.
    pub(super) fn session(mut self, end: super::SessionEnd) -> Writer {
        self.ends = end
            .after
            .map(|after| (Instant::now() + after, end.mid_chunk));
        self
    }

    /// At a chunk boundary: whether the response is to end here. Counted.
    pub(super) fn session_over(&self, state: &State) -> bool {
        let over = self
            .ends
            .is_some_and(|(at, mid_chunk)| !mid_chunk && Instant::now() >= at);
        if over {
            state.counters.sessions_ended.fetch_add(1, Ordering::SeqCst);
        }
        over
    }

    /// Sends `data`; false when the body must end (client gone or cut).
    pub(super) async fn send(&mut self, state: &State, mut data: Bytes) -> bool {
        state.faults.unpaused().await;
        if let Some((at, true)) = self.ends
            && Instant::now() >= at
        {
            // The session ends mid-chunk: half of this piece, then a clean
            // end of the body, as KVS ends a session.
            let head = data.split_to(data.len() / 2);
            if !head.is_empty() {
                let _ = self.tx.send(Ok(head)).await;
            }
            state.counters.sessions_ended.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        if let Some((after, pause)) = self.stall
            && self.sent + data.len() as u64 > after
        {
            let head = data.split_to((after.saturating_sub(self.sent) as usize).min(data.len()));
            self.sent += head.len() as u64;
            if !head.is_empty() && self.tx.send(Ok(head)).await.is_err() {
                return false;
            }
            self.stall = None;
            tokio::time::sleep(pause).await;
        }
        if let Some(cut) = self.cut
            && self.sent + data.len() as u64 >= cut
        {
            let head = data.split_to((cut - self.sent) as usize);
            if !head.is_empty() {
                let _ = self.tx.send(Ok(head)).await;
            }
            // Let the bytes before the cut reach the client: hyper drops
            // what it has not written when the body fails.
            for _ in 0..1000 {
                if self.tx.capacity() == self.tx.max_capacity() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            state.counters.cut.fetch_add(1, Ordering::SeqCst);
            if let Some(timing) = &state.timing {
                timing.lock().unwrap().cuts.push(Instant::now());
            }
            let _ = self
                .tx
                .send(Err(io::Error::other("cut by fault injection")))
                .await;
            return false;
        }
        self.sent += data.len() as u64;
        data.is_empty() || self.tx.send(Ok(data)).await.is_ok()
    }
}

/// A chunk that holds only `tags`: how KVS reports an error in-band.
pub(super) fn tags_chunk(tags: Vec<(String, String)>) -> Bytes {
    let chunk = Chunk {
        tags_before: vec![tags],
        ..Chunk::default()
    };
    let mut bytes = chunk.to_bytes();
    // Only the header, the Segment and the Tags: drop the empty Cluster.
    let cluster = bytes
        .windows(4)
        .rposition(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .unwrap_or(bytes.len());
    bytes.truncate(cluster);
    Bytes::from(bytes)
}
