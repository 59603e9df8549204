// SPDX-License-Identifier: MPL-2.0
//! kvsgetmediasrc's properties, and what they ask for: a live start or an
//! archive range.

use std::sync::LazyLock;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use super::archive::Range;
use super::live::Policy;
use super::{Mode, StartSelector, TimestampType};
use crate::aws::props::RetrySettings;
use crate::aws::{Start, Target, props};

/// Milliseconds without a new fragment, while KVS answers, before EOS.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 10_000;
/// Milliseconds a body may send nothing before it is dropped and resumed.
pub const DEFAULT_READ_TIMEOUT_MS: u32 = 5_000;
/// GetMediaForFragmentList calls at once in archive mode.
pub const DEFAULT_ARCHIVE_CONNECTIONS: u32 = 2;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The `kvs://` URI that set the rest, if one did.
    pub uri: Option<String>,
    pub target: Target,
    pub mode: Mode,
    pub start_selector: StartSelector,
    pub fragment_number: Option<String>,
    pub start_timestamp: Option<String>,
    pub end_timestamp: Option<String>,
    pub timestamp_type: TimestampType,
    pub continuation_token: Option<String>,
    pub idle_timeout_ms: u32,
    pub read_timeout_ms: u32,
    pub retry: RetrySettings,
    pub archive_connections: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            uri: None,
            target: Target::default(),
            mode: Mode::Auto,
            start_selector: StartSelector::Now,
            fragment_number: None,
            start_timestamp: None,
            end_timestamp: None,
            timestamp_type: TimestampType::Server,
            continuation_token: None,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            retry: RetrySettings::default(),
            archive_connections: DEFAULT_ARCHIVE_CONNECTIONS,
        }
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Live(Start),
    Archive(Range),
}

/// Seconds since the Unix epoch from RFC 3339 or a number of seconds.
pub fn parse_timestamp(s: &str) -> Option<f64> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Some(secs);
    }
    let t = aws_smithy_types::DateTime::from_str(
        s.trim(),
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    Some(t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9)
}

fn timestamp(value: &Option<String>, prop: &str, why: &str) -> Result<f64, String> {
    let s = value
        .as_deref()
        .ok_or_else(|| format!("{why} needs the {prop} property"))?;
    parse_timestamp(s).ok_or(format!(
        "{prop} {s:?} is neither RFC 3339 (2024-05-01T12:00:00Z) nor epoch seconds"
    ))
}

impl Settings {
    pub fn is_archive(&self) -> bool {
        match self.mode {
            Mode::Auto => self.end_timestamp.is_some(),
            Mode::Live => false,
            Mode::Archive => true,
        }
    }

    /// Checks the settings and says what to do.
    pub fn plan(&self) -> Result<Plan, String> {
        if self.target.stream_name.is_none() && self.target.stream_arn.is_none() {
            return Err("Set stream-name or stream-arn".into());
        }
        if self.target.access_key.is_some() != self.target.secret_access_key.is_some() {
            return Err("Set both access-key and secret-access-key, or neither to use the default credential chain".into());
        }
        if self.is_archive() {
            return self.range().map(Plan::Archive);
        }
        if self.end_timestamp.is_some() {
            return Err("end-timestamp needs mode=archive (or mode=auto)".into());
        }
        self.start().map(Plan::Live)
    }

    fn range(&self) -> Result<Range, String> {
        let why = "Archive mode";
        let start = timestamp(&self.start_timestamp, "start-timestamp", why)?;
        let end = timestamp(&self.end_timestamp, "end-timestamp", why)?;
        if end < start {
            return Err(format!(
                "end-timestamp ({end}) is before start-timestamp ({start})"
            ));
        }
        let producer = self.timestamp_type == TimestampType::Producer
            || self.start_selector == StartSelector::ProducerTimestamp;
        Ok(Range {
            start,
            end,
            producer,
        })
    }

    fn start(&self) -> Result<Start, String> {
        let why = format!("start-selector={}", self.start_selector.nick());
        let need = |v: &Option<String>, prop: &str| {
            v.clone()
                .ok_or_else(|| format!("{why} needs the {prop} property"))
        };
        let at = || timestamp(&self.start_timestamp, "start-timestamp", &why);
        Ok(match self.start_selector {
            StartSelector::Now => Start::Now,
            StartSelector::Earliest => Start::Earliest,
            StartSelector::FragmentNumber => {
                Start::AfterFragment(need(&self.fragment_number, "fragment-number")?)
            }
            StartSelector::ServerTimestamp => Start::ServerTimestamp(at()?),
            StartSelector::ProducerTimestamp => Start::ProducerTimestamp(at()?),
            StartSelector::ContinuationToken => {
                Start::ContinuationToken(need(&self.continuation_token, "continuation-token")?)
            }
        })
    }

    pub fn policy(&self) -> Policy {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        Policy {
            idle_timeout: if self.idle_timeout_ms == 0 {
                Duration::MAX
            } else {
                ms(self.idle_timeout_ms)
            },
            read_timeout: ms(self.read_timeout_ms),
            limits: self.retry.limits(),
            archive_connections: self.archive_connections as usize,
        }
    }

    pub fn set(&mut self, name: &str, value: &glib::Value) {
        if self.target.set(name, value) || self.retry.set(name, value) {
            return;
        }
        let text = || {
            value
                .get::<Option<String>>()
                .unwrap()
                .filter(|v| !v.is_empty())
        };
        match name {
            "mode" => self.mode = value.get().unwrap(),
            "start-selector" => self.start_selector = value.get().unwrap(),
            "fragment-number" => self.fragment_number = text(),
            "start-timestamp" => self.start_timestamp = text(),
            "end-timestamp" => self.end_timestamp = text(),
            "timestamp-type" => self.timestamp_type = value.get().unwrap(),
            "continuation-token" => self.continuation_token = text(),
            "idle-timeout" => self.idle_timeout_ms = value.get().unwrap(),
            "read-timeout" => self.read_timeout_ms = value.get().unwrap(),
            "archive-connections" => self.archive_connections = value.get().unwrap(),
            _ => unreachable!("no property {name}"),
        }
    }

    /// A property's value; secrets are write-only, so never here.
    pub fn get(&self, name: &str) -> glib::Value {
        if let Some(value) = self.target.get(name).or_else(|| self.retry.get(name)) {
            return value;
        }
        match name {
            "mode" => self.mode.to_value(),
            "start-selector" => self.start_selector.to_value(),
            "fragment-number" => self.fragment_number.to_value(),
            "start-timestamp" => self.start_timestamp.to_value(),
            "end-timestamp" => self.end_timestamp.to_value(),
            "timestamp-type" => self.timestamp_type.to_value(),
            "continuation-token" => self.continuation_token.to_value(),
            "idle-timeout" => self.idle_timeout_ms.to_value(),
            "read-timeout" => self.read_timeout_ms.to_value(),
            "archive-connections" => self.archive_connections.to_value(),
            _ => unreachable!("no readable property {name}"),
        }
    }
}

fn uint_prop(name: &'static str, blurb: &'static str, default: u32) -> glib::ParamSpec {
    props::uint(name, blurb, 0..=u32::MAX, default)
}

pub static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
    let mut specs = props::target("read");
    specs.extend([
        glib::ParamSpecEnum::builder_with_default("mode", Mode::Auto)
            .blurb(
                "live follows the stream with GetMedia; archive records start-timestamp to \
                 end-timestamp with ListFragments and GetMediaForFragmentList, unpaced; auto \
                 picks archive when end-timestamp is set",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("start-selector", StartSelector::Now)
            .blurb("Where GetMedia starts; fragment-number, start-timestamp or continuation-token give the value")
            .mutable_ready()
            .build(),
        props::string("fragment-number", "With start-selector=fragment-number: start after this fragment"),
        props::string(
            "start-timestamp",
            "With start-selector=server-timestamp or producer-timestamp, or in archive mode: RFC 3339 \
             (2024-05-01T12:00:00Z) or seconds since the Unix epoch",
        ),
        props::string(
            "end-timestamp",
            "End of the range to record (archive mode; setting it selects archive mode when \
             mode=auto): RFC 3339 or seconds since the Unix epoch. Fragments whose start is from \
             start-timestamp to end-timestamp are recorded",
        ),
        glib::ParamSpecEnum::builder_with_default("timestamp-type", TimestampType::Server)
            .blurb(
                "Clock of start-timestamp and end-timestamp in archive mode \
                 (start-selector=producer-timestamp also selects producer)",
            )
            .mutable_ready()
            .build(),
        props::string("continuation-token", "With start-selector=continuation-token: the token to resume from"),
        uint_prop(
            "idle-timeout",
            "Live mode: send EOS after this many milliseconds without a new fragment while KVS \
             answers (0 = never). This is how a finished call ends a pipeline. While KVS cannot be \
             reached the stream is not idle: max-retries and max-outage decide when that is an error",
            DEFAULT_IDLE_TIMEOUT_MS,
        ),
        uint_prop(
            "read-timeout",
            "Reconnect when a body sends nothing for this many milliseconds \
             (KVS itself ends a quiet GetMedia body after about 3 s)",
            DEFAULT_READ_TIMEOUT_MS,
        ),
    ]);
    specs.extend(props::retry_limits());
    specs.extend([
        props::uint(
            "archive-connections",
            "Archive mode: GetMediaForFragmentList calls at once (KVS allows 5 a second per stream). \
             The range is split into that many batches (of at most 1,000 fragments), fetched side by \
             side and output in order; each batch ahead of the one playing holds at most 8 MiB. \
             More connections help when one connection is slower than the pipeline, as from a \
             faraway region",
            1..=5,
            DEFAULT_ARCHIVE_CONNECTIONS,
        ),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .blurb(
                "Counters: bytes, fragments, reconnects (after a connection failed, broke off or stalled; \
                 not when KVS ends a quiet body or a session between fragments), throttles, \
                 endpoint-refreshes, \
                 continuation-token (of the last complete fragment, live mode), millis-behind-now",
            )
            .read_only()
            .build(),
    ]);
    specs
});

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut s = Settings::default();
        s.target.stream_name = Some("s".into());
        s
    }

    #[test]
    fn plans() {
        let mut s = settings();
        assert_eq!(s.plan(), Ok(Plan::Live(Start::Now)));
        s.start_selector = StartSelector::FragmentNumber;
        assert!(s.plan().unwrap_err().contains("fragment-number"));
        s.start_timestamp = Some("2024-05-01T12:00:00Z".into());
        s.end_timestamp = Some("1714564860".into());
        assert_eq!(
            s.plan(),
            Ok(Plan::Archive(Range {
                start: 1_714_564_800.0,
                end: 1_714_564_860.0,
                producer: false
            }))
        );
        s.mode = Mode::Live;
        assert!(s.plan().unwrap_err().contains("mode=archive"));
        s.mode = Mode::Archive;
        s.end_timestamp = Some("1".into());
        assert!(s.plan().unwrap_err().contains("before"));
        s.end_timestamp = None;
        assert!(s.plan().unwrap_err().contains("end-timestamp"));
    }
}
