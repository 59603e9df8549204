// SPDX-License-Identifier: MPL-2.0
//! The PutMedia side of kvsputmediasink: one long-lived signed POST at a
//! time, fed from the fragment store as it grows, its acknowledgements read
//! as they arrive. Fragments are let go only when KVS has them; after a
//! drop, an error ACK or a throttle, sending starts again at the first
//! fragment KVS has not acknowledged. Connections are rotated at fragment
//! boundaries.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesisvideo::config::ProvideCredentials;
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{Notify, mpsc};

use super::imp::CAT;
use crate::aws::retry::{Counts, Retry};
use crate::aws::{Clients, Failure, Pace, Target, by_code, sort};
use crate::put::ack::{self, Event, Remedy};
use crate::put::fragments::Fragments;

/// How a session runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub create_stream: bool,
    pub retention_hours: u32,
    pub media_type: String,
    /// Rotate the connection at the first fragment boundary after this.
    pub max_age: Duration,
    /// Rotate this long before the credentials expire.
    pub credentials_margin: Duration,
    pub max_retries: u32,
    pub max_backoff: Duration,
    /// Reconnect after an ERROR ACK that sending again can fix.
    pub restart_on_error: bool,
    /// Bytes a second at most (KVS reads 12.5 MB/s); 0: no limit.
    pub rate: u64,
    /// A connection with no acknowledgement for this long is dead.
    pub staleness: Duration,
}

/// The fragments and what the element and the session tell each other.
pub struct Store {
    pub fragments: Fragments,
    /// Input has ended and the last fragment is closed.
    pub eos: bool,
    /// A connection that was rotated away lost acknowledgements: send
    /// again from the oldest fragment not acknowledged.
    pub resend: bool,
    /// The session has stopped for good.
    pub stopped: bool,
    /// The fragment the sender is in the middle of: not to be dropped.
    pub in_flight: Option<u64>,
}

/// Counts for the `stats` property.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub connections: u64,
    pub fragments_sent: u64,
    pub fragments_persisted: u64,
    pub fragments_resent: u64,
    pub fragments_dropped: u64,
    pub bytes_sent: u64,
    pub errors: u64,
    pub throttles: u64,
    pub endpoint_refreshes: u64,
    pub last_latency_ms: u64,
    pub max_latency_ms: u64,
    pub total_latency_ms: u64,
}

impl Counts for Stats {
    fn throttled(&mut self) {
        self.throttles += 1;
    }

    fn refreshed(&mut self) {
        self.endpoint_refreshes += 1;
    }
}

pub struct Shared {
    pub store: Mutex<Store>,
    /// Signalled when fragments are let go (room in the store).
    pub space: Condvar,
    /// Woken when there is more to send.
    pub wake: Notify,
    pub stats: Mutex<Stats>,
    /// KVS sends PERSISTED (the stream keeps data); else RECEIVED is final.
    persisted: AtomicBool,
}

impl Shared {
    pub fn new(fragments: Fragments) -> Self {
        Shared {
            store: Mutex::new(Store {
                fragments,
                eos: false,
                resend: false,
                stopped: false,
                in_flight: None,
            }),
            space: Condvar::new(),
            wake: Notify::new(),
            stats: Mutex::new(Stats::default()),
            persisted: AtomicBool::new(true),
        }
    }
}

/// What the session tells the element.
#[derive(Debug, Clone)]
pub enum Report {
    /// KVS has the fragment.
    Acknowledged {
        timecode: u64,
        number: String,
        latency: Duration,
        sends: u32,
    },
    /// Sending stopped and will start again.
    Retrying(String),
    /// Every fragment is acknowledged after the end of input.
    Done,
    /// A failure that ends the session.
    Failed(Stop),
}

/// Why a session stopped for good.
#[derive(Debug, Clone)]
pub enum Stop {
    Failure(Failure),
    /// An ERROR ACK: its ErrorId and the fragment timecode.
    Ack(u32, Option<u64>),
}

pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

/// Runs until every fragment is acknowledged after the end of input, or
/// until a failure that cannot be retried.
pub async fn run(shared: Arc<Shared>, cfg: Config, report: Reporter) {
    let result = Session::new(shared.clone(), cfg, report.clone())
        .await
        .run()
        .await;
    shared.store.lock().unwrap().stopped = true;
    shared.space.notify_all();
    report(match result {
        Ok(()) => Report::Done,
        Err(stop) => Report::Failed(stop),
    });
}

/// How one connection ended.
enum Outcome {
    /// At a fragment boundary, to go on with a new connection from `next`.
    Rotate(u64),
    /// Input ended and every fragment is acknowledged.
    Done,
    /// Lost acknowledgements on an older connection: start again from
    /// the oldest fragment not acknowledged.
    Resend,
    Broken(Failure),
    ErrorAck(u32, Option<u64>),
}

struct Session {
    shared: Arc<Shared>,
    cfg: Config,
    report: Reporter,
    clients: Clients,
    http: aws_smithy_http_client::Connector,
    endpoint: Option<String>,
    retry: Retry,
}

impl Session {
    async fn new(shared: Arc<Shared>, cfg: Config, report: Reporter) -> Session {
        let clients = Clients::new(&cfg.target).await;
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(10))
            .build();
        let http = aws_smithy_http_client::Connector::builder()
            .connector_settings(settings)
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build();
        let retry = Retry::new(*CAT, cfg.target.stream(), cfg.max_retries, cfg.max_backoff);
        Session {
            shared,
            cfg,
            report,
            clients,
            http,
            endpoint: None,
            retry,
        }
    }

    fn stream(&self) -> &str {
        self.cfg.target.stream()
    }

    /// Waits after a failure, or gives it back as final.
    async fn recover(&mut self, what: &str, failure: Failure) -> Result<(), Stop> {
        self.shared.stats.lock().unwrap().errors += 1;
        (self.report)(Report::Retrying(format!("{failure:?}")));
        let mut stats = Stats::default();
        let refresh = self
            .retry
            .recover(what, failure, &mut stats)
            .await
            .map_err(Stop::Failure)?;
        {
            let mut s = self.shared.stats.lock().unwrap();
            s.throttles += stats.throttles;
            s.endpoint_refreshes += stats.endpoint_refreshes;
        }
        if refresh {
            self.endpoint = None;
        }
        Ok(())
    }

    async fn run(mut self) -> Result<(), Stop> {
        while let Err(failure) = self.prepare().await {
            self.recover("DescribeStream", failure).await?;
        }
        let mut pace = Pace::default();
        let mut from = None;
        loop {
            if !self.wait_for_work().await {
                return Ok(());
            }
            if self.endpoint.is_none() {
                match self
                    .clients
                    .data_endpoint(&self.cfg.target, ApiName::PutMedia)
                    .await
                {
                    Ok(e) => self.endpoint = Some(e),
                    Err(failure) => {
                        self.recover("GetDataEndpoint", failure).await?;
                        continue;
                    }
                }
            }
            pace.call().await;
            let start = {
                let mut store = self.shared.store.lock().unwrap();
                store.resend = false;
                let first = store.fragments.first();
                from.take().filter(|&f| f >= first).unwrap_or(first)
            };
            let outcome = match self.connect().await {
                Ok(conn) => self.send(conn, start).await,
                Err(failure) => Outcome::Broken(failure),
            };
            match outcome {
                Outcome::Rotate(next) => {
                    self.retry.succeeded();
                    from = Some(next);
                }
                Outcome::Done => return Ok(()),
                Outcome::Resend => {
                    gst::info!(
                        CAT,
                        "Stream {}: acknowledgements were lost; sending again from the oldest fragment not acknowledged",
                        self.stream()
                    );
                }
                Outcome::Broken(failure) => self.recover("PutMedia", failure).await?,
                Outcome::ErrorAck(id, timecode) => {
                    let (meaning, _, remedy) = ack::explain(id);
                    if remedy == Remedy::Fatal || !self.cfg.restart_on_error {
                        return Err(Stop::Ack(id, timecode));
                    }
                    let failure = Failure::Transient(format!("ERROR ACK {id}: {meaning}"));
                    self.recover("PutMedia", failure).await?;
                }
            }
        }
    }

    /// DescribeStream, and CreateStream when the stream is missing and
    /// creating it is allowed. Learns whether KVS will send PERSISTED.
    async fn prepare(&mut self) -> Result<(), Failure> {
        let target = &self.cfg.target;
        let described = self
            .clients
            .video()
            .describe_stream()
            .set_stream_name(target.stream_name.clone())
            .set_stream_arn(target.stream_arn.clone())
            .send()
            .await;
        let retention = match described {
            Ok(out) => out
                .stream_info
                .and_then(|i| i.data_retention_in_hours)
                .unwrap_or(1),
            Err(e) => match sort(e, false) {
                Failure::NotFound(_) if self.cfg.create_stream && target.stream_name.is_some() => {
                    let name = target.stream_name.clone().unwrap();
                    self.clients
                        .video()
                        .create_stream()
                        .stream_name(&name)
                        .data_retention_in_hours(self.cfg.retention_hours as i32)
                        .media_type(&self.cfg.media_type)
                        .send()
                        .await
                        .map_err(|e| sort(e, false))?;
                    gst::info!(
                        CAT,
                        "Stream {name}: created, keeping data {} h",
                        self.cfg.retention_hours
                    );
                    self.cfg.retention_hours as i32
                }
                Failure::NotFound(text) => {
                    return Err(Failure::NotFound(format!(
                        "{text} (set create-stream=true to create it)"
                    )));
                }
                // Without DescribeStream permission, expect PERSISTED.
                Failure::NotAuthorized(text) => {
                    gst::warning!(
                        CAT,
                        "Stream {}: DescribeStream is not allowed ({text}); expecting PERSISTED acknowledgements",
                        self.stream()
                    );
                    1
                }
                other => return Err(other),
            },
        };
        self.shared.persisted.store(retention > 0, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until there is a fragment to send; false when input has
    /// ended and every fragment is acknowledged.
    async fn wait_for_work(&self) -> bool {
        loop {
            let notified = self.shared.wake.notified();
            {
                let store = self.shared.store.lock().unwrap();
                if !store.fragments.is_empty() {
                    return true;
                }
                if store.eos {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Opens a signed PutMedia POST: its body's sender, the ACK stream,
    /// and when the credentials expire.
    async fn connect(&mut self) -> Result<Connection, Failure> {
        let endpoint = self.endpoint.clone().unwrap_or_default();
        let provider = self
            .clients
            .config()
            .credentials_provider()
            .ok_or_else(|| Failure::NotAuthorized("no AWS credentials were found".into()))?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| Failure::NotAuthorized(format!("no AWS credentials: {e}")))?;
        let expires = creds.expiry();
        let now = SystemTime::now();
        let start = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let target = &self.cfg.target;
        let mut headers = vec![
            ("x-amzn-fragment-acknowledgment-required", "1".to_string()),
            ("x-amzn-fragment-timecode-type", "ABSOLUTE".to_string()),
            ("x-amzn-producer-start-timestamp", format!("{start:.3}")),
        ];
        match (&target.stream_name, &target.stream_arn) {
            (Some(name), _) => headers.push(("x-amzn-stream-name", name.clone())),
            (None, Some(arn)) => headers.push(("x-amzn-stream-arn", arn.clone())),
            _ => {
                return Err(Failure::InvalidArgument(
                    "no stream-name or stream-arn".into(),
                ));
            }
        }
        let url = format!("{}/putMedia", endpoint.trim_end_matches('/'));
        let identity = Identity::from(creds);
        let signed = {
            let request = SignableRequest::new(
                "POST",
                &url,
                headers.iter().map(|(k, v)| (*k, v.as_str())),
                SignableBody::Bytes(&[]),
            )
            .map_err(|e| Failure::InvalidArgument(format!("cannot sign PutMedia: {e}")))?;
            let params = SigningParams::builder()
                .identity(&identity)
                .region(&self.clients.region)
                .name("kinesisvideo")
                .time(now)
                .settings(SigningSettings::default())
                .build()
                .map_err(|e| Failure::InvalidArgument(format!("cannot sign PutMedia: {e}")))?
                .into();
            sign(request, &params)
                .map_err(|e| Failure::InvalidArgument(format!("cannot sign PutMedia: {e}")))?
                .into_parts()
                .0
        };
        let (tx, rx) = mpsc::channel(8);
        let mut request = HttpRequest::new(SdkBody::from_body_1_x(ChannelBody(rx)));
        request
            .set_method("POST")
            .map_err(|e| Failure::InvalidArgument(e.to_string()))?;
        request
            .set_uri(url.as_str())
            .map_err(|e| Failure::InvalidArgument(format!("bad endpoint {url}: {e}")))?;
        for (name, value) in &headers {
            request.headers_mut().insert(*name, value.clone());
        }
        for header in signed.headers() {
            request
                .headers_mut()
                .insert(header.0.to_string(), header.1.to_string());
        }
        let response = self
            .http
            .call(request)
            .await
            .map_err(|e| Failure::Transient(format!("PutMedia connection failed: {e}")))?;
        let status = response.status().as_u16();
        if status != 200 {
            let code = response
                .headers()
                .get("x-amzn-ErrorType")
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            let body = ByteStream::new(response.into_body())
                .collect()
                .await
                .map(|b| b.into_bytes())
                .unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let message = json["Message"]
                .as_str()
                .or(json["message"].as_str())
                .unwrap_or("");
            let code = if code.is_empty() {
                json["__type"].as_str().unwrap_or("").to_string()
            } else {
                code
            };
            let text = format!("{code} (HTTP {status}): {}", message.trim_end_matches('.'));
            if status >= 500 {
                return Err(Failure::Transient(text));
            }
            return Err(by_code(&code, text, false));
        }
        self.shared.stats.lock().unwrap().connections += 1;
        gst::info!(
            CAT,
            "Stream {}: PutMedia connected to {endpoint}",
            self.stream()
        );
        let expires = expires.map(|t| {
            let left = t.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left.saturating_sub(self.cfg.credentials_margin)
        });
        Ok(Connection {
            tx,
            acks: ByteStream::new(response.into_body()),
            rotate_at: expires.map_or(Instant::now() + self.cfg.max_age, |e| {
                e.min(Instant::now() + self.cfg.max_age)
            }),
        })
    }

    /// Sends from fragment `start` while reading the ACKs.
    async fn send(&self, conn: Connection, start: u64) -> Outcome {
        let Connection {
            tx,
            acks,
            rotate_at,
        } = conn;
        let mut acks = tokio::spawn(read_acks(
            self.shared.clone(),
            acks,
            self.report.clone(),
            self.cfg.staleness,
        ));
        let sender = Sender {
            shared: &self.shared,
            tx,
            rotate_at,
            rate: self.cfg.rate,
        };
        tokio::select! {
            end = sender.run(start) => match end {
                Sent::Rotate(next) => {
                    gst::debug!(CAT, "Stream {}: rotating the PutMedia connection", self.stream());
                    tokio::spawn(finish_old(self.shared.clone(), acks, next));
                    Outcome::Rotate(next)
                }
                Sent::Finished => match acks.await {
                    Ok(AcksEnd::Closed) if self.shared.store.lock().unwrap().fragments.is_empty() => {
                        Outcome::Done
                    }
                    Ok(AcksEnd::Closed) => Outcome::Broken(Failure::Transient(
                        "the connection ended before every fragment was acknowledged".into(),
                    )),
                    Ok(AcksEnd::Broken(f)) => Outcome::Broken(f),
                    Ok(AcksEnd::ErrorAck(id, t)) => Outcome::ErrorAck(id, t),
                    Err(e) => Outcome::Broken(Failure::Transient(e.to_string())),
                },
                Sent::Resend => {
                    acks.abort();
                    Outcome::Resend
                }
                Sent::Broken => {
                    acks.abort();
                    Outcome::Broken(Failure::Transient("the PutMedia connection broke while sending".into()))
                }
            },
            end = &mut acks => match end {
                Ok(AcksEnd::ErrorAck(id, t)) => Outcome::ErrorAck(id, t),
                Ok(AcksEnd::Broken(f)) => Outcome::Broken(f),
                Ok(AcksEnd::Closed) => Outcome::Broken(Failure::Transient("KVS closed the PutMedia connection".into())),
                Err(e) => Outcome::Broken(Failure::Transient(e.to_string())),
            },
        }
    }
}

struct Connection {
    tx: mpsc::Sender<Bytes>,
    acks: ByteStream,
    rotate_at: Instant,
}

/// A request body fed through a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

enum Sent {
    Rotate(u64),
    Finished,
    Resend,
    Broken,
}

/// What the sender found in the store.
enum Found {
    /// Bytes to send, whether the fragment is closed, and the offset in it
    /// they reach.
    Data(Bytes, bool, usize),
    Wait,
    Skip(u64),
    End(Sent),
}

struct Sender<'a> {
    shared: &'a Shared,
    tx: mpsc::Sender<Bytes>,
    rotate_at: Instant,
    rate: u64,
}

impl Sender<'_> {
    async fn run(self, start: u64) -> Sent {
        let began = Instant::now();
        let mut sent = 0u64;
        let (mut seq, mut offset) = (start, 0usize);
        let mut header = None;
        loop {
            let notified = self.shared.wake.notified();
            let found = self.look(seq, offset, &mut header);
            match found {
                Found::Data(bytes, closed, reached) => {
                    offset = reached;
                    sent += bytes.len() as u64;
                    if !bytes.is_empty() {
                        self.shared.stats.lock().unwrap().bytes_sent += bytes.len() as u64;
                        if self.tx.send(bytes).await.is_err() {
                            return Sent::Broken;
                        }
                    }
                    if closed {
                        (seq, offset) = (seq + 1, 0);
                    }
                    if self.rate > 0 {
                        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
                        if let Some(wait) = due.checked_sub(began.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                Found::Skip(first) => (seq, offset) = (first, 0),
                Found::Wait => notified.await,
                Found::End(end) => return end,
            }
        }
    }

    /// The next bytes to send at (`seq`, `offset`), after the connection's
    /// headers if none went yet.
    fn look(&self, seq: u64, offset: usize, header: &mut Option<Arc<Vec<u8>>>) -> Found {
        let mut store = self.shared.store.lock().unwrap();
        if offset == 0 && store.resend {
            return Found::End(Sent::Resend);
        }
        let first = store.fragments.first();
        let eos = store.eos;
        let Some(f) = store.fragments.get_mut(seq) else {
            return match () {
                _ if seq < first => Found::Skip(first),
                _ if eos => Found::End(Sent::Finished),
                _ => Found::Wait,
            };
        };
        let mut bytes = Vec::new();
        let mut again = None;
        if offset == 0 {
            match header {
                Some(h) if !Arc::ptr_eq(h, &f.header) || Instant::now() >= self.rotate_at => {
                    return Found::End(Sent::Rotate(seq));
                }
                Some(_) => {}
                None => {
                    *header = Some(f.header.clone());
                    bytes.extend_from_slice(&f.header);
                }
            }
            f.sends += 1;
            again = Some(f.sends > 1);
        } else if offset >= f.bytes.len() && !f.closed {
            return Found::Wait;
        }
        bytes.extend_from_slice(&f.bytes[offset.min(f.bytes.len())..]);
        let found = Found::Data(Bytes::from(bytes), f.closed, f.bytes.len());
        store.in_flight = (!f.closed).then_some(seq);
        drop(store);
        if let Some(again) = again {
            self.count_send(again);
        }
        found
    }

    fn count_send(&self, again: bool) {
        let mut stats = self.shared.stats.lock().unwrap();
        if again {
            stats.fragments_resent += 1;
        } else {
            stats.fragments_sent += 1;
        }
    }
}

/// How an ACK stream ended.
enum AcksEnd {
    Closed,
    Broken(Failure),
    ErrorAck(u32, Option<u64>),
}

/// Reads the ACKs of one connection, letting fragments go as KVS
/// acknowledges them.
async fn read_acks(
    shared: Arc<Shared>,
    mut body: ByteStream,
    report: Reporter,
    staleness: Duration,
) -> AcksEnd {
    let mut reader = ack::Reader::default();
    loop {
        let chunk = match tokio::time::timeout(staleness, body.next()).await {
            Err(_) => {
                return AcksEnd::Broken(Failure::Transient(format!(
                    "no acknowledgement for {} s",
                    staleness.as_secs()
                )));
            }
            Ok(None) => return AcksEnd::Closed,
            Ok(Some(Err(e))) => {
                return AcksEnd::Broken(Failure::Transient(format!(
                    "the acknowledgement stream broke: {e}"
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let acks = match reader.push(&chunk) {
            Ok(acks) => acks,
            Err(e) => return AcksEnd::Broken(Failure::Transient(e)),
        };
        for a in acks {
            let final_event = if shared.persisted.load(Ordering::SeqCst) {
                Event::Persisted
            } else {
                Event::Received
            };
            match a.event {
                Event::Error => return AcksEnd::ErrorAck(a.error_id.unwrap_or(5000), a.timecode),
                e if e == final_event => {
                    let Some(timecode) = a.timecode else {
                        continue;
                    };
                    let released = shared.store.lock().unwrap().fragments.release(timecode);
                    if released.is_empty() {
                        continue;
                    }
                    shared.space.notify_all();
                    let mut stats = shared.stats.lock().unwrap();
                    for f in released {
                        let latency = f.closed_at.map_or(Duration::ZERO, |t| t.elapsed());
                        let ms = latency.as_millis() as u64;
                        stats.fragments_persisted += 1;
                        stats.last_latency_ms = ms;
                        stats.max_latency_ms = stats.max_latency_ms.max(ms);
                        stats.total_latency_ms += ms;
                        report(Report::Acknowledged {
                            timecode: f.timecode,
                            number: a.number.clone().unwrap_or_default(),
                            latency,
                            sends: f.sends,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// After a rotation: the old connection's last ACKs. If they do not all
/// come, the fragments it carried are sent again.
async fn finish_old(shared: Arc<Shared>, acks: tokio::task::JoinHandle<AcksEnd>, next: u64) {
    let end = acks.await;
    let mut store = shared.store.lock().unwrap();
    let missing = store.fragments.first() < next && !store.fragments.is_empty();
    if !matches!(end, Ok(AcksEnd::Closed)) || missing {
        store.resend = true;
        drop(store);
        shared.wake.notify_one();
    }
}
