// SPDX-License-Identifier: MPL-2.0
//! One output pad: its track, caps and position on the output timeline.

use std::sync::LazyLock;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::caps::{Output, Payload};
use super::imp::KvsAudioDemux;
use crate::mkv::{Block, Track};

pub(super) type FlowResult = Result<gst::FlowSuccess, gst::FlowError>;

static UNIX_CAPS: LazyLock<gst::Caps> =
    LazyLock::new(|| gst::Caps::new_empty_simple("timestamp/x-unix"));

/// Silence is pushed in buffers of at most this long.
const SILENCE_CHUNK: u64 = 1_000_000_000;

pub(super) struct Stream {
    pub pad: gst::Pad,
    pub track: Track,
    pub output: Output,
    /// Output time up to which this pad has had buffers or gaps, in ns.
    pub position: u64,
    /// Absolute time of the last block pushed, in ns.
    pub last_abs: Option<i128>,
    pub discont: bool,
    /// Buffers not pushed yet: they leave at the end of each input chunk, or
    /// sooner when they span `demux::PENDING_SPAN`.
    pub pending: Vec<gst::Buffer>,
    /// Push `pending` as one buffer list rather than buffer by buffer.
    pub lists: bool,
    /// Downstream refused the caps (reported once).
    pub refused: bool,
}

fn samples_to_ns(samples: u64, rate: u32) -> u64 {
    samples * 1_000_000_000 / u64::from(rate)
}

impl Stream {
    fn queue(&mut self, buffer: gst::Buffer) {
        self.pending.push(buffer);
    }

    /// The time the pending buffers cover, in ns.
    pub fn pending_span(&self) -> u64 {
        let (Some(first), Some(last)) = (self.pending.first(), self.pending.last()) else {
            return 0;
        };
        let end = last.pts().map(|p| p + last.duration().unwrap_or_default());
        end.zip(first.pts()).map_or(0, |(end, start)| {
            end.nseconds().saturating_sub(start.nseconds())
        })
    }

    /// Pushes the pending buffers.
    pub fn flush(&mut self, imp: &KvsAudioDemux) -> FlowResult {
        if self.pending.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        if self.lists {
            let mut list = gst::BufferList::new_sized(self.pending.len());
            let l = list.get_mut().unwrap();
            self.pending.drain(..).for_each(|b| l.add(b));
            let res = self.pad.push_list(list);
            return self.pushed(imp, res);
        }
        for buffer in std::mem::take(&mut self.pending) {
            let res = self.pad.push(buffer);
            self.pushed(imp, res)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Combines a push result; a refusal of the caps becomes an error that
    /// names the track, before the generic one upstream posts.
    fn pushed(&mut self, imp: &KvsAudioDemux, res: FlowResult) -> FlowResult {
        if res == Err(gst::FlowError::NotNegotiated) && !std::mem::replace(&mut self.refused, true)
        {
            let hint = if self.track.codec_id.starts_with("A_AAC") {
                "If this is Amazon Connect audio (raw PCM labelled A_AAC), set connect-pcm=always; \
                 if it is AAC, put a decoder (decodebin) after the pad"
            } else {
                "Put a decoder (decodebin) after the pad, or link it to an element that takes these caps"
            };
            gst::element_imp_error!(
                imp,
                gst::CoreError::Negotiation,
                (
                    "Track {} ({:?}, CodecID {}) came out as {}, which downstream refused",
                    self.track.number,
                    self.track.name,
                    self.track.codec_id,
                    self.output.caps
                ),
                ["{hint} (pad {})", self.pad.name()]
            );
        }
        imp.combine(&self.pad, res)
    }

    /// Pushes an event after the pending buffers.
    pub fn send_event(&mut self, imp: &KvsAudioDemux, event: gst::Event) -> FlowResult {
        let result = self.flush(imp);
        self.pad.push_event(event);
        result
    }

    /// Brings the pad up to `until`: raw audio gets silent buffers flagged
    /// GAP (interleave in GStreamer 1.22 cannot fill GAP events), coded audio
    /// a GAP event.
    pub fn fill(&mut self, imp: &KvsAudioDemux, until: u64) -> FlowResult {
        let Payload::Raw {
            bytes_per_frame,
            rate,
            silence,
        } = self.output.payload
        else {
            let start = gst::ClockTime::from_nseconds(self.position);
            let duration = gst::ClockTime::from_nseconds(until.saturating_sub(self.position));
            self.position = self.position.max(until);
            return self.send_event(
                imp,
                gst::event::Gap::builder(start).duration(duration).build(),
            );
        };
        while self.position < until {
            let span = (until - self.position).min(SILENCE_CHUNK);
            let samples = span * u64::from(rate) / 1_000_000_000;
            if samples == 0 {
                break;
            }
            let mut buffer =
                gst::Buffer::from_mut_slice(vec![silence; samples as usize * bytes_per_frame]);
            let duration = samples_to_ns(samples, rate);
            {
                let b = buffer.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(self.position));
                b.set_duration(gst::ClockTime::from_nseconds(duration));
                b.set_flags(gst::BufferFlags::GAP);
            }
            self.position += duration;
            self.queue(buffer);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Applies the track's CodecDelay and the block's DiscardPadding as
    /// matroskademux does: times move back by the delay, and the buffers
    /// within it get a clipping meta (in 48 kHz samples) that makes the
    /// decoder drop the delay; the padding clips the end. Returns the PTS
    /// and duration to use.
    fn clip(
        &self,
        b: &mut gst::BufferRef,
        pts: u64,
        duration: Option<u64>,
        padding: Option<u64>,
    ) -> (u64, Option<u64>) {
        let samples = |ns: u64| gst::format::Default::from_u64((ns * 48 + 500_000) / 1_000_000);
        let delay = self.track.codec_delay.unwrap_or(0);
        let (pts, duration, start) = if pts > delay {
            (pts - delay, duration, 0)
        } else {
            (0, duration.map(|d| d.saturating_sub(delay)), delay)
        };
        let end = padding.unwrap_or(0);
        if start > 0 || end > 0 {
            gst_audio::AudioClippingMeta::add(b, samples(start), samples(end));
        }
        (pts, duration)
    }

    /// Queues the frames of `block`, the first at `pts`. `producer` is the
    /// absolute producer time of the block.
    pub fn push_block(
        &mut self,
        block: &Block,
        region: &gst::Buffer,
        mut pts: u64,
        scale: u64,
        producer: gst::ClockTime,
    ) -> FlowResult {
        for frame in block.frames.iter() {
            let duration = match self.output.payload {
                Payload::Raw {
                    bytes_per_frame,
                    rate,
                    ..
                } => Some(samples_to_ns((frame.len() / bytes_per_frame) as u64, rate)),
                Payload::Coded => block
                    .duration
                    .filter(|_| block.frames.len() == 1)
                    .map(|d| d.saturating_mul(scale))
                    .or(self.track.default_duration),
            };
            let mut buffer = region
                .copy_region(gst::BufferCopyFlags::MEMORY, frame.clone())
                .map_err(|_| gst::FlowError::Error)?;
            {
                let b = buffer.get_mut().unwrap();
                let (out, duration) = self.clip(b, pts, duration, block.discard_padding);
                b.set_pts(gst::ClockTime::from_nseconds(out));
                b.set_duration(duration.map(gst::ClockTime::from_nseconds));
                if std::mem::take(&mut self.discont) {
                    b.set_flags(gst::BufferFlags::DISCONT);
                }
                gst::ReferenceTimestampMeta::add(b, &UNIX_CAPS, producer, None);
            }
            pts += duration.unwrap_or(0);
            self.position = self.position.max(pts);
            self.queue(buffer);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
