// SPDX-License-Identifier: MPL-2.0
//! Against real Kinesis Video Streams, on demand: with
//! `GSTKVS_AWS_TEST_REGION` set (and the SDK's usual credentials), it
//! creates a stream, puts 30 s of a two-track Connect-like call with
//! kvsputmediasink (`kvs-put --demo`), reads it back live and as a range
//! with `kvs-record`, compares both bit for bit, and deletes the stream;
//! then a camera stream the same way through kvsdemux. The permissions it
//! needs are in `deploy/iam-policy-tests.json`. Without the variable it says
//! it is skipped. `GSTKVS_AWS_TEST_ENDPOINT=http://127.0.0.1:PORT` runs it
//! against `kvs-local-server` instead, as a rehearsal.
//!
//! ```sh
//! GSTKVS_AWS_TEST_REGION=us-east-1 cargo test --release --test real_aws -- --nocapture
//! ```

#[path = "../../gst-plugin-kvs/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesisvideo::Client;
use gst::prelude::*;
use kvs_local_server::synth::{Call, Side};

struct Aws {
    region: String,
    endpoint: Option<String>,
    rt: tokio::runtime::Runtime,
    client: Client,
}

fn aws() -> Option<Aws> {
    let region = std::env::var("GSTKVS_AWS_TEST_REGION").ok();
    let Some(region) = region.filter(|r| !r.is_empty()) else {
        eprintln!(
            "SKIPPED: set GSTKVS_AWS_TEST_REGION (and AWS credentials allowing \
             deploy/iam-policy-tests.json) to run this against real Kinesis Video Streams"
        );
        return None;
    };
    let endpoint = std::env::var("GSTKVS_AWS_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The SDK's default credential chain, over rustls as the plugin's own.
    let client = rt.block_on(async {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_types::region::Region::new(region.clone()));
        if let Some(e) = &endpoint {
            loader = loader.endpoint_url(e);
        }
        Client::new(&loader.load().await)
    });
    Some(Aws {
        region,
        endpoint,
        rt,
        client,
    })
}

/// A stream made for the test; deleted when dropped, whatever happened.
struct TestStream<'a> {
    aws: &'a Aws,
    name: String,
    arn: String,
}

impl Aws {
    fn create(&self, kind: &str, media_type: &str) -> TestStream<'_> {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!("gstkvs-test-{kind}-{}-{epoch}", std::process::id());
        let arn = self.rt.block_on(async {
            let out = self
                .client
                .create_stream()
                .stream_name(&name)
                .media_type(media_type)
                .data_retention_in_hours(1)
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateStream {name}: {e:?}"));
            // A new stream is CREATING for a few seconds.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let info = self
                    .client
                    .describe_stream()
                    .stream_name(&name)
                    .send()
                    .await
                    .unwrap()
                    .stream_info
                    .unwrap();
                if info.status.as_ref().is_some_and(|s| s.as_str() == "ACTIVE") {
                    break;
                }
                assert!(Instant::now() < deadline, "{name} did not become ACTIVE");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            out.stream_arn.unwrap()
        });
        eprintln!("created {arn}");
        TestStream {
            aws: self,
            name,
            arn,
        }
    }

    /// One of the tools, with the region and, for a rehearsal, the endpoint.
    fn tool(&self, exe: &str) -> Command {
        let mut cmd = Command::new(exe);
        cmd.args(["--region", &self.region]);
        if let Some(e) = &self.endpoint {
            cmd.args(["--endpoint-uri", e]);
        }
        cmd
    }

    fn source(&self, stream: &str, extra: &str) -> String {
        let endpoint = self
            .endpoint
            .as_ref()
            .map_or(String::new(), |e| format!("endpoint-uri={e}"));
        format!(
            "kvsgetmediasrc stream-name={stream} region={} {endpoint} {extra}",
            self.region
        )
    }
}

impl Drop for TestStream<'_> {
    fn drop(&mut self) {
        let deleted = self
            .aws
            .rt
            .block_on(self.aws.client.delete_stream().stream_arn(&self.arn).send());
        match deleted {
            Ok(_) => eprintln!("deleted {}", self.arn),
            Err(e) => eprintln!("could not delete {}: {e:?}", self.arn),
        }
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait(child: Child, what: &str) {
    check(&child.wait_with_output().unwrap(), what);
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvs-real-aws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn epoch_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn assert_call(wav: &Path, call: &Call, what: &str) {
    let data = common::wav_data(&std::fs::read(wav).unwrap());
    let (left, right) = common::deinterleave(&data);
    assert!(
        left == call.pcm_with_silence(Side::Caller),
        "{what}: the caller, bit-exact"
    );
    assert!(
        right == call.pcm_with_silence(Side::Agent),
        "{what}: the agent, bit-exact"
    );
}

#[test]
fn a_connect_like_call_put_and_read_back_live_and_as_a_range() {
    let Some(aws) = aws() else { return };
    let stream = aws.create("call", "audio/L16");
    let seconds = 30;
    let (live, range) = (temp("live.wav"), temp("range.wav"));
    let record = env!("CARGO_BIN_EXE_kvs-record");
    // The live reader first, at NOW; then the put, in real time.
    let reader = aws
        .tool(record)
        .args([
            "--stream",
            &stream.name,
            "--start",
            "now",
            "--idle-timeout",
            "15",
            "-q",
        ])
        .arg("--out")
        .arg(&live)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before = epoch_s() - 1.0;
    let put = aws
        .tool(env!("CARGO_BIN_EXE_kvs-put"))
        .args([
            "--demo",
            "--demo-seconds",
            &seconds.to_string(),
            "--realtime",
            "-q",
        ])
        .args(["--stream", &stream.name])
        .output()
        .unwrap();
    check(&put, "kvs-put --demo");
    let after = epoch_s() + 1.0;
    wait(reader, "kvs-record live");
    let call = Call::demo(seconds);
    assert_call(&live, &call, "live");
    // The same seconds from the archive, by producer time.
    let out = aws
        .tool(record)
        .args(["--stream", &stream.name, "-q"])
        .args(["--start", &format!("producer-timestamp:{before:.3}")])
        .args(["--end", &format!("{after:.3}")])
        .arg("--out")
        .arg(&range)
        .output()
        .unwrap();
    check(&out, "kvs-record range");
    assert_call(&range, &call, "range");
    eprintln!("{seconds} s put, read back live and as a range: bit-exact");
}

/// The H.264 access units of a file, as qtdemux gives them.
fn frames_of(mp4: &Path) -> Vec<(Vec<u8>, bool)> {
    let data = std::fs::read(mp4).unwrap();
    let middle = "qtdemux ! h264parse ! video/x-h264,stream-format=avc,alignment=au";
    common::pull_as("video/quicktime", &data, middle)
        .into_iter()
        .map(|o| (o.data, o.delta))
        .collect()
}

#[test]
fn a_camera_put_and_read_back_through_kvsdemux() {
    let Some(aws) = aws() else { return };
    common::init();
    if !common::have(&["x264enc", "mp4mux", "qtdemux"]) {
        eprintln!(
            "SKIPPED: x264enc, mp4mux or qtdemux is missing (gstreamer1.0-plugins-ugly, -good)"
        );
        return;
    }
    let stream = aws.create("camera", "video/h264");
    let mp4 = temp("camera.mp4");
    let made = gst::parse::launch(&format!(
        "videotestsrc num-buffers=500 pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 ! \
         x264enc key-int-max=50 speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
        mp4.display()
    ))
    .unwrap();
    made.set_state(gst::State::Playing).unwrap();
    made.bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos])
        .expect("the clip is written");
    made.set_state(gst::State::Null).unwrap();
    let expected = frames_of(&mp4);
    let before = epoch_s() - 1.0;
    let put = aws
        .tool(env!("CARGO_BIN_EXE_kvs-put"))
        .arg(&mp4)
        // At the clip's own pace: producer times stay at the wall clock's.
        .args(["--stream", &stream.name, "--realtime", "-q"])
        .output()
        .unwrap();
    check(&put, "kvs-put camera.mp4");
    let after = epoch_s() + 1.0;
    let (run, _) = common::source_run_with(
        &aws.source(
            &stream.name,
            &format!(
                "start-timestamp={before:.3} end-timestamp={after:.3} timestamp-type=producer"
            ),
        ),
        "kvsdemux",
        Duration::from_secs(120),
    );
    assert!(run.eos, "{:?}", run.errors);
    let video = run.pad("video_0");
    let got: Vec<(Vec<u8>, bool)> = video
        .buffers
        .iter()
        .map(|b| (b.data.clone(), b.delta))
        .collect();
    assert_eq!(got.len(), expected.len(), "every frame once");
    assert!(
        got == expected,
        "each frame and its key flag, byte for byte"
    );
    eprintln!(
        "{} camera frames put and read back through kvsdemux: identical",
        got.len()
    );
}
