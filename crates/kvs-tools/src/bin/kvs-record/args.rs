// SPDX-License-Identifier: MPL-2.0
//! kvs-record's command line.

pub const USAGE: &str = "\
Usage: kvs-record [OPTIONS] (--stream NAME | --stream-arn ARN | --event FILE | --demo)

Records a Kinesis video stream's audio, such as an Amazon Connect call, to a
stereo WAV or Ogg Opus file: the caller (track AUDIO_FROM_CUSTOMER) on the left,
the agent (AUDIO_TO_CUSTOMER) on the right, aligned by time, with silence where
a side says nothing.

Input (one of):
  --stream NAME         the stream's name
  --stream-arn ARN      the stream's ARN (the region comes from it)
  --event FILE          an Amazon Connect contact-flow event (JSON; - reads stdin):
                        records that contact from its start and stops at its end;
                        or a worker's range message ({\"Range\": ...}, see
                        kvs-record serve --help): that range from the archive
  --demo                starts a local KVS server with a synthetic two-party call
                        and records it; no AWS account needed

Output:
  -o, --out FILE        FILE.wav (stereo WAV) or FILE.opus / FILE.ogg (Ogg Opus)
                        [default: call.wav, or demo-call.wav with --demo]
  --split-seconds N     N-second WAV pieces instead: FILE-00000.wav, FILE-00001.wav...
                        (or put a %05d pattern in FILE)
  --mono-mix            both sides mixed into one channel

Where and when:
  --region REGION       AWS region [default: from the ARN, else the SDK's region chain]
  --endpoint-uri URL    KVS endpoint to use instead of AWS's (a local server, a VPC endpoint)
  --start WHEN          now, earliest, fragment:NUMBER, timestamp:T or producer-timestamp:T
                        [default: now; with --event, the contact's start]
  --end T               record from --start timestamp:T0 to T from the archive, as fast
                        as it downloads (T: RFC 3339 or epoch seconds)
  --idle-timeout S      stop after S seconds without a new fragment [default: 10]
  --max-outage S        once the stream was reached, keep trying for S seconds of
                        failures in a row (no answer, refused connections,
                        throttles) before the recording fails with exit status 1;
                        an outage is never taken for the end of the stream
                        [default: 60]
  --connect-pcm MODE    how A_AAC tracks are read: auto (PCM for Amazon Connect
                        tracks and audio/L16 MimeType tags), always (PCM) or never
                        (AAC, which this recorder cannot decode) [default: auto]
  --demo-seconds N      length of the --demo call [default: 20]
  -q, --quiet           no progress line
  -h, --help            this help

Credentials come from the AWS SDK's default chain: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, or an instance or task role. They need
kinesisvideo:GetDataEndpoint and GetMedia (ListFragments and
GetMediaForFragmentList with --end or an ended contact).

Recording stops at the end of the contact (a new ContactId in the stream), after
--idle-timeout, at --end, or on Ctrl-C; every stop leaves a finalized file.
Exit status: 0 recorded, 1 failed (the reason is printed), 2 bad usage.

With the serve feature: `kvs-record serve` records contacts from an SQS queue,
and `kvs-record split` puts a long time range on that queue in pieces (see
their --help).
";

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
    pub start: Option<String>,
    pub end: Option<String>,
    pub idle_timeout: u64,
    pub max_outage: u64,
    pub demo_seconds: u64,
    pub quiet: bool,
    /// kvsaudiodemux's connect-pcm: auto, always or never.
    pub connect_pcm: Option<String>,
}

/// Parses the arguments; `Ok(None)` means --help was asked for.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        input: Input::None,
        out: None,
        split_seconds: None,
        mono_mix: false,
        region: None,
        endpoint_uri: None,
        start: None,
        end: None,
        idle_timeout: 10,
        max_outage: DEFAULT_MAX_OUTAGE,
        demo_seconds: 20,
        quiet: false,
        connect_pcm: None,
    };
    let mut it = args.into_iter();
    let set_input = |a: &mut Args, input: Input| {
        if a.input != Input::None {
            return Err("give one input: --stream, --stream-arn, --event or --demo".to_string());
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
            "--stream" => set_input(&mut a, Input::Name(value()?))?,
            "--stream-arn" => set_input(&mut a, Input::Arn(value()?))?,
            "--event" => set_input(&mut a, Input::Event(value()?))?,
            "--demo" => set_input(&mut a, Input::Demo)?,
            "-o" | "--out" => a.out = Some(value()?),
            "--split-seconds" => match number(value()?)? {
                0 => return Err("--split-seconds takes 1 or more".into()),
                n => a.split_seconds = Some(n),
            },
            "--mono-mix" => a.mono_mix = true,
            "--region" => a.region = Some(value()?),
            "--endpoint-uri" => a.endpoint_uri = Some(value()?),
            "--start" => a.start = Some(value()?),
            "--end" => a.end = Some(value()?),
            "--idle-timeout" => a.idle_timeout = number(value()?)?,
            "--max-outage" => a.max_outage = number(value()?)?,
            "--demo-seconds" => a.demo_seconds = number(value()?)?,
            "-q" | "--quiet" => a.quiet = true,
            "--connect-pcm" => match value()?.as_str() {
                mode @ ("auto" | "always" | "never") => a.connect_pcm = Some(mode.into()),
                other => {
                    return Err(format!(
                        "--connect-pcm {other:?}: use auto, always or never"
                    ));
                }
            },
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.input == Input::None {
        return Err(
            "say what to record: --stream NAME, --stream-arn ARN, --event FILE or --demo".into(),
        );
    }
    let out = a.out.get_or_insert_with(|| {
        if a.input == Input::Demo {
            "demo-call.wav".into()
        } else {
            "call.wav".into()
        }
    });
    let lower = out.to_lowercase();
    let opus = lower.ends_with(".opus") || lower.ends_with(".ogg");
    if !opus && !lower.ends_with(".wav") {
        return Err(format!(
            "--out {out:?}: the name must end in .wav, .opus or .ogg"
        ));
    }
    if opus && a.split_seconds.is_some() {
        return Err("--split-seconds writes WAV pieces: give --out FILE.wav".into());
    }
    Ok(Some(a))
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

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse(list.iter().map(|s| s.to_string()))
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
        let a = args(&["--demo", "--connect-pcm", "always"])
            .unwrap()
            .unwrap();
        assert_eq!(a.connect_pcm.as_deref(), Some("always"));
    }

    #[test]
    fn mistakes() {
        let err = |list: &[&str]| args(list).unwrap_err();
        assert!(err(&[]).contains("say what to record"));
        assert!(err(&["--demo", "--stream", "s"]).contains("one input"));
        assert!(err(&["--demo", "--out", "x.mp3"]).contains(".wav, .opus or .ogg"));
        assert!(err(&["--demo", "--out", "x.opus", "--split-seconds", "1"]).contains("WAV pieces"));
        assert!(err(&["--demo", "--idle-timeout", "soon"]).contains("whole number"));
        assert!(err(&["--demo", "--split-seconds", "0"]).contains("1 or more"));
        assert!(err(&["--demo", "--bogus"]).contains("unknown argument"));
        assert!(err(&["--stream"]).contains("needs a value"));
        assert!(err(&["--demo", "--connect-pcm", "pcm"]).contains("auto, always or never"));
    }
}
