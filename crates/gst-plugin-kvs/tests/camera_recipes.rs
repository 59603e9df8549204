// SPDX-License-Identifier: MPL-2.0
//! Runs the "From a camera" recipes of docs/recipes.md with `sh`, as
//! written, against a local KVS server on a free port with a live and a
//! stored synthetic camera, and checks what they write.

#![cfg(feature = "aws")]

mod common;

use gst::prelude::*;
use kvs_local_server::synth::camera::Camera;
use kvs_local_server::{State, Stream};

/// Frames in an MP4 file, through qtdemux.
fn mp4_frames(path: &std::path::Path) -> usize {
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! fakesink name=sink signal-handoffs=true",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .connect("handoff", false, move |_| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            None
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    count.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn readme_camera_recipes_work() {
    common::init();
    if !common::have(&["x264enc", "avdec_h264", "jpegenc", "mp4mux"]) {
        return;
    }
    let recipes = common::readme_section_commands("docs/recipes.md", "From a camera");
    assert_eq!(recipes.len(), 3, "{recipes:#?}");
    let stored = Camera {
        fragments: 30,
        encoded_fragments: 5,
        ..Camera::default()
    };
    let enc = stored.encode().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let live = Camera {
        fragments: 4,
        start_ms: now,
        ..stored.clone()
    };
    // The live camera starts when its stream is made: make it last.
    let state = State::new(vec![
        Stream::from_camera("garage", &stored, &enc, false),
        Stream::from_camera("camera", &live, &enc, true),
    ]);
    let server = common::serve(state);
    let (dir, plugins) = common::recipe_dir("camera-recipes");
    let mut outputs = Vec::new();
    for recipe in &recipes {
        let mut command = recipe.clone();
        if command.starts_with("gst-play-1.0") {
            command = command.replacen("gst-play-1.0", "gst-play-1.0 --videosink=fakesink", 1);
        }
        let text = common::run_readme_command(&command, &server.endpoint(), &dir, &plugins);
        assert!(!text.contains("ERROR"), "{command}\n{text}");
        outputs.push(text);
    }

    // Snapshots: one per 2 s of the 8 s live camera, from where it joined.
    let snapshots: Vec<Vec<u8>> = (0..)
        .map(|i| dir.join(format!("snapshot-{i:03}.jpg")))
        .take_while(|p| p.exists())
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        (2..=5).contains(&snapshots.len()),
        "{} snapshots",
        snapshots.len()
    );
    assert!(snapshots.iter().all(|j| j.starts_with(&[0xFF, 0xD8, 0xFF])));

    // The MP4: the ten fragments whose server time is in the range.
    assert_eq!(mp4_frames(&dir.join("garage.mp4")), 10 * 50);

    assert!(
        outputs[2].contains("Reached end of play list"),
        "{}",
        outputs[2]
    );
    std::fs::remove_dir_all(&dir).ok();
}
