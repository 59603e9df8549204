// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! GStreamer elements for Amazon Kinesis Video Streams.
//!
//! `kvsaudiodemux` and `kvsdemux` turn the Matroska chunk stream of KVS
//! GetMedia into audio (and video) pads, sharing one demuxer. The parsing lives in [`mkv`] and [`kvs`], which have no GStreamer in them.

use gst::glib;

#[cfg(feature = "aws")]
pub mod aws;
mod demux;
pub mod kvs;
pub mod kvsaudiodemux;
pub mod kvsdemux;
#[cfg(feature = "aws")]
pub mod kvsgetmediasrc;
#[cfg(feature = "aws")]
pub mod kvsputmediasink;
pub mod mkv;
#[cfg(feature = "aws")]
pub mod put;
#[cfg(feature = "aws")]
pub mod server;
pub mod synth;
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
