// SPDX-License-Identifier: MPL-2.0
//! `kvs://` through uridecodebin and playbin: kvsdemux is plugged for KVS
//! streams, audio and video, and matroskademux still plays ordinary
//! Matroska files.

#![cfg(feature = "aws")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use kvs_local_server::synth::camera::Camera;
use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{State, Stream};
use kvs_mkv::writer::{BlockSpec, Chunk, TrackSpec};

/// The local server's endpoint, percent-encoded for a `kvs://` URI; the
/// credentials for it go into the environment, where the SDK finds them.
fn uri_endpoint(server: &common::Server) -> String {
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDTEST");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret");
    }
    server.endpoint().replace(':', "%3A").replace('/', "%2F")
}

fn factories(bin: &gst::Bin) -> Vec<String> {
    bin.iterate_recurse()
        .into_iter()
        .filter_map(|e| e.ok()?.factory().map(|f| f.name().to_string()))
        .collect()
}

/// Runs `uridecodebin uri=URI`, recording the raw audio of each pad, and
/// returns it with the factories that were plugged.
fn decode(uri: &str) -> (Vec<Vec<u8>>, Vec<String>) {
    common::init();
    let pipeline = gst::Pipeline::new();
    let dec = gst::ElementFactory::make("uridecodebin")
        .property("uri", uri)
        .build()
        .unwrap();
    pipeline.add(&dec).unwrap();
    let outputs: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Default::default();
    let weak = pipeline.downgrade();
    let sink_outputs = outputs.clone();
    dec.connect_pad_added(move |_, pad| {
        let pipeline = weak.upgrade().unwrap();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let name = pad.name().to_string();
        let out = sink_outputs.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let map = sample.buffer().unwrap().map_readable().unwrap();
                    out.lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_default()
                        .extend_from_slice(&map);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS within 30 s");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{uri}: {} ({:?})", e.error(), e.debug());
    }
    let plugged = factories(pipeline.upcast_ref());
    pipeline.set_state(gst::State::Null).unwrap();
    let out = outputs.lock().unwrap().values().cloned().collect();
    (out, plugged)
}

#[test]
fn kvs_uri_plays_through_kvsdemux() {
    let call = Call {
        fragments: 3,
        ..Call::default()
    };
    let state = State::new(vec![Stream::from_mkv("my call", &call.bytes())]);
    state.faults.idle_end_ms.store(200, Ordering::SeqCst);
    let server = common::serve(state);
    let endpoint = uri_endpoint(&server);
    let uri = format!(
        "kvs://my%20call?region=us-east-1&start=earliest&idle-timeout=800&endpoint={endpoint}"
    );
    let (pcm, plugged) = decode(&uri);
    assert!(plugged.contains(&"kvsdemux".to_string()), "{plugged:?}");
    assert!(
        !plugged.contains(&"matroskademux".to_string()),
        "{plugged:?}"
    );
    assert_eq!(pcm.len(), 2);
    let mut expected = vec![call.pcm(Side::Caller), call.pcm(Side::Agent)];
    let mut got = pcm;
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    // playbin picks one of the two tracks and plays it to the end.
    let playbin = gst::ElementFactory::make("playbin")
        .property("uri", &uri)
        .build()
        .unwrap();
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .unwrap();
    playbin.set_property("audio-sink", &sink);
    playbin.set_state(gst::State::Playing).unwrap();
    let msg = playbin
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    let plugged = factories(playbin.downcast_ref().unwrap());
    playbin.set_state(gst::State::Null).unwrap();
    assert!(plugged.contains(&"kvsdemux".to_string()), "{plugged:?}");
}

#[test]
fn ordinary_matroska_files_still_use_matroskademux() {
    let track = TrackSpec::audio(1, "pcm", "A_PCM/INT/LIT", 8000.0, 1, 16);
    let file = Chunk {
        timestamp_scale: Some(1_000_000),
        tracks: vec![track],
        known_size_cluster: true,
        blocks: (0..10)
            .map(|i| BlockSpec::simple(1, i * 64, vec![i as u8; 1024]))
            .collect(),
        ..Chunk::default()
    };
    let path = std::env::temp_dir().join(format!("kvs-plain-{}.mkv", std::process::id()));
    std::fs::write(&path, file.to_bytes()).unwrap();
    let (pcm, plugged) = decode(&format!("file://{}", path.display()));
    std::fs::remove_file(&path).ok();
    assert!(
        plugged.contains(&"matroskademux".to_string()),
        "{plugged:?}"
    );
    assert!(!plugged.iter().any(|f| f.starts_with("kvs")), "{plugged:?}");
    assert_eq!(pcm.len(), 1);
    assert_eq!(pcm[0].len(), 10 * 1024);
}

#[test]
fn kvs_uri_plays_a_camera_through_playbin() {
    common::init();
    let camera = Camera {
        width: 320,
        height: 180,
        fragment_frames: 25,
        audio: true,
        ..Camera::default()
    };
    if !common::have(&["x264enc", "avdec_h264", "voaacenc", "avdec_aac"]) {
        return;
    }
    let state = State::new(vec![Stream::from_mkv("camera", &camera.bytes().unwrap())]);
    state.faults.idle_end_ms.store(200, Ordering::SeqCst);
    let server = common::serve(state);
    let endpoint = uri_endpoint(&server);
    let uri = format!(
        "kvs://camera?region=us-east-1&start=earliest&idle-timeout=800&endpoint={endpoint}"
    );
    let counted = |name: &str| {
        let sink = gst::ElementFactory::make("fakesink")
            .name(name)
            .property("sync", false)
            .property("signal-handoffs", true)
            .build()
            .unwrap();
        let count = Arc::new(Mutex::new(Vec::new()));
        let c = count.clone();
        sink.connect("handoff", false, move |args| {
            let pad = args[2].get::<gst::Pad>().unwrap();
            let caps = pad.current_caps().unwrap();
            let name = caps.structure(0).unwrap().name().to_string();
            c.lock().unwrap().push(name);
            None
        });
        (sink, count)
    };
    let (video_sink, frames) = counted("video");
    let (audio_sink, audio) = counted("audio");
    let playbin = gst::ElementFactory::make("playbin")
        .property("uri", &uri)
        .property("video-sink", &video_sink)
        .property("audio-sink", &audio_sink)
        .build()
        .unwrap();
    // A live source: the sinks preroll once it plays.
    playbin.set_state(gst::State::Playing).unwrap();
    let bus = playbin.bus().unwrap();
    let types = [gst::MessageType::AsyncDone, gst::MessageType::Error];
    let msg = bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &types);
    assert!(
        msg.is_some_and(|m| matches!(m.view(), gst::MessageView::AsyncDone(_))),
        "prerolled"
    );
    // GetMedia is not seekable: both sinks' seek fails, and playbin's too.
    let seek = playbin.seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::from_seconds(1));
    assert!(seek.is_err(), "a live stream is not seekable");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    let plugged = factories(playbin.downcast_ref().unwrap());
    playbin.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    assert!(plugged.contains(&"kvsdemux".to_string()), "{plugged:?}");
    assert!(plugged.contains(&"avdec_h264".to_string()), "{plugged:?}");
    let frames = frames.lock().unwrap();
    assert_eq!(
        frames.len() as u32,
        camera.frames(),
        "every picture is shown"
    );
    assert!(frames.iter().all(|n| n == "video/x-raw"));
    assert!(!audio.lock().unwrap().is_empty(), "the AAC track plays too");
}

#[test]
fn kvs_uri_archive_range_seeks_in_playbin() {
    common::init();
    if !common::have(&["x264enc", "avdec_h264", "voaacenc", "avdec_aac"]) {
        return;
    }
    let camera = Camera {
        width: 320,
        height: 180,
        fragment_frames: 25,
        fragments: 6,
        audio: true,
        ..Camera::default()
    };
    let enc = camera.encode().unwrap();
    let server = common::serve(State::new(vec![Stream::from_camera(
        "cam", &camera, &enc, false,
    )]));
    let endpoint = uri_endpoint(&server);
    let secs = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let uri = format!(
        "kvs://cam?region=us-east-1&endpoint={endpoint}&start=timestamp:{}&end=timestamp:{}",
        secs(camera.start_ms),
        secs(camera.start_ms + 6000)
    );
    let frames: Arc<Mutex<Vec<gst::ClockTime>>> = Default::default();
    let f = frames.clone();
    let video = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("signal-handoffs", true)
        .build()
        .unwrap();
    video.connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().unwrap();
        f.lock().unwrap().push(buffer.pts().unwrap());
        None
    });
    // The sink runs free in PLAYING: what it gets before the seek's flush
    // is not the seek's.
    let flushed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f, fl) = (frames.clone(), flushed.clone());
    video
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_FLUSH, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && e.type_() == gst::EventType::FlushStop
            {
                f.lock().unwrap().clear();
                fl.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
    let audio = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .unwrap();
    let playbin = gst::ElementFactory::make("playbin")
        .property("uri", &uri)
        .property("video-sink", &video)
        .property("audio-sink", &audio)
        .build()
        .unwrap();
    // A live source: the sinks preroll once it plays.
    playbin.set_state(gst::State::Playing).unwrap();
    let bus = playbin.bus().unwrap();
    let wait = |types: &[gst::MessageType]| {
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(60), types)
            .expect("a message within 60 s");
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("{} ({:?})", e.error(), e.debug());
        }
    };
    wait(&[gst::MessageType::AsyncDone, gst::MessageType::Error]);
    let duration = playbin.query_duration::<gst::ClockTime>();
    assert_eq!(duration, Some(gst::ClockTime::from_seconds(6)));
    frames.lock().unwrap().clear();
    // One seek from playbin reaches kvsdemux through both sinks; it is
    // sent upstream once.
    playbin
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
            gst::ClockTime::from_mseconds(4200),
        )
        .unwrap();
    playbin.set_state(gst::State::Playing).unwrap();
    wait(&[gst::MessageType::Eos, gst::MessageType::Error]);
    let position = playbin.query_position::<gst::ClockTime>();
    playbin.set_state(gst::State::Null).unwrap();
    assert!(
        flushed.load(std::sync::atomic::Ordering::SeqCst),
        "the seek flushed"
    );
    let frames = frames.lock().unwrap();
    // Fragment 4 (4 s) and 5: 50 pictures, from 4 s.
    let expected: Vec<gst::ClockTime> = (0..50)
        .map(|i| gst::ClockTime::from_mseconds(4000 + 40 * i))
        .collect();
    assert_eq!(*frames, expected);
    assert!(
        position.is_some_and(|p| p >= gst::ClockTime::from_mseconds(5900)),
        "{position:?}"
    );
}
