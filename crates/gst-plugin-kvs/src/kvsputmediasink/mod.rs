// SPDX-License-Identifier: MPL-2.0
/**
 * element-kvsputmediasink:
 *
 * Puts media into a Kinesis video stream with PutMedia. Request pads
 * `video_%u` (H.264, H.265) and `audio_%u` (AAC, A-law, µ-law, S16LE PCM,
 * Opus), at most 3 tracks. It writes KVS-shaped Matroska itself, one Cluster
 * per fragment, and keeps each fragment until KVS acknowledges it: after a
 * dropped connection, an error KVS calls temporary or a throttle, it
 * reconnects and sends again from the first fragment not acknowledged. The
 * pipeline's EOS comes once every fragment is acknowledged.
 *
 * Producer times come from a buffer's `timestamp/x-unix` reference meta
 * (what kvsaudiodemux and kvsdemux put on their buffers), else from the
 * pipeline clock.
 *
 * Each pad's `track-name` names its track; set it from gst-launch as
 * `kvsputmediasink audio_0::track-name=AUDIO_FROM_CUSTOMER`.
 *
 * ```sh
 * gst-launch-1.0 audiotestsrc is-live=true ! audio/x-raw,format=S16LE,rate=8000,channels=1 ! \
 *     kvsputmediasink stream-name=my-stream region=us-east-1
 * ```
 */
use gst::glib;
use gst::prelude::*;

mod connection;
mod fragments;
mod imp;
mod inputs;
mod messages;
mod pad;
mod settings;
mod shared;
mod tracks;
mod transfer;
mod upload;

glib::wrapper! {
    pub struct KvsPutMediaSink(ObjectSubclass<imp::KvsPutMediaSink>)
        @extends gst::Element, gst::Object, @implements gst::ChildProxy;
}

glib::wrapper! {
    /// A sink pad of kvsputmediasink, with the track's name.
    pub struct KvsPutMediaSinkPad(ObjectSubclass<pad::KvsPutMediaSinkPad>) @extends gst::Pad, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "kvsputmediasink",
        gst::Rank::NONE,
        KvsPutMediaSink::static_type(),
    )
}
