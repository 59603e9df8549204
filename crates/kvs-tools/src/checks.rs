// SPDX-License-Identifier: MPL-2.0
//! The checks the tools make before any network call: the endpoint's
//! scheme, the region's form, and the times of --start and --end, which
//! take one syntax. Each mistake is a [`Usage`] naming the flag.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use crate::cli::Usage;

/// `--endpoint-uri`: an http:// or https:// URL with a host.
pub fn endpoint(url: &str) -> Result<(), Usage> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "--endpoint-uri {url}: give the scheme, as in http://{url} (or https://)"
        )
        .into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "--endpoint-uri {url}: the scheme must be http:// or https://, not {scheme}://"
        )
        .into());
    }
    if rest.split(['/', '?', ':']).next().unwrap_or("").is_empty() {
        return Err(format!("--endpoint-uri {url}: no host in it").into());
    }
    Ok(())
}

/// The region of a KVS stream ARN (`arn:aws:kinesisvideo:REGION:...`).
pub fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kinesisvideo"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

/// `flag`'s stream ARN: its region, of the right form.
pub fn stream_arn<'a>(flag: &str, arn: &'a str) -> Result<&'a str, Usage> {
    let r = arn_region(arn).ok_or_else(|| {
        Usage::from(format!(
            "{flag} {arn}: not a Kinesis video stream ARN \
             (arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATION-TIME)"
        ))
    })?;
    region(r).map_err(|e| {
        Usage(format!(
            "{flag} {arn}: {}",
            e.0.trim_start_matches("--region ")
        ))
    })?;
    Ok(r)
}

/// The regions of AWS's partitions, for the hint after a near miss.
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// `--region`: of the form `xx-name-N` (`us-east-1`, `us-gov-west-1`);
/// a near miss names the region it is likely to be.
pub fn region(region: &str) -> Result<(), Usage> {
    if well_formed(region) {
        return Ok(());
    }
    let typed = region.to_lowercase().replace([' ', '_'], "-");
    let near = REGIONS
        .iter()
        .map(|r| (distance(&typed, r), r))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, r)| r);
    Err(match near {
        Some(r) => format!("--region {region:?} is not an AWS region: did you mean {r}?"),
        None => format!(
            "--region {region:?} is not an AWS region (of the form us-east-1): known regions are {}",
            REGIONS.join(", ")
        ),
    }
    .into())
}

/// Lowercase parts split by `-`: two letters, one or more words, a number.
fn well_formed(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let word = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase());
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(word)
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// Edit distance, for the near-miss hint.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// Which clock a time is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// When KVS received the fragment (`timestamp:T`).
    Server,
    /// When the producer made it (`producer-timestamp:T`).
    Producer,
}

/// A place in a stream, as --start and --end take it.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Now,
    Earliest,
    Fragment(String),
    /// Seconds since the Unix epoch; the clock when the flag said it.
    At(f64, Option<Clock>),
}

/// Seconds since the Unix epoch from ISO 8601 / RFC 3339 UTC or a number.
pub fn seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    let t = DateTime::from_str(text, Format::DateTime).ok()?;
    Some(t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9)
}

/// Epoch seconds as ISO 8601 UTC, to the millisecond.
pub fn iso(secs: f64) -> String {
    let t = DateTime::from_millis((secs * 1000.0).round() as i64);
    t.fmt(Format::DateTime)
        .unwrap_or_else(|_| format!("{secs}"))
}

/// Reads `text`, the value of `flag`: now, earliest, fragment:N,
/// timestamp:T, producer-timestamp:T, or a bare time T.
pub fn when(flag: &str, text: &str) -> Result<When, Usage> {
    let syntax = "now, earliest, fragment:NUMBER, timestamp:T, producer-timestamp:T or T \
                  (T: ISO 8601 UTC such as 2026-12-01T10:00:00Z, or epoch seconds)";
    let time = |value: &str, clock| {
        seconds(value).map(|s| When::At(s, clock)).ok_or_else(|| {
            Usage::from(format!(
                "{flag} {text:?}: {value:?} is not a time; use {syntax}"
            ))
        })
    };
    match text.split_once(':') {
        _ if text == "now" => Ok(When::Now),
        _ if text == "earliest" => Ok(When::Earliest),
        Some(("fragment", n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            Ok(When::Fragment(n.to_string()))
        }
        Some(("fragment", _)) => {
            Err(format!("{flag} {text:?}: a fragment number is digits only").into())
        }
        Some(("timestamp", t)) => time(t, Some(Clock::Server)),
        Some(("producer-timestamp", t)) => time(t, Some(Clock::Producer)),
        _ => time(text, None),
    }
}

/// A range from the archive: the start, the end and their clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub start: f64,
    pub end: f64,
    pub clock: Clock,
}

/// Checks --start and --end together: an --end needs a start in the past
/// (a time, or earliest), on the same clock, before it.
pub fn range(start: Option<&When>, end: &When) -> Result<Range, Usage> {
    let When::At(end_at, end_clock) = *end else {
        return Err("--end takes a time: T, timestamp:T or producer-timestamp:T".into());
    };
    let (start_at, start_clock) = match start {
        None | Some(When::Now) => {
            return Err(
                "--end reads the archive, so it needs a --start in the past: \
                 --start earliest or --start T"
                    .into(),
            );
        }
        Some(When::Fragment(_)) => {
            return Err(
                "--end with --start fragment:N is not supported: give --start as a time or earliest"
                    .into(),
            );
        }
        Some(When::Earliest) => (0.0, None),
        Some(When::At(t, clock)) => (*t, *clock),
    };
    let clock = match (start_clock, end_clock) {
        (Some(a), Some(b)) if a != b => {
            return Err(
                "--start and --end are on different clocks (timestamp: against \
                 producer-timestamp:): use the same one"
                    .into(),
            );
        }
        (a, b) => a.or(b).unwrap_or(Clock::Server),
    };
    if end_at < start_at {
        return Err(format!("--end {} is before --start {}", iso(end_at), iso(start_at)).into());
    }
    Ok(Range {
        start: start_at,
        end: end_at,
        clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(endpoint("http://127.0.0.1:4566").is_ok());
        assert!(endpoint("https://kinesisvideo.us-east-1.amazonaws.com").is_ok());
        assert_eq!(
            endpoint("127.0.0.1:4566").unwrap_err().0,
            "--endpoint-uri 127.0.0.1:4566: give the scheme, as in http://127.0.0.1:4566 (or https://)"
        );
        assert!(endpoint("htp://x").unwrap_err().0.contains("not htp://"));
        assert!(endpoint("http://").unwrap_err().0.contains("no host"));
    }

    #[test]
    fn regions() {
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "eu-central-2",
            "ap-southeast-5",
        ] {
            assert!(region(r).is_ok(), "{r}");
        }
        assert_eq!(
            region("us-east1").unwrap_err().0,
            "--region \"us-east1\" is not an AWS region: did you mean us-east-1?"
        );
        assert!(
            region("US East")
                .unwrap_err()
                .0
                .contains("did you mean us-east-1?")
        );
        assert!(
            region("mars")
                .unwrap_err()
                .0
                .contains("known regions are af-south-1")
        );
    }

    #[test]
    fn times() {
        assert_eq!(when("--start", "now").unwrap(), When::Now);
        assert_eq!(
            when("--start", "fragment:9100").unwrap(),
            When::Fragment("9100".into())
        );
        assert_eq!(
            when("--start", "timestamp:2023-11-14T22:13:20Z").unwrap(),
            When::At(1_700_000_000.0, Some(Clock::Server))
        );
        assert_eq!(
            when("--end", "1700000010.5").unwrap(),
            When::At(1_700_000_010.5, None)
        );
        assert!(
            when("--start", "timestamp:yesterday")
                .unwrap_err()
                .0
                .contains("\"yesterday\" is not a time")
        );
        assert_eq!(iso(1_700_000_000.25), "2023-11-14T22:13:20.25Z");
        assert_eq!(iso(1_700_000_000.0), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ranges() {
        let at = |s, c| When::At(s, c);
        let r = range(Some(&at(10.0, Some(Clock::Producer))), &at(20.0, None)).unwrap();
        assert_eq!((r.start, r.end, r.clock), (10.0, 20.0, Clock::Producer));
        let r = range(Some(&When::Earliest), &at(20.0, Some(Clock::Server))).unwrap();
        assert_eq!((r.start, r.clock), (0.0, Clock::Server));
        assert!(
            range(Some(&at(30.0, None)), &at(20.0, None))
                .unwrap_err()
                .0
                .contains("is before")
        );
        assert!(
            range(Some(&When::Now), &at(20.0, None))
                .unwrap_err()
                .0
                .contains("in the past")
        );
        assert!(range(None, &at(20.0, None)).is_err());
        assert!(
            range(
                Some(&at(1.0, Some(Clock::Server))),
                &at(2.0, Some(Clock::Producer))
            )
            .unwrap_err()
            .0
            .contains("different clocks")
        );
        assert!(range(Some(&at(1.0, None)), &When::Earliest).is_err());
    }
}
