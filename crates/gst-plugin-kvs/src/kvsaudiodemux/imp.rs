// SPDX-License-Identifier: MPL-2.0
//! kvsaudiodemux: the shared demuxer (`crate::demux`) with audio pads only.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::demux::element::{self, Core};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvsaudiodemux",
        gst::DebugColorFlags::empty(),
        Some("Kinesis Video Streams audio demuxer"),
    )
});

pub struct KvsAudioDemux {
    sinkpad: gst::Pad,
    core: Core,
}

#[glib::object_subclass]
impl ObjectSubclass for KvsAudioDemux {
    const NAME: &'static str = "GstKvsAudioDemux";
    type Type = super::KvsAudioDemux;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        KvsAudioDemux {
            sinkpad: element::sink_pad::<Self>(&klass.pad_template("sink").unwrap()),
            core: Core::new(*CAT, false, element::src_pad::<Self>),
        }
    }
}

element::demux_element!(
    KvsAudioDemux,
    video: false,
    "Kinesis Video Streams audio demuxer",
    "Codec/Demuxer/Audio",
    "Demuxes the Matroska chunks of Amazon Kinesis Video Streams (GetMedia) as they arrive into \
     one pad per audio track, with KVS fragment tags and messages. Reads Amazon Connect's \
     A_AAC-labelled PCM as raw audio"
);
