// SPDX-License-Identifier: MPL-2.0
//! `kvs-record split`: cuts a long time range of a stream into pieces, puts
//! a range message per piece on the workers' queue and writes a manifest
//! that lists the pieces in order, so that several workers record one day
//! side by side.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format as DateFormat;
use serde_json::json;

use super::store::Format;
use super::{explain, sdk_config};
use crate::event::{self, check_name};

/// `kvs-record split`'s command line.
#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "Puts a long time range of a stream on the workers' queue in pieces",
    args_override_self = true,
    long_about = LONG_ABOUT,
    group(clap::ArgGroup::new("storage").args(["bucket", "out_dir"]).required(true)),
    group(clap::ArgGroup::new("cut").args(["pieces", "piece_minutes"]).required(true))
)]
pub struct Cli {
    /// The Kinesis Video stream
    #[arg(long, value_name = "ARN")]
    stream_arn: String,
    /// The range's first producer time (epoch milliseconds or ISO 8601)
    #[arg(long, value_name = "TIME")]
    start: String,
    /// Its last
    #[arg(long, value_name = "TIME")]
    end: String,
    /// This many pieces, 1 to 1000
    #[arg(long, value_name = "N")]
    pieces: Option<u64>,
    /// Or pieces of M minutes
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    piece_minutes: Option<u64>,
    /// The range's name [default: STREAM/START-END, in epoch milliseconds]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    place: super::Place,
    #[command(flatten)]
    aws: super::Aws,
}

const LONG_ABOUT: &str = "\
Cuts the time range of a stream from --start to --end into pieces of equal
length, puts one range message per piece on the queue of `kvs-record serve`
workers, and writes a manifest of the pieces, in order, to
PREFIX{NAME}/manifest.json in the bucket or directory the workers record to.
Piece i is recorded to PREFIX{NAME}/part-{i:03}.wav (.opus with --format
opus, as the workers have it). The range holds the
fragments whose producer times start from --start to --end, both included,
as ListFragments selects them; each piece ends 1 ms before the next starts,
so every fragment is in exactly one piece, and the pieces' audio one after
the other is the range's. Each piece starts at its first audio.
TIME is epoch milliseconds or ISO 8601, as 2024-05-01T00:00:00Z.";

/// One piece of the range: its name and its first and last producer
/// times, in epoch milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// `count` pieces of equal length (the last may be shorter) from
/// `start_ms` to `end_ms`, both included.
pub fn plan(name: &str, start_ms: u64, end_ms: u64, count: u64) -> Vec<Piece> {
    let total = end_ms - start_ms + 1;
    let len = total.div_ceil(count.clamp(1, total));
    (0..)
        .map(|i| (i, start_ms + i * len))
        .take_while(|&(_, from)| from <= end_ms)
        .map(|(i, from)| Piece {
            name: format!("{name}/part-{i:03}"),
            start_ms: from,
            end_ms: (from + len - 1).min(end_ms),
        })
        .collect()
}

struct Split {
    stream_arn: String,
    name: String,
    pieces: Vec<Piece>,
    queue_url: String,
    /// Where the manifest goes: the bucket, or with `out_dir` a directory.
    bucket: String,
    out_dir: Option<String>,
    prefix: String,
    format: Format,
    region: Option<String>,
    sqs_endpoint: Option<String>,
    s3_endpoint: Option<String>,
}

fn millis(text: &str, flag: &str) -> Result<u64, String> {
    match event::timestamp(&serde_json::Value::String(text.into()), flag) {
        Ok(Some(seconds)) if seconds >= 0.0 => Ok((seconds * 1000.0).round() as u64),
        _ => Err(format!(
            "{flag} {text:?}: give epoch milliseconds or ISO 8601"
        )),
    }
}

impl Cli {
    fn check(self) -> Result<Split, String> {
        let stream_arn = self.stream_arn;
        kvs_tools::checks::arn_region(&stream_arn).ok_or_else(|| {
            format!("--stream-arn {stream_arn:?} is not a Kinesis Video stream ARN")
        })?;
        let (start_ms, end_ms) = (millis(&self.start, "--start")?, millis(&self.end, "--end")?);
        if end_ms < start_ms {
            return Err("--end is before --start".into());
        }
        let count = match (self.pieces, self.piece_minutes) {
            (Some(n), _) => n,
            (None, Some(minutes)) => (end_ms - start_ms + 1).div_ceil(minutes * 60_000),
            (None, None) => return Err("give --pieces N or --piece-minutes M".into()),
        };
        if !(1..=1000).contains(&count) {
            return Err(format!("{count} pieces: give 1 to 1000"));
        }
        let name = self.name.unwrap_or_else(|| {
            let stream = stream_arn.split('/').nth(1).unwrap_or("stream");
            format!("{stream}/{start_ms}-{end_ms}")
        });
        check_name(&name)?;
        let (region, sqs_endpoint, s3_endpoint) = self.aws.resolved();
        Ok(Split {
            pieces: plan(&name, start_ms, end_ms, count),
            stream_arn,
            name,
            queue_url: self.place.queue_url,
            bucket: self.place.bucket.unwrap_or_default(),
            out_dir: self.place.out_dir,
            prefix: self.place.prefix,
            format: self.place.format,
            region,
            sqs_endpoint,
            s3_endpoint,
        })
    }
}

fn iso(ms: u64) -> String {
    DateTime::from_millis(ms as i64)
        .fmt(DateFormat::DateTime)
        .unwrap_or_default()
}

impl Split {
    /// The manifest: the range and its pieces in order, with where each
    /// recording will be.
    fn manifest(&self) -> serde_json::Value {
        let place = |key: &str| match &self.out_dir {
            Some(dir) => std::path::Path::new(dir).join(key).display().to_string(),
            None => format!("s3://{}/{key}", self.bucket),
        };
        let pieces: Vec<_> = self
            .pieces
            .iter()
            .map(|p| {
                let key = format!("{}{}.{}", self.prefix, p.name, self.format.extension());
                json!({
                    "name": p.name,
                    "recording": place(&key),
                    "start_ms": p.start_ms,
                    "end_ms": p.end_ms,
                    "start": iso(p.start_ms),
                    "end": iso(p.end_ms),
                })
            })
            .collect();
        let (first, last) = (&self.pieces[0], &self.pieces[self.pieces.len() - 1]);
        json!({
            "stream_arn": self.stream_arn,
            "name": self.name,
            "start_ms": first.start_ms,
            "end_ms": last.end_ms,
            "start": iso(first.start_ms),
            "end": iso(last.end_ms),
            "pieces": pieces,
        })
    }

    fn message(&self, p: &Piece) -> String {
        json!({"Range": {
            "StreamARN": self.stream_arn,
            "Start": p.start_ms,
            "End": p.end_ms,
            "Name": p.name,
        }})
        .to_string()
    }

    /// Writes the manifest, then sends the messages; returns where the
    /// manifest is.
    async fn run(&self) -> Result<String, String> {
        let sdk = sdk_config(&self.region).await;
        let body = serde_json::to_vec_pretty(&self.manifest()).unwrap_or_default();
        let key = format!("{}{}/manifest.json", self.prefix, self.name);
        let at = match &self.out_dir {
            Some(dir) => {
                let path = std::path::Path::new(dir).join(&key);
                let write = || -> std::io::Result<()> {
                    std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(dir)))?;
                    let part = path.with_extension("json.part");
                    std::fs::write(&part, &body)?;
                    std::fs::rename(&part, &path)
                };
                write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                path.display().to_string()
            }
            None => {
                let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
                if let Some(url) = &self.s3_endpoint {
                    s3 = s3.endpoint_url(url).force_path_style(true);
                }
                aws_sdk_s3::Client::from_conf(s3.build())
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(body.into())
                    .send()
                    .await
                    .map_err(|e| explain("cannot write the manifest", e))?;
                format!("s3://{}/{key}", self.bucket)
            }
        };
        let mut sqs = aws_sdk_sqs::config::Builder::from(&sdk);
        if let Some(url) = &self.sqs_endpoint {
            sqs = sqs.endpoint_url(url);
        }
        let sqs = aws_sdk_sqs::Client::from_conf(sqs.build());
        for (i, p) in self.pieces.iter().enumerate() {
            sqs.send_message()
                .queue_url(&self.queue_url)
                .message_body(self.message(p))
                .send()
                .await
                .map_err(|e| {
                    explain(
                        &format!("cannot send piece {i} (the ones before it were sent)"),
                        e,
                    )
                })?;
        }
        Ok(at)
    }
}

/// Runs `kvs-record split`; returns the exit code.
pub fn main(cli: Cli) -> i32 {
    let split = match cli.check() {
        Ok(s) => s,
        Err(e) => kvs_tools::cli::usage_exit("kvs-record split", &e.into()),
    };
    let done = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start: {e}"))
        .and_then(|rt| rt.block_on(split.run()));
    match done {
        Ok(at) => {
            println!(
                "{} pieces of {} on the queue; manifest: {at}",
                split.pieces.len(),
                split.name
            );
            0
        }
        Err(e) => {
            eprintln!("kvs-record split: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_once() {
        for (start, end, count) in [(0, 9, 3), (1000, 1000, 4), (5, 86_400_004, 24), (0, 99, 7)] {
            let pieces = plan("r", start, end, count);
            assert!(pieces.len() as u64 <= count.max(1));
            assert_eq!(pieces[0].start_ms, start);
            assert_eq!(pieces.last().unwrap().end_ms, end);
            for w in pieces.windows(2) {
                assert_eq!(w[1].start_ms, w[0].end_ms + 1, "{pieces:?}");
            }
            assert!(pieces.iter().all(|p| p.start_ms <= p.end_ms));
        }
        let day = plan("day", 0, 86_399_999, 24);
        assert_eq!(day.len(), 24);
        assert_eq!(day[1].name, "day/part-001");
        assert_eq!((day[1].start_ms, day[1].end_ms), (3_600_000, 7_199_999));
    }

    /// `kvs-record split`'s options alone, as read.
    #[derive(clap::Parser)]
    #[command(name = "kvs-record split")]
    struct Only {
        #[command(flatten)]
        split: Cli,
    }

    /// `kvs-record split ARGS`, read and checked.
    fn parse(args: &[String]) -> Result<Split, String> {
        use kvs_tools::cli::{Read, read};
        match read::<Only>("kvs-record split", args.iter().cloned()).map_err(|u| u.0)? {
            Read::Args(only) => only.split.check(),
            Read::Said(_) => Err("help".into()),
        }
    }

    #[test]
    fn usage_errors() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let base =
            "--stream-arn arn:aws:kinesisvideo:us-east-1:0:stream/s/1 --queue-url q --bucket b";
        let err = |extra: &str| parse(&args(&format!("{base} {extra}"))).err().unwrap();
        assert!(err("--start 0 --end 10").contains("<--pieces <N>|--piece-minutes <M>>"));
        assert!(err("--start 10 --end 0 --pieces 2").contains("--end is before --start"));
        assert!(err("--start yesterday --end 0 --pieces 2").contains("--start \"yesterday\""));
        assert!(err("--start 0 --end 10 --pieces 0").contains("1 to 1000"));
        assert!(err("--start 0 --end 10 --pieces 2 --name ../x").contains("'..'"));
        assert!(
            err("--start 0 --end 10 --pieces 2 --format mp3")
                .contains("[possible values: wav, opus]")
        );
        let ok = parse(&args(&format!(
            "{base} --start 2024-05-01T00:00:00Z --end 2024-05-01T23:59:59.999Z --piece-minutes 60"
        )))
        .unwrap();
        assert_eq!(ok.pieces.len(), 24);
        assert_eq!(ok.name, "s/1714521600000-1714607999999");
    }

    #[test]
    fn the_manifest_says_where_each_piece_goes() {
        let args: Vec<String> = "--stream-arn arn:aws:kinesisvideo:us-east-1:0:stream/s/1 \
             --queue-url q --out-dir /rec --prefix ranges/ --start 0 --end 9 --pieces 2 --name n \
             --format opus"
            .split_whitespace()
            .map(String::from)
            .collect();
        let split = parse(&args).unwrap();
        let m = split.manifest();
        assert_eq!(m["pieces"][1]["recording"], "/rec/ranges/n/part-001.opus");
        assert_eq!(m["pieces"][1]["start_ms"], 5);
        assert_eq!(m["pieces"][1]["end"], "1970-01-01T00:00:00.009Z");
        assert_eq!(
            (m["start_ms"].clone(), m["end_ms"].clone()),
            (0.into(), 9.into())
        );
        let message: serde_json::Value =
            serde_json::from_str(&split.message(&split.pieces[0])).unwrap();
        let again = event::parse_message(&message.to_string()).unwrap();
        assert_eq!(again.contact_id.as_deref(), Some("n/part-000"));
        assert_eq!((again.start, again.stop), (Some(0.0), Some(0.004)));
    }
}
