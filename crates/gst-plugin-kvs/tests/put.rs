// SPDX-License-Identifier: MPL-2.0
//! kvsputmediasink against the local KVS server: what is put comes back
//! through kvsgetmediasrc and the demuxers with the same samples, frames and
//! producer times; faults lose nothing; bad input gives a clear error.
#![cfg(feature = "aws")]

mod common;

use common::{put_server as server, read_back, stored};

use std::sync::atomic::Ordering;

use kvs_local_server::synth::{Call, Side};
use std::time::Duration;

use gst::prelude::*;
use kvs_local_server::{State, Stream};

fn sink(server: &common::Server, stream: &str, extra: &str) -> String {
    format!(
        "kvsputmediasink name=sink stream-name={stream} region=us-east-1 access-key=AKIDTEST \
         secret-access-key=test-secret endpoint-uri={} {extra}",
        server.endpoint()
    )
}

/// What a put pipeline did.
#[derive(Debug, Default)]
struct Put {
    /// `kvs-fragment-persisted` messages, in order.
    acks: Vec<gst::Structure>,
    errors: Vec<String>,
    warnings: Vec<String>,
    eos: bool,
    stats: Option<gst::Structure>,
    /// Buffers of the appsink named `ref`, if any: what went in.
    reference: Vec<common::Out>,
}

/// Runs a pipeline with a kvsputmediasink named `sink` to EOS or error.
fn put(launch: &str, limit: Duration) -> Put {
    put_with(launch, limit, |_| {})
}

/// As [`put`], after `setup` has seen the pipeline.
fn put_with(launch: &str, limit: Duration, setup: impl FnOnce(&gst::Pipeline)) -> Put {
    common::init();
    let pipeline = gst::parse::launch(launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    setup(&pipeline);
    let reference = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(r) = pipeline.by_name("ref") {
        let appsink = r.downcast::<gst_app::AppSink>().unwrap();
        let out = reference.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let b = sample.buffer().unwrap();
                    out.lock().unwrap().push(common::Out {
                        data: b.map_readable().unwrap().to_vec(),
                        delta: b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        pts: b.pts(),
                        caps: sample.caps_owned(),
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    let sink = pipeline.by_name("sink").unwrap();
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + limit;
    let mut run = Put::default();
    loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            assert!(
                std::time::Instant::now() < deadline,
                "no EOS or error within {limit:?}: {run:?}"
            );
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                run.eos = true;
                break;
            }
            gst::MessageView::Error(e) => {
                run.errors
                    .push(format!("{} | {}", e.error(), e.debug().unwrap_or_default()));
                break;
            }
            gst::MessageView::Warning(w) => {
                run.warnings
                    .push(format!("{} | {}", w.error(), w.debug().unwrap_or_default()))
            }
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "kvs-fragment-persisted" {
                    run.acks.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    run.stats = Some(sink.property::<gst::Structure>("stats"));
    pipeline.set_state(gst::State::Null).unwrap();
    run.reference = reference.lock().unwrap().clone();
    run
}

fn stat(put: &Put, field: &str) -> u64 {
    put.stats.as_ref().unwrap().get::<u64>(field).unwrap()
}

#[test]
fn s16le_round_trip() {
    let server = server(&["pcm"]);
    let run = put(
        &format!(
            "audiotestsrc num-buffers=100 samplesperbuffer=160 wave=white-noise ! \
             audio/x-raw,format=S16LE,rate=8000,channels=1 ! tee name=t \
             t. ! queue ! appsink name=ref sync=false \
             t. ! queue ! {}",
            sink(&server, "pcm", "fragment-duration=500")
        ),
        Duration::from_secs(30),
    );
    assert!(run.eos, "{run:?}");
    // 2 s of audio in 500 ms fragments.
    assert_eq!(run.acks.len(), 4, "{run:?}");
    assert_eq!(stat(&run, "fragments-persisted"), 4);
    let input: Vec<u8> = run.reference.iter().flat_map(|o| o.data.clone()).collect();
    assert_eq!(input.len(), 100 * 320);
    let back = read_back(&server, "pcm");
    assert!(back.eos, "{:?}", back.errors);
    let log = back.pad("audio_0");
    assert_eq!(log.pcm(), input);
    // Producer times from the pipeline clock: now, then 20 ms a buffer.
    let unix: Vec<u64> = log
        .buffers
        .iter()
        .map(|b| b.unix.unwrap().mseconds())
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now - unix[0] < 60_000,
        "{} is not about now ({now})",
        unix[0]
    );
    assert!(unix.windows(2).all(|w| w[1] - w[0] == 20), "{unix:?}");
}

/// A kvssink pipeline, with kvssink's names for the region, the secret, the
/// stream's creation and the rotation, works unchanged; each old name is
/// said to be deprecated in the sink's log.
#[test]
fn kvssink_names_still_work_with_a_deprecation_warning() {
    common::init();
    let warned = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = warned.clone();
    gst::log::set_threshold_for_name("kvsputmediasink", gst::DebugLevel::Warning);
    let log = gst::log::add_log_function(move |cat, level, _, _, _, _, msg| {
        if cat.name() == "kvsputmediasink"
            && level == gst::DebugLevel::Warning
            && let Some(text) = msg.get()
        {
            seen.lock().unwrap().push(text.to_string());
        }
    });
    let server = server(&[]);
    let launch = format!(
        "audiotestsrc num-buffers=50 samplesperbuffer=160 wave=white-noise ! \
         audio/x-raw,format=S16LE,rate=8000,channels=1 ! tee name=t \
         t. ! queue ! appsink name=ref sync=false \
         t. ! queue ! kvsputmediasink name=sink stream-name=old-names aws-region=us-east-1 \
         access-key=AKIDTEST secret-key=test-secret allow-create-stream=true rotation-period=600 \
         endpoint-uri={} fragment-duration=500",
        server.endpoint()
    );
    let run = put_with(&launch, Duration::from_secs(30), |pipeline| {
        let sink = pipeline.by_name("sink").unwrap();
        assert_eq!(
            sink.property::<Option<String>>("region").as_deref(),
            Some("us-east-1")
        );
        assert!(sink.property::<bool>("create-stream"));
        assert_eq!(sink.property::<u32>("connection-max-age"), 600);
    });
    gst::log::remove_log_function(log);
    assert!(run.eos, "{run:?}");
    // The stream did not exist: allow-create-stream made it.
    let back = read_back(&server, "old-names");
    assert_eq!(back.pad("audio_0").pcm(), input(&run));
    let warned = warned.lock().unwrap();
    for (old, new) in [
        ("aws-region", "region"),
        ("secret-key", "secret-access-key"),
        ("allow-create-stream", "create-stream"),
        ("rotation-period", "connection-max-age"),
    ] {
        let line = format!("Property {old} is deprecated (kvssink's name): use {new}");
        assert!(warned.contains(&line), "{line:?} not in {warned:?}");
    }
}

/// The Connect tags every fragment of a copy carries.
fn connect_tags(call: &Call) -> gst::Structure {
    gst::Structure::builder("tags")
        .field("ContactId", call.contact_id.as_str())
        .field("MimeType", call.mime_type.as_str())
        .build()
}

#[test]
fn a_connect_call_read_and_put_again_keeps_its_samples_times_and_tags() {
    let call = Call::default();
    let mut state = State::new(vec![
        Stream::from_mkv("call", &call.bytes()),
        Stream::empty("copy", 24),
    ]);
    state.put_bodies = Some(Default::default());
    let server = common::serve(state);
    let src = format!(
        "kvsgetmediasrc stream-name=call region=us-east-1 access-key=AKIDTEST \
         secret-access-key=test-secret endpoint-uri={} start-selector=earliest idle-timeout=1000",
        server.endpoint()
    );
    let original = {
        let (run, _) = common::source_run(&src, Duration::from_secs(60));
        run
    };
    let run = put_with(
        &format!(
            "{src} ! kvsaudiodemux name=d d.audio_0 ! queue ! sink.audio_0 \
             d.audio_1 ! queue ! sink.audio_1 {} \
             audio_0::track-name=AUDIO_FROM_CUSTOMER audio_1::track-name=AUDIO_TO_CUSTOMER",
            sink(&server, "copy", "fragment-duration=1024")
        ),
        Duration::from_secs(60),
        |p| {
            p.by_name("sink")
                .unwrap()
                .set_property("fragment-tags", connect_tags(&call))
        },
    );
    assert!(run.eos, "{run:?}");
    assert_eq!(run.acks.len() as u64, call.fragments, "{run:?}");
    let back = read_back(&server, "copy");
    assert!(back.eos, "{:?}", back.errors);
    for (pad, side) in [("audio_0", Side::Caller), ("audio_1", Side::Agent)] {
        let log = back.pad(pad);
        assert_eq!(log.pcm(), call.pcm(side), "{pad}");
        let times = |l: &common::PadLog| l.buffers.iter().map(|b| b.unix).collect::<Vec<_>>();
        assert_eq!(
            times(log),
            times(original.pad(pad)),
            "{pad}: producer times"
        );
        assert!(log.buffers[0].unix.is_some());
        let contact = log.tags.iter().find_map(|t| {
            t.get::<gstkvs::tags::ContactId>()
                .map(|v| v.get().to_string())
        });
        assert_eq!(contact.as_deref(), Some(call.contact_id.as_str()), "{pad}");
        assert_eq!(log.title().as_deref(), original.pad(pad).title().as_deref());
    }
}

/// `audiotestsrc ! <encode>` put into a fresh stream and read back through
/// `demux`: the same encoded frames, in order, with the same key flags.
fn codec_round_trip(name: &str, encode: &str, demux_pad: &str, extra: &str) -> common::Server {
    let server = server(&[name]);
    let run = put(
        &format!(
            "{encode} ! tee name=t t. ! queue ! appsink name=ref sync=false \
             t. ! queue ! {}",
            sink(&server, name, extra)
        ),
        Duration::from_secs(60),
    );
    assert!(run.eos, "{name}: {run:?}");
    assert!(!run.acks.is_empty());
    let (back, _) = common::source_run_with(
        &format!(
            "kvsgetmediasrc stream-name={name} region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} start-selector=earliest idle-timeout=1000",
            server.endpoint()
        ),
        "kvsdemux",
        Duration::from_secs(60),
    );
    assert!(back.eos, "{name}: {:?}", back.errors);
    let log = back.pad(demux_pad);
    let input: Vec<(&[u8], bool)> = run
        .reference
        .iter()
        .map(|o| (&o.data[..], o.delta))
        .collect();
    let output: Vec<(&[u8], bool)> = log.buffers.iter().map(|b| (&b.data[..], b.delta)).collect();
    assert_eq!(output.len(), input.len(), "{name}: frames");
    assert!(output == input, "{name}: the frames differ");
    server
}

/// The PutMedia body the sink sent, whole.
fn body(server: &common::Server) -> Vec<u8> {
    server
        .state
        .put_bodies
        .as_ref()
        .unwrap()
        .lock()
        .unwrap()
        .concat()
}

#[test]
fn h264_round_trips_with_and_without_b_frames_and_matroskademux_reads_the_body() {
    if !common::have(&["x264enc", "h264parse"]) {
        return;
    }
    for (name, bframes) in [("h264", 0), ("h264-bframes", 2)] {
        let server = codec_round_trip(
            name,
            &format!(
                "videotestsrc num-buffers=75 ! video/x-raw,width=320,height=240,framerate=25/1 ! \
                 x264enc key-int-max=25 bframes={bframes} speed-preset=ultrafast ! h264parse ! \
                 video/x-h264,stream-format=avc,alignment=au"
            ),
            "video_0",
            "",
        );
        // Three key frames: three fragments, each acknowledged.
        let persisted = server.state.stream_named(name).unwrap().len();
        assert_eq!(persisted, 3, "{name}");
        let bytes = body(&server);
        let stock = common::pull(&bytes, "matroskademux");
        let ours = common::pull(&bytes, "kvsdemux");
        assert_eq!(stock.len(), 75, "{name}");
        // matroskademux keeps the epoch timecodes; kvsdemux starts at 0.
        let frames = |v: &[common::Out]| {
            let t0 = v[0].pts.unwrap();
            v.iter()
                .map(|o| (o.data.clone(), o.delta, o.pts.unwrap() - t0))
                .collect::<Vec<_>>()
        };
        assert!(
            frames(&stock) == frames(&ours),
            "{name}: matroskademux and kvsdemux differ"
        );
    }
}

#[test]
fn alaw_mulaw_aac_and_opus_round_trips() {
    common::init();
    let tone =
        "audiotestsrc num-buffers=60 samplesperbuffer=160 ! audio/x-raw,rate=8000,channels=1";
    codec_round_trip("alaw", &format!("{tone} ! alawenc"), "audio_0", "");
    codec_round_trip("mulaw", &format!("{tone} ! mulawenc"), "audio_0", "");
    if common::have(&["voaacenc", "aacparse"]) {
        codec_round_trip(
            "aac",
            "audiotestsrc num-buffers=80 ! audio/x-raw,rate=16000,channels=1 ! voaacenc ! aacparse",
            "audio_0",
            "",
        );
    }
    if common::have(&["opusenc"]) {
        codec_round_trip(
            "opus",
            "audiotestsrc num-buffers=80 ! audio/x-raw,rate=48000,channels=2 ! opusenc",
            "audio_0",
            "",
        );
    }
}

/// `buffers` of 20 ms S16LE noise put into `stream` with `extra` sink
/// properties; `live` paces them in real time.
fn put_pcm(server: &common::Server, stream: &str, buffers: u32, live: bool, extra: &str) -> Put {
    put(
        &pcm_launch(server, stream, buffers, live, extra),
        Duration::from_secs(60),
    )
}

fn pcm_launch(
    server: &common::Server,
    stream: &str,
    buffers: u32,
    live: bool,
    extra: &str,
) -> String {
    format!(
        "audiotestsrc num-buffers={buffers} samplesperbuffer=160 wave=white-noise is-live={live} ! \
         audio/x-raw,format=S16LE,rate=8000,channels=1 ! tee name=t \
         t. ! queue ! appsink name=ref sync=false \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! {}",
        sink(server, stream, &format!("fragment-duration=500 {extra}"))
    )
}

fn input(run: &Put) -> Vec<u8> {
    run.reference.iter().flat_map(|o| o.data.clone()).collect()
}

/// Their producer times.
fn stored_times(server: &common::Server, stream: &str) -> Vec<u64> {
    stored(server, stream)
        .iter()
        .map(|f| f.producer_ms)
        .collect()
}

fn assert_all_back_once(server: &common::Server, stream: &str, run: &Put) {
    assert!(run.eos, "{run:?}");
    let back = read_back(server, stream);
    assert!(back.eos, "{:?}", back.errors);
    assert!(
        back.pad("audio_0").pcm() == input(run),
        "{stream}: the samples differ"
    );
    let times = stored_times(server, stream);
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "{stream}: a fragment twice: {times:?}"
    );
}

#[test]
fn a_cut_mid_fragment_loses_nothing() {
    let server = server(&["cut"]);
    let f = &server.state.faults;
    f.put_cuts.store(2, Ordering::SeqCst);
    f.put_cut_after.store(2, Ordering::SeqCst);
    let run = put_pcm(&server, "cut", 150, false, "max-backoff=100");
    assert_all_back_once(&server, "cut", &run);
    assert_eq!(server.state.counters.cut.load(Ordering::SeqCst), 2);
    assert!(stat(&run, "connections") >= 3, "{:?}", run.stats);
    assert!(stat(&run, "fragments-resent") >= 2, "{:?}", run.stats);
    assert_eq!(stat(&run, "fragments-persisted"), 6);
}

#[test]
fn a_lost_persisted_ack_sends_the_fragment_twice() {
    // The server keeps fragment 2 but the connection breaks before its
    // ACKs go out: the sink cannot know, and sends it again.
    let server = server(&["dup"]);
    let f = &server.state.faults;
    f.put_cuts.store(1, Ordering::SeqCst);
    f.put_cut_after.store(2, Ordering::SeqCst);
    f.put_lose_last_acks.store(true, Ordering::SeqCst);
    let run = put_pcm(&server, "dup", 150, false, "max-backoff=100");
    assert!(run.eos, "{run:?}");
    let times = stored_times(&server, "dup");
    assert_eq!(times.len(), 7, "{times:?}");
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(unique.len(), 6, "exactly one fragment twice: {times:?}");
    assert_eq!(times[1], times[2], "the second fragment, stored twice");
    let s = stored(&server, "dup");
    assert_eq!(s[1].archive[1], s[2].archive[1], "the same Cluster bytes");
    // The reader gets both copies; the README says so.
    let back = read_back(&server, "dup");
    let all = input(&run);
    let per = all.len() / 6;
    let mut twice = all[..2 * per].to_vec();
    twice.extend_from_slice(&all[per..]);
    assert!(
        back.pad("audio_0").pcm() == twice,
        "the second fragment's samples twice"
    );
}

#[test]
fn an_error_ack_kvs_calls_temporary_is_sent_again() {
    let server = server(&["err"]);
    let f = &server.state.faults;
    f.put_errors.store(1, Ordering::SeqCst);
    f.put_error_id.store(5000, Ordering::SeqCst);
    let run = put_pcm(&server, "err", 150, false, "max-backoff=100");
    assert_all_back_once(&server, "err", &run);
    assert!(stat(&run, "errors") >= 1, "{:?}", run.stats);
    assert!(stat(&run, "fragments-resent") >= 1, "{:?}", run.stats);
}

#[test]
fn a_throttled_put_waits_and_loses_nothing() {
    let server = server(&["slow"]);
    server.state.faults.throttle.store(3, Ordering::SeqCst);
    let run = put_pcm(&server, "slow", 100, false, "max-backoff=100");
    assert_all_back_once(&server, "slow", &run);
    assert_eq!(stat(&run, "throttles"), 3);
    assert_eq!(server.state.counters.throttled.load(Ordering::SeqCst), 3);
}

#[test]
fn putmedia_requests_left_unanswered_are_tried_again_and_nothing_is_lost() {
    let server = server(&["silent"]);
    server.state.faults.unanswered.store(2, Ordering::SeqCst);
    let run = put_pcm(
        &server,
        "silent",
        100,
        false,
        "max-backoff=100 request-timeout=300",
    );
    assert_all_back_once(&server, "silent", &run);
    assert_eq!(server.state.counters.unanswered.load(Ordering::SeqCst), 2);
    assert!(stat(&run, "errors") >= 2, "{:?}", run.stats);
}

/// The peer stops answering mid-put for longer than the limits: an error
/// that says so, not a pipeline that waits for good.
#[test]
fn a_peer_that_stops_answering_fails_the_put_with_the_cause() {
    let server = server(&["stopped"]);
    let state = server.state.clone();
    let started = std::time::Instant::now();
    let run = put_with(
        &pcm_launch(
            &server,
            "stopped",
            100_000,
            true,
            "max-backoff=100 request-timeout=300 max-retries=2 connection-staleness=1",
        ),
        Duration::from_secs(60),
        move |_| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                state.faults.pause(true);
            });
        },
    );
    let error = run.errors.first().unwrap_or_else(|| panic!("{run:?}"));
    assert!(
        error.contains("no acknowledgement for 1 s") || error.contains("PutMedia got no answer"),
        "{error}"
    );
    assert!(error.contains("attempts in a row failed"), "{error}");
    eprintln!(
        "put, peer stops at 2 s: error after {:?}: {error}",
        started.elapsed()
    );
    server.state.faults.pause(false);
}

#[test]
fn a_fatal_error_ack_names_the_error_and_what_to_do() {
    let mut state = State::new(vec![Stream::empty("long", 24)]);
    state.put.max_fragment_ms = 300;
    let server = common::serve(state);
    let run = put_pcm(&server, "long", 100, false, "");
    assert!(!run.eos);
    let error = run.errors.join("\n");
    for wanted in [
        "refused a fragment of stream long: a fragment is longer than 10 seconds |",
        "ErrorId 4002 (MAX_FRAGMENT_DURATION_REACHED)",
        "key frames",
    ] {
        assert!(error.contains(wanted), "{wanted:?} not in {error}");
    }
}

/// Polls the sink's stats until `done` says so (or panics after 60 s).
fn until(sink: &gst::Element, done: impl Fn(&gst::Structure) -> bool) -> gst::Structure {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = sink.property::<gst::Structure>("stats");
        if done(&stats) {
            return stats;
        }
        assert!(std::time::Instant::now() < deadline, "never: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field(s: &gst::Structure, f: &str) -> u64 {
    s.get::<u64>(f).unwrap()
}

/// Puts 90 s of PCM (1.4 MiB, more than `storage-size=1`) into `stream`
/// while KVS holds back every PERSISTED, until the sink's stats satisfy
/// `ready`; then lets them go. The server, the run, and those stats.
fn put_while_held(
    stream: &str,
    extra: &str,
    ready: impl Fn(&gst::Structure) -> bool + Send + 'static,
) -> (common::Server, Put, gst::Structure) {
    let server = server(&[stream]);
    server
        .state
        .faults
        .put_hold_acks
        .store(true, Ordering::SeqCst);
    let state = server.state.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen_in = seen.clone();
    let run = put_with(
        &pcm_launch(
            &server,
            stream,
            4500,
            false,
            &format!("storage-size=1 fragment-duration=2000 {extra}"),
        ),
        Duration::from_secs(60),
        move |p| {
            let sink = p.by_name("sink").unwrap();
            std::thread::spawn(move || {
                until(&sink, ready);
                std::thread::sleep(Duration::from_millis(300));
                *seen_in.lock().unwrap() = Some(sink.property::<gst::Structure>("stats"));
                state.faults.put_hold_acks.store(false, Ordering::SeqCst);
            });
        },
    );
    let held = seen.lock().unwrap().clone().expect("the store filled");
    (server, run, held)
}

#[test]
fn a_full_store_holds_upstream_until_kvs_catches_up() {
    // The store fills, then stays full: upstream is held.
    let (server, run, held) = put_while_held("full", "", |s| {
        field(s, "buffered-bytes") >= 1024 * 1024 - 40_000
    });
    assert_eq!(field(&held, "fragments-persisted"), 0, "{held:?}");
    assert!(
        field(&held, "buffered-bytes") <= 1024 * 1024 + 40_000,
        "upstream was held: {held:?}"
    );
    assert!(field(&held, "buffered-fragments") < 45, "{held:?}");
    assert_all_back_once(&server, "full", &run);
}

#[test]
fn drop_when_full_drops_the_oldest_with_a_warning() {
    // Upstream is not held: all 45 fragments get written while KVS
    // acknowledges none, and the oldest are let go.
    let (server, run, held) = put_while_held("drop", "drop-when-full=true", |s| {
        field(s, "fragments-dropped") + field(s, "buffered-fragments") == 45
    });
    assert!(run.eos, "{run:?}");
    let get = |f: &str| held.get::<u64>(f).unwrap();
    assert_eq!(get("fragments-persisted"), 0, "{held:?}");
    assert!(get("buffered-bytes") <= 1024 * 1024 + 40_000, "{held:?}");
    assert_eq!(
        get("fragments-dropped") + get("buffered-fragments"),
        45,
        "{held:?}"
    );
    assert!(
        run.warnings
            .iter()
            .any(|w| w.contains("storage-size is full")),
        "{:?}",
        run.warnings
    );
    // Those sent before they were dropped are in KVS; those dropped before
    // they could be sent are not. Each fragment is whole and there once.
    let back = read_back(&server, "drop");
    let got = back.pad("audio_0").pcm();
    let all = input(&run);
    let pieces: Vec<&[u8]> = all.chunks(32_000).collect();
    let mut next = 0;
    for piece in got.chunks(32_000) {
        let at = pieces[next..]
            .iter()
            .position(|p| *p == piece)
            .expect("a whole fragment of the input");
        next += at + 1;
    }
    let missing = pieces.len() - got.len() / 32_000;
    assert!(
        missing as u64 <= get("fragments-dropped"),
        "{missing} missing"
    );
    let times = stored_times(&server, "drop");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[test]
fn connections_are_rotated_without_a_gap() {
    let server = server(&["rotate"]);
    let run = put_pcm(&server, "rotate", 175, true, "connection-max-age=1");
    assert_all_back_once(&server, "rotate", &run);
    assert!(stat(&run, "connections") >= 3, "{:?}", run.stats);
    assert_eq!(stat(&run, "fragments-resent"), 0, "{:?}", run.stats);
}

#[test]
fn bad_input_gives_a_clear_error() {
    common::init();
    let server = server(&["ok"]);
    // Caps it cannot take do not link.
    let raw = gst::parse::launch(&format!(
        "videotestsrc ! video/x-raw ! {}",
        sink(&server, "ok", "")
    ));
    assert!(raw.is_err(), "raw video must not link");
    let cases = [
        (
            sink(&server, "nope", ""),
            &[
                "Kinesis video stream nope was not found in region us-east-1 |",
                "create-stream=true",
            ][..],
        ),
        (
            sink(&server, "ok", "")
                .replace("secret-access-key=test-secret", "secret-access-key=wrong"),
            &[
                "Could not put media into Kinesis video stream ok in region us-east-1: signature rejected",
                "InvalidSignatureException",
            ][..],
        ),
        (
            sink(&server, "ok", "").replace("access-key=AKIDTEST", "access-key=AKIDDENIED"),
            &[
                "Could not put media into Kinesis video stream ok in region us-east-1: access denied |",
                "NotAuthorizedException",
            ][..],
        ),
    ];
    for (sink, wanted) in cases {
        let run = put(
            &format!(
                "audiotestsrc num-buffers=50 ! audio/x-raw,format=S16LE,rate=8000,channels=1 ! {sink} max-retries=1"
            ),
            Duration::from_secs(30),
        );
        let error = run.errors.join("\n");
        for w in wanted {
            assert!(error.contains(w), "{w:?} not in {error}");
        }
    }
    let unset = put(
        "audiotestsrc num-buffers=5 ! kvsputmediasink name=sink",
        Duration::from_secs(10),
    );
    assert!(
        unset.errors.join("").contains("Set stream-name"),
        "{unset:?}"
    );
}

#[test]
fn create_stream_creates_a_missing_stream() {
    let server = server(&[]);
    let run = put_pcm(
        &server,
        "made",
        50,
        false,
        "create-stream=true retention-period=0",
    );
    assert!(run.eos, "{run:?}");
    let stream = server.state.stream_named("made").expect("created");
    assert_eq!(stream.retention_hours.load(Ordering::SeqCst), 0);
    assert_eq!(*stream.media_type.lock().unwrap(), "audio/L16");
    // Without retention KVS sends RECEIVED only; that is enough.
    assert_eq!(stat(&run, "fragments-persisted"), 2, "{:?}", run.stats);
    assert_eq!(
        server.state.counters.create_stream.load(Ordering::SeqCst),
        1
    );
}

/// Runs kvs-put against `server` with the test credentials.

#[test]
fn a_reader_waiting_at_now_and_the_archive_get_what_is_put() {
    let server = server(&["live"]);
    let endpoint = server.endpoint();
    // The reader starts first, on an empty stream, and waits at NOW.
    let reader = std::thread::spawn(move || {
        common::source_run(
            &format!(
                "kvsgetmediasrc stream-name=live region=us-east-1 access-key=AKIDTEST \
                 secret-access-key=test-secret endpoint-uri={endpoint} start-selector=now idle-timeout=4000"
            ),
            Duration::from_secs(60),
        )
        .0
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.state.counters.get_media.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never called GetMedia"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let run = put_pcm(&server, "live", 150, true, "");
    assert!(run.eos, "{run:?}");
    let live = reader.join().unwrap();
    assert!(live.eos, "{:?}", live.errors);
    assert!(
        live.pad("audio_0").pcm() == input(&run),
        "the live reader's samples differ"
    );
    // ListFragments and GetMediaForFragmentList see the same fragments.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (archive, _) = common::source_run(
        &format!(
            "kvsgetmediasrc stream-name=live region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} mode=archive \
             start-timestamp={} end-timestamp={}",
            server.endpoint(),
            now - 120,
            now + 60
        ),
        Duration::from_secs(60),
    );
    assert!(archive.eos, "{:?}", archive.errors);
    assert!(
        archive.pad("audio_0").pcm() == input(&run),
        "the archive's samples differ"
    );
    assert_eq!(archive.fragments().len(), 6);
}

#[test]
fn shutdown_while_upstream_is_held_returns_at_once() {
    let server = server(&["stop"]);
    server
        .state
        .faults
        .put_hold_acks
        .store(true, Ordering::SeqCst);
    common::init();
    let pipeline = gst::parse::launch(&pcm_launch(&server, "stop", 4500, false, "storage-size=1"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    // The store is full and upstream waits in the sink's chain.
    until(&sink, |s| {
        field(s, "buffered-bytes") >= 1024 * 1024 - 40_000
    });
    // Without the sink waking its blocked chain, NULL would wait forever
    // for the streaming lock.
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pipeline.set_state(gst::State::Null).unwrap();
        let _ = done.send(());
    });
    assert!(
        stopped.recv_timeout(Duration::from_secs(30)).is_ok(),
        "NULL never returned"
    );
}
