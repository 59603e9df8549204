// SPDX-License-Identifier: MPL-2.0
//! kvsgetmediasrc on the real AWS SDK against the project's local KVS server,
//! with kvsaudiodemux behind it.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst::prelude::*;
use kvs_local_server::synth::{Call, Layout, Side};
use kvs_local_server::{State, Stream};

/// A server on 127.0.0.1 with one stored call named "call".
struct Fixture {
    server: common::Server,
    call: Call,
}

impl Fixture {
    fn new(fragments: u64, live: bool) -> Fixture {
        Fixture::with_layout(fragments, live, Layout::Real)
    }

    fn with_layout(fragments: u64, live: bool, layout: Layout) -> Fixture {
        let call = Call {
            fragments,
            layout,
            ..Call::default()
        };
        let stream = if live {
            Stream::from_call("call", &call, true)
        } else {
            Stream::from_mkv("call", &call.bytes())
        };
        let state = State::new(vec![stream]);
        state.faults.idle_end_ms.store(300, Ordering::SeqCst);
        let server = common::serve(state);
        Fixture { server, call }
    }

    fn src(&self, extra: &str) -> String {
        format!(
            "kvsgetmediasrc stream-name=call region=us-east-1 access-key=AKIDTEST secret-access-key=test-secret \
             endpoint-uri={} start-selector=earliest idle-timeout=1000 {extra}",
            self.server.endpoint()
        )
    }

    fn run(&self, extra: &str) -> (common::Run, gst::Structure) {
        let (run, src) = common::source_run(&self.src(extra), Duration::from_secs(60));
        (run, src.property::<gst::Structure>("stats"))
    }

    fn assert_exact(&self, run: &common::Run) {
        assert!(run.eos, "{:?}", run.errors);
        for (pad, side) in [("audio_0", Side::Caller), ("audio_1", Side::Agent)] {
            let log = run.pad(pad);
            assert!(
                log.buffers.iter().all(|b| !b.gap),
                "{pad}: no made-up silence"
            );
            assert_eq!(log.pcm(), self.call.pcm(side), "{pad}");
        }
    }
}

#[test]
fn getmedia_to_demux_is_bit_exact() {
    // Tags before the Cluster too, though real Connect never does that.
    let f = Fixture::with_layout(3, false, Layout::TagsFirst);
    f.assert_exact(&f.run("").0);
    let f = Fixture::new(8, false);
    let (run, stats) = f.run("");
    f.assert_exact(&run);
    assert_eq!(run.fragments().len(), 8);
    assert_eq!(stats.get::<u64>("fragments").unwrap(), 8);
    assert_eq!(
        stats.get::<&str>("continuation-token").unwrap(),
        f.call.continuation_token(7)
    );
    assert_eq!(
        f.server
            .state
            .counters
            .get_data_endpoint
            .load(Ordering::SeqCst),
        1
    );
}

/// Temporary credentials: the server signs again with the session token the
/// request carries, so a token left out of the signature would be refused.
#[test]
fn temporary_credentials_are_signed() {
    let f = Fixture::new(2, false);
    let (run, _) = f.run("session-token=FwoGZXIvYXdzEXAMPLETOKEN");
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    f.assert_exact(&run);
}

#[test]
fn resume_torture_fifty_random_cuts() {
    let f = Fixture::new(20, false);
    let faults = &f.server.state.faults;
    faults.cut_max.store(50_000, Ordering::SeqCst);
    faults.cuts.store(50, Ordering::SeqCst);
    // Cuts come faster than KVS's 5 GetMedia calls a second allow, so give
    // the run time between complete fragments.
    let (run, stats) = f.run("idle-timeout=5000");
    f.assert_exact(&run);
    assert_eq!(f.server.state.counters.cut.load(Ordering::SeqCst), 50);
    assert!(stats.get::<u64>("reconnects").unwrap() >= 50, "{stats}");
    // Bytes of fragments cut in the middle arrived, and were sent again.
    let total = f.call.bytes().len() as u64;
    assert!(
        stats.get::<u64>("bytes").unwrap() > total + 100_000,
        "{stats}"
    );
    // Every fragment once in the demuxer's messages, in order.
    let numbers: Vec<String> = run
        .fragments()
        .iter()
        .map(|s| s.get::<&str>("fragment-number").unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| f.call.fragment_number(i)).collect();
    assert_eq!(numbers, expected);
}

#[test]
fn throttling_recovers() {
    let f = Fixture::new(4, false);
    f.server.state.faults.throttle.store(3, Ordering::SeqCst);
    // Three backoffs with jitter take up to 1.05 s: more than the fixture's
    // 1 s idle-timeout, which also bounds the wait for a first connection.
    let (run, stats) = f.run("idle-timeout=5000");
    f.assert_exact(&run);
    assert_eq!(stats.get::<u64>("throttles").unwrap(), 3);
    assert_eq!(f.server.state.counters.throttled.load(Ordering::SeqCst), 3);
}

#[test]
fn a_stalled_body_is_dropped_by_the_watchdog() {
    let f = Fixture::new(4, false);
    let faults = &f.server.state.faults;
    faults.stall_after.store(40_000, Ordering::SeqCst);
    faults.stall_ms.store(20_000, Ordering::SeqCst);
    let (run, stats) = f.run("read-timeout=500");
    f.assert_exact(&run);
    assert!(stats.get::<u64>("reconnects").unwrap() >= 1);
}

#[test]
fn errors_name_the_stream_and_what_to_do() {
    let f = Fixture::new(2, false);
    let (run, _) = common::source_run(
        &f.src("").replace("stream-name=call", "stream-name=nope"),
        Duration::from_secs(30),
    );
    assert!(
        run.errors[0].contains("Kinesis video stream nope was not found in region us-east-1"),
        "{:?}",
        run.errors
    );

    let (run, _) = common::source_run(
        &f.src("").replace("AKIDTEST", "AKIDDENIED"),
        Duration::from_secs(30),
    );
    assert!(
        run.errors[0].contains(
            "Could not read Kinesis video stream call in region us-east-1: access denied |"
        ),
        "{:?}",
        run.errors
    );
    assert!(
        run.errors[0].contains("kinesisvideo:GetMedia"),
        "{:?}",
        run.errors
    );

    // The server knows AKIDTEST's secret and signs each request again.
    let (run, _) = common::source_run(
        &f.src("")
            .replace("secret-access-key=test-secret", "secret-access-key=wrong"),
        Duration::from_secs(30),
    );
    assert!(
        run.errors[0].contains(
            "Could not read Kinesis video stream call in region us-east-1: signature rejected"
        ) && run.errors[0].contains("InvalidSignatureException")
            && run.errors[0].contains("does not match the signature you provided"),
        "{:?}",
        run.errors
    );

    let (run, _) = common::source_run(
        &f.src("start-selector=fragment-number"),
        Duration::from_secs(30),
    );
    assert!(
        run.errors[0].contains("start-selector=fragment-number needs the fragment-number property"),
        "{:?}",
        run.errors
    );

    let bad_time = "start-selector=server-timestamp start-timestamp=yesterday";
    let (run, _) = common::source_run(&f.src(bad_time), Duration::from_secs(30));
    assert!(
        run.errors[0].contains("neither RFC 3339"),
        "{:?}",
        run.errors
    );
}

#[test]
fn start_selectors() {
    let f = Fixture::new(6, false);
    let after = format!(
        "start-selector=fragment-number fragment-number={}",
        f.call.fragment_number(2)
    );
    let (run, _) = f.run(&after);
    assert_eq!(
        run.fragments()[0].get::<&str>("fragment-number").unwrap(),
        f.call.fragment_number(3)
    );
    let at = format!(
        "start-selector=producer-timestamp start-timestamp={}",
        (f.call.start_ms + 4100) / 1000
    );
    let (run, _) = f.run(&at);
    assert_eq!(
        run.fragments()[0].get::<&str>("fragment-number").unwrap(),
        f.call.fragment_number(3)
    );
    let token = format!(
        "start-selector=continuation-token continuation-token={}",
        f.call.continuation_token(4)
    );
    let (run, _) = f.run(&token);
    assert_eq!(run.fragments().len(), 1);
    assert_eq!(
        run.pad("audio_0").pcm(),
        f.call.pcm(Side::Caller)[5 * 16 * 1024..]
    );
}

#[test]
fn in_band_error_tags_reach_the_bus() {
    let f = Fixture::new(4, false);
    f.server.state.faults.error_at.store(2, Ordering::SeqCst);
    let (run, _) = f.run("");
    assert!(
        run.errors[0].contains("5000") && run.errors[0].contains("internal error"),
        "{:?}",
        run.errors
    );
}

#[test]
fn idle_timeout_ends_a_live_call_with_a_complete_wav() {
    common::init();
    let f = Fixture::new(3, true);
    let dir = std::env::temp_dir().join(format!("kvs-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("caller.wav");
    let desc = format!(
        "{} ! kvsaudiodemux name=d d.audio_0 ! queue ! wavenc ! filesink location={} d.audio_1 ! queue ! fakesink",
        f.src(""),
        out.display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.unwrap().view(), gst::MessageView::Eos(_)));
    let wav = std::fs::read(&out).unwrap();
    let riff = u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff + 8, wav.len(), "the RIFF size is final");
    assert_eq!(common::wav_data(&wav), f.call.pcm(Side::Caller));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shutdown_while_blocked_returns_at_once() {
    common::init();
    let f = Fixture::new(4, false);
    let faults = &f.server.state.faults;
    faults.stall_after.store(1000, Ordering::SeqCst);
    faults.stall_ms.store(60_000, Ordering::SeqCst);
    let pipeline = gst::parse::launch(&format!(
        "{} read-timeout=60000 name=src ! fakesink",
        f.src("")
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let src = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("src")
        .unwrap();
    let wait = Instant::now();
    while src
        .property::<gst::Structure>("stats")
        .get::<u64>("bytes")
        .unwrap()
        < 1000
    {
        assert!(wait.elapsed() < Duration::from_secs(20), "no data");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The body is stalled for 60 s and the read timeout is 60 s: only
    // cancellation on unlock lets this return.
    let stop = Instant::now();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stop.elapsed()
    );
}

#[test]
fn missing_credentials_say_what_to_set() {
    let f = Fixture::new(2, false);
    // No keys in the properties or the environment, no profile, and no
    // instance metadata service to ask: the default chain finds nothing.
    unsafe {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/config");
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
    }
    let desc = f
        .src("")
        .replace("access-key=AKIDTEST secret-access-key=test-secret", "");
    let (run, _) = common::source_run(&desc, Duration::from_secs(30));
    assert!(
        run.errors[0].contains(
            "Could not read Kinesis video stream call in region us-east-1: no AWS credentials found"
        ) && run.errors[0].contains("AWS_ACCESS_KEY_ID"),
        "{:?}",
        run.errors
    );
}

#[test]
fn secrets_are_write_only() {
    common::init();
    let src = gst::ElementFactory::make("kvsgetmediasrc")
        .property("secret-access-key", "s3cr3t")
        .property("session-token", "t0ken")
        .build()
        .unwrap();
    for name in ["secret-access-key", "session-token"] {
        let flags = src.find_property(name).unwrap().flags();
        assert!(flags.contains(gst::glib::ParamFlags::WRITABLE));
        assert!(
            !flags.contains(gst::glib::ParamFlags::READABLE),
            "{name} must not be readable"
        );
    }
    let everything: String = src
        .list_properties()
        .iter()
        .filter(|p| p.flags().contains(gst::glib::ParamFlags::READABLE))
        .map(|p| format!("{:?}", src.property_value(p.name())))
        .collect();
    assert!(!everything.contains("s3cr3t") && !everything.contains("t0ken"));
}

#[test]
fn a_stale_data_endpoint_is_refreshed() {
    let f = Fixture::new(3, false);
    f.server
        .state
        .faults
        .invalid_endpoint
        .store(2, Ordering::SeqCst);
    // Two paced refreshes and backoffs: well past 1 s on a busy machine.
    let (run, stats) = f.run("idle-timeout=5000");
    f.assert_exact(&run);
    assert_eq!(stats.get::<u64>("endpoint-refreshes").unwrap(), 2);
    assert_eq!(
        f.server
            .state
            .counters
            .get_data_endpoint
            .load(Ordering::SeqCst),
        3
    );
}

#[test]
fn fixed_cuts_and_an_ended_stream() {
    let f = Fixture::new(5, false);
    let faults = &f.server.state.faults;
    faults.cut_after.store(5_000, Ordering::SeqCst);
    faults.cuts.store(3, Ordering::SeqCst);
    let (run, stats) = f.run("");
    f.assert_exact(&run);
    assert_eq!(f.server.state.counters.cut.load(Ordering::SeqCst), 3);
    assert!(stats.get::<u64>("reconnects").unwrap() >= 3);

    // A stream that ends after two fragments: EOS after idle-timeout, two
    // fragments of audio.
    let f = Fixture::new(5, false);
    f.server.state.faults.end_after.store(2, Ordering::SeqCst);
    let (run, _) = f.run("");
    assert!(run.eos);
    assert_eq!(run.fragments().len(), 2);
    assert_eq!(
        run.pad("audio_0").pcm(),
        f.call.pcm(Side::Caller)[..2 * 16 * 1024]
    );
}

#[test]
fn the_log_names_the_stream_at_each_connection_resume_and_throttle() {
    common::init();
    let lines: std::sync::Arc<std::sync::Mutex<Vec<(gst::DebugLevel, String)>>> =
        Default::default();
    let l = lines.clone();
    // Collected here, not printed.
    gst::log::remove_default_log_function();
    let logger = gst::log::add_log_function(move |cat, level, _file, _func, _line, _obj, msg| {
        if cat.name() == "kvsgetmediasrc" {
            let text = msg.get().map(|m| m.to_string()).unwrap_or_default();
            l.lock().unwrap().push((level, text));
        }
    });
    gst::log::set_threshold_for_name("kvsgetmediasrc", gst::DebugLevel::Debug);
    // A name of its own: other tests log at the same time.
    let call = Call {
        fragments: 4,
        ..Call::default()
    };
    let state = State::new(vec![Stream::from_mkv("logged", &call.bytes())]);
    state.faults.idle_end_ms.store(300, Ordering::SeqCst);
    state.faults.throttle.store(1, Ordering::SeqCst);
    state.faults.cut_after.store(20_000, Ordering::SeqCst);
    state.faults.cuts.store(1, Ordering::SeqCst);
    let server = common::serve(state);
    let src = format!(
        "kvsgetmediasrc stream-name=logged region=us-east-1 access-key=AKIDTEST \
         secret-access-key=test-secret endpoint-uri={} start-selector=earliest idle-timeout=1000",
        server.endpoint()
    );
    let (run, _) = common::source_run(&src, Duration::from_secs(60));
    assert!(run.eos, "{:?}", run.errors);
    gst::log::unset_threshold_for_name("kvsgetmediasrc");
    gst::log::remove_log_function(logger);
    assert_eq!(run.pad("audio_0").pcm(), call.pcm(Side::Caller));
    let lines = lines.lock().unwrap();
    let find = |level: gst::DebugLevel, text: &str| {
        lines
            .iter()
            .any(|(l, m)| *l == level && m.starts_with("Stream logged: ") && m.contains(text))
    };
    assert!(
        find(
            gst::DebugLevel::Warning,
            "GetMedia failed (attempt 1 of 11): Throttled"
        ),
        "{lines:#?}"
    );
    assert!(
        find(gst::DebugLevel::Info, "GetMedia connected with"),
        "{lines:#?}"
    );
    assert!(
        find(gst::DebugLevel::Debug, "the GetMedia body broke"),
        "{lines:#?}"
    );
    assert!(
        find(
            gst::DebugLevel::Info,
            "GetMedia resumed with ContinuationToken"
        ),
        "{lines:#?}"
    );
}
