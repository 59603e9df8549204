// SPDX-License-Identifier: MPL-2.0
//! Peers that take a connection and never answer, peers that stop in the
//! middle of a body, and outages shorter and longer than the retry limits:
//! kvsgetmediasrc on the real AWS SDK against the local KVS server.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst::prelude::*;
use kvs_local_server::synth::{Call, Side};

/// A call named "call", live (paced in real time) or stored.
struct Fixture(common::ServedCall);

impl std::ops::Deref for Fixture {
    type Target = common::ServedCall;

    fn deref(&self) -> &common::ServedCall {
        &self.0
    }
}

impl Fixture {
    fn new(fragments: u64, live: bool) -> Fixture {
        let call = Call {
            fragments,
            ..Call::default()
        };
        Fixture(common::ServedCall::with(call, live, |state| {
            state.faults.idle_end_ms.store(300, Ordering::SeqCst)
        }))
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
