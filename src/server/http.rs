// SPDX-License-Identifier: MPL-2.0
//! The HTTP side of the local KVS server: routing, SigV4 checks,
//! JSON errors the SDK maps to its modeled errors, and streaming bodies.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{State, Stream, archive, put, sigv4, store};
use crate::kvs;
use crate::mkv::writer::Fragment as ChunkWriter;

pub(super) type Body = BoxBody<Bytes, io::Error>;

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, addr: SocketAddr) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), addr, req));
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

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
    fn response(self) -> Response<Body> {
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
fn access_key(state: &State, parts: &Parts, body: &[u8]) -> Result<String, KvsError> {
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(sigv4::parse)
        .filter(|a| a.service == "kinesisvideo" && parts.headers.contains_key("x-amz-date"));
    let Some(auth) = auth else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Requests must be signed with AWS Signature Version 4 for the kinesisvideo service"
                .into(),
        ));
    };
    if let Some(secret) = state.secrets.get(auth.key) {
        sigv4::verify(parts, body, &auth, secret)
            .map_err(|msg| error(StatusCode::FORBIDDEN, "InvalidSignatureException", msg))?;
    }
    Ok(auth.key.to_string())
}

async fn handle(
    state: Arc<State>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    state.faults.unpaused().await;
    Ok(reply(state, addr, req)
        .await
        .unwrap_or_else(KvsError::response))
}

async fn reply(
    state: Arc<State>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, KvsError> {
    let (parts, body) = req.into_parts();
    let media = ["/getMedia", "/getMediaForFragmentList", "/putMedia"];
    if media.contains(&parts.uri.path()) && super::take(&state.faults.unanswered) {
        state.counters.unanswered.fetch_add(1, Ordering::SeqCst);
        // Taken, and never answered: the client's deadline must end it.
        return std::future::pending().await;
    }
    if parts.uri.path() == "/putMedia" {
        // A streaming body, signed as the KVS producers sign it: with the
        // hash of an empty payload.
        let key = access_key(&state, &parts, &[])?;
        refuse_denied(&state, &key)?;
        return put::put_media(&state, &parts, body);
    }
    let body = body
        .collect()
        .await
        .map_err(|e| invalid(format!("Could not read the request: {e}")))?
        .to_bytes();
    let key = access_key(&state, &parts, &body)?;
    let path = parts.uri.path();
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("The request is not JSON: {e}")))?;
    refuse_denied(&state, &key)?;
    match path {
        "/createStream" => return create_stream(&state, &json),
        "/deleteStream" => return delete_stream(&state, &json),
        "/describeStream" => return describe_stream(&state, &json),
        _ => {}
    }
    let name = json["StreamName"].as_str();
    let arn = json["StreamARN"].as_str();
    let Some(stream) = state.stream(name, arn) else {
        let which = name.or(arn).unwrap_or("(no StreamName or StreamARN)");
        let msg = format!("The stream {which} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    };
    match path {
        "/getDataEndpoint" => {
            state
                .counters
                .get_data_endpoint
                .fetch_add(1, Ordering::SeqCst);
            let body = json!({ "DataEndpoint": format!("http://{addr}") }).to_string();
            Ok(full(StatusCode::OK, "application/json", body.into_bytes()))
        }
        "/getMedia" => get_media(&state, stream, &json["StartSelector"]),
        "/listFragments" => archive::list_fragments(&state, &stream, &json),
        "/getMediaForFragmentList" => archive::get_media_for_fragment_list(&state, stream, &json),
        other => {
            let msg = format!("No operation at {other}");
            Err(error(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                msg,
            ))
        }
    }
}

fn refuse_denied(state: &State, key: &str) -> Result<(), KvsError> {
    if !state.denied_keys.iter().any(|k| k == key) {
        return Ok(());
    }
    let msg = format!("The access key {key} is not authorized to perform this operation");
    Err(error(
        StatusCode::UNAUTHORIZED,
        "NotAuthorizedException",
        msg,
    ))
}

fn ok_json(body: Value) -> Result<Response<Body>, KvsError> {
    Ok(full(
        StatusCode::OK,
        "application/json",
        body.to_string().into_bytes(),
    ))
}

/// CreateStream: an empty stream that producers can put into.
fn create_stream(state: &State, req: &Value) -> Result<Response<Body>, KvsError> {
    state.counters.create_stream.fetch_add(1, Ordering::SeqCst);
    let name = req["StreamName"]
        .as_str()
        .filter(|n| !n.is_empty() && n.len() <= 256)
        .ok_or_else(|| invalid("StreamName is required"))?;
    let hours = req["DataRetentionInHours"].as_u64().unwrap_or(0);
    let stream = Stream::empty(name, hours.min(87_600) as u32);
    *stream.media_type.lock().unwrap() = req["MediaType"].as_str().unwrap_or("").into();
    let arn = stream.arn.clone();
    if !state.add_stream(stream) {
        let msg = format!("The stream {name} already exists");
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ResourceInUseException",
            msg,
        ));
    }
    ok_json(json!({ "StreamARN": arn }))
}

/// DeleteStream: the stream named by its ARN goes, with its fragments.
fn delete_stream(state: &State, req: &Value) -> Result<Response<Body>, KvsError> {
    let arn = req["StreamARN"]
        .as_str()
        .ok_or_else(|| invalid("StreamARN is required"))?;
    if !state.remove_stream(arn) {
        let msg = format!("The stream {arn} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    }
    ok_json(json!({}))
}

/// DescribeStream: what the stream is, or ResourceNotFoundException.
fn describe_stream(state: &State, req: &Value) -> Result<Response<Body>, KvsError> {
    let name = req["StreamName"].as_str();
    let Some(stream) = state.stream(name, req["StreamARN"].as_str()) else {
        let which = name.or(req["StreamARN"].as_str()).unwrap_or("?");
        let msg = format!("The stream {which} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    };
    ok_json(json!({ "StreamInfo": {
        "StreamName": stream.name,
        "StreamARN": stream.arn,
        "MediaType": *stream.media_type.lock().unwrap(),
        "Status": "ACTIVE",
        "Version": "1",
        "CreationTime": 1_700_000_000.0,
        "DataRetentionInHours": stream.retention_hours.load(Ordering::SeqCst),
    }}))
}

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

/// The index of the first fragment a StartSelector asks for.
fn start_index(stream: &Stream, selector: &Value) -> Result<usize, KvsError> {
    let kind = selector["StartSelectorType"]
        .as_str()
        .ok_or_else(|| invalid("StartSelectorType is required"))?;
    let field = |name: &str| {
        selector[name]
            .as_str()
            .ok_or_else(|| invalid(format!("StartSelectorType {kind} needs {name}")))
    };
    let timestamp_ms = || {
        selector["StartTimestamp"]
            .as_f64()
            .map(|s| (s * 1000.0) as u64)
            .ok_or_else(|| invalid(format!("StartSelectorType {kind} needs StartTimestamp")))
    };
    match kind {
        "NOW" => Ok(stream.now_index()),
        "EARLIEST" => Ok(0),
        "FRAGMENT_NUMBER" => {
            let number = field("AfterFragmentNumber")?;
            stream
                .index_after(number)
                .ok_or_else(|| invalid(format!("No fragment {number} in stream {}", stream.name)))
        }
        "CONTINUATION_TOKEN" => {
            let token = field("ContinuationToken")?;
            stream
                .index_after(token)
                .ok_or_else(|| invalid(format!("Invalid continuation token {token}")))
        }
        "SERVER_TIMESTAMP" => Ok(stream.index_at(timestamp_ms()?, false)),
        "PRODUCER_TIMESTAMP" => Ok(stream.index_at(timestamp_ms()?, true)),
        other => Err(invalid(format!("Unknown StartSelectorType {other}"))),
    }
}

fn get_media(
    state: &Arc<State>,
    stream: Arc<Stream>,
    selector: &Value,
) -> Result<Response<Body>, KvsError> {
    state.counters.get_media.fetch_add(1, Ordering::SeqCst);
    throttle(state, "GetMedia")?;
    if super::take(&state.faults.invalid_endpoint) {
        let msg =
            "This data endpoint no longer serves the stream: call GetDataEndpoint again".into();
        return Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidEndpointException",
            msg,
        ));
    }
    let start = start_index(&stream, selector)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(send_fragments(state.clone(), stream, start, tx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "video/webm")
        .body(ChannelBody(rx).boxed())
        .unwrap())
}

/// A response body fed by a task; an `Err` aborts the connection.
pub(super) struct ChannelBody(pub(super) mpsc::Receiver<io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
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
    fn session(mut self, end: super::SessionEnd) -> Writer {
        self.ends = end
            .after
            .map(|after| (Instant::now() + after, end.mid_chunk));
        self
    }

    /// At a chunk boundary: whether the response is to end here. Counted.
    fn session_over(&self, state: &State) -> bool {
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
    let chunk = ChunkWriter {
        tags_before: vec![tags],
        ..ChunkWriter::default()
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

async fn send_fragments(
    state: Arc<State>,
    stream: Arc<Stream>,
    start: usize,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut w = Writer::new(&state, tx).session(state.session_end);
    if stream.live.is_some() {
        send_live(&state, &stream, start, &mut w).await;
    } else {
        send_stored(&state, &stream, start, &mut w).await;
    }
}

/// Ends the body with an in-band error if the `error-at` fault says so.
async fn error_here(state: &State, i: usize, w: &mut Writer) -> bool {
    if i as u32 != state.faults.error_at.load(Ordering::SeqCst) {
        return false;
    }
    let tags = vec![
        (kvs::ERROR_CODE.into(), "INTERNAL_ERROR".into()),
        (kvs::ERROR_ID.into(), "5000".into()),
    ];
    w.send(state, tags_chunk(tags)).await;
    true
}

/// Stored and put fragments: what exists is sent at once; at the end the
/// body waits for what a producer puts next, and ends after a quiet spell,
/// as KVS ends it after about 3 s.
async fn send_stored(state: &State, stream: &Stream, start: usize, w: &mut Writer) {
    let end = state.faults.end_after.load(Ordering::SeqCst) as usize;
    let idle = Duration::from_millis(state.faults.idle_end_ms.load(Ordering::SeqCst));
    let (mut i, mut from) = (start, 0);
    while i < end {
        if from == 0 && (error_here(state, i, w).await || w.session_over(state)) {
            return;
        }
        let mut changes = stream.watch();
        match stream.read(i, from) {
            store::Read::Data(bytes, whole) => {
                from += bytes.len();
                if !w.send(state, bytes).await {
                    return;
                }
                if whole {
                    (i, from) = (i + 1, 0);
                }
            }
            store::Read::Skip => (i, from) = (i + 1, 0),
            store::Read::Wait => {
                if tokio::time::timeout(idle, changes.changed()).await.is_err() {
                    return;
                }
            }
        }
    }
    tokio::time::sleep(idle).await;
}

/// A synthetic live stream: each block is sent when it has been spoken.
async fn send_live(state: &State, stream: &Stream, start: usize, w: &mut Writer) {
    let faults = &state.faults;
    let end = (faults.end_after.load(Ordering::SeqCst) as usize).min(stream.len());
    let idle = Duration::from_millis(faults.idle_end_ms.load(Ordering::SeqCst));
    for i in start..end {
        if error_here(state, i, w).await {
            return;
        }
        let (Some(f), Some(t0)) = (stream.fragment(i), stream.fragment_start(i)) else {
            return;
        };
        // Nothing to send until the fragment starts; KVS ends an idle body.
        if t0 > Instant::now() + idle {
            tokio::time::sleep(idle).await;
            return;
        }
        tokio::time::sleep_until(t0.into()).await;
        if w.session_over(state) {
            return;
        }
        let mut from = 0;
        for (block, &(upto, at_ms)) in f.steps.iter().enumerate() {
            tokio::time::sleep_until((t0 + Duration::from_millis(at_ms)).into()).await;
            if !w.send(state, f.bytes.slice(from..upto)).await {
                return;
            }
            if let Some(timing) = &state.timing {
                timing
                    .lock()
                    .unwrap()
                    .blocks
                    .entry((i, block))
                    .or_insert_with(Instant::now);
            }
            from = upto;
        }
        tokio::time::sleep_until((t0 + Duration::from_millis(f.duration_ms)).into()).await;
        if !w.send(state, f.bytes.slice(from..)).await {
            return;
        }
    }
    // Nothing more: KVS keeps the body open about 3 s, then ends it.
    tokio::time::sleep(idle).await;
}
