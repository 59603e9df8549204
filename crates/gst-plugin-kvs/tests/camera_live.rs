// SPDX-License-Identifier: MPL-2.0
//! A live synthetic camera through kvsgetmediasrc and kvsdemux, with the
//! local server cutting connections and throttling: every frame once, and
//! the decoder decodes every one of them after each resume.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use kvs_local_server::synth::camera::Camera;
use kvs_local_server::{State, Stream};

#[test]
fn live_camera_every_frame_once_and_decodable_after_cuts_and_throttles() {
    live_camera(0);
}

/// With B-frames, times in a fragment go back and forth: what a resume
/// drops is counted, not compared by time.
#[test]
fn live_camera_with_b_frames_every_frame_once_after_cuts() {
    live_camera(2);
}

fn live_camera(bframes: u32) {
    common::init();
    if !common::have(&["x264enc", "avdec_h264"]) {
        return;
    }
    let camera = Camera {
        width: 320,
        height: 180,
        fragment_frames: 25,
        fragments: 4,
        bframes,
        ..Camera::default()
    };
    let enc = camera.encode().unwrap();
    let state = State::new(vec![Stream::from_camera("cam", &camera, &enc, true)]);
    state.faults.idle_end_ms.store(300, Ordering::SeqCst);
    state.faults.cut_max.store(40_000, Ordering::SeqCst);
    state.faults.cuts.store(4, Ordering::SeqCst);
    state.faults.throttle.store(2, Ordering::SeqCst);
    let server = common::serve(state);
    let pipeline = gst::parse::launch(&format!(
        "kvsgetmediasrc name=src stream-name=cam region=us-east-1 access-key=AKIDTEST \
         secret-access-key=test-secret endpoint-uri={} start-selector=earliest \
         idle-timeout=1500 ! kvsdemux name=d d.video_0 ! h264parse ! \
         avdec_h264 max-threads=1 ! fakesink name=sink signal-handoffs=true sync=false",
        server.endpoint()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let f = frames.clone();
    pipeline
        .by_name("d")
        .unwrap()
        .connect_pad_added(move |_, pad| {
            let f = f.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                    f.lock().unwrap().push(b.map_readable().unwrap().to_vec());
                }
                gst::PadProbeReturn::Ok
            });
        });
    let pictures = Arc::new(Mutex::new(0u32));
    let p = pictures.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .connect("handoff", false, move |_| {
            *p.lock().unwrap() += 1;
            None
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut warnings = Vec::new();
    let end = loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .expect("EOS within 60 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break None,
            gst::MessageView::Error(e) => break Some(format!("{} {:?}", e.error(), e.debug())),
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => {}
        }
    };
    let stats = pipeline
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(end, None);
    assert!(warnings.is_empty(), "{warnings:?}");
    let frames = frames.lock().unwrap();
    let sent: Vec<&Vec<u8>> = enc.video.iter().map(|f| &f.data).collect();
    let got: Vec<&Vec<u8>> = frames.iter().collect();
    assert_eq!(got.len(), sent.len(), "{stats}");
    assert!(got == sent, "every frame once, in order");
    assert_eq!(
        *pictures.lock().unwrap(),
        camera.frames(),
        "decoded pictures"
    );
    assert_eq!(server.state.counters.cut.load(Ordering::SeqCst), 4);
    assert!(stats.get::<u64>("reconnects").unwrap() >= 4, "{stats}");
    assert_eq!(stats.get::<u64>("throttles").unwrap(), 2, "{stats}");
}

#[test]
fn archive_camera_seeks_by_time() {
    common::init();
    if !common::have(&["x264enc", "avdec_h264"]) {
        return;
    }
    let camera = Camera {
        width: 320,
        height: 180,
        fragment_frames: 25,
        fragments: 6,
        ..Camera::default()
    };
    let enc = camera.encode().unwrap();
    let server = common::serve(State::new(vec![Stream::from_camera(
        "cam", &camera, &enc, false,
    )]));
    let secs = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let pipeline = gst::parse::launch(&format!(
        "kvsgetmediasrc stream-name=cam region=us-east-1 access-key=AKIDTEST \
         secret-access-key=test-secret endpoint-uri={} start-timestamp={} end-timestamp={} \
         ! kvsdemux name=d d.video_0 ! h264parse ! avdec_h264 max-threads=1 ! \
         appsink name=sink sync=false",
        server.endpoint(),
        secs(camera.start_ms),
        secs(camera.start_ms + 6 * camera.fragment_ms()),
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::AsyncDone, gst::MessageType::Error],
        )
        .unwrap();
    assert!(
        matches!(msg.view(), gst::MessageView::AsyncDone(_)),
        "{msg:?}"
    );
    // The demuxer answers from the source: seekable over the whole range.
    let mut q = gst::query::Seeking::new(gst::Format::Time);
    assert!(sink.query(&mut q));
    let (seekable, start, end) = q.result();
    assert!(seekable);
    assert_eq!(
        start,
        gst::GenericFormattedValue::from(gst::ClockTime::ZERO)
    );
    assert_eq!(
        end,
        gst::GenericFormattedValue::from(gst::ClockTime::from_seconds(6))
    );
    // 3.5 s is inside fragment 3: output starts at its keyframe, 3 s.
    pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
            gst::ClockTime::from_mseconds(3500),
        )
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut got = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let segment = sample
            .segment()
            .unwrap()
            .downcast_ref::<gst::ClockTime>()
            .unwrap();
        let b = sample.buffer().unwrap();
        got.push((segment.start(), b.pts(), b.map_readable().unwrap().to_vec()));
    }
    assert!(sink.is_eos());
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(got.len(), 75, "fragments 3, 4 and 5");
    assert!(
        got.iter()
            .all(|(s, ..)| *s == Some(gst::ClockTime::from_seconds(3)))
    );
    for (i, (_, pts, _)) in got.iter().enumerate() {
        assert_eq!(
            *pts,
            Some(gst::ClockTime::from_mseconds(3000 + 40 * i as u64))
        );
    }
    // The same pictures as the same frames decoded without a seek.
    let data: Vec<u8> = camera
        .fragments(&enc)
        .iter()
        .flat_map(|f| f.to_bytes())
        .collect();
    let whole = decode_all(&data);
    assert_eq!(whole.len(), 150);
    assert!(got.iter().map(|(.., d)| d).eq(whole[75..].iter()));
}

/// Every picture of `data` through kvsdemux and avdec_h264.
fn decode_all(data: &[u8]) -> Vec<Vec<u8>> {
    common::pull(data, "kvsdemux ! h264parse ! avdec_h264 max-threads=1")
        .into_iter()
        .map(|o| o.data)
        .collect()
}
