// SPDX-License-Identifier: MPL-2.0
//! The Amazon Connect contact-flow event: which stream holds the contact's
//! audio, and from where to when. The worker's queue may also carry a time
//! range of a stream to record from the archive.

use serde_json::Value;

/// What the recorder takes from a Connect event.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub stream_arn: String,
    pub region: String,
    pub contact_id: Option<String>,
    pub start_fragment: Option<String>,
    /// Seconds since the Unix epoch.
    pub start: Option<f64>,
    pub stop: Option<f64>,
    /// A range message: the stream's audio over a time, whichever contacts
    /// it holds; not one contact.
    pub range: bool,
}

/// Where the stream is read again after a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// The continuation token of the last fragment before the cut (live).
    pub token: Option<String>,
    /// Producer time of the first fragment after the cut (archive), ms.
    pub producer_ms: Option<u64>,
}

impl Contact {
    /// An ended contact (or a range): it has both a start and a stop.
    pub fn is_ended(&self) -> bool {
        self.start.is_some() && self.stop.is_some()
    }

    /// The kvsgetmediasrc properties that name the contact's stream.
    pub fn stream_props(&self) -> Vec<(&'static str, String)> {
        vec![
            ("stream-arn", self.stream_arn.clone()),
            ("region", self.region.clone()),
        ]
    }

    /// The kvsgetmediasrc properties that read this contact: the stream,
    /// and where to start. An ended one is its range from the archive, a
    /// running one live from its start; `resume` (a checkpoint's) goes on
    /// from there instead.
    pub fn source_props(&self, resume: &Resume) -> Vec<(&'static str, String)> {
        let mut p = self.stream_props();
        let from = resume.producer_ms.map(|ms| ms as f64 / 1000.0);
        if let (Some(start), Some(stop)) = (self.start, self.stop) {
            p.push(("start-timestamp", from.unwrap_or(start).to_string()));
            p.push(("end-timestamp", stop.to_string()));
            p.push(("timestamp-type", "producer".into()));
            return p;
        }
        match (&resume.token, from.or(self.start)) {
            (Some(token), _) => {
                p.push(("start-selector", "continuation-token".into()));
                p.push(("continuation-token", token.clone()));
            }
            (None, Some(at)) => {
                p.push(("start-selector", "producer-timestamp".into()));
                p.push(("start-timestamp", at.to_string()));
            }
            (None, None) => {
                let fragment = self.start_fragment.clone().unwrap_or_default();
                p.push(("start-selector", "fragment-number".into()));
                p.push(("fragment-number", fragment));
            }
        }
        p
    }
}

/// Connect gives times as epoch milliseconds (a number or a string), or
/// as ISO 8601 text; returns epoch seconds as text kvsgetmediasrc takes.
pub fn timestamp(v: &Value, field: &str) -> Result<Option<f64>, String> {
    let bad = || format!("{field} is not a timestamp (epoch milliseconds or ISO 8601): {v}");
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(|ms| Some(ms / 1000.0)).ok_or_else(bad),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => match s.parse::<f64>() {
            Ok(ms) => Ok(Some(ms / 1000.0)),
            Err(_) => aws_smithy_types::DateTime::from_str(
                s,
                aws_smithy_types::date_time::Format::DateTime,
            )
            .map(|t| Some(t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9))
            .map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

/// Parses the event a contact flow passes to Lambda (the fields sit under
/// `Details.ContactData`), or just its `ContactData` object.
pub fn parse(text: &str) -> Result<Contact, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let data = match &json["Details"]["ContactData"] {
        Value::Null => &json,
        data => data,
    };
    let audio = &data["MediaStreams"]["Customer"]["Audio"];
    if audio.is_null() {
        return Err(
            "no MediaStreams.Customer.Audio: was media streaming started in the \
                    contact flow (the \"Start media streaming\" block)?"
                .into(),
        );
    }
    let text = |field: &str| audio[field].as_str().filter(|s| !s.is_empty());
    let stream_arn = text("StreamARN")
        .ok_or("MediaStreams.Customer.Audio.StreamARN is missing")?
        .to_string();
    let region = kvs_tools::checks::arn_region(&stream_arn)
        .ok_or_else(|| format!("StreamARN {stream_arn:?} is not a Kinesis Video stream ARN"))?
        .to_string();
    let contact = Contact {
        region,
        contact_id: data["ContactId"].as_str().map(String::from),
        start_fragment: text("StartFragmentNumber").map(String::from),
        start: timestamp(&audio["StartTimestamp"], "StartTimestamp")?,
        stop: timestamp(&audio["StopTimestamp"], "StopTimestamp")?,
        stream_arn,
        range: false,
    };
    if contact.start_fragment.is_none() && contact.start.is_none() {
        return Err(
            "MediaStreams.Customer.Audio has neither StartFragmentNumber nor StartTimestamp".into(),
        );
    }
    Ok(contact)
}

/// A queue message for `kvs-record serve`: a contact event, or a range
/// `{"Range": {"StreamARN": ..., "Start": ..., "End": ..., "Name": ...}}`:
/// the fragments of the stream that start from Start to End, both included
/// (as ListFragments selects them), recorded under Name (by default
/// `STREAM/START-END`, in epoch milliseconds), which stands for the contact id.
pub fn parse_message(text: &str) -> Result<Contact, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let range = &json["Range"];
    let contact = if range.is_null() {
        parse(text)?
    } else {
        parse_range(range)?
    };
    if let Some(id) = &contact.contact_id {
        check_name(id)?;
    }
    Ok(contact)
}

fn parse_range(range: &Value) -> Result<Contact, String> {
    let stream_arn = range["StreamARN"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("Range.StreamARN is missing")?
        .to_string();
    let region = kvs_tools::checks::arn_region(&stream_arn)
        .ok_or_else(|| format!("StreamARN {stream_arn:?} is not a Kinesis Video stream ARN"))?
        .to_string();
    let start = timestamp(&range["Start"], "Range.Start")?.ok_or("Range.Start is missing")?;
    let end = timestamp(&range["End"], "Range.End")?.ok_or("Range.End is missing")?;
    if end < start {
        return Err("Range.End is before Range.Start".into());
    }
    let name = match range["Name"].as_str().filter(|s| !s.is_empty()) {
        Some(name) => name.to_string(),
        None => {
            let stream = stream_arn.split('/').nth(1).unwrap_or("stream");
            let ms = |s: f64| (s * 1000.0).round() as u64;
            format!("{stream}/{}-{}", ms(start), ms(end))
        }
    };
    Ok(Contact {
        stream_arn,
        region,
        contact_id: Some(name),
        start_fragment: None,
        start: Some(start),
        stop: Some(end),
        range: true,
    })
}

/// A contact id or range name becomes part of an object key or a file
/// path: it must stay inside the prefix.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("the name {name:?} {why}"));
    if name.is_empty() || name.len() > 512 {
        return bad("must have 1 to 512 characters");
    }
    if name.starts_with('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return bad("may not start with '/' or hold a backslash or a control character");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("may not have an empty, '.' or '..' part");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesisvideo:eu-west-2:123456789012:stream/connect-x/1700000000000";

    fn event(audio: &str) -> String {
        format!(
            r#"{{"Name": "ContactFlowEvent", "Details": {{"ContactData": {{
                "ContactId": "c-1", "MediaStreams": {{"Customer": {{"Audio": {audio}}}}}}}}}}}"#
        )
    }

    #[test]
    fn full_event() {
        let c = parse(&event(&format!(
            r#"{{"StreamARN": "{ARN}", "StartFragmentNumber": "9134385233318143239",
                 "StartTimestamp": "1700000000123", "StopTimestamp": 1700000060000}}"#
        )))
        .unwrap();
        assert_eq!(c.region, "eu-west-2");
        assert_eq!(c.contact_id.as_deref(), Some("c-1"));
        assert_eq!(c.start_fragment.as_deref(), Some("9134385233318143239"));
        assert_eq!(c.start, Some(1_700_000_000.123));
        assert_eq!(c.stop, Some(1_700_000_060.0));
    }

    #[test]
    fn contact_data_alone_and_iso_times() {
        let c = parse(&format!(
            r#"{{"MediaStreams": {{"Customer": {{"Audio": {{"StreamARN": "{ARN}",
                "StartTimestamp": "2024-05-01T12:00:00Z", "StopTimestamp": null}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(c.start, Some(1_714_564_800.0));
        assert_eq!((c.stop, c.start_fragment, c.contact_id), (None, None, None));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |text: &str| parse(text).unwrap_err();
        assert!(err("{\"Details\": ").contains("not valid JSON"));
        assert!(err(r#"{"Details": {"ContactData": {}}}"#).contains("Start media streaming"));
        assert!(err(&event(r#"{"StartFragmentNumber": "1"}"#)).contains("StreamARN is missing"));
        assert!(
            err(&event(
                r#"{"StreamARN": "arn:aws:s3:::b", "StartFragmentNumber": "1"}"#
            ))
            .contains("not a Kinesis Video stream ARN")
        );
        assert!(err(&event(&format!(r#"{{"StreamARN": "{ARN}"}}"#))).contains("neither"));
        assert!(
            err(&event(&format!(
                r#"{{"StreamARN": "{ARN}", "StartTimestamp": "yesterday"}}"#
            )))
            .contains("StartTimestamp is not a timestamp")
        );
    }

    #[test]
    fn range_messages() {
        let c = parse_message(&format!(
            r#"{{"Range": {{"StreamARN": "{ARN}", "Start": "2024-05-01T00:00:00Z",
                 "End": 1714564799999, "Name": "day/2024-05-01/part-000"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.region, "eu-west-2");
        assert_eq!(c.contact_id.as_deref(), Some("day/2024-05-01/part-000"));
        assert_eq!(c.start, Some(1_714_521_600.0));
        assert_eq!(c.stop, Some(1_714_564_799.999));
        assert_eq!(c.start_fragment, None);
        assert!(c.range);
        let unnamed = parse_message(&format!(
            r#"{{"Range": {{"StreamARN": "{ARN}", "Start": 1000, "End": "3000"}}}}"#
        ))
        .unwrap();
        assert_eq!(unnamed.contact_id.as_deref(), Some("connect-x/1000-3000"));
        // A contact event still reads as one.
        let event = parse_message(&event(&format!(
            r#"{{"StreamARN": "{ARN}", "StartFragmentNumber": "1"}}"#
        )))
        .unwrap();
        assert_eq!(event.contact_id.as_deref(), Some("c-1"));
        assert!(!event.range);
    }

    #[test]
    fn range_errors_say_what_is_wrong() {
        let err = |range: &str| parse_message(&format!(r#"{{"Range": {range}}}"#)).unwrap_err();
        assert!(err(r#"{"Start": 1, "End": 2}"#).contains("Range.StreamARN is missing"));
        assert!(
            err(&format!(r#"{{"StreamARN": "{ARN}", "End": 2}}"#))
                .contains("Range.Start is missing")
        );
        assert!(
            err(&format!(r#"{{"StreamARN": "{ARN}", "Start": 1}}"#))
                .contains("Range.End is missing")
        );
        assert!(
            err(&format!(
                r#"{{"StreamARN": "{ARN}", "Start": 5, "End": 2}}"#
            ))
            .contains("End is before")
        );
        assert!(
            err(&format!(
                r#"{{"StreamARN": "{ARN}", "Start": "x", "End": 2}}"#
            ))
            .contains("Range.Start is not a timestamp")
        );
    }

    #[test]
    fn names_stay_inside_the_prefix() {
        for good in ["c-1", "day/2024-05-01/part-000", "a.b/c..d"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/etc/x",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            "a\nb",
            "a/",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let event = format!(
            r#"{{"ContactId": "../../x", "MediaStreams": {{"Customer": {{"Audio": {{
                "StreamARN": "{ARN}", "StartFragmentNumber": "1"}}}}}}}}"#
        );
        assert!(parse_message(&event).unwrap_err().contains("'..'"));
    }
}
