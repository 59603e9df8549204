// SPDX-License-Identifier: MPL-2.0
//! The streaming state of kvsaudiodemux: feeds the parser from an adapter and
//! turns its events into pads, buffers, tags and messages. Which fragment is
//! read and what it says is `fragment::Tracker`; where blocks go in time is
//! `timeline::Timeline`; both are free of GStreamer. Nothing here pushes:
//! each [`Demux::step`] returns the [`Action`]s for the element to perform
//! once the lock is released.
//!
//! After an upstream reconnect, a fragment that was already (partly)
//! output comes again from its start: each pad drops as many of its blocks
//! as it pushed before (a count, not a time, so B-frames are safe), so every
//! sample and frame leaves exactly once.
//!
//! Caps: Connect puts a fragment's MimeType (and ContactId) after its
//! Cluster. An A_AAC track with a Connect name is read as L16 at once;
//! another A_AAC track whose kind no MimeType has told yet is held until the
//! fragment's trailing tags are in. A MimeType that disagrees with what a
//! fragment was read as changes the caps from the next fragment on, with a
//! warning.

use gst::prelude::*;

use super::ConnectPcm;
use super::caps::{self, Output};
use super::fragment::{Mime, Tracker, is_aac};
use super::matching;
use super::pad::{Action, FlowResult, TrackPad};
use super::report;
use super::timeline::{self, Timeline};
use super::{Host, video};
use kvs_mkv::{Block, Event, Parser, SimpleTag, Track, TrackKind};

pub const DEFAULT_MAX_GAP_MS: u32 = 10_000;

/// Pads hand on what they hold once any of them holds this much, so that
/// one large input chunk never fills one pad's queue while a mixer or
/// interleave downstream waits on another pad.
pub const PENDING_SPAN: u64 = 200_000_000;
/// The same with merge-raw-audio, for fewer, larger buffers. A default 1 s
/// queue still takes them: it takes a buffer whenever it is empty, and a
/// silent pad lags at most `timeline::GAP_LAG`.
pub const MERGED_SPAN: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_pcm: ConnectPcm,
    pub stop_at_contact_end: bool,
    pub max_element_size: u32,
    /// Longest jump of the whole stream, in ms, that is filled rather than skipped.
    pub max_gap: u32,
    pub buffer_lists: bool,
    pub merge_raw_audio: bool,
    /// Fragments that start further behind live than this, in ms, are
    /// skipped (0: never).
    pub max_latency: u32,
    /// Video tracks get `video_%u` pads (kvsdemux); else they are skipped.
    pub video: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_pcm: ConnectPcm::Auto,
            stop_at_contact_end: false,
            max_element_size: kvs_mkv::parser::DEFAULT_MAX_ELEMENT_SIZE as u32,
            max_gap: DEFAULT_MAX_GAP_MS,
            buffer_lists: false,
            merge_raw_audio: false,
            max_latency: 0,
            video: false,
        }
    }
}

/// A seek sent upstream: output after the flush starts at `start` (ns of
/// stream time), or at the keyframe before it with `key_unit`.
#[derive(Debug, Clone, Copy)]
pub struct SeekTo {
    pub seqnum: gst::Seqnum,
    pub start: u64,
    pub key_unit: bool,
}

/// What one step did: the actions to perform, whether to step again, and
/// the demuxer's own result (an error, or EOS at a contact's end).
pub struct Step {
    pub actions: Vec<Action>,
    pub more: bool,
    pub result: FlowResult,
}

/// What the pads were last configured from.
type Config = (Vec<Track>, Mime, ConnectPcm);

/// How many of the stream's first bytes are kept to describe it.
const HEAD: usize = 8;

/// The first bytes of every Matroska or WebM file: the EBML header's ID.
const EBML_MAGIC: [u8; 4] = [0x1a, 0x45, 0xdf, 0xa3];

/// Bytes as hex, then as text when most are printable: `52 49 46 46 "RIFF"`.
fn describe(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02X}")).collect();
    let printable = head.iter().filter(|b| b.is_ascii_graphic()).count();
    if printable * 2 < head.len() {
        return hex.join(" ");
    }
    let text: String = head
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                *b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} \"{text}\"", hex.join(" "))
}

#[derive(Default)]
pub struct Demux {
    parser: Parser,
    adapter: gst_base::UniqueAdapter,
    events: Vec<Event>,
    tracker: Tracker<gst::Buffer>,
    timeline: Timeline,
    streams: Vec<TrackPad>,
    /// Actions not handed to the element yet.
    out: Vec<Action>,
    /// The next pad index of each kind: audio, video.
    next_index: [u32; 2],
    group_id: Option<gst::GroupId>,
    seqnum: Option<gst::Seqnum>,
    configured: Option<Config>,
    warned: Vec<u64>,
    bytes: u64,
    /// The stream's first bytes, to say what it is when it is not Matroska.
    head: Vec<u8>,
    stopped: bool,
    /// The buffer-lists and merge-raw-audio settings, taken with the first bytes.
    lists: bool,
    merge: bool,
    /// Fragments being skipped for max-latency.
    skipped: Option<report::Skipped>,
    /// A seek on its way upstream, until its flush.
    pub seek: Option<SeekTo>,
    /// A seek whose flush came: its segment goes out with the next block.
    seeking: Option<SeekTo>,
}

impl Demux {
    pub fn pads(&self) -> Vec<gst::Pad> {
        self.streams.iter().map(|s| s.pad().clone()).collect()
    }

    /// Takes an input buffer; `step` then reads it.
    pub fn input(&mut self, el: &Host, settings: &Settings, buffer: gst::Buffer) -> FlowResult {
        if self.stopped {
            return Err(gst::FlowError::Eos);
        }
        if buffer.flags().contains(gst::BufferFlags::DISCONT) && self.bytes > 0 {
            gst::debug!(
                el.cat,
                obj = el.obj,
                "Upstream discontinuity: dropping {} pending bytes, expecting a new chunk",
                self.adapter.available()
            );
            self.adapter.clear();
            self.parser.reset();
        }
        if self.bytes == 0 {
            self.parser = Parser::new(u64::from(settings.max_element_size));
            self.lists = settings.buffer_lists;
            self.merge = settings.merge_raw_audio;
        }
        if self.head.len() < HEAD
            && let Ok(map) = buffer.map_readable()
        {
            let take = (HEAD - self.head.len()).min(map.len());
            self.head.extend_from_slice(&map[..take]);
        }
        self.bytes += buffer.size() as u64;
        self.adapter.push(buffer);
        Ok(gst::FlowSuccess::Ok)
    }

    /// At EOS: no more bytes will come.
    pub fn set_last(&mut self) {
        self.parser.set_last();
    }

    /// Parses what the adapter holds, once.
    pub fn step(&mut self, el: &Host, settings: &Settings) -> Step {
        let (more, result) = match self.parse_once(el, settings) {
            Ok(more) => (more, Ok(gst::FlowSuccess::Ok)),
            Err(e) => (false, Err(e)),
        };
        self.flush_all();
        Step {
            actions: std::mem::take(&mut self.out),
            more,
            result,
        }
    }

    /// What to say at EOS when no track was output: that no bytes came,
    /// that they were not Matroska, or that no track was of the kind
    /// wanted. (message, debug, cause)
    fn nothing_to_output(&self, settings: &Settings) -> (String, String, &'static str) {
        let kind = if settings.video {
            "audio or video"
        } else {
            "audio"
        };
        if self.bytes == 0 {
            return (
                "No fragment arrived: the stream had no data after the start".into(),
                "No bytes came from upstream. Check the start (start-selector=earliest reads the \
                 whole stream)."
                    .into(),
                "no-fragment",
            );
        }
        if self.tracker.fragments == 0 && !self.head.starts_with(&EBML_MAGIC) {
            return (
                format!(
                    "Not a Matroska/WebM stream (it starts with {})",
                    describe(&self.head)
                ),
                format!(
                    "{} bytes and no EBML header (1A 45 DF A3) at the start",
                    self.bytes
                ),
                "not-matroska",
            );
        }
        (
            format!("No {kind} track in stream"),
            format!(
                "Parsed {} complete fragments ({} bytes) and found no track to output",
                self.tracker.fragments, self.bytes
            ),
            "no-track",
        )
    }

    /// Hands on every pad's pending buffers.
    fn flush_all(&mut self) {
        for s in &mut self.streams {
            s.flush(&mut self.out);
        }
    }

    /// Hands on every pad's pending buffers once one of them holds enough.
    fn flush_if_due(&mut self) {
        let span = if self.merge {
            MERGED_SPAN
        } else {
            PENDING_SPAN
        };
        if self.streams.iter().any(|s| s.pending_span() >= span) {
            self.flush_all();
        }
    }

    /// One parse call and its events; true if it got anywhere.
    fn parse_once(&mut self, el: &Host, settings: &Settings) -> Result<bool, gst::FlowError> {
        let avail = self.adapter.available();
        let need = self.parser.need();
        if avail == 0 || (avail < need && !self.parser.is_last()) {
            return Ok(false);
        }
        let mut events = std::mem::take(&mut self.events);
        let len = need.max(self.adapter.available_fast()).min(avail);
        let consumed = {
            let map = self.adapter.map(len).map_err(|_| gst::FlowError::Error)?;
            self.parser.parse(&map, &mut events)
        };
        let region = if events.iter().any(|e| matches!(e, Event::Block(_))) {
            Some(
                self.adapter
                    .take_buffer(consumed)
                    .map_err(|_| gst::FlowError::Error)?,
            )
        } else {
            self.adapter.flush(consumed);
            None
        };
        let stuck = consumed == 0
            && events.is_empty()
            && (self.parser.need() <= need || self.parser.is_last());
        let mut result = Ok(!stuck);
        for event in events.drain(..) {
            if let Err(e) = self.handle(el, settings, event, region.as_ref()) {
                result = Err(e);
                break;
            }
            self.flush_if_due();
        }
        events.clear();
        self.events = events;
        result
    }

    fn handle(
        &mut self,
        el: &Host,
        settings: &Settings,
        event: Event,
        region: Option<&gst::Buffer>,
    ) -> FlowResult {
        match event {
            Event::Header { offset, doc_type } => {
                gst::trace!(
                    el.cat,
                    obj = el.obj,
                    "New {doc_type} chunk at byte {offset}"
                );
                // A fragment cut short by damage lets its held blocks go.
                self.open_output(el, settings, true)?;
                self.tracker.chunk();
            }
            Event::Info { timestamp_scale } => {
                self.tracker.fragment.timestamp_scale = timestamp_scale
            }
            Event::Tracks(tracks) => self.tracker.set_tracks(tracks),
            Event::Tags(tags) => return self.on_tags(el, settings, &tags),
            Event::ClusterStart if !self.tracker.fragment.started => {
                if let Some(contact) = self.tracker.begin() {
                    self.on_contact(el, settings, contact)?;
                }
                let f = &self.tracker.fragment;
                let number = f.meta.fragment_number.as_deref();
                for s in &mut self.streams {
                    s.begin_fragment(number, f.replay);
                }
                if self.too_late(el, settings) {
                    return Ok(gst::FlowSuccess::Ok);
                }
                return self.open_output(el, settings, false);
            }
            Event::Block(block) => {
                if let Some(region) = region {
                    return self.on_block(el, settings, block, region);
                }
            }
            Event::SegmentEnd => return self.complete_fragment(el, settings),
            Event::Corrupt { offset, reason } => {
                self.out.push(Action::Post(report::warning(
                    el.obj,
                    gst::StreamError::Demux,
                    format!(
                        "Damaged KVS stream at byte {}: skipping to the next fragment",
                        offset
                    ),
                    format!("{reason} (fragment {})", self.tracker.name()),
                )));
                self.tracker.fragment.damaged = true;
                self.streams.iter_mut().for_each(TrackPad::mark_discont);
                return self.open_output(el, settings, true);
            }
            Event::ClusterStart | Event::ClusterEnd => {}
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn on_tags(&mut self, el: &Host, settings: &Settings, tags: &[SimpleTag]) -> FlowResult {
        let news = self.tracker.tags(tags);
        if let Some(err) = news.error {
            // The error is the last thing the demuxer posts: no report of
            // this chunk, nothing at EOS.
            self.stopped = true;
            self.out.push(Action::Post(report::error(
                el.obj,
                gst::StreamError::Failed,
                format!(
                    "Kinesis Video Streams reported an error in fragment {}: {} {} ({})",
                    self.tracker.name(),
                    err.code,
                    err.id,
                    err.meaning()
                ),
                format!(
                    "In-band error tags: code {:?}, id {:?}, message {:?}",
                    err.code, err.id, err.message
                ),
            )));
            return Err(gst::FlowError::Error);
        }
        if let Some(mime) = &news.mime {
            self.on_mime(el, settings, mime);
        }
        if let Some(contact) = news.contact {
            self.on_contact(el, settings, contact)?;
        }
        if self.tracker.fragment.started && !self.tracker.fragment.open {
            self.open_output(el, settings, false)?;
        }
        if news.complete {
            return self.complete_fragment(el, settings);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// A new MimeType. One that disagrees with how the open fragment was read
    /// is warned about; the caps change from the next fragment on.
    fn on_mime(&mut self, el: &Host, settings: &Settings, value: &str) {
        gst::debug!(el.cat, obj = el.obj, "MimeType {value:?}");
        if !self.tracker.fragment.open {
            return;
        }
        for s in &self.streams {
            let Ok(Some((output, reason))) =
                caps::output_for(s.track(), settings.connect_pcm, &self.tracker.mime)
            else {
                continue;
            };
            if output.caps != *s.caps() {
                self.out.push(Action::Post(report::warning(
                    el.obj,
                    gst::StreamError::Format,
                    format!(
                        "Track {} ({}) of fragment {} went out as {} but its MimeType says {:?}; \
                         the caps change from the next fragment",
                        s.track().number,
                        s.track().name,
                        self.tracker.name(),
                        s.caps(),
                        value
                    ),
                    format!("New caps {} because {reason}", output.caps),
                )));
            }
        }
    }

    /// The fragment's ContactId is known. A new one is reported; with
    /// stop-at-contact-end it ends the stream before the new contact's first
    /// block, which is why such a fragment is held until its ContactId comes.
    fn on_contact(&mut self, el: &Host, settings: &Settings, contact: String) -> FlowResult {
        let Some(previous) = self.tracker.contact_change(contact.clone()) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        // Where the new contact's audio starts on the output timeline.
        let starts = self
            .tracker
            .fragment
            .first_out
            .unwrap_or_else(|| self.newest());
        gst::info!(
            el.cat,
            obj = el.obj,
            "Contact changed from {previous} to {contact} at {}",
            gst::ClockTime::from_nseconds(starts)
        );
        let number = self
            .tracker
            .fragment
            .meta
            .fragment_number
            .as_deref()
            .unwrap_or("");
        let s = report::contact_changed(&previous, &contact, number, starts);
        let obj = el.obj;
        self.out.push(Action::Post(report::element(obj, s)));
        if !settings.stop_at_contact_end {
            return Ok(gst::FlowSuccess::Ok);
        }
        gst::info!(
            el.cat,
            obj = el.obj,
            "stop-at-contact-end: dropping {} held blocks of the new contact, sending EOS",
            self.tracker.held()
        );
        self.tracker.drop_held();
        self.stopped = true;
        for s in &mut self.streams {
            s.send_event(&mut self.out, gst::event::Eos::new());
        }
        Err(gst::FlowError::Eos)
    }

    /// With max-latency, marks the started fragment skipped if it is too
    /// far behind live; the first one kept after skipped ones posts
    /// `kvs-skipped` and continues output time where the pads are.
    fn too_late(&mut self, el: &Host, settings: &Settings) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let behind = self.tracker.behind_ms(now).unwrap_or(0);
        let max = u64::from(settings.max_latency);
        let meta = &self.tracker.fragment.meta;
        if max > 0 && behind > max {
            gst::info!(
                el.cat,
                obj = el.obj,
                "Skipping fragment {}: {behind} ms behind live, more than max-latency {max} ms",
                self.tracker.name()
            );
            let skip = self.skipped.get_or_insert_with(|| report::Skipped {
                behind_ms: behind,
                first_number: meta.fragment_number.clone(),
                first_producer: meta.producer_timestamp,
                ..Default::default()
            });
            skip.fragments += 1;
            self.tracker.fragment.skipped = true;
            return true;
        }
        if let Some(skip) = self.skipped.take() {
            let s = report::skipped(
                &skip,
                meta.fragment_number.as_deref(),
                meta.producer_timestamp,
            );
            gst::info!(el.cat, obj = el.obj, "Resuming after skipping: {s}");
            self.out.push(Action::Post(report::element(el.obj, s)));
            self.timeline.rebase();
            self.streams.iter_mut().for_each(TrackPad::mark_discont);
        }
        false
    }

    /// The output time the furthest pad has reached.
    fn newest(&self) -> u64 {
        self.streams
            .iter()
            .map(TrackPad::position)
            .max()
            .unwrap_or(0)
    }

    /// Configures the pads for the started fragment and sends its tags, then
    /// lets its held blocks go; unless it must wait for its trailing tags
    /// and `forced` is false. `forced` decides with what is known.
    fn open_output(&mut self, el: &Host, settings: &Settings, forced: bool) -> FlowResult {
        let f = &self.tracker.fragment;
        if !f.started || f.open || f.skipped || self.stopped {
            return Ok(gst::FlowSuccess::Ok);
        }
        match self
            .tracker
            .hold_reason(settings.connect_pcm, settings.stop_at_contact_end)
        {
            Some(reason) if !forced => {
                if self.tracker.held() == 0 {
                    gst::debug!(
                        el.cat,
                        obj = el.obj,
                        "Holding the blocks of fragment {} for {reason}",
                        self.tracker.name()
                    );
                }
                return Ok(gst::FlowSuccess::Ok);
            }
            Some(reason) => gst::debug!(
                el.cat,
                obj = el.obj,
                "Fragment {} ended or grew too long without {reason}: deciding with what is known",
                self.tracker.name()
            ),
            None => {}
        }
        let held = self.tracker.open(forced);
        let (added, removed) = self.configure(el, settings);
        // Tags first: a pad-added handler finds the track name in the sticky
        // tag event.
        self.push_tags();
        self.out.extend(added.iter().cloned().map(Action::AddPad));
        if !added.is_empty() || removed {
            self.out.push(Action::NoMorePads);
        }
        if !held.is_empty() {
            gst::debug!(
                el.cat,
                obj = el.obj,
                "Letting {} held blocks go",
                held.len()
            );
        }
        for (block, region) in held {
            self.on_block(el, settings, block, &region)?;
            self.flush_if_due();
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Brings the pads in line with the tracks in force. Returns the new
    /// pads, to be added once they carry their tags, and whether pads went.
    fn configure(&mut self, el: &Host, settings: &Settings) -> (Vec<gst::Pad>, bool) {
        let mime = self.tracker.mime.clone();
        let key = (
            self.tracker.tracks.clone(),
            mime.clone(),
            settings.connect_pcm,
        );
        if self.configured.as_ref() == Some(&key) {
            return (Vec::new(), false);
        }
        self.configured = Some(key);
        let mut wanted = Vec::new();
        for track in &self.tracker.tracks {
            let output = match track.kind {
                TrackKind::Audio => caps::output_for(track, settings.connect_pcm, &mime.settled())
                    .map(|o| o.expect("a settled MimeType decides every track")),
                TrackKind::Video if settings.video => {
                    video::output_for(track).map(|o| (o, "the CodecID"))
                }
                _ => {
                    gst::debug!(
                        el.cat,
                        obj = el.obj,
                        "Skipping {:?} track {} ({:?})",
                        track.kind,
                        track.number,
                        track.codec_id
                    );
                    continue;
                }
            };
            match output {
                Ok((output, reason)) => wanted.push((track.clone(), output, reason)),
                Err(err) if !self.warned.contains(&track.number) => {
                    self.warned.push(track.number);
                    let kind = if track.kind == TrackKind::Video {
                        "video"
                    } else {
                        "audio"
                    };
                    self.out.push(Action::Post(report::warning(
                        el.obj,
                        gst::StreamError::CodecNotFound,
                        format!(
                            "Skipping {} track {} ({:?}): {}",
                            kind, track.number, track.name, err
                        ),
                        String::new(),
                    )));
                }
                Err(_) => {}
            }
        }
        let keys: Vec<matching::Key> = self
            .streams
            .iter()
            .map(|s| (s.track().number, s.track().name.as_str()))
            .collect();
        let wanted_keys: Vec<matching::Key> = wanted
            .iter()
            .map(|(t, _, _)| (t.number, t.name.as_str()))
            .collect();
        let kept = matching::keep(&keys, &wanted_keys);
        let mut old: Vec<Option<TrackPad>> = std::mem::take(&mut self.streams)
            .into_iter()
            .map(Some)
            .collect();
        let mut added = Vec::new();
        for ((track, output, reason), keeps) in wanted.into_iter().zip(kept) {
            let stream = match keeps.and_then(|i| old[i].take()) {
                Some(mut s) => {
                    let caps = output.caps.clone();
                    if s.retrack(&mut self.out, track, output) {
                        let t = s.track();
                        gst::info!(
                            el.cat,
                            obj = s.pad(),
                            "Track {} ({:?}): caps change to {caps} because {reason}",
                            t.number,
                            t.name
                        );
                    }
                    s
                }
                None => {
                    gst::info!(
                        el.cat,
                        obj = el.obj,
                        "Track {} ({:?}, {}): {} because {reason}",
                        track.number,
                        track.name,
                        track.codec_id,
                        output.caps
                    );
                    let s = self.new_stream(el, track, output);
                    added.push(s.pad().clone());
                    s
                }
            };
            self.streams.push(stream);
        }
        let mut removed = false;
        for mut s in old.into_iter().flatten() {
            gst::debug!(
                el.cat,
                obj = s.pad(),
                "Track {} is gone, removing its pad",
                s.track().number
            );
            s.send_event(&mut self.out, gst::event::Eos::new());
            self.out.push(Action::RemovePad(s.pad().clone()));
            removed = true;
        }
        (added, removed)
    }

    fn segment_event(&mut self) -> gst::Event {
        self.segment_at(0)
    }

    /// A segment whose start, time and position are `start` ns.
    fn segment_at(&mut self, start: u64) -> gst::Event {
        let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
        let start = gst::ClockTime::from_nseconds(start);
        segment.set_start(start);
        segment.set_time(start);
        segment.set_position(start);
        let seqnum = *self.seqnum.get_or_insert_with(gst::Seqnum::next);
        gst::event::Segment::builder(&segment)
            .seqnum(seqnum)
            .build()
    }

    fn new_stream(&mut self, el: &Host, track: Track, output: Output) -> TrackPad {
        let obj = el.obj;
        let (kind, index) = match track.kind {
            TrackKind::Video => ("video", &mut self.next_index[1]),
            _ => ("audio", &mut self.next_index[0]),
        };
        let templ = obj
            .element_class()
            .pad_template(&format!("{kind}_%u"))
            .unwrap();
        let pad = (el.make_pad)(&templ, &format!("{kind}_{index}"));
        *index += 1;
        pad.set_active(true).ok();
        // Sticky events on a pad not added yet: no peer, nothing blocks.
        let stream_id = pad.create_stream_id(obj, Some(&track.number.to_string()));
        let group = *self.group_id.get_or_insert_with(gst::GroupId::next);
        pad.push_event(
            gst::event::StreamStart::builder(&stream_id)
                .group_id(group)
                .build(),
        );
        pad.push_event(gst::event::Caps::new(&output.caps));
        pad.push_event(self.segment_event());
        TrackPad::new(pad, track, output, self.newest(), self.lists, self.merge)
    }

    fn push_tags(&mut self) {
        let t = &self.tracker;
        let ctx = report::Context {
            prev_token: t.prev_token.as_deref(),
            prev_millis: t.prev_millis,
            contact: t.contact.as_deref(),
        };
        for s in &mut self.streams {
            let list = report::fragment_tags(&t.fragment.meta, &s.track().name, &ctx);
            s.send_event(&mut self.out, gst::event::Tag::new(list));
        }
        self.tracker.fragment.sent = Some(self.tracker.tag_view());
    }

    fn on_block(
        &mut self,
        el: &Host,
        settings: &Settings,
        block: Block,
        region: &gst::Buffer,
    ) -> FlowResult {
        let scale = self.tracker.fragment.timestamp_scale;
        let abs = (i128::from(block.cluster_timecode) + i128::from(block.relative))
            .saturating_mul(i128::from(scale));
        if self.tracker.fragment.skipped {
            return Ok(gst::FlowSuccess::Ok);
        }
        if !self.tracker.fragment.open {
            if self.tracker.hold(block, region.clone(), abs) {
                gst::debug!(el.cat, obj = el.obj, "Held blocks reached their bounds");
                return self.open_output(el, settings, true);
            }
            return Ok(gst::FlowSuccess::Ok);
        }
        self.tracker.count_block(block.track);
        let Some(idx) = self
            .streams
            .iter()
            .position(|s| s.track().number == block.track)
        else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let producer = self.tracker.producer_time(abs);
        let number = self.tracker.fragment.meta.fragment_number.as_deref();
        if self.streams[idx].seen_before(number, abs) {
            gst::trace!(
                el.cat,
                obj = el.obj,
                "Dropping replayed block of track {} at {abs} ns",
                block.track
            );
            return Ok(gst::FlowSuccess::Ok);
        }
        let max_gap = u64::from(settings.max_gap) * 1_000_000;
        let resync = self.timeline.resyncing();
        let (out, jump) =
            self.timeline
                .place(abs, self.streams[idx].position(), self.newest(), max_gap);
        if resync {
            self.resume_after_seek(el, out);
        }
        if let Some(jump) = jump {
            gst::debug!(
                el.cat,
                obj = el.obj,
                "Timeline moved: {jump:?}; continuing from {out}"
            );
            self.streams.iter_mut().for_each(TrackPad::mark_discont);
        }
        self.tracker.fragment.first_out.get_or_insert(out);
        // Keep silent pads moving first, so that sinks preroll and mixers and
        // interleave never wait on them.
        for (i, s) in self.streams.iter_mut().enumerate() {
            if let Some(until) = timeline::lag_fill(s.position(), out).filter(|_| i != idx) {
                s.fill(&mut self.out, until);
            }
        }
        let stream = &mut self.streams[idx];
        if timeline::is_gap(stream.position(), out) {
            gst::debug!(
                el.cat,
                obj = stream.pad(),
                "Gap of {} ns",
                out - stream.position()
            );
            stream.fill(&mut self.out, out);
            stream.mark_discont();
        }
        let producer = gst::ClockTime::from_nseconds(producer);
        stream.push_block(&block, region, out, scale, producer)
    }

    /// The first block after a seek's flush, at `out`: the pads start there,
    /// and get the seek's segment.
    fn resume_after_seek(&mut self, el: &Host, out: u64) {
        let Some(seek) = self.seeking.take() else {
            return;
        };
        let start = if seek.key_unit {
            out.min(seek.start)
        } else {
            seek.start
        };
        gst::debug!(
            el.cat,
            obj = el.obj,
            "Resuming at {} after a seek to {}",
            gst::ClockTime::from_nseconds(out),
            gst::ClockTime::from_nseconds(seek.start)
        );
        let segment = self.segment_at(start);
        for s in &mut self.streams {
            s.move_to(out);
            s.send_event(&mut self.out, segment.clone());
        }
    }

    /// The fragment's last tags are in (or its chunk ended): held blocks go
    /// out, tags that came after its blocks are sent, and it is reported.
    fn complete_fragment(&mut self, el: &Host, settings: &Settings) -> FlowResult {
        self.open_output(el, settings, true)?;
        let Some(stale) = self.tracker.end() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        // Tags after the Cluster (real Connect: ContactId, MimeType...)
        // belong to this fragment: its pads get them now, after its audio.
        if stale {
            self.push_tags();
        }
        let index = self.tracker.reported();
        let t = &self.tracker;
        let s = report::fragment_message(
            index,
            &t.fragment.meta,
            t.contact.as_deref(),
            &t.fragment.blocks,
        );
        gst::debug!(el.cat, obj = el.obj, "Fragment complete: {s}");
        self.out.push(Action::Post(report::element(el.obj, s)));
        Ok(gst::FlowSuccess::Ok)
    }

    /// At EOS, once the rest was read: delivers what is complete, then EOS
    /// on every pad.
    pub fn finish(&mut self, el: &Host, settings: &Settings) -> Vec<Action> {
        if self.stopped {
            return Vec::new();
        }
        let left = self.adapter.available();
        if (left > 0 || self.parser.is_skipping()) && self.tracker.fragment.seen {
            self.out.push(Action::Post(report::warning(el.obj, gst::StreamError::Demux, format!("The stream ended inside fragment {}", self.tracker.name()), format!(
                    "Dropped an incomplete element at byte {} ({left} bytes); every complete block was output",
                    self.parser.offset()
                ))));
            self.tracker.fragment.damaged = true;
        }
        self.adapter.clear();
        let mut events = Vec::new();
        self.parser.finish(&mut events);
        for event in events {
            let _ = self.handle(el, settings, event, None);
        }
        let _ = self.open_output(el, settings, true);
        if self.stopped {
            return std::mem::take(&mut self.out);
        }
        if let Some(skip) = self.skipped.take() {
            let s = report::skipped(&skip, None, None);
            self.out.push(Action::Post(report::element(el.obj, s)));
        }
        if self.streams.is_empty() {
            let (text, debug, cause) = self.nothing_to_output(settings);
            self.out.push(Action::Post(report::failure(
                el.obj,
                gst::StreamError::Demux,
                text,
                debug,
                cause,
            )));
            return std::mem::take(&mut self.out);
        }
        if let Some(seek) = self.seeking.take() {
            let segment = self.segment_at(seek.start);
            for s in &mut self.streams {
                s.move_to(seek.start);
                s.send_event(&mut self.out, segment.clone());
            }
        }
        let newest = self.newest();
        for s in &mut self.streams {
            if s.position() < newest {
                s.fill(&mut self.out, newest);
            }
            s.send_event(&mut self.out, gst::event::Eos::new());
        }
        std::mem::take(&mut self.out)
    }

    /// Downstream refused these pads' caps: an error that names each track,
    /// once, before the generic one upstream posts.
    pub fn refused(&mut self, el: &Host, pads: &[gst::Pad]) -> Vec<Action> {
        for s in self.streams.iter_mut().filter(|s| pads.contains(s.pad())) {
            if !s.refuse() {
                continue;
            }
            let hint = if is_aac(&s.track().codec_id) {
                "If this is Amazon Connect audio (raw PCM labelled A_AAC), set connect-pcm=always; \
                 if it is AAC, put a decoder (decodebin) after the pad"
            } else {
                "Put a decoder (decodebin) after the pad, or link it to an element that takes these caps"
            };
            self.out.push(Action::Post(report::error(
                el.obj,
                gst::CoreError::Negotiation,
                format!(
                    "Track {} ({:?}, CodecID {}) came out as {}, which downstream refused",
                    s.track().number,
                    s.track().name,
                    s.track().codec_id,
                    s.caps()
                ),
                format!("{hint} (pad {})", s.pad().name()),
            )));
        }
        std::mem::take(&mut self.out)
    }

    /// Forgets parsing state after a flush; pads stay. After a seek, output
    /// time stays the stream's and the seek's segment goes out with the
    /// first block; else a new segment starts at 0.
    pub fn flush(&mut self, el: &Host) -> Vec<Action> {
        self.adapter.clear();
        self.parser.reset();
        self.tracker.flush();
        self.skipped = None;
        self.stopped = false;
        self.out.clear();
        for s in &mut self.streams {
            s.reset_for_flush();
        }
        if let Some(seek) = self.seek.take() {
            gst::debug!(el.cat, obj = el.obj, "Flushed for a seek: {seek:?}");
            self.timeline.resync();
            self.seqnum = Some(seek.seqnum);
            self.seeking = Some(seek);
            return Vec::new();
        }
        self.timeline.reset();
        self.seqnum = None;
        self.seeking = None;
        let segment = self.segment_event();
        for s in &self.streams {
            self.out
                .push(Action::Event(s.pad().clone(), segment.clone()));
        }
        std::mem::take(&mut self.out)
    }
}
