// SPDX-License-Identifier: MPL-2.0
//! The embedding examples, run against the local KVS server: the Rust app
//! (`examples/app.rs`) and the Python one (`examples/python/record.py`),
//! each checked on the WAV it writes.

#![cfg(feature = "aws")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kvs_local_server::synth::camera::Camera;
use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{State, Stream};

/// target/debug (or release), where cargo put this test's siblings.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

struct Fixture {
    server: common::Server,
    call: Call,
    dir: PathBuf,
}

impl Fixture {
    /// Track 1 is the agent, who is silent from 3 s to 6 s.
    fn new(name: &str) -> Fixture {
        let call = Call {
            fragments: 7,
            swapped: true,
            silence: vec![(Side::Agent, 3000..6000)],
            ..Call::default()
        };
        let state = State::new(vec![Stream::from_call("call", &call, false)]);
        let server = common::serve(state);
        let dir = std::env::temp_dir().join(format!("kvs-embed-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Fixture { server, call, dir }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir)
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    fn check(&self, out: &Output, wav: &Path) {
        let log = format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{log}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for i in 0..self.call.fragments {
            let line = format!("kvs-fragment {}", self.call.fragment_number(i));
            assert!(stdout.contains(&line), "{line} missing:\n{log}");
        }
        let data = common::wav_data(&std::fs::read(wav).unwrap());
        let (left, right) = common::deinterleave(&data);
        assert!(left == self.call.pcm(Side::Caller), "caller left\n{log}");
        assert!(
            right == self.call.pcm_with_silence(Side::Agent),
            "agent right\n{log}"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[test]
fn rust_app_records_and_prints_fragments() {
    let f = Fixture::new("rust");
    let app = target_dir().join("examples/app");
    assert!(
        app.exists(),
        "{} is missing: cargo test builds the examples",
        app.display()
    );
    let out = f
        .command(&app)
        .args(["--stream", "call", "--region", "us-east-1"])
        .args(["--endpoint-uri", &f.server.endpoint()])
        .output()
        .unwrap();
    f.check(&out, &f.dir.join("app-call.wav"));
}

#[test]
fn python_example_hands_one_second_pieces_to_its_callback() {
    let Some(python) = common::python_with_gst() else {
        common::missing("python3 with PyGObject and GStreamer (python3-gst-1.0)");
        return;
    };
    let f = Fixture::new("python");
    // The plugin as cargo test built it, alone in a folder of its own.
    let plugins = f.dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let lib = target_dir().join("deps/libgstkvs.so");
    std::fs::copy(&lib, plugins.join("libgstkvs.so"))
        .unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/record.py");
    let out = f
        .command(python)
        .arg(&script)
        .args([
            "--stream",
            "call",
            "--region",
            "us-east-1",
            "--start",
            "earliest",
        ])
        .args([
            "--idle-timeout",
            "1000",
            "--endpoint-uri",
            &f.server.endpoint(),
        ])
        .args(["--out", "py.wav"])
        .env("GST_PLUGIN_PATH", &plugins)
        .env("GST_REGISTRY", f.dir.join("registry.bin"))
        .output()
        .unwrap();
    f.check(&out, &f.dir.join("py.wav"));
    // 7 fragments of 1.024 s: seven whole seconds, then the rest.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pieces: Vec<&str> = stdout.lines().filter(|l| l.starts_with("piece ")).collect();
    assert_eq!(pieces.len(), 8, "{stdout}");
    assert!(
        pieces[..7].iter().all(|l| l.ends_with(": 1.000 s")),
        "{stdout}"
    );
    assert!(pieces[7].ends_with(": 0.168 s"), "{stdout}");
    assert!(
        stdout.contains("audio_1: AUDIO_FROM_CUSTOMER -> left"),
        "{stdout}"
    );
}

/// A server with live synthetic cameras, 320x180, `seconds` long.
fn cameras(names: &[&str], seconds: u32) -> Option<common::Server> {
    common::init();
    if gst::ElementFactory::find("x264enc").is_none() {
        common::missing("x264enc (gstreamer1.0-plugins-ugly)");
        return None;
    }
    let mut camera = Camera {
        width: 320,
        height: 180,
        fragments: seconds / 2,
        encoded_fragments: 2,
        ..Camera::default()
    };
    let enc = camera.encode().unwrap();
    camera.start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let streams = names
        .iter()
        .map(|n| Stream::from_camera(n, &camera, &enc, true))
        .collect();
    Some(common::serve(State::new(streams)))
}

#[test]
fn rust_cameras_example_reads_three_cameras_in_one_process() {
    let names = ["cam-1", "cam-2", "cam-3"];
    let Some(server) = cameras(&names, 10) else {
        return;
    };
    let app = target_dir().join("examples/cameras");
    let out = Command::new(&app)
        .args(["--seconds", "4", "--every", "4", "--region", "us-east-1"])
        .args(["--endpoint-uri", &server.endpoint()])
        .args(names)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in names {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("camera {name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"));
        // 4 s of a 25 fps camera, from the fragment it joined.
        let frames: u64 = line.split(' ').nth(2).unwrap().parse().unwrap();
        assert!(frames >= 50, "{line}");
        assert!(
            line.contains(" fps, latency median ") && line.ends_with("reconnects 0"),
            "{line}"
        );
    }
}

#[test]
fn python_frames_example_yields_rgb_arrays_and_drops_for_a_slow_consumer() {
    let Some(python) = common::python_with_gst() else {
        return common::missing("python3 with PyGObject and GStreamer (python3-gst-1.0)");
    };
    let numpy = Command::new(python).args(["-c", "import numpy"]).output();
    if !numpy.is_ok_and(|o| o.status.success()) {
        return common::missing("numpy for Debian's python3 (python3-numpy)");
    }
    let Some(server) = cameras(&["camera"], 12) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kvs-frames-{}", std::process::id()));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        target_dir().join("deps/libgstkvs.so"),
        plugins.join("libgstkvs.so"),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/frames.py");
    let run = |extra: &[&str]| {
        let out = Command::new(python)
            .arg(&script)
            .args(["--stream", "camera", "--region", "us-east-1"])
            .args(["--endpoint-uri", &server.endpoint()])
            .args(extra)
            .env("GST_PLUGIN_PATH", &plugins)
            .env("GST_REGISTRY", dir.join("registry.bin"))
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let pts = |stdout: &str| -> Vec<f64> {
        stdout
            .lines()
            .filter(|l| l.starts_with("frame "))
            .map(|l| {
                assert!(l.contains(": 320x180 rgb, "), "{l}");
                let p = l.split("pts ").nth(1).unwrap();
                p.split(' ').next().unwrap().parse().unwrap()
            })
            .collect()
    };
    // Frames in order, each with its producer time and latency. The
    // catch-up burst at the start is thinned; at the live edge a quick
    // consumer gets every frame, 40 ms apart.
    let stdout = run(&["--frames", "40"]);
    let all = pts(&stdout);
    assert_eq!(all.len(), 40, "{stdout}");
    let mut steps: Vec<f64> = all.windows(2).map(|w| w[1] - w[0]).collect();
    let frames = |s: f64| (s / 0.04).round();
    assert!(
        steps
            .iter()
            .all(|&s| frames(s) >= 1.0 && (s - 0.04 * frames(s)).abs() < 1e-6),
        "{all:?}"
    );
    steps.sort_by(f64::total_cmp);
    assert!((steps[steps.len() / 2] - 0.04).abs() < 1e-6, "{all:?}");
    assert!(stdout.contains("frames 40, latency median "), "{stdout}");
    assert!(!stdout.contains("latency unknown"), "{stdout}");
    // Spending 300 ms on each frame: the newest each time, older ones dropped.
    let slow = pts(&run(&["--frames", "6", "--slow", "300"]));
    assert!(slow.windows(2).all(|w| w[1] - w[0] >= 0.079), "{slow:?}");
    std::fs::remove_dir_all(&dir).ok();
}
