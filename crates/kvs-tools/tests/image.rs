// SPDX-License-Identifier: MPL-2.0
//! The worker's container image, built and run on this machine with no
//! registry: a Debian 12 base made with mmdebstrap and imported with
//! podman, deploy/Dockerfile's runtime stage built with buildah (chroot
//! isolation) around the release binary, then `kvs-record serve` run inside
//! it against moto and the local KVS server, recording one call to S3.
//!
//! Opt-in, as it needs root, buildah, podman, mmdebstrap and Debian's
//! mirror: `GSTKVS_IMAGE_TEST=1 cargo test --release --features serve --test
//! image` (`.ci/run` does). Without the variable it says it is skipped.

#![cfg(feature = "serve")]

#[path = "../../gst-plugin-kvs/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// The image test uses the queue and bucket, not every helper.
#[allow(dead_code)]
#[path = "common/moto.rs"]
mod moto;

use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{State, Stream};
use moto::{Aws, BUCKET};

const BASE: &str = "localhost/kvs-debian-base:bookworm";
const IMAGE: &str = "localhost/kvs-record:test";
const SLIM: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
];

/// Runs a command; its stdout, or a panic with everything it said.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Debian 12 base, made once and kept in podman's store.
fn base_image(work: &Path) {
    let exists = Command::new("podman")
        .args(["image", "exists", BASE])
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return;
    }
    let tar = work.join("bookworm.tar");
    let started = Instant::now();
    // As debian:bookworm-slim is made: no documentation, manuals or
    // locales, and no package lists (the Dockerfile fetches them).
    run(Command::new("mmdebstrap")
        .args(["--variant=minbase", "--quiet"])
        .args(SLIM.iter().map(|p| format!("--dpkgopt=path-exclude={p}")))
        .arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*")
        .arg("bookworm")
        .arg(&tar));
    run(Command::new("podman").arg("import").arg(&tar).arg(BASE));
    eprintln!("base image made with mmdebstrap in {:?}", started.elapsed());
    std::fs::remove_file(&tar).ok();
}

/// Builds the runtime stage around the binary; returns the image's size
/// in bytes.
fn build_image(work: &Path, binary: &Path) -> u64 {
    let context = work.join("context");
    std::fs::create_dir_all(context.join("target/release")).unwrap();
    // Stripped, as a release pipeline ships it (the line tables are for
    // backtraces on a developer's machine).
    run(Command::new("strip")
        .arg("-o")
        .arg(context.join("target/release/kvs-record"))
        .arg(binary));
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/Dockerfile");
    let started = Instant::now();
    run(Command::new("buildah")
        .args(["bud", "--isolation", "chroot", "--quiet", "--layers=false"])
        .args(["--build-arg", &format!("BASE={BASE}")])
        .args(["--build-arg", "BINARY=prebuilt"])
        .arg("-f")
        .arg(&dockerfile)
        .args(["-t", IMAGE])
        .arg(&context));
    eprintln!("image built with buildah in {:?}", started.elapsed());
    let size =
        run(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", IMAGE]));
    size.trim().parse().unwrap()
}

/// A running `buildah run` of the image's worker; killed when dropped.
struct InImage {
    container: String,
    child: std::process::Child,
}

impl Drop for InImage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("buildah")
            .args(["rm", &self.container])
            .output();
    }
}

fn in_image(aws: &Aws, kvs: &str, log: &Path) -> InImage {
    let container = run(Command::new("buildah").args(["from", "--quiet", IMAGE]))
        .trim()
        .to_string();
    let env = [
        format!("KVS_RECORD_QUEUE_URL={}", aws.queue),
        format!("KVS_RECORD_BUCKET={BUCKET}"),
        format!("AWS_ENDPOINT_URL_SQS={}", aws.moto.endpoint),
        format!("AWS_ENDPOINT_URL_S3={}", aws.moto.endpoint),
        format!("KVS_RECORD_ENDPOINT_URI={kvs}"),
        "KVS_RECORD_LISTEN=127.0.0.1:0".into(),
        "KVS_RECORD_IDLE_TIMEOUT=1".into(),
        "AWS_REGION=us-east-1".into(),
        "AWS_ACCESS_KEY_ID=AKIDTEST".into(),
        "AWS_SECRET_ACCESS_KEY=test-secret".into(),
        "AWS_EC2_METADATA_DISABLED=true".into(),
    ];
    let mut cmd = Command::new("buildah");
    cmd.args([
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--user",
        "10001",
    ]);
    for e in &env {
        cmd.args(["--env", e]);
    }
    let child = cmd
        .args([&container, "--", "kvs-record", "serve"])
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    InImage { container, child }
}

#[test]
fn the_worker_image_is_built_here_and_records_a_call_to_s3() {
    if std::env::var_os("GSTKVS_IMAGE_TEST").is_none() {
        eprintln!(
            "SKIPPED: set GSTKVS_IMAGE_TEST=1 to build and run the worker's image here \
             (root, buildah, podman, mmdebstrap; .ci/run does)"
        );
        return;
    }
    for tool in ["buildah", "podman", "mmdebstrap"] {
        assert!(
            have(tool),
            "{tool} is missing: apt-get install buildah podman mmdebstrap"
        );
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_kvs-record"));
    let work = std::env::temp_dir().join(format!("kvs-image-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    base_image(&work);
    let size = build_image(&work, &binary);
    let stripped = std::fs::metadata(work.join("context/target/release/kvs-record")).unwrap();
    let base =
        run(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", BASE]));
    eprintln!(
        "image {IMAGE}: {:.1} MB (the Debian 12 base {:.1} MB, the stripped binary {:.1} MB)",
        size as f64 / 1e6,
        base.trim().parse::<f64>().unwrap() / 1e6,
        stripped.len() as f64 / 1e6
    );

    let aws = Aws::start(3);
    let call = Call {
        fragments: 6,
        contact_id: "in-the-image".into(),
        ..Call::default()
    };
    common::init();
    let kvs = common::serve(State::new(vec![Stream::from_call(
        &call.contact_id,
        &call,
        true,
    )]));
    aws.send(&format!(
        r#"{{"ContactId": "{id}", "MediaStreams": {{"Customer": {{"Audio": {{
            "StreamARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/{id}/1700000000000",
            "StartTimestamp": "{start}"}}}}}}}}"#,
        id = call.contact_id,
        start = call.start_ms
    ));
    let log = work.join("worker.log");
    let started = Instant::now();
    let worker = in_image(&aws, &kvs.endpoint(), &log);
    let key = format!("{}.wav", call.contact_id);
    let wav = loop {
        if let Some((wav, _)) = aws.object(&key) {
            break wav;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no {key} after 120 s; the worker said:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "the call's WAV was in S3 {:?} after the worker started",
        started.elapsed()
    );
    drop(worker);
    let (left, right) = common::deinterleave(&common::wav_data(&wav));
    assert!(
        left == call.pcm_with_silence(Side::Caller),
        "the caller, bit-exact"
    );
    assert!(
        right == call.pcm_with_silence(Side::Agent),
        "the agent, bit-exact"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("\"msg\":\"call recorded\""), "{said}");
    let _ = Command::new("buildah").args(["rmi", IMAGE]).output();
    std::fs::remove_dir_all(&work).ok();
}
