// SPDX-License-Identifier: MPL-2.0
//! One PutMedia connection: the POST signed with SigV4 as AWS's producers
//! sign it (the empty-payload hash), sent over the SDK's HTTP client, its
//! body fed through a channel and its response read as the ACK stream.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesisvideo::config::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::shared::Config;
use crate::aws::{Clients, Failure, by_code};

pub struct Connection {
    pub tx: BodyTx,
    pub acks: ByteStream,
    /// Replace the connection at the first fragment boundary after this.
    pub rotate_at: Instant,
}

/// Feeds the request body. Dropped without [`BodyTx::finish`], it aborts
/// the request, so that KVS never takes half a fragment as whole.
pub struct BodyTx {
    tx: mpsc::Sender<Bytes>,
    clean: Arc<AtomicBool>,
}

impl BodyTx {
    /// False when the connection is gone.
    pub async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    /// Ends the body cleanly, at a fragment boundary.
    pub fn finish(self) {
        self.clean.store(true, Ordering::SeqCst);
    }
}

/// The request body: what `rx` brings; when it closes, a clean end after
/// [`BodyTx::finish`], else an error that aborts the request.
fn channel_body(mut rx: mpsc::Receiver<Bytes>, clean: Arc<AtomicBool>) -> SdkBody {
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| match b {
            Some(b) => Some(Ok(Frame::data(b))),
            None if clean.load(Ordering::SeqCst) => None,
            None => Some(Err(io::Error::other("PutMedia body abandoned"))),
        })
    });
    SdkBody::from_body_1_x(http_body_util::StreamBody::new(frames))
}

/// Opens a signed PutMedia POST to `endpoint`: its body's sender, the
/// ACK stream, and when to rotate it.
pub async fn open(
    http: &aws_smithy_http_client::Connector,
    clients: &Clients,
    cfg: &Config,
    endpoint: &str,
) -> Result<Connection, Failure> {
    let provider = clients
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
    let target = &cfg.target;
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
            .region(clients.region())
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
    let clean = Arc::new(AtomicBool::new(false));
    let mut request = HttpRequest::new(channel_body(rx, clean.clone()));
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
    let response = http
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
    let left = expires.map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
    Ok(Connection {
        tx: BodyTx { tx, clean },
        acks: ByteStream::new(response.into_body()),
        rotate_at: Instant::now() + lifetime(cfg.max_age, left, cfg.credentials_margin),
    })
}

/// How long a connection may serve: `max_age`, and less when credentials
/// with `left` to live must be replaced `margin` before they expire.
fn lifetime(max_age: Duration, left: Option<Duration>, margin: Duration) -> Duration {
    left.map_or(max_age, |left| max_age.min(left.saturating_sub(margin)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_end_before_their_credentials() {
        let s = Duration::from_secs;
        assert_eq!(lifetime(s(3000), None, s(120)), s(3000));
        assert_eq!(lifetime(s(3000), Some(s(900)), s(120)), s(780));
        assert_eq!(lifetime(s(60), Some(s(900)), s(120)), s(60));
        // Expiring within the margin: at the first fragment boundary.
        assert_eq!(lifetime(s(3000), Some(s(30)), s(120)), s(0));
    }
}
