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

/// Defaults of the retry policy's properties, in their units.
pub const DEFAULT_MAX_RETRIES: u32 = 10;
pub const DEFAULT_MAX_OUTAGE_MS: u32 = 0;
pub const DEFAULT_MAX_BACKOFF_MS: u32 = 5_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u32 = 5_000;

/// The retry policy's properties, the same on both elements: max-retries,
/// max-outage, max-backoff, request-timeout.
pub fn retry_limits() -> Vec<glib::ParamSpec> {
    vec![
        uint(
            "max-retries",
            "Failed attempts in a row before the error is final",
            0..=u32::MAX,
            DEFAULT_MAX_RETRIES,
        ),
        uint(
            "max-outage",
            "Once the stream was reached: milliseconds that failed attempts in a row are kept up \
             even past max-retries, so that a network outage is ridden out; the error is final \
             once both are spent (0 = max-retries alone). Before the first answer max-retries \
             alone decides, so that a wrong endpoint or stream fails fast",
            0..=u32::MAX,
            DEFAULT_MAX_OUTAGE_MS,
        ),
        uint(
            "max-backoff",
            "Longest wait between attempts, in milliseconds (with jitter)",
            0..=u32::MAX,
            DEFAULT_MAX_BACKOFF_MS,
        ),
        uint(
            "request-timeout",
            "Milliseconds a request to KVS may wait for its answer to begin (a peer that takes the \
             connection and never answers); then it counts as a failed attempt and is tried again",
            1..=u32::MAX,
            DEFAULT_REQUEST_TIMEOUT_MS,
        ),
    ]
}
