// SPDX-License-Identifier: MPL-2.0
//! What the sink tells the application: its bus errors and its `stats`.

use super::shared::{Stats, Stop};
use crate::aws::Target;
use crate::aws::errors::{Access, Report};
use kvs_mkv::ack;

/// The bus error for a session that stopped: what happened, then the
/// details and what to do.
pub(super) fn report(target: &Target, region: &str, stop: &Stop) -> Report {
    let stream = target.stream();
    match stop {
        Stop::Ack(id, timecode) => {
            let (meaning, todo, _) = ack::explain(*id);
            let at = timecode.map_or(String::new(), |t| format!(" at timecode {t}"));
            Report {
                error: gst::ResourceError::Write,
                message: format!(
                    "Kinesis Video Streams refused a fragment of stream {stream}: {meaning}"
                ),
                debug: format!(
                    "ERROR acknowledgement{at}: ErrorId {id} ({}). What to do: {todo}.",
                    ack::code(*id)
                ),
                cause: "fragment-refused",
            }
        }
        Stop::Failure(failure) => Access {
            action: "put media into",
            stream,
            region,
            endpoint_uri: target.endpoint_uri.as_deref(),
            permissions: "kinesisvideo:PutMedia, kinesisvideo:GetDataEndpoint and \
                          kinesisvideo:DescribeStream (with create-stream: kinesisvideo:CreateStream)",
            missing: "Check stream-name or stream-arn and the region, or set create-stream=true.",
            unreachable: gst::ResourceError::Write,
        }
        .report(failure.clone()),
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
