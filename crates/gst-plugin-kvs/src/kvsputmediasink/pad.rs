// SPDX-License-Identifier: MPL-2.0
//! The sink pad of kvsputmediasink: a `track-name` property.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

#[derive(Default)]
pub struct KvsPutMediaSinkPad {
    track_name: Mutex<Option<String>>,
}

impl KvsPutMediaSinkPad {
    /// The track's name: the property, else the pad's name.
    pub fn track_name(&self) -> String {
        self.track_name
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| self.obj().name().to_string())
    }
}

#[glib::object_subclass]
impl ObjectSubclass for KvsPutMediaSinkPad {
    const NAME: &'static str = "GstKvsPutMediaSinkPad";
    type Type = super::KvsPutMediaSinkPad;
    type ParentType = gst::Pad;
}

impl ObjectImpl for KvsPutMediaSinkPad {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("track-name")
                    .blurb(
                        "Name of the track (default: the pad's name); Amazon Connect's are \
                         AUDIO_FROM_CUSTOMER and AUDIO_TO_CUSTOMER",
                    )
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "track-name" {
            *self.track_name.lock().unwrap() = value.get().unwrap();
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "track-name" => self.track_name().to_value(),
            other => unreachable!("no property {other}"),
        }
    }
}

impl GstObjectImpl for KvsPutMediaSinkPad {}
impl PadImpl for KvsPutMediaSinkPad {}
