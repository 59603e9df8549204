// SPDX-License-Identifier: MPL-2.0
//! GetMedia: where a StartSelector starts, and the body, sent as KVS sends
//! it: stored fragments at once, live ones as they are spoken, an idle body
//! ended after a quiet spell, and every session ended after its time.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use kvs_mkv::kvs;
use serde_json::Value;
use tokio::sync::mpsc;

use super::wire::{Body, KvsError, Writer, channel_body, error, invalid, tags_chunk, throttle};
use super::{State, Stream, store};

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

pub(super) fn get_media(
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
        .body(channel_body(rx))
        .unwrap())
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
