// SPDX-License-Identifier: MPL-2.0
//! The output side of a recording: which demuxer pad goes to which channel
//! (by track name), and the encoder chain behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gst::prelude::*;
use gstkvs::synth::{AGENT, CALLER};

use crate::args::Args;

/// Which pads (by index) make the channels: caller then agent when the
/// tracks say so, else the first two, else the only one.
pub fn channels(names: &[String]) -> Vec<usize> {
    let find = |name: &str| names.iter().position(|n| n == name);
    match (find(CALLER), find(AGENT)) {
        (Some(caller), Some(agent)) => vec![caller, agent],
        _ => (0..names.len().min(2)).collect(),
    }
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("the GStreamer element {factory} is missing: install gstreamer1.0-plugins-base and -good")
    })
}

/// The chain from raw audio to the file; returns its first element.
fn tail(pipeline: &gst::Pipeline, args: &Args) -> Result<gst::Element, String> {
    let convert = make("audioconvert")?;
    let mut chain = vec![convert.clone()];
    let out = args.out.clone().unwrap_or_default();
    if let Some(secs) = args.split_seconds {
        chain.push(crate::pieces::sink(args.split_pattern(), secs)?);
    } else {
        if args.is_opus() {
            chain.extend([make("audioresample")?, make("opusenc")?, make("oggmux")?]);
        } else {
            chain.push(make("wavenc")?);
        }
        let sink = make("filesink")?;
        sink.set_property("location", &out);
        sink.set_property("async", false);
        chain.push(sink);
    }
    pipeline.add_many(&chain).unwrap();
    gst::Element::link_many(&chain).map_err(|e| format!("cannot build the output: {e}"))?;
    for e in chain.iter().rev() {
        e.sync_state_with_parent().unwrap();
    }
    Ok(convert)
}

fn add(pipeline: &gst::Pipeline, factory: &str) -> Result<gst::Element, String> {
    let e = make(factory)?;
    pipeline.add(&e).unwrap();
    Ok(e)
}

/// Links the demuxer's pads to the output and says how. `recorded` counts
/// the nanoseconds of audio that reach the encoder.
pub fn link(
    pipeline: &gst::Pipeline,
    args: &Args,
    pads: &[(gst::Pad, String)],
    recorded: Arc<AtomicU64>,
) -> Result<String, String> {
    let names: Vec<String> = pads.iter().map(|(_, n)| n.clone()).collect();
    let used = channels(&names);
    if used.is_empty() {
        return Err("the stream has no audio track".into());
    }
    let first = tail(pipeline, args)?;
    first
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let ns = b.duration().map_or(0, gst::ClockTime::nseconds);
                recorded.fetch_add(ns, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    // Two channels meet in interleave (stereo) or audiomixer (--mono-mix).
    let join = match used.len() {
        1 => None,
        _ if args.mono_mix => {
            let join = add(pipeline, "audiomixer")?;
            // Start at the first audio, and wait for a late side rather
            // than mix silence in its place.
            join.set_property_from_str("start-time-selection", "first");
            join.set_property("latency", 500_000_000u64);
            // Fix the mix to the tracks' format: audiomixer would otherwise
            // pick one before the first audio arrives.
            let caps = pads[used[0]].0.sticky_event::<gst::event::Caps>(0);
            let filter = add(pipeline, "capsfilter")?;
            if let Some(caps) = caps {
                filter.set_property("caps", caps.caps_owned());
            }
            gst::Element::link_many([&join, &filter, &first]).unwrap();
            filter.sync_state_with_parent().unwrap();
            Some(join)
        }
        _ => {
            let join = add(pipeline, "interleave")?;
            join.link(&first).unwrap();
            Some(join)
        }
    };
    // Request in channel order: the first requested pad is the left channel.
    let targets: Vec<gst::Pad> = match &join {
        Some(join) => used
            .iter()
            .map(|_| join.request_pad_simple("sink_%u").unwrap())
            .collect(),
        None => vec![first.static_pad("sink").unwrap()],
    };
    let mut mapping = Vec::new();
    for (i, (pad, name)) in pads.iter().enumerate() {
        let queue = add(pipeline, "queue")?;
        let Some(channel) = used.iter().position(|&u| u == i) else {
            let sink = add(pipeline, "fakesink")?;
            sink.set_property("async", false);
            queue.link(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            mapping.push(format!("{} ({name}) not recorded", pad.name()));
            pad.link(&queue.static_pad("sink").unwrap()).unwrap();
            queue.sync_state_with_parent().unwrap();
            continue;
        };
        queue
            .static_pad("src")
            .unwrap()
            .link(&targets[channel])
            .unwrap();
        queue.sync_state_with_parent().unwrap();
        pad.link(&queue.static_pad("sink").unwrap()).unwrap();
        let side = match (used.len(), args.mono_mix, channel) {
            (1, _, _) => "mono",
            (_, true, _) => "mixed",
            (_, false, 0) => "left",
            _ => "right",
        };
        mapping.push(format!("{} ({name}) -> {side}", pad.name()));
    }
    if let Some(join) = join {
        join.sync_state_with_parent().unwrap();
    }
    Ok(mapping.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn channels_by_name() {
        assert_eq!(channels(&names(&[CALLER, AGENT])), [0, 1]);
        assert_eq!(channels(&names(&[AGENT, CALLER])), [1, 0]);
        assert_eq!(channels(&names(&["x", AGENT, CALLER])), [2, 1]);
        assert_eq!(channels(&names(&["a", "b", "c"])), [0, 1]);
        assert_eq!(channels(&names(&["only"])), [0]);
        assert!(channels(&[]).is_empty());
    }
}
