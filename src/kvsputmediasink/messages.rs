// SPDX-License-Identifier: MPL-2.0
//! What the sink tells the application: its bus errors and its `stats`.

use super::session::{Stats, Stop};
use crate::aws::Failure;
use crate::put::ack;

/// The bus error for a session that stopped: what happened, then the
/// details and what to do.
pub(super) fn error_message(stream: &str, stop: &Stop) -> gst::ErrorMessage {
    match stop {
        Stop::Ack(id, timecode) => {
            let (meaning, todo, _) = ack::explain(*id);
            let at = timecode.map_or(String::new(), |t| format!(" at timecode {t}"));
            gst::error_msg!(
                gst::ResourceError::Write,
                (
                    "Kinesis Video Streams refused a fragment of stream {}: {}",
                    stream,
                    meaning
                ),
                [
                    "ERROR acknowledgement{at}: ErrorId {id} ({}). What to do: {todo}.",
                    ack::code(*id)
                ]
            )
        }
        Stop::Failure(Failure::NotFound(detail)) => gst::error_msg!(
            gst::ResourceError::NotFound,
            ("Kinesis video stream {} does not exist", stream),
            [
                "{detail}. Check stream-name or stream-arn and aws-region, or set create-stream=true."
            ]
        ),
        Stop::Failure(Failure::NotAuthorized(detail)) => gst::error_msg!(
            gst::ResourceError::NotAuthorized,
            (
                "Not allowed to put media into Kinesis video stream {}",
                stream
            ),
            [
                "{detail}. Check access-key and secret-key (or the default AWS credential chain) and \
                 that they allow kinesisvideo:PutMedia, kinesisvideo:GetDataEndpoint and \
                 kinesisvideo:DescribeStream (with create-stream: kinesisvideo:CreateStream)."
            ]
        ),
        Stop::Failure(Failure::InvalidArgument(detail)) => gst::error_msg!(
            gst::ResourceError::Settings,
            (
                "Kinesis Video Streams refused the request for stream {}",
                stream
            ),
            ["{detail}."]
        ),
        Stop::Failure(
            Failure::Throttled(detail) | Failure::Endpoint(detail) | Failure::Transient(detail),
        ) => {
            gst::error_msg!(
                gst::ResourceError::Write,
                ("Could not put media into Kinesis video stream {}", stream),
                [
                    "{detail}. Check endpoint-uri (if set), the network and the region; the sink gave \
                     up after max-retries attempts in a row."
                ]
            )
        }
        Stop::Failure(Failure::NoFragments) => unreachable!("PutMedia lists no fragments"),
    }
}

/// The `stats` property.
pub(super) fn stats(stats: &Stats, bytes: usize, fragments: usize) -> gst::Structure {
    let mean = stats
        .total_latency_ms
        .checked_div(stats.fragments_persisted)
        .unwrap_or(0);
    gst::Structure::builder("kvsputmediasink-stats")
        .field("connections", stats.connections)
        .field("fragments-sent", stats.fragments_sent)
        .field("fragments-persisted", stats.fragments_persisted)
        .field("fragments-resent", stats.fragments_resent)
        .field("fragments-dropped", stats.fragments_dropped)
        .field("bytes-sent", stats.bytes_sent)
        .field("errors", stats.errors)
        .field("throttles", stats.throttles)
        .field("endpoint-refreshes", stats.endpoint_refreshes)
        .field("buffered-bytes", bytes as u64)
        .field("buffered-fragments", fragments as u64)
        .field("last-latency-ms", stats.last_latency_ms)
        .field("mean-latency-ms", mean)
        .field("max-latency-ms", stats.max_latency_ms)
        .build()
}
