// SPDX-License-Identifier: MPL-2.0
//! The `kvs://` URI form:
//! `kvs://STREAM?region=R&start=now|earliest|fragment:N|timestamp:T|producer-timestamp:T|token:X&end=timestamp:T|producer-timestamp:T&mode=live|archive&endpoint=URL&idle-timeout=MS`.
//! STREAM is a stream name or an ARN; values are percent-encoded. An `end`
//! records the range from `start` to `end` (archive mode).

/// Property settings a `kvs://` URI stands for, as (property, value).
pub fn parse(uri: &str) -> Result<Vec<(&'static str, String)>, String> {
    let rest = uri
        .strip_prefix("kvs://")
        .ok_or_else(|| format!("{uri:?} does not start with kvs://"))?;
    let (stream, query) = rest.split_once('?').unwrap_or((rest, ""));
    let stream = decode(stream.trim_end_matches('/'))?;
    if stream.is_empty() {
        return Err(format!(
            "{uri:?} names no stream: use kvs://STREAM?region=R"
        ));
    }
    let mut props = vec![if stream.starts_with("arn:") {
        ("stream-arn", stream)
    } else {
        ("stream-name", stream)
    }];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match key {
            "region" => props.push(("region", value)),
            "endpoint" => props.push(("endpoint-uri", value)),
            "idle-timeout" => props.push(("idle-timeout", value)),
            "mode" => props.push(("mode", value)),
            "end" => {
                let (kind, arg) = value.split_once(':').unwrap_or((value.as_str(), ""));
                let clock = match kind {
                    "timestamp" => "server",
                    "producer-timestamp" => "producer",
                    other => {
                        return Err(format!(
                            "unknown end {other:?} in {uri:?}: use end=timestamp:T"
                        ));
                    }
                };
                if arg.is_empty() {
                    return Err(format!("end={kind} needs a value, as in end={kind}:T"));
                }
                props.push(("end-timestamp", arg.into()));
                props.push(("timestamp-type", clock.into()));
            }
            "start" => {
                let (kind, arg) = value.split_once(':').unwrap_or((value.as_str(), ""));
                let (selector, prop) = match kind {
                    "now" => ("now", None),
                    "earliest" => ("earliest", None),
                    "fragment" => ("fragment-number", Some("fragment-number")),
                    "timestamp" => ("server-timestamp", Some("start-timestamp")),
                    "producer-timestamp" => ("producer-timestamp", Some("start-timestamp")),
                    "token" => ("continuation-token", Some("continuation-token")),
                    other => return Err(format!("unknown start {other:?} in {uri:?}")),
                };
                props.push(("start-selector", selector.into()));
                if let Some(prop) = prop {
                    if arg.is_empty() {
                        return Err(format!(
                            "start={kind} needs a value, as in start={kind}:VALUE"
                        ));
                    }
                    props.push((prop, arg.into()));
                }
            }
            other => return Err(format!("unknown parameter {other:?} in {uri:?}")),
        }
    }
    Ok(props)
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or(format!("bad percent-encoding in {s:?}"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad percent-encoding in {s:?}"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = parse(
            "kvs://call?region=eu-west-1&start=fragment:123&endpoint=http%3A%2F%2F127.0.0.1%3A9",
        )
        .unwrap();
        assert_eq!(
            p,
            [
                ("stream-name", "call".to_string()),
                ("region", "eu-west-1".into()),
                ("start-selector", "fragment-number".into()),
                ("fragment-number", "123".into()),
                ("endpoint-uri", "http://127.0.0.1:9".into()),
            ]
        );
        let p = parse("kvs://arn%3Aaws%3Akinesisvideo%3Aus-east-1%3A1%3Astream%2Fs%2F1?start=timestamp:2024-05-01T12:00:00Z")
            .unwrap();
        assert_eq!(
            p[0],
            (
                "stream-arn",
                "arn:aws:kinesisvideo:us-east-1:1:stream/s/1".into()
            )
        );
        assert_eq!(p[2], ("start-timestamp", "2024-05-01T12:00:00Z".into()));
        assert!(parse("kvs://?region=x").is_err());
        assert!(parse("http://x").is_err());
        assert!(
            parse("kvs://s?start=fragment")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(parse("kvs://s?colour=red").is_err());
        let p = parse("kvs://s?start=producer-timestamp:10&end=producer-timestamp:20").unwrap();
        assert_eq!(
            p[1..],
            [
                ("start-selector", "producer-timestamp".to_string()),
                ("start-timestamp", "10".into()),
                ("end-timestamp", "20".into()),
                ("timestamp-type", "producer".into()),
            ]
        );
        assert!(parse("kvs://s?end=now").is_err());
    }
}
