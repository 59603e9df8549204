// SPDX-License-Identifier: MPL-2.0
//! Codec parity: for Matroska files that matroskamux writes, kvsaudiodemux
//! followed by a decoder gives the same decoded samples as matroskademux
//! followed by the same decoder, byte for byte.

mod common;

use gst::prelude::*;

/// A codec: what makes the file, and what decodes it.
struct Codec {
    name: &'static str,
    /// Raw input caps.
    input: &'static str,
    /// Encoder ("" for raw PCM).
    encoder: &'static str,
    decoder: &'static str,
    /// Input buffers of 1024 frames (Opus: 960).
    buffers: u32,
}

const CODECS: &[Codec] = &[
    Codec {
        name: "Opus",
        input: "format=S16LE,rate=48000,channels=2",
        encoder: "opusenc",
        decoder: "opusdec",
        buffers: 100,
    },
    Codec {
        name: "AAC",
        input: "format=S16LE,rate=44100,channels=2",
        encoder: "voaacenc",
        decoder: "faad",
        buffers: 80,
    },
    Codec {
        name: "MP3",
        input: "format=S16LE,rate=44100,channels=2",
        encoder: "lamemp3enc",
        decoder: "mpegaudioparse ! mpg123audiodec",
        buffers: 80,
    },
    Codec {
        name: "A-law",
        input: "format=S16LE,rate=8000,channels=1",
        encoder: "alawenc",
        decoder: "alawdec",
        buffers: 20,
    },
    Codec {
        name: "mu-law",
        input: "format=S16LE,rate=8000,channels=1",
        encoder: "mulawenc",
        decoder: "mulawdec",
        buffers: 20,
    },
    Codec {
        name: "F32LE PCM",
        input: "format=F32LE,rate=16000,channels=2",
        encoder: "",
        decoder: "identity",
        buffers: 20,
    },
    Codec {
        name: "S16LE PCM",
        input: "format=S16LE,rate=8000,channels=1",
        encoder: "",
        decoder: "identity",
        buffers: 20,
    },
];

fn missing_elements(codec: &Codec) -> Vec<&'static str> {
    [codec.encoder, codec.decoder]
        .iter()
        .flat_map(|chain| chain.split('!').map(str::trim))
        .filter(|e| !e.is_empty() && gst::ElementFactory::find(e).is_none())
        .collect()
}

fn run(desc: &str) -> Vec<u8> {
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("out")
        .map(|s| s.downcast::<gst_app::AppSink>().unwrap());
    let data = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(sink) = &sink {
        let data = data.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let map = sample.buffer().unwrap().map_readable().unwrap();
                    data.lock().unwrap().extend_from_slice(&map);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap_or_else(|| panic!("{desc}: no EOS within 60 s"));
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{desc}: {} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    std::mem::take(&mut *data.lock().unwrap())
}

#[test]
fn decoded_output_matches_matroskademux_for_every_codec() {
    common::init();
    let dir = std::env::temp_dir().join(format!("kvs-codecs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut tested = Vec::new();
    for codec in CODECS {
        let missing = missing_elements(codec);
        if !missing.is_empty() {
            common::missing(&format!("{missing:?} for {}", codec.name));
            continue;
        }
        let file = dir.join(format!("{}.mkv", codec.name.replace(' ', "-")));
        let samples = if codec.encoder == "opusenc" {
            960
        } else {
            1024
        };
        let encode = if codec.encoder.is_empty() {
            String::new()
        } else {
            format!("! {} ", codec.encoder)
        };
        run(&format!(
            "audiotestsrc num-buffers={} samplesperbuffer={samples} wave=ticks ! audio/x-raw,{} \
             {encode}! matroskamux ! filesink location={}",
            codec.buffers,
            codec.input,
            file.display()
        ));
        let decode = |demux: &str| {
            run(&format!(
                "filesrc location={} ! {demux} ! {} ! appsink name=out sync=false",
                file.display(),
                codec.decoder
            ))
        };
        let theirs = decode("matroskademux");
        let ours = decode("kvsaudiodemux");
        assert!(
            !theirs.is_empty(),
            "{}: matroskademux gave nothing",
            codec.name
        );
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{}: decoded bytes, kvsaudiodemux vs matroskademux",
            codec.name
        );
        assert!(ours == theirs, "{}: decoded samples differ", codec.name);
        tested.push(codec.name);
    }
    eprintln!("identical decoded output: {tested:?}");
    std::fs::remove_dir_all(&dir).ok();
}
