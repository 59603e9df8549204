// SPDX-License-Identifier: MPL-2.0
//! Real bad networks: the local KVS server in a network namespace of its
//! own, the reader here, and between them a veth pair with 200 ms of delay
//! (plus or minus 50 ms), 2% packet loss, bandwidth at twice the call's rate
//! and a 20 s partition (`common::impair`). A live call and an archive range
//! must come out exactly. The figures (added delay, resumes, the time to
//! recover after the partition) are printed.
//!
//! Needs root, `ip`, `tc` and `iptables-legacy` (`.ci/run` installs them);
//! without them each test says it is skipped.

#![cfg(feature = "aws")]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::impair::{Impairment, Link};
use gst::prelude::*;
use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{State, Stream};

/// Two tracks of 8 kHz S16: 32,000 bytes a second, 256 kbit/s.
const CALL_KBIT: u32 = 256;

const BAD: Impairment = Impairment {
    delay: Duration::from_millis(200),
    jitter: Duration::from_millis(50),
    loss_per_mille: 20,
};

fn skipped() -> bool {
    match common::impair::unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: a bad network cannot be made here: {why}");
            true
        }
        None => false,
    }
}

/// The local server, in-process, listening inside the link's namespace
/// (kept running while held), and its endpoint.
struct Server(#[allow(dead_code)] common::Server, String);

impl Server {
    fn start(link: &Link, stream: Stream) -> Server {
        let listener = link.listen(4566);
        let server = common::serve_on(listener, State::new(vec![stream]));
        Server(server, format!("http://{}:4566", link.there))
    }
}

/// One pad's buffers: PTS, when it arrived, and the bytes.
type Arrivals = Arc<Mutex<Vec<(gst::ClockTime, Instant, Vec<u8>)>>>;

/// Reads `src` through kvsaudiodemux to EOS or an error; each track's
/// buffers by track name, and the source's stats.
fn read(src: &str, limit: Duration) -> (Vec<(String, Arrivals)>, gst::Structure, Vec<String>) {
    common::init();
    let pipeline = gst::parse::launch(&format!("{src} name=src ! kvsaudiodemux name=d"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let tracks: Arc<Mutex<Vec<(String, Arrivals)>>> = Arc::default();
    let (weak, added) = (pipeline.downgrade(), tracks.clone());
    pipeline
        .by_name("d")
        .unwrap()
        .connect_pad_added(move |_, pad| {
            let log: Arrivals = Arc::default();
            let title = pad
                .sticky_event::<gst::event::Tag>(0)
                .and_then(|t| {
                    t.tag()
                        .get::<gst::tags::Title>()
                        .map(|v| v.get().to_string())
                })
                .unwrap_or_default();
            added.lock().unwrap().push((title, log.clone()));
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                    && !b.flags().contains(gst::BufferFlags::GAP)
                {
                    let data = b.map_readable().unwrap().to_vec();
                    log.lock()
                        .unwrap()
                        .push((b.pts().unwrap(), Instant::now(), data));
                }
                gst::PadProbeReturn::Ok
            });
            let pipeline = weak.upgrade().unwrap();
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
                .unwrap();
            pipeline.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("an EOS or an error in time");
    let errors = match msg.view() {
        gst::MessageView::Error(e) => vec![format!("{} | {:?}", e.error(), e.debug())],
        _ => Vec::new(),
    };
    let stats = pipeline
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let tracks = tracks.lock().unwrap().clone();
    (tracks, stats, errors)
}

fn pcm(log: &Arrivals) -> Vec<u8> {
    log.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, d)| d.clone())
        .collect()
}

fn track<'a>(tracks: &'a [(String, Arrivals)], name: &str) -> &'a Arrivals {
    &tracks
        .iter()
        .find(|(t, _)| t == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// A live call read over the bad link: clean for 5 s, then impaired, with
/// a 20 s partition from 10 s to 30 s; every sample once, and once the
/// link is back the reader catches up with live (the link carries about
/// 1.7 times the call's rate with this loss and delay, so a 20 s backlog
/// takes about 30 s).
#[test]
fn a_live_call_over_a_bad_link_with_a_partition_comes_out_exactly() {
    if skipped() {
        return;
    }
    let link = Link::new(1, 2 * CALL_KBIT);
    let seconds = 80;
    let call = Call::demo(seconds);
    let server = Server::start(&link, Stream::from_call("demo-call", &call, true));
    let started = Instant::now();
    let (imp, part) = (link.impairment.clone(), link.partitioned.clone());
    let schedule = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        *imp.lock().unwrap() = BAD;
        std::thread::sleep(Duration::from_secs(5));
        part.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(20));
        part.store(false, Ordering::SeqCst);
        Instant::now()
    });
    let (tracks, stats, errors) = read(
        &format!(
            "kvsgetmediasrc stream-name=demo-call region=us-east-1 access-key=AKIDDEMO \
             secret-access-key=demo endpoint-uri={} start-selector=earliest idle-timeout=5000 \
             max-outage=60000",
            server.1
        ),
        Duration::from_secs(150),
    );
    let healed = schedule.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    for side in [Side::Caller, Side::Agent] {
        let got = pcm(track(&tracks, side.track_name()));
        assert!(
            got == call.pcm(side),
            "{side:?}: {} of {} bytes",
            got.len(),
            call.pcm(side).len()
        );
    }
    // Lateness: arrival less the block's time in the call, above the least.
    let caller = track(&tracks, Side::Caller.track_name())
        .lock()
        .unwrap()
        .clone();
    let late = |from: f64, to: f64| {
        caller
            .iter()
            .filter(|(pts, _, _)| (from..to).contains(&pts.seconds_f64()))
            .map(|(pts, at, _)| at.duration_since(started).as_secs_f64() - pts.seconds_f64())
            .collect::<Vec<f64>>()
    };
    let clean = late(1.0, 4.5);
    let floor = clean.iter().copied().fold(f64::MAX, f64::min);
    let added = |v: Vec<f64>| {
        v.into_iter()
            .map(|l| (l - floor) * 1000.0)
            .collect::<Vec<f64>>()
    };
    let impaired = added(late(5.5, 8.5));
    let steady = percentile(impaired.clone(), 0.99) / 1000.0;
    let back = caller
        .iter()
        .find(|(_, at, _)| *at > healed)
        .map(|(_, at, _)| at.duration_since(healed));
    let caught_up = caller
        .iter()
        .filter(|(_, at, _)| *at > healed)
        .find(|(pts, at, _)| {
            at.duration_since(started).as_secs_f64() - pts.seconds_f64() - floor <= steady
        })
        .map(|(_, at, _)| at.duration_since(healed));
    eprintln!(
        "live over the bad link: added delay while impaired median {:.0} ms, p99 {:.0} ms; \
         {} resumes; after the 20 s partition, audio again {back:?} later, back within the \
         impaired p99 of live {caught_up:?} later; {} of {} packets dropped",
        percentile(impaired.clone(), 0.5),
        percentile(impaired, 0.99),
        stats.get::<u64>("reconnects").unwrap(),
        link.counts.dropped.load(Ordering::Relaxed),
        link.counts.packets.load(Ordering::Relaxed),
    );
    assert!(
        stats.get::<u64>("reconnects").unwrap() >= 1,
        "the partition made it resume"
    );
    assert!(
        caught_up.is_some(),
        "caught up with live after the partition"
    );
}

/// A stored call downloaded as an archive range over the bad link, with a
/// 20 s partition in the middle of the download: every sample once.
#[test]
fn an_archive_range_over_a_bad_link_with_a_partition_comes_out_exactly() {
    if skipped() {
        return;
    }
    let link = Link::new(2, 2 * CALL_KBIT);
    link.set(BAD);
    let seconds = 40;
    let call = Call::demo(seconds);
    let server = Server::start(&link, Stream::from_call("archive-call", &call, false));
    let part = link.partitioned.clone();
    let schedule = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        part.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(20));
        part.store(false, Ordering::SeqCst);
    });
    let started = Instant::now();
    let (tracks, stats, errors) = read(
        &format!(
            "kvsgetmediasrc stream-name=archive-call region=us-east-1 access-key=AKIDDEMO \
             secret-access-key=demo endpoint-uri={} start-timestamp=2023-11-14T22:13:20Z \
             end-timestamp=2023-11-14T22:14:30Z timestamp-type=producer max-outage=60000",
            server.1
        ),
        Duration::from_secs(180),
    );
    schedule.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    for side in [Side::Caller, Side::Agent] {
        let got = pcm(track(&tracks, side.track_name()));
        assert!(
            got == call.pcm(side),
            "{side:?}: {} of {} bytes",
            got.len(),
            call.pcm(side).len()
        );
    }
    eprintln!(
        "archive over the bad link: {seconds} s of call in {:?} with the 20 s partition; {} \
         resumes; {} of {} packets dropped",
        started.elapsed(),
        stats.get::<u64>("reconnects").unwrap(),
        link.counts.dropped.load(Ordering::Relaxed),
        link.counts.packets.load(Ordering::Relaxed),
    );
    assert!(
        stats.get::<u64>("reconnects").unwrap() >= 1,
        "the partition made it fetch again"
    );
}
