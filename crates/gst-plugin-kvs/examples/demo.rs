// SPDX-License-Identifier: MPL-2.0
//! Records a synthetic Amazon Connect call to a stereo WAV, caller left and
//! agent right, through kvsaudiodemux and interleave, printing each KVS
//! fragment as it completes. No AWS account needed.
//!
//! ```sh
//! cargo run --release --example demo -- [--seconds N] [--out call.wav]
//! cargo run --release --example demo -- --write-capture call.mkv
//! ```

use gst::prelude::*;
use kvs_local_server::synth::{AGENT, CALLER, Call};

struct Args {
    seconds: u64,
    out: String,
    capture: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 30,
        out: "demo-call.wav".into(),
        capture: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--out" => args.out = value()?,
            "--write-capture" => args.capture = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "Usage: demo [--seconds N] [--out FILE.wav] [--write-capture FILE.mkv]\n\n\
                     Records a synthetic two-party Connect call (N seconds, default 30) to a stereo\n\
                     WAV: caller left, agent right. --write-capture writes the call as a KVS\n\
                     GetMedia capture instead, for the gst-launch recipes in the README."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(args)
}

/// The track name a kvsaudiodemux pad carries in its sticky tag event.
fn track_name(pad: &gst::Pad) -> Option<String> {
    let tags = pad.sticky_event::<gst::event::Tag>(0)?;
    tags.tag()
        .get::<gst::tags::Title>()
        .map(|t| t.get().to_string())
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("demo: {e}");
        std::process::exit(2)
    });
    // The agent says nothing from 3 s to 5 s: that channel gets silence.
    let call = Call::demo(args.seconds);
    let bytes = call.bytes();
    if let Some(path) = args.capture {
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        println!(
            "Wrote {path}: {} fragments, {} bytes",
            call.fragments,
            bytes.len()
        );
        return;
    }

    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src caps=video/x-matroska format=bytes ! kvsaudiodemux name=d \
         interleave name=mix ! audioconvert ! wavenc ! filesink location={}",
        args.out
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let demux = pipeline.by_name("d").unwrap();
    let mix = pipeline.by_name("mix").unwrap();
    // Request left, then right, so the channel order is fixed.
    let left = mix.request_pad_simple("sink_%u").unwrap();
    let right = mix.request_pad_simple("sink_%u").unwrap();
    let weak = pipeline.downgrade();
    demux.connect_pad_added(move |_, pad| {
        let pipeline = weak.upgrade().unwrap();
        let name = track_name(pad).unwrap_or_default();
        let (target, side) = match name.as_str() {
            CALLER => (left.clone(), "left"),
            AGENT => (right.clone(), "right"),
            _ => {
                println!(
                    "{}: track {name:?} is not part of the stereo mix",
                    pad.name()
                );
                let sink = gst::ElementFactory::make("fakesink").build().unwrap();
                pipeline.add(&sink).unwrap();
                sink.sync_state_with_parent().unwrap();
                pad.link(&sink.static_pad("sink").unwrap()).unwrap();
                return;
            }
        };
        println!("{}: {name} -> {side} channel", pad.name());
        let queue = gst::ElementFactory::make("queue").build().unwrap();
        pipeline.add(&queue).unwrap();
        queue.sync_state_with_parent().unwrap();
        pad.link(&queue.static_pad("sink").unwrap()).unwrap();
        queue.static_pad("src").unwrap().link(&target).unwrap();
    });

    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    // Arrive in 4 KiB pieces, as from the network.
    for chunk in bytes.chunks(4096) {
        src.push_buffer(gst::Buffer::from_slice(chunk.to_vec()))
            .unwrap();
    }
    src.end_of_stream().unwrap();

    let bus = pipeline.bus().unwrap();
    let mut fragments = 0;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Element(e)
                if e.structure().is_some_and(|s| s.name() == "kvs-fragment") =>
            {
                let s = e.structure().unwrap();
                fragments += 1;
                if fragments <= 3 || fragments == call.fragments {
                    println!(
                        "fragment {fragments}/{}: number {} contact {}",
                        call.fragments,
                        s.get::<&str>("fragment-number").unwrap_or("?"),
                        s.get::<&str>("contact-id").unwrap_or("?")
                    );
                } else if fragments == 4 {
                    println!("...");
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                eprintln!("demo: {} ({:?})", e.error(), e.debug());
                std::process::exit(1);
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "Recorded {:.1} s of stereo audio from {fragments} fragments to {} ({size} bytes): caller left, agent right",
        (size.saturating_sub(44)) as f64 / (8000.0 * 4.0),
        args.out
    );
}
