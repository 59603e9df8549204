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
use super::live::{Live, Next, Stats};
use super::settings::{self, Plan, Settings};
use crate::aws::errors::Access;
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
    Live(Box<Live>),
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

/// One run: the reader, and what properties, queries and progress
/// messages read of it. `create` takes the reader out while it waits on the
/// network, so that nothing else waits on that.
#[derive(Default)]
struct State {
    running: Option<Running>,
    stats: Stats,
    /// Archive mode, once listed.
    progress: Option<Progress>,
    /// Archive mode, once listed: each fragment's (ms, bytes), for seeks.
    table: Option<Vec<(u64, u64)>>,
    last_progress: Option<Instant>,
}

pub struct KvsGetMediaSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Wakes a `create` blocked on the network (unlock).
    cancel: watch::Sender<bool>,
}

impl KvsGetMediaSrc {
    fn post_failure(&self, failure: Failure, reader: &Reader) -> gst::FlowError {
        let (target, region) = reader.where_();
        let access = Access {
            action: "read",
            stream: target.stream(),
            region,
            endpoint_uri: target.endpoint_uri.as_deref(),
            permissions: "kinesisvideo:GetDataEndpoint and kinesisvideo:GetMedia (archive mode: \
                          kinesisvideo:ListFragments and kinesisvideo:GetMediaForFragmentList)",
            missing: "Check stream-name or stream-arn, and region.",
            unreachable: gst::ResourceError::Read,
        };
        access.report(failure).post(self.obj().upcast_ref());
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
            state: Mutex::new(State::default()),
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
        let st = self.state.lock().unwrap().stats.clone();
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
        self.settings.lock().unwrap().uri.clone()
    }

    fn set_uri(&self, uri: &str) -> Result<(), glib::Error> {
        let props =
            super::uri::parse(uri).map_err(|e| glib::Error::new(gst::URIError::BadUri, &e))?;
        let obj = self.obj();
        for (name, value) in props {
            obj.set_property_from_str(name, &value);
        }
        self.settings.lock().unwrap().uri = Some(uri.to_string());
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
                let session = runtime.block_on(Live::new(target, start, policy));
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
        *self.state.lock().unwrap() = State {
            running: Some(running),
            ..State::default()
        };
        Ok(())
    }

    /// The reader goes; the figures stay readable until the next start.
    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.state.lock().unwrap().running = None;
        Ok(())
    }

    /// An archive range is seekable by time once listed: a seek restarts
    /// GetMediaForFragmentList at the fragment that holds that time.
    fn is_seekable(&self) -> bool {
        self.state.lock().unwrap().table.is_some()
    }

    fn do_seek(&self, segment: &mut gst::Segment) -> bool {
        let Some(segment) = segment.downcast_ref::<gst::format::Bytes>() else {
            return false;
        };
        let offset = segment.start().map_or(0, |b| *b);
        let mut state = self.state.lock().unwrap();
        let State { running, table, .. } = &mut *state;
        let Some(Running {
            reader: Reader::Archive(archive),
            ..
        }) = running.as_mut()
        else {
            // Live: only the start.
            return offset == 0;
        };
        let Some(table) = table.as_ref() else {
            return offset == 0;
        };
        let spot = archive::locate(table, offset, true);
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
        let (progress, table) = {
            let state = self.state.lock().unwrap();
            (state.progress, state.table.clone().unwrap_or_default())
        };
        let Some(p) = progress else {
            return BaseSrcImplExt::parent_query(self, query);
        };
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
    /// Brings the run's figures up to the reader's. In archive mode it
    /// returns the messages to post, with the lock released: a
    /// `kvs-progress` message when fragments complete (at most every 250 ms,
    /// and always for the last one), at least once a second while bytes
    /// arrive, and the first time a duration change.
    fn update(&self, reader: &Reader) -> Vec<gst::Message> {
        let mut state = self.state.lock().unwrap();
        state.stats.refresh_from(reader.stats());
        let Reader::Archive(archive) = reader else {
            return Vec::new();
        };
        let Some(p) = archive.progress() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let previous = state.progress.replace(p);
        if previous.is_none() {
            state.table = archive.table();
            out.push(
                gst::message::DurationChanged::builder()
                    .src(&*self.obj())
                    .build(),
            );
        }
        let changed = previous.is_none_or(|old| old.done != p.done);
        let since = state.last_progress.map_or(Duration::MAX, |t| t.elapsed());
        let post = (changed && (since >= PROGRESS_EVERY || p.done == p.total))
            || since >= PROGRESS_AT_LEAST;
        if !post {
            return out;
        }
        state.last_progress = Some(Instant::now());
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
        out.push(gst::message::Element::builder(s).src(&*self.obj()).build());
        out
    }

    /// Brings the figures up to date, then posts what that says to post.
    fn report(&self, reader: &Reader) {
        for message in self.update(reader) {
            let _ = self.obj().post_message(message);
        }
    }

    /// The next buffer, from a reader taken out of the state.
    fn read(&self, running: &mut Running) -> Result<CreateSuccess, gst::FlowError> {
        let runtime = running.runtime.as_ref().unwrap_or(&RUNTIME);
        let reader = &mut running.reader;
        if let Reader::Archive(archive) = reader
            && archive.progress().is_none()
        {
            // List first, so that the listing's progress goes out before data.
            match self.block_on(runtime, archive.list()) {
                None => return Err(gst::FlowError::Flushing),
                Some(Err(failure)) => return Err(self.post_failure(failure, reader)),
                Some(Ok(listed)) if listed > 0 => self.report(reader),
                Some(Ok(_)) => {}
            }
        }
        let next = self.block_on(runtime, reader.next());
        self.report(reader);
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

impl PushSrcImpl for KvsGetMediaSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut running = self
            .state
            .lock()
            .unwrap()
            .running
            .take()
            .ok_or(gst::FlowError::Flushing)?;
        let result = self.read(&mut running);
        self.state.lock().unwrap().running = Some(running);
        result
    }
}
