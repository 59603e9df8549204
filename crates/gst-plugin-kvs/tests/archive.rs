// SPDX-License-Identifier: MPL-2.0
//! kvsgetmediasrc in archive mode (ListFragments + GetMediaForFragmentList)
//! on the real AWS SDK against the local KVS server, with kvsaudiodemux.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gst::prelude::*;
use kvs_local_server::synth::{Call, Layout, Side};

use common::ServedCall as Fixture;

impl Fixture {
    /// Epoch seconds of fragment `i` on the server (or producer) clock.
    fn at(&self, i: u64, producer: bool) -> String {
        let ms = self.call.start_ms + i * self.call.fragment_ms() + if producer { 0 } else { 450 };
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }

    /// Records fragments `first..=last` and returns the run and the stats.
    fn run(&self, first: u64, last: u64, extra: &str) -> (common::Run, gst::Structure) {
        let producer = extra.contains("timestamp-type=producer");
        let src = format!(
            "kvsgetmediasrc stream-name=call region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} start-timestamp={} end-timestamp={} {extra}",
            self.server.endpoint(),
            self.at(first, producer),
            self.at(last, producer),
        );
        let (run, src) = common::source_run(&src, Duration::from_secs(120));
        (run, src.property::<gst::Structure>("stats"))
    }

    /// Each pad carries exactly the PCM of fragments `first..=last`.
    fn assert_exact(&self, run: &common::Run, first: u64, last: u64) {
        assert!(run.eos, "{:?}", run.errors);
        let per_fragment = self.call.pcm(Side::Caller).len() as u64 / self.call.fragments;
        let range = (first * per_fragment) as usize..((last + 1) * per_fragment) as usize;
        for (pad, side) in [("audio_0", Side::Caller), ("audio_1", Side::Agent)] {
            let pcm = run.pad(pad).pcm();
            assert!(
                pcm == self.call.pcm(side)[range.clone()],
                "{pad}: {} bytes, expected {}",
                pcm.len(),
                range.len()
            );
        }
        let numbers: Vec<String> = run
            .fragments()
            .iter()
            .map(|s| s.get::<&str>("fragment-number").unwrap().to_string())
            .collect();
        let expected: Vec<String> = (first..=last)
            .map(|i| self.call.fragment_number(i))
            .collect();
        assert!(numbers == expected, "every fragment once, in order");
    }

    /// As `assert_exact`, each speaker's PCM found by track name.
    fn assert_exact_by_name(&self, run: &common::Run, first: u64, last: u64) {
        let part = Call {
            fragments: last + 1,
            ..self.call.clone()
        };
        let per_fragment = part.pcm(Side::Caller).len() / part.fragments as usize;
        for side in [Side::Caller, Side::Agent] {
            let pcm = common::speaker(run, side.track_name()).pcm();
            assert!(
                pcm == part.pcm(side)[first as usize * per_fragment..],
                "{side:?}"
            );
        }
    }

    fn count(&self, counter: impl Fn(&kvs_local_server::Counters) -> u32) -> u32 {
        counter(&self.server.state.counters)
    }
}

#[test]
fn range_over_several_pages_and_batches_is_bit_exact() {
    let f = Fixture::stored(Call {
        fragments: 1300,
        blocks_per_fragment: 2,
        ..Call::default()
    });
    f.server.state.faults.page_max.store(300, Ordering::SeqCst);
    let (run, stats) = f.run(50, 1149, "");
    f.assert_exact(&run, 50, 1149);
    // Four shuffled pages; batches of 1,000 and 100.
    assert_eq!(f.count(|c| c.list_fragments.load(Ordering::SeqCst)), 4);
    assert_eq!(
        f.count(|c| c.get_media_for_fragment_list.load(Ordering::SeqCst)),
        2
    );
    assert_eq!(f.count(|c| c.get_media.load(Ordering::SeqCst)), 0);
    assert_eq!(stats.get::<u64>("fragments").unwrap(), 1100);
    // The duration is the sum of the listed fragment lengths.
    let ms = 1100 * f.call.fragment_ms();
    assert_eq!(run.duration, Some(gst::ClockTime::from_mseconds(ms)));
    // Progress: from the listing to the end, never backwards.
    let progress = run.named("kvs-progress");
    let done: Vec<u64> = progress
        .iter()
        .map(|s| s.get::<u64>("fragments-done").unwrap())
        .collect();
    assert!(done.len() >= 2, "{done:?}");
    assert_eq!(done[0], 0);
    assert_eq!(*done.last().unwrap(), 1100);
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let last = progress.last().unwrap();
    assert_eq!(last.get::<u64>("fragments-total").unwrap(), 1100);
    assert_eq!(
        last.get::<gst::ClockTime>("duration").unwrap(),
        gst::ClockTime::from_mseconds(ms)
    );
}

#[test]
fn both_connect_layouts_are_bit_exact() {
    for layout in [Layout::Real, Layout::TagsFirst] {
        let f = Fixture::stored(Call {
            fragments: 6,
            swapped: true,
            layout,
            ..Call::default()
        });
        let (run, _) = f.run(1, 4, "");
        f.assert_exact_by_name(&run, 1, 4);
    }
}

/// Cut bodies and throttled calls, with one connection and with several
/// batches side by side: every sample once, in order.
#[test]
fn cuts_and_throttles_inside_a_batch_lose_and_repeat_nothing() {
    for connections in [1, 2, 5] {
        let f = Fixture::stored(Call {
            fragments: 120,
            ..Call::default()
        });
        let faults = &f.server.state.faults;
        faults.cut_max.store(400_000, Ordering::SeqCst);
        faults.cuts.store(15, Ordering::SeqCst);
        faults.throttle.store(3, Ordering::SeqCst);
        let props =
            format!("timestamp-type=producer max-backoff=200 archive-connections={connections}");
        let (run, stats) = f.run(10, 109, &props);
        f.assert_exact(&run, 10, 109);
        // A cut drawn past the end of a short body never happens.
        let cuts = f.count(|c| c.cut.load(Ordering::SeqCst));
        let label = format!("{connections} connections: {cuts} cuts, {stats}");
        assert!(cuts >= 10, "{label}");
        assert!(
            stats.get::<u64>("reconnects").unwrap() >= u64::from(cuts),
            "{label}"
        );
        assert_eq!(stats.get::<u64>("throttles").unwrap(), 3, "{label}");
        assert_eq!(stats.get::<u64>("fragments").unwrap(), 100, "{label}");
        let calls = f.count(|c| c.get_media_for_fragment_list.load(Ordering::SeqCst));
        assert!(calls > cuts, "{label}: {calls} calls");
    }
}

/// archive-connections splits the range into that many batches, fetched
/// side by side, and the output stays in order.
#[test]
fn batches_over_several_connections_come_out_in_order() {
    for (connections, calls) in [(1, 1), (3, 3), (5, 5)] {
        let f = Fixture::stored(Call {
            fragments: 100,
            ..Call::default()
        });
        let props = format!("timestamp-type=producer archive-connections={connections}");
        let (run, stats) = f.run(0, 99, &props);
        f.assert_exact(&run, 0, 99);
        assert_eq!(stats.get::<u64>("fragments").unwrap(), 100, "{stats}");
        let made = f.count(|c| c.get_media_for_fragment_list.load(Ordering::SeqCst));
        assert_eq!(made, calls, "{connections} connections");
    }
}

#[test]
fn empty_range_is_an_error() {
    let f = Fixture::stored(Call {
        fragments: 5,
        ..Call::default()
    });
    // Long after the call.
    let (run, _) = f.run(100, 200, "");
    assert!(!run.eos);
    // The first error says why; GStreamer's generic flow errors may follow.
    assert!(!run.errors.is_empty());
    assert!(
        run.errors[0].contains("has no fragments from") && run.errors[0].contains("call"),
        "{:?}",
        run.errors
    );
}

#[test]
fn missing_fragment_reaches_the_bus_by_number() {
    let f = Fixture::stored(Call {
        fragments: 10,
        ..Call::default()
    });
    f.server.state.faults.error_at.store(6, Ordering::SeqCst);
    let (run, _) = f.run(2, 8, "");
    assert!(!run.errors.is_empty());
    let e = &run.errors[0];
    assert!(e.contains(&f.call.fragment_number(6)), "{e}");
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    assert!(e.contains("not in the data store"), "{e}");
    // What came before the missing fragment was delivered, before the error.
    assert_eq!(run.fragments_before_error(), 4, "{:?}", run.messages);
}

#[test]
fn bad_ranges_are_refused_at_start() {
    let f = Fixture::stored(Call {
        fragments: 3,
        ..Call::default()
    });
    let (run, _) = f.run(2, 1, "");
    assert!(
        run.errors[0].contains("is before start-timestamp"),
        "{:?}",
        run.errors
    );
    let (run, _) = f.run(0, 1, "mode=live");
    assert!(
        run.errors[0].contains("needs mode=archive"),
        "{:?}",
        run.errors
    );
}
