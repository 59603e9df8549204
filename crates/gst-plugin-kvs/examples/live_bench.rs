// SPDX-License-Identifier: MPL-2.0
//! Live benchmarks of kvsgetmediasrc ! kvsaudiodemux against the local KVS
//! server, through the real AWS SDK:
//! - latency: from the server sending a block's last byte to the matching
//!   buffer leaving kvsaudiodemux;
//! - resume gap: from a cut to the next byte after it;
//! - scale: N live calls at once in one process: CPU (user and system),
//!   context switches, RSS per call, start-up cost, whether all keep real
//!   time, and the delay the load adds.
//!
//! ```sh
//! cargo run --release --example live_bench -- [--seconds 20] [--scale 100,500,1000] [--phases 1000]
//! # scale only, against a server in another process (its CPU not counted);
//! # --phases N reads its N copies of the call, which start at different times:
//! cargo run --release --bin kvs-local-server -- --demo-call 1200 --demo-copies 1000 &
//! cargo run --release --example live_bench -- --scale 1000 --phases 1000 --endpoint http://127.0.0.1:PORT
//! # a soak: 30 minutes, a row of CPU, RSS and calls behind each minute
//! cargo run --release --example live_bench -- --scale 1000 --phases 1000 --seconds 1800 --sample-every 60 --endpoint ...
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;
use common::{percentiles, rss_mb, usage};
use kvs_local_server::synth::Call;
use kvs_local_server::{LocalKvs, State, Stream, Timing};

fn pipeline(endpoint: &str, extra: &str) -> (gst::Pipeline, gst::Element, gst::Element) {
    let desc = format!(
        "kvsgetmediasrc name=src region=us-east-1 access-key=AKIDBENCH \
         secret-access-key=bench endpoint-uri={endpoint} idle-timeout=1500 stream-name=call {extra} ! kvsaudiodemux name=d"
    );
    let p = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = p.by_name("src").unwrap();
    let demux = p.by_name("d").unwrap();
    let weak = p.downgrade();
    demux.connect_pad_added(move |_, pad| {
        let p = weak.upgrade().unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        p.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    (p, src, demux)
}

fn wait_eos(p: &gst::Pipeline) {
    let bus = p.bus().unwrap();
    bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(600),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
}

fn server(runtime: &tokio::runtime::Runtime, streams: Vec<Stream>, timing: bool) -> LocalKvs {
    let mut state = State::new(streams);
    if timing {
        state.timing = Some(Mutex::new(Timing::default()));
    }
    state.faults.idle_end_ms.store(500, Ordering::SeqCst);
    runtime.block_on(LocalKvs::start(0, state)).unwrap()
}

fn latency(runtime: &tokio::runtime::Runtime, seconds: u64) {
    let call = Call::of_seconds(seconds);
    let srv = server(runtime, vec![Stream::from_call("call", &call, true)], true);
    let (p, _, demux) = pipeline(&srv.endpoint(), "start-selector=earliest");
    let seen: Arc<Mutex<Vec<(usize, u64, Instant)>>> = Default::default();
    let seen_pads = seen.clone();
    demux.connect_pad_added(move |_, pad| {
        let track = if pad.name() == "audio_0" { 0 } else { 1 };
        let seen = seen_pads.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && !b.flags().contains(gst::BufferFlags::GAP)
            {
                seen.lock()
                    .unwrap()
                    .push((track, b.pts().unwrap().mseconds(), Instant::now()));
            }
            gst::PadProbeReturn::Ok
        });
    });
    p.set_state(gst::State::Playing).unwrap();
    wait_eos(&p);
    let timing = srv.state.timing.as_ref().unwrap().lock().unwrap();
    let frag_ms = call.fragment_ms();
    let lat: Vec<f64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|&(track, pts, at)| {
            let (fragment, rel) = ((pts / frag_ms) as usize, pts % frag_ms);
            let block = (rel / call.block_ms) as usize * 2 + track;
            let sent = timing.blocks.get(&(fragment, block))?;
            Some(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    println!(
        "latency, server send -> buffer out of kvsaudiodemux: {}",
        percentiles(lat, "samples")
    );
}

/// Cuts a live call at random points, about one cut a second, as a flaky
/// network would (a burst of cuts would meet KVS's 5 GetMedia calls a second).
fn resume_gap(runtime: &tokio::runtime::Runtime, seconds: u64) {
    let call = Call::of_seconds(seconds);
    let srv = server(runtime, vec![Stream::from_call("call", &call, true)], true);
    srv.state.faults.cut_max.store(60_000, Ordering::SeqCst);
    srv.state.faults.cuts.store(1000, Ordering::SeqCst);
    let (p, src, _) = pipeline(&srv.endpoint(), "start-selector=earliest");
    let resumed: Arc<Mutex<Vec<Instant>>> = Default::default();
    let r = resumed.clone();
    src.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && b.flags().contains(gst::BufferFlags::DISCONT)
            {
                r.lock().unwrap().push(Instant::now());
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    wait_eos(&p);
    let cuts = srv
        .state
        .timing
        .as_ref()
        .unwrap()
        .lock()
        .unwrap()
        .cuts
        .clone();
    let resumed = resumed.lock().unwrap();
    let gaps: Vec<f64> = cuts
        .iter()
        .filter_map(|c| {
            resumed
                .iter()
                .find(|r| *r > c)
                .map(|r| (*r - *c).as_secs_f64() * 1000.0)
        })
        .collect();
    println!(
        "resume gap, cut -> next byte downstream: {}",
        percentiles(gaps, "samples")
    );
}

/// Scale, against `endpoint` (a demo-call server in another process) or an
/// in-process server. With `phases` above 1, call i reads copy i % phases
/// of the call, the copies starting spread over a fragment (as calls that
/// did not start together); with 1, all calls read blocks sent at the same
/// instants, the worst case. Every tenth call's pads also note when each
/// buffer leaves the demuxer: its lateness (arrival less PTS) above the
/// least seen on that pad is the delay that the load adds.
/// Counts each pipeline's complete fragments and errors from its bus, which
/// it empties (a long run must not keep its messages).
fn drain(pipelines: &[gst::Pipeline], fragments: &mut [usize], errors: &mut usize) {
    for (p, count) in pipelines.iter().zip(fragments.iter_mut()) {
        while let Some(msg) = p.bus().unwrap().pop() {
            match msg.view() {
                gst::MessageView::Element(e)
                    if e.structure().is_some_and(|s| s.name() == "kvs-fragment") =>
                {
                    *count += 1
                }
                gst::MessageView::Error(_) => *errors += 1,
                _ => {}
            }
        }
    }
}

fn scale(
    runtime: &tokio::runtime::Runtime,
    n: usize,
    seconds: u64,
    endpoint: Option<&str>,
    phases: usize,
    every: u64,
) {
    let call = Call::of_seconds(seconds + 30);
    let srv = endpoint.is_none().then(|| {
        let stream = Stream::from_call("demo-call", &call, true);
        let step = Duration::from_millis(call.fragment_ms()) / phases as u32;
        let mut streams: Vec<Stream> = (0..phases)
            .filter(|_| phases > 1)
            .filter_map(|i| stream.live_copy(&format!("demo-call-{i}"), step * (i as u32 + 1)))
            .collect();
        streams.push(stream);
        server(runtime, streams, false)
    });
    let endpoint = srv
        .as_ref()
        .map_or_else(|| endpoint.unwrap().to_string(), |s| s.endpoint());
    let extra = |i: usize| match phases {
        1 => "start-selector=now stream-name=demo-call".to_string(),
        _ => format!("start-selector=now stream-name=demo-call-{}", i % phases),
    };
    let rss0 = rss_mb();
    let (start0, s0) = (usage(), Instant::now());
    let measuring = Arc::new(AtomicBool::new(false));
    let mut pads: Vec<Arc<Mutex<Vec<f64>>>> = Vec::new();
    let pipelines: Vec<_> = (0..n)
        .map(|i| {
            let (p, _, demux) = pipeline(&endpoint, &extra(i));
            if i % 10 == 0 {
                for _ in 0..2 {
                    pads.push(Default::default());
                }
                let seen = [pads[pads.len() - 2].clone(), pads[pads.len() - 1].clone()];
                let (measuring, t0) = (measuring.clone(), Instant::now());
                demux.connect_pad_added(move |_, pad| {
                    let seen = seen[usize::from(pad.name() != "audio_0")].clone();
                    let measuring = measuring.clone();
                    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                        if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                            && measuring.load(Ordering::Relaxed)
                            && let Some(pts) = b.pts()
                        {
                            let late = t0.elapsed().as_secs_f64() * 1000.0 - pts.mseconds() as f64;
                            seen.lock().unwrap().push(late);
                        }
                        gst::PadProbeReturn::Ok
                    });
                });
            }
            p
        })
        .collect();
    for p in &pipelines {
        p.set_state(gst::State::Playing).unwrap();
    }
    let (start, started) = (usage() - start0, s0.elapsed().as_secs_f64());
    // Let them connect, then measure a window.
    std::thread::sleep(Duration::from_secs(3));
    for p in &pipelines {
        while p.bus().unwrap().pop().is_some() {}
    }
    measuring.store(true, Ordering::Relaxed);
    let (use0, t0) = (usage(), Instant::now());
    let (mut fragments, mut errors) = (vec![0; n], 0);
    let behind_now = |fragments: &[usize], wall: f64| {
        let expected = (wall * 1000.0 / call.fragment_ms() as f64).floor() as usize;
        fragments.iter().filter(|&&f| f + 1 < expected).count()
    };
    // In steps of `every`, each a row; the lateness of the first only.
    let (mut step_use, mut step_at) = (use0, t0);
    while t0.elapsed() < Duration::from_secs(seconds) {
        let left = Duration::from_secs(seconds).saturating_sub(t0.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(every)));
        measuring.store(false, Ordering::Relaxed);
        drain(&pipelines, &mut fragments, &mut errors);
        if every < seconds {
            let now = usage();
            let cpu = (now.user + now.system - step_use.user - step_use.system)
                / step_at.elapsed().as_secs_f64();
            println!(
                "  minute {:3.0}: CPU {:4.0}% of one core, RSS {:7.1} MB, {} behind, {errors} errors",
                t0.elapsed().as_secs_f64() / 60.0,
                cpu * 100.0,
                rss_mb(),
                behind_now(&fragments, t0.elapsed().as_secs_f64()),
            );
            (step_use, step_at) = (now, Instant::now());
        }
    }
    let (used, wall) = (usage() - use0, t0.elapsed().as_secs_f64());
    let rss = rss_mb() - rss0;
    let behind = behind_now(&fragments, wall);
    for p in &pipelines {
        p.set_state(gst::State::Null).unwrap();
    }
    let added: Vec<f64> = pads
        .iter()
        .flat_map(|seen| {
            let seen = std::mem::take(&mut *seen.lock().unwrap());
            let least = seen.iter().copied().fold(f64::INFINITY, f64::min);
            seen.into_iter().map(move |late| late - least)
        })
        .collect();
    let server = match (srv.is_some(), phases) {
        (true, 1) => "server in-process, calls in step".to_string(),
        (false, 1) => "server in another process, calls in step".to_string(),
        (true, _) => format!("server in-process, {phases} phases"),
        (false, _) => format!("server in another process, {phases} phases"),
    };
    let pct = |s: f64| s / wall * 100.0;
    println!(
        "scale: {n} live calls for {wall:.1} s ({server}): CPU {:.0}% of one core ({:.0}% user, {:.0}% system), \
         {:.0} context switches/s, RSS {:.2} MB per call, {} of {n} behind real time, {errors} errors\n  \
         start: {n} sources started in {started:.2} s, {:.2} CPU s\n  \
         delay added under load, every tenth call: {}",
        pct(used.user + used.system),
        pct(used.user),
        pct(used.system),
        used.switches / wall,
        rss / n as f64,
        behind,
        start.user + start.system,
        percentiles(added, "buffers")
    );
}

fn main() {
    let value = common::arg;
    let seconds: u64 = value("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let counts: Vec<usize> = value("--scale")
        .unwrap_or_else(|| "100,500,1000".into())
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = value("--endpoint");
    let phases: usize = value("--phases")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    if endpoint.is_none() {
        latency(&runtime, seconds);
        resume_gap(&runtime, seconds);
    }
    let every: u64 = value("--sample-every")
        .and_then(|v| v.parse().ok())
        .unwrap_or(seconds)
        .max(1);
    for n in counts {
        scale(&runtime, n, seconds, endpoint.as_deref(), phases, every);
    }
}
