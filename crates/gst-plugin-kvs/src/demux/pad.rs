// SPDX-License-Identifier: MPL-2.0
//! One output pad: its track, caps and position on the output timeline.
//! Nothing here pushes or posts: buffers, events and messages become
//! [`Action`]s that the element performs in order once the demuxer's lock
//! is released.

use std::sync::LazyLock;

use super::caps::{Output, Payload};
use kvs_mkv::{Block, Track};

pub(super) type FlowResult = Result<gst::FlowSuccess, gst::FlowError>;

/// What the demuxer does on its pads, in this order, outside its lock.
pub enum Action {
    Buffer(gst::Pad, gst::Buffer),
    List(gst::Pad, gst::BufferList),
    Event(gst::Pad, gst::Event),
    /// Adds the pad (its sticky events are set by then).
    AddPad(gst::Pad),
    RemovePad(gst::Pad),
    NoMorePads,
    /// A warning, an error or an element message for the bus: posted in
    /// order with the pushes, so that a bus sync handler may query or seek
    /// the element.
    Post(gst::Message),
}

static UNIX_CAPS: LazyLock<gst::Caps> =
    LazyLock::new(|| gst::Caps::new_empty_simple("timestamp/x-unix"));

/// Silence is pushed in buffers of at most this long.
const SILENCE_CHUNK: u64 = 1_000_000_000;

pub(super) struct TrackPad {
    pad: gst::Pad,
    track: Track,
    output: Output,
    /// Output time up to which this pad has had buffers or gaps, in ns.
    position: u64,
    /// The fragment number of the last block pushed, and how many blocks
    /// of that fragment were pushed.
    sent: Option<(String, u64)>,
    /// The latest absolute time pushed, in ns.
    newest_abs: Option<i128>,
    /// Blocks of a replayed fragment still to drop: after a reconnect the
    /// fragment comes again from its start. Counting, not comparing times,
    /// keeps B-frames, whose times go back and forth.
    skip: u64,
    discont: bool,
    /// Buffers not pushed yet: they leave at the end of each input chunk, or
    /// sooner when they span `demux::PENDING_SPAN`.
    pending: Vec<gst::Buffer>,
    /// Push `pending` as one buffer list rather than buffer by buffer.
    lists: bool,
    /// Join raw audio buffers that follow one another before pushing.
    merge: bool,
    /// Downstream refused the caps (reported once).
    refused: bool,
}

fn samples_to_ns(samples: u64, rate: u32) -> u64 {
    samples * 1_000_000_000 / u64::from(rate)
}

/// Whether `b` goes on where `a` ends: same flags, no DISCONT, no hole.
fn follows(a: &gst::Buffer, b: &gst::Buffer) -> bool {
    let end = a.pts().zip(a.duration()).map(|(p, d)| p + d);
    end.is_some() && end == b.pts() && a.flags() - gst::BufferFlags::DISCONT == b.flags()
}

/// One buffer holding a run's bytes, with the first buffer's timestamps,
/// flags and metas (its producer time) and the run's whole duration. The
/// bytes are copied once here: the blocks lie apart in the input (tracks
/// alternate), and a buffer of many memories is copied by whatever maps it.
fn join(run: Vec<gst::Buffer>) -> gst::Buffer {
    if run.len() == 1 {
        return run.into_iter().next().unwrap();
    }
    let mut data = Vec::with_capacity(run.iter().map(|b| b.size()).sum());
    for b in &run {
        if let Ok(map) = b.map_readable() {
            data.extend_from_slice(&map);
        }
    }
    let duration = run
        .iter()
        .filter_map(|b| b.duration())
        .sum::<gst::ClockTime>();
    let mut joined = gst::Buffer::from_mut_slice(data);
    {
        let j = joined.get_mut().unwrap();
        let what = gst::BufferCopyFlags::FLAGS
            | gst::BufferCopyFlags::TIMESTAMPS
            | gst::BufferCopyFlags::META;
        let _ = run[0].copy_into(j, what, ..);
        j.set_duration(duration);
    }
    joined
}

/// Joins each run of buffers that follow one another into one buffer.
fn merge_runs(buffers: Vec<gst::Buffer>) -> Vec<gst::Buffer> {
    let mut out = Vec::new();
    let mut run: Vec<gst::Buffer> = Vec::new();
    for b in buffers {
        if run.last().is_some_and(|last| !follows(last, &b)) {
            out.push(join(std::mem::take(&mut run)));
        }
        run.push(b);
    }
    if !run.is_empty() {
        out.push(join(run));
    }
    out
}

impl TrackPad {
    /// A pad's stream at output time `position`, the pad's sticky events
    /// already set; it starts DISCONT.
    pub fn new(
        pad: gst::Pad,
        track: Track,
        output: Output,
        position: u64,
        lists: bool,
        merge: bool,
    ) -> TrackPad {
        TrackPad {
            pad,
            track,
            output,
            position,
            sent: None,
            newest_abs: None,
            skip: 0,
            discont: true,
            pending: Vec::new(),
            lists,
            merge,
            refused: false,
        }
    }

    pub fn pad(&self) -> &gst::Pad {
        &self.pad
    }

    pub fn track(&self) -> &Track {
        &self.track
    }

    pub fn caps(&self) -> &gst::Caps {
        &self.output.caps
    }

    /// Output time up to which this pad has had buffers or gaps, in ns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next buffer is DISCONT.
    pub fn mark_discont(&mut self) {
        self.discont = true;
    }

    /// Goes on from `position`, DISCONT.
    pub fn move_to(&mut self, position: u64) {
        self.position = position;
        self.discont = true;
    }

    /// The track came again in a new chunk, maybe read otherwise: a caps
    /// event if its caps changed. True if they did.
    pub fn retrack(&mut self, out: &mut Vec<Action>, track: Track, output: Output) -> bool {
        let changed = self.output.caps != output.caps;
        if changed {
            self.send_event(out, gst::event::Caps::new(&output.caps));
        }
        self.track = track;
        self.output = output;
        changed
    }

    /// Downstream refused the caps: true the first time.
    pub fn refuse(&mut self) -> bool {
        !std::mem::replace(&mut self.refused, true)
    }

    /// After a flush: the pad starts again at 0, with nothing held and
    /// nothing to skip.
    pub fn reset_for_flush(&mut self) {
        self.position = 0;
        self.sent = None;
        self.newest_abs = None;
        self.skip = 0;
        self.discont = true;
        self.pending.clear();
    }

    /// A fragment begins: if it comes again after a reconnect (`replay`),
    /// the blocks of it this pad pushed are to be dropped (all of it if the
    /// pad is past it).
    pub fn begin_fragment(&mut self, number: Option<&str>, replay: bool) {
        use std::cmp::Ordering;
        self.skip = 0;
        let (Some(number), Some((sent, count)), true) = (number, &self.sent, replay) else {
            return;
        };
        self.skip = match kvs_mkv::kvs::compare_fragment_numbers(number, sent) {
            Ordering::Equal => *count,
            Ordering::Less => u64::MAX,
            Ordering::Greater => 0,
        };
    }

    /// Whether a block at `abs` ns of fragment `number` was pushed already;
    /// else counts it as pushed. A block newer than any pushed is new
    /// whatever its fragment number says.
    pub fn seen_before(&mut self, number: Option<&str>, abs: i128) -> bool {
        if self.skip > 0 && self.newest_abs.is_some_and(|n| abs <= n) {
            if self.skip != u64::MAX {
                self.skip -= 1;
            }
            return true;
        }
        self.skip = 0;
        self.newest_abs = Some(self.newest_abs.map_or(abs, |n| n.max(abs)));
        match (&mut self.sent, number) {
            (Some((sent, count)), Some(n)) if sent == n => *count += 1,
            (sent, Some(n)) => *sent = Some((n.to_string(), 1)),
            (sent, None) => *sent = None,
        }
        false
    }

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

    /// Hands the pending buffers on.
    pub fn flush(&mut self, out: &mut Vec<Action>) {
        if self.pending.is_empty() {
            return;
        }
        if self.merge && matches!(self.output.payload, Payload::Raw { .. }) {
            self.pending = merge_runs(std::mem::take(&mut self.pending));
        }
        if self.lists {
            let mut list = gst::BufferList::new_sized(self.pending.len());
            let l = list.get_mut().unwrap();
            self.pending.drain(..).for_each(|b| l.add(b));
            out.push(Action::List(self.pad.clone(), list));
            return;
        }
        let pad = &self.pad;
        out.extend(
            self.pending
                .drain(..)
                .map(|b| Action::Buffer(pad.clone(), b)),
        );
    }

    /// Sends an event after the pending buffers.
    pub fn send_event(&mut self, out: &mut Vec<Action>, event: gst::Event) {
        self.flush(out);
        out.push(Action::Event(self.pad.clone(), event));
    }

    /// Brings the pad up to `until`: raw audio gets silent buffers flagged
    /// GAP (interleave in GStreamer 1.22 cannot fill GAP events), coded audio
    /// a GAP event.
    pub fn fill(&mut self, out: &mut Vec<Action>, until: u64) {
        let Payload::Raw {
            bytes_per_frame,
            rate,
            silence,
        } = self.output.payload
        else {
            let start = gst::ClockTime::from_nseconds(self.position);
            let duration = gst::ClockTime::from_nseconds(until.saturating_sub(self.position));
            self.position = self.position.max(until);
            let gap = gst::event::Gap::builder(start).duration(duration).build();
            return self.send_event(out, gap);
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
                Payload::Coded | Payload::Video => block
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
                if self.output.payload == Payload::Video && !block.keyframe {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
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
