// SPDX-License-Identifier: MPL-2.0
//! PutMedia benchmarks of kvsputmediasink against the local KVS server, which
//! runs in a child process so that its CPU is not counted:
//! - throughput: one stream put as fast as it goes, MB/s and CPU, with KVS's
//!   12.5 MB/s limit and with no limit on either side;
//! - scale: N Connect-like producers (two 8 kHz S16LE tracks each, 64 ms
//!   blocks in real time) in this process: CPU and RSS per producer;
//! - latency: send -> PERSISTED for every fragment of the scale run,
//!   median and p99; and end to end, from a block's producer time (now, as
//!   it is pushed into the sink) to its buffer leaving kvsaudiodemux behind
//!   a kvsgetmediasrc reading at NOW.
//!
//! ```sh
//! cargo run --release --example put_bench -- [--mb 200] [--producers 1000] [--seconds 30]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;
use common::{arg, cpu_seconds, percentiles, rss_mb};
use kvs_local_server::{LocalKvs, State};

/// The child: a local KVS server until stdin closes.
fn serve(rate: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut state = State::new(Vec::new());
    state.put.bytes_per_second = rate;
    // Calls a second per stream are KVS's; many streams start at once.
    state.put.keep = Some(2);
    let server = runtime.block_on(LocalKvs::start(0, state)).unwrap();
    println!("{}", server.endpoint());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Starts the server child; its endpoint.
fn server(rate: u64) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", &rate.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

fn sink(endpoint: &str, stream: &str, extra: &str) -> gst::Element {
    let sink = gst::ElementFactory::make("kvsputmediasink")
        .build()
        .unwrap();
    for (k, v) in [
        ("stream-name", stream),
        ("endpoint-uri", endpoint),
        ("region", "us-east-1"),
        ("access-key", "AKIDBENCH"),
        ("secret-access-key", "bench"),
        ("create-stream", "true"),
    ] {
        sink.set_property_from_str(k, v);
    }
    for kv in extra.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        sink.set_property_from_str(k, v);
    }
    sink
}

/// One side of a Connect call: 8 kHz mono S16LE.
fn connect_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", 8000i32)
        .field("channels", 1i32)
        .build()
}

/// A source pad of our own, linked to a new request pad of `sink`.
fn feeder(sink: &gst::Element, template: &str, caps: &gst::Caps, name: &str) -> gst::Pad {
    let pad = gst::Pad::builder(gst::PadDirection::Src).name(name).build();
    let target = sink.request_pad_simple(template).unwrap();
    pad.link(&target).unwrap();
    pad.set_active(true).unwrap();
    pad.push_event(gst::event::StreamStart::new(name));
    pad.push_event(gst::event::Caps::new(caps));
    pad.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    pad
}

fn wait_eos(p: &gst::Pipeline, limit: Duration) -> bool {
    let bus = p.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    matches!(
        msg.as_ref().map(|m| m.view()),
        Some(gst::MessageView::Eos(_))
    )
}

/// One stream, 1 MB H.264-labelled frames at 25 fps with a key frame a
/// second, pushed as fast as the sink takes them.
fn throughput(mb: u64, limited: bool) {
    let rate = if limited { 12_500_000 } else { 0 };
    let (mut child, endpoint) = server(rate);
    let p = gst::Pipeline::new();
    let extra = format!("max-rate={rate} storage-size=64");
    let s = sink(&endpoint, "fast", &extra);
    p.add(&s).unwrap();
    let caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "avc")
        .field("alignment", "au")
        .field("width", 1920i32)
        .field("height", 1080i32)
        .field("framerate", gst::Fraction::new(25, 1))
        .field(
            "codec_data",
            gst::Buffer::from_slice([1u8, 0x64, 0, 0x28, 0xFF, 0xE0]),
        )
        .build();
    p.set_state(gst::State::Playing).unwrap();
    let pad = feeder(&s, "video_%u", &caps, "video");
    let frame = vec![0x5Au8; 1_000_000];
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for i in 0..mb {
        let mut b = gst::Buffer::from_slice(frame.clone());
        let r = b.get_mut().unwrap();
        r.set_pts(gst::ClockTime::from_mseconds(i * 40));
        if i % 25 != 0 {
            r.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        pad.push(b).unwrap();
    }
    pad.push_event(gst::event::Eos::new());
    assert!(
        wait_eos(&p, Duration::from_secs(600)),
        "the put did not finish"
    );
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = s.property::<gst::Structure>("stats");
    let sent = stats.get::<u64>("bytes-sent").unwrap() as f64 / 1e6;
    println!(
        "throughput ({}): {sent:.0} MB in {secs:.2} s = {:.1} MB/s, CPU {:.0}% of a core ({:.3} CPU s per MB), all {} fragments persisted",
        if limited {
            "KVS's 12.5 MB/s limit"
        } else {
            "no limit"
        },
        sent / secs,
        cpu / secs * 100.0,
        cpu / sent,
        stats.get::<u64>("fragments-persisted").unwrap()
    );
    p.set_state(gst::State::Null).unwrap();
    drop(child.stdin.take());
    let _ = child.wait();
}

/// N producers of two 8 kHz tracks each, pushed in real time from this
/// thread in 64 ms blocks.
fn scale(producers: usize, seconds: u64) {
    let (mut child, endpoint) = server(12_500_000);
    let caps = connect_caps();
    let latencies: Arc<Mutex<Vec<f64>>> = Default::default();
    let rss0 = rss_mb();
    let mut all = Vec::new();
    for n in 0..producers {
        let p = gst::Pipeline::new();
        let s = sink(&endpoint, &format!("call-{n}"), "fragment-duration=2000");
        p.add(&s).unwrap();
        let lat = latencies.clone();
        p.bus().unwrap().set_sync_handler(move |_, msg| {
            if let gst::MessageView::Element(e) = msg.view()
                && let Some(s) = e.structure()
                && s.name() == "kvs-fragment-persisted"
            {
                lat.lock()
                    .unwrap()
                    .push(s.get::<u64>("latency-us").unwrap() as f64 / 1000.0);
            }
            gst::BusSyncReply::Pass
        });
        p.set_state(gst::State::Playing).unwrap();
        let caller = feeder(&s, "audio_%u", &caps, "caller");
        let agent = feeder(&s, "audio_%u", &caps, "agent");
        all.push((p, s, [caller, agent]));
    }
    let block = vec![0x11u8; 64 * 16];
    let blocks = seconds * 1000 / 64;
    // Past the start-up: connections made, first fragments out.
    let mut cpu0 = cpu_seconds();
    let mut t0 = Instant::now();
    let start = Instant::now();
    let mut behind = Duration::ZERO;
    for i in 0..blocks {
        if i == 2000 / 64 {
            cpu0 = cpu_seconds();
            t0 = Instant::now();
        }
        let due = start + Duration::from_millis(i * 64);
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => behind = behind.max(Instant::now() - due),
        }
        for (_, _, pads) in &all {
            for pad in pads {
                let mut b = gst::Buffer::from_slice(block.clone());
                b.get_mut()
                    .unwrap()
                    .set_pts(gst::ClockTime::from_mseconds(i * 64));
                let _ = pad.push(b);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let rss = rss_mb() - rss0;
    for (_, _, pads) in &all {
        for pad in pads {
            pad.push_event(gst::event::Eos::new());
        }
    }
    let mut persisted = 0;
    let mut resent = 0;
    let mut ok = 0;
    for (p, s, _) in &all {
        ok += usize::from(wait_eos(p, Duration::from_secs(60)));
        let stats = s.property::<gst::Structure>("stats");
        persisted += stats.get::<u64>("fragments-persisted").unwrap();
        resent += stats.get::<u64>("fragments-resent").unwrap();
    }
    println!(
        "scale: {producers} Connect producers (2 x 8 kHz S16LE, 64 ms blocks, real time) for {seconds} s: \
         CPU {:.0}% of a core ({:.2}% each), RSS {:.0} MB ({:.2} MiB each), most behind {behind:?}; \
         {ok} ended with every fragment acknowledged, {persisted} fragments persisted, {resent} resent",
        cpu / secs * 100.0,
        cpu / secs * 100.0 / producers as f64,
        rss,
        rss / producers as f64 * 1e6 / 1048576.0
    );
    println!(
        "latency, fragment closed -> PERSISTED (local server, other process): {}",
        percentiles(latencies.lock().unwrap().clone(), "fragments")
    );
    for (p, _, _) in &all {
        p.set_state(gst::State::Null).unwrap();
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

/// One live producer and one live reader: how long a block takes from the
/// sink to the demuxer's output.
fn end_to_end(seconds: u64) {
    let (mut child, endpoint) = server(12_500_000);
    let p = gst::Pipeline::new();
    let s = sink(&endpoint, "e2e", "fragment-duration=1000");
    p.add(&s).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let caps = connect_caps();
    let pad = feeder(&s, "audio_%u", &caps, "caller");
    let unix_caps = gst::Caps::new_empty_simple("timestamp/x-unix");
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    // The stream exists once the sink has created it.
    let push = |i: u64| {
        let mut b = gst::Buffer::from_slice(vec![0x11u8; 64 * 16]);
        let r = b.get_mut().unwrap();
        r.set_pts(gst::ClockTime::from_mseconds(i * 64));
        gst::ReferenceTimestampMeta::add(
            r,
            &unix_caps,
            gst::ClockTime::from_nseconds(now_ns()),
            gst::ClockTime::NONE,
        );
        let _ = pad.push(b);
    };
    push(0);
    std::thread::sleep(Duration::from_millis(500));
    let reader = gst::parse::launch(&format!(
        "kvsgetmediasrc stream-name=e2e region=us-east-1 access-key=AKIDBENCH secret-access-key=bench \
         endpoint-uri={endpoint} start-selector=now idle-timeout=2000 ! kvsaudiodemux name=d d.audio_0 ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let lat: Arc<Mutex<Vec<f64>>> = Default::default();
    let l = lat.clone();
    // Blocks pushed before the reader started are not measured.
    let from = now_ns() + 600_000_000;
    let demux = reader.by_name("d").unwrap();
    demux.connect_pad_added(move |_, pad| {
        let l = l.clone();
        let unix_caps = gst::Caps::new_empty_simple("timestamp/x-unix");
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && let Some(m) = b
                    .iter_meta::<gst::ReferenceTimestampMeta>()
                    .find(|m| m.reference().is_subset(&unix_caps))
            {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                let at = m.timestamp().nseconds();
                if at >= from {
                    l.lock().unwrap().push(now.saturating_sub(at) as f64 / 1e6);
                }
            }
            gst::PadProbeReturn::Ok
        });
    });
    reader.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    for i in 1..seconds * 1000 / 64 {
        let due = start + Duration::from_millis(i * 64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        push(i);
    }
    pad.push_event(gst::event::Eos::new());
    wait_eos(&p, Duration::from_secs(30));
    wait_eos(&reader, Duration::from_secs(30));
    // Producer times are ms in Matroska: the time a block carries is
    // rounded down, adding up to 1 ms here.
    println!(
        "end to end, block pushed into kvsputmediasink -> buffer out of kvsaudiodemux (GetMedia at NOW): {}",
        percentiles(lat.lock().unwrap().clone(), "blocks")
    );
    p.set_state(gst::State::Null).unwrap();
    reader.set_state(gst::State::Null).unwrap();
    drop(child.stdin.take());
    let _ = child.wait();
}

fn main() {
    if let Some(rate) = arg("--serve") {
        serve(rate.parse().unwrap());
        return;
    }
    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let mb: u64 = arg("--mb").map_or(200, |v| v.parse().unwrap());
    let producers: usize = arg("--producers").map_or(1000, |v| v.parse().unwrap());
    let seconds: u64 = arg("--seconds").map_or(30, |v| v.parse().unwrap());
    if mb > 0 {
        throughput(mb, true);
        throughput(mb, false);
    }
    if producers > 0 {
        scale(producers, seconds);
    }
    end_to_end(seconds.min(20));
}
