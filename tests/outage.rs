// SPDX-License-Identifier: MPL-2.0
//! Peers that take a connection and never answer, peers that stop in the
//! middle of a body, and outages shorter and longer than the retry limits:
//! kvsgetmediasrc on the real AWS SDK against the local KVS server.

#![cfg(feature = "aws")]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstkvs::server::{State, Stream};
use gstkvs::synth::{Call, Side};

/// A server with one call named "call", live (paced in real time) or stored.
struct Fixture {
    server: common::Server,
    call: Call,
}

impl Fixture {
    fn new(fragments: u64, live: bool) -> Fixture {
        let call = Call {
            fragments,
            ..Call::default()
        };
        let state = State::new(vec![Stream::from_call("call", &call, live)]);
        state.faults.idle_end_ms.store(300, Ordering::SeqCst);
        Fixture {
            server: common::serve(state),
            call,
        }
    }

    fn src(&self, extra: &str) -> String {
        format!(
            "kvsgetmediasrc stream-name=call region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} start-selector=earliest {extra}",
            self.server.endpoint()
        )
    }

    /// Fragments `0..=last` from the archive.
    fn range(&self, last: u64, extra: &str) -> String {
        let at = |i: u64| {
            let ms = self.call.start_ms + i * self.call.fragment_ms() + 450;
            format!("{}.{:03}", ms / 1000, ms % 1000)
        };
        self.src(&format!(
            "start-timestamp={} end-timestamp={} {extra}",
            at(0),
            at(last)
        ))
    }

    /// Pauses the server (it takes requests and answers nothing) after
    /// `after`, for `pause` (None: for good).
    fn pause_later(&self, after: Duration, pause: Option<Duration>) -> std::thread::JoinHandle<()> {
        let state: Arc<State> = self.server.state.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            state.faults.pause(true);
            if let Some(pause) = pause {
                std::thread::sleep(pause);
                state.faults.pause(false);
            }
        })
    }

    fn assert_exact(&self, run: &common::Run) {
        assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
        for side in [Side::Caller, Side::Agent] {
            let pad = common::speaker(run, side.track_name());
            assert!(
                pad.buffers.iter().all(|b| !b.gap),
                "{side:?}: no made-up silence"
            );
            assert!(
                pad.pcm() == self.call.pcm(side),
                "{side:?}: every sample once"
            );
        }
        assert_eq!(run.fragments().len() as u64, self.call.fragments);
    }
}

fn error_of(run: &common::Run) -> &str {
    assert!(!run.eos, "an error, not an end: {:?}", run.pads.keys());
    run.errors.first().map(String::as_str).expect("an error")
}

#[test]
fn a_peer_that_takes_the_connection_and_never_answers_is_an_error_not_a_hang() {
    let f = Fixture::new(4, false);
    f.server.state.faults.pause(true);
    let started = Instant::now();
    let (run, _) = common::source_run(
        &f.src("request-timeout=300 max-retries=2 max-backoff=100"),
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    let error = error_of(&run);
    assert!(
        error.contains("Could not read Kinesis video stream call")
            && error.contains("GetDataEndpoint got no answer within 0.3 s")
            && error.contains("3 attempts in a row failed"),
        "{error}"
    );
    // Three attempts of 0.3 s and two backoffs of at most 0.15 s.
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("live, peer never answers: error after {took:?}: {error}");
}

#[test]
fn getmedia_requests_left_unanswered_are_tried_again_and_nothing_is_lost() {
    let f = Fixture::new(4, false);
    f.server.state.faults.unanswered.store(2, Ordering::SeqCst);
    let (run, _) = common::source_run(
        &f.src("request-timeout=300 idle-timeout=1000"),
        Duration::from_secs(30),
    );
    f.assert_exact(&run);
    assert_eq!(f.server.state.counters.unanswered.load(Ordering::SeqCst), 2);
}

#[test]
fn archive_requests_left_unanswered_are_tried_again_then_are_an_error() {
    let f = Fixture::new(6, false);
    let faults = &f.server.state.faults;
    faults.unanswered.store(2, Ordering::SeqCst);
    let (run, _) = common::source_run(
        &f.range(5, "request-timeout=300 archive-connections=1"),
        Duration::from_secs(30),
    );
    f.assert_exact(&run);
    assert_eq!(f.server.state.counters.unanswered.load(Ordering::SeqCst), 2);

    faults.unanswered.store(1000, Ordering::SeqCst);
    let started = Instant::now();
    let (run, _) = common::source_run(
        &f.range(5, "request-timeout=300 max-retries=2 max-backoff=100"),
        Duration::from_secs(30),
    );
    let error = error_of(&run);
    assert!(
        error.contains("GetMediaForFragmentList got no answer within 0.3 s"),
        "{error}"
    );
    eprintln!(
        "archive, peer never answers: error after {:?}: {error}",
        started.elapsed()
    );
}

/// The peer stops 2.5 s into a live call, for 4 s: longer than
/// idle-timeout and read-timeout, shorter than max-outage. The source must
/// not take the silence for the end of the call.
#[test]
fn a_peer_that_stops_mid_body_for_less_than_max_outage_loses_nothing() {
    let f = Fixture::new(8, true);
    let pause = f.pause_later(Duration::from_millis(2500), Some(Duration::from_secs(4)));
    let (run, src) = common::source_run(
        &f.src(
            "idle-timeout=1000 read-timeout=1000 request-timeout=500 max-backoff=200 \
             max-outage=20000",
        ),
        Duration::from_secs(60),
    );
    pause.join().unwrap();
    f.assert_exact(&run);
    let stats = src.property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("reconnects").unwrap() >= 1, "{stats}");
}

/// The peer stops for good in the middle of a live call: an error that
/// says what failed and for how long, after what came before it.
#[test]
fn a_peer_that_stops_for_longer_than_the_limits_is_an_error() {
    let f = Fixture::new(8, true);
    let pause = f.pause_later(Duration::from_millis(2500), None);
    let started = Instant::now();
    let (run, _) = common::source_run(
        &f.src(
            "idle-timeout=1000 read-timeout=1000 request-timeout=500 max-retries=0 \
             max-backoff=200 max-outage=2000",
        ),
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    let error = error_of(&run).to_string();
    assert!(
        error.contains("got no answer within 0.5 s") && error.contains("attempts in a row failed"),
        "{error}"
    );
    // What came before the stop went out: the first two fragments at least.
    let caller = common::speaker(&run, Side::Caller.track_name()).pcm();
    let per_fragment = f.call.pcm(Side::Caller).len() / 8;
    assert!(caller.len() >= 2 * per_fragment, "{} bytes", caller.len());
    assert!(f.call.pcm(Side::Caller).starts_with(&caller));
    assert!(took < Duration::from_secs(12), "{took:?}");
    eprintln!("live, peer stops for good at 2.5 s: error after {took:?}: {error}");
    pause.join().unwrap();
}

/// kvs-record against the fixture, as a child process; its output and how
/// long it took.
fn record(f: &Fixture, out: &std::path::Path, extra: &[&str]) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kvs-record"))
        .args([
            "--stream",
            "call",
            "--region",
            "us-east-1",
            "--start",
            "earliest",
            "-q",
        ])
        .args(["--endpoint-uri", &f.server.endpoint()])
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn stereo(call: &Call) -> Vec<u8> {
    let (l, r) = (
        call.pcm_with_silence(Side::Caller),
        call.pcm_with_silence(Side::Agent),
    );
    l.chunks(2)
        .zip(r.chunks(2))
        .flat_map(|(a, b)| [a, b].concat())
        .collect()
}

fn temp_wav(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kvs-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The peer stops for 8 s, longer than --idle-timeout and kvs-record's
/// 5 s read and request deadlines: the recording rides it out, complete.
#[test]
fn kvs_record_rides_out_an_outage_shorter_than_max_outage() {
    let f = Fixture::new(12, true);
    let out = temp_wav("short-outage.wav");
    let pause = f.pause_later(Duration::from_millis(2500), Some(Duration::from_secs(8)));
    let (run, took) = record(&f, &out, &["--idle-timeout", "2", "--max-outage", "30"]);
    pause.join().unwrap();
    let text =
        String::from_utf8_lossy(&run.stderr).to_string() + &String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{text}");
    let wav = std::fs::read(&out).unwrap();
    assert!(
        common::wav_data(&wav) == stereo(&f.call),
        "every sample once\n{text}"
    );
    eprintln!("kvs-record, 8 s outage: exit 0 after {took:?}, the whole call kept");
}

/// The peer stops for good: exit status 1, a line naming the cause, and a
/// finalized WAV holding what came before, of which it says how much.
/// (kvs-record makes at least four attempts of 5 s each, and keeps up
/// --max-outage S after the first failure.)
#[test]
fn kvs_record_fails_after_max_outage_and_says_what_it_kept() {
    let f = Fixture::new(12, true);
    let out = temp_wav("long-outage.wav");
    let pause = f.pause_later(Duration::from_millis(2500), None);
    let (run, took) = record(&f, &out, &["--idle-timeout", "2", "--max-outage", "3"]);
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("got no answer within 5.0 s"), "{stderr}");
    let kept = stderr
        .split("kvs-record: the ")
        .nth(1)
        .and_then(|rest| {
            rest.split(" s of audio recorded before the error are in")
                .next()
        })
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("how much was kept: {stderr}"));
    let wav = std::fs::read(&out).unwrap();
    let riff = u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff + 8, wav.len(), "a finalized WAV");
    let data = common::wav_data(&wav);
    assert!(!data.is_empty() && stereo(&f.call).starts_with(&data));
    let seconds = data.len() as f64 / 32_000.0;
    assert!(
        (seconds - kept).abs() < 0.1,
        "{seconds} s in the file, {kept} s said"
    );
    eprintln!("kvs-record, peer stopped for good: exit 1 after {took:?}, {kept} s kept");
    pause.join().unwrap();
}
