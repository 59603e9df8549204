// SPDX-License-Identifier: MPL-2.0
//! kvsputmediasink's properties. Names follow AWS's kvssink where the
//! meaning is the same (see the README's mapping table).

use std::sync::LazyLock;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use super::session::Config;
use crate::aws::props::{
    DEFAULT_MAX_BACKOFF_MS, DEFAULT_MAX_OUTAGE_MS, DEFAULT_MAX_RETRIES, DEFAULT_REQUEST_TIMEOUT_MS,
};
use crate::aws::retry::Limits;
use crate::aws::{Target, props};
use crate::put::fragments::Rules;

#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub fragment_duration_ms: u32,
    pub key_frame_fragmentation: bool,
    pub storage_size_mib: u32,
    pub drop_when_full: bool,
    pub retention_hours: u32,
    pub create_stream: bool,
    pub restart_on_error: bool,
    pub max_retries: u32,
    pub max_outage_ms: u32,
    pub max_backoff_ms: u32,
    pub request_timeout_ms: u32,
    pub connection_max_age_s: u32,
    pub connection_staleness_s: u32,
    pub max_rate: u32,
    pub fragment_tags: Option<gst::Structure>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target: Target::default(),
            fragment_duration_ms: 2000,
            key_frame_fragmentation: true,
            storage_size_mib: 128,
            drop_when_full: false,
            retention_hours: 2,
            create_stream: false,
            restart_on_error: true,
            max_retries: DEFAULT_MAX_RETRIES,
            max_outage_ms: DEFAULT_MAX_OUTAGE_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            connection_max_age_s: 3000,
            connection_staleness_s: 60,
            max_rate: 12_500_000,
            fragment_tags: None,
        }
    }
}

impl Settings {
    pub fn set(&mut self, name: &str, value: &glib::Value) {
        let string = || {
            value
                .get::<Option<String>>()
                .unwrap()
                .filter(|s| !s.is_empty())
        };
        let uint = || value.get::<u32>().unwrap();
        let boolean = || value.get::<bool>().unwrap();
        match name {
            "stream-name" => self.target.stream_name = string(),
            "stream-arn" => self.target.stream_arn = string(),
            "aws-region" => self.target.region = string(),
            "access-key" => self.target.access_key = string(),
            "secret-key" => self.target.secret_access_key = string(),
            "session-token" => self.target.session_token = string(),
            "endpoint-uri" => self.target.endpoint_uri = string(),
            "fragment-duration" => self.fragment_duration_ms = uint(),
            "key-frame-fragmentation" => self.key_frame_fragmentation = boolean(),
            "storage-size" => self.storage_size_mib = uint(),
            "drop-when-full" => self.drop_when_full = boolean(),
            "retention-period" => self.retention_hours = uint(),
            "create-stream" => self.create_stream = boolean(),
            "restart-on-error" => self.restart_on_error = boolean(),
            "max-retries" => self.max_retries = uint(),
            "max-outage" => self.max_outage_ms = uint(),
            "max-backoff" => self.max_backoff_ms = uint(),
            "request-timeout" => self.request_timeout_ms = uint(),
            "connection-max-age" => self.connection_max_age_s = uint(),
            "connection-staleness" => self.connection_staleness_s = uint(),
            "max-rate" => self.max_rate = uint(),
            "fragment-tags" => self.fragment_tags = value.get().unwrap(),
            _ => unreachable!("no writable property {name}"),
        }
    }

    pub fn get(&self, name: &str) -> glib::Value {
        match name {
            "stream-name" => self.target.stream_name.to_value(),
            "stream-arn" => self.target.stream_arn.to_value(),
            "aws-region" => self.target.region.to_value(),
            "access-key" => self.target.access_key.to_value(),
            "endpoint-uri" => self.target.endpoint_uri.to_value(),
            "fragment-duration" => self.fragment_duration_ms.to_value(),
            "key-frame-fragmentation" => self.key_frame_fragmentation.to_value(),
            "storage-size" => self.storage_size_mib.to_value(),
            "drop-when-full" => self.drop_when_full.to_value(),
            "retention-period" => self.retention_hours.to_value(),
            "create-stream" => self.create_stream.to_value(),
            "restart-on-error" => self.restart_on_error.to_value(),
            "max-retries" => self.max_retries.to_value(),
            "max-outage" => self.max_outage_ms.to_value(),
            "max-backoff" => self.max_backoff_ms.to_value(),
            "request-timeout" => self.request_timeout_ms.to_value(),
            "connection-max-age" => self.connection_max_age_s.to_value(),
            "connection-staleness" => self.connection_staleness_s.to_value(),
            "max-rate" => self.max_rate.to_value(),
            "fragment-tags" => self.fragment_tags.to_value(),
            _ => unreachable!("no readable property {name}"),
        }
    }

    /// The fragmenting rules.
    pub fn rules(&self) -> Rules {
        let tags = self.fragment_tags.as_ref().map_or_else(Vec::new, |s| {
            s.iter()
                .map(|(name, value)| {
                    let text = value
                        .get::<String>()
                        .ok()
                        .or_else(|| value.serialize().ok().map(|s| s.to_string()))
                        .unwrap_or_default();
                    (name.to_string(), text)
                })
                .collect()
        });
        Rules {
            fragment_ms: u64::from(self.fragment_duration_ms.max(1)),
            key_frame_fragmentation: self.key_frame_fragmentation,
            tags,
        }
    }

    pub fn config(&self, media_type: String) -> Config {
        Config {
            target: self.target.clone(),
            create_stream: self.create_stream,
            retention_hours: self.retention_hours,
            media_type,
            max_age: Duration::from_secs(u64::from(self.connection_max_age_s.max(1))),
            credentials_margin: Duration::from_secs(120),
            limits: Limits {
                max_retries: self.max_retries,
                max_outage: Duration::from_millis(u64::from(self.max_outage_ms)),
                max_backoff: Duration::from_millis(u64::from(self.max_backoff_ms)),
                request_timeout: Duration::from_millis(u64::from(self.request_timeout_ms.max(1))),
            },
            restart_on_error: self.restart_on_error,
            rate: u64::from(self.max_rate),
            staleness: Duration::from_secs(u64::from(self.connection_staleness_s.max(1))),
        }
    }

    /// The storage limit, in bytes.
    pub fn storage_bytes(&self) -> usize {
        self.storage_size_mib.max(1) as usize * 1024 * 1024
    }
}

pub static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
    let mut specs = vec![
        props::string(
            "stream-name",
            "Name of the Kinesis video stream to put into (or set stream-arn)",
        ),
        props::string(
            "stream-arn",
            "ARN of the Kinesis video stream (or set stream-name)",
        ),
        props::string(
            "aws-region",
            "AWS region, e.g. us-east-1 (default: the SDK's region chain: AWS_REGION, profile)",
        ),
        props::string(
            "access-key",
            "AWS access key id (default: the SDK's credential chain: environment, profile, SSO, ECS/IMDS)",
        ),
        props::secret(
            "secret-key",
            "AWS secret access key; write-only, never logged",
        ),
        props::secret(
            "session-token",
            "AWS session token for temporary credentials; write-only, never logged",
        ),
        props::string(
            "endpoint-uri",
            "Control-plane endpoint to use instead of AWS's, e.g. http://127.0.0.1:4566 for a local KVS server",
        ),
        props::uint(
            "fragment-duration",
            "Milliseconds per fragment for audio-only streams; with video, the shortest fragment \
             when key-frame-fragmentation is off (KVS takes at most 10 s)",
            1..=10_000,
            2000,
        ),
        props::boolean(
            "key-frame-fragmentation",
            "With video: start a fragment at every key frame (else at the first key frame after fragment-duration)",
            true,
        ),
        props::uint(
            "storage-size",
            "MiB of fragments kept until KVS acknowledges them; when full, upstream waits (or see drop-when-full)",
            1..=u32::MAX,
            128,
        ),
        props::boolean(
            "drop-when-full",
            "When storage-size is full, drop the oldest fragments with a warning instead of making upstream wait",
            false,
        ),
        props::uint(
            "retention-period",
            "Hours of data kept by a stream that create-stream creates (0 = none: KVS then sends no PERSISTED)",
            0..=u32::MAX,
            2,
        ),
        props::boolean(
            "create-stream",
            "Create the stream (with retention-period) if it does not exist, as kvssink does",
            false,
        ),
        props::boolean(
            "restart-on-error",
            "Reconnect and send again after an error KVS says is temporary (else any ERROR ACK fails the element)",
            true,
        ),
    ];
    specs.extend(props::retry_limits());
    specs.extend([
        props::uint(
            "connection-max-age",
            "Seconds after which the PutMedia connection is replaced at the next fragment boundary, \
             with no gap (it is also replaced 2 minutes before the credentials expire)",
            1..=u32::MAX,
            3000,
        ),
        props::uint(
            "connection-staleness",
            "Seconds without an acknowledgement after which the connection is taken as dead and replaced",
            1..=u32::MAX,
            60,
        ),
        props::uint(
            "max-rate",
            "Bytes a second sent at most (KVS reads up to 12.5 MB/s a stream; 0 = no limit, for \
             other endpoints)",
            0..=u32::MAX,
            12_500_000,
        ),
        glib::ParamSpecBoxed::builder::<gst::Structure>("fragment-tags")
            .blurb(
                "Tags written after every fragment's Cluster, as Amazon Connect writes them, e.g. \
                 \"tags, ContactId=(string)abc, MimeType=(string)audio/L16\"",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .blurb(
                "Counters: connections, fragments-sent, fragments-persisted, fragments-resent, \
                 fragments-dropped, bytes-sent, errors, throttles, endpoint-refreshes, \
                 buffered-bytes, buffered-fragments, and the latency from a fragment's end to its \
                 acknowledgement in ms (last-latency-ms, mean-latency-ms, max-latency-ms)",
            )
            .read_only()
            .build(),
    ]);
    specs
});
