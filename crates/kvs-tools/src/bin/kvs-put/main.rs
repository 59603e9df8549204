// SPDX-License-Identifier: MPL-2.0
//! kvs-put: puts a media file or the synthetic demo call into a Kinesis
//! video stream through kvsputmediasink, with a progress line and a summary.

mod args;

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use gst::prelude::*;
use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{LocalKvs, State, Stream};

use args::{Args, Input};
use kvs_tools::cli::Read;
use kvs_tools::failure::BusError;

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if kvs_tools::cli::generate::<args::Cli>(&all) {
        return;
    }
    let args = match args::parse(all) {
        Ok(Read::Args(a)) => a,
        Ok(Read::Said(text)) => {
            print!("{text}");
            return;
        }
        Err(mistake) => kvs_tools::cli::usage_exit("kvs-put", &mistake),
    };
    if let Err(e) = run(&args) {
        eprintln!("kvs-put: {}", e.text);
        std::process::exit(e.code);
    }
}

/// How a put failed: what to say, and the exit status.
struct Failed {
    text: String,
    code: i32,
}

impl From<String> for Failed {
    fn from(text: String) -> Failed {
        Failed { text, code: 1 }
    }
}

fn run(args: &Args) -> Result<(), Failed> {
    gst::init().map_err(|e| format!("GStreamer: {e}"))?;
    gstkvs::plugin_register_static().map_err(|e| format!("the kvs plugin: {e}"))?;
    if args.verbose {
        gst::log::set_threshold_from_string("kvs*:4", false);
    }
    // --local: a server of our own, with the stream already there.
    let local = if args.local {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let name = args.stream_name.clone().unwrap_or_default();
        let state = State::new(vec![Stream::empty(&name, 24)]);
        let server = runtime
            .block_on(LocalKvs::start(0, state))
            .map_err(|e| format!("cannot start the local server: {e}"))?;
        Some((runtime, server))
    } else {
        None
    };
    let sink = gst::ElementFactory::make("kvsputmediasink")
        .name("sink")
        .property("fragment-duration", args.fragment_duration_ms)
        .build()
        .map_err(|e| e.to_string())?;
    let set = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            sink.set_property(name, v);
        }
    };
    set("stream-name", &args.stream_name);
    set("stream-arn", &args.stream_arn);
    set("region", &args.region);
    set("endpoint-uri", &args.endpoint_uri);
    if let Some((_, server)) = &local {
        sink.set_property("endpoint-uri", server.endpoint());
        sink.set_property("region", "us-east-1");
        sink.set_property("access-key", "AKIDLOCAL");
        sink.set_property("secret-access-key", "local");
    }
    if let Some(hours) = args.create_stream {
        sink.set_property("create-stream", true);
        sink.set_property("retention-period", hours);
    }
    let pipeline = gst::Pipeline::new();
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    let what = match &args.input {
        Input::Demo => {
            demo(&pipeline, &sink, args)?;
            format!("the {} s demo call", args.demo_seconds)
        }
        Input::File(path) => {
            file(&pipeline, &sink, path, args.realtime)?;
            path.clone()
        }
        Input::None => unreachable!("parse asks for an input"),
    };
    let stream = args
        .stream_name
        .clone()
        .or(args.stream_arn.clone())
        .unwrap_or_default();
    put(&pipeline, &sink, &what, &stream, args)
}

/// Plays to EOS (every fragment acknowledged) or the first error.
fn put(
    pipeline: &gst::Pipeline,
    sink: &gst::Element,
    what: &str,
    stream: &str,
    args: &Args,
) -> Result<(), Failed> {
    let quiet = args.quiet;
    let started = Instant::now();
    // A failed start shows as an error on the bus.
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let mut last = Instant::now();
    let result = loop {
        if !quiet && last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            eprint!("\r{}   ", progress(sink, started.elapsed()));
            let _ = std::io::stderr().flush();
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => {
                let error = BusError::of(e);
                let mut text =
                    error.line("check --stream and --region, or give --create-stream to create it");
                if args.verbose && !error.debug.is_empty() {
                    text += &format!("\nkvs-put: detail: {}", error.debug);
                }
                let code = if error.is_usage() {
                    text += "\nTry 'kvs-put --help'.";
                    2
                } else {
                    1
                };
                break Err(Failed { text, code });
            }
            gst::MessageView::Warning(w) => {
                eprintln!("\nkvs-put: warning: {}", w.error());
            }
            _ => {}
        }
    };
    let stats = sink.property::<gst::Structure>("stats");
    let _ = pipeline.set_state(gst::State::Null);
    if !quiet {
        eprintln!("\r{}   ", progress_of(&stats, started.elapsed()));
    }
    result?;
    let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "kvs-put: put {what} into stream {stream}: {} fragments acknowledged ({} sent again), \
         {:.1} MB in {secs:.1} s ({:.2} MB/s), {} connection(s); send to PERSISTED {} ms mean, {} ms max",
        get("fragments-persisted"),
        get("fragments-resent"),
        get("bytes-sent") as f64 / 1e6,
        get("bytes-sent") as f64 / 1e6 / secs.max(1e-3),
        get("connections"),
        get("mean-latency-ms"),
        get("max-latency-ms"),
    );
    Ok(())
}

fn progress(sink: &gst::Element, elapsed: Duration) -> String {
    progress_of(&sink.property::<gst::Structure>("stats"), elapsed)
}

fn progress_of(stats: &gst::Structure, elapsed: Duration) -> String {
    let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    format!(
        "{:.1} s: {} fragments acknowledged, {} buffered, {:.2} MB sent",
        elapsed.as_secs_f64(),
        get("fragments-persisted"),
        get("buffered-fragments"),
        get("bytes-sent") as f64 / 1e6
    )
}

/// What decodebin stops at: the codecs the sink takes, else raw media.
const TAKEN: &str = "video/x-h264; video/x-h265; audio/mpeg, mpegversion=(int){2, 4}; \
                     audio/x-alaw; audio/x-mulaw; audio/x-opus; video/x-raw; audio/x-raw";

/// `decodebin` for the file, stopping at the codecs the sink takes; what
/// else it holds is decoded, and video encoded to H.264.
fn file(
    pipeline: &gst::Pipeline,
    sink: &gst::Element,
    path: &str,
    realtime: bool,
) -> Result<(), String> {
    if !std::path::Path::new(path).is_file() {
        return Err(format!("{path}: no such file"));
    }
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path)
        .build()
        .map_err(|e| e.to_string())?;
    let parse = gst::ElementFactory::make("decodebin")
        .property("caps", gst::Caps::from_str(TAKEN).unwrap())
        .build()
        .map_err(|e| e.to_string())?;
    pipeline
        .add_many([&src, &parse])
        .map_err(|e| e.to_string())?;
    src.link(&parse).map_err(|e| e.to_string())?;
    let weak = pipeline.downgrade();
    let sink = sink.clone();
    let counts = std::sync::Mutex::new((0u32, 0u32));
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else {
            return;
        };
        let video = s.name().starts_with("video/");
        let audio = s.name().starts_with("audio/");
        let mut counts = counts.lock().unwrap();
        let room = (video && counts.0 < 1) || (audio && counts.1 < 2);
        let chain = if room {
            branch(s)
        } else {
            "fakesink sync=false async=false".into()
        };
        let bin = match gst::parse::bin_from_description(&chain, true) {
            Ok(bin) => bin,
            Err(e) => {
                eprintln!("kvs-put: cannot handle {}: {e}", s.name());
                return;
            }
        };
        let _ = pipeline.add(&bin);
        let _ = bin.sync_state_with_parent();
        if let Err(e) = pad.link(&bin.static_pad("sink").unwrap()) {
            eprintln!("kvs-put: cannot take {}: {e:?}", s.name());
        }
        if !room {
            return;
        }
        let out: gst::Element = if realtime {
            let sync = gst::ElementFactory::make("clocksync").build().unwrap();
            let _ = pipeline.add(&sync);
            let _ = sync.sync_state_with_parent();
            let _ = bin.link(&sync);
            sync
        } else {
            bin.upcast()
        };
        let template = if video { "video_%u" } else { "audio_%u" };
        if video {
            counts.0 += 1
        } else {
            counts.1 += 1
        }
        if let Some(target) = sink.request_pad_simple(template)
            && out.static_pad("src").unwrap().link(&target).is_err()
        {
            eprintln!("kvs-put: cannot link {} to the sink", s.name());
        }
    });
    Ok(())
}

/// A gst-launch chain from a parsed stream to what the sink takes.
fn branch(s: &gst::StructureRef) -> String {
    match s.name().as_str() {
        "video/x-h264" => {
            "h264parse ! capsfilter caps=\"video/x-h264,stream-format=avc,alignment=au\"".into()
        }
        "video/x-h265" => {
            "h265parse ! capsfilter caps=\"video/x-h265,stream-format=hvc1,alignment=au\"".into()
        }
        "audio/mpeg" if s.get::<i32>("mpegversion").is_ok_and(|v| v == 4 || v == 2) => {
            "aacparse ! capsfilter caps=\"audio/mpeg,mpegversion=4,stream-format=raw\"".into()
        }
        "audio/x-alaw" | "audio/x-mulaw" | "audio/x-opus" => "identity".into(),
        "video/x-raw" => "videoconvert ! \
             x264enc tune=zerolatency speed-preset=veryfast key-int-max=50 ! h264parse ! \
             capsfilter caps=\"video/x-h264,stream-format=avc,alignment=au\""
            .into(),
        _ => "audioconvert ! capsfilter caps=\"audio/x-raw,format=S16LE\"".into(),
    }
}

/// The demo call: two appsrcs, one per side, in 64 ms blocks.
fn demo(pipeline: &gst::Pipeline, sink: &gst::Element, args: &Args) -> Result<(), String> {
    let call = Call::demo(args.demo_seconds);
    sink.set_property(
        "fragment-tags",
        gst::Structure::builder("tags")
            .field("ContactId", call.contact_id.as_str())
            .field("MimeType", call.mime_type.as_str())
            .build(),
    );
    for (i, side) in [Side::Caller, Side::Agent].into_iter().enumerate() {
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("audio/x-raw")
                    .field("format", "S16LE")
                    .field("layout", "interleaved")
                    .field("rate", 8000i32)
                    .field("channels", 1i32)
                    .build(),
            )
            .format(gst::Format::Time)
            .build();
        pipeline.add(&src).map_err(|e| e.to_string())?;
        let pad = sink
            .request_pad_simple("audio_%u")
            .ok_or("the sink has no room for another track")?;
        pad.set_property("track-name", side.track_name());
        let last: gst::Element = if args.realtime {
            let sync = gst::ElementFactory::make("clocksync").build().unwrap();
            pipeline.add(&sync).map_err(|e| e.to_string())?;
            src.link(&sync).map_err(|e| e.to_string())?;
            sync
        } else {
            src.clone().upcast()
        };
        last.static_pad("src")
            .unwrap()
            .link(&pad)
            .map_err(|e| format!("cannot link side {i}: {e}"))?;
        // Silence shows as zeros: a real call's tracks run all along.
        let pcm = call.pcm_with_silence(side);
        let block = (call.block_ms * 8 * 2) as usize;
        for (n, piece) in pcm.chunks(block).enumerate() {
            let mut buffer = gst::Buffer::from_slice(piece.to_vec());
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(n as u64 * call.block_ms));
            b.set_duration(gst::ClockTime::from_mseconds(call.block_ms));
            src.push_buffer(buffer).map_err(|e| e.to_string())?;
        }
        src.end_of_stream().map_err(|e| e.to_string())?;
    }
    Ok(())
}
