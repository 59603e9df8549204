// SPDX-License-Identifier: MPL-2.0
//! Ogg Opus recordings (`--format opus`). The pieces and checkpoints stay
//! PCM, so a call resumed by another worker is still exact; at the end the
//! pieces, then the audio since the last one, go through opusenc and
//! oggmux once, and the Ogg bytes are stored as they come out: S3 parts of
//! at least 5 MiB, or a file renamed into place.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::types::CompletedPart;
use gst::prelude::*;
use tokio::task::block_in_place;

use super::mix::Mixer;
use super::store::{MIN_PART, S3};

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

/// Ogg bytes to the recording's object as they come: one PUT when they stay
/// under a part, else a multipart upload of 5 MiB parts.
struct Parts<'a> {
    s3: &'a S3,
    metadata: &'a [(&'a str, &'a str)],
    pending: Vec<u8>,
    upload: Option<(String, Vec<CompletedPart>)>,
}

impl Parts<'_> {
    async fn add(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.pending.extend(bytes);
        if (self.pending.len() as u64) < MIN_PART {
            return Ok(());
        }
        if self.upload.is_none() {
            let id = self.s3.start_upload(CONTENT_TYPE, self.metadata).await?;
            self.upload = Some((id, Vec::new()));
        }
        let (id, done) = self.upload.as_mut().expect("started above");
        let n = done.len() as i32 + 1;
        let body = std::mem::take(&mut self.pending);
        done.push(self.s3.upload_part(id, n, body).await?);
        Ok(())
    }

    /// Stores what is left; the upload is dropped from `self` only once it
    /// is complete, so that a failure can still abort it.
    async fn finish(&mut self) -> Result<(), String> {
        let body = std::mem::take(&mut self.pending);
        let Some((id, done)) = self.upload.as_mut() else {
            return self.s3.put_whole(body, CONTENT_TYPE, self.metadata).await;
        };
        if !body.is_empty() {
            let n = done.len() as i32 + 1;
            done.push(self.s3.upload_part(id, n, body).await?);
        }
        self.s3.complete(id, done.clone()).await?;
        self.upload = None;
        Ok(())
    }
}

const CONTENT_TYPE: &str = "audio/ogg";

/// Encodes the call's `pieces` stored pieces, then `tail`, into its object.
pub async fn to_s3(
    s3: &S3,
    pieces: usize,
    tail: &[u8],
    mixer: &Mixer,
    metadata: &[(&str, &str)],
) -> Result<(), String> {
    let mut parts = Parts {
        s3,
        metadata,
        pending: Vec::new(),
        upload: None,
    };
    let done = async {
        let mut enc = Encoder::new(mixer.rate(), mixer.channels())?;
        for n in 0..pieces {
            let piece = s3.piece(n).await?;
            block_in_place(|| enc.push(piece))?;
            parts.add(enc.take()).await?;
        }
        block_in_place(|| enc.push(tail.to_vec()))?;
        parts.add(block_in_place(|| enc.finish())?).await?;
        parts.finish().await
    }
    .await;
    if done.is_err()
        && let Some((id, _)) = &parts.upload
    {
        s3.abort(id).await;
    }
    done
}

/// Encodes the pieces (files, in order), then `tail`, into `out`.
pub fn to_file(
    pieces: impl Iterator<Item = std::path::PathBuf>,
    tail: &[u8],
    mixer: &Mixer,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut enc = Encoder::new(mixer.rate(), mixer.channels())?;
    let write = |out: &mut dyn Write, bytes: Vec<u8>| {
        out.write_all(&bytes)
            .map_err(|e| format!("cannot write the recording: {e}"))
    };
    for path in pieces {
        let piece =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        enc.push(piece)?;
        write(out, enc.take())?;
    }
    enc.push(tail.to_vec())?;
    write(out, enc.finish()?)
}
