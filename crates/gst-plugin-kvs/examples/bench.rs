// SPDX-License-Identifier: MPL-2.0
//! Benchmark: kvsaudiodemux against matroskademux on a generated one-hour,
//! two-track Amazon Connect stream and on plain one-track PCM; then the
//! archive recording of that call from the local KVS server to a stereo WAV
//! (kvsgetmediasrc in archive mode, the real AWS SDK over loopback).
//!
//! ```sh
//! cargo run --release --example bench            # one hour
//! cargo run --release --example bench -- --minutes 10
//! cargo run --release --example bench -- --archive-only
//! ```
//!
//! Each run is a child process of its own, so that its peak RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use gst::prelude::*;

mod common;
use kvs_local_server::synth::Call;
use kvs_mkv::writer::{Chunk, TrackSpec};

fn usage() -> ! {
    eprintln!("usage: bench [--minutes N] [--archive-only]");
    std::process::exit(2)
}

/// The Connect call: 1 s fragments of 20 blocks of 50 ms per track, all tags.
fn connect_call(minutes: u64) -> Call {
    Call {
        fragments: minutes * 60,
        blocks_per_fragment: 20,
        block_ms: 50,
        ..Call::default()
    }
}

/// Plain 16-bit PCM, one track, no Connect or KVS tags.
fn write_plain(call: &Call, out: &mut Vec<u8>) {
    for i in 0..call.fragments {
        let mut f: Chunk = call.fragment(i);
        f.tracks = vec![TrackSpec::audio(1, "audio", "A_PCM/INT/LIT", 8000.0, 1, 16)];
        f.blocks.retain(|b| b.track == 1);
        f.tags_before.clear();
        f.tags_after.clear();
        f.write(out);
    }
}

fn ensure_file(path: &Path, make: impl FnOnce() -> Vec<u8>) {
    if !path.exists() {
        let data = make();
        std::fs::write(path, data).unwrap();
    }
}

/// CPU seconds used so far, and the peak RSS in MB (VmHWM: unlike
/// ru_maxrss, it does not carry the parent's peak over exec).
fn cpu_and_rss() -> (f64, f64) {
    (common::cpu_seconds(), common::status_mb("VmHWM"))
}

/// Child: records the whole archived call to a stereo WAV, prints
/// "wall cpu rss data-bytes".
fn archive_child(endpoint: &str, start: &str, end: &str, out: &str, src: &str, demux: &str) {
    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let (cpu0, _) = cpu_and_rss();
    let pipeline = gst::parse::launch(&format!(
        "kvsgetmediasrc stream-name=call region=us-east-1 access-key=AKIDBENCH \
         secret-access-key=bench endpoint-uri={endpoint} start-timestamp={start} end-timestamp={end} \
         {src} ! {demux} name=d interleave name=i ! wavenc ! filesink location={out} \
         d.audio_0 ! queue ! i.sink_0  d.audio_1 ! queue ! i.sink_1"
    ))
    .unwrap();
    let start = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    for msg in pipeline.bus().unwrap().iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                eprintln!("archive: {} ({:?})", e.error(), e.debug());
                std::process::exit(1)
            }
            _ => {}
        }
    }
    let wall = start.elapsed().as_secs_f64();
    pipeline.set_state(gst::State::Null).unwrap();
    let (cpu1, rss) = cpu_and_rss();
    println!("{wall} {} {rss} {}", cpu1 - cpu0, wav_data_size(out));
}

/// The size of a WAV file's data chunk, from its header.
fn wav_data_size(path: &str) -> u32 {
    let wav = std::fs::read(path).unwrap_or_default();
    let mut at = 12;
    while at + 8 <= wav.len() {
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap());
        if &wav[at..at + 4] == b"data" {
            return size;
        }
        at += 8 + size as usize + (size as usize & 1);
    }
    0
}

/// Serves the call from a local KVS server in this process and records it
/// in a child.
fn archive(call: &Call, dir: &Path, minutes: u64) {
    use kvs_local_server::{LocalKvs, State, Stream};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stream = Stream::from_call("call", call, false);
    let bytes: usize = (0..stream.len())
        .filter_map(|i| stream.fragment(i))
        .map(|f| f.archive_len())
        .sum();
    let server = runtime
        .block_on(LocalKvs::start(0, State::new(vec![stream])))
        .unwrap();
    let secs = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let first = call.start_ms + 450;
    let last = first + (call.fragments - 1) * call.fragment_ms();
    let out = dir.join("archive.wav");
    let expected = call.pcm(kvs_local_server::synth::Side::Caller).len() as f64 * 2.0;
    println!(
        "archive recording, {minutes} min call ({:.0} MB over GetMediaForFragmentList) to a stereo WAV:",
        bytes as f64 / 1e6
    );
    // One connection to KVS from afar goes about this fast.
    const FARAWAY: u64 = 20_000_000;
    let merged = "kvsaudiodemux merge-raw-audio=true";
    let runs = [
        (0, 2, "kvsaudiodemux", "a buffer per block"),
        (0, 2, merged, "merge-raw-audio=true"),
        (FARAWAY, 1, merged, "20 MB/s, 1 connection"),
        (FARAWAY, 2, merged, "20 MB/s, 2 connections"),
        (FARAWAY, 5, merged, "20 MB/s, 5 connections"),
    ];
    for (rate, connections, demux, label) in runs {
        server
            .state
            .faults
            .archive_rate
            .store(rate, Ordering::SeqCst);
        let src = format!("archive-connections={connections}");
        let v = child_figures(
            &[
                "--archive-child",
                &server.endpoint(),
                &secs(first),
                &secs(last),
                out.to_str().unwrap(),
                &src,
                demux,
            ],
            4,
        );
        println!(
            "  {label:<24} wall {:.2} s, {:.1} MB/s, CPU {:.2} s, peak RSS {:.1} MB, WAV data {} bytes ({})",
            v[0],
            bytes as f64 / 1e6 / v[0],
            v[1],
            v[2],
            v[3],
            if v[3] == expected {
                "complete"
            } else {
                "WRONG SIZE"
            }
        );
    }
    std::fs::remove_file(out).ok();
}

/// Child: demux one file into fakesinks, print "wall cpu rss".
fn child(demuxer: &str, path: &str) {
    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let (cpu0, _) = cpu_and_rss();
    // The queue puts the demuxer in push mode, as network input is.
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={path} blocksize=65536 ! queue ! {demuxer} name=d"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let demux = pipeline.by_name("d").unwrap();
    let weak = pipeline.downgrade();
    demux.connect_pad_added(move |_, pad| {
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
    let start = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                eprintln!("{demuxer}: {}", e.error());
                break;
            }
            _ => {}
        }
    }
    let wall = start.elapsed().as_secs_f64();
    pipeline.set_state(gst::State::Null).unwrap();
    let (cpu1, rss) = cpu_and_rss();
    println!("{wall} {} {rss}", cpu1 - cpu0);
}

/// Runs this program with `args` and reads the `count` numbers it prints.
fn child_figures(args: &[&str], count: usize) -> Vec<f64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(
        v.len(),
        count,
        "child output: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

struct Figures {
    wall: f64,
    cpu: f64,
    rss: f64,
}

fn run(demuxer: &str, path: &Path) -> Figures {
    let v = child_figures(&["--child", demuxer, path.to_str().unwrap()], 3);
    Figures {
        wall: v[0],
        cpu: v[1],
        rss: v[2],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => return child(&args[2], &args[3]),
        Some("--archive-child") => {
            return archive_child(&args[2], &args[3], &args[4], &args[5], &args[6], &args[7]);
        }
        _ => {}
    }
    let (mut minutes, mut archive_only) = (60, false);
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--minutes" => {
                minutes = rest
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--archive-only" => archive_only = true,
            _ => usage(),
        }
    }
    let call = connect_call(minutes);
    if archive_only {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        return archive(&call, &dir, minutes);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let connect = dir.join(format!("connect-{minutes}min.mkv"));
    let plain = dir.join(format!("pcm-{minutes}min.mkv"));
    ensure_file(&connect, || call.bytes());
    ensure_file(&plain, || {
        let mut out = Vec::new();
        write_plain(&call, &mut out);
        out
    });
    println!(
        "{:<24} {:<14} {:>8} {:>9} {:>8} {:>10}",
        "stream", "demuxer", "wall s", "MB/s", "CPU s", "peak RSS"
    );
    for (label, path) in [
        ("connect, 2 tracks", &connect),
        ("plain PCM, 1 track", &plain),
    ] {
        let mb = std::fs::metadata(path).unwrap().len() as f64 / 1e6;
        let stream = format!("{label} {minutes} min ({mb:.0} MB)");
        let ours = run("kvsaudiodemux", path);
        let lists = run("kvsaudiodemux buffer-lists=true", path);
        let theirs = run("matroskademux", path);
        for (name, f) in [
            ("kvsaudiodemux", &ours),
            ("  buffer-lists", &lists),
            ("matroskademux", &theirs),
        ] {
            println!(
                "{:<24} {:<14} {:>8.2} {:>9.1} {:>8.2} {:>7.1} MB",
                stream.split(" (").next().unwrap(),
                name,
                f.wall,
                mb / f.wall,
                f.cpu,
                f.rss
            );
        }
        println!(
            "{:<24} kvsaudiodemux: {:.1}x faster (wall), {:.1}x less CPU; with buffer-lists {:.1}x and {:.1}x\n",
            "",
            theirs.wall / ours.wall,
            theirs.cpu / ours.cpu,
            theirs.wall / lists.wall,
            theirs.cpu / lists.cpu
        );
    }
    archive(&call, &dir, minutes);
}
