// SPDX-License-Identifier: MPL-2.0
//! Many cameras in one process: one `kvsgetmediasrc ! kvsdemux` pipeline per
//! stream, no decoding. Every few seconds, and at the end, it prints each
//! camera's frame rate, end-to-end latency (producer timestamp to the frame
//! leaving the demuxer) and reconnects.
//!
//! ```sh
//! cargo run --release --example cameras -- --seconds 60 cam-1 cam-2 cam-3
//! cargo run --release --example cameras -- --endpoint-uri http://127.0.0.1:4566 --region us-east-1 camera
//! ```
//!
//! Credentials come from the AWS SDK's default chain.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gst::prelude::*;

#[derive(Default)]
struct Counts {
    frames: u64,
    /// Latency of each frame, in ms.
    latencies: Vec<f64>,
}

struct Camera {
    name: String,
    pipeline: gst::Pipeline,
    counts: Arc<Mutex<Counts>>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn open(name: &str, region: Option<&str>, endpoint: Option<&str>) -> Result<Camera, String> {
    let pipeline = gst::parse::launch(
        "kvsgetmediasrc name=src idle-timeout=10000 ! kvsdemux name=demux ! fakesink sync=false",
    )
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap();
    src.set_property("stream-name", name);
    if let Some(region) = region {
        src.set_property("region", region);
    }
    if let Some(endpoint) = endpoint {
        src.set_property("endpoint-uri", endpoint);
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let c = counts.clone();
    let unix = gst::Caps::new_empty_simple("timestamp/x-unix");
    pipeline
        .by_name("demux")
        .unwrap()
        .connect_pad_added(move |_, pad| {
            if !pad.name().starts_with("video_") {
                return;
            }
            let (c, unix) = (c.clone(), unix.clone());
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let Some(gst::PadProbeData::Buffer(b)) = &info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                let producer = b
                    .iter_meta::<gst::ReferenceTimestampMeta>()
                    .find(|m| m.reference().is_subset(&unix))
                    .map(|m| m.timestamp().nseconds());
                let mut c = c.lock().unwrap();
                c.frames += 1;
                if let Some(p) = producer {
                    c.latencies.push(now_ns().saturating_sub(p) as f64 / 1e6);
                }
                gst::PadProbeReturn::Ok
            });
        });
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Camera {
        name: name.into(),
        pipeline,
        counts,
    })
}

fn report(cam: &Camera, seconds: f64) {
    let mut c = cam.counts.lock().unwrap();
    let mut lat = std::mem::take(&mut c.latencies);
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q) as usize).copied();
    let stats = cam
        .pipeline
        .by_name("src")
        .unwrap()
        .property::<gst::Structure>("stats");
    println!(
        "camera {}: {} frames, {:.1} fps, latency median {} ms, p99 {} ms, reconnects {}",
        cam.name,
        c.frames,
        c.frames as f64 / seconds,
        at(0.5).map_or("-".into(), |v| format!("{v:.1}")),
        at(0.99).map_or("-".into(), |v| format!("{v:.1}")),
        stats.get::<u64>("reconnects").unwrap_or(0),
    );
    c.frames = 0;
}

/// Reads several camera streams in one process and prints each one's
/// frame rate, latency and reconnects every few seconds.
#[derive(clap::Parser)]
#[command(name = "cameras")]
struct Args {
    /// The camera streams' names
    #[arg(value_name = "STREAM", required = true)]
    names: Vec<String>,
    /// How long to read, in seconds
    #[arg(long, value_name = "S", default_value_t = 30)]
    seconds: u64,
    /// Seconds between reports
    #[arg(long, value_name = "S", default_value_t = 5)]
    every: u64,
    /// AWS region [default: the SDK's region chain]
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// KVS endpoint to use instead of AWS's (a local server)
    #[arg(long, value_name = "URL")]
    endpoint_uri: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        names,
        seconds,
        every,
        region,
        endpoint_uri: endpoint,
    } = <Args as clap::Parser>::parse();
    gst::init()?;
    gstkvs::plugin_register_static()?;
    let cameras: Vec<Camera> = names
        .iter()
        .map(|n| open(n, region.as_deref(), endpoint.as_deref()))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let mut last = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(100));
        for cam in &cameras {
            let bus = cam.pipeline.bus().unwrap();
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = msg.view() {
                    eprintln!("camera {}: {}", cam.name, e.error());
                }
            }
        }
        if last.elapsed() >= Duration::from_secs(every) || start.elapsed().as_secs() >= seconds {
            let span = last.elapsed().as_secs_f64();
            last = Instant::now();
            cameras.iter().for_each(|c| report(c, span));
        }
    }
    for cam in &cameras {
        cam.pipeline.set_state(gst::State::Null)?;
    }
    Ok(())
}
