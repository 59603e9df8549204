// SPDX-License-Identifier: MPL-2.0
//! kvsdemux: the shared demuxer (`crate::demux`) with video and audio pads.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::demux::element::{self, Core, DemuxElement};

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

impl DemuxElement for KvsDemux {
    fn core(&self) -> &Core {
        &self.core
    }
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

impl ObjectImpl for KvsDemux {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(element::properties);
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

impl GstObjectImpl for KvsDemux {}

impl ElementImpl for KvsDemux {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Kinesis Video Streams demuxer",
                "Codec/Demuxer",
                "Demuxes the Matroska chunks of Amazon Kinesis Video Streams (GetMedia) as they \
                 arrive into one pad per video and audio track, each frame as soon as its block \
                 is complete, with KVS fragment tags and messages",
                "gst-plugin-kvs developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| element::pad_templates(true));
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
