// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! GStreamer elements for Amazon Kinesis Video Streams: `kvsgetmediasrc`,
//! `kvsaudiodemux`, `kvsdemux` and `kvsputmediasink`.
//!
//! Applications that link the plugin call [`plugin_register_static`] after
//! `gst::init()`; [`tags`] names the tags the demuxers set and the messages
//! they post. The parsing itself is the `kvs-mkv` crate, with no GStreamer
//! in it.

use gst::glib;

#[cfg(feature = "aws")]
mod aws;
mod demux;
mod kvsaudiodemux;
mod kvsdemux;
#[cfg(feature = "aws")]
mod kvsgetmediasrc;
#[cfg(feature = "aws")]
mod kvsputmediasink;
pub mod tags;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    tags::register();
    kvsaudiodemux::register(plugin)?;
    kvsdemux::register(plugin)?;
    #[cfg(feature = "aws")]
    kvsgetmediasrc::register(plugin)?;
    #[cfg(feature = "aws")]
    kvsputmediasink::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    kvs,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "gst-plugin-kvs source tree",
    env!("BUILD_REL_DATE")
);
