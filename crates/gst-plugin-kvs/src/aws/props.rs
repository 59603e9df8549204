// SPDX-License-Identifier: MPL-2.0
//! Property specs the network elements share: all settable in NULL or
//! READY only, secrets write-only.

use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use super::Target;
use super::retry::Limits;

pub fn string(name: &'static str, blurb: &str) -> glib::ParamSpec {
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

/// The target's property specs, the same on both elements (the names of
/// gst-plugins-rs' AWS elements): the stream, the region, the credentials
/// and the endpoint. `verb` says what the element does with the stream.
pub fn target(verb: &str) -> Vec<glib::ParamSpec> {
    let stream = format!("Name of the Kinesis video stream to {verb} (or set stream-arn)");
    vec![
        string("stream-name", &stream),
        string(
            "stream-arn",
            "ARN of the Kinesis video stream (or set stream-name)",
        ),
        string(
            "region",
            "AWS region, e.g. us-east-1 (default: the SDK's region chain: AWS_REGION, profile)",
        ),
        string(
            "access-key",
            "AWS access key id (default: the SDK's credential chain: environment, profile, SSO, ECS/IMDS)",
        ),
        secret(
            "secret-access-key",
            "AWS secret access key; write-only, never logged",
        ),
        secret(
            "session-token",
            "AWS session token for temporary credentials; write-only, never logged",
        ),
        string(
            "endpoint-uri",
            "Control-plane endpoint to use instead of AWS's, e.g. http://127.0.0.1:4566 for a local \
             KVS server or a VPC endpoint",
        ),
    ]
}

/// A string property's value, empty as unset.
fn text(value: &glib::Value) -> Option<String> {
    value
        .get::<Option<String>>()
        .expect("a string property")
        .filter(|v| !v.is_empty())
}

impl Target {
    /// Sets `name` if it is one of the target's properties (under either
    /// element's names); false if it is not.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        let field = match name {
            "stream-name" => &mut self.stream_name,
            "stream-arn" => &mut self.stream_arn,
            "region" => &mut self.region,
            "access-key" => &mut self.access_key,
            "secret-access-key" => &mut self.secret_access_key,
            "session-token" => &mut self.session_token,
            "endpoint-uri" => &mut self.endpoint_uri,
            _ => return false,
        };
        *field = text(value);
        true
    }

    /// The value of `name` if it is one of the target's readable
    /// properties (secrets are write-only).
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        let field = match name {
            "stream-name" => &self.stream_name,
            "stream-arn" => &self.stream_arn,
            "region" => &self.region,
            "access-key" => &self.access_key,
            "endpoint-uri" => &self.endpoint_uri,
            _ => return None,
        };
        Some(field.to_value())
    }
}

/// The retry policy's properties, in their units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_retries: u32,
    pub max_outage_ms: u32,
    pub max_backoff_ms: u32,
    pub request_timeout_ms: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: DEFAULT_MAX_RETRIES,
            max_outage_ms: DEFAULT_MAX_OUTAGE_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }
}

impl RetrySettings {
    /// Sets `name` if it is one of the policy's properties.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        let Some(field) = self.field(name) else {
            return false;
        };
        *field = value.get().expect("a uint property");
        true
    }

    pub fn get(&self, name: &str) -> Option<glib::Value> {
        let mut copy = *self;
        copy.field(name).map(|v| v.to_value())
    }

    fn field(&mut self, name: &str) -> Option<&mut u32> {
        Some(match name {
            "max-retries" => &mut self.max_retries,
            "max-outage" => &mut self.max_outage_ms,
            "max-backoff" => &mut self.max_backoff_ms,
            "request-timeout" => &mut self.request_timeout_ms,
            _ => return None,
        })
    }

    pub fn limits(&self) -> Limits {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        Limits {
            max_retries: self.max_retries,
            max_outage: ms(self.max_outage_ms),
            max_backoff: ms(self.max_backoff_ms),
            request_timeout: ms(self.request_timeout_ms.max(1)),
        }
    }
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
