// SPDX-License-Identifier: MPL-2.0
//! kvsputmediasink's properties. Names follow AWS's kvssink where the
//! meaning is the same (see the README's mapping table).

use std::sync::LazyLock;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use super::fragments::Rules;
use super::shared::Config;
use crate::aws::props::{RetrySettings, TargetNames};
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
            retry: RetrySettings::default(),
            connection_max_age_s: 3000,
            connection_staleness_s: 60,
            max_rate: 12_500_000,
            fragment_tags: None,
        }
    }
}

impl Settings {
    pub fn set(&mut self, name: &str, value: &glib::Value) {
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

pub static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
    // kvssink's names, so that its pipelines work unchanged.
    let names = TargetNames {
        region: "aws-region",
        secret: "secret-key",
        verb: "put into",
    };
    let mut specs = props::target(&names);
    specs.extend([
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
    ]);
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
