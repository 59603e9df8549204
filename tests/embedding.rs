// SPDX-License-Identifier: MPL-2.0
//! The embedding examples, run against the local KVS server: the Rust app
//! (`examples/app.rs`) and the Python one (`examples/python/record.py`),
//! each checked on the WAV it writes.

#![cfg(feature = "aws")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gstkvs::server::{State, Stream};
use gstkvs::synth::{Call, Side};

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
        .args(["call", "us-east-1", &f.server.endpoint()])
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
