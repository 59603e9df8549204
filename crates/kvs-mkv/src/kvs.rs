// SPDX-License-Identifier: MPL-2.0
//! What KVS puts in its Matroska tags, without GStreamer: fragment metadata,
//! Connect's MimeType, in-band errors and fragment number ordering.

use std::cmp::Ordering;

use crate::SimpleTag;

pub const FRAGMENT_NUMBER: &str = "AWS_KINESISVIDEO_FRAGMENT_NUMBER";
pub const SERVER_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_TIMESTAMP";
pub const PRODUCER_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP";
/// GetMediaForFragmentList names the timestamps differently.
pub const SERVER_SIDE_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP";
pub const PRODUCER_SIDE_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP";
pub const MILLIS_BEHIND_NOW: &str = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW";
pub const CONTINUATION_TOKEN: &str = "AWS_KINESISVIDEO_CONTINUATION_TOKEN";
pub const ERROR_CODE: &str = "AWS_KINESISVIDEO_ERROR_CODE";
pub const ERROR_ID: &str = "AWS_KINESISVIDEO_ERROR_ID";
pub const EXCEPTION_ERROR_CODE: &str = "AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE";
pub const EXCEPTION_MESSAGE: &str = "AWS_KINESISVIDEO_EXCEPTION_MESSAGE";
pub const CONTACT_ID: &str = "ContactId";
pub const MIME_TYPE: &str = "MimeType";
/// Amazon Connect's track names: the caller's audio and the agent's.
pub const AUDIO_FROM_CUSTOMER: &str = "AUDIO_FROM_CUSTOMER";
pub const AUDIO_TO_CUSTOMER: &str = "AUDIO_TO_CUSTOMER";

/// True for a track name that Amazon Connect gives its audio tracks.
pub fn is_connect_track_name(name: &str) -> bool {
    name == AUDIO_FROM_CUSTOMER || name == AUDIO_TO_CUSTOMER
}

/// An in-band error that KVS reported inside the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InbandError {
    /// ERROR_CODE (GetMedia) or EXCEPTION_ERROR_CODE (GetMediaForFragmentList).
    pub code: String,
    /// ERROR_ID: the numeric GetMedia error code.
    pub id: String,
    /// EXCEPTION_MESSAGE, from GetMediaForFragmentList.
    pub message: String,
}

impl InbandError {
    /// What the error means, from the KVS GetMedia documentation.
    pub fn meaning(&self) -> &str {
        if !self.message.is_empty() {
            return &self.message;
        }
        match self.id.trim() {
            "3002" => "error writing to the stream",
            "4000" => "the requested fragment was not found",
            "4500" => "access denied to the stream's KMS key",
            "4501" => "the stream's KMS key is disabled",
            "4502" => "validation error on the stream's KMS key",
            "4503" => "the stream's KMS key is unavailable",
            "4504" => "invalid use of the stream's KMS key",
            "4505" => "the stream's KMS key is in an invalid state",
            "4506" => "the stream's KMS key was not found",
            "5000" => "internal error in Kinesis Video Streams",
            _ => "an error reported by Kinesis Video Streams",
        }
    }
}

/// The KVS values of one fragment (chunk), gathered from all its Tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FragmentMeta {
    pub fragment_number: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub server_timestamp: Option<u64>,
    pub producer_timestamp: Option<u64>,
    pub millis_behind_now: Option<u64>,
    pub continuation_token: Option<String>,
    pub contact_id: Option<String>,
    pub mime_type: Option<String>,
    pub error: Option<InbandError>,
    /// Every other tag, as (name, value), in stream order. Repeats are kept once.
    pub other: Vec<(String, String)>,
}

/// True for the tag names that report an in-band error.
pub fn is_error_tag(name: &str) -> bool {
    matches!(
        name,
        ERROR_CODE | ERROR_ID | EXCEPTION_ERROR_CODE | EXCEPTION_MESSAGE
    )
}

/// Tags beyond this many distinct names per fragment are dropped, so that a
/// hostile stream cannot grow memory.
const MAX_OTHER_TAGS: usize = 64;

impl FragmentMeta {
    pub fn apply(&mut self, tags: &[SimpleTag]) {
        for tag in tags {
            let value = tag.value.trim();
            match tag.name.as_str() {
                FRAGMENT_NUMBER => self.fragment_number = Some(value.into()),
                SERVER_TIMESTAMP | SERVER_SIDE_TIMESTAMP => {
                    self.server_timestamp = parse_seconds(value)
                }
                PRODUCER_TIMESTAMP | PRODUCER_SIDE_TIMESTAMP => {
                    self.producer_timestamp = parse_seconds(value)
                }
                MILLIS_BEHIND_NOW => self.millis_behind_now = value.parse().ok(),
                CONTINUATION_TOKEN => self.continuation_token = Some(value.into()),
                CONTACT_ID => {
                    if !value.is_empty() {
                        self.contact_id = Some(value.into());
                    }
                }
                MIME_TYPE => {
                    self.mime_type = Some(value.into());
                    self.push_other(MIME_TYPE, value);
                }
                ERROR_CODE | EXCEPTION_ERROR_CODE => {
                    self.error.get_or_insert_with(Default::default).code = value.into();
                }
                ERROR_ID => self.error.get_or_insert_with(Default::default).id = value.into(),
                EXCEPTION_MESSAGE => {
                    self.error.get_or_insert_with(Default::default).message = value.into();
                }
                name => self.push_other(name, value),
            }
        }
    }

    fn push_other(&mut self, name: &str, value: &str) {
        if let Some(slot) = self.other.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value.into();
        } else if self.other.len() < MAX_OTHER_TAGS {
            self.other.push((name.into(), value.into()));
        }
    }
}

/// Parses KVS decimal seconds ("1517789296.298") into nanoseconds.
pub fn parse_seconds(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = int.parse().ok()?;
    let mut nanos = 0u64;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Rate and channels of an `audio/L16;rate=R;channels=C` MimeType.
pub fn parse_l16(mime: &str) -> Option<(u32, u32)> {
    let mut parts = mime.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("audio/L16") {
        return None;
    }
    let (mut rate, mut channels) = (8000, 1);
    for part in parts {
        match part.split_once('=') {
            Some(("rate", v)) => rate = v.trim().parse().ok()?,
            Some(("channels", v)) => channels = v.trim().parse().ok()?,
            _ => {}
        }
    }
    (rate > 0 && channels > 0 && channels <= 64).then_some((rate, channels))
}

/// Orders fragment numbers: as big decimal integers when both are numeric,
/// else as strings.
pub fn compare_fragment_numbers(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if numeric(a) && numeric(b) {
        let a = a.trim_start_matches('0');
        let b = b.trim_start_matches('0');
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    } else {
        a.cmp(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, value: &str) -> SimpleTag {
        SimpleTag::new(name, value)
    }

    #[test]
    fn seconds() {
        assert_eq!(
            parse_seconds("1517789296.298"),
            Some(1_517_789_296_298_000_000)
        );
        assert_eq!(parse_seconds("12"), Some(12_000_000_000));
        assert_eq!(parse_seconds("0.000000001"), Some(1));
        assert_eq!(parse_seconds("-1.0"), None);
        assert_eq!(parse_seconds("abc"), None);
        assert_eq!(parse_seconds("99999999999999999999"), None);
    }

    #[test]
    fn l16() {
        assert_eq!(
            parse_l16("audio/L16;rate=8000;channels=1;"),
            Some((8000, 1))
        );
        assert_eq!(
            parse_l16("audio/L16; rate=16000; channels=2"),
            Some((16000, 2))
        );
        assert_eq!(parse_l16("audio/L16"), Some((8000, 1)));
        assert_eq!(parse_l16("audio/aac"), None);
        assert_eq!(parse_l16("audio/L16;rate=0"), None);
    }

    #[test]
    fn fragment_numbers() {
        let a = "91343852333181432392682062607743920146264245331";
        let b = "91343852333181432392682062607743920146264245332";
        assert_eq!(compare_fragment_numbers(a, b), Ordering::Less);
        assert_eq!(compare_fragment_numbers("9", "10"), Ordering::Less);
        assert_eq!(compare_fragment_numbers("010", "10"), Ordering::Equal);
        assert_eq!(compare_fragment_numbers("gap-1", "gap-4"), Ordering::Less);
    }

    #[test]
    fn meta() {
        let mut m = FragmentMeta::default();
        m.apply(&[
            tag(FRAGMENT_NUMBER, "42"),
            tag(SERVER_SIDE_TIMESTAMP, "1.5"),
            tag(CONTACT_ID, "c1"),
            tag("InstanceId", "i1"),
            tag(ERROR_CODE, "Internal"),
            tag(ERROR_ID, "5000"),
        ]);
        m.apply(&[
            tag(CONTACT_ID, ""),
            tag("InstanceId", "i2"),
            tag(MILLIS_BEHIND_NOW, "250"),
        ]);
        assert_eq!(m.fragment_number.as_deref(), Some("42"));
        assert_eq!(m.server_timestamp, Some(1_500_000_000));
        assert_eq!(m.contact_id.as_deref(), Some("c1"));
        assert_eq!(m.millis_behind_now, Some(250));
        assert_eq!(m.other, vec![("InstanceId".into(), "i2".into())]);
        let e = m.error.unwrap();
        assert_eq!(
            (e.code.as_str(), e.id.as_str(), e.meaning()),
            (
                "Internal",
                "5000",
                "internal error in Kinesis Video Streams"
            )
        );
        let mut big = FragmentMeta::default();
        let tags: Vec<_> = (0..1000).map(|i| tag(&format!("T{i}"), "v")).collect();
        big.apply(&tags);
        assert_eq!(big.other.len(), MAX_OTHER_TAGS);
    }
}
