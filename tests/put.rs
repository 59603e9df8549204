// SPDX-License-Identifier: MPL-2.0
//! kvsputmediasink against the local KVS server: what is put comes back
//! through kvsgetmediasrc and the demuxers with the same samples, frames and
//! producer times; faults lose nothing; bad input gives a clear error.
#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gst::prelude::*;
use gstkvs::server::{State, Stream};

/// A server with empty streams to put into.
fn server(names: &[&str]) -> common::Server {
    let mut state = State::new(names.iter().map(|n| Stream::empty(n, 24)).collect());
    state.put_bodies = Some(Default::default());
    common::serve(state)
}

fn sink(server: &common::Server, stream: &str, extra: &str) -> String {
    format!(
        "kvsputmediasink name=sink stream-name={stream} aws-region=us-east-1 access-key=AKIDTEST \
         secret-key=test-secret endpoint-uri={} {extra}",
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
    common::init();
    let pipeline = gst::parse::launch(launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
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
            assert!(std::time::Instant::now() < deadline, "no EOS or error within {limit:?}: {run:?}");
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                run.eos = true;
                break;
            }
            gst::MessageView::Error(e) => {
                run.errors.push(format!("{} | {}", e.error(), e.debug().unwrap_or_default()));
                break;
            }
            gst::MessageView::Warning(w) => run.warnings.push(w.error().to_string()),
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

/// Reads the whole stream back through kvsgetmediasrc and `demux`.
fn read_back(server: &common::Server, stream: &str) -> common::Run {
    let (run, _) = common::source_run(
        &format!(
            "kvsgetmediasrc stream-name={stream} region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} start-selector=earliest idle-timeout=1000",
            server.endpoint()
        ),
        Duration::from_secs(60),
    );
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
    assert_eq!(back.pad("audio_0").pcm(), input);
}
