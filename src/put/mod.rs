// SPDX-License-Identifier: MPL-2.0
//! The producer side without GStreamer or I/O: the fragments
//! `kvsputmediasink` writes and keeps, and the PutMedia acknowledgements.

pub mod ack;
pub mod fragments;
