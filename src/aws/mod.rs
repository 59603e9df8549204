// SPDX-License-Identifier: MPL-2.0
//! The AWS side shared by the elements: SDK clients, GetDataEndpoint,
//! GetMedia calls, what errors mean, and the one retry policy.

pub mod props;
pub mod retry;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideomedia::config::{
    BehaviorVersion, Credentials, Region, SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_sdk_kinesisvideomedia::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideomedia::primitives::ByteStream;
use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The runtime shared by the elements: archive read-ahead and PutMedia
/// connections run here.
pub static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
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
    /// Archive mode: the range holds no fragment.
    NoFragments,
}

pub fn sort<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
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
        // No credentials shows as a failure to sign, whatever the variant.
        _ if text().to_lowercase().contains("credential") => Failure::NotAuthorized(text()),
        SdkError::ConstructionFailure(_) => Failure::InvalidArgument(text()),
        _ => Failure::Transient(text()),
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

pub struct Clients {
    video: aws_sdk_kinesisvideo::Client,
    config: aws_types::SdkConfig,
    pub region: String,
}

impl Clients {
    pub async fn new(target: &Target) -> Clients {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            // Our own watchdog handles quiet bodies: a live GetMedia may wait
            // seconds for the next fragment.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
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
        Clients {
            video: aws_sdk_kinesisvideo::Client::new(&config),
            config,
            region,
        }
    }

    /// The control-plane client (DescribeStream, CreateStream).
    pub fn video(&self) -> &aws_sdk_kinesisvideo::Client {
        &self.video
    }

    pub fn config(&self) -> &aws_types::SdkConfig {
        &self.config
    }

    /// GetDataEndpoint: where the stream's `api` calls go.
    pub async fn data_endpoint(&self, target: &Target, api: ApiName) -> Result<String, Failure> {
        let out = self
            .video
            .get_data_endpoint()
            .set_stream_name(target.stream_name.clone())
            .set_stream_arn(target.stream_arn.clone())
            .api_name(api)
            .send()
            .await
            .map_err(|e| sort(e, false))?;
        out.data_endpoint
            .ok_or_else(|| Failure::Transient("GetDataEndpoint returned no endpoint".into()))
    }

    /// A client for the stream's GetMedia endpoint.
    pub async fn media_client(
        &self,
        target: &Target,
    ) -> Result<aws_sdk_kinesisvideomedia::Client, Failure> {
        let endpoint = self.data_endpoint(target, ApiName::GetMedia).await?;
        let conf = aws_sdk_kinesisvideomedia::config::Builder::from(&self.config)
            .endpoint_url(endpoint)
            .build();
        Ok(aws_sdk_kinesisvideomedia::Client::from_conf(conf))
    }

    /// A client for the stream's ListFragments or GetMediaForFragmentList
    /// endpoint.
    pub async fn archive_client(
        &self,
        target: &Target,
        api: ApiName,
    ) -> Result<aws_sdk_kinesisvideoarchivedmedia::Client, Failure> {
        let endpoint = self.data_endpoint(target, api).await?;
        let conf = aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(&self.config)
            .endpoint_url(endpoint)
            .build();
        Ok(aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(conf))
    }
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
        .map_err(|e| sort(e, true))?;
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
