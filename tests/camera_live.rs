// SPDX-License-Identifier: MPL-2.0
//! A live synthetic camera through kvsgetmediasrc and kvsdemux, with the
//! local server cutting connections and throttling: every frame once, and
//! the decoder decodes every one of them after each resume.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstkvs::server::{State, Stream};
use gstkvs::synth::camera::Camera;

#[test]
fn live_camera_every_frame_once_and_decodable_after_cuts_and_throttles() {
    common::init();
    for e in ["x264enc", "avdec_h264"] {
        if gst::ElementFactory::find(e).is_none() {
            return common::missing(e);
        }
    }
    let camera = Camera {
        width: 320,
        height: 180,
        fragment_frames: 25,
        fragments: 4,
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
