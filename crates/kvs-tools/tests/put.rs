// SPDX-License-Identifier: MPL-2.0
//! kvs-put as a child process against the local KVS server: the demo call
//! and media files go in, and come back through the plugin.

#[path = "../../gst-plugin-kvs/tests/common/mod.rs"]
mod common;

use common::{put_server as server, read_back, stored};
use gst::prelude::*;
use kvs_local_server::synth::{Call, Side};

fn kvs_put(server: &common::Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvs-put"))
        .args(args)
        .args([
            "--endpoint-uri",
            &server.endpoint(),
            "--region",
            "us-east-1",
            "-q",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn kvs_put_puts_the_demo_call_and_files() {
    common::init();
    let server = server(&["demo", "file"]);
    let (ok, out, err) = kvs_put(
        &server,
        &["--demo", "--demo-seconds", "6", "--stream", "demo"],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("into stream demo: 3 fragments acknowledged"),
        "{out}"
    );
    let back = read_back(&server, "demo");
    let call = Call::demo(6);
    assert!(
        back.pad("audio_0").pcm() == call.pcm_with_silence(Side::Caller),
        "caller"
    );
    assert!(
        back.pad("audio_1").pcm() == call.pcm_with_silence(Side::Agent),
        "agent"
    );
    assert_eq!(
        back.pad("audio_0").title().as_deref(),
        Some("AUDIO_FROM_CUSTOMER")
    );
    // A file with H.264 and AAC goes as it is: four key frames, four fragments.
    if common::have(&["x264enc", "voaacenc", "mp4mux"]) {
        let dir = std::env::temp_dir().join(format!("kvs-put-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mp4 = dir.join("clip.mp4");
        let made = gst::parse::launch(&format!(
            "videotestsrc num-buffers=100 ! video/x-raw,width=320,height=240,framerate=25/1 ! \
             x264enc key-int-max=25 speed-preset=ultrafast ! h264parse ! mp4mux name=m ! \
             filesink location={} audiotestsrc num-buffers=100 ! voaacenc ! aacparse ! m.",
            mp4.display()
        ))
        .unwrap();
        made.set_state(gst::State::Playing).unwrap();
        let bus = made.bus().unwrap();
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos])
            .expect("the clip is written");
        made.set_state(gst::State::Null).unwrap();
        let (ok, out, err) = kvs_put(&server, &[mp4.to_str().unwrap(), "--stream", "file"]);
        assert!(ok, "{out}\n{err}");
        assert!(out.contains("4 fragments acknowledged"), "{out}");
        let stored = stored(&server, "file");
        assert_eq!(stored.len(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (ok, _, err) = kvs_put(&server, &["/no/such.mkv", "--stream", "file"]);
    assert!(!ok && err.contains("no such file"), "{err}");
}
