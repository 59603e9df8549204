// SPDX-License-Identifier: MPL-2.0
//! PutMedia on the local KVS server: reads the Matroska body as it arrives,
//! stores each Cluster as a fragment that GetMedia readers see at once,
//! and answers with the stream of JSON acknowledgements (BUFFERING,
//! RECEIVED, PERSISTED, ERROR, IDLE), with KVS's limits and ErrorIds.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::ingest::{Ingest, MAX_FRAGMENT_BYTES, Piece, Refusal, refusal};
use super::store::Open;
use super::wire::{self, Body, KvsError, channel_body, error, invalid};
use super::{State, Stream, take};
use kvs_mkv::kvs;
use kvs_mkv::writer::write_tags;

/// KVS closes a PutMedia connection that has sent nothing for this long.
const IDLE_END: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// One acknowledgement, or the end of the connection.
enum Ack {
    Event(serde_json::Value),
    /// Held while the `put_hold_acks` fault is on.
    Persisted(serde_json::Value),
    Cut,
}

fn event(kind: &str, timecode: u64, number: &str) -> serde_json::Value {
    json!({ "EventType": kind, "FragmentTimecode": timecode, "FragmentNumber": number })
}

/// Checks the request, then answers 200 and reads the body in a task.
pub(super) fn put_media(
    state: &Arc<State>,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>, KvsError> {
    state.counters.put_media.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let name = header("x-amzn-stream-name");
    let arn = header("x-amzn-stream-arn");
    let Some(stream) = state.stream(name, arn) else {
        let which = name.or(arn).unwrap_or("(no x-amzn-stream-name header)");
        let msg = format!("The stream {which} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    };
    let start_ms = match header("x-amzn-fragment-timecode-type") {
        None | Some("ABSOLUTE") => None,
        Some("RELATIVE") => {
            let start = header("x-amzn-producer-start-timestamp")
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| {
                    invalid("RELATIVE timecodes need x-amzn-producer-start-timestamp")
                })?;
            if !(0.0..1e12).contains(&start) {
                return Err(invalid(format!("Invalid producer start timestamp {start}")));
            }
            Some((start * 1000.0) as u64)
        }
        Some(other) => return Err(invalid(format!("Unknown fragment timecode type {other}"))),
    };
    wire::throttle(state, "PutMedia")?;
    let limit = state.put.calls_per_second;
    {
        let mut calls = stream.put_calls.lock().unwrap();
        while calls
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
        {
            calls.pop_front();
        }
        if calls.len() >= limit {
            state.counters.throttled.fetch_add(1, Ordering::SeqCst);
            let msg =
                format!("Too many PutMedia calls for this stream (limit: {limit} per second)");
            return Err(error(
                StatusCode::BAD_REQUEST,
                "ClientLimitExceededException",
                msg,
            ));
        }
        calls.push_back(Instant::now());
    }
    if let Some(bodies) = &state.put_bodies {
        bodies.lock().unwrap().push(Vec::new());
    }
    let (tx, rx) = mpsc::channel(64);
    let (acks, queue) = mpsc::unbounded_channel();
    tokio::spawn(send_acks(state.clone(), queue, tx));
    let receiver = Receiver::new(state.clone(), stream, start_ms, acks);
    tokio::spawn(receiver.run(body));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-amzn-RequestId", "00000000-0000-4000-8000-000000000000")
        .body(channel_body(rx))
        .unwrap())
}

/// Writes the ACKs as JSON lines; a cut aborts the connection.
async fn send_acks(
    state: Arc<State>,
    mut queue: mpsc::UnboundedReceiver<Ack>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    while let Some(ack) = queue.recv().await {
        state.faults.unpaused().await;
        let value = match ack {
            Ack::Event(v) => v,
            Ack::Persisted(v) => {
                while state.faults.put_hold_acks.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                v
            }
            Ack::Cut => {
                // Let the ACKs before the cut reach the client: hyper drops
                // what it has not written when the body fails.
                for _ in 0..1000 {
                    if tx.capacity() == tx.max_capacity() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                state.counters.cut.fetch_add(1, Ordering::SeqCst);
                let _ = tx
                    .send(Err(io::Error::other("cut by fault injection")))
                    .await;
                return;
            }
        };
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        if tx.send(Ok(Bytes::from(line))).await.is_err() {
            return;
        }
    }
}

/// The fragment being received.
struct Current {
    place: usize,
    number: String,
    timecode: u64,
    server_ms: u64,
    last_block: i64,
    bytes: u64,
}

struct Receiver {
    state: Arc<State>,
    stream: Arc<Stream>,
    start_ms: Option<u64>,
    acks: mpsc::UnboundedSender<Ack>,
    ingest: Ingest,
    current: Option<Current>,
    /// Tags before the connection's first Cluster.
    pending_tags: Vec<u8>,
    last_timecode: Option<u64>,
    /// Fragments of this connection stored whole.
    whole: u32,
}

impl Receiver {
    fn new(
        state: Arc<State>,
        stream: Arc<Stream>,
        start_ms: Option<u64>,
        acks: mpsc::UnboundedSender<Ack>,
    ) -> Self {
        Receiver {
            state,
            stream,
            start_ms,
            acks,
            ingest: Ingest::default(),
            current: None,
            pending_tags: Vec::new(),
            last_timecode: None,
            whole: 0,
        }
    }

    fn ack(&self, ack: Ack) {
        let _ = self.acks.send(ack);
    }

    fn ticks_ms(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * u128::from(self.ingest.timestamp_scale) / 1_000_000) as u64
    }

    async fn run(mut self, mut body: Incoming) {
        let limits = self.state.put.clone();
        let started = Instant::now();
        let mut read = 0u64;
        let mut quiet = Instant::now();
        let mut pieces = Vec::new();
        let result = loop {
            self.state.faults.unpaused().await;
            let frame = match tokio::time::timeout(limits.idle_ack, body.frame()).await {
                // KVS closes a quiet connection; a fragment it left open is lost.
                Err(_) if quiet.elapsed() >= IDLE_END => break Err(None),
                Err(_) => {
                    self.ack(Ack::Event(json!({ "EventType": "IDLE" })));
                    continue;
                }
                Ok(frame) => frame,
            };
            let data = match frame {
                None => break self.finish(&mut pieces),
                // The producer went away: what was not whole is lost.
                Some(Err(_)) => break Err(None),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            quiet = Instant::now();
            if let Some(bodies) = &self.state.put_bodies
                && let Some(b) = bodies.lock().unwrap().last_mut()
            {
                b.extend_from_slice(&data);
            }
            read += data.len() as u64;
            if let Err(e) = self.ingest.push(&data, &mut pieces) {
                break Err(Some(e));
            }
            if let Err(e) = self.take(&mut pieces) {
                break Err(e);
            }
            if limits.bytes_per_second > 0 {
                let due = Duration::from_secs_f64(read as f64 / limits.bytes_per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(Some(refused)) => {
                let timecode = self.current.as_ref().map_or(0, |c| c.timecode);
                let number = self.current.as_ref().map(|c| c.number.clone());
                self.drop_current();
                let mut ack = json!({
                    "EventType": "ERROR",
                    "FragmentTimecode": timecode,
                    "ErrorId": refused.id,
                    "ErrorCode": refused.code,
                    "Message": refused.message,
                });
                if let Some(number) = number {
                    ack["FragmentNumber"] = json!(number);
                }
                self.ack(Ack::Event(ack));
            }
            Err(None) => self.drop_current(),
        }
    }

    fn finish(&mut self, pieces: &mut Vec<Piece>) -> Result<(), Option<Refusal>> {
        self.ingest.finish(pieces)?;
        self.take(pieces)?;
        self.close()
    }

    fn drop_current(&mut self) {
        if let Some(c) = self.current.take() {
            self.stream.abandon(c.place);
        }
    }

    /// Applies the pieces read so far. `Err(None)` cuts the connection.
    fn take(&mut self, pieces: &mut Vec<Piece>) -> Result<(), Option<Refusal>> {
        for piece in pieces.drain(..) {
            match piece {
                Piece::Cluster { timecode, head } => {
                    self.close()?;
                    self.open(timecode, &head)?;
                }
                Piece::Block {
                    track,
                    timecode,
                    bytes,
                } => self.block(track, timecode, &bytes)?,
                Piece::Tags(bytes) => match &mut self.current {
                    Some(c) => {
                        c.bytes += bytes.len() as u64;
                        self.stream.append(c.place, &bytes);
                    }
                    None => self.pending_tags.extend_from_slice(&bytes),
                },
                Piece::ClusterEnd => {}
            }
        }
        Ok(())
    }

    fn open(&mut self, timecode: u64, head: &[u8]) -> Result<(), Option<Refusal>> {
        if self.last_timecode.is_some_and(|last| timecode < last) {
            return Err(Some(refusal(
                4004,
                format!(
                    "Fragment timecode {timecode} is less than the previous one, {}",
                    self.last_timecode.unwrap()
                ),
            )));
        }
        self.last_timecode = Some(timecode);
        let server_ms = now_ms();
        let producer_ms = self
            .start_ms
            .unwrap_or(0)
            .saturating_add(self.ticks_ms(timecode));
        let header = self.ingest.header();
        let pending = &self.pending_tags;
        // The number comes from the place, taken under the stream's lock:
        // two producers on one stream never share one.
        let place = self.stream.open(|place| {
            let number = format!("91343852333181432392682062607743920147{place:09}");
            let tags = |archive: bool| {
                let (server, producer) = if archive {
                    (kvs::SERVER_SIDE_TIMESTAMP, kvs::PRODUCER_SIDE_TIMESTAMP)
                } else {
                    (kvs::SERVER_TIMESTAMP, kvs::PRODUCER_TIMESTAMP)
                };
                let mut out = header.to_vec();
                out.extend_from_slice(pending);
                write_tags(
                    &mut out,
                    &[
                        (kvs::FRAGMENT_NUMBER.into(), number.clone()),
                        (server.into(), seconds(server_ms)),
                        (producer.into(), seconds(producer_ms)),
                    ],
                );
                out
            };
            let mut bytes = tags(false);
            let cluster_from = bytes.len();
            bytes.extend_from_slice(head);
            Open {
                archive_head: tags(true),
                number,
                producer_ms,
                server_ms,
                bytes,
                cluster_from,
            }
        });
        let number = self.stream.number(place);
        self.pending_tags.clear();
        self.ack(Ack::Event(event("BUFFERING", timecode, &number)));
        self.current = Some(Current {
            place,
            number,
            timecode,
            server_ms,
            last_block: timecode as i64,
            bytes: head.len() as u64,
        });
        Ok(())
    }

    fn block(&mut self, track: u64, timecode: i64, bytes: &[u8]) -> Result<(), Option<Refusal>> {
        let faults = &self.state.faults;
        if self.whole >= faults.put_cut_after.load(Ordering::SeqCst) && take(&faults.put_cuts) {
            self.ack(Ack::Cut);
            return Err(None);
        }
        if !self.ingest.tracks.iter().any(|t| t.number == track) {
            return Err(Some(refusal(
                4010,
                format!("A block of track {track}, which the Tracks do not list"),
            )));
        }
        let max_ms = self.state.put.max_fragment_ms;
        let Some(c) = &mut self.current else {
            return Err(Some(refusal(4006, "A block outside any Cluster")));
        };
        c.last_block = c.last_block.max(timecode);
        c.bytes += bytes.len() as u64;
        let span = c.last_block.saturating_sub(c.timecode as i64).max(0) as u64;
        if span.saturating_mul(self.ingest.timestamp_scale) / 1_000_000 > max_ms {
            return Err(Some(refusal(
                4002,
                format!("The fragment is longer than {} s", max_ms / 1000),
            )));
        }
        if c.bytes > MAX_FRAGMENT_BYTES {
            return Err(Some(refusal(4001, "The fragment is larger than 50 MB")));
        }
        self.stream.append(c.place, bytes);
        Ok(())
    }

    /// The current fragment is whole: store it and acknowledge it.
    fn close(&mut self) -> Result<(), Option<Refusal>> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let faults = &self.state.faults;
        if take(&faults.put_errors) {
            self.current = Some(c);
            let id = faults.put_error_id.load(Ordering::SeqCst);
            return Err(Some(refusal(id, "Fault injection: an error ACK")));
        }
        let span = c.last_block.saturating_sub(c.timecode as i64).max(0);
        let duration_ms = self.ticks_ms(span as u64);
        let behind = now_ms().saturating_sub(c.server_ms + duration_ms);
        let mut trailer = Vec::new();
        write_tags(
            &mut trailer,
            &[
                (kvs::MILLIS_BEHIND_NOW.into(), behind.to_string()),
                (kvs::CONTINUATION_TOKEN.into(), c.number.clone()),
            ],
        );
        self.stream
            .close(c.place, duration_ms, &trailer, self.state.put.keep);
        self.state
            .counters
            .put_fragments
            .fetch_add(1, Ordering::SeqCst);
        self.whole += 1;
        let cut_next = self.whole >= faults.put_cut_after.load(Ordering::SeqCst)
            && faults.put_cuts.load(Ordering::SeqCst) > 0;
        if cut_next && faults.put_lose_last_acks.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.ack(Ack::Event(event("RECEIVED", c.timecode, &c.number)));
        if self.stream.retention_hours.load(Ordering::SeqCst) > 0 {
            self.ack(Ack::Persisted(event("PERSISTED", c.timecode, &c.number)));
        }
        Ok(())
    }
}
