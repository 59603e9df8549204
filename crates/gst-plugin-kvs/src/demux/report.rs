// SPDX-License-Identifier: MPL-2.0
//! The GstTags and bus messages kvsaudiodemux makes from KVS fragment values.

use crate::tags;
use kvs_mkv::kvs::FragmentMeta;

/// Stream state a fragment's tags carry besides the fragment's own values.
pub struct Context<'a> {
    /// Continuation token and lag of the previous complete fragment.
    pub prev_token: Option<&'a str>,
    pub prev_millis: Option<u64>,
    /// The contact in force (a fragment without ContactId keeps the last one).
    pub contact: Option<&'a str>,
}

/// The stream-scope tag list of one fragment on the pad of track `title`.
pub fn fragment_tags(meta: &FragmentMeta, title: &str, ctx: &Context) -> gst::TagList {
    let mut list = gst::TagList::new();
    {
        let l = list.get_mut().unwrap();
        let replace = gst::TagMergeMode::Replace;
        if !title.is_empty() {
            l.add::<gst::tags::Title>(&title, replace);
        }
        if let Some(n) = &meta.fragment_number {
            l.add::<tags::FragmentNumber>(&n.as_str(), replace);
        }
        if let Some(t) = meta.server_timestamp {
            l.add::<tags::ServerTimestamp>(&t, replace);
        }
        if let Some(t) = meta.producer_timestamp {
            l.add::<tags::ProducerTimestamp>(&t, replace);
        }
        if let Some(m) = ctx.prev_millis {
            l.add::<tags::MillisBehindNow>(&m, replace);
        }
        if let Some(t) = ctx.prev_token {
            l.add::<tags::ContinuationToken>(&t, replace);
        }
        if let Some(c) = ctx.contact {
            l.add::<tags::ContactId>(&c, replace);
        }
        for (name, value) in &meta.other {
            let comment = format!("{name}={value}");
            l.add::<gst::tags::ExtendedComment>(&comment.as_str(), gst::TagMergeMode::Append);
        }
        l.set_scope(gst::TagScope::Stream);
    }
    list
}

/// The `kvs-fragment` message of a complete fragment.
pub fn fragment_message(
    index: u64,
    meta: &FragmentMeta,
    contact: Option<&str>,
    blocks: &[(u64, u64)],
) -> gst::Structure {
    let mut per_track = gst::Structure::builder("blocks");
    for (track, n) in blocks {
        per_track = per_track.field(format!("track-{track}"), n);
    }
    // The fragment's other tags (InstanceId, MimeType, Events...) by name.
    let mut others = gst::Structure::builder("tags");
    let plain = |name: &str| {
        name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    for (name, value) in meta.other.iter().filter(|(n, _)| plain(n)) {
        others = others.field(name.as_str(), value.as_str());
    }
    gst::Structure::builder("kvs-fragment")
        .field("index", index)
        .field_if_some("fragment-number", meta.fragment_number.as_deref())
        .field_if_some("server-timestamp", meta.server_timestamp)
        .field_if_some("producer-timestamp", meta.producer_timestamp)
        .field_if_some("millis-behind-now", meta.millis_behind_now)
        .field_if_some("continuation-token", meta.continuation_token.as_deref())
        .field_if_some("contact-id", contact)
        .field_if_some("mime-type", meta.mime_type.as_deref())
        .field("tags", others.build())
        .field("blocks", per_track.build())
        .build()
}

/// The `kvs-contact-changed` message.
/// `timestamp` is the output time (PTS) of the new contact's first sample.
pub fn contact_changed(
    previous: &str,
    contact: &str,
    fragment_number: &str,
    timestamp: u64,
) -> gst::Structure {
    gst::Structure::builder("kvs-contact-changed")
        .field("previous-contact-id", previous)
        .field("contact-id", contact)
        .field("fragment-number", fragment_number)
        .field("timestamp", gst::ClockTime::from_nseconds(timestamp))
        .build()
}

/// A run of fragments dropped for being too far behind live (max-latency).
#[derive(Debug, Clone, Default)]
pub struct Skipped {
    pub fragments: u64,
    /// How far behind live the first of them was, in ms.
    pub behind_ms: u64,
    pub first_number: Option<String>,
    /// Producer time of the first of them, in ns.
    pub first_producer: Option<u64>,
}

/// The `kvs-skipped` message, posted when output resumes at fragment
/// `resumed` (producer time `resumed_producer`), or at the end of the stream.
pub fn skipped(
    skip: &Skipped,
    resumed: Option<&str>,
    resumed_producer: Option<u64>,
) -> gst::Structure {
    let duration = skip
        .first_producer
        .zip(resumed_producer)
        .map(|(a, b)| gst::ClockTime::from_nseconds(b.saturating_sub(a)));
    gst::Structure::builder("kvs-skipped")
        .field("fragments", skip.fragments)
        .field("behind-ms", skip.behind_ms)
        .field_if_some("duration", duration)
        .field_if_some("first-fragment-number", skip.first_number.as_deref())
        .field_if_some("resumed-fragment-number", resumed)
        .build()
}

/// A warning for the bus from `src`: the text a user sees, and the detail.
pub fn warning(
    src: &gst::Element,
    kind: impl gst::MessageErrorDomain,
    text: String,
    debug: String,
) -> gst::Message {
    gst::message::Warning::builder(kind, &text)
        .debug(&debug)
        .src(src)
        .build()
}

/// An error for the bus from `src`.
pub fn error(
    src: &gst::Element,
    kind: impl gst::MessageErrorDomain,
    text: String,
    debug: String,
) -> gst::Message {
    gst::message::Error::builder(kind, &text)
        .debug(&debug)
        .src(src)
        .build()
}

/// An error with its cause by name in its details (a `kvs-error`
/// structure with a `cause` field), as the network elements give theirs.
pub fn failure(
    src: &gst::Element,
    kind: impl gst::MessageErrorDomain,
    text: String,
    debug: String,
    cause: &str,
) -> gst::Message {
    let details = gst::Structure::builder("kvs-error")
        .field("cause", cause)
        .build();
    gst::message::Error::builder(kind, &text)
        .debug(&debug)
        .details(details)
        .src(src)
        .build()
}

/// An element message for the bus from `src`.
pub fn element(src: &gst::Element, s: gst::Structure) -> gst::Message {
    gst::message::Element::builder(s).src(src).build()
}
