// SPDX-License-Identifier: MPL-2.0
//! The streaming KVS demuxer that `kvsaudiodemux` and `kvsdemux` share: the
//! parser feeding, fragment tracking, timeline, caps and tags, and the
//! element plumbing around them. Each element only says which tracks it
//! exposes and under which debug category it logs.

use gst::glib;

mod caps;
pub(crate) mod element;
mod fragment;
mod matching;
mod pad;
mod report;
mod state;
mod timeline;
mod video;

/// How A_AAC tracks are read (Amazon Connect labels raw PCM as A_AAC).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstKvsConnectPcm")]
pub enum ConnectPcm {
    #[default]
    #[enum_value(
        name = "Auto: raw S16LE PCM for Connect's track names and audio/L16 MimeType tags, else AAC",
        nick = "auto"
    )]
    Auto,
    #[enum_value(
        name = "Always: raw S16LE PCM (rate and channels from the MimeType tag, else 8000 Hz mono)",
        nick = "always"
    )]
    Always,
    #[enum_value(name = "Never: AAC, as the CodecID says", nick = "never")]
    Never,
}

/// Makes a source pad of the element from a template, with a name.
pub type MakePad = fn(&gst::PadTemplate, &str) -> gst::Pad;

/// The element a shared demuxer works for: where it posts and logs, and
/// how it makes its source pads.
pub struct Host<'a> {
    pub obj: &'a gst::Element,
    pub cat: gst::DebugCategory,
    pub make_pad: MakePad,
}
