// SPDX-License-Identifier: MPL-2.0
/**
 * element-kvsdemux:
 *
 * Demuxes the Matroska chunk stream of Kinesis Video Streams GetMedia and
 * GetMediaForFragmentList, as it arrives, into one `video_%u` pad per video
 * track and one `audio_%u` pad per audio track. Each frame leaves as soon as
 * its block is complete. It shares its parser, timeline and tags with
 * kvsaudiodemux.
 *
 * ```sh
 * gst-launch-1.0 filesrc location=camera.mkv ! kvsdemux name=d \
 *     d.video_0 ! queue ! h264parse ! avdec_h264 ! videoconvert ! autovideosink
 * ```
 */
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct KvsDemux(ObjectSubclass<imp::KvsDemux>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "kvsdemux",
        // Below matroskademux, so that ordinary Matroska files keep going
        // there, and above kvsaudiodemux, so that decodebin and playbin pick
        // it for video/x-kvs-matroska.
        gst::Rank::SECONDARY,
        KvsDemux::static_type(),
    )
}
