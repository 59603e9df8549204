// SPDX-License-Identifier: MPL-2.0
//! Pure Matroska/EBML parsing for KVS streams. No GStreamer in here.

pub mod ebml;
pub mod elements;
pub mod feed;
pub mod parser;
pub mod writer;

pub use elements::{Block, Picture, SimpleTag, Track, TrackKind};
pub use parser::{Event, Parser};
