// SPDX-License-Identifier: MPL-2.0
//! Property specs the network elements share: all settable in NULL or
//! READY only, secrets write-only.

use gst::glib;
use gst::prelude::*;

pub fn string(name: &'static str, blurb: &'static str) -> glib::ParamSpec {
    glib::ParamSpecString::builder(name)
        .blurb(blurb)
        .mutable_ready()
        .build()
}

/// Write-only: never read back, never logged.
pub fn secret(name: &'static str, blurb: &'static str) -> glib::ParamSpec {
    glib::ParamSpecString::builder(name)
        .blurb(blurb)
        .write_only()
        .mutable_ready()
        .build()
}

pub fn uint(
    name: &'static str,
    blurb: &'static str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> glib::ParamSpec {
    glib::ParamSpecUInt::builder(name)
        .blurb(blurb)
        .minimum(*range.start())
        .maximum(*range.end())
        .default_value(default)
        .mutable_ready()
        .build()
}

pub fn boolean(name: &'static str, blurb: &'static str, default: bool) -> glib::ParamSpec {
    glib::ParamSpecBoolean::builder(name)
        .blurb(blurb)
        .default_value(default)
        .mutable_ready()
        .build()
}
