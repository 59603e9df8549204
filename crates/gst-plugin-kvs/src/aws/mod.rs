// SPDX-License-Identifier: MPL-2.0
//! The AWS side shared by the elements: SDK clients, GetDataEndpoint,
//! GetMedia calls, what errors mean, and the one retry policy.

pub mod cause;
pub mod errors;
pub mod props;
pub mod retry;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideomedia::config::retry::RetryConfig;
use aws_sdk_kinesisvideomedia::config::{
    BehaviorVersion, Credentials, Region, SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_sdk_kinesisvideomedia::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideomedia::primitives::ByteStream;
use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use cause::Cause;

/// The runtime shared by the elements: archive read-ahead and PutMedia
/// connections run here.
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("kvs-runtime")
        .build()
        .expect("a tokio runtime")
});

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub stream_name: Option<String>,
    pub stream_arn: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub endpoint_uri: Option<String>,
}

impl Target {
    /// The stream, for messages.
    pub fn stream(&self) -> &str {
        self.stream_name
            .as_deref()
            .or(self.stream_arn.as_deref())
            .unwrap_or("?")
    }
}

/// What went wrong, sorted by what to do about it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Too many calls or connections: back off and try again.
    Throttled(String),
    /// The data endpoint may be stale: get a new one, then try again.
    Endpoint(String),
    /// A network error, a 5xx or a timeout: try again.
    Transient(String),
    /// No point trying again.
    NotFound(String),
    NotAuthorized(String),
    InvalidArgument(String),
    /// Archive mode: the range (described) holds no fragment.
    NoFragments(String),
}

impl Failure {
    /// The failure made final after `attempts` failed attempts in a row
    /// over `outage`: the kinds worth retrying say how long they were tried.
    pub fn after(self, attempts: u32, outage: Duration) -> Failure {
        let tried = |text: String| {
            format!(
                "{text} ({attempts} attempts in a row failed, over {:.0} s)",
                outage.as_secs_f64()
            )
        };
        match self {
            Failure::Throttled(t) => Failure::Throttled(tried(t)),
            Failure::Endpoint(t) => Failure::Endpoint(tried(t)),
            Failure::Transient(t) => Failure::Transient(tried(t)),
            fatal => fatal,
        }
    }
}

pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
    refresh_on_auth: bool,
) -> Failure {
    let text = || match (err.code(), err.message()) {
        // Messages are quoted inside sentences: no final period of their own.
        (Some(code), Some(msg)) => format!("{code}: {}", msg.trim_end_matches('.')),
        (Some(code), None) => code.to_string(),
        _ => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(&err)
        ),
    };
    match &err {
        SdkError::ServiceError(_) => {
            by_code(err.code().unwrap_or_default(), text(), refresh_on_auth)
        }
        // Settings no attempt can fix fail at once, whatever the variant.
        _ => match Cause::of(&text()) {
            Cause::NoCredentials => Failure::NotAuthorized(text()),
            Cause::NoRegion | Cause::BadRegion | Cause::BadEndpoint => {
                Failure::InvalidArgument(text())
            }
            _ if matches!(err, SdkError::ConstructionFailure(_)) => {
                Failure::InvalidArgument(text())
            }
            _ => Failure::Transient(text()),
        },
    }
}

/// A KVS error by its code (the `x-amzn-ErrorType`), with `text` to show.
pub fn by_code(code: &str, text: String, refresh_on_auth: bool) -> Failure {
    match code {
        "ClientLimitExceededException" | "ConnectionLimitExceededException" => {
            Failure::Throttled(text)
        }
        "ResourceNotFoundException" => Failure::NotFound(text),
        "NotAuthorizedException" if refresh_on_auth => Failure::Endpoint(text),
        "NotAuthorizedException"
        | "AccessDeniedException"
        | "MissingAuthenticationTokenException"
        | "InvalidSignatureException"
        | "UnrecognizedClientException" => Failure::NotAuthorized(text),
        "InvalidEndpointException" => Failure::Endpoint(text),
        "InvalidArgumentException" => Failure::InvalidArgument(text),
        _ => Failure::Transient(text),
    }
}

/// The SDK clients for one configuration (region, credentials, endpoint),
/// shared by every element of the process that uses it while one of them
/// runs: the TLS setup, the credentials cache (one STS call, not one per
/// call) and the clients of each data endpoint are made once.
#[derive(Clone)]
pub struct Clients(Arc<Shared>);

struct Shared {
    video: aws_sdk_kinesisvideo::Client,
    config: aws_types::SdkConfig,
    region: String,
    /// By data endpoint. Building an SDK client sets up TLS again, so each
    /// is built once.
    media: Mutex<HashMap<String, aws_sdk_kinesisvideomedia::Client>>,
    archive: Mutex<HashMap<String, aws_sdk_kinesisvideoarchivedmedia::Client>>,
}

/// What makes two targets share clients: all but the stream.
type Key = [Option<String>; 5];

static SHARED: LazyLock<Mutex<HashMap<Key, Weak<Shared>>>> = LazyLock::new(Default::default);

/// Data endpoints kept per configuration; KVS has a few per region.
const ENDPOINTS_KEPT: usize = 32;

impl Clients {
    pub async fn new(target: &Target) -> Clients {
        let key: Key = [
            target.region.clone(),
            target.access_key.clone(),
            target.secret_access_key.clone(),
            target.session_token.clone(),
            target.endpoint_uri.clone(),
        ];
        if let Some(shared) = SHARED.lock().unwrap().get(&key).and_then(Weak::upgrade) {
            return Clients(shared);
        }
        let built = Arc::new(Shared::build(target).await);
        let mut map = SHARED.lock().unwrap();
        map.retain(|_, w| w.strong_count() > 0);
        // Another element may have built the same meanwhile: keep one.
        if let Some(shared) = map.get(&key).and_then(Weak::upgrade) {
            return Clients(shared);
        }
        map.insert(key, Arc::downgrade(&built));
        Clients(built)
    }

    pub fn region(&self) -> &str {
        &self.0.region
    }

    /// The control-plane client (DescribeStream, CreateStream).
    pub fn video(&self) -> &aws_sdk_kinesisvideo::Client {
        &self.0.video
    }

    pub fn config(&self) -> &aws_types::SdkConfig {
        &self.0.config
    }

    /// Whether both use the same clients.
    #[cfg(test)]
    pub fn same(&self, other: &Clients) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// GetDataEndpoint: where the stream's `api` calls go.
    pub async fn data_endpoint(&self, target: &Target, api: ApiName) -> Result<String, Failure> {
        let out = self
            .0
            .video
            .get_data_endpoint()
            .set_stream_name(target.stream_name.clone())
            .set_stream_arn(target.stream_arn.clone())
            .api_name(api)
            .send()
            .await
            .map_err(|e| classify(e, false))?;
        out.data_endpoint
            .ok_or_else(|| Failure::Transient("GetDataEndpoint returned no endpoint".into()))
    }

    /// A client for the stream's GetMedia endpoint.
    pub async fn media_client(
        &self,
        target: &Target,
    ) -> Result<aws_sdk_kinesisvideomedia::Client, Failure> {
        let endpoint = self.data_endpoint(target, ApiName::GetMedia).await?;
        Ok(kept(&self.0.media, endpoint, |url| {
            let conf = aws_sdk_kinesisvideomedia::config::Builder::from(&self.0.config)
                .endpoint_url(url)
                .build();
            aws_sdk_kinesisvideomedia::Client::from_conf(conf)
        }))
    }

    /// A client for the stream's ListFragments or GetMediaForFragmentList
    /// endpoint.
    pub async fn archive_client(
        &self,
        target: &Target,
        api: ApiName,
    ) -> Result<aws_sdk_kinesisvideoarchivedmedia::Client, Failure> {
        let endpoint = self.data_endpoint(target, api).await?;
        Ok(kept(&self.0.archive, endpoint, |url| {
            let conf = aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(&self.0.config)
                .endpoint_url(url)
                .build();
            aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(conf)
        }))
    }
}

impl Shared {
    async fn build(target: &Target) -> Shared {
        // No idle connections are kept: a connection's task runs on the
        // runtime that opened it, and each live source has a runtime of its
        // own that ends with it. GetMedia bodies are long anyway.
        let http = aws_smithy_http_client::Builder::new()
            .pool_max_idle_per_host(0)
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            // Our own watchdog handles quiet bodies: a live GetMedia may wait
            // seconds for the next fragment.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            // Every attempt is the one retry policy's (`retry.rs`), so that
            // max-retries, max-outage and the log count every one.
            .retry_config(RetryConfig::disabled());
        if let Some(region) = &target.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let (Some(key), Some(secret)) = (&target.access_key, &target.secret_access_key) {
            let creds = Credentials::new(
                key,
                secret,
                target.session_token.clone(),
                None,
                "kvsgetmediasrc",
            );
            loader = loader.credentials_provider(SharedCredentialsProvider::new(creds));
        }
        if let Some(uri) = &target.endpoint_uri {
            loader = loader.endpoint_url(uri);
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map_or("(no region)".into(), |r| r.to_string());
        Shared {
            video: aws_sdk_kinesisvideo::Client::new(&config),
            config,
            region,
            media: Mutex::default(),
            archive: Mutex::default(),
        }
    }
}

/// The client kept for `endpoint`, built by `build` the first time.
fn kept<C: Clone>(
    clients: &Mutex<HashMap<String, C>>,
    endpoint: String,
    build: impl FnOnce(&str) -> C,
) -> C {
    let mut clients = clients.lock().unwrap();
    if let Some(client) = clients.get(&endpoint) {
        return client.clone();
    }
    if clients.len() >= ENDPOINTS_KEPT {
        clients.clear();
    }
    let client = build(&endpoint);
    clients.insert(endpoint, client.clone());
    client
}

/// Keeps calls to one API within KVS's limit of 5 a second.
#[derive(Debug, Default)]
pub struct Pace(VecDeque<Instant>);

impl Pace {
    /// Waits, if needed, then counts a call.
    pub async fn call(&mut self) {
        if self.0.len() == 5 {
            let oldest = self.0.pop_front().unwrap();
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(oldest.elapsed())).await;
        }
        self.0.push_back(Instant::now());
    }
}

/// How to start or resume a GetMedia.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Now,
    Earliest,
    AfterFragment(String),
    ServerTimestamp(f64),
    ProducerTimestamp(f64),
    ContinuationToken(String),
}

impl Start {
    fn selector(&self) -> StartSelector {
        let b = StartSelector::builder();
        let b = match self {
            Start::Now => b.start_selector_type(StartSelectorType::Now),
            Start::Earliest => b.start_selector_type(StartSelectorType::Earliest),
            Start::AfterFragment(n) => b
                .start_selector_type(StartSelectorType::FragmentNumber)
                .after_fragment_number(n),
            Start::ServerTimestamp(t) => b
                .start_selector_type(StartSelectorType::ServerTimestamp)
                .start_timestamp(aws_smithy_types::DateTime::from_secs_f64(*t)),
            Start::ProducerTimestamp(t) => b
                .start_selector_type(StartSelectorType::ProducerTimestamp)
                .start_timestamp(aws_smithy_types::DateTime::from_secs_f64(*t)),
            Start::ContinuationToken(t) => b
                .start_selector_type(StartSelectorType::ContinuationToken)
                .continuation_token(t),
        };
        b.build().expect("the selector type is set")
    }
}

/// Calls GetMedia; the body comes back as it arrives.
pub async fn get_media(
    client: &aws_sdk_kinesisvideomedia::Client,
    target: &Target,
    start: &Start,
) -> Result<ByteStream, Failure> {
    let out = client
        .get_media()
        .set_stream_name(target.stream_name.clone())
        .set_stream_arn(target.stream_arn.clone())
        .start_selector(start.selector())
        .send()
        .await
        .map_err(|e| classify(e, true))?;
    Ok(out.payload)
}

/// Backoff before retry `attempt` (0-based), with jitter: 100 ms doubling up
/// to `max`, times a random factor in [0.5, 1.5).
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(16))
        .min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(region: &str) -> Target {
        Target {
            region: Some(region.into()),
            access_key: Some("AKIDTEST".into()),
            secret_access_key: Some("test-secret".into()),
            endpoint_uri: Some("http://127.0.0.1:9".into()),
            ..Target::default()
        }
    }

    #[test]
    fn one_configuration_shares_its_clients_while_used() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A region of this test's own, so that other tests' clients don't count.
        let a = rt.block_on(Clients::new(&target("eu-test-1")));
        let b = rt.block_on(Clients::new(&Target {
            stream_name: Some("another".into()),
            ..target("eu-test-1")
        }));
        assert!(a.same(&b), "the stream does not matter");
        assert_eq!(b.region(), "eu-test-1");
        let other = rt.block_on(Clients::new(&target("eu-test-2")));
        assert!(!a.same(&other), "the region does matter");
        let other_key = rt.block_on(Clients::new(&Target {
            access_key: Some("AKIDOTHER".into()),
            ..target("eu-test-1")
        }));
        assert!(!a.same(&other_key), "the credentials do matter");
        // Once no element uses them, they go.
        let weak = Arc::downgrade(&a.0);
        drop((a, b));
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn clients_are_kept_per_endpoint_within_a_bound() {
        let kept_map: Mutex<HashMap<String, usize>> = Mutex::default();
        let mut built = 0;
        let mut get = |endpoint: &str| {
            kept(&kept_map, endpoint.to_string(), |_| {
                built += 1;
                built
            })
        };
        assert_eq!(get("https://a"), 1);
        assert_eq!(get("https://a"), 1, "built once");
        assert_eq!(get("https://b"), 2);
        for i in 0..ENDPOINTS_KEPT {
            get(&format!("https://c{i}"));
        }
        assert!(kept_map.lock().unwrap().len() <= ENDPOINTS_KEPT);
    }
}
