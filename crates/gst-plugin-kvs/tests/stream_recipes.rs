// SPDX-License-Identifier: MPL-2.0
//! Runs the README's "From a stream" recipes with `sh`, as written, against
//! a local KVS server on a free port, and checks what they write.

#![cfg(feature = "aws")]

mod common;

use std::path::Path;
use std::process::Command;

use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{State, Stream};

fn stereo(call: &Call, fragments: std::ops::Range<usize>) -> Vec<u8> {
    let per = call.pcm_with_silence(Side::Caller).len() / call.fragments as usize;
    let range = fragments.start * per..fragments.end * per;
    let left = &call.pcm_with_silence(Side::Caller)[range.clone()];
    let right = &call.pcm_with_silence(Side::Agent)[range];
    left.chunks(2)
        .zip(right.chunks(2))
        .flat_map(|(l, r)| [l[0], l[1], r[0], r[1]])
        .collect()
}

fn wav(path: &Path) -> Vec<u8> {
    common::wav_data(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn readme_stream_recipes_work() {
    let recipes = common::readme_section_commands("README.md", "From a stream");
    assert_eq!(recipes.len(), 5, "{recipes:#?}");
    let live = Call::demo(8);
    let archive = Call::demo(120);
    let stored = Stream::from_call("archive-call", &archive, false);
    let server = common::serve(State::new(vec![stored]));
    let (dir, plugins) = common::recipe_dir("stream-recipes");
    // The first run in a new registry scans every plugin, which takes
    // seconds on a busy machine: do it before the live call starts.
    let scan = Command::new("gst-inspect-1.0")
        .arg("kvsgetmediasrc")
        .env("GST_PLUGIN_PATH", &plugins)
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .output()
        .expect("gst-inspect-1.0 (gstreamer1.0-tools)");
    assert!(scan.status.success(), "{scan:?}");
    let has_gst_play = Command::new("gst-play-1.0")
        .arg("--version")
        .output()
        .is_ok();

    let mut outputs = Vec::new();
    for recipe in &recipes {
        if recipe.starts_with("gst-play-1.0") && !has_gst_play {
            common::missing("gst-play-1.0 (gstreamer1.0-plugins-base-apps)");
            outputs.push(String::new());
            continue;
        }
        if recipe.contains("stream-name=demo-call") {
            // The live calls start when their stream is made: just before
            // the recipe that reads it. They follow one another, as
            // kvs-local-server plays them.
            server.add_repeated_call("demo-call", &live);
        }
        let text = common::run_readme_command(recipe, &server.endpoint(), &dir, &plugins);
        outputs.push(text);
    }

    // Live: from the fragment being produced when it connected to the end
    // of the call, where the next one begins.
    let data = wav(&dir.join("live.wav"));
    let whole = stereo(&live, 0..live.fragments as usize);
    assert!(data.len() >= 2 * 32000, "{} bytes", data.len());
    assert!(whole.ends_with(&data), "the end of the live call, exactly");

    // A minute of the archive: fragments starting at 0.45 s to 59.8 s.
    let ogg = std::fs::read(dir.join("range.opus")).unwrap();
    let last = ogg.windows(4).rposition(|w| w == b"OggS").unwrap();
    assert_eq!(ogg[last + 5] & 0x04, 0x04, "ends with an EOS page");
    let granule = u64::from_le_bytes(ogg[last + 6..last + 14].try_into().unwrap());
    let seconds = 59.0 * archive.fragment_ms() as f64 / 1000.0;
    assert!(
        (granule as f64 / 48000.0 - seconds).abs() < 0.1,
        "{granule} granules for {seconds} s"
    );

    // The whole stored call in one-second pieces.
    let mut joined = Vec::new();
    let millis = archive.fragments * archive.fragment_ms();
    for i in 0.. {
        let path = dir.join(format!("piece-{i:03}.wav"));
        if !path.exists() {
            // Pieces end on buffer boundaries at or before each second.
            assert!(i >= millis.div_ceil(1000), "{i} pieces of {millis} ms");
            break;
        }
        let piece = wav(&path);
        assert!(
            piece.len() <= 32000 + 640,
            "piece {i}: {} bytes",
            piece.len()
        );
        joined.extend(piece);
    }
    let all = stereo(&archive, 0..archive.fragments as usize);
    assert!(joined == all, "the pieces make the call");

    if has_gst_play {
        assert!(
            outputs[3].contains("Reached end of play list"),
            "{}",
            outputs[3]
        );
        assert!(!outputs[3].contains("ERROR"), "{}", outputs[3]);
    }
    for wanted in ["kvs-fragment-number", "kvs-fragment,", "kvs-progress"] {
        assert!(
            outputs[4].contains(wanted),
            "no {wanted} in:\n{}",
            outputs[4]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The live recipe against a server whose first call ended a while ago,
/// run twice in a row: each run gets the end of the call going on, and
/// ends when the next call begins.
#[test]
fn the_live_recipe_gets_a_call_whenever_it_comes() {
    let recipes = common::readme_section_commands("README.md", "From a stream");
    let recipe = recipes
        .iter()
        .find(|r| r.contains("stream-name=demo-call"))
        .expect("the live recipe");
    let call = Call::demo(5);
    let server = common::serve(State::new(Vec::new()));
    server.add_repeated_call("demo-call", &call);
    let (dir, plugins) = common::recipe_dir("late-live");
    // The first call is over when the first run starts.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let whole = stereo(&call, 0..call.fragments as usize);
    for run in 0..2 {
        common::run_readme_command(recipe, &server.endpoint(), &dir, &plugins);
        let data = wav(&dir.join("live.wav"));
        assert!(data.len() >= 32000, "run {run}: {} bytes", data.len());
        assert!(
            whole.ends_with(&data),
            "run {run}: the end of a call, exactly"
        );
        std::fs::remove_file(dir.join("live.wav")).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
