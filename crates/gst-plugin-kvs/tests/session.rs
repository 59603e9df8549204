// SPDX-License-Identifier: MPL-2.0
//! The end of a GetMedia session, compressed in time: KVS ends every
//! GetMedia response after about 40 to 45 minutes; the local server ends
//! them after a few seconds, at a chunk boundary or in the middle of a
//! chunk. A live call read across several such ends comes out whole:
//! every sample once, and no gap in the output timeline.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{SessionEnd, State, Stream};

/// Seconds a GetMedia response lasts here.
const SESSION: Duration = Duration::from_secs(3);

/// A live call of `fragments` (about a second each) whose GetMedia
/// responses end after [`SESSION`].
fn live_call(fragments: u64, mid_chunk: bool) -> (common::Server, Call) {
    let call = Call {
        fragments,
        ..Call::default()
    };
    let mut state = State::new(vec![Stream::from_call("call", &call, true)]);
    state.faults.idle_end_ms.store(500, Ordering::SeqCst);
    state.session_end = SessionEnd {
        after: Some(SESSION),
        mid_chunk,
    };
    (common::serve(state), call)
}

/// Each speaker's PCM once, with no made-up silence, and each pad's
/// buffers one after the other with no hole or overlap in time.
fn assert_whole(run: &common::Run, call: &Call, label: &str) {
    assert!(
        run.eos && run.errors.is_empty(),
        "{label}: {:?}",
        run.errors
    );
    for side in [Side::Caller, Side::Agent] {
        let pad = common::speaker(run, side.track_name());
        assert!(
            pad.buffers.iter().all(|b| !b.gap),
            "{label} {side:?}: a gap"
        );
        assert!(
            pad.pcm() == call.pcm(side),
            "{label} {side:?}: every sample once"
        );
        for pair in pad.buffers.windows(2) {
            let end = pair[0].pts.unwrap() + pair[0].duration.unwrap();
            assert_eq!(pair[1].pts, Some(end), "{label} {side:?}: the timeline");
            assert!(!pair[1].discont, "{label} {side:?}: a DISCONT mid-timeline");
        }
    }
    assert_eq!(run.fragments().len() as u64, call.fragments, "{label}");
}

fn ended(server: &common::Server) -> u32 {
    server.state.counters.sessions_ended.load(Ordering::SeqCst)
}

/// With `idle-timeout` shorter than a fragment, a response that ends in
/// the middle of a fragment must not be taken for an idle stream.
fn pipeline_across_session_ends(mid_chunk: bool) {
    let (server, call) = live_call(12, mid_chunk);
    let (run, _) = common::source_run(
        &format!(
            "kvsgetmediasrc stream-name=call region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} start-selector=earliest \
             idle-timeout=500",
            server.endpoint()
        ),
        Duration::from_secs(60),
    );
    let label = if mid_chunk {
        "mid-chunk"
    } else {
        "at a boundary"
    };
    assert_whole(&run, &call, label);
    assert!(
        ended(&server) >= 3,
        "{label}: {} session ends",
        ended(&server)
    );
}

#[test]
fn a_pipeline_reads_across_session_ends_at_chunk_boundaries() {
    pipeline_across_session_ends(false);
}

#[test]
fn a_pipeline_reads_across_session_ends_in_the_middle_of_a_chunk() {
    pipeline_across_session_ends(true);
}
