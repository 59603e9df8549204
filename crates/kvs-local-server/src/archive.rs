// SPDX-License-Identifier: MPL-2.0
//! The archived-media API of the local KVS server: ListFragments (paginated,
//! filtered by a timestamp range, each page in shuffled order) and
//! GetMediaForFragmentList (unpaced unless `archive_rate` is set, with the
//! same faults as GetMedia).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::wire::{self, Body, KvsError, Writer, channel_body, invalid};
use super::{State, Stream};
use kvs_mkv::kvs;

/// KVS returns at most this many fragments per page, and takes at most
/// this many in one GetMediaForFragmentList.
const MAX_RESULTS: u64 = 1000;

/// The fragments of a ListFragments page and the token of the next.
fn page(
    state: &State,
    stream: &Stream,
    req: &Value,
) -> Result<(Vec<usize>, Option<String>), KvsError> {
    let max = match &req["MaxResults"] {
        Value::Null => 100,
        v => v
            .as_u64()
            .filter(|n| (1..=MAX_RESULTS).contains(n))
            .ok_or_else(|| invalid("MaxResults must be between 1 and 1000"))?,
    };
    let page_max = u64::from(state.faults.page_max.load(Ordering::SeqCst));
    let max = if page_max > 0 { max.min(page_max) } else { max } as usize;
    let from = match req["NextToken"].as_str() {
        None => 0,
        Some(token) => token
            .strip_prefix("page-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| invalid(format!("Invalid NextToken {token}")))?,
    };
    let selector = &req["FragmentSelector"];
    let range = match selector["FragmentSelectorType"].as_str() {
        None if selector.is_null() => None,
        Some(kind @ ("SERVER_TIMESTAMP" | "PRODUCER_TIMESTAMP")) => {
            let ms = |key: &str| {
                selector["TimestampRange"][key]
                    .as_f64()
                    .map(|s| (s * 1000.0).round() as u64)
                    .ok_or_else(|| invalid(format!("TimestampRange needs {key}")))
            };
            let (start, end) = (ms("StartTimestamp")?, ms("EndTimestamp")?);
            if end < start {
                return Err(invalid("EndTimestamp is before StartTimestamp"));
            }
            Some((kind == "PRODUCER_TIMESTAMP", start, end))
        }
        other => {
            return Err(invalid(format!(
                "Unknown FragmentSelectorType {}",
                other.unwrap_or("(none)")
            )));
        }
    };
    let complete = stream.complete();
    let mut found = Vec::new();
    let mut next = from;
    while next < complete && found.len() < max {
        let Some(f) = stream.fragment(next) else {
            next += 1;
            continue;
        };
        let keep = range.is_none_or(|(producer, start, end)| {
            let t = if producer { f.producer_ms } else { f.server_ms };
            (start..=end).contains(&t)
        });
        if keep {
            found.push(next);
        }
        next += 1;
    }
    let token = (next < complete).then(|| format!("page-{next}"));
    state.faults.shuffle(&mut found);
    Ok((found, token))
}

fn seconds(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

pub(super) fn list_fragments(
    state: &State,
    stream: &Stream,
    req: &Value,
) -> Result<Response<Body>, KvsError> {
    state.counters.list_fragments.fetch_add(1, Ordering::SeqCst);
    wire::throttle(state, "ListFragments")?;
    let (found, token) = page(state, stream, req)?;
    let fragments: Vec<Value> = found
        .iter()
        .filter_map(|&i| stream.fragment(i))
        .map(|f| {
            json!({
                "FragmentNumber": f.number,
                "FragmentSizeInBytes": f.archive_len(),
                "ProducerTimestamp": seconds(f.producer_ms),
                "ServerTimestamp": seconds(f.server_ms),
                "FragmentLengthInMilliseconds": f.duration_ms,
            })
        })
        .collect();
    let mut body = json!({ "Fragments": fragments });
    if let Some(token) = token {
        body["NextToken"] = json!(token);
    }
    Ok(wire::full(
        StatusCode::OK,
        "application/json",
        body.to_string().into_bytes(),
    ))
}

pub(super) fn get_media_for_fragment_list(
    state: &Arc<State>,
    stream: Arc<Stream>,
    req: &Value,
) -> Result<Response<Body>, KvsError> {
    state
        .counters
        .get_media_for_fragment_list
        .fetch_add(1, Ordering::SeqCst);
    wire::throttle(state, "GetMediaForFragmentList")?;
    let numbers: Vec<String> = req["Fragments"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if numbers.is_empty() || numbers.len() > MAX_RESULTS as usize {
        return Err(invalid("Fragments must list 1 to 1000 fragment numbers"));
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(send_fragments(state.clone(), stream, numbers, tx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "video/webm")
        .body(channel_body(rx))
        .unwrap())
}

/// Sends the fragments as fast as the client reads. A fragment the store
/// lacks (or the `error-at` fault) comes as a chunk of exception tags.
async fn send_fragments(
    state: Arc<State>,
    stream: Arc<Stream>,
    numbers: Vec<String>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut w = Writer::new(&state, tx);
    let complete = stream.complete();
    let error_at = state.faults.error_at.load(Ordering::SeqCst) as usize;
    let rate = state.faults.archive_rate.load(Ordering::SeqCst);
    let (start, mut sent) = (tokio::time::Instant::now(), 0u64);
    for number in numbers {
        let pieces = match stream
            .index_of(&number)
            .filter(|&i| i < complete && i != error_at)
            .and_then(|i| stream.fragment(i))
        {
            Some(f) => f.archive.clone(),
            None => vec![wire::tags_chunk(vec![
                (kvs::FRAGMENT_NUMBER.into(), number.clone()),
                (
                    kvs::EXCEPTION_ERROR_CODE.into(),
                    "ResourceNotFoundException".into(),
                ),
                (
                    kvs::EXCEPTION_MESSAGE.into(),
                    format!("Fragment {number} is not in the data store"),
                ),
            ])],
        };
        for bytes in pieces {
            sent += bytes.len() as u64;
            if !w.send(&state, bytes).await {
                return;
            }
            if rate > 0 {
                tokio::time::sleep_until(
                    start + Duration::from_secs_f64(sent as f64 / rate as f64),
                )
                .await;
            }
        }
    }
}
