// SPDX-License-Identifier: MPL-2.0
//! kvsgetmediasrc: a PushSrc over GetMedia (live) or ListFragments and
//! GetMediaForFragmentList (archive), on a shared tokio runtime.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use tokio::sync::watch;

use super::archive::{self, Archive, Progress};
use super::session::{Next, Session, Stats};
use super::settings::{self, Plan, Settings};
use crate::aws::{Failure, Target};

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvsgetmediasrc",
        gst::DebugColorFlags::empty(),
        Some("Kinesis Video Streams GetMedia source"),
    )
});

use crate::aws::RUNTIME;

/// A started source: what reads the stream, and where its futures run.
struct Running {
    reader: Reader,
    /// Live mode runs on a runtime of its own, driven by the streaming thread
    /// inside `create()`: the socket wakes that thread directly, with no
    /// hand-off between threads for each chunk (the main cost with many
    /// calls in one process). Archive mode uses the shared `RUNTIME`, whose
    /// workers read ahead while the streaming thread pushes. Declared after
    /// `reader` so that it is dropped last.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What reads the stream.
enum Reader {
    Live(Box<Session>),
    Archive(Box<Archive>),
}

impl Reader {
    async fn next(&mut self) -> Result<Next, Failure> {
        match self {
            Reader::Live(s) => s.next().await,
            Reader::Archive(a) => a.next().await,
        }
    }

    fn stats(&self) -> &Stats {
        match self {
            Reader::Live(s) => &s.stats,
            Reader::Archive(a) => &a.stats,
        }
    }

    fn where_(&self) -> (&Target, &str) {
        match self {
            Reader::Live(s) => (s.target(), s.region()),
            Reader::Archive(a) => (a.target(), a.region()),
        }
    }
}

/// Archive progress messages go out when fragments complete, at most this
/// often, and also whenever this long has passed since the last one.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
const PROGRESS_AT_LEAST: Duration = Duration::from_secs(1);

pub struct KvsGetMediaSrc {
    settings: Mutex<Settings>,
    uri: Mutex<Option<String>>,
    running: Mutex<Option<Running>>,
    stats: Mutex<Stats>,
    /// Archive mode, once listed; read by queries.
    progress: Mutex<Option<Progress>>,
    /// Archive mode, once listed: each fragment's (ms, bytes), for seeks.
    table: Mutex<Option<Vec<(u64, u64)>>>,
    last_progress: Mutex<Option<Instant>>,
    cancel: watch::Sender<bool>,
}

impl KvsGetMediaSrc {
    fn post_failure(&self, failure: Failure, reader: &Reader) -> gst::FlowError {
        let (target, region) = reader.where_();
        let (stream, region) = (target.stream().to_string(), region.to_string());
        let msg = match failure {
            Failure::NoFragments => {
                let Reader::Archive(a) = reader else {
                    unreachable!("only archive mode lists fragments")
                };
                let r = a.range();
                gst::error_msg!(
                    gst::ResourceError::NotFound,
                    (
                        "Kinesis video stream {} in region {} has no fragments from {} to {} ({} timestamps)",
                        stream,
                        region,
                        r.start,
                        r.end,
                        if r.producer { "producer" } else { "server" }
                    ),
                    [
                        "ListFragments returned nothing. Check start-timestamp, end-timestamp, timestamp-type \
                         and the stream's data retention."
                    ]
                )
            }
            Failure::NotFound(detail) => gst::error_msg!(
                gst::ResourceError::NotFound,
                (
                    "Kinesis video stream {} was not found in region {}",
                    stream,
                    region
                ),
                ["{detail}. Check stream-name or stream-arn, and region."]
            ),
            Failure::NotAuthorized(detail) if detail.contains("no credentials found") => {
                gst::error_msg!(
                    gst::ResourceError::NotAuthorized,
                    (
                        "No AWS credentials to read Kinesis video stream {} in region {}",
                        stream,
                        region
                    ),
                    [
                        "{detail}. Set access-key and secret-access-key, or give the default AWS credential \
                         chain what it looks for: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, \
                         or an instance or task role."
                    ]
                )
            }
            Failure::NotAuthorized(detail) => gst::error_msg!(
                gst::ResourceError::NotAuthorized,
                (
                    "Not authorized to read Kinesis video stream {} in region {}",
                    stream,
                    region
                ),
                [
                    "{detail}. Check the credentials (access-key and secret-access-key, or the default AWS \
                     credential chain) and that they allow kinesisvideo:GetDataEndpoint and kinesisvideo:GetMedia \
                     (archive mode: kinesisvideo:ListFragments and kinesisvideo:GetMediaForFragmentList)."
                ]
            ),
            Failure::InvalidArgument(detail) => gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "Kinesis Video Streams refused the request for stream {} in region {}",
                    stream,
                    region
                ),
                ["{detail}. Check the start-selector and its value, or the archive range."]
            ),
            Failure::Throttled(detail) | Failure::Endpoint(detail) | Failure::Transient(detail) => {
                gst::error_msg!(
                    gst::ResourceError::Read,
                    (
                        "Could not read Kinesis video stream {} in region {}",
                        stream,
                        region
                    ),
                    [
                        "{detail}. Check endpoint-uri (if set), the network and the region. The source \
                         keeps trying for max-retries attempts in a row and at least max-outage ms, then \
                         gives up: the stream was not over, it could not be reached."
                    ]
                )
            }
        };
        self.post_error_message(msg);
        gst::FlowError::Error
    }

    /// Runs `fut` on `runtime` unless `unlock` cancels it.
    fn block_on<T>(
        &self,
        runtime: &tokio::runtime::Runtime,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let mut cancel = self.cancel.subscribe();
        runtime.block_on(async move {
            tokio::select! {
                biased;
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
            running: Mutex::new(None),
            stats: Mutex::new(Stats::default()),
            progress: Mutex::new(None),
            table: Mutex::new(None),
            last_progress: Mutex::new(None),
            cancel: watch::channel(false).0,
        }
    }
}

impl ObjectImpl for KvsGetMediaSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        settings::PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let archive = {
            let mut s = self.settings.lock().unwrap();
            s.set(pspec.name(), value);
            s.is_archive()
        };
        // An archive range is read as fast as downstream takes it.
        self.obj().set_live(!archive);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() != "stats" {
            return self.settings.lock().unwrap().get(pspec.name());
        }
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
                "Reads a Kinesis video stream with GetMedia as the bytes arrive, resuming exactly \
                 after any drop from the last complete fragment; or records a time range with \
                 ListFragments and GetMediaForFragmentList",
                "gst-plugin-kvs developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // video/x-kvs-matroska first: decodebin then plugs kvsdemux
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
        let plan = settings
            .plan()
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{}", e)))?;
        gst::debug!(
            CAT,
            imp = self,
            "Starting {} with {plan:?}",
            settings.target.stream()
        );
        let (target, policy) = (settings.target.clone(), settings.policy());
        let running = match plan {
            Plan::Live(start) => {
                // No signal or process driver: they cost on every wake.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                    .map_err(|e| {
                        gst::error_msg!(
                            gst::ResourceError::Failed,
                            ("Could not start an async runtime: {}", e)
                        )
                    })?;
                let session = runtime.block_on(Session::new(target, start, policy));
                Running {
                    reader: Reader::Live(Box::new(session)),
                    runtime: Some(runtime),
                }
            }
            Plan::Archive(range) => Running {
                reader: Reader::Archive(Box::new(
                    RUNTIME.block_on(Archive::new(target, range, policy)),
                )),
                runtime: None,
            },
        };
        *self.stats.lock().unwrap() = Stats::default();
        *self.progress.lock().unwrap() = None;
        *self.table.lock().unwrap() = None;
        *self.last_progress.lock().unwrap() = None;
        *self.running.lock().unwrap() = Some(running);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.running.lock().unwrap() = None;
        Ok(())
    }

    /// An archive range is seekable by time once listed: a seek restarts
    /// GetMediaForFragmentList at the fragment that holds that time.
    fn is_seekable(&self) -> bool {
        self.table.lock().unwrap().is_some()
    }

    fn do_seek(&self, segment: &mut gst::Segment) -> bool {
        let Some(segment) = segment.downcast_ref::<gst::format::Bytes>() else {
            return false;
        };
        let offset = segment.start().map_or(0, |b| *b);
        let table = self.table.lock().unwrap().clone();
        let mut running = self.running.lock().unwrap();
        let Some(Running {
            reader: Reader::Archive(archive),
            ..
        }) = running.as_mut()
        else {
            // Live: only the start.
            return offset == 0;
        };
        let Some(table) = table else {
            return offset == 0;
        };
        let spot = archive::locate(&table, offset, true);
        gst::info!(
            CAT,
            imp = self,
            "Seek to byte {offset}: restarting at fragment {} ({} ms into the range)",
            spot.index,
            spot.ms
        );
        archive.seek_to(spot.index);
        true
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        let progress = *self.progress.lock().unwrap();
        let Some(p) = progress else {
            return BaseSrcImplExt::parent_query(self, query);
        };
        let table = self.table.lock().unwrap().clone().unwrap_or_default();
        // Archive mode knows the whole range: TIME from the fragment
        // lengths, BYTES from their sizes.
        let time = |ms| gst::GenericFormattedValue::from(gst::ClockTime::from_mseconds(ms));
        let bytes = |n| gst::GenericFormattedValue::from(gst::format::Bytes::from_u64(n));
        match query.view_mut() {
            gst::QueryViewMut::Duration(q) => match q.format() {
                gst::Format::Time => q.set(time(p.total_ms)),
                gst::Format::Bytes => q.set(bytes(p.total_bytes)),
                _ => return false,
            },
            gst::QueryViewMut::Position(q) => match q.format() {
                gst::Format::Time => q.set(time(p.done_ms)),
                gst::Format::Bytes => q.set(bytes(p.done_bytes)),
                _ => return false,
            },
            gst::QueryViewMut::Seeking(q) if q.format() == gst::Format::Time => {
                q.set(true, time(0), time(p.total_ms));
            }
            // A time maps to the start of the fragment that holds it, so
            // that base class seeks in TIME become byte seeks.
            gst::QueryViewMut::Convert(q) => {
                let (src, dest) = q.get();
                let value = match (src, dest) {
                    (gst::GenericFormattedValue::Time(Some(t)), gst::Format::Bytes) => {
                        bytes(archive::locate(&table, t.mseconds(), false).byte)
                    }
                    (gst::GenericFormattedValue::Bytes(Some(b)), gst::Format::Time) => {
                        time(archive::locate(&table, *b, true).ms)
                    }
                    _ => return BaseSrcImplExt::parent_query(self, query),
                };
                q.set(src, value);
            }
            _ => return BaseSrcImplExt::parent_query(self, query),
        }
        true
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

impl KvsGetMediaSrc {
    /// Archive mode: keeps the queries' figures fresh, and posts a
    /// `kvs-progress` message when fragments complete (at most every 250 ms,
    /// and always for the last one), and at least once a second while bytes
    /// arrive.
    fn update_progress(&self, reader: &Reader) {
        let Reader::Archive(archive) = reader else {
            return;
        };
        let Some(p) = archive.progress() else {
            return;
        };
        let previous = self.progress.lock().unwrap().replace(p);
        if previous.is_none() {
            *self.table.lock().unwrap() = archive.table();
            let _ = self.obj().post_message(
                gst::message::DurationChanged::builder()
                    .src(&*self.obj())
                    .build(),
            );
        }
        let mut last = self.last_progress.lock().unwrap();
        let changed = previous.is_none_or(|old| old.done != p.done);
        let since = last.map_or(Duration::MAX, |t| t.elapsed());
        let post = (changed && (since >= PROGRESS_EVERY || p.done == p.total))
            || since >= PROGRESS_AT_LEAST;
        if !post {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        let s = gst::Structure::builder("kvs-progress")
            .field("fragments-done", p.done as u64)
            .field("fragments-total", p.total as u64)
            .field("position", gst::ClockTime::from_mseconds(p.done_ms))
            .field("duration", gst::ClockTime::from_mseconds(p.total_ms))
            .field("bytes-done", p.done_bytes)
            .field("bytes-total", p.total_bytes)
            .field(
                "percent",
                if p.total == 0 {
                    100.0
                } else {
                    100.0 * p.done as f64 / p.total as f64
                },
            )
            .build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }
}

impl PushSrcImpl for KvsGetMediaSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut guard = self.running.lock().unwrap();
        let running = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        let runtime = running.runtime.as_ref().unwrap_or(&RUNTIME);
        let reader = &mut running.reader;
        if let Reader::Archive(archive) = reader
            && archive.progress().is_none()
        {
            // List first, so that the listing's progress goes out before data.
            match self.block_on(runtime, archive.list()) {
                None => return Err(gst::FlowError::Flushing),
                Some(Err(failure)) => return Err(self.post_failure(failure, reader)),
                Some(Ok(listed)) if listed > 0 => self.update_progress(reader),
                Some(Ok(_)) => {}
            }
        }
        let next = self.block_on(runtime, reader.next());
        self.stats.lock().unwrap().refresh_from(reader.stats());
        self.update_progress(reader);
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
            Some(Ok(Next::End)) => {
                gst::info!(CAT, imp = self, "Read the whole range: EOS");
                Err(gst::FlowError::Eos)
            }
            Some(Err(failure)) => Err(self.post_failure(failure, reader)),
        }
    }
}
