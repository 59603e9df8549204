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
    /// Create the stream if it is missing, keeping data HOURS hours
    #[arg(long, value_name = "HOURS", value_parser = clap::value_parser!(u32).range(0..=87_600), help_heading = "Where")]
    create_stream: Option<u32>,
    /// At the media's own pace, as a live source would [default: as fast as KVS accepts (12.5
    /// MB/s)]
    #[arg(long, help_heading = "How")]
    realtime: bool,
    /// Fragment length for audio-only input, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(100..=10_000), help_heading = "How")]
    fragment_duration: u32,
    /// Length of the --demo call, in seconds
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..), help_heading = "How")]
    demo_seconds: u64,
    /// No progress line
    #[arg(short, long, help_heading = "How")]
    quiet: bool,
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
    pub create_stream: Option<u32>,
    pub realtime: bool,
    pub fragment_duration: u32,
    pub demo_seconds: u64,
    pub quiet: bool,
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
    Ok(Read::Args(Args {
        input,
        stream_name,
        stream_arn: c.stream_arn,
        local: c.local,
        region: c.region,
        endpoint_uri: c.endpoint_uri,
        create_stream: c.create_stream,
        realtime: c.realtime,
        fragment_duration: c.fragment_duration,
        demo_seconds: c.demo_seconds,
        quiet: c.quiet,
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
        assert!(p(&["--demo", "--stream", "s", "--fragment-duration", "20000"]).is_err());
        assert!(p(&["--demo", "--local", "--endpoint-uri", "http://x"]).is_err());
    }
}
