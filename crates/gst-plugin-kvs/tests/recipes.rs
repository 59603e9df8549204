// SPDX-License-Identifier: MPL-2.0
//! Runs the gst-launch recipes of README.md on the demo call and checks what
//! they write.

mod common;

use gst::prelude::*;
use kvs_local_server::synth::{Call, Side};

/// The `gst-launch-1.0` commands of the README's Recipes section.
fn readme_recipes() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## Recipes")
        .nth(1)
        .expect("a Recipes section");
    let section = section.split("\n## ").next().unwrap();
    // The stream recipes have a test of their own.
    let section = section.split("\n### From a stream").next().unwrap();
    let mut recipes = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let code = block.split("```").next().unwrap();
        if code.starts_with("gst-launch-1.0") {
            recipes.push(code.replace("\\\n", " ").trim().to_string());
        }
    }
    recipes
}

/// The pipeline of a recipe, its files moved into `dir`.
fn pipeline_text(recipe: &str, dir: &std::path::Path) -> String {
    recipe
        .split_whitespace()
        .skip(1)
        .skip_while(|t| t.starts_with('-'))
        .map(|t| match t.strip_prefix("location=") {
            Some(file) => format!("location={}", dir.join(file).display()),
            None => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(desc: &str) {
    let pipeline = gst::parse::launch(desc).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(30))
            .expect("EOS within 30 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{desc}: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

fn wav_data(path: &std::path::Path) -> Vec<u8> {
    common::wav_data(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Decoded duration of an Ogg Opus file.
fn opus_seconds(path: &std::path::Path) -> f64 {
    let desc = format!(
        "filesrc location={} ! oggdemux ! opusdec ! appsink name=s sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = 0usize;
    let mut rate = 48000;
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_audio::AudioInfo::from_caps(sample.caps().unwrap()).unwrap();
        rate = info.rate();
        samples += sample.buffer().unwrap().size() / info.bpf() as usize;
    }
    pipeline.set_state(gst::State::Null).unwrap();
    samples as f64 / f64::from(rate)
}

#[test]
fn readme_recipes_work() {
    common::init();
    let recipes = readme_recipes();
    assert_eq!(recipes.len(), 4, "{recipes:#?}");
    let dir = std::env::temp_dir().join(format!("kvs-recipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let call = Call::demo(6);
    std::fs::write(dir.join("call.mkv"), call.bytes()).unwrap();
    let caller = call.pcm(Side::Caller);
    let agent = call.pcm_with_silence(Side::Agent);

    for recipe in &recipes {
        run(&pipeline_text(recipe, &dir));
    }

    assert_eq!(wav_data(&dir.join("track1.wav")), caller);
    assert_eq!(wav_data(&dir.join("track2.wav")), agent);

    let (left, right) = common::deinterleave(&wav_data(&dir.join("stereo.wav")));
    assert_eq!(left, caller);
    assert_eq!(right, agent);

    let seconds = caller.len() as f64 / 16000.0;
    let opus = opus_seconds(&dir.join("call.opus"));
    assert!(
        (opus - seconds).abs() < 0.1,
        "opus {opus} s, call {seconds} s"
    );

    let mut pieces = Vec::new();
    for i in 0.. {
        let path = dir.join(format!("piece-{i:03}.wav"));
        if !path.exists() {
            break;
        }
        let data = wav_data(&path);
        assert!(data.len() <= 16000, "piece {i} is {} bytes", data.len());
        pieces.extend(data);
    }
    assert_eq!(pieces, caller);
    std::fs::remove_dir_all(&dir).ok();
}
