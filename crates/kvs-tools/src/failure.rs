// SPDX-License-Identifier: MPL-2.0
//! A bus error of the kvs elements as a tool says it: the element's one
//! line, then what to change in the tool's own flags, chosen by the cause
//! the element gives in the error's details (`kvs-error`, `cause`). The
//! SDK's detail is the debug text, shown with --verbose.

/// An error from the bus.
#[derive(Debug, Clone)]
pub struct BusError {
    pub message: String,
    pub debug: String,
    /// The element's cause (`dns`, `not-found`, ...), if it gave one.
    pub cause: Option<String>,
    /// A negotiation error (caps no output takes).
    pub negotiation: bool,
}

impl BusError {
    pub fn of(e: &gst::message::Error) -> BusError {
        BusError {
            message: e.error().message().to_string(),
            debug: e.debug().map(|d| d.to_string()).unwrap_or_default(),
            cause: e.details().and_then(|d| d.get::<String>("cause").ok()),
            negotiation: e.error().matches(gst::CoreError::Negotiation),
        }
    }

    /// A mistake in the settings, said with exit status 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self.cause.as_deref(),
            Some("no-region" | "bad-region" | "bad-endpoint")
        )
    }

    /// One line: the element's message and what to do, in the tool's terms;
    /// `not_found` is the tool's advice for a missing stream.
    pub fn line(&self, not_found: &str) -> String {
        match self.cause.as_deref().and_then(|c| hint(c, not_found)) {
            Some(hint) => format!("{}; {hint}", self.message),
            None => self.message.clone(),
        }
    }
}

/// What to change for `cause`, in the tools' flags.
pub fn hint(cause: &str, not_found: &str) -> Option<String> {
    Some(
        match cause {
            "dns" => "check the network, --region and --endpoint-uri",
            "refused" => "nothing listens there: check --endpoint-uri",
            "tls" => "check --endpoint-uri (https:// only for a TLS server)",
            "no-answer" => "check the network and --endpoint-uri",
            "no-credentials" => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where a \
                 role is given"
            }
            "no-region" => "give --region or set AWS_REGION",
            "bad-region" => "check --region",
            "bad-endpoint" => "check --endpoint-uri",
            "signature" => "check AWS_SECRET_ACCESS_KEY and the machine's clock",
            "credentials-rejected" => "check AWS_ACCESS_KEY_ID and AWS_SESSION_TOKEN",
            "access-denied" => "the IAM policy of these credentials must allow it (see --help)",
            "not-found" => not_found,
            "throttled" => {
                "fewer readers of this stream at once (KVS takes 5 GetMedia calls a second and 3 \
                 connections a stream)"
            }
            "no-fragments" => "check --start and --end, and the stream's data retention",
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_in_the_tools_terms() {
        let e = BusError {
            message: "Kinesis video stream s was not found in region us-east-1".into(),
            debug: "ResourceNotFoundException: ... Check stream-name or stream-arn".into(),
            cause: Some("not-found".into()),
            negotiation: false,
        };
        assert_eq!(
            e.line("check --stream and --region"),
            "Kinesis video stream s was not found in region us-east-1; check --stream and --region"
        );
        assert!(!e.is_usage());
        let e = BusError {
            cause: Some("no-region".into()),
            ..e
        };
        assert!(e.is_usage() && e.line("").ends_with("; give --region or set AWS_REGION"));
    }
}
