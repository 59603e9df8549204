// SPDX-License-Identifier: MPL-2.0
//! GStreamer elements for Amazon Kinesis Video Streams.

pub mod mkv;
