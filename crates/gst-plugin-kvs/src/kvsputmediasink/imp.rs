// SPDX-License-Identifier: MPL-2.0
//! kvsputmediasink: request pads in, frames interleaved by producer time
//! into the fragment store, and the PutMedia session on the shared runtime.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::fragments::{Fragments, Frame, Pushed};
use super::inputs::{Input, Pending, State, now_ms, unix_meta_ms};
use super::settings::{self, PROPERTIES, Settings};
use super::shared::{Report, Reporter, Shared};
use super::upload;
use super::{messages, tracks};
use crate::aws::RUNTIME;
use kvs_mkv::writer::TrackSpec;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvsputmediasink",
        gst::DebugColorFlags::empty(),
        Some("Kinesis Video Streams PutMedia sink"),
    )
});

/// KVS takes at most this many tracks.
const MAX_TRACKS: usize = 3;
/// A pad that sends nothing holds the others back at most this long (wall
/// time); then it is passed over until it sends again.
const MAX_WAIT: Duration = Duration::from_secs(1);
const APP: &str = concat!("gst-plugin-kvs ", env!("CARGO_PKG_VERSION"));

#[derive(Default)]
pub struct KvsPutMediaSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Signalled when queued buffers went out, or an input changed.
    moved: std::sync::Condvar,
    failed: AtomicBool,
    /// Flushing or stopping: blocked streaming threads return at once. An
    /// atomic, read under the store's lock without taking the state's.
    flushing: AtomicBool,
}

impl KvsPutMediaSink {
    fn producer_ms(&self, state: &mut State, input: usize, buffer: &gst::BufferRef) -> u64 {
        if let Some(ms) = unix_meta_ms(buffer) {
            return ms;
        }
        let obj = self.obj();
        let running = buffer
            .pts()
            .or(buffer.dts())
            .and_then(|t| state.inputs[input].segment.to_running_time(t));
        let Some(running) = running else {
            return now_ms() as u64;
        };
        let zero = *state.epoch_at_zero.get_or_insert_with(|| {
            // The base time is only set in PLAYING; before (a non-live
            // source pushing at once) the first buffer is taken as now.
            let now_running = match (obj.current_state(), obj.clock(), obj.base_time()) {
                (gst::State::Playing, Some(clock), Some(base)) => {
                    Some(clock.time().saturating_sub(base))
                }
                _ => None,
            };
            now_ms() - now_running.unwrap_or(running).mseconds() as i128
        });
        (zero + running.mseconds() as i128).max(0) as u64
    }

    /// Writes what can go, in time order, into the store; starts the
    /// session with the first headers. `all` at the end of input.
    fn drain(&self, state: &mut State, all: bool) -> Result<(), gst::FlowError> {
        if state.written.is_none() {
            let Some(list) = state.tracks(all) else {
                return Ok(());
            };
            self.start(state, list)?;
        }
        let shared = state.shared.clone().expect("started with the first tracks");
        let mut store = shared.store.lock().unwrap();
        while let Some(n) = state.next(all) {
            let p = state.inputs[n].queue.pop_front().unwrap();
            let Some(track) = state.inputs[n].track.as_ref().map(|t| t.number) else {
                continue;
            };
            let map = p.buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
            let frame = Frame {
                track,
                ms: p.ms,
                key: p.key,
                data: &map,
            };
            if store.fragments.push(&frame) == Pushed::BeforeKeyFrame {
                state.before_key_frame += 1;
                if state.before_key_frame == 1 {
                    gst::info!(
                        CAT,
                        imp = self,
                        "Dropping frames before the first video key frame"
                    );
                }
            }
        }
        if all {
            store.fragments.close();
            store.eos = true;
        }
        drop(store);
        shared.wake.notify_one();
        Ok(())
    }

    /// Starts the session with the first tracks.
    fn start(&self, state: &mut State, list: Vec<TrackSpec>) -> Result<(), gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let fragments = Fragments::new(settings.rules(), &list, APP);
        let shared = Arc::new(Shared::new(fragments));
        let config = settings.config(tracks::media_type(&list));
        gst::info!(
            CAT,
            imp = self,
            "Stream {}: putting {} track(s): {}",
            config.target.stream(),
            list.len(),
            list.iter()
                .map(|t| format!("{} {}", t.name, t.codec_id))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let weak = self.obj().downgrade();
        let report: Reporter = Arc::new(move |r| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_report(r);
            }
        });
        state.task = Some(RUNTIME.spawn(upload::run(shared.clone(), config, report)));
        state.shared = Some(shared);
        state.written = Some(list);
        Ok(())
    }

    /// New caps on a pad after the headers went out: later fragments
    /// carry new headers, on a new connection.
    fn retrack(&self, state: &mut State) {
        let Some(written) = state.written.clone() else {
            return;
        };
        let Some(list) = state.tracks(true) else {
            return;
        };
        if list == written {
            return;
        }
        gst::info!(
            CAT,
            imp = self,
            "Tracks changed: new headers from the next fragment"
        );
        if let Some(shared) = &state.shared {
            shared
                .store
                .lock()
                .unwrap()
                .fragments
                .set_tracks(&list, APP);
        }
        state.written = Some(list);
    }

    fn on_report(&self, report: Report) {
        let obj = self.obj();
        match report {
            Report::Acknowledged {
                timecode,
                number,
                latency,
                sends,
            } => {
                let s = gst::Structure::builder("kvs-fragment-persisted")
                    .field("timecode", timecode)
                    .field("fragment-number", number)
                    .field("latency-ms", latency.as_millis() as u64)
                    .field("latency-us", latency.as_micros() as u64)
                    .field("sends", sends)
                    .build();
                let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
            }
            Report::Retrying(why) => gst::warning!(CAT, imp = self, "Sending again: {why}"),
            Report::Done => {
                gst::info!(CAT, imp = self, "Every fragment is acknowledged");
                let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
            }
            Report::Failed(stop) => {
                self.failed.store(true, Ordering::SeqCst);
                let target = self.settings.lock().unwrap().target.clone();
                let region = target.region.as_deref().unwrap_or("(the SDK's default)");
                messages::report(&target, region, &stop).post(obj.upcast_ref());
            }
        }
    }

    fn chain(
        &self,
        pad: &super::KvsPutMediaSinkPad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let shared = {
            let mut state = self.state.lock().unwrap();
            if self.flushing.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Flushing);
            }
            let n = state
                .inputs
                .iter()
                .position(|i| &i.pad == pad)
                .ok_or(gst::FlowError::Error)?;
            if state.inputs[n].track.is_none() {
                return Err(gst::FlowError::NotNegotiated);
            }
            let ms = self.producer_ms(&mut state, n, &buffer);
            let key =
                !state.inputs[n].video || !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            state.inputs[n].queue.push_back(Pending { ms, key, buffer });
            state.inputs[n].stalled = false;
            self.drain(&mut state, false)?;
            self.moved.notify_all();
            let state = self.wait_for_others(state, pad)?;
            state.shared.clone()
        };
        match shared {
            Some(shared) => self.wait_for_room(&shared),
            None => Ok(gst::FlowSuccess::Ok),
        }
    }

    /// Holds this pad while its buffers wait for the other pads' (so that
    /// blocks go out in time order); after `MAX_WAIT` the silent pads are
    /// passed over.
    fn wait_for_others<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, State>,
        pad: &super::KvsPutMediaSinkPad,
    ) -> Result<std::sync::MutexGuard<'a, State>, gst::FlowError> {
        let started = std::time::Instant::now();
        loop {
            let Some(n) = state.inputs.iter().position(|i| &i.pad == pad) else {
                return Err(gst::FlowError::Flushing);
            };
            if state.inputs[n].queue.len() < 2 {
                return Ok(state);
            }
            if self.flushing.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Flushing);
            }
            if self.failed.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Error);
            }
            if started.elapsed() >= MAX_WAIT {
                for input in &mut state.inputs {
                    if input.queue.is_empty() && !input.eos {
                        gst::info!(
                            CAT,
                            imp = self,
                            "{} sent nothing for {MAX_WAIT:?}: going on without it",
                            input.pad.name()
                        );
                        input.stalled = true;
                    }
                }
                self.drain(&mut state, false)?;
                return Ok(state);
            }
            state = self
                .moved
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }

    /// Holds upstream while the store is full (or drops the oldest
    /// fragments, with `drop-when-full`).
    fn wait_for_room(&self, shared: &Shared) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (limit, drop_oldest) = {
            let s = self.settings.lock().unwrap();
            (s.storage_bytes(), s.drop_when_full)
        };
        let mut store = shared.store.lock().unwrap();
        loop {
            if self.failed.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Error);
            }
            if store.stopped || store.fragments.bytes() <= limit || store.fragments.len() < 2 {
                return Ok(gst::FlowSuccess::Ok);
            }
            if drop_oldest {
                // Not the fragment being sent: KVS would keep its start.
                if store.in_flight == Some(store.fragments.first()) {
                    return Ok(gst::FlowSuccess::Ok);
                }
                let Some(f) = store.fragments.drop_oldest() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let dropped = {
                    let mut stats = shared.stats.lock().unwrap();
                    stats.fragments_dropped += 1;
                    stats.fragments_dropped
                };
                // Posted with no lock held: a bus handler may read the stats.
                drop(store);
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    ("storage-size is full: dropped a fragment KVS has not acknowledged"),
                    [
                        "The fragment at {} ms; {dropped} dropped so far. Raise storage-size, or unset drop-when-full to hold upstream instead.",
                        f.timecode
                    ]
                );
                store = shared.store.lock().unwrap();
                continue;
            }
            if self.flushing.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Flushing);
            }
            store = shared
                .space
                .wait_timeout(store, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    fn sink_event(&self, pad: &super::KvsPutMediaSinkPad, event: gst::Event) -> bool {
        let done = self.handle_event(pad, event);
        self.moved.notify_all();
        done
    }

    fn handle_event(&self, pad: &super::KvsPutMediaSinkPad, event: gst::Event) -> bool {
        use gst::EventView;
        let mut state = self.state.lock().unwrap();
        let Some(n) = state.inputs.iter().position(|i| &i.pad == pad) else {
            return false;
        };
        match event.view() {
            EventView::Caps(c) => {
                let name = pad.imp().track_name();
                match tracks::track_for(c.caps(), 0, &name) {
                    Ok(track) => {
                        state.inputs[n].track = Some(track);
                        self.retrack(&mut state);
                        true
                    }
                    Err(why) => {
                        drop(state);
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ("Cannot put these caps on {}: {}", pad.name(), why),
                            ["Caps: {}", c.caps()]
                        );
                        false
                    }
                }
            }
            EventView::Segment(s) => {
                if let Ok(segment) = s.segment().clone().downcast::<gst::ClockTime>() {
                    state.inputs[n].segment = segment;
                }
                true
            }
            EventView::Eos(_) => {
                state.inputs[n].eos = true;
                if state.inputs.iter().all(|i| i.eos) {
                    if state.shared.is_none() && state.tracks(true).is_none() {
                        drop(state);
                        // Nothing was ever put: the end is now.
                        let obj = self.obj();
                        let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
                        return true;
                    }
                    if let Err(e) = self.drain(&mut state, true) {
                        gst::error!(CAT, imp = self, "Cannot write the last fragment: {e:?}");
                    }
                } else {
                    let _ = self.drain(&mut state, false);
                }
                true
            }
            EventView::FlushStart(_) => {
                drop(state);
                self.unblock();
                true
            }
            EventView::FlushStop(_) => {
                self.flushing.store(false, Ordering::SeqCst);
                state.inputs[n].eos = false;
                state.inputs[n].queue.clear();
                true
            }
            _ => true,
        }
    }

    /// Wakes streaming threads waiting for room or for other pads; they
    /// return FLUSHING.
    fn unblock(&self) {
        self.flushing.store(true, Ordering::SeqCst);
        if let Some(shared) = &self.state.lock().unwrap().shared {
            // Under the store's lock, so that no waiter misses it.
            let _store = shared.store.lock().unwrap();
            shared.space.notify_all();
        }
        self.moved.notify_all();
    }

    fn stop(&self) {
        let mut state = self.state.lock().unwrap();
        if let Some(task) = state.task.take() {
            task.abort();
        }
        if let Some(shared) = state.shared.take() {
            shared.store.lock().unwrap().stopped = true;
            shared.space.notify_all();
        }
        state.written = None;
        state.epoch_at_zero = None;
        state.before_key_frame = 0;
        for input in &mut state.inputs {
            input.queue.clear();
            input.eos = false;
            input.stalled = false;
        }
        drop(state);
        self.moved.notify_all();
        self.failed.store(false, Ordering::SeqCst);
        self.flushing.store(false, Ordering::SeqCst);
    }

    fn stats(&self) -> gst::Structure {
        let state = self.state.lock().unwrap();
        match &state.shared {
            Some(shared) => {
                let store = shared.store.lock().unwrap();
                let stats = shared.stats.lock().unwrap();
                messages::stats(&stats, store.fragments.bytes(), store.fragments.len())
            }
            None => messages::stats(&Default::default(), 0, 0),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for KvsPutMediaSink {
    const NAME: &'static str = "GstKvsPutMediaSink";
    type Type = super::KvsPutMediaSink;
    type ParentType = gst::Element;
    type Interfaces = (gst::ChildProxy,);
}

/// The pads, by name, so that gst-launch can set `audio_0::track-name`.
impl ChildProxyImpl for KvsPutMediaSink {
    fn child_by_index(&self, index: u32) -> Option<glib::Object> {
        self.obj()
            .sink_pads()
            .into_iter()
            .nth(index as usize)
            .map(|p| p.upcast())
    }

    fn child_by_name(&self, name: &str) -> Option<glib::Object> {
        self.obj().static_pad(name).map(|p| p.upcast())
    }

    fn children_count(&self) -> u32 {
        self.obj().num_sink_pads() as u32
    }
}

impl ObjectImpl for KvsPutMediaSink {
    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SINK);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if let Some(new) = settings::kvssink_name(pspec.name()) {
            gst::warning!(
                CAT,
                imp = self,
                "Property {} is deprecated (kvssink's name): use {new}",
                pspec.name()
            );
        }
        self.settings.lock().unwrap().set(pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stats" => self.stats().to_value(),
            name => self.settings.lock().unwrap().get(name),
        }
    }
}

impl GstObjectImpl for KvsPutMediaSink {}

impl ElementImpl for KvsPutMediaSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams PutMedia sink",
                "Sink/Network/Muxer",
                "Puts audio and video into a Kinesis video stream with PutMedia: KVS-shaped \
                 Matroska, fragments kept until acknowledged, reconnects without loss",
                "gst-plugin-kvs developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let template = |name: &str, caps: gst::Caps| {
                gst::PadTemplate::with_gtype(
                    name,
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &caps,
                    super::KvsPutMediaSinkPad::static_type(),
                )
                .unwrap()
            };
            vec![
                template("video_%u", tracks::video_caps()),
                template("audio_%u", tracks::audio_caps()),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let mut state = self.state.lock().unwrap();
        if state.inputs.len() >= MAX_TRACKS {
            drop(state);
            gst::element_imp_error!(
                self,
                gst::CoreError::Pad,
                (
                    "Kinesis Video Streams takes at most {} tracks: cannot add another pad",
                    MAX_TRACKS
                )
            );
            return None;
        }
        let video = templ.name_template().starts_with("video");
        let prefix = if video { "video" } else { "audio" };
        let name = name.map(String::from).unwrap_or_else(|| {
            (0..)
                .map(|i| format!("{prefix}_{i}"))
                .find(|n| !state.inputs.iter().any(|i| i.pad.name() == n.as_str()))
                .unwrap()
        });
        let pad = gst::PadBuilder::<super::KvsPutMediaSinkPad>::from_template(templ)
            .name(name.as_str())
            .chain_function(|pad, parent, buffer| {
                KvsPutMediaSink::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                KvsPutMediaSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();
        state.inputs.push(Input {
            pad: pad.clone(),
            video,
            track: None,
            segment: gst::FormattedSegment::new(),
            queue: VecDeque::new(),
            eos: false,
            stalled: false,
        });
        drop(state);
        self.obj().add_pad(&pad).ok()?;
        self.obj().child_added(&pad, &pad.name());
        Some(pad.upcast())
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let mut state = self.state.lock().unwrap();
        state
            .inputs
            .retain(|i| i.pad.upcast_ref::<gst::Pad>() != pad);
        self.retrack(&mut state);
        drop(state);
        self.obj().child_removed(pad, &pad.name());
        let _ = self.obj().remove_pad(pad);
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            let target = self.settings.lock().unwrap().target.clone();
            if target.stream_name.is_none() && target.stream_arn.is_none() {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Settings,
                    ("Set stream-name (or stream-arn) to the stream to put into")
                );
                return Err(gst::StateChangeError);
            }
        }
        if transition == gst::StateChange::PausedToReady {
            // Before the pads deactivate: they wait for the streaming lock.
            self.unblock();
        }
        let result = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        Ok(result)
    }
}
