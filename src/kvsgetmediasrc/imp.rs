// SPDX-License-Identifier: MPL-2.0
//! kvsgetmediasrc: a live PushSrc over GetMedia, on a shared tokio runtime.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use tokio::sync::watch;

use super::StartSelector;
use super::aws::{Failure, Start, Target};
use super::session::{Next, Policy, Session, Stats};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvsgetmediasrc",
        gst::DebugColorFlags::empty(),
        Some("Kinesis Video Streams GetMedia source"),
    )
});

pub(super) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("kvs-runtime")
        .build()
        .expect("a tokio runtime")
});

#[derive(Debug, Clone)]
struct Settings {
    target: Target,
    start_selector: StartSelector,
    fragment_number: Option<String>,
    start_timestamp: Option<String>,
    continuation_token: Option<String>,
    idle_timeout_ms: u32,
    read_timeout_ms: u32,
    max_retries: u32,
    max_backoff_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target: Target::default(),
            start_selector: StartSelector::Now,
            fragment_number: None,
            start_timestamp: None,
            continuation_token: None,
            idle_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            max_retries: 10,
            max_backoff_ms: 5_000,
        }
    }
}

/// Seconds since the Unix epoch from RFC 3339 or a number of seconds.
fn parse_timestamp(s: &str) -> Option<f64> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Some(secs);
    }
    let t = aws_smithy_types::DateTime::from_str(
        s.trim(),
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    Some(t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9)
}

impl Settings {
    /// Checks the settings and says how to start.
    fn start(&self) -> Result<Start, String> {
        if self.target.stream_name.is_none() && self.target.stream_arn.is_none() {
            return Err("Set stream-name or stream-arn".into());
        }
        if self.target.access_key.is_some() != self.target.secret_access_key.is_some() {
            return Err("Set both access-key and secret-access-key, or neither to use the default credential chain".into());
        }
        let need = |v: &Option<String>, prop: &str| {
            v.clone().ok_or_else(|| {
                format!(
                    "start-selector={} needs the {prop} property",
                    self.start_selector.nick()
                )
            })
        };
        let timestamp = || {
            let s = need(&self.start_timestamp, "start-timestamp")?;
            parse_timestamp(&s).ok_or(format!(
                "start-timestamp {s:?} is neither RFC 3339 (2024-05-01T12:00:00Z) nor epoch seconds"
            ))
        };
        Ok(match self.start_selector {
            StartSelector::Now => Start::Now,
            StartSelector::Earliest => Start::Earliest,
            StartSelector::FragmentNumber => {
                Start::AfterFragment(need(&self.fragment_number, "fragment-number")?)
            }
            StartSelector::ServerTimestamp => Start::ServerTimestamp(timestamp()?),
            StartSelector::ProducerTimestamp => Start::ProducerTimestamp(timestamp()?),
            StartSelector::ContinuationToken => {
                Start::ContinuationToken(need(&self.continuation_token, "continuation-token")?)
            }
        })
    }

    fn policy(&self) -> Policy {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        Policy {
            idle_timeout: if self.idle_timeout_ms == 0 {
                Duration::MAX
            } else {
                ms(self.idle_timeout_ms)
            },
            read_timeout: ms(self.read_timeout_ms),
            max_retries: self.max_retries,
            max_backoff: ms(self.max_backoff_ms),
        }
    }
}

pub struct KvsGetMediaSrc {
    settings: Mutex<Settings>,
    uri: Mutex<Option<String>>,
    session: Mutex<Option<Session>>,
    stats: Mutex<Stats>,
    cancel: watch::Sender<bool>,
}

impl KvsGetMediaSrc {
    fn post_failure(&self, failure: Failure, session: &Session) -> gst::FlowError {
        let stream = session.target().stream().to_string();
        let region = session.region().to_string();
        let msg = match failure {
            Failure::NotFound(detail) => gst::error_msg!(
                gst::ResourceError::NotFound,
                (
                    "Kinesis video stream {} was not found in region {}",
                    stream,
                    region
                ),
                ["{detail}. Check stream-name or stream-arn, and region."]
            ),
            Failure::NotAuthorized(detail) => gst::error_msg!(
                gst::ResourceError::NotAuthorized,
                (
                    "Not authorized to read Kinesis video stream {} in region {}",
                    stream,
                    region
                ),
                [
                    "{detail}. Check the credentials (access-key and secret-access-key, or the default AWS \
                     credential chain) and that they allow kinesisvideo:GetDataEndpoint and kinesisvideo:GetMedia."
                ]
            ),
            Failure::InvalidArgument(detail) => gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "Kinesis Video Streams refused the request for stream {} in region {}",
                    stream,
                    region
                ),
                ["{detail}. Check the start-selector and its value."]
            ),
            Failure::Throttled(detail) | Failure::Endpoint(detail) | Failure::Transient(detail) => {
                gst::error_msg!(
                    gst::ResourceError::Read,
                    (
                        "Could not read Kinesis video stream {} in region {}",
                        stream,
                        region
                    ),
                    ["{detail}. Gave up after the configured max-retries."]
                )
            }
        };
        self.post_error_message(msg);
        gst::FlowError::Error
    }

    /// Runs `fut` on the shared runtime unless `unlock` cancels it.
    fn block_on<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        let mut cancel = self.cancel.subscribe();
        RUNTIME.block_on(async move {
            tokio::select! {
                out = fut => Some(out),
                _ = cancel.wait_for(|c| *c) => None,
            }
        })
    }
}

#[glib::object_subclass]
impl ObjectSubclass for KvsGetMediaSrc {
    const NAME: &'static str = "GstKvsGetMediaSrc";
    type Type = super::KvsGetMediaSrc;
    type ParentType = gst_base::PushSrc;
    type Interfaces = (gst::URIHandler,);

    fn new() -> Self {
        KvsGetMediaSrc {
            settings: Mutex::new(Settings::default()),
            uri: Mutex::new(None),
            session: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
            cancel: watch::channel(false).0,
        }
    }
}

fn string_prop(name: &'static str, blurb: &'static str) -> glib::ParamSpec {
    glib::ParamSpecString::builder(name)
        .blurb(blurb)
        .mutable_ready()
        .build()
}

fn secret_prop(name: &'static str, blurb: &'static str) -> glib::ParamSpec {
    glib::ParamSpecString::builder(name)
        .blurb(blurb)
        .write_only()
        .mutable_ready()
        .build()
}

fn uint_prop(name: &'static str, blurb: &'static str, default: u32) -> glib::ParamSpec {
    glib::ParamSpecUInt::builder(name)
        .blurb(blurb)
        .default_value(default)
        .mutable_ready()
        .build()
}

impl ObjectImpl for KvsGetMediaSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                string_prop("stream-name", "Name of the Kinesis video stream (or set stream-arn)"),
                string_prop("stream-arn", "ARN of the Kinesis video stream (or set stream-name)"),
                string_prop("region", "AWS region, e.g. us-east-1 (default: the SDK's region chain: AWS_REGION, profile)"),
                string_prop(
                    "access-key",
                    "AWS access key id (default: the SDK's credential chain: environment, profile, SSO, ECS/IMDS)",
                ),
                secret_prop("secret-access-key", "AWS secret access key; write-only, never logged"),
                secret_prop("session-token", "AWS session token for temporary credentials; write-only, never logged"),
                string_prop(
                    "endpoint-uri",
                    "Control-plane endpoint to use instead of AWS's, e.g. http://127.0.0.1:4566 for a local \
                     KVS server or a VPC endpoint",
                ),
                glib::ParamSpecEnum::builder_with_default("start-selector", StartSelector::Now)
                    .blurb("Where GetMedia starts; fragment-number, start-timestamp or continuation-token give the value")
                    .mutable_ready()
                    .build(),
                string_prop("fragment-number", "With start-selector=fragment-number: start after this fragment"),
                string_prop(
                    "start-timestamp",
                    "With start-selector=server-timestamp or producer-timestamp: RFC 3339 \
                     (2024-05-01T12:00:00Z) or seconds since the Unix epoch",
                ),
                string_prop("continuation-token", "With start-selector=continuation-token: the token to resume from"),
                uint_prop(
                    "idle-timeout",
                    "Send EOS after this many milliseconds without a new fragment, however many reconnects \
                     (0 = never). This is how a finished call ends a pipeline",
                    10_000,
                ),
                uint_prop(
                    "read-timeout",
                    "Reconnect when the GetMedia body sends nothing for this many milliseconds \
                     (KVS itself ends a quiet body after about 3 s)",
                    5_000,
                ),
                uint_prop("max-retries", "Failed attempts in a row before the error is final", 10),
                uint_prop("max-backoff", "Longest wait between attempts, in milliseconds (with jitter)", 5_000),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .blurb(
                        "Counters: bytes, fragments, reconnects, throttles, endpoint-refreshes, \
                         continuation-token (of the last complete fragment), millis-behind-now",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let text = || {
            value
                .get::<Option<String>>()
                .unwrap()
                .filter(|v| !v.is_empty())
        };
        match pspec.name() {
            "stream-name" => s.target.stream_name = text(),
            "stream-arn" => s.target.stream_arn = text(),
            "region" => s.target.region = text(),
            "access-key" => s.target.access_key = text(),
            "secret-access-key" => s.target.secret_access_key = text(),
            "session-token" => s.target.session_token = text(),
            "endpoint-uri" => s.target.endpoint_uri = text(),
            "start-selector" => s.start_selector = value.get().unwrap(),
            "fragment-number" => s.fragment_number = text(),
            "start-timestamp" => s.start_timestamp = text(),
            "continuation-token" => s.continuation_token = text(),
            "idle-timeout" => s.idle_timeout_ms = value.get().unwrap(),
            "read-timeout" => s.read_timeout_ms = value.get().unwrap(),
            "max-retries" => s.max_retries = value.get().unwrap(),
            "max-backoff" => s.max_backoff_ms = value.get().unwrap(),
            _ => unreachable!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "stream-name" => s.target.stream_name.to_value(),
            "stream-arn" => s.target.stream_arn.to_value(),
            "region" => s.target.region.to_value(),
            "access-key" => s.target.access_key.to_value(),
            "endpoint-uri" => s.target.endpoint_uri.to_value(),
            "start-selector" => s.start_selector.to_value(),
            "fragment-number" => s.fragment_number.to_value(),
            "start-timestamp" => s.start_timestamp.to_value(),
            "continuation-token" => s.continuation_token.to_value(),
            "idle-timeout" => s.idle_timeout_ms.to_value(),
            "read-timeout" => s.read_timeout_ms.to_value(),
            "max-retries" => s.max_retries.to_value(),
            "max-backoff" => s.max_backoff_ms.to_value(),
            "stats" => {
                let st = self.stats.lock().unwrap();
                gst::Structure::builder("kvsgetmediasrc-stats")
                    .field("bytes", st.bytes)
                    .field("fragments", st.fragments)
                    .field("reconnects", st.reconnects)
                    .field("throttles", st.throttles)
                    .field("endpoint-refreshes", st.endpoint_refreshes)
                    .field(
                        "continuation-token",
                        st.continuation_token.as_deref().unwrap_or(""),
                    )
                    .field("millis-behind-now", st.millis_behind_now.unwrap_or(0))
                    .build()
                    .to_value()
            }
            // Secrets are write-only.
            _ => unreachable!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Bytes);
    }
}

impl GstObjectImpl for KvsGetMediaSrc {}

impl ElementImpl for KvsGetMediaSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams GetMedia source",
                "Source/Network",
                "Reads a Kinesis video stream with GetMedia as the bytes arrive, and resumes exactly \
                 after any drop from the last complete fragment",
                "gst-plugin-kvs developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // video/x-kvs-matroska first: decodebin then plugs kvsaudiodemux
            // (matroskademux does not take it) while ordinary files keep
            // going to matroskademux. Downstream that only takes
            // video/x-matroska gets that.
            let mut caps = gst::Caps::new_empty_simple("video/x-kvs-matroska");
            caps.get_mut()
                .unwrap()
                .append(gst::Caps::new_empty_simple("video/x-matroska"));
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl URIHandlerImpl for KvsGetMediaSrc {
    const URI_TYPE: gst::URIType = gst::URIType::Src;

    fn protocols() -> &'static [&'static str] {
        &["kvs"]
    }

    fn uri(&self) -> Option<String> {
        self.uri.lock().unwrap().clone()
    }

    fn set_uri(&self, uri: &str) -> Result<(), glib::Error> {
        let props =
            super::uri::parse(uri).map_err(|e| glib::Error::new(gst::URIError::BadUri, &e))?;
        let obj = self.obj();
        for (name, value) in props {
            obj.set_property_from_str(name, &value);
        }
        *self.uri.lock().unwrap() = Some(uri.to_string());
        Ok(())
    }
}

impl BaseSrcImpl for KvsGetMediaSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let start = settings
            .start()
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{}", e)))?;
        gst::debug!(
            CAT,
            imp = self,
            "Starting {} with {start:?}",
            settings.target.stream()
        );
        let session = RUNTIME.block_on(Session::new(
            settings.target.clone(),
            start,
            settings.policy(),
        ));
        *self.stats.lock().unwrap() = Stats::default();
        *self.session.lock().unwrap() = Some(session);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.session.lock().unwrap() = None;
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.cancel.send_replace(true);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.cancel.send_replace(false);
        Ok(())
    }
}

impl PushSrcImpl for KvsGetMediaSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut guard = self.session.lock().unwrap();
        let session = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let next = self.block_on(session.next());
        *self.stats.lock().unwrap() = session.stats.clone();
        match next {
            None => Err(gst::FlowError::Flushing),
            Some(Ok(Next::Data(bytes, discont))) => {
                let mut buffer = gst::Buffer::from_slice(bytes);
                if discont {
                    gst::debug!(CAT, imp = self, "Resumed after a drop");
                    buffer
                        .get_mut()
                        .unwrap()
                        .set_flags(gst::BufferFlags::DISCONT);
                }
                Ok(CreateSuccess::NewBuffer(buffer))
            }
            Some(Ok(Next::Idle)) => {
                gst::info!(CAT, imp = self, "No new fragment within idle-timeout: EOS");
                Err(gst::FlowError::Eos)
            }
            Some(Err(failure)) => Err(self.post_failure(failure, session)),
        }
    }
}
