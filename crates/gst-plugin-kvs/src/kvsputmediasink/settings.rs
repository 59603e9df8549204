// SPDX-License-Identifier: MPL-2.0
//! kvsputmediasink's properties: the AWS names of kvsgetmediasrc (and of
//! gst-plugins-rs' AWS elements), with kvssink's names taken as deprecated
//! aliases (the mapping is in docs/elements/kvsputmediasink.md).

use std::sync::LazyLock;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use super::fragments::Rules;
use super::shared::Config;
use crate::aws::props::RetrySettings;
use crate::aws::{Target, props};

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
    pub retry: RetrySettings,
    pub connection_max_age_s: u32,
    pub connection_staleness_s: u32,
    pub max_rate: u32,
    pub fragment_tags: Option<gst::Structure>,
}

/// Milliseconds per fragment of audio-only input.
pub const DEFAULT_FRAGMENT_DURATION_MS: u32 = 2000;
pub const DEFAULT_KEY_FRAME_FRAGMENTATION: bool = true;
/// MiB of fragments kept until KVS acknowledges them.
pub const DEFAULT_STORAGE_SIZE_MIB: u32 = 128;
pub const DEFAULT_DROP_WHEN_FULL: bool = false;
/// Hours of data a created stream keeps.
pub const DEFAULT_RETENTION_HOURS: u32 = 2;
pub const DEFAULT_CREATE_STREAM: bool = false;
pub const DEFAULT_RESTART_ON_ERROR: bool = true;
/// Seconds a PutMedia connection serves before it is replaced.
pub const DEFAULT_CONNECTION_MAX_AGE_S: u32 = 3000;
/// Seconds without an acknowledgement before a connection is dead.
pub const DEFAULT_CONNECTION_STALENESS_S: u32 = 60;
/// Bytes a second at most: what KVS reads of one stream.
pub const DEFAULT_MAX_RATE: u32 = 12_500_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target: Target::default(),
            fragment_duration_ms: DEFAULT_FRAGMENT_DURATION_MS,
            key_frame_fragmentation: DEFAULT_KEY_FRAME_FRAGMENTATION,
            storage_size_mib: DEFAULT_STORAGE_SIZE_MIB,
            drop_when_full: DEFAULT_DROP_WHEN_FULL,
            retention_hours: DEFAULT_RETENTION_HOURS,
            create_stream: DEFAULT_CREATE_STREAM,
            restart_on_error: DEFAULT_RESTART_ON_ERROR,
            retry: RetrySettings::default(),
            connection_max_age_s: DEFAULT_CONNECTION_MAX_AGE_S,
            connection_staleness_s: DEFAULT_CONNECTION_STALENESS_S,
            max_rate: DEFAULT_MAX_RATE,
            fragment_tags: None,
        }
    }
}

impl Settings {
    pub fn set(&mut self, name: &str, value: &glib::Value) {
        let name = kvssink_name(name).unwrap_or(name);
        let uint = || value.get::<u32>().unwrap();
        let boolean = || value.get::<bool>().unwrap();
        if self.target.set(name, value) || self.retry.set(name, value) {
            return;
        }
        match name {
            "fragment-duration" => self.fragment_duration_ms = uint(),
            "key-frame-fragmentation" => self.key_frame_fragmentation = boolean(),
            "storage-size" => self.storage_size_mib = uint(),
            "drop-when-full" => self.drop_when_full = boolean(),
            "retention-period" => self.retention_hours = uint(),
            "create-stream" => self.create_stream = boolean(),
            "restart-on-error" => self.restart_on_error = boolean(),

            "connection-max-age" => self.connection_max_age_s = uint(),
            "connection-staleness" => self.connection_staleness_s = uint(),
            "max-rate" => self.max_rate = uint(),
            "fragment-tags" => self.fragment_tags = value.get().unwrap(),
            _ => unreachable!("no writable property {name}"),
        }
    }

    pub fn get(&self, name: &str) -> glib::Value {
        let name = kvssink_name(name).unwrap_or(name);
        if let Some(value) = self.target.get(name).or_else(|| self.retry.get(name)) {
            return value;
        }
        match name {
            "fragment-duration" => self.fragment_duration_ms.to_value(),
            "key-frame-fragmentation" => self.key_frame_fragmentation.to_value(),
            "storage-size" => self.storage_size_mib.to_value(),
            "drop-when-full" => self.drop_when_full.to_value(),
            "retention-period" => self.retention_hours.to_value(),
            "create-stream" => self.create_stream.to_value(),
            "restart-on-error" => self.restart_on_error.to_value(),

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
            limits: self.retry.limits(),
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

/// kvssink's names that the sink takes too, deprecated, so that kvssink
/// pipelines work unchanged: (kvssink's name, this element's).
pub const KVSSINK_NAMES: [(&str, &str); 4] = [
    ("aws-region", "region"),
    ("secret-key", "secret-access-key"),
    ("allow-create-stream", "create-stream"),
    ("rotation-period", "connection-max-age"),
];

/// The property a kvssink name stands for.
pub fn kvssink_name(name: &str) -> Option<&'static str> {
    KVSSINK_NAMES
        .iter()
        .find(|(old, _)| *old == name)
        .map(|(_, new)| *new)
}

/// The deprecated specs of kvssink's names, each of the type of the
/// property it stands for.
fn kvssink_specs(specs: &[glib::ParamSpec]) -> Vec<glib::ParamSpec> {
    KVSSINK_NAMES
        .iter()
        .map(|(old, new)| {
            let spec = specs
                .iter()
                .find(|s| s.name() == *new)
                .expect("a property for each kvssink name");
            let blurb = format!("Deprecated: kvssink's name for {new}");
            let flags = spec.flags() | glib::ParamFlags::DEPRECATED;
            if let Some(s) = spec.downcast_ref::<glib::ParamSpecUInt>() {
                glib::ParamSpecUInt::builder(old)
                    .blurb(&blurb)
                    .minimum(s.minimum())
                    .maximum(s.maximum())
                    .default_value(s.default_value())
                    .flags(flags)
                    .build()
            } else if let Some(s) = spec.downcast_ref::<glib::ParamSpecBoolean>() {
                glib::ParamSpecBoolean::builder(old)
                    .blurb(&blurb)
                    .default_value(s.default_value())
                    .flags(flags)
                    .build()
            } else {
                glib::ParamSpecString::builder(old)
                    .blurb(&blurb)
                    .flags(flags)
                    .build()
            }
        })
        .collect()
}

pub static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
    let mut specs = props::target("put into");
    specs.extend([
        props::uint(
            "fragment-duration",
            "Milliseconds per fragment for audio-only streams; with video, the shortest fragment \
             when key-frame-fragmentation is off (KVS takes at most 10 s)",
            1..=10_000,
            DEFAULT_FRAGMENT_DURATION_MS,
        ),
        props::boolean(
            "key-frame-fragmentation",
            "With video: start a fragment at every key frame (else at the first key frame after fragment-duration)",
            DEFAULT_KEY_FRAME_FRAGMENTATION,
        ),
        props::uint(
            "storage-size",
            "MiB of fragments kept until KVS acknowledges them; when full, upstream waits (or see drop-when-full)",
            1..=u32::MAX,
            DEFAULT_STORAGE_SIZE_MIB,
        ),
        props::boolean(
            "drop-when-full",
            "When storage-size is full, drop the oldest fragments with a warning instead of making upstream wait",
            DEFAULT_DROP_WHEN_FULL,
        ),
        props::uint(
            "retention-period",
            "Hours of data kept by a stream that create-stream creates (0 = none: KVS then sends no PERSISTED)",
            0..=u32::MAX,
            DEFAULT_RETENTION_HOURS,
        ),
        props::boolean(
            "create-stream",
            "Create the stream (with retention-period) if it does not exist, as kvssink does",
            DEFAULT_CREATE_STREAM,
        ),
        props::boolean(
            "restart-on-error",
            "Reconnect and send again after an error KVS says is temporary (else any ERROR ACK fails the element)",
            DEFAULT_RESTART_ON_ERROR,
        ),
    ]);
    specs.extend(props::retry_limits());
    specs.extend([
        props::uint(
            "connection-max-age",
            "Seconds after which the PutMedia connection is replaced at the next fragment boundary, \
             with no gap (it is also replaced 2 minutes before the credentials expire)",
            1..=u32::MAX,
            DEFAULT_CONNECTION_MAX_AGE_S,
        ),
        props::uint(
            "connection-staleness",
            "Seconds without an acknowledgement after which the connection is taken as dead and replaced",
            1..=u32::MAX,
            DEFAULT_CONNECTION_STALENESS_S,
        ),
        props::uint(
            "max-rate",
            "Bytes a second sent at most (KVS reads up to 12.5 MB/s a stream; 0 = no limit, for \
             other endpoints)",
            0..=u32::MAX,
            DEFAULT_MAX_RATE,
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
    let old = kvssink_specs(&specs);
    specs.extend(old);
    specs
});
