// SPDX-License-Identifier: MPL-2.0
/**
 * element-kvsaudiodemux:
 *
 * Demuxes the Matroska chunk stream that Kinesis Video Streams GetMedia and
 * GetMediaForFragmentList return, as it arrives, into one `audio_%u` pad per
 * audio track. KVS fragment tags become GstTags, and each complete fragment
 * posts a `kvs-fragment` element message.
 *
 * ```sh
 * gst-launch-1.0 filesrc location=call.mkv ! kvsaudiodemux name=d \
 *     d.audio_0 ! queue ! wavenc ! filesink location=caller.wav \
 *     d.audio_1 ! queue ! wavenc ! filesink location=agent.wav
 * ```
 */
use gst::glib;
use gst::prelude::*;

mod imp;

#[cfg(feature = "doc")]
use crate::demux::ConnectPcm;

glib::wrapper! {
    pub struct KvsAudioDemux(ObjectSubclass<imp::KvsAudioDemux>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    ConnectPcm::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "kvsaudiodemux",
        // Below matroskademux, so that ordinary Matroska files keep going
        // there; only kvsaudiodemux takes video/x-kvs-matroska.
        gst::Rank::MARGINAL,
        KvsAudioDemux::static_type(),
    )
}
