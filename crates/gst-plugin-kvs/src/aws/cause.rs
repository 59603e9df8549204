// SPDX-License-Identifier: MPL-2.0
//! The cause of a failed call to KVS, read from the SDK's error text, as
//! one phrase a user can act on. No GStreamer here: the elements say it on
//! the bus, the tools add the flag to change.

/// Why a call failed, as the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The endpoint's host name did not resolve.
    Dns,
    /// Nothing listens at the endpoint.
    Refused,
    /// The TLS handshake failed (a plain HTTP server behind https://, a
    /// certificate not trusted).
    Tls,
    /// The peer took the request and did not answer in time.
    NoAnswer,
    /// The SDK's credential chain found nothing.
    NoCredentials,
    /// No region was set and the SDK's chain found none.
    NoRegion,
    /// The region is not of a form AWS knows.
    BadRegion,
    /// The endpoint URL cannot be used (no scheme, another scheme).
    BadEndpoint,
    /// KVS computed another signature: a wrong secret, or clock skew.
    Signature,
    /// KVS does not know the access key or the session token.
    CredentialsRejected,
    /// The credentials are not allowed the call: the action and resource
    /// when the answer names them.
    AccessDenied {
        action: Option<String>,
        resource: Option<String>,
    },
    /// No such stream.
    NotFound,
    /// Too many calls or connections.
    Throttled,
    /// Anything else.
    Other,
}

impl Cause {
    /// The cause of a failure described by `text`: the error code and
    /// message of a service error, or the SDK's description of the rest.
    pub fn of(text: &str) -> Cause {
        let lower = text.to_lowercase();
        let has = |s: &str| lower.contains(&s.to_lowercase());
        if has("ResourceNotFoundException") {
            Cause::NotFound
        } else if has("ClientLimitExceeded") || has("ConnectionLimitExceeded") || has("throttl") {
            Cause::Throttled
        } else if has("InvalidSignatureException") || has("SignatureDoesNotMatch") {
            Cause::Signature
        } else if has("UnrecognizedClientException")
            || has("ExpiredToken")
            || has("InvalidClientTokenId")
        {
            Cause::CredentialsRejected
        } else if has("AccessDenied")
            || has("NotAuthorizedException")
            || has("MissingAuthenticationToken")
        {
            Cause::AccessDenied {
                action: between(text, "perform: ", " "),
                resource: between(text, "on resource: ", " ")
                    .map(|r| r.trim_end_matches(['.', ',']).to_string()),
            }
        } else if has("no credentials") || has("credentials provider") || has("credential") {
            Cause::NoCredentials
        } else if has("missing signing region") || has("no region") {
            Cause::NoRegion
        } else if has("`region` - must be a valid host label") {
            Cause::BadRegion
        } else if has("must contain scheme") || has("unsupported scheme") || has("invalid uri") {
            Cause::BadEndpoint
        } else if has("dns error") || has("failed to lookup address") {
            Cause::Dns
        } else if has("connection refused") {
            Cause::Refused
        } else if has("tls") || has("certificate") {
            Cause::Tls
        } else if has("got no answer within") || has("timed out") || has("timeout") {
            Cause::NoAnswer
        } else {
            Cause::Other
        }
    }

    /// The name in the bus error's details (`kvs-error`, field `cause`),
    /// for applications and the tools.
    pub fn name(&self) -> &'static str {
        match self {
            Cause::Dns => "dns",
            Cause::Refused => "refused",
            Cause::Tls => "tls",
            Cause::NoAnswer => "no-answer",
            Cause::NoCredentials => "no-credentials",
            Cause::NoRegion => "no-region",
            Cause::BadRegion => "bad-region",
            Cause::BadEndpoint => "bad-endpoint",
            Cause::Signature => "signature",
            Cause::CredentialsRejected => "credentials-rejected",
            Cause::AccessDenied { .. } => "access-denied",
            Cause::NotFound => "not-found",
            Cause::Throttled => "throttled",
            Cause::Other => "other",
        }
    }

    /// The cause as a phrase: `endpoint` is the URL that was called,
    /// `what` the call or stream when the answer does not name them.
    pub fn phrase(&self, endpoint: &str, what: &str) -> String {
        let host = host(endpoint);
        match self {
            Cause::Dns => format!("DNS lookup failed for {host}"),
            Cause::Refused => format!("connection refused at {endpoint}"),
            Cause::Tls => format!("TLS failure with {endpoint}"),
            Cause::NoAnswer => format!("no answer from {endpoint}"),
            Cause::NoCredentials => "no AWS credentials found (looked in the environment, the \
                                     shared config and credentials files, web identity, ECS and \
                                     instance metadata)"
                .into(),
            Cause::NoRegion => "no AWS region was given and none is configured".into(),
            Cause::BadRegion => "the region is not an AWS region name".into(),
            Cause::BadEndpoint => format!("{endpoint} is not an http:// or https:// URL"),
            Cause::Signature => "signature rejected: a wrong secret access key, or a clock more \
                                 than 5 minutes off"
                .into(),
            Cause::CredentialsRejected => {
                "credentials rejected: an unknown access key or an expired session token".into()
            }
            Cause::AccessDenied { action, resource } => match (action, resource) {
                (Some(a), Some(r)) => format!("access denied for {a} on {r}"),
                (Some(a), None) => format!("access denied for {a}"),
                _ => "access denied".into(),
            },
            Cause::NotFound => format!("{what} not found"),
            Cause::Throttled => "throttled by Kinesis Video Streams (too many calls or \
                                 connections for this stream)"
                .into(),
            Cause::Other => String::new(),
        }
    }
}

/// The part of `text` after `start`, up to `end`.
fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let rest = &text[text.find(start)? + start.len()..];
    let word = rest.split(end).next()?.trim();
    (!word.is_empty()).then(|| word.to_string())
}

/// The host of a URL, or the URL.
pub fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority, |(h, _)| h)
}

/// The control-plane URL the SDK calls for `region`, or `endpoint_uri`.
pub fn control_plane(endpoint_uri: Option<&str>, region: &str) -> String {
    match endpoint_uri {
        Some(uri) => uri.to_string(),
        None => format!("https://kinesisvideo.{region}.amazonaws.com"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's texts as they come, from the runs in the issue.
    #[test]
    fn causes_from_the_sdk_texts() {
        let cases = [
            (
                "dispatch failure: io error: client error (Connect): dns error: failed to lookup \
                 address information: Name or service not known (DispatchFailure(..))",
                "dns",
            ),
            (
                "dispatch failure: io error: client error (Connect): tcp connect error: \
                 Connection refused (os error 111)",
                "refused",
            ),
            (
                "dispatch failure: io error: client error (Connect): TLS handshake failed: \
                 received corrupt message of type InvalidContentType",
                "tls",
            ),
            (
                "dispatch failure: other: missing signing region (DispatchFailure(..))",
                "no-region",
            ),
            (
                "dispatch failure: other: the credential provider was not enabled: no \
                 credentials found in chain",
                "no-credentials",
            ),
            (
                "failed to construct request: endpoint params could not be built: invalid value \
                 for field: `region` - must be a valid host label",
                "bad-region",
            ),
            (
                "dispatch failure: other: failed to apply endpoint `127.0.0.1:1` to request: \
                 endpoint must contain scheme",
                "bad-endpoint",
            ),
            (
                "dispatch failure: io error: client error (Connect): unsupported scheme htp",
                "bad-endpoint",
            ),
            (
                "InvalidSignatureException: The request signature we calculated does not match",
                "signature",
            ),
            (
                "UnrecognizedClientException: The security token included in the request is invalid",
                "credentials-rejected",
            ),
            (
                "ResourceNotFoundException: The stream s does not exist",
                "not-found",
            ),
            ("ClientLimitExceededException: rate exceeded", "throttled"),
            ("GetMedia got no answer within 5.0 s", "no-answer"),
            ("InternalFailure: boom", "other"),
        ];
        for (text, name) in cases {
            assert_eq!(Cause::of(text).name(), name, "{text}");
        }
    }

    #[test]
    fn access_denied_names_the_action_and_resource_when_aws_does() {
        let text = "AccessDeniedException: User: arn:aws:iam::123456789012:user/x is not \
                    authorized to perform: kinesisvideo:GetMedia on resource: \
                    arn:aws:kinesisvideo:us-east-1:123456789012:stream/s/1 because no policy";
        assert_eq!(
            Cause::of(text).phrase("https://x", "stream s"),
            "access denied for kinesisvideo:GetMedia on \
             arn:aws:kinesisvideo:us-east-1:123456789012:stream/s/1"
        );
        let local = "NotAuthorizedException: The access key AKIDDENIED is not authorized";
        assert_eq!(
            Cause::of(local).phrase("https://x", "stream s"),
            "access denied"
        );
    }

    #[test]
    fn hosts_and_endpoints() {
        assert_eq!(host("http://127.0.0.1:4566/x"), "127.0.0.1");
        assert_eq!(
            host("https://kinesisvideo.us-east-1.amazonaws.com"),
            "kinesisvideo.us-east-1.amazonaws.com"
        );
        assert_eq!(
            Cause::Dns.phrase(&control_plane(None, "us-east1"), ""),
            "DNS lookup failed for kinesisvideo.us-east1.amazonaws.com"
        );
        assert_eq!(
            Cause::Refused.phrase(&control_plane(Some("http://127.0.0.1:1"), "r"), ""),
            "connection refused at http://127.0.0.1:1"
        );
    }
}
