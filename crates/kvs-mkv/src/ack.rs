// SPDX-License-Identifier: MPL-2.0
//! PutMedia acknowledgements: the JSON objects KVS sends back, one a line,
//! read as they arrive in pieces of any size; and what each ErrorId means.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Buffering,
    Received,
    Persisted,
    Error,
    Idle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub event: Event,
    /// The fragment's Cluster timecode, as sent.
    pub timecode: Option<u64>,
    pub number: Option<String>,
    pub error_id: Option<u32>,
}

/// Reads acknowledgements from the response body.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

/// A number that may come as a JSON number or a string.
fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn parse(value: &Value) -> Option<Ack> {
    let event = match value["EventType"].as_str()?.to_ascii_uppercase().as_str() {
        "BUFFERING" => Event::Buffering,
        "RECEIVED" => Event::Received,
        "PERSISTED" => Event::Persisted,
        "ERROR" => Event::Error,
        "IDLE" => Event::Idle,
        _ => return None,
    };
    Some(Ack {
        event,
        timecode: number(&value["FragmentTimecode"]),
        number: match &value["FragmentNumber"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
        error_id: number(&value["ErrorId"]).map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

impl Reader {
    /// Takes the next bytes; returns the acknowledgements they complete,
    /// and what was wrong if the stream stops being JSON (the ones before
    /// still count). Objects that are not acknowledgements are skipped.
    pub fn push(&mut self, data: &[u8]) -> (Vec<Ack>, Option<String>) {
        self.buf.extend_from_slice(data);
        let mut acks = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        let mut used = 0;
        let mut broken = None;
        loop {
            match stream.next() {
                Some(Ok(value)) => {
                    used = stream.byte_offset();
                    acks.extend(parse(&value));
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    broken = Some(format!("an acknowledgement is not JSON: {e}"));
                    used = self.buf.len();
                    break;
                }
                None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        (acks, broken)
    }
}

/// The ErrorCode KVS gives with an ErrorId.
pub fn code(id: u32) -> &'static str {
    match id {
        4000 => "STREAM_READ_ERROR",
        4001 => "MAX_FRAGMENT_SIZE_REACHED",
        4002 => "MAX_FRAGMENT_DURATION_REACHED",
        4003 => "MAX_CONNECTION_DURATION_REACHED",
        4004 => "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS",
        4005 => "MORE_THAN_ONE_TRACK_FOUND",
        4006 => "INVALID_MKV_DATA",
        4007 => "INVALID_PRODUCER_TIMESTAMP",
        4008 => "STREAM_NOT_ACTIVE",
        4009 => "FRAGMENT_METADATA_LIMIT_REACHED",
        4010 => "TRACK_NUMBER_MISMATCH",
        4011 => "FRAMES_MISSING_FOR_TRACK",
        4012 => "MORE_THAN_ALLOWED_TRACKS_FOUND",
        4500 => "KMS_KEY_ACCESS_DENIED",
        4501 => "KMS_KEY_DISABLED",
        4502 => "KMS_KEY_VALIDATION_ERROR",
        4503 => "KMS_KEY_UNAVAILABLE",
        4504 => "KMS_KEY_INVALID_USAGE",
        4505 => "KMS_KEY_INVALID_STATE",
        4506 => "KMS_KEY_NOT_FOUND",
        4507 => "STREAM_DELETED",
        5001 => "ARCHIVAL_ERROR",
        _ => "INTERNAL_ERROR",
    }
}

/// What to do about an ERROR acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Reconnect and send the fragment again.
    Resend,
    /// Sending it again cannot help: the element fails.
    Fatal,
}

/// The meaning of a PutMedia ErrorId, what to do about it as a user, and
/// whether sending again can help.
pub fn explain(id: u32) -> (&'static str, &'static str, Remedy) {
    use Remedy::*;
    match id {
        4000 => (
            "KVS could not read the data stream",
            "the fragment is sent again",
            Resend,
        ),
        4001 => (
            "a fragment is larger than 50 MB",
            "lower the bitrate or the fragment duration (fragment-duration, or more key frames)",
            Fatal,
        ),
        4002 => (
            "a fragment is longer than 10 seconds",
            "send key frames at least every 10 s (for example x264enc key-int-max) or lower fragment-duration",
            Fatal,
        ),
        4003 => (
            "the connection was open longer than KVS allows",
            "the element reconnects; lower connection-max-age",
            Resend,
        ),
        4004 => (
            "a fragment timecode is less than the previous one",
            "make buffer timestamps increase (check the producer clock and timestamp/x-unix metas)",
            Fatal,
        ),
        4005 | 4012 => (
            "the stream has more tracks than KVS allows",
            "put at most 3 tracks",
            Fatal,
        ),
        4006 => (
            "KVS could not parse the Matroska data",
            "report this as a bug of gst-plugin-kvs",
            Fatal,
        ),
        4007 => (
            "the producer timestamp is invalid",
            "check the producer clock and the buffers' timestamp/x-unix metas",
            Fatal,
        ),
        4008 | 4507 => (
            "the stream no longer exists",
            "create the stream again, or set create-stream=true",
            Fatal,
        ),
        4009 => (
            "the fragment metadata limit was reached",
            "put fewer fragment tags",
            Fatal,
        ),
        4010 => (
            "a frame's track number is not among the stream's tracks",
            "report this as a bug of gst-plugin-kvs",
            Fatal,
        ),
        4011 => (
            "a fragment has no frame for one of its tracks",
            "make every track carry data in every fragment, or drop the silent track",
            Fatal,
        ),
        4500..=4506 => (
            "the stream's KMS key cannot be used",
            "check the key's state and the key policy for this identity",
            Fatal,
        ),
        5001 => (
            "KVS failed to store fragments",
            "the fragment is sent again",
            Resend,
        ),
        _ => (
            "an internal error in Kinesis Video Streams",
            "the fragment is sent again",
            Resend,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_acks_in_any_pieces() {
        let text = concat!(
            "{\"EventType\":\"BUFFERING\",\"FragmentTimecode\":1700000000000,",
            "\"FragmentNumber\":\"91343852333181432392682062607743920147000000001\"}\n",
            "{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":1700000000000,",
            "\"FragmentNumber\":\"91343852333181432392682062607743920147000000001\"}\n",
            "{\"EventType\":\"IDLE\"}\n",
            "{\"EventType\":\"ERROR\",\"FragmentTimecode\":\"1700000002000\",\"ErrorId\":4004,",
            "\"ErrorCode\":\"FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS\"}\n",
        );
        for step in [1, 5, 64, text.len()] {
            let mut reader = Reader::default();
            let acks: Vec<Ack> = text
                .as_bytes()
                .chunks(step)
                .flat_map(|c| {
                    let (acks, broken) = reader.push(c);
                    assert!(broken.is_none());
                    acks
                })
                .collect();
            assert_eq!(acks.len(), 4, "step {step}");
            assert_eq!(acks[1].event, Event::Persisted);
            assert_eq!(acks[1].timecode, Some(1_700_000_000_000));
            assert_eq!(acks[2].event, Event::Idle);
            assert_eq!(acks[3].error_id, Some(4004));
            assert_eq!(acks[3].timecode, Some(1_700_000_002_000));
        }
        // Broken JSON after a good line: the good one still counts.
        let (acks, broken) =
            Reader::default().push(b"{\"EventType\":\"IDLE\"}\n{\"EventType\": nope}");
        assert_eq!(acks.len(), 1);
        assert!(broken.is_some());
        assert_eq!(explain(4002).2, Remedy::Fatal);
        assert_eq!(explain(5000).2, Remedy::Resend);
    }
}
