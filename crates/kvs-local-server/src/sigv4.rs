// SPDX-License-Identifier: MPL-2.0
//! SigV4 on the server side: reads the Authorization header, and for keys
//! whose secret the server knows, signs the request again and compares.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use hyper::http::request::Parts;

/// AWS refuses a request signed more than this far from its own clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq)]
pub struct Auth<'a> {
    pub key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=HEX`.
pub fn parse(header: &str) -> Option<Auth<'_>> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        let (name, value) = part.split_once('=')?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (key, _date, region, service, end) = (
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
    );
    if end != "aws4_request" || scope.next().is_some() || key.is_empty() {
        return None;
    }
    Some(Auth {
        key,
        region,
        service,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// The time in an `x-amz-date` header (`20240501T120000Z`).
fn amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &value[0..4],
        &value[4..6],
        &value[6..8],
        &value[9..11],
        &value[11..13],
        &value[13..15]
    );
    SystemTime::try_from(DateTime::from_str(&rfc3339, Format::DateTime).ok()?).ok()
}

/// Signs the request again with `secret` and compares with `auth`. The error
/// says what did not match, as AWS's InvalidSignatureException does.
pub fn verify(parts: &Parts, body: &[u8], auth: &Auth, secret: &str) -> Result<(), String> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let time = header("x-amz-date")
        .and_then(amz_date)
        .ok_or("The request has no valid x-amz-date header")?;
    let skew = match SystemTime::now().duration_since(time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > MAX_SKEW {
        return Err(
            "Signature expired: the request time is more than 15 minutes from the server's".into(),
        );
    }
    // The signer adds x-amz-date and the session token itself.
    let mut headers = Vec::new();
    for name in &auth.signed_headers {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let value = header(name).ok_or_else(|| format!("The signed header {name} is missing"))?;
        headers.push((*name, value));
    }
    let host = header("host").unwrap_or("localhost");
    let uri = format!("http://{host}{}", parts.uri);
    let request = SignableRequest::new(
        parts.method.as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("The request cannot be signed: {e}"))?;
    let credentials = Credentials::new(
        auth.key,
        secret,
        header("x-amz-security-token").map(String::from),
        None,
        "kvs-local-server",
    );
    let identity = Identity::from(credentials);
    let params = SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("The request cannot be signed: {e}"))?
        .into();
    let expected = sign(request, &params)
        .map_err(|e| format!("The request cannot be signed: {e}"))?
        .into_parts()
        .1;
    if expected != auth.signature {
        return Err(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method."
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_authorization_header() {
        let h = "AWS4-HMAC-SHA256 Credential=AKID/20240501/us-east-1/kinesisvideo/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature=abc123";
        let auth = parse(h).unwrap();
        assert_eq!(
            auth,
            Auth {
                key: "AKID",
                region: "us-east-1",
                service: "kinesisvideo",
                signed_headers: vec!["content-type", "host", "x-amz-date"],
                signature: "abc123",
            }
        );
        assert!(parse("Bearer token").is_none());
        assert!(
            parse("AWS4-HMAC-SHA256 Credential=AKID/20240501/us-east-1/kinesisvideo").is_none()
        );
    }

    #[test]
    fn reads_amz_date() {
        let t = amz_date("20240501T120000Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_714_564_800);
        assert!(amz_date("2024-05-01T12:00:00Z").is_none());
    }
}
