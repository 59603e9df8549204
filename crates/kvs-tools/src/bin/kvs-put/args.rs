// SPDX-License-Identifier: MPL-2.0
//! kvs-put's command line.

pub const USAGE: &str = "\
Usage: kvs-put [OPTIONS] (FILE | --demo) (--stream NAME | --stream-arn ARN | --local)

Puts a media file, or the synthetic demo call, into a Kinesis video stream
with PutMedia (kvsputmediasink). Every fragment is kept until KVS has it, and
sent again after a dropped connection.

Input (one of):
  FILE                  any file GStreamer can read. H.264, H.265, AAC, A-law,
                        mu-law, PCM and Opus are put as they are; other codecs are
                        decoded, and video encoded to H.264 (audio goes as PCM).
                        At most one video and two audio tracks.
  --demo                the synthetic two-party Amazon Connect call: two 8 kHz PCM
                        tracks named AUDIO_FROM_CUSTOMER and AUDIO_TO_CUSTOMER,
                        with ContactId and MimeType tags on every fragment

Where:
  --stream NAME         the stream's name
  --stream-arn ARN      the stream's ARN
  --local               start a local KVS server in this process and put into it
                        (no AWS account needed); the stream is created
  --region REGION       AWS region [default: the SDK's region chain]
  --endpoint-uri URL    KVS endpoint to use instead of AWS's
  --create-stream HOURS create the stream if it is missing, keeping data HOURS hours

How:
  --realtime            at the media's own pace, as a live source would
                        [default: as fast as KVS accepts (12.5 MB/s)]
  --fragment-duration MS  fragment length for audio-only input [default: 2000]
  --demo-seconds N      length of the --demo call [default: 20]
  -q, --quiet           no progress line
  -h, --help            this help

Producer timestamps start now and follow the media's own timestamps.
Credentials come from the AWS SDK's default chain; they need
kinesisvideo:PutMedia, GetDataEndpoint and DescribeStream (and CreateStream
with --create-stream).
Exit status: 0 every fragment acknowledged, 1 failed (the reason is printed),
2 bad usage.
";

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

/// Parses the arguments; `Ok(None)` means --help was asked for.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        input: Input::None,
        stream_name: None,
        stream_arn: None,
        local: false,
        region: None,
        endpoint_uri: None,
        create_stream: None,
        realtime: false,
        fragment_duration: 2000,
        demo_seconds: 20,
        quiet: false,
    };
    let mut it = args.into_iter();
    let set_input = |a: &mut Args, input: Input| {
        if a.input != Input::None {
            return Err("give one input: a FILE or --demo".to_string());
        }
        a.input = input;
        Ok(())
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{arg} takes a whole number, not {v:?}"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--demo" => set_input(&mut a, Input::Demo)?,
            "--stream" => a.stream_name = Some(value()?),
            "--stream-arn" => a.stream_arn = Some(value()?),
            "--local" => a.local = true,
            "--region" => a.region = Some(value()?),
            "--endpoint-uri" => a.endpoint_uri = Some(value()?),
            "--create-stream" => a.create_stream = Some(number(value()?)?.min(87_600) as u32),
            "--realtime" => a.realtime = true,
            "--fragment-duration" => match number(value()?)? {
                n @ 100..=10_000 => a.fragment_duration = n as u32,
                _ => return Err("--fragment-duration takes 100 to 10000 (ms)".into()),
            },
            "--demo-seconds" => match number(value()?)? {
                0 => return Err("--demo-seconds takes 1 or more".into()),
                n => a.demo_seconds = n,
            },
            "-q" | "--quiet" => a.quiet = true,
            flag if flag.starts_with('-') => return Err(format!("unknown argument {flag:?}")),
            file => set_input(&mut a, Input::File(file.into()))?,
        }
    }
    if a.input == Input::None {
        return Err("say what to put: a FILE or --demo".into());
    }
    if a.local {
        if a.stream_arn.is_some() || a.endpoint_uri.is_some() {
            return Err("--local puts into its own server: give --stream NAME or nothing".into());
        }
        a.stream_name.get_or_insert_with(|| "demo-call".into());
    }
    if a.stream_name.is_some() == a.stream_arn.is_some() {
        return Err("say where to put: --stream NAME, --stream-arn ARN or --local".into());
    }
    Ok(Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Args>, String> {
        parse(args.iter().map(|s| s.to_string()))
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
                .contains("one input")
        );
        assert!(p(&["--stream", "s"]).unwrap_err().contains("what to put"));
        assert!(p(&["--demo", "--stream", "s", "--fragment-duration", "20000"]).is_err());
        assert!(p(&["--demo", "--local", "--endpoint-uri", "http://x"]).is_err());
    }
}
