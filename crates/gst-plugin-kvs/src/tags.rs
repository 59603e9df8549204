// SPDX-License-Identifier: MPL-2.0
//! Custom GstTags that carry KVS fragment metadata.

use gst::glib::{GStr, gstr};
use gst::tags::{CustomTag, Tag};

macro_rules! kvs_tag {
    ($ty:ident, $value:ty, $name:literal, $nick:literal, $desc:literal) => {
        pub enum $ty {}
        impl<'a> Tag<'a> for $ty {
            type TagType = $value;
            const TAG_NAME: &'static GStr = gstr!($name);
        }
        impl CustomTag<'_> for $ty {
            const FLAG: gst::TagFlag = gst::TagFlag::Meta;
            const NICK: &'static GStr = gstr!($nick);
            const DESCRIPTION: &'static GStr = gstr!($desc);
        }
    };
}

kvs_tag!(
    FragmentNumber,
    &'a str,
    "kvs-fragment-number",
    "KVS fragment number",
    "AWS_KINESISVIDEO_FRAGMENT_NUMBER of the fragment (a decimal string)"
);
kvs_tag!(
    ServerTimestamp,
    u64,
    "kvs-server-timestamp",
    "KVS server timestamp",
    "Server-side timestamp of the fragment, in nanoseconds since the Unix epoch"
);
kvs_tag!(
    ProducerTimestamp,
    u64,
    "kvs-producer-timestamp",
    "KVS producer timestamp",
    "Producer-side timestamp of the fragment, in nanoseconds since the Unix epoch"
);
kvs_tag!(
    MillisBehindNow,
    u64,
    "kvs-millis-behind-now",
    "KVS milliseconds behind now",
    "How far behind live the stream was at the previous complete fragment, in milliseconds"
);
kvs_tag!(
    ContinuationToken,
    &'a str,
    "kvs-continuation-token",
    "KVS continuation token",
    "GetMedia continuation token that resumes the stream at this fragment"
);
kvs_tag!(
    ContactId,
    &'a str,
    "kvs-contact-id",
    "Amazon Connect contact id",
    "ContactId of the Amazon Connect contact the audio belongs to"
);

/// Registers the tags once per process.
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if gst::tags::tag_exists(FragmentNumber::TAG_NAME) {
            return;
        }
        gst::tags::register::<FragmentNumber>();
        gst::tags::register::<ServerTimestamp>();
        gst::tags::register::<ProducerTimestamp>();
        gst::tags::register::<MillisBehindNow>();
        gst::tags::register::<ContinuationToken>();
        gst::tags::register::<ContactId>();
    });
}
