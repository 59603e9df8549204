// SPDX-License-Identifier: MPL-2.0
//! kvsaudiodemux: element plumbing. The stream logic is in `demux.rs`.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::ConnectPcm;
use super::caps;
use super::demux::{Demux, Settings, Step};
use super::stream::Action;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvsaudiodemux",
        gst::DebugColorFlags::empty(),
        Some("Kinesis Video Streams audio demuxer"),
    )
});

pub struct KvsAudioDemux {
    sinkpad: gst::Pad,
    settings: Mutex<Settings>,
    demux: Mutex<Demux>,
    flow_combiner: Mutex<gst_base::UniqueFlowCombiner>,
}

impl KvsAudioDemux {
    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        self.demux.lock().unwrap().input(self, &settings, buffer)?;
        self.run(|d| d.step(self, &settings))
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "Handling event {event:?}");
        match event.view() {
            // Output has its own stream-start, caps and TIME segment.
            EventView::Caps(_)
            | EventView::Segment(_)
            | EventView::Tag(_)
            | EventView::StreamStart(_) => true,
            EventView::Eos(_) => {
                let settings = self.settings.lock().unwrap().clone();
                self.demux.lock().unwrap().set_last();
                let _ = self.run(|d| d.step(self, &settings));
                let actions = self.demux.lock().unwrap().finish(self, &settings);
                let _ = self.perform(actions);
                true
            }
            EventView::FlushStop(_) => {
                let forwarded = gst::Pad::event_default(pad, Some(&*self.obj()), event);
                let actions = self.demux.lock().unwrap().flush();
                self.flow_combiner.lock().unwrap().reset();
                let _ = self.perform(actions);
                forwarded
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Runs `step` under the demuxer's lock until it has nothing more to do,
    /// performing what it hands on after each step, outside the lock, as
    /// gst-plugins-rs demuxers do.
    fn run(
        &self,
        mut step: impl FnMut(&mut Demux) -> Step,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        loop {
            let Step {
                actions,
                more,
                result,
            } = step(&mut self.demux.lock().unwrap());
            let pushed = self.perform(actions);
            let result = result.and(pushed);
            if result.is_err() || !more {
                return result;
            }
        }
    }

    /// Pushes, adds and removes pads, in order; returns the combined flow.
    fn perform(&self, actions: Vec<Action>) -> Result<gst::FlowSuccess, gst::FlowError> {
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
                    if let Err(e) = self.obj().add_pad(&pad) {
                        gst::error!(CAT, imp = self, "Cannot add pad {}: {e}", pad.name());
                    }
                    continue;
                }
                Action::RemovePad(pad) => {
                    self.remove_src_pad(&pad);
                    continue;
                }
                Action::NoMorePads => {
                    self.obj().no_more_pads();
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
            self.demux.lock().unwrap().refused(self, &refused);
        }
        result
    }

    pub(super) fn remove_src_pad(&self, pad: &gst::Pad) {
        self.flow_combiner.lock().unwrap().remove_pad(pad);
        let _ = pad.set_active(false);
        let _ = self.obj().remove_pad(pad);
    }
}

#[glib::object_subclass]
impl ObjectSubclass for KvsAudioDemux {
    const NAME: &'static str = "GstKvsAudioDemux";
    type Type = super::KvsAudioDemux;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                KvsAudioDemux::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |demux| demux.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                KvsAudioDemux::catch_panic_pad_function(
                    parent,
                    || false,
                    |demux| demux.sink_event(pad, event),
                )
            })
            .build();
        KvsAudioDemux {
            sinkpad,
            settings: Mutex::new(Settings::default()),
            demux: Mutex::new(Demux::default()),
            flow_combiner: Mutex::new(gst_base::UniqueFlowCombiner::new()),
        }
    }
}

impl ObjectImpl for KvsAudioDemux {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("connect-pcm", ConnectPcm::Auto)
                    .nick("Connect PCM")
                    .blurb(
                        "How to read tracks whose CodecID is A_AAC. Amazon Connect labels raw \
                         16-bit little-endian PCM as A_AAC and says so in a MimeType tag \
                         (audio/L16;rate=R;channels=C) that comes after each fragment's audio. \
                         auto: tracks named AUDIO_FROM_CUSTOMER or AUDIO_TO_CUSTOMER are PCM at \
                         once (8000 Hz mono until a MimeType says otherwise); other A_AAC tracks \
                         are held (at most 10 s) until a MimeType tells PCM from AAC; a MimeType \
                         that disagrees changes the caps from the next fragment, with a warning. \
                         always: PCM (8000 Hz mono unless a MimeType says otherwise); never: AAC \
                         (default: auto)",
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
                         is filled with silence (raw audio) or GAP events (coded audio). A longer \
                         jump, such as a reused stream's next contact days later, continues the \
                         output timeline at once, with DISCONT (default 10000)",
                    )
                    .default_value(super::demux::DEFAULT_MAX_GAP_MS)
                    .mutable_ready()
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
                glib::ParamSpecUInt::builder("max-element-size")
                    .nick("Max element size")
                    .blurb(
                        "Largest Matroska element accepted, in bytes (default 16 MiB). A larger \
                         size is treated as damage: a warning, then a skip to the next fragment",
                    )
                    .minimum(1024)
                    .default_value(crate::mkv::parser::DEFAULT_MAX_ELEMENT_SIZE as u32)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "connect-pcm" => settings.connect_pcm = value.get().unwrap(),
            "stop-at-contact-end" => settings.stop_at_contact_end = value.get().unwrap(),
            "max-element-size" => settings.max_element_size = value.get().unwrap(),
            "max-gap" => settings.max_gap = value.get().unwrap(),
            "buffer-lists" => settings.buffer_lists = value.get().unwrap(),
            _ => unreachable!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "connect-pcm" => settings.connect_pcm.to_value(),
            "stop-at-contact-end" => settings.stop_at_contact_end.to_value(),
            "max-element-size" => settings.max_element_size.to_value(),
            "max-gap" => settings.max_gap.to_value(),
            "buffer-lists" => settings.buffer_lists.to_value(),
            _ => unreachable!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().add_pad(&self.sinkpad).unwrap();
    }
}

impl GstObjectImpl for KvsAudioDemux {}

impl ElementImpl for KvsAudioDemux {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams audio demuxer",
                "Codec/Demuxer/Audio",
                "Demuxes the Matroska chunks of Amazon Kinesis Video Streams (GetMedia) as they \
                 arrive into one pad per audio track, with KVS fragment tags and messages. \
                 Reads Amazon Connect's A_AAC-labelled PCM as raw audio",
                "gst-plugin-kvs developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
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
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "audio_%u",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &caps::template_caps(),
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            let old = std::mem::take(&mut *self.demux.lock().unwrap());
            for pad in old.pads() {
                self.remove_src_pad(&pad);
            }
            self.flow_combiner.lock().unwrap().clear();
        }
        Ok(ret)
    }
}
