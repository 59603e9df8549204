// SPDX-License-Identifier: MPL-2.0
//! kvsaudiodemux and kvsdemux themselves on arbitrary input: track
//! resolution, caps holds and renegotiation, the timeline and gap filling,
//! contact ends, stale-fragment skipping and resync.
//! The first bytes pick the properties and the chunk sizes; some chunks come
//! with DISCONT, as after a reconnect. It must never panic, and its output
//! is pulled as it comes, so memory stays bounded.
#![no_main]

use std::sync::Once;

use gst::prelude::*;
use libfuzzer_sys::fuzz_target;

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstkvs::plugin_register_static().unwrap();
    });
}

/// A generated Connect call, in the real layout or tags first, maybe with
/// its tracks swapped or renamed (so that only a MimeType tells PCM), and
/// with `video` an H.264 track of made-up frames besides.
fn call(flags: u8, video: bool) -> Vec<u8> {
    use kvs_mkv::writer::{BlockSpec, TrackSpec};
    use kvs_local_server::synth::{Call, Layout};
    let call = Call {
        fragments: 3,
        blocks_per_fragment: 3,
        layout: if flags & 16 != 0 {
            Layout::TagsFirst
        } else {
            Layout::Real
        },
        swapped: flags & 32 != 0,
        next_contact: (flags & 128 != 0).then(|| (2, "next".into())),
        ..Call::default()
    };
    let mut out = Vec::new();
    for i in 0..call.fragments {
        let mut f = call.fragment(i);
        if flags & 64 != 0 {
            f.tracks
                .iter_mut()
                .for_each(|t| t.name = format!("t{}", t.number));
        }
        if video {
            let avc = vec![1, 0x42, 0xC0, 0x1E, 0xFF, 0xE0, 0];
            f.tracks
                .push(TrackSpec::video(3, "V_MPEG4/ISO/AVC", avc, (64, 36), Some(40_000_000)));
            for k in 0..5u8 {
                let frame = vec![0, 0, 0, 2, 0x65 - 0x24 * u8::from(k > 0), k];
                f.blocks
                    .push(BlockSpec::frame(3, i16::from(k) * 40, frame, k == 0));
            }
        }
        f.write(&mut out);
    }
    out
}

/// With flag 8 the input edits a generated call (3 bytes an edit: where,
/// twice, and the new byte; a 0 byte cuts there instead); else it is the
/// stream.
fn stream(flags: u8, video: bool, data: &[u8]) -> Vec<u8> {
    if flags & 8 == 0 {
        return data.to_vec();
    }
    let mut out = call(flags, video);
    for edit in data.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % out.len();
        match edit[2] {
            0 => out.truncate(at.max(1)),
            byte => out[at] = byte,
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [mode, flags, size, data @ ..] = data else {
        return;
    };
    init();
    // The high bit of `mode` picks kvsdemux, with video.
    let video = mode & 128 != 0;
    let data = &stream(*flags, video, data);
    let element = if video { "kvsdemux" } else { "kvsaudiodemux" };
    let mut h = gst_check::Harness::with_padnames(element, Some("sink"), None);
    let demux = h.element().unwrap();
    demux.set_property_from_str(
        "connect-pcm",
        ["auto", "always", "never"][usize::from(mode % 3)],
    );
    demux.set_property("stop-at-contact-end", flags & 1 != 0);
    demux.set_property("buffer-lists", flags & 2 != 0);
    demux.set_property("merge-raw-audio", mode & 32 != 0);
    demux.set_property("max-gap", u32::from(*mode) * 100);
    demux.set_property("max-element-size", 1u32 << 16);
    demux.set_property("max-latency", u32::from(mode & 64 != 0) * 1500);
    // Every pad drains into a fakesink (both without a parent, as the
    // harness's element is).
    let sinks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let added = sinks.clone();
    demux.connect_pad_added(move |_, pad| {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        sink.set_state(gst::State::Playing).unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        added.lock().unwrap().push(sink);
    });
    h.set_src_caps_str("video/x-matroska");
    let size = usize::from(*size) * 16 + 1;
    for (i, chunk) in data.chunks(size).enumerate() {
        let mut buffer = gst::Buffer::from_slice(chunk.to_vec());
        if flags & 4 != 0 && i % 7 == 3 {
            buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
        }
        if h.push(buffer).is_err() {
            break;
        }
    }
    h.push_event(gst::event::Eos::new());
    drop(h);
    for sink in sinks.lock().unwrap().drain(..) {
        sink.set_state(gst::State::Null).unwrap();
    }
});
