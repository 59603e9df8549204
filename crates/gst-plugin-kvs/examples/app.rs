// SPDX-License-Identifier: MPL-2.0
//! Embedding the elements in a Rust application: records a stream to a
//! stereo WAV (caller left, agent right, chosen by track name) and prints
//! each `kvs-fragment` message as the fragment completes.
//!
//! ```sh
//! cargo run --release --example app -- --stream NAME [--region R] [--endpoint-uri URL]
//! ```
//!
//! Credentials come from the AWS SDK's default chain.

use gst::prelude::*;

const CALLER: &str = "AUDIO_FROM_CUSTOMER";
const AGENT: &str = "AUDIO_TO_CUSTOMER";

/// Records a Kinesis video stream's Connect call to app-call.wav (caller
/// left, agent right) and prints each fragment as it completes.
#[derive(clap::Parser)]
#[command(name = "app")]
struct Args {
    /// The stream's name
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// AWS region [default: the SDK's region chain]
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// KVS endpoint to use instead of AWS's (a local server)
    #[arg(long, value_name = "URL")]
    endpoint_uri: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    gst::init()?;
    // An application that ships the plugin could load it from its
    // GST_PLUGIN_PATH instead; registering it statically needs no install.
    gstkvs::plugin_register_static()?;

    let pipeline = gst::parse::launch(
        "kvsgetmediasrc name=src start-selector=earliest idle-timeout=2000 ! kvsaudiodemux name=demux \
         interleave name=mix ! audioconvert ! wavenc ! filesink location=app-call.wav",
    )?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap();
    src.set_property("stream-name", &args.stream);
    if let Some(region) = &args.region {
        src.set_property("region", region);
    }
    if let Some(endpoint) = &args.endpoint_uri {
        src.set_property("endpoint-uri", endpoint);
    }

    // Request the left channel first, so the order is fixed.
    let mix = pipeline.by_name("mix").unwrap();
    let left = mix.request_pad_simple("sink_%u").unwrap();
    let right = mix.request_pad_simple("sink_%u").unwrap();
    let weak = pipeline.downgrade();
    pipeline
        .by_name("demux")
        .unwrap()
        .connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            // The track name comes in the pad's sticky tag event.
            let name = pad
                .sticky_event::<gst::event::Tag>(0)
                .and_then(|t| {
                    t.tag()
                        .get::<gst::tags::Title>()
                        .map(|t| t.get().to_string())
                })
                .unwrap_or_default();
            let target = match name.as_str() {
                CALLER => &left,
                AGENT => &right,
                _ if !left.is_linked() => &left,
                _ => &right,
            };
            println!("{} ({name}) -> {}", pad.name(), target.name());
            let queue = gst::ElementFactory::make("queue").build().unwrap();
            pipeline.add(&queue).unwrap();
            queue.sync_state_with_parent().unwrap();
            pad.link(&queue.static_pad("sink").unwrap()).unwrap();
            queue.static_pad("src").unwrap().link(target).unwrap();
        });

    pipeline.set_state(gst::State::Playing)?;
    for msg in pipeline.bus().unwrap().iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "kvs-fragment") {
                    println!(
                        "kvs-fragment {} producer {:?} behind live {:?} ms",
                        s.get::<&str>("fragment-number").unwrap_or("?"),
                        s.get::<u64>("producer-timestamp").ok(),
                        s.get::<u64>("millis-behind-now").ok()
                    );
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null)?;
                return Err(format!("{} ({:?})", e.error(), e.debug()).into());
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    println!("Wrote app-call.wav");
    Ok(())
}
