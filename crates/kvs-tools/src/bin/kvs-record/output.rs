// SPDX-License-Identifier: MPL-2.0
//! The output side of a recording: which demuxer pad goes to which channel
//! (by track name), and the encoder chain behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gst::prelude::*;
use kvs_local_server::synth::{AGENT, CALLER};

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

/// The track name the demuxer put in the pad's sticky tags (its title).
pub fn track_title(pad: &gst::Pad) -> String {
    pad.sticky_event::<gst::event::Tag>(0)
        .and_then(|t| {
            t.tag()
                .get::<gst::tags::Title>()
                .map(|t| t.get().to_string())
        })
        .unwrap_or_default()
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("the GStreamer element {factory} is missing: install gstreamer1.0-plugins-base and -good")
    })
}

/// A failed pipeline step as a message.
fn step<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("cannot {what}: {e}"))
}

fn pad(element: &gst::Element, name: &str) -> Result<gst::Pad, String> {
    element
        .static_pad(name)
        .or_else(|| element.request_pad_simple(name))
        .ok_or_else(|| format!("{} has no {name} pad", element.name()))
}

fn start(element: &gst::Element) -> Result<(), String> {
    step(
        element.sync_state_with_parent(),
        &format!("start {}", element.name()),
    )
}

/// Checks, before anything connects, that the output can be written: its
/// folder exists and a file can be made there.
pub fn check_target(args: &Args) -> Result<(), String> {
    let (path, what) = match args.split_seconds {
        Some(_) => (
            crate::pieces::piece_path(&args.split_pattern(), 0),
            "the pieces",
        ),
        None => (args.out.clone().unwrap_or_default(), "the output"),
    };
    let path = std::path::Path::new(&path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot write {what} {}: the folder {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot write {what} {}: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
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
    step(pipeline.add_many(&chain), "build the output")?;
    step(gst::Element::link_many(&chain), "build the output")?;
    for e in chain.iter().rev() {
        step(
            e.sync_state_with_parent(),
            &format!("open the output {out}"),
        )?;
    }
    Ok(convert)
}

fn add(pipeline: &gst::Pipeline, factory: &str) -> Result<gst::Element, String> {
    let e = make(factory)?;
    step(pipeline.add(&e), &format!("add {factory}"))?;
    Ok(e)
}

/// Sends a pad nobody records to a fakesink.
pub fn discard(pipeline: &gst::Pipeline, from: &gst::Pad) -> Result<(), String> {
    let queue = add(pipeline, "queue")?;
    let sink = add(pipeline, "fakesink")?;
    sink.set_property("async", false);
    step(queue.link(&sink), "link a fakesink")?;
    start(&sink)?;
    start(&queue)?;
    step(from.link(&pad(&queue, "sink")?), "link a fakesink")?;
    Ok(())
}

/// After a failed negotiation the queues and interleave send EOS with no
/// stream before it, and the encoder would write a bare header in a stream
/// that never started. This ends the run on the bus instead. The probe
/// consumes the event (Handled): gstreamer-rs 0.25 frees it itself, so Drop
/// would leave GStreamer a null event to free (a CRITICAL).
fn end_on_bare_eos(sink: &gst::Pad, bus: Option<gst::Bus>) {
    sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
        let eos = matches!(&info.data, Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos);
        if !eos || pad.sticky_event::<gst::event::StreamStart>(0).is_some() {
            return gst::PadProbeReturn::Ok;
        }
        if let Some(bus) = &bus {
            let _ = bus.post(gst::message::Eos::new());
        }
        gst::PadProbeReturn::Handled
    });
}

/// Links the demuxer's pads to the output and says how. `recorded` counts
/// the nanoseconds of audio that reach the encoder.
/// The channel count of a demuxer pad's caps (1 when unknown).
fn pad_channels(pad: &gst::Pad) -> i32 {
    pad.sticky_event::<gst::event::Caps>(0)
        .and_then(|e| e.caps().structure(0)?.get::<i32>("channels").ok())
        .unwrap_or(1)
}

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
    pad(&first, "sink")?.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
            let ns = b.duration().map_or(0, gst::ClockTime::nseconds);
            recorded.fetch_add(ns, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    end_on_bare_eos(&pad(&first, "sink")?, pipeline.bus());
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
            step(
                gst::Element::link_many([&join, &filter, &first]),
                "link audiomixer",
            )?;
            start(&filter)?;
            Some(join)
        }
        _ => {
            let join = add(pipeline, "interleave")?;
            step(join.link(&first), "link interleave")?;
            Some(join)
        }
    };
    // Request in channel order: the first requested pad is the left channel.
    let targets: Vec<gst::Pad> = match &join {
        Some(join) => used
            .iter()
            .map(|_| pad(join, "sink_%u"))
            .collect::<Result<_, _>>()?,
        None => vec![pad(&first, "sink")?],
    };
    let mut mapping = Vec::new();
    for (i, (src, name)) in pads.iter().enumerate() {
        let Some(channel) = used.iter().position(|&u| u == i) else {
            discard(pipeline, src)?;
            mapping.push(format!("{} ({name}) not recorded", src.name()));
            continue;
        };
        let queue = add(pipeline, "queue")?;
        step(
            pad(&queue, "src")?.link(&targets[channel]),
            "link a channel",
        )?;
        start(&queue)?;
        step(src.link(&pad(&queue, "sink")?), "link a channel")?;
        let side = match (used.len(), args.mono_mix, channel) {
            (1, _, _) => match pad_channels(src) {
                1 => "mono".to_string(),
                2 => "stereo (its two channels)".to_string(),
                n => format!("{n} channels"),
            },
            (_, true, _) => "mixed".into(),
            (_, false, 0) => "left".into(),
            _ => "right".into(),
        };
        mapping.push(format!("{} ({name}) -> {side}", src.name()));
    }
    if let Some(join) = join {
        start(&join)?;
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

    /// An EOS with no stream before it ends the run on the bus, never
    /// reaches the encoder, and GStreamer has nothing to complain about.
    #[test]
    fn bare_eos_ends_the_run_without_reaching_the_encoder() {
        gst::init().unwrap();
        let criticals = Arc::new(AtomicU64::new(0));
        let count = criticals.clone();
        let levels = gst::glib::LogLevels::LEVEL_CRITICAL | gst::glib::LogLevels::LEVEL_WARNING;
        let handler =
            gst::glib::log_set_handler(Some("GStreamer"), levels, false, false, move |_, _, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        let pipeline = gst::Pipeline::new();
        let convert = add(&pipeline, "audioconvert").unwrap();
        let sink = add(&pipeline, "fakesink").unwrap();
        convert.link(&sink).unwrap();
        let events = Arc::new(AtomicU64::new(0));
        let seen = events.clone();
        pad(&sink, "sink")
            .unwrap()
            .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, _| {
                seen.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        let into = pad(&convert, "sink").unwrap();
        end_on_bare_eos(&into, pipeline.bus());
        pipeline.set_state(gst::State::Playing).unwrap();
        // What the queues send after not-negotiated: EOS, and nothing before it.
        assert!(into.send_event(gst::event::Eos::new()));
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Eos])
            .expect("no EOS on the bus");
        assert!(msg.src().is_none(), "{msg:?}");
        pipeline.set_state(gst::State::Null).unwrap();
        gst::glib::log_remove_handler(Some("GStreamer"), handler);
        assert_eq!(events.load(Ordering::Relaxed), 0, "the EOS went on");
        assert_eq!(criticals.load(Ordering::Relaxed), 0, "GStreamer complained");
    }
}
