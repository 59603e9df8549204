// SPDX-License-Identifier: MPL-2.0
//! A local Kinesis Video Streams server that speaks the KVS REST wire
//! protocol (restJson1 over HTTP/1.1, SigV4-signed requests), so that the
//! real AWS SDKs run against it unmodified, with no AWS account: GetMedia,
//! PutMedia with its acknowledgements, ListFragments,
//! GetMediaForFragmentList, CreateStream, DescribeStream, DeleteStream and
//! GetDataEndpoint. It serves stored and live streams ([`synth`] makes
//! Amazon Connect calls and cameras), and injects faults ([`Faults`]) for
//! tests: cuts, throttles, stalls, peers that never answer, session ends.
//!
//! ```no_run
//! use kvs_local_server::{LocalKvs, State, Stream, synth::Call};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let call = Call::demo(20);
//! let server = LocalKvs::start(0, State::new(vec![Stream::from_call("demo-call", &call, true)])).await?;
//! // Point any AWS SDK, or kvsgetmediasrc endpoint-uri, at this:
//! println!("{}", server.endpoint());
//! # Ok(())
//! # }
//! ```

mod archive;
mod getmedia;
mod http;
pub mod ingest;
mod put;
mod sigv4;
pub mod store;
pub mod synth;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use store::Stream;

/// Faults to inject, shared by all connections; tests may change them while
/// the server runs.
#[derive(Debug)]
pub struct Faults {
    /// Connections still to cut.
    pub cuts: AtomicU32,
    /// Cut a connection after this many body bytes; 0 picks a random count
    /// up to `cut_max`.
    pub cut_after: AtomicU64,
    pub cut_max: AtomicU64,
    /// GetMedia, ListFragments and GetMediaForFragmentList calls still to
    /// refuse with ClientLimitExceededException.
    pub throttle: AtomicU32,
    /// GetMedia calls still to refuse with InvalidEndpointException.
    pub invalid_endpoint: AtomicU32,
    /// Stall one body for this many ms after `stall_after` bytes (0: never).
    pub stall_ms: AtomicU64,
    pub stall_after: AtomicU64,
    /// Put in-band error tags in place of this fragment (u32::MAX: never).
    pub error_at: AtomicU32,
    /// Serve only this many fragments (u32::MAX: all).
    pub end_after: AtomicU32,
    /// ListFragments pages hold at most this many fragments (0: MaxResults).
    pub page_max: AtomicU32,
    /// Each GetMediaForFragmentList body goes at most this many bytes a
    /// second, as one connection to a faraway region does (0: unpaced).
    pub archive_rate: AtomicU64,
    /// A body with nothing to send for this long ends, like KVS (about 3 s).
    pub idle_end_ms: AtomicU64,
    /// PutMedia connections still to cut ...
    pub put_cuts: AtomicU32,
    /// ... when this many fragments of the connection are whole and the
    /// next has a block: a cut mid-fragment.
    pub put_cut_after: AtomicU32,
    /// With a cut: store the last whole fragment but lose its RECEIVED and
    /// PERSISTED ACKs, as when a connection breaks just before they go out.
    pub put_lose_last_acks: AtomicBool,
    /// PutMedia fragments still to refuse with an ERROR ACK of
    /// `put_error_id` (the connection then ends, as KVS ends it).
    pub put_errors: AtomicU32,
    pub put_error_id: AtomicU32,
    /// Hold back PERSISTED ACKs while true (a slow store).
    pub put_hold_acks: AtomicBool,
    /// GetMedia, GetMediaForFragmentList and PutMedia requests still to
    /// take and never answer (the connection stays open, silent).
    pub unanswered: AtomicU32,
    /// While true the server takes connections and requests but answers
    /// nothing, and bodies send nothing, as a stalled peer, proxy or
    /// half-open connection: see [`Faults::pause`].
    paused: tokio::sync::watch::Sender<bool>,
    rng: Mutex<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            cuts: AtomicU32::new(0),
            cut_after: AtomicU64::new(0),
            cut_max: AtomicU64::new(100_000),
            throttle: AtomicU32::new(0),
            invalid_endpoint: AtomicU32::new(0),
            stall_ms: AtomicU64::new(0),
            stall_after: AtomicU64::new(0),
            error_at: AtomicU32::new(u32::MAX),
            end_after: AtomicU32::new(u32::MAX),
            page_max: AtomicU32::new(0),
            archive_rate: AtomicU64::new(0),
            idle_end_ms: AtomicU64::new(3000),
            put_cuts: AtomicU32::new(0),
            put_cut_after: AtomicU32::new(1),
            put_lose_last_acks: AtomicBool::new(false),
            put_errors: AtomicU32::new(0),
            put_error_id: AtomicU32::new(5000),
            put_hold_acks: AtomicBool::new(false),
            unanswered: AtomicU32::new(0),
            paused: tokio::sync::watch::channel(false).0,
            rng: Mutex::new(0x9E37_79B9_7F4A_7C15),
        }
    }
}

/// Takes one from a counter if it is above zero.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Stops answering (`true`) or goes on (`false`): requests that came
    /// meanwhile are answered late and bodies send what they held, as
    /// after a peer stopped and continued (SIGSTOP, SIGCONT).
    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Returns once the server is not paused.
    pub(crate) async fn unpaused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }

    fn random(&self) -> u64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Where to cut the next connection, if it is to be cut.
    fn next_cut(&self) -> Option<u64> {
        if !take(&self.cuts) {
            return None;
        }
        let fixed = self.cut_after.load(Ordering::SeqCst);
        if fixed > 0 {
            return Some(fixed);
        }
        Some(1 + self.random() % self.cut_max.load(Ordering::SeqCst).max(1))
    }

    /// Shuffles a page of results, as KVS returns them in no fixed order.
    fn shuffle<T>(&self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, (self.random() % (i as u64 + 1)) as usize);
        }
    }

    /// A stall to apply to the next body: (after bytes, how long).
    fn next_stall(&self) -> Option<(u64, Duration)> {
        let ms = self.stall_ms.swap(0, Ordering::SeqCst);
        (ms > 0).then(|| {
            (
                self.stall_after.load(Ordering::SeqCst),
                Duration::from_millis(ms),
            )
        })
    }
}

/// Counters a test can read.
#[derive(Debug, Default)]
pub struct Counters {
    pub get_data_endpoint: AtomicU32,
    pub get_media: AtomicU32,
    pub list_fragments: AtomicU32,
    pub get_media_for_fragment_list: AtomicU32,
    pub throttled: AtomicU32,
    pub cut: AtomicU32,
    pub put_media: AtomicU32,
    pub put_fragments: AtomicU32,
    /// GetMedia responses ended by the session limit.
    pub sessions_ended: AtomicU32,
    /// Requests left unanswered by the `unanswered` fault.
    pub unanswered: AtomicU32,
    pub create_stream: AtomicU32,
}

pub struct State {
    pub streams: RwLock<HashMap<String, Arc<Stream>>>,
    pub faults: Faults,
    pub counters: Counters,
    /// Access key ids that get NotAuthorizedException.
    pub denied_keys: Vec<String>,
    /// Secrets of known access keys: a request signed with one of these keys
    /// is signed again and refused (InvalidSignatureException) unless the
    /// signatures match. Other keys are accepted on the form of the header.
    pub secrets: HashMap<String, String>,
    /// For benchmarks: when each live block's last byte went out, as
    /// (fragment, block), and when each cut happened.
    pub timing: Option<Mutex<Timing>>,
    /// The PutMedia limits KVS enforces, and server options.
    pub put: PutLimits,
    /// When GetMedia responses end.
    pub session_end: SessionEnd,
    /// Every PutMedia body as received, for tests (None: not kept).
    pub put_bodies: Option<Mutex<Vec<Vec<u8>>>>,
}

/// When the server ends a GetMedia response, as KVS ends every GetMedia
/// session after about 40 to 45 minutes: the reader must resume.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionEnd {
    /// How long a response lasts (None: until the stream ends).
    pub after: Option<Duration>,
    /// End it in the middle of a chunk, not at a chunk boundary.
    pub mid_chunk: bool,
}

/// What PutMedia accepts, and how much of it the server keeps.
#[derive(Debug, Clone)]
pub struct PutLimits {
    /// Bytes a second read from one connection (KVS: 12.5 MB/s); 0: no limit.
    pub bytes_per_second: u64,
    /// PutMedia calls a second per stream (KVS: 5).
    pub calls_per_second: usize,
    /// Longest fragment (KVS: 10 s).
    pub max_fragment_ms: u64,
    /// Whole fragments kept per stream (None: all).
    pub keep: Option<usize>,
    /// An IDLE ACK after this long without data, and the end after 30 s.
    pub idle_ack: Duration,
}

impl Default for PutLimits {
    fn default() -> Self {
        PutLimits {
            bytes_per_second: 12_500_000,
            calls_per_second: 5,
            max_fragment_ms: 10_000,
            keep: None,
            idle_ack: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Default)]
pub struct Timing {
    pub blocks: HashMap<(usize, usize), std::time::Instant>,
    pub cuts: Vec<std::time::Instant>,
}

/// The keys this project's tests, benchmarks, demo and README use, with
/// their secrets.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("AKIDTEST", "test-secret"),
    ("AKIDBENCH", "bench"),
    ("AKIDDEMO", "demo"),
    ("AKIDLOCAL", "local"),
];

impl State {
    pub fn new(streams: Vec<Stream>) -> Self {
        State {
            streams: RwLock::new(
                streams
                    .into_iter()
                    .map(|s| (s.name.clone(), Arc::new(s)))
                    .collect(),
            ),
            faults: Faults::default(),
            counters: Counters::default(),
            denied_keys: vec!["AKIDDENIED".into()],
            secrets: KNOWN_KEYS
                .iter()
                .map(|(k, s)| (k.to_string(), s.to_string()))
                .collect(),
            timing: None,
            put: PutLimits::default(),
            session_end: SessionEnd::default(),
            put_bodies: None,
        }
    }

    fn stream(&self, name: Option<&str>, arn: Option<&str>) -> Option<Arc<Stream>> {
        let streams = self.streams.read().unwrap();
        match (name, arn) {
            (Some(name), _) => streams.get(name).cloned(),
            (None, Some(arn)) => streams.values().find(|s| s.arn == arn).cloned(),
            _ => None,
        }
    }

    /// The stream called `name`, if there is one.
    pub fn stream_named(&self, name: &str) -> Option<Arc<Stream>> {
        self.stream(Some(name), None)
    }

    /// The names of the streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.streams.read().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    /// Removes the stream with this ARN (DeleteStream); false if none has it.
    pub fn remove_stream(&self, arn: &str) -> bool {
        let mut streams = self.streams.write().unwrap();
        let before = streams.len();
        streams.retain(|_, s| s.arn != arn);
        streams.len() < before
    }

    /// Adds a stream (CreateStream); false if the name is taken.
    pub fn add_stream(&self, stream: Stream) -> bool {
        let mut streams = self.streams.write().unwrap();
        if streams.contains_key(&stream.name) {
            return false;
        }
        streams.insert(stream.name.clone(), Arc::new(stream));
        true
    }
}

/// Plays `call` again and again on the live `stream` (whose first call it
/// is), back to back, each with a new ContactId, so that a reader that
/// comes at any time finds a call going on, as on a Connect stream. Each
/// call is added half a call before the one before ends; the newest three
/// calls stay, so memory stays bounded.
pub async fn repeat_calls(stream: Arc<Stream>, call: synth::Call) {
    let per_call = call.fragments.max(1) as usize;
    for k in 1.. {
        loop {
            if stream.now_index() + per_call / 2 + 1 >= stream.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stream.push_call(&call.repeated(k), 3 * per_call);
    }
}

/// A running server. Dropping it stops it.
pub struct LocalKvs {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalKvs {
    /// Listens on 127.0.0.1 (port 0 picks a free one) and serves `state`.
    pub async fn start(port: u16, state: State) -> std::io::Result<LocalKvs> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], port)), state).await
    }

    /// Listens on `addr` and serves `state`.
    pub async fn start_on(addr: SocketAddr, state: State) -> std::io::Result<LocalKvs> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Self::serve(listener, state)
    }

    /// Serves `state` on a listener made elsewhere (in another network
    /// namespace, say).
    pub async fn start_with(
        listener: std::net::TcpListener,
        state: State,
    ) -> std::io::Result<LocalKvs> {
        listener.set_nonblocking(true)?;
        Self::serve(tokio::net::TcpListener::from_std(listener)?, state)
    }

    fn serve(listener: tokio::net::TcpListener, state: State) -> std::io::Result<LocalKvs> {
        let addr = listener.local_addr()?;
        let state = Arc::new(state);
        let task = tokio::spawn(http::serve(listener, state.clone(), addr));
        Ok(LocalKvs { addr, state, task })
    }

    /// The endpoint URL to give the SDK (`endpoint-uri`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalKvs {
    fn drop(&mut self) {
        self.task.abort();
    }
}
