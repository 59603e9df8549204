// SPDX-License-Identifier: MPL-2.0
//! kvs-put's command line.

use clap::Parser;
use kvs_tools::cli::{Read, Usage};

/// kvs-put's command line, as given.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kvs-put",
    version,
    args_override_self = true,
    about = "Puts a media file, or the synthetic demo call, into a Kinesis video stream with \
             PutMedia (kvsputmediasink). Every fragment is kept until KVS has it, and sent again \
             after a dropped connection.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Any file GStreamer can read. H.264, H.265, AAC, A-law, mu-law, PCM and Opus are put as
    /// they are; other codecs are decoded, and video encoded to H.264 (audio goes as PCM). At
    /// most one video and two audio tracks
    #[arg(value_name = "FILE", help_heading = "Input (one of)")]
    file: Option<String>,
    /// The synthetic two-party Amazon Connect call: two 8 kHz PCM tracks named
    /// AUDIO_FROM_CUSTOMER and AUDIO_TO_CUSTOMER, with ContactId and MimeType tags on every
    /// fragment
    #[arg(long, conflicts_with = "file", help_heading = "Input (one of)")]
    demo: bool,
    /// The stream's name
    #[arg(long, value_name = "NAME", help_heading = "Where")]
    stream: Option<String>,
    /// The stream's ARN
    #[arg(
        long,
        value_name = "ARN",
        conflicts_with = "stream",
        help_heading = "Where"
    )]
    stream_arn: Option<String>,
    /// Start a local KVS server in this process and put into it (no AWS account needed); the
    /// stream is created
    #[arg(long, conflicts_with_all = ["stream_arn", "endpoint_uri"], help_heading = "Where")]
    local: bool,
    /// AWS region [default: the SDK's region chain]
    #[arg(long, value_name = "REGION", help_heading = "Where")]
    region: Option<String>,
    /// KVS endpoint to use instead of AWS's
    #[arg(long, value_name = "URL", help_heading = "Where")]
    endpoint_uri: Option<String>,
    /// Create the stream if it is missing (with --retention-period)
    #[arg(long, help_heading = "Where")]
    create_stream: bool,
    /// Hours of data a stream made by --create-stream keeps (0: none, and KVS then sends no
    /// PERSISTED)
    #[arg(long, value_name = "HOURS", default_value_t = DEFAULT_RETENTION_HOURS, value_parser = clap::value_parser!(u32).range(0..=87_600), help_heading = "Where")]
    retention_period: u32,
    /// At the media's own pace, as a live source would [default: as fast as KVS accepts (12.5
    /// MB/s)]
    #[arg(long, help_heading = "How")]
    realtime: bool,
    /// Fragment length for audio-only input, in seconds (0.1 to 10)
    #[arg(long, value_name = "S", default_value_t = 2.0, value_parser = fragment_seconds, help_heading = "How")]
    fragment_duration: f64,
    /// Length of the --demo call, in seconds
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..), help_heading = "How")]
    demo_seconds: u64,
    /// No progress line
    #[arg(short, long, help_heading = "How")]
    quiet: bool,
    /// Say more: the full detail of an error, and the sink's log (GST_DEBUG=kvs*:4)
    #[arg(short, long, help_heading = "How")]
    verbose: bool,
}

/// The sink's retention-period default, in the same unit (hours).
const DEFAULT_RETENTION_HOURS: u32 = 2;

fn fragment_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.1..=10.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0.1 to 10 (KVS takes fragments of at most 10 s)".into()),
    }
}

const AFTER_HELP: &str = "\
Producer timestamps start now and follow the media's own timestamps.
Credentials come from the AWS SDK's default chain; they need
kinesisvideo:PutMedia, GetDataEndpoint and DescribeStream (and CreateStream
with --create-stream).
Exit status: 0 every fragment acknowledged, 1 failed (the reason is printed),
2 bad usage.";

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Input {
    #[default]
    None,
    File(String),
    Demo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub input: Input,
    pub stream_name: Option<String>,
    pub stream_arn: Option<String>,
    pub local: bool,
    pub region: Option<String>,
    pub endpoint_uri: Option<String>,
    /// Create a missing stream, keeping data these hours.
    pub create_stream: Option<u32>,
    pub realtime: bool,
    /// Milliseconds, the sink's unit.
    pub fragment_duration_ms: u32,
    pub demo_seconds: u64,
    pub quiet: bool,
    pub verbose: bool,
}

/// Reads the command line: the arguments, checked, or the text of
/// --help or --version.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Read<Args>, Usage> {
    let c = match kvs_tools::cli::read::<Cli>("kvs-put", args)? {
        Read::Args(c) => c,
        Read::Said(text) => return Ok(Read::Said(text)),
    };
    let input = match (c.file, c.demo) {
        (Some(file), false) => Input::File(file),
        (None, true) => Input::Demo,
        _ => return Err("say what to put: a FILE or --demo".into()),
    };
    let mut stream_name = c.stream;
    if c.local {
        stream_name.get_or_insert_with(|| "demo-call".into());
    }
    if stream_name.is_none() && c.stream_arn.is_none() {
        return Err("say where to put: --stream NAME, --stream-arn ARN or --local".into());
    }
    if let Some(region) = &c.region {
        kvs_tools::checks::region(region)?;
    }
    if let Some(uri) = &c.endpoint_uri {
        kvs_tools::checks::endpoint(uri)?;
    }
    if let Some(arn) = &c.stream_arn {
        kvs_tools::checks::stream_arn("--stream-arn", arn)?;
    }
    Ok(Read::Args(Args {
        input,
        stream_name,
        stream_arn: c.stream_arn,
        local: c.local,
        region: c.region,
        endpoint_uri: c.endpoint_uri,
        create_stream: c.create_stream.then_some(c.retention_period),
        realtime: c.realtime,
        fragment_duration_ms: (c.fragment_duration * 1000.0).round() as u32,
        demo_seconds: c.demo_seconds,
        quiet: c.quiet,
        verbose: c.verbose,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Args>, String> {
        match parse(args.iter().map(|s| s.to_string())) {
            Ok(Read::Args(a)) => Ok(Some(a)),
            Ok(Read::Said(_)) => Ok(None),
            Err(u) => Err(u.0),
        }
    }

    #[test]
    fn arguments() {
        let a = p(&["call.wav", "--stream", "s", "--realtime"])
            .unwrap()
            .unwrap();
        assert_eq!(a.input, Input::File("call.wav".into()));
        assert!(a.realtime);
        let local = p(&["--demo", "--local"]).unwrap().unwrap();
        assert_eq!(local.stream_name.as_deref(), Some("demo-call"));
        assert!(p(&["--help"]).unwrap().is_none());
        assert!(p(&["--demo"]).unwrap_err().contains("where to put"));
        assert!(
            p(&["a.mkv", "b.mkv", "--stream", "s"])
                .unwrap_err()
                .contains("unexpected argument 'b.mkv'")
        );
        assert!(p(&["--stream", "s"]).unwrap_err().contains("what to put"));
        assert!(p(&["--demo", "--stream", "s", "--fragment-duration", "20"]).is_err());
        let a = p(&[
            "--demo",
            "--stream",
            "s",
            "--fragment-duration",
            "0.5",
            "--create-stream",
        ])
        .unwrap()
        .unwrap();
        assert_eq!((a.fragment_duration_ms, a.create_stream), (500, Some(2)));
        let a = p(&[
            "--demo",
            "--stream",
            "s",
            "--create-stream",
            "--retention-period",
            "24",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.create_stream, Some(24));
        assert!(
            p(&["--demo", "--stream", "s", "--region", "us-east1"])
                .unwrap_err()
                .contains("did you mean us-east-1?")
        );
        assert!(
            p(&[
                "--demo",
                "--stream",
                "s",
                "--endpoint-uri",
                "127.0.0.1:4566"
            ])
            .unwrap_err()
            .contains("give the scheme")
        );
        assert!(p(&["--demo", "--local", "--endpoint-uri", "http://x"]).is_err());
    }
}
