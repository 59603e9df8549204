// SPDX-License-Identifier: MPL-2.0
//! kvsdemux: the shared demuxer (`crate::demux`) with video and audio pads.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::demux::element::{self, Core};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "kvsdemux",
        gst::DebugColorFlags::empty(),
        Some("Kinesis Video Streams demuxer"),
    )
});

pub struct KvsDemux {
    sinkpad: gst::Pad,
    core: Core,
}

#[glib::object_subclass]
impl ObjectSubclass for KvsDemux {
    const NAME: &'static str = "GstKvsDemux";
    type Type = super::KvsDemux;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        KvsDemux {
            sinkpad: element::sink_pad::<Self>(&klass.pad_template("sink").unwrap()),
            core: Core::new(*CAT, true, element::src_pad::<Self>),
        }
    }
}

element::demux_element!(
    KvsDemux,
    video: true,
    "Kinesis Video Streams demuxer",
    "Codec/Demuxer",
    "Demuxes the Matroska chunks of Amazon Kinesis Video Streams (GetMedia) as they arrive into \
     one pad per video and audio track, each frame as soon as its block is complete, with KVS \
     fragment tags and messages"
);
