// SPDX-License-Identifier: MPL-2.0
//! The element plumbing kvsaudiodemux and kvsdemux share: the sink pad's
//! chain and events, performing the demuxer's actions outside its lock, the
//! flow combiner, the properties and the pad templates.

use std::sync::Mutex;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::pad::Action;
use super::state::{DEFAULT_MAX_GAP_MS, Demux, SeekTo, Settings, Step};
use super::{ConnectPcm, Host, MakePad, caps, video};

/// What an element subclass gives the shared plumbing.
pub trait DemuxElement: ElementImpl + ObjectSubclass<Type: IsA<gst::Element>> {
    fn core(&self) -> &Core;
}

pub struct Core {
    cat: gst::DebugCategory,
    make_pad: MakePad,
    /// The seqnum of the last seek upstream took: the same seek coming up
    /// another pad is not sent again.
    last_seek: Mutex<Option<gst::Seqnum>>,
    settings: Mutex<Settings>,
    demux: Mutex<Demux>,
    flow_combiner: Mutex<gst_base::UniqueFlowCombiner>,
}

/// Builds the sink pad of a demuxer element `T`.
pub fn sink_pad<T: DemuxElement>(templ: &gst::PadTemplate) -> gst::Pad {
    gst::Pad::builder_from_template(templ)
        .chain_function(|_pad, parent, buffer| {
            T::catch_panic_pad_function(
                parent,
                || Err(gst::FlowError::Error),
                |imp| imp.core().chain(imp.obj().upcast_ref(), buffer),
            )
        })
        .event_function(|pad, parent, event| {
            T::catch_panic_pad_function(
                parent,
                || false,
                |imp| imp.core().sink_event(imp.obj().upcast_ref(), pad, event),
            )
        })
        .build()
}

/// Builds a source pad of a demuxer element `T`: seeks and the seeking and
/// duration queries go upstream.
pub fn src_pad<T: DemuxElement>(templ: &gst::PadTemplate, name: &str) -> gst::Pad {
    gst::Pad::builder_from_template(templ)
        .name(name)
        .event_function(|pad, parent, event| {
            T::catch_panic_pad_function(
                parent,
                || false,
                |imp| imp.core().src_event(imp.obj().upcast_ref(), pad, event),
            )
        })
        .query_function(|pad, parent, query| {
            T::catch_panic_pad_function(
                parent,
                || false,
                |imp| imp.core().src_query(imp.obj().upcast_ref(), pad, query),
            )
        })
        .build()
}

impl Core {
    pub fn new(cat: gst::DebugCategory, video: bool, make_pad: MakePad) -> Self {
        Core {
            cat,
            make_pad,
            last_seek: Mutex::new(None),
            settings: Mutex::new(Settings {
                video,
                ..Default::default()
            }),
            demux: Mutex::new(Demux::default()),
            flow_combiner: Mutex::new(gst_base::UniqueFlowCombiner::new()),
        }
    }

    fn host<'a>(&self, obj: &'a gst::Element) -> Host<'a> {
        Host {
            obj,
            cat: self.cat,
            make_pad: self.make_pad,
        }
    }

    /// A flushing TIME seek from 0 or later, at normal rate, goes upstream
    /// once (kvsgetmediasrc takes it in archive mode); output then runs on
    /// from the seek position.
    fn src_event(&self, obj: &gst::Element, pad: &gst::Pad, event: gst::Event) -> bool {
        let gst::EventView::Seek(seek) = event.view() else {
            return gst::Pad::event_default(pad, Some(obj), event);
        };
        let seqnum = event.seqnum();
        if *self.last_seek.lock().unwrap() == Some(seqnum) {
            return true;
        }
        let (rate, flags, start_type, start, _, _) = seek.get();
        let start = match (start_type, start) {
            (gst::SeekType::Set, gst::GenericFormattedValue::Time(t)) => t.unwrap_or_default(),
            _ => {
                gst::debug!(self.cat, obj = pad, "Only seeks to a time are handled");
                return false;
            }
        };
        if rate != 1.0 || !flags.contains(gst::SeekFlags::FLUSH) {
            gst::debug!(
                self.cat,
                obj = pad,
                "Only flushing seeks at rate 1 are handled, not {flags:?} at {rate}"
            );
            return false;
        }
        gst::debug!(self.cat, obj = pad, "Seeking to {start}");
        self.demux.lock().unwrap().seek = Some(SeekTo {
            seqnum,
            start: start.nseconds(),
            key_unit: flags.contains(gst::SeekFlags::KEY_UNIT),
        });
        let sink = obj.static_pad("sink").unwrap();
        let done = sink.push_event(event);
        if done {
            *self.last_seek.lock().unwrap() = Some(seqnum);
        } else {
            self.demux.lock().unwrap().seek = None;
        }
        done
    }

    fn src_query(&self, obj: &gst::Element, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view() {
            gst::QueryView::Seeking(_) | gst::QueryView::Duration(_) => {
                obj.static_pad("sink").unwrap().peer_query(query)
            }
            _ => gst::Pad::query_default(pad, Some(obj), query),
        }
    }

    fn chain(
        &self,
        obj: &gst::Element,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let el = self.host(obj);
        let settings = self.settings.lock().unwrap().clone();
        self.demux.lock().unwrap().input(&el, &settings, buffer)?;
        self.run(&el, |d| d.step(&el, &settings))
    }

    fn sink_event(&self, obj: &gst::Element, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        let el = self.host(obj);
        gst::log!(self.cat, obj = pad, "Handling event {event:?}");
        match event.view() {
            // Output has its own stream-start, caps and TIME segment.
            EventView::Caps(_)
            | EventView::Segment(_)
            | EventView::Tag(_)
            | EventView::StreamStart(_) => true,
            EventView::Eos(_) => {
                let settings = self.settings.lock().unwrap().clone();
                self.demux.lock().unwrap().set_last();
                let _ = self.run(&el, |d| d.step(&el, &settings));
                let actions = self.demux.lock().unwrap().finish(&el, &settings);
                let _ = self.perform(&el, actions);
                true
            }
            EventView::FlushStop(_) => {
                let forwarded = gst::Pad::event_default(pad, Some(obj), event);
                let actions = self.demux.lock().unwrap().flush(&el);
                self.flow_combiner.lock().unwrap().reset();
                let _ = self.perform(&el, actions);
                forwarded
            }
            _ => gst::Pad::event_default(pad, Some(obj), event),
        }
    }

    /// Runs `step` under the demuxer's lock until it has nothing more to do,
    /// performing what it hands on after each step, outside the lock, as
    /// gst-plugins-rs demuxers do.
    fn run(
        &self,
        el: &Host,
        mut step: impl FnMut(&mut Demux) -> Step,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        loop {
            let Step {
                actions,
                more,
                result,
            } = step(&mut self.demux.lock().unwrap());
            let pushed = self.perform(el, actions);
            let result = result.and(pushed);
            if result.is_err() || !more {
                return result;
            }
        }
    }

    /// Pushes, adds and removes pads, in order; returns the combined flow.
    fn perform(&self, el: &Host, actions: Vec<Action>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut result = Ok(gst::FlowSuccess::Ok);
        let mut refused = Vec::new();
        for action in actions {
            let (pad, res) = match action {
                Action::Buffer(pad, buffer) => {
                    let res = pad.push(buffer);
                    (pad, res)
                }
                Action::List(pad, list) => {
                    let res = pad.push_list(list);
                    (pad, res)
                }
                Action::Event(pad, event) => {
                    pad.push_event(event);
                    continue;
                }
                Action::AddPad(pad) => {
                    self.flow_combiner.lock().unwrap().add_pad(&pad);
                    if let Err(e) = el.obj.add_pad(&pad) {
                        gst::error!(self.cat, obj = el.obj, "Cannot add pad {}: {e}", pad.name());
                    }
                    continue;
                }
                Action::RemovePad(pad) => {
                    self.remove_src_pad(el.obj, &pad);
                    continue;
                }
                Action::NoMorePads => {
                    el.obj.no_more_pads();
                    continue;
                }
                Action::Post(message) => {
                    let _ = el.obj.post_message(message);
                    continue;
                }
            };
            if res == Err(gst::FlowError::NotNegotiated) && !refused.contains(&pad) {
                refused.push(pad.clone());
            }
            let combined = self
                .flow_combiner
                .lock()
                .unwrap()
                .update_pad_flow(&pad, res);
            if result.is_ok() {
                result = combined;
            }
        }
        if !refused.is_empty() {
            let errors = self.demux.lock().unwrap().refused(el, &refused);
            let _ = self.perform(el, errors);
        }
        result
    }

    fn remove_src_pad(&self, obj: &gst::Element, pad: &gst::Pad) {
        self.flow_combiner.lock().unwrap().remove_pad(pad);
        let _ = pad.set_active(false);
        let _ = obj.remove_pad(pad);
    }

    /// After PAUSED to READY: pads go, the next stream starts afresh.
    pub fn reset(&self, obj: &gst::Element) {
        let old = std::mem::take(&mut *self.demux.lock().unwrap());
        *self.last_seek.lock().unwrap() = None;
        for pad in old.pads() {
            self.remove_src_pad(obj, &pad);
        }
        self.flow_combiner.lock().unwrap().clear();
    }

    pub fn set_property(&self, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "connect-pcm" => settings.connect_pcm = value.get().unwrap(),
            "stop-at-contact-end" => settings.stop_at_contact_end = value.get().unwrap(),
            "max-element-size" => settings.max_element_size = value.get().unwrap(),
            "max-gap" => settings.max_gap = value.get().unwrap(),
            "max-latency" => settings.max_latency = value.get().unwrap(),
            "buffer-lists" => settings.buffer_lists = value.get().unwrap(),
            "merge-raw-audio" => settings.merge_raw_audio = value.get().unwrap(),
            _ => unreachable!(),
        }
    }

    pub fn property(&self, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "connect-pcm" => settings.connect_pcm.to_value(),
            "stop-at-contact-end" => settings.stop_at_contact_end.to_value(),
            "max-element-size" => settings.max_element_size.to_value(),
            "max-gap" => settings.max_gap.to_value(),
            "max-latency" => settings.max_latency.to_value(),
            "buffer-lists" => settings.buffer_lists.to_value(),
            "merge-raw-audio" => settings.merge_raw_audio.to_value(),
            _ => unreachable!(),
        }
    }
}

/// The properties both demuxers have.
pub fn properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecEnum::builder_with_default("connect-pcm", ConnectPcm::Auto)
            .nick("Connect PCM")
            .blurb(
                "How to read tracks whose CodecID is A_AAC. Amazon Connect labels raw \
                 16-bit little-endian PCM as A_AAC and says so in a MimeType tag \
                 (audio/L16;rate=R;channels=C) that comes after each fragment's audio. \
                 auto: tracks named AUDIO_FROM_CUSTOMER or AUDIO_TO_CUSTOMER are PCM at \
                 once (8000 Hz mono until a MimeType says otherwise); other A_AAC tracks \
                 are held (at most 10 s) until a MimeType tells PCM from AAC, unless the \
                 stream has video (then they are AAC); a MimeType that disagrees changes \
                 the caps from the next fragment, with a warning. always: PCM (8000 Hz mono \
                 unless a MimeType says otherwise); never: AAC (default: auto)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("stop-at-contact-end")
            .nick("Stop at contact end")
            .blurb(
                "Send EOS when the ContactId tag changes, so that only the first \
                 Amazon Connect contact of a reused stream is output. Connect sends a \
                 fragment's ContactId after its audio, so each fragment is held until its \
                 ContactId is in (about one fragment of latency) and no sample of the next \
                 contact is output (default: false)",
            )
            .default_value(false)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("max-gap")
            .nick("Max gap")
            .blurb(
                "Longest jump forward in time of the whole stream, in milliseconds, that \
                 is filled with silence (raw audio) or GAP events (coded audio and video). \
                 A longer jump, such as a reused stream's next contact days later, \
                 continues the output timeline at once, with DISCONT (default 10000)",
            )
            .default_value(DEFAULT_MAX_GAP_MS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-latency")
            .nick("Max latency")
            .blurb(
                "Skip stale data: a fragment that starts more than this many milliseconds \
                 behind live (its AWS_KINESISVIDEO_MILLIS_BEHIND_NOW tag, or else the local \
                 clock against its producer timestamp) is dropped whole, so output resumes \
                 at the next fragment, which starts with a keyframe. Each skipped run posts \
                 a kvs-skipped element message. 0 keeps everything, as recording wants \
                 (default 0)",
            )
            .default_value(0)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("buffer-lists")
            .nick("Buffer lists")
            .blurb(
                "Push the blocks of each input chunk as one buffer list per pad: less \
                 overhead for archive and file input. Off by default because some \
                 elements, such as splitmuxsink in GStreamer 1.22, do not handle lists",
            )
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("merge-raw-audio")
            .nick("Merge raw audio")
            .blurb(
                "Raw audio: join the blocks of each input chunk that follow one another \
                 into one buffer per pad (about 1 s at most), carrying the first \
                 block's PTS and producer time. Far fewer buffers, and far less thread \
                 switching behind queues and interleave, for archive and file input; a live \
                 chunk mostly holds one block. Off by default: each buffer is one block \
                 with its own producer time",
            )
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-element-size")
            .nick("Max element size")
            .blurb(
                "Largest Matroska element accepted, in bytes (default 16 MiB). A larger \
                 size is treated as damage: a warning, then a skip to the next fragment",
            )
            .minimum(1024)
            .default_value(kvs_mkv::parser::DEFAULT_MAX_ELEMENT_SIZE as u32)
            .mutable_ready()
            .build(),
    ]
}

/// The pad templates: the sink, `audio_%u`, and `video_%u` if `video`.
pub fn pad_templates(video: bool) -> Vec<gst::PadTemplate> {
    // video/x-kvs-matroska is what kvsgetmediasrc offers decodebin.
    let mut sink_caps = gst::Caps::new_empty();
    let types = [
        "video/x-kvs-matroska",
        "video/x-matroska",
        "audio/x-matroska",
        "video/webm",
        "audio/webm",
    ];
    for name in types {
        sink_caps
            .get_mut()
            .unwrap()
            .append(gst::Caps::new_empty_simple(name));
    }
    let src = |name: &str, caps: &gst::Caps| {
        gst::PadTemplate::new(
            name,
            gst::PadDirection::Src,
            gst::PadPresence::Sometimes,
            caps,
        )
        .unwrap()
    };
    let mut templates = vec![
        gst::PadTemplate::new(
            "sink",
            gst::PadDirection::Sink,
            gst::PadPresence::Always,
            &sink_caps,
        )
        .unwrap(),
    ];
    if video {
        templates.push(src("video_%u", &video::template_caps()));
    }
    templates.push(src("audio_%u", &caps::template_caps()));
    templates
}

/// Implements the object and element traits of a demuxer element: `$imp`
/// is a struct with `sinkpad: gst::Pad` and `core: Core` fields whose
/// `ObjectSubclass` makes them with [`sink_pad`] and [`Core::new`]; `$video`
/// says whether it has `video_%u` pads; the rest is its metadata.
macro_rules! demux_element {
    ($imp:ty, video: $video:expr, $long:expr, $class:expr, $description:expr) => {
        impl $crate::demux::element::DemuxElement for $imp {
            fn core(&self) -> &$crate::demux::element::Core {
                &self.core
            }
        }

        impl ObjectImpl for $imp {
            fn properties() -> &'static [glib::ParamSpec] {
                static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> =
                    LazyLock::new($crate::demux::element::properties);
                PROPERTIES.as_ref()
            }

            fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
                self.core.set_property(value, pspec)
            }

            fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
                self.core.property(pspec)
            }

            fn constructed(&self) {
                self.parent_constructed();
                self.obj().add_pad(&self.sinkpad).unwrap();
            }
        }

        impl GstObjectImpl for $imp {}

        impl ElementImpl for $imp {
            fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
                static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                    gst::subclass::ElementMetadata::new(
                        $long,
                        $class,
                        $description,
                        "gst-plugin-kvs developers",
                    )
                });
                Some(&*METADATA)
            }

            fn pad_templates() -> &'static [gst::PadTemplate] {
                static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
                    LazyLock::new(|| $crate::demux::element::pad_templates($video));
                TEMPLATES.as_ref()
            }

            fn change_state(
                &self,
                transition: gst::StateChange,
            ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
                let ret = self.parent_change_state(transition)?;
                if transition == gst::StateChange::PausedToReady {
                    self.core.reset(self.obj().upcast_ref());
                }
                Ok(ret)
            }
        }
    };
}
pub(crate) use demux_element;
