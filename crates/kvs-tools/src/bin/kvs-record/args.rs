// SPDX-License-Identifier: MPL-2.0
//! kvs-record's command line.

use kvs_tools::checks::{self, When};
use kvs_tools::cli::Usage;

/// At most one input: --stream, --stream-arn, --event or --demo.
pub fn input_group() -> clap::ArgGroup {
    clap::ArgGroup::new("input").args(["stream", "stream_arn", "event", "demo"])
}

/// The recorder's own options.
#[derive(clap::Args, Debug, Clone)]
pub struct Record {
    /// The stream's name
    #[arg(long, value_name = "NAME", help_heading = "Input (one of)")]
    pub stream: Option<String>,
    /// The stream's ARN (the region comes from it)
    #[arg(long, value_name = "ARN", help_heading = "Input (one of)")]
    pub stream_arn: Option<String>,
    /// An Amazon Connect contact-flow event (JSON; - reads stdin): records that contact from its
    /// start and stops at its end; or a worker's range message ({"Range": ...}, see kvs-record
    /// serve --help): that range from the archive
    #[arg(long, value_name = "FILE", help_heading = "Input (one of)")]
    pub event: Option<String>,
    /// Starts a local KVS server with a synthetic two-party call and records it; no AWS account
    /// needed
    #[arg(long, help_heading = "Input (one of)")]
    pub demo: bool,
    /// FILE.wav (stereo WAV) or FILE.opus / FILE.ogg (Ogg Opus) [default: call.wav, or
    /// demo-call.wav with --demo]
    #[arg(short, long, value_name = "FILE", help_heading = "Output")]
    pub out: Option<String>,
    /// N-second WAV pieces instead: FILE-00000.wav, FILE-00001.wav... (or put a %05d pattern in
    /// FILE)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Output")]
    pub split_seconds: Option<u64>,
    /// Both sides mixed into one channel
    #[arg(long, help_heading = "Output")]
    pub mono_mix: bool,
    /// AWS region [default: from the ARN, else the SDK's region chain]
    #[arg(long, value_name = "REGION", help_heading = "Where and when")]
    pub region: Option<String>,
    /// KVS endpoint to use instead of AWS's (a local server, a VPC endpoint)
    #[arg(long, value_name = "URL", help_heading = "Where and when")]
    pub endpoint_uri: Option<String>,
    /// Where to start: now, earliest, fragment:NUMBER, timestamp:T (when KVS received it),
    /// producer-timestamp:T, or T; T is ISO 8601 UTC (2026-12-01T10:00:00Z) or epoch seconds
    /// [default: now; with --event, the contact's start]
    #[arg(long, value_name = "WHEN", help_heading = "Where and when")]
    pub start: Option<String>,
    /// Where to stop, in the same syntax as --start (a time): records the range from the
    /// archive, as fast as it downloads
    #[arg(long, value_name = "WHEN", help_heading = "Where and when")]
    pub end: Option<String>,
    /// Stop after S seconds without a new fragment
    #[arg(
        long,
        value_name = "S",
        default_value_t = DEFAULT_IDLE_TIMEOUT,
        help_heading = "Where and when"
    )]
    pub idle_timeout: u64,
    /// Once the stream was reached, keep trying for S seconds of failures in a row (no answer,
    /// refused connections, throttles) before the recording fails with exit status 1; an outage
    /// is never taken for the end of the stream
    #[arg(long, value_name = "S", default_value_t = DEFAULT_MAX_OUTAGE, help_heading = "Where and when")]
    pub max_outage: u64,
    /// How A_AAC tracks are read: auto (PCM for Amazon Connect tracks and audio/L16 MimeType
    /// tags), always (PCM) or never (AAC, which this recorder cannot decode)
    #[arg(long, value_name = "MODE", value_parser = ["auto", "always", "never"], help_heading = "Where and when")]
    pub connect_pcm: Option<String>,
    /// Length of the --demo call
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Where and when")]
    pub demo_seconds: u64,
    /// No progress line
    #[arg(short, long)]
    pub quiet: bool,
    /// Say more: the full detail of an error, and the elements' log (GST_DEBUG=kvs*:4)
    #[arg(short, long)]
    pub verbose: bool,
}

/// Seconds without a new fragment before a recording ends, in every tool.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 5;

/// Seconds of failures in a row the tools ride out before they give up.
pub const DEFAULT_MAX_OUTAGE: u64 = 60;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Input {
    #[default]
    None,
    Name(String),
    Arn(String),
    Event(String),
    Demo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub input: Input,
    pub out: Option<String>,
    pub split_seconds: Option<u64>,
    pub mono_mix: bool,
    pub region: Option<String>,
    pub endpoint_uri: Option<String>,
    pub start: Option<When>,
    pub end: Option<When>,
    pub idle_timeout: u64,
    pub max_outage: u64,
    pub demo_seconds: u64,
    pub quiet: bool,
    pub verbose: bool,
    /// kvsaudiodemux's connect-pcm: auto, always or never.
    pub connect_pcm: Option<String>,
}

/// The recorder's arguments, checked.
pub fn check(r: Record) -> Result<Args, Usage> {
    let input = match (r.stream, r.stream_arn, r.event, r.demo) {
        (Some(name), None, None, false) => Input::Name(name),
        (None, Some(arn), None, false) => Input::Arn(arn),
        (None, None, Some(path), false) => Input::Event(path),
        (None, None, None, true) => Input::Demo,
        _ => {
            return Err(
                "say what to record: --stream NAME, --stream-arn ARN, --event FILE or --demo"
                    .into(),
            );
        }
    };
    let out = r.out.unwrap_or_else(|| {
        if input == Input::Demo {
            "demo-call.wav".into()
        } else {
            "call.wav".into()
        }
    });
    let a = Args {
        input,
        out: Some(out.clone()),
        split_seconds: r.split_seconds,
        mono_mix: r.mono_mix,
        region: r.region,
        endpoint_uri: r.endpoint_uri,
        start: r.start.map(|t| checks::when("--start", &t)).transpose()?,
        end: r.end.map(|t| checks::when("--end", &t)).transpose()?,
        idle_timeout: r.idle_timeout,
        max_outage: r.max_outage,
        demo_seconds: r.demo_seconds,
        quiet: r.quiet,
        verbose: r.verbose,
        connect_pcm: r.connect_pcm,
    };
    let lower = out.to_lowercase();
    if !a.is_opus() && !lower.ends_with(".wav") {
        return Err(format!("--out {out:?}: the name must end in .wav, .opus or .ogg").into());
    }
    if a.is_opus() && a.split_seconds.is_some() {
        return Err("--split-seconds writes WAV pieces: give --out FILE.wav".into());
    }
    if let Some(region) = &a.region {
        checks::region(region)?;
    }
    if let Some(uri) = &a.endpoint_uri {
        checks::endpoint(uri)?;
    }
    if let Input::Arn(arn) = &a.input {
        checks::stream_arn("--stream-arn", arn)?;
    }
    if let Some(end) = &a.end {
        match a.input {
            // The contact's start, unless --start says otherwise.
            Input::Event(_) if a.start.is_none() => {
                checks::range(Some(&When::Earliest), end)?;
            }
            _ => {
                checks::range(a.start.as_ref(), end)?;
            }
        }
    }
    Ok(a)
}

/// The source properties for riding out `seconds` of failures in a row,
/// however many attempts that takes, once the stream was reached; a stream
/// never reached fails after a few quick attempts.
pub fn outage_props(seconds: u64) -> [(&'static str, String); 2] {
    [
        ("max-retries", "3".into()),
        (
            "max-outage",
            (seconds.saturating_mul(1000))
                .min(u64::from(u32::MAX))
                .to_string(),
        ),
    ]
}

impl Args {
    pub fn is_opus(&self) -> bool {
        let out = self.out.as_deref().unwrap_or_default().to_lowercase();
        out.ends_with(".opus") || out.ends_with(".ogg")
    }

    /// The splitmuxsink location for --split-seconds.
    pub fn split_pattern(&self) -> String {
        let out = self.out.clone().unwrap_or_default();
        if out.contains('%') {
            return out;
        }
        let stem = out.strip_suffix(".wav").unwrap_or(&out);
        format!("{stem}-%05d.wav")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorder's options alone, as kvs-record reads them.
    #[derive(clap::Parser)]
    #[command(name = "kvs-record", version, group(input_group()))]
    struct Only {
        #[command(flatten)]
        record: Record,
    }

    fn args(list: &[&str]) -> Result<Option<Args>, Usage> {
        use kvs_tools::cli::{Read, read};
        match read::<Only>("kvs-record", list.iter().map(|s| s.to_string()))? {
            Read::Args(only) => check(only.record).map(Some),
            Read::Said(_) => Ok(None),
        }
    }

    #[test]
    fn forms() {
        let a = args(&["--stream", "s", "--out", "x.opus", "--mono-mix"])
            .unwrap()
            .unwrap();
        assert_eq!(a.input, Input::Name("s".into()));
        assert!(a.is_opus() && a.mono_mix);
        let a = args(&["--demo", "--split-seconds", "1"]).unwrap().unwrap();
        assert_eq!(a.split_pattern(), "demo-call-%05d.wav");
        assert_eq!(args(&["--help"]).unwrap(), None);
        assert_eq!(args(&["--version"]).unwrap(), None);
        let a = args(&["--demo", "--connect-pcm", "always"])
            .unwrap()
            .unwrap();
        assert_eq!(a.connect_pcm.as_deref(), Some("always"));
    }

    #[test]
    fn mistakes() {
        let err = |list: &[&str]| args(list).unwrap_err().0;
        assert!(err(&[]).contains("say what to record"));
        assert!(err(&["--demo", "--stream", "s"]).contains("cannot be used with"));
        assert!(err(&["--demo", "--out", "x.mp3"]).contains(".wav, .opus or .ogg"));
        assert!(err(&["--demo", "--out", "x.opus", "--split-seconds", "1"]).contains("WAV pieces"));
        assert!(err(&["--demo", "--idle-timeout", "soon"]).contains("invalid value 'soon'"));
        assert!(err(&["--demo", "--split-seconds", "0"]).contains("0 is not in 1.."));
        assert!(err(&["--demo", "--bogus"]).contains("unexpected argument '--bogus'"));
        assert!(err(&["--stream"]).contains("a value is required for '--stream <NAME>'"));
        assert!(
            err(&["--demo", "--connect-pcm", "pcm"])
                .contains("[possible values: auto, always, never]")
        );
        // One line.
        assert!(!err(&["--demo", "--bogus"]).contains('\n'));
    }
}
