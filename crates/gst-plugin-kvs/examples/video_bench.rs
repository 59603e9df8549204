// SPDX-License-Identifier: MPL-2.0
//! Video benchmarks of kvsdemux on synthetic H.264 cameras (640x360, 25 fps,
//! about 1 Mbit/s, from x264enc):
//! - added latency: a block's last byte into kvsdemux -> its frame out, fed
//!   block by block and in 1448-byte network segments;
//! - end to end on the local server at real time: producer timestamp ->
//!   decoded frame out of avdec_h264;
//! - scale: N live cameras in one process (source + kvsdemux + fakesink, no
//!   decoding): CPU and RSS per camera.
//!
//! ```sh
//! cargo run --release --example video_bench -- [--seconds 20] [--scale 100]
//! # scale only, against a server in another process (its CPU not counted):
//! cargo run --release --bin kvs-local-server -- --camera cam=600 &
//! cargo run --release --example video_bench -- --scale 100 --endpoint http://127.0.0.1:PORT
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gst::prelude::*;

mod common;
use common::{cpu_seconds, percentiles, rss_mb};
use kvs_local_server::synth::camera::{Camera, Encoded};
use kvs_local_server::{LocalKvs, State, Stream};
use kvs_mkv::{Event, Parser};

fn camera(fragments: u32) -> (Camera, Encoded) {
    let camera = Camera {
        fragments,
        encoded_fragments: 5,
        ..Camera::default()
    };
    let enc = camera
        .encode()
        .expect("x264enc (gstreamer1.0-plugins-ugly)");
    (camera, enc)
}

/// Feeds `data` to kvsdemux in pieces ending at `cuts`, `pace` apart, and
/// times each frame from the push that held its block's last byte (frame
/// `k` ends at `ends[k]`) to its leaving the demuxer.
fn added_latency(data: &[u8], ends: &[usize], cuts: &[usize], pace: Duration) -> Vec<f64> {
    let pipeline = gst::parse::launch(
        "appsrc name=src caps=video/x-matroska format=bytes ! kvsdemux name=d ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    // Push from this thread straight into the demuxer's chain function.
    let demux = pipeline.by_name("d").unwrap();
    let sink = demux.static_pad("sink").unwrap();
    let src = pipeline.by_name("src").unwrap();
    let out: Arc<Mutex<Vec<Instant>>> = Default::default();
    let o = out.clone();
    demux.connect_pad_added(move |_, pad| {
        let o = o.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            o.lock().unwrap().push(Instant::now());
            gst::PadProbeReturn::Ok
        });
    });
    pipeline.set_state(gst::State::Paused).unwrap();
    let feeder = src.static_pad("src").unwrap();
    feeder.unlink(&sink).unwrap();
    let own = gst::Pad::new(gst::PadDirection::Src);
    own.set_active(true).unwrap();
    own.link(&sink).unwrap();
    own.push_event(gst::event::StreamStart::new("bench"));
    own.push_event(gst::event::Caps::new(&gst::Caps::new_empty_simple(
        "video/x-matroska",
    )));
    own.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::format::Bytes,
    >::new()));
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut pushed = Vec::with_capacity(cuts.len());
    let mut from = 0;
    let mut next = Instant::now();
    for &cut in cuts {
        let buffer = gst::Buffer::from_slice(data[from..cut].to_vec());
        from = cut;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += pace;
        pushed.push(Instant::now());
        own.push(buffer).unwrap();
    }
    own.push_event(gst::event::Eos::new());
    pipeline.set_state(gst::State::Null).unwrap();
    let out = out.lock().unwrap();
    ends.iter()
        .zip(out.iter())
        .map(|(&end, t)| {
            let push = cuts.partition_point(|&c| c < end);
            t.duration_since(pushed[push]).as_secs_f64() * 1000.0
        })
        .collect()
}

fn demux_latency() {
    let (camera, enc) = camera(50);
    let data: Vec<u8> = camera
        .fragments(&enc)
        .iter()
        .flat_map(|f| f.to_bytes())
        .collect();
    let mut events = Vec::new();
    Parser::default().parse(&data, &mut events);
    let ends: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Block(b) => b.frames.iter().map(|r| r.end).max(),
            _ => None,
        })
        .collect();
    // Each push ends with a block; the last one takes the rest.
    let mut cuts = ends.clone();
    cuts.push(data.len());
    let now = Duration::ZERO;
    println!(
        "added latency, block's last byte in -> frame out of kvsdemux, fed block by block: {}",
        percentiles(added_latency(&data, &ends, &cuts, now), "frames")
    );
    let segments: Vec<usize> = (1448..data.len())
        .step_by(1448)
        .chain([data.len()])
        .collect();
    println!(
        "added latency, fed in 1448-byte segments: {}",
        percentiles(added_latency(&data, &ends, &segments, now), "frames")
    );
    // In real time: a block whose last bytes could begin a chunk start
    // waits for the next block, 40 ms later (see the README).
    let live = 500;
    let paced = added_latency(
        &data,
        &ends[..live],
        &cuts[..=live],
        Duration::from_millis(40),
    );
    let held = paced.iter().filter(|&&ms| ms > 5.0).count();
    println!(
        "added latency, fed block by block at 25 fps: {} ({held} of {live} frames held for the next block)",
        percentiles(paced, "frames")
    );
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn server(runtime: &tokio::runtime::Runtime, stream: Stream) -> LocalKvs {
    let state = State::new(vec![stream]);
    state
        .faults
        .idle_end_ms
        .store(500, std::sync::atomic::Ordering::SeqCst);
    runtime.block_on(LocalKvs::start(0, state)).unwrap()
}

fn launch(endpoint: &str, stream: &str, tail: &str) -> gst::Pipeline {
    gst::parse::launch(&format!(
        "kvsgetmediasrc name=src region=us-east-1 access-key=AKIDBENCH secret-access-key=bench \
         endpoint-uri={endpoint} stream-name={stream} idle-timeout=2000 start-selector=now ! \
         kvsdemux name=d {tail}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap()
}

fn end_to_end(runtime: &tokio::runtime::Runtime, seconds: u64) {
    let (mut camera, enc) = camera(seconds.div_ceil(2) as u32 + 1);
    camera.start_ms = now_ns() / 1_000_000;
    let srv = server(runtime, Stream::from_camera("cam", &camera, &enc, true));
    let p = launch(
        &srv.endpoint(),
        "cam",
        "d.video_0 ! h264parse ! avdec_h264 ! fakesink name=sink sync=false",
    );
    let lat: Arc<Mutex<Vec<f64>>> = Default::default();
    let l = lat.clone();
    let unix = gst::Caps::new_empty_simple("timestamp/x-unix");
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && let Some(m) = b
                    .iter_meta::<gst::ReferenceTimestampMeta>()
                    .find(|m| m.reference().is_subset(&unix))
            {
                let ms = now_ns().saturating_sub(m.timestamp().nseconds()) as f64 / 1e6;
                l.lock().unwrap().push(ms);
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(seconds + 30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    // GetMedia NOW starts at the newest fragment's first frame: the frames
    // already made before the pipeline joined are not live; drop them.
    let lat = lat.lock().unwrap();
    let live: Vec<f64> = lat
        .iter()
        .skip(camera.fragment_frames as usize)
        .copied()
        .collect();
    println!(
        "end to end, producer timestamp -> decoded frame (the local server sends each frame once \
         its 40 ms have passed): {}",
        percentiles(live, "frames")
    );
}

fn scale(runtime: &tokio::runtime::Runtime, n: usize, seconds: u64, endpoint: Option<&str>) {
    let srv = endpoint.is_none().then(|| {
        let (mut camera, enc) = camera(seconds.div_ceil(2) as u32 + 10);
        camera.start_ms = now_ns() / 1_000_000;
        server(runtime, Stream::from_camera("cam", &camera, &enc, true))
    });
    let endpoint = srv
        .as_ref()
        .map_or_else(|| endpoint.unwrap().to_string(), |s| s.endpoint());
    let frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rss0 = rss_mb();
    let pipelines: Vec<gst::Pipeline> = (0..n)
        .map(|_| {
            let p = launch(&endpoint, "cam", "d.video_0 ! fakesink sync=false");
            let f = frames.clone();
            p.by_name("d").unwrap().connect_pad_added(move |_, pad| {
                let f = f.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            });
            p
        })
        .collect();
    for p in &pipelines {
        p.set_state(gst::State::Playing).unwrap();
    }
    std::thread::sleep(Duration::from_secs(4));
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let frames0 = frames.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let got = frames.load(std::sync::atomic::Ordering::Relaxed) - frames0;
    let rss = rss_mb() - rss0;
    let mut errors = 0;
    for p in &pipelines {
        while let Some(msg) = p.bus().unwrap().pop_filtered(&[gst::MessageType::Error]) {
            errors += 1;
            if errors == 1 {
                eprintln!("{msg:?}");
            }
        }
        p.set_state(gst::State::Null).unwrap();
    }
    let server = if srv.is_some() {
        "server in-process"
    } else {
        "server in another process"
    };
    println!(
        "scale: {n} live cameras for {wall:.1} s ({server}): CPU {:.1}% of one core ({:.2}% per \
         camera), RSS {:.2} MB per camera, {:.1} fps per camera, {errors} errors",
        cpu / wall * 100.0,
        cpu / wall * 100.0 / n as f64,
        rss / n as f64,
        got as f64 / wall / n as f64,
    );
}

fn main() {
    let value = common::arg;
    let seconds: u64 = value("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let counts: Vec<usize> = value("--scale")
        .unwrap_or_else(|| "100".into())
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
    if endpoint.is_none() {
        demux_latency();
        end_to_end(&runtime, seconds);
    }
    for n in counts {
        scale(&runtime, n, seconds, endpoint.as_deref());
    }
}
