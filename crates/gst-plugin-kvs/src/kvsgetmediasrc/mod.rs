// SPDX-License-Identifier: MPL-2.0
/**
 * element-kvsgetmediasrc:
 *
 * Reads a Kinesis video stream with GetMedia, pushing the bytes downstream as
 * they arrive. After any drop it reconnects with the continuation token of the
 * last complete fragment; the demuxer (`kvsaudiodemux` or `kvsdemux`) drops
 * what it already output, so every sample and frame leaves once.
 *
 * With an `end-timestamp` it records a time range instead (archive mode):
 * ListFragments, then GetMediaForFragmentList in batches, as fast as
 * downstream takes the bytes, with duration and position queries,
 * `kvs-progress` messages and seeking by time (it restarts at the fragment
 * that holds the time asked for).
 *
 * It is also the `kvs://` URI handler, so `playbin` and `gst-play-1.0` play
 * KVS streams through `kvsdemux`.
 *
 * ```sh
 * gst-launch-1.0 kvsgetmediasrc stream-name=my-stream region=us-east-1 ! kvsaudiodemux ! ...
 * ```
 */
use gst::glib;
use gst::prelude::*;

mod archive;
mod imp;
mod live;
mod settings;
mod uri;

glib::wrapper! {
    pub struct KvsGetMediaSrc(ObjectSubclass<imp::KvsGetMediaSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object,
        @implements gst::URIHandler;
}

/// Where GetMedia starts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstKvsStartSelector")]
pub enum StartSelector {
    #[default]
    #[enum_value(name = "Now: the latest fragment", nick = "now")]
    Now,
    #[enum_value(name = "Earliest: the oldest fragment kept", nick = "earliest")]
    Earliest,
    #[enum_value(
        name = "After the fragment given by fragment-number",
        nick = "fragment-number"
    )]
    FragmentNumber,
    #[enum_value(name = "At start-timestamp, server time", nick = "server-timestamp")]
    ServerTimestamp,
    #[enum_value(
        name = "At start-timestamp, producer time",
        nick = "producer-timestamp"
    )]
    ProducerTimestamp,
    #[enum_value(name = "At continuation-token", nick = "continuation-token")]
    ContinuationToken,
}

/// Live GetMedia or an archived range.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstKvsMode")]
pub enum Mode {
    #[default]
    #[enum_value(
        name = "Auto: archive when end-timestamp is set, else live",
        nick = "auto"
    )]
    Auto,
    #[enum_value(name = "Live: GetMedia, following the stream", nick = "live")]
    Live,
    #[enum_value(
        name = "Archive: ListFragments and GetMediaForFragmentList over a range",
        nick = "archive"
    )]
    Archive,
}

/// Which clock an archive range is on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstKvsTimestampType")]
pub enum TimestampType {
    #[default]
    #[enum_value(name = "Server: when KVS received the fragment", nick = "server")]
    Server,
    #[enum_value(name = "Producer: the producer's timestamp", nick = "producer")]
    Producer,
}

impl StartSelector {
    /// The enum nick, as the property takes it.
    pub fn nick(self) -> String {
        let class = glib::EnumClass::with_type(Self::static_type()).unwrap();
        class
            .value(self as i32)
            .map_or_else(String::new, |v| v.nick().to_string())
    }
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "kvsgetmediasrc",
        gst::Rank::SECONDARY,
        KvsGetMediaSrc::static_type(),
    )
}
