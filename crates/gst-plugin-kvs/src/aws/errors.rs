// SPDX-License-Identifier: MPL-2.0
//! A failure as the bus error an element posts: what happened to which
//! stream, in one line, then the detail and what to check. The source and
//! the sink say it the same way.

use super::Failure;

/// What an element was doing when a failure ended it.
pub struct Access<'a> {
    /// "read" or "put media into".
    pub action: &'a str,
    pub stream: &'a str,
    pub region: &'a str,
    /// The IAM actions it needs, for a refusal.
    pub permissions: &'a str,
    /// What to set when the stream does not exist.
    pub missing: &'a str,
    /// The error of a stream that cannot be reached: Read or Write.
    pub unreachable: gst::ResourceError,
}

impl Access<'_> {
    pub fn error_message(&self, failure: Failure) -> gst::ErrorMessage {
        let Access {
            action,
            stream,
            region,
            permissions,
            missing,
            unreachable,
        } = *self;
        match failure {
            Failure::NoFragments(range) => gst::error_msg!(
                gst::ResourceError::NotFound,
                (
                    "Kinesis video stream {} in region {} has no fragments {}",
                    stream,
                    region,
                    range
                ),
                [
                    "ListFragments returned nothing. Check start-timestamp, end-timestamp, timestamp-type \
                     and the stream's data retention."
                ]
            ),
            Failure::NotFound(detail) => gst::error_msg!(
                gst::ResourceError::NotFound,
                (
                    "Kinesis video stream {} was not found in region {}",
                    stream,
                    region
                ),
                ["{detail}. {missing}"]
            ),
            Failure::NotAuthorized(detail) if detail.contains("no credentials found") => {
                gst::error_msg!(
                    gst::ResourceError::NotAuthorized,
                    (
                        "No AWS credentials to {} Kinesis video stream {} in region {}",
                        action,
                        stream,
                        region
                    ),
                    [
                        "{detail}. Set access-key and secret-access-key, or give the default AWS credential \
                         chain what it looks for: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, \
                         or an instance or task role."
                    ]
                )
            }
            Failure::NotAuthorized(detail) => gst::error_msg!(
                gst::ResourceError::NotAuthorized,
                (
                    "Not authorized to {} Kinesis video stream {} in region {}",
                    action,
                    stream,
                    region
                ),
                [
                    "{detail}. Check the credentials (access-key and secret-access-key, or the default AWS \
                     credential chain) and that they allow {permissions}."
                ]
            ),
            Failure::InvalidArgument(detail) => gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "Kinesis Video Streams refused the request for stream {} in region {}",
                    stream,
                    region
                ),
                ["{detail}. Check the element's properties (the start, the archive range)."]
            ),
            Failure::Throttled(detail) | Failure::Endpoint(detail) | Failure::Transient(detail) => {
                gst::error_msg!(
                    unreachable,
                    (
                        "Could not {} Kinesis video stream {} in region {}",
                        action,
                        stream,
                        region
                    ),
                    [
                        "{detail}. Check endpoint-uri (if set), the network and the region. Failed attempts \
                         are retried for max-retries attempts in a row and at least max-outage ms: the \
                         stream could not be reached."
                    ]
                )
            }
        }
    }
}
