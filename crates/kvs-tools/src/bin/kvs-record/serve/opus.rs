// SPDX-License-Identifier: MPL-2.0
//! The Ogg Opus encoder of `--format opus`: interleaved S16LE in, Ogg Opus
//! bytes out, through opusenc and oggmux.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;

/// How long the encoder may take to drain at the end.
const DRAIN: Duration = Duration::from_secs(600);

/// Interleaved S16LE in, Ogg Opus bytes out.
pub struct Encoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    out: Arc<Mutex<Vec<u8>>>,
    rate: u64,
    frame_bytes: u64,
    frames: u64,
}

impl Encoder {
    pub fn new(rate: u32, channels: usize) -> Result<Encoder, String> {
        let pipeline = gst::parse::launch(
            "appsrc name=src format=time block=true max-bytes=1048576 ! audioconvert \
             ! audioresample ! opusenc ! oggmux ! appsink name=sink sync=false",
        )
        .map_err(|e| format!("cannot make the Opus encoder (opusenc, oggmux): {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the Opus encoder is not a pipeline")?;
        let element = |name: &str| pipeline.by_name(name).expect("named in the description");
        let src = element("src")
            .downcast::<gst_app::AppSrc>()
            .expect("an appsrc");
        src.set_caps(Some(
            &gst::Caps::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("layout", "interleaved")
                .field("rate", rate as i32)
                .field("channels", channels as i32)
                .build(),
        ));
        let out: Arc<Mutex<Vec<u8>>> = Arc::default();
        let keep = out.clone();
        element("sink")
            .downcast::<gst_app::AppSink>()
            .expect("an appsink")
            .set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(buffer) = sample.buffer() {
                            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                            keep.lock().unwrap().extend_from_slice(&map);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| "the Opus encoder did not start")?;
        Ok(Encoder {
            pipeline,
            src,
            out,
            rate: u64::from(rate.max(1)),
            frame_bytes: (channels.max(1) * 2) as u64,
            frames: 0,
        })
    }

    /// Encodes `pcm` (whole frames); blocks while the encoder is behind.
    pub fn push(&mut self, pcm: Vec<u8>) -> Result<(), String> {
        self.failed()?;
        if pcm.is_empty() {
            return Ok(());
        }
        let frames = pcm.len() as u64 / self.frame_bytes;
        let at = |frames: u64| gst::ClockTime::from_nseconds(frames * 1_000_000_000 / self.rate);
        let mut buffer = gst::Buffer::from_mut_slice(pcm);
        {
            let b = buffer.get_mut().expect("a new buffer");
            b.set_pts(at(self.frames));
            b.set_duration(at(self.frames + frames) - at(self.frames));
        }
        self.frames += frames;
        self.src
            .push_buffer(buffer)
            .map_err(|e| format!("the Opus encoder refused audio: {e:?}"))?;
        Ok(())
    }

    /// The Ogg bytes made so far.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.out.lock().unwrap())
    }

    /// Ends the stream and gives the last Ogg bytes.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        let _ = self.src.end_of_stream();
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(DRAIN.as_secs()),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = self.pipeline.set_state(gst::State::Null);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => Ok(self.take()),
            Some(gst::MessageView::Error(e)) => {
                Err(format!("the Opus encoder failed: {}", e.error()))
            }
            _ => Err("the Opus encoder did not finish".into()),
        }
    }

    fn failed(&self) -> Result<(), String> {
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        match bus.pop_filtered(&[gst::MessageType::Error]) {
            Some(msg) => match msg.view() {
                gst::MessageView::Error(e) => {
                    Err(format!("the Opus encoder failed: {}", e.error()))
                }
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
