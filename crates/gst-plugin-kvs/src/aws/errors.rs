// SPDX-License-Identifier: MPL-2.0
//! A failure as the bus error an element posts: one line that names the
//! stream and the cause, the SDK's detail and what to set in the debug
//! text, and the cause by name in the error's details (a `kvs-error`
//! structure with a `cause` field), so that an application (or a tool)
//! can say what to change in its own terms. The source and the sink say it
//! the same way.

use gst::prelude::*;

use super::Failure;
use super::cause::{Cause, control_plane};

/// A bus error to post.
pub struct Report {
    pub error: gst::ResourceError,
    /// One line.
    pub message: String,
    pub debug: String,
    /// [`Cause::name`], or another name for errors that are not a call's.
    pub cause: &'static str,
}

impl Report {
    pub fn post(self, element: &gst::Element) {
        let details = gst::Structure::builder("kvs-error")
            .field("cause", self.cause)
            .build();
        let msg = gst::message::Error::builder(self.error, &self.message)
            .debug(&self.debug)
            .details(details)
            .src(element)
            .build();
        let _ = element.post_message(msg);
    }
}

/// What an element was doing when a failure ended it.
pub struct Access<'a> {
    /// "read" or "put media into".
    pub action: &'a str,
    pub stream: &'a str,
    pub region: &'a str,
    /// The endpoint-uri property, if set.
    pub endpoint_uri: Option<&'a str>,
    /// The IAM actions it needs, for a refusal.
    pub permissions: &'a str,
    /// What to set when the stream does not exist.
    pub missing: &'a str,
    /// The error of a stream that cannot be reached: Read or Write.
    pub unreachable: gst::ResourceError,
}

impl Access<'_> {
    pub fn report(&self, failure: Failure) -> Report {
        let Access {
            action,
            stream,
            region,
            endpoint_uri,
            permissions,
            missing,
            unreachable,
        } = *self;
        let endpoint = control_plane(endpoint_uri, region);
        let what = format!("stream {stream} in region {region}");
        // "(no region)" and the like: a region not known says nothing.
        let in_region = if region.starts_with('(') {
            String::new()
        } else {
            format!(" in region {region}")
        };
        let could_not = |phrase: &str| {
            format!("Could not {action} Kinesis video stream {stream}{in_region}: {phrase}")
        };
        let report = |error, message: String, debug: String, cause: &'static str| Report {
            error,
            message,
            debug,
            cause,
        };
        match failure {
            Failure::NoFragments(range) => report(
                gst::ResourceError::NotFound,
                format!(
                    "Kinesis video stream {stream} in region {region} has no fragments {range}"
                ),
                "ListFragments returned nothing. Check start-timestamp, end-timestamp, \
                 timestamp-type and the stream's data retention."
                    .into(),
                "no-fragments",
            ),
            Failure::NotFound(detail) => report(
                gst::ResourceError::NotFound,
                format!("Kinesis video stream {stream} was not found{in_region}"),
                format!("{detail}. {missing}"),
                Cause::NotFound.name(),
            ),
            Failure::NotAuthorized(detail) => {
                let cause = match Cause::of(&detail) {
                    Cause::Other => Cause::AccessDenied {
                        action: None,
                        resource: None,
                    },
                    cause => cause,
                };
                let todo = if cause == Cause::NoCredentials {
                    "Set access-key and secret-access-key, or give the default AWS credential \
                     chain what it looks for: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                     AWS_PROFILE, SSO, or an instance or task role."
                        .to_string()
                } else {
                    format!(
                        "Check the credentials (access-key and secret-access-key, or the default \
                         AWS credential chain) and that they allow {permissions}."
                    )
                };
                report(
                    gst::ResourceError::NotAuthorized,
                    could_not(&cause.phrase(&endpoint, &what)),
                    format!("{detail}. {todo}"),
                    cause.name(),
                )
            }
            Failure::InvalidArgument(detail) => {
                let cause = Cause::of(&detail);
                let (message, todo) = match cause {
                    Cause::NoRegion => (
                        could_not(&cause.phrase(&endpoint, &what)),
                        "Set region, or AWS_REGION, or a region in the AWS profile.",
                    ),
                    Cause::BadRegion | Cause::BadEndpoint => (
                        could_not(&cause.phrase(&endpoint, &what)),
                        "Check region and endpoint-uri.",
                    ),
                    _ => (
                        format!(
                            "Kinesis Video Streams refused the request for stream {stream} in \
                             region {region}: {}",
                            short(&detail)
                        ),
                        "Check the element's properties (the start, the archive range).",
                    ),
                };
                report(
                    gst::ResourceError::Settings,
                    message,
                    format!("{detail}. {todo}"),
                    cause.name(),
                )
            }
            Failure::Throttled(detail) | Failure::Endpoint(detail) | Failure::Transient(detail) => {
                let cause = Cause::of(&detail);
                let phrase = match cause {
                    Cause::Other | Cause::NoAnswer => short(&detail).to_string(),
                    _ => cause.phrase(&endpoint, &what),
                };
                let tried = attempts(&detail).map_or(String::new(), |t| format!(" {t}"));
                report(
                    unreachable,
                    could_not(&format!("{phrase}{tried}")),
                    format!(
                        "{detail}. Check endpoint-uri (if set), the network and the region. \
                         Failed attempts are retried for max-retries attempts in a row and at \
                         least max-outage ms: the stream could not be reached."
                    ),
                    cause.name(),
                )
            }
        }
    }
}

/// The SDK's description without the debug dump it ends with.
fn short(detail: &str) -> &str {
    let cut = [
        " (DispatchFailure",
        " (ConstructionFailure",
        " (ResponseError",
        " (TimeoutError",
    ]
    .iter()
    .filter_map(|m| detail.find(m))
    .min();
    let text = match cut {
        Some(at) => &detail[..at],
        None => detail,
    };
    match text.find(" (") {
        Some(at) if text[at..].contains("attempts in a row failed") => &text[..at],
        _ => text,
    }
}

/// The "(N attempts in a row failed, over S s)" that [`Failure::after`]
/// puts at the end.
fn attempts(detail: &str) -> Option<&str> {
    let at = detail.rfind(" (")?;
    let tail = &detail[at + 1..];
    tail.contains("attempts in a row failed").then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access<'static> {
        Access {
            action: "read",
            stream: "s",
            region: "us-east1",
            endpoint_uri: None,
            permissions: "kinesisvideo:GetMedia",
            missing: "Check stream-name",
            unreachable: gst::ResourceError::Read,
        }
    }

    #[test]
    fn one_line_with_the_cause_and_the_detail_in_the_debug() {
        let sdk = "dispatch failure: io error: client error (Connect): dns error: failed to lookup \
                   address information: Name or service not known (DispatchFailure(DispatchFailure \
                   { source: ConnectorError { kind: Io } }))";
        let failure = Failure::Transient(sdk.into()).after(4, std::time::Duration::from_secs(1));
        let r = access().report(failure);
        assert_eq!(
            r.message,
            "Could not read Kinesis video stream s in region us-east1: DNS lookup failed for \
             kinesisvideo.us-east1.amazonaws.com (4 attempts in a row failed, over 1 s)"
        );
        assert_eq!(r.cause, "dns");
        assert!(r.debug.contains("ConnectorError") && r.debug.contains("endpoint-uri"));
        let r = access().report(Failure::Transient(
            "GetMedia got no answer within 5.0 s".into(),
        ));
        assert!(
            r.message.ends_with(": GetMedia got no answer within 5.0 s"),
            "{}",
            r.message
        );
        assert_eq!(r.cause, "no-answer");
    }

    #[test]
    fn settings_and_refusals() {
        let r = access().report(Failure::InvalidArgument(
            "dispatch failure: other: missing signing region (DispatchFailure(..))".into(),
        ));
        assert_eq!(r.cause, "no-region");
        assert!(
            r.message
                .ends_with("no AWS region was given and none is configured")
        );
        let r = access().report(Failure::NotAuthorized(
            "InvalidSignatureException: The request signature we calculated does not match".into(),
        ));
        assert_eq!(r.cause, "signature");
        assert!(r.message.contains("signature rejected"), "{}", r.message);
        let r = access().report(Failure::NotFound("ResourceNotFoundException: no".into()));
        assert_eq!(
            r.message,
            "Kinesis video stream s was not found in region us-east1"
        );
    }
}
