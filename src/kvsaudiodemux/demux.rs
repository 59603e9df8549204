// SPDX-License-Identifier: MPL-2.0
//! The streaming state of kvsaudiodemux: feeds the parser from an adapter and
//! turns its events into pads, buffers, tags and messages.
//!
//! Timeline: output time is the block's absolute time plus one stream-wide
//! offset, chosen so that the first block is at 0. A jump back in time moves
//! the offset so output time keeps running forward. After an upstream
//! reconnect, blocks of a fragment that was already (partly) output are
//! dropped by their timestamp, so every sample leaves exactly once.
//!
//! Caps: Connect puts a fragment's MimeType (and ContactId) after its
//! Cluster. An A_AAC track with a Connect name is read as L16 at once;
//! another A_AAC track whose kind no MimeType has told yet is held until the
//! fragment's trailing tags are in (see `Fragment::held`). A MimeType that
//! disagrees with what a fragment was read as changes the caps from the
//! next fragment on, with a warning.

use std::cmp::Ordering;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::ConnectPcm;
use super::caps::{self, Mime, Output};
use super::imp::{CAT, KvsAudioDemux};
use super::report;
use super::stream::{FlowResult, Stream};
use crate::kvs::{self, FragmentMeta};
use crate::mkv::elements::DEFAULT_TIMESTAMP_SCALE;
use crate::mkv::{Block, Event, Parser, SimpleTag, Track, TrackKind};

/// A block this much later than its pad's position starts a gap (DISCONT);
/// this much earlier counts as time going backwards.
const DISCONT_TOLERANCE: u64 = 200_000_000;
pub const DEFAULT_MAX_GAP_MS: u32 = 10_000;

/// A pad this far behind another gets GAP events up to that distance. It is
/// well under a default queue's 1 s, so a silent pad never stalls a pipeline.
const GAP_LAG: u64 = 400_000_000;

/// Pads push what they hold once any of them holds this much, so that one
/// large input chunk never fills one pad's queue while a mixer or
/// interleave downstream waits on another pad.
pub const PENDING_SPAN: u64 = 200_000_000;

/// Held blocks are let go, decided with what is known, past this span of
/// block time or these many bytes.
const MAX_HOLD_SPAN: i128 = 10_000_000_000;
const MAX_HOLD_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_pcm: ConnectPcm,
    pub stop_at_contact_end: bool,
    pub max_element_size: u32,
    /// Longest jump of the whole stream, in ms, that is filled rather than skipped.
    pub max_gap: u32,
    pub buffer_lists: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_pcm: ConnectPcm::Auto,
            stop_at_contact_end: false,
            max_element_size: crate::mkv::parser::DEFAULT_MAX_ELEMENT_SIZE as u32,
            max_gap: DEFAULT_MAX_GAP_MS,
            buffer_lists: false,
        }
    }
}

/// The chunk being parsed.
struct Fragment {
    meta: FragmentMeta,
    tracks: Option<Vec<Track>>,
    timestamp_scale: u64,
    /// Its Cluster has started.
    started: bool,
    /// The pads are configured for it, and its blocks go out as they come.
    open: bool,
    /// Blocks waiting for the fragment's trailing tags (its MimeType, or its
    /// ContactId with stop-at-contact-end), with the bytes they hold.
    held: Vec<(Block, gst::Buffer)>,
    held_bytes: usize,
    /// What its tag event said (see `Demux::tag_view`).
    sent: Option<(FragmentMeta, Option<String>)>,
    /// Output time of its first block.
    first_out: Option<u64>,
    /// Its fragment number is not past the last one seen: a replay after a reconnect.
    replay: bool,
    /// Absolute time of the first block, and the producer time it maps to.
    anchor: Option<(i128, Option<u64>)>,
    /// Blocks per TrackNumber.
    blocks: Vec<(u64, u64)>,
    damaged: bool,
    reported: bool,
    /// An EBML header or Segment was seen.
    seen: bool,
}

impl Default for Fragment {
    fn default() -> Self {
        Fragment {
            meta: FragmentMeta::default(),
            tracks: None,
            timestamp_scale: DEFAULT_TIMESTAMP_SCALE,
            started: false,
            open: false,
            held: Vec::new(),
            held_bytes: 0,
            sent: None,
            first_out: None,
            replay: false,
            anchor: None,
            blocks: Vec::new(),
            damaged: false,
            reported: false,
            seen: false,
        }
    }
}

/// What the pads were last configured from.
type Config = (Vec<Track>, Mime, ConnectPcm);

#[derive(Default)]
pub struct Demux {
    parser: Parser,
    adapter: gst_base::UniqueAdapter,
    events: Vec<Event>,
    streams: Vec<Stream>,
    new_pads: Vec<gst::Pad>,
    next_index: u32,
    group_id: Option<gst::GroupId>,
    seqnum: Option<gst::Seqnum>,
    fragment: Fragment,
    /// The Tracks in force (a chunk without Tracks keeps the previous ones).
    tracks: Vec<Track>,
    configured: Option<Config>,
    warned: Vec<u64>,
    mime: Mime,
    contact: Option<String>,
    last_number: Option<String>,
    prev_token: Option<String>,
    prev_millis: Option<u64>,
    offset: Option<i128>,
    fragments: u64,
    bytes: u64,
    stopped: bool,
    /// The buffer-lists setting, taken when the first pad is made.
    lists: bool,
}

impl Demux {
    pub fn pads(&self) -> Vec<gst::Pad> {
        self.streams.iter().map(|s| s.pad.clone()).collect()
    }

    pub fn chain(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        buffer: gst::Buffer,
    ) -> FlowResult {
        if self.stopped {
            return Err(gst::FlowError::Eos);
        }
        if buffer.flags().contains(gst::BufferFlags::DISCONT) && self.bytes > 0 {
            gst::debug!(
                CAT,
                imp = imp,
                "Upstream discontinuity: dropping {} pending bytes, expecting a new chunk",
                self.adapter.available()
            );
            self.adapter.clear();
            self.parser.reset();
        }
        if self.bytes == 0 {
            self.parser = Parser::new(u64::from(settings.max_element_size));
            self.lists = settings.buffer_lists;
        }
        self.bytes += buffer.size() as u64;
        self.adapter.push(buffer);
        self.drain(imp, settings)
    }

    /// Pushes every pad's pending buffers; all pads push even if one fails.
    fn flush_all(&mut self, imp: &KvsAudioDemux) -> FlowResult {
        let mut result = Ok(gst::FlowSuccess::Ok);
        for s in &mut self.streams {
            let flushed = s.flush(imp);
            if result.is_ok() {
                result = flushed;
            }
        }
        result
    }

    fn drain(&mut self, imp: &KvsAudioDemux, settings: &Settings) -> FlowResult {
        let mut events = std::mem::take(&mut self.events);
        let mut result = Ok(gst::FlowSuccess::Ok);
        while result.is_ok() {
            let avail = self.adapter.available();
            let need = self.parser.need();
            if avail == 0 || (avail < need && !self.parser.is_last()) {
                break;
            }
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
            if consumed == 0
                && events.is_empty()
                && (self.parser.need() <= need || self.parser.is_last())
            {
                break;
            }
            for event in events.drain(..) {
                result = self
                    .handle(imp, settings, event, region.as_ref())
                    .and_then(|_| self.push_if_due(imp));
                if result.is_err() {
                    break;
                }
            }
            let flushed = self.flush_all(imp);
            if result.is_ok() {
                result = flushed;
            }
        }
        events.clear();
        self.events = events;
        result
    }

    fn handle(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        event: Event,
        region: Option<&gst::Buffer>,
    ) -> FlowResult {
        match event {
            Event::Header { offset, doc_type } => {
                gst::trace!(CAT, imp = imp, "New {doc_type} chunk at byte {offset}");
                // A fragment cut short by damage lets its held blocks go.
                self.open_output(imp, settings, true)?;
                self.fragment = Fragment {
                    seen: true,
                    ..Fragment::default()
                };
            }
            Event::Info { timestamp_scale } => self.fragment.timestamp_scale = timestamp_scale,
            Event::Tracks(tracks) => self.fragment.tracks = Some(tracks),
            Event::Tags(tags) => return self.on_tags(imp, settings, &tags),
            Event::ClusterStart if !self.fragment.started => {
                return self.begin_fragment(imp, settings);
            }
            Event::Block(block) => {
                if let Some(region) = region {
                    return self.on_block(imp, settings, block, region);
                }
            }
            Event::SegmentEnd => return self.complete_fragment(imp, settings),
            Event::Corrupt { offset, reason } => {
                gst::element_imp_warning!(
                    imp,
                    gst::StreamError::Demux,
                    (
                        "Damaged KVS stream at byte {}: skipping to the next fragment",
                        offset
                    ),
                    ["{reason} (fragment {})", self.fragment_name()]
                );
                self.fragment.damaged = true;
                self.streams.iter_mut().for_each(|s| s.discont = true);
                return self.open_output(imp, settings, true);
            }
            Event::ClusterStart | Event::ClusterEnd => {}
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn fragment_name(&self) -> &str {
        self.fragment
            .meta
            .fragment_number
            .as_deref()
            .unwrap_or("without number")
    }

    fn on_tags(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        tags: &[SimpleTag],
    ) -> FlowResult {
        self.fragment.seen = true;
        let had_contact = self.fragment.meta.contact_id.is_some();
        self.fragment.meta.apply(tags);
        if tags.iter().any(|t| kvs::is_error_tag(&t.name)) {
            // The error is the last thing the demuxer posts: no report of
            // this chunk, nothing at EOS.
            self.stopped = true;
            let err = self.fragment.meta.error.clone().unwrap_or_default();
            gst::element_imp_error!(
                imp,
                gst::StreamError::Failed,
                (
                    "Kinesis Video Streams reported an error in fragment {}: {} {} ({})",
                    self.fragment_name(),
                    err.code,
                    err.id,
                    err.meaning()
                ),
                [
                    "In-band error tags: code {:?}, id {:?}, message {:?}",
                    err.code,
                    err.id,
                    err.message
                ]
            );
            return Err(gst::FlowError::Error);
        }
        if let Some(mime) = tags.iter().rev().find(|t| t.name == kvs::MIME_TYPE) {
            self.on_mime(imp, settings, mime.value.trim());
        }
        // Before the Cluster, the fragment's other tags may still come:
        // `begin_fragment` looks at the contact then.
        if self.fragment.started
            && !had_contact
            && let Some(contact) = self.fragment.meta.contact_id.clone()
        {
            self.on_contact(imp, settings, contact)?;
        }
        if self.fragment.started && !self.fragment.open {
            self.open_output(imp, settings, false)?;
        }
        if self.fragment.started && self.fragment.meta.continuation_token.is_some() {
            return self.complete_fragment(imp, settings);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// A MimeType tag: the authority on how A_AAC tracks are read. One that
    /// disagrees with how the open fragment was read is warned about; the
    /// caps change from the next fragment on.
    fn on_mime(&mut self, imp: &KvsAudioDemux, settings: &Settings, value: &str) {
        let mime = Mime::Said(value.to_string());
        if mime == self.mime {
            return;
        }
        gst::debug!(CAT, imp = imp, "MimeType {value:?}");
        self.mime = mime;
        if !self.fragment.open {
            return;
        }
        for s in &self.streams {
            let Ok(Some((output, reason))) =
                caps::output_for(&s.track, settings.connect_pcm, &self.mime)
            else {
                continue;
            };
            if output.caps != s.output.caps {
                gst::element_imp_warning!(
                    imp,
                    gst::StreamError::Format,
                    (
                        "Track {} ({}) of fragment {} went out as {} but its MimeType says {:?}; \
                         the caps change from the next fragment",
                        s.track.number,
                        s.track.name,
                        self.fragment_name(),
                        s.output.caps,
                        value
                    ),
                    ["New caps {} because {reason}", output.caps]
                );
            }
        }
    }

    /// The fragment's ContactId is known. A new one is reported; with
    /// stop-at-contact-end it ends the stream before the new contact's first
    /// block, which is why such a fragment is held until its ContactId comes.
    fn on_contact(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        contact: String,
    ) -> FlowResult {
        let Some(previous) = self.contact.replace(contact.clone()) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        if previous == contact {
            return Ok(gst::FlowSuccess::Ok);
        }
        // Where the new contact's audio starts on the output timeline.
        let starts = self
            .fragment
            .first_out
            .unwrap_or_else(|| self.streams.iter().map(|s| s.position).max().unwrap_or(0));
        gst::info!(
            CAT,
            imp = imp,
            "Contact changed from {previous} to {contact} at {}",
            gst::ClockTime::from_nseconds(starts)
        );
        let number = self.fragment.meta.fragment_number.as_deref().unwrap_or("");
        let s = report::contact_changed(&previous, &contact, number, starts);
        let obj = imp.obj();
        obj.post_message(gst::message::Element::builder(s).src(&*obj).build())
            .ok();
        if !settings.stop_at_contact_end {
            return Ok(gst::FlowSuccess::Ok);
        }
        gst::info!(
            CAT,
            imp = imp,
            "stop-at-contact-end: dropping {} held blocks of the new contact, sending EOS",
            self.fragment.held.len()
        );
        self.fragment.held.clear();
        self.stopped = true;
        for s in &mut self.streams {
            let _ = s.send_event(imp, gst::event::Eos::new());
        }
        Err(gst::FlowError::Eos)
    }

    fn begin_fragment(&mut self, imp: &KvsAudioDemux, settings: &Settings) -> FlowResult {
        self.fragment.started = true;
        let meta = &self.fragment.meta;
        if let Some(number) = &meta.fragment_number {
            let replay = self.last_number.as_deref().is_some_and(|last| {
                kvs::compare_fragment_numbers(number, last) != Ordering::Greater
            });
            self.fragment.replay = replay;
            if !replay {
                self.last_number = Some(number.clone());
            }
        }
        if let Some(tracks) = self.fragment.tracks.take() {
            self.tracks = tracks;
        }
        if let Some(contact) = self.fragment.meta.contact_id.clone() {
            self.on_contact(imp, settings, contact)?;
        }
        self.open_output(imp, settings, false)
    }

    /// Why the fragment's blocks must wait for its trailing tags, if they must.
    fn hold_reason(&self, settings: &Settings) -> Option<String> {
        if settings.stop_at_contact_end
            && self.contact.is_some()
            && self.fragment.meta.contact_id.is_none()
        {
            return Some("its ContactId (stop-at-contact-end)".into());
        }
        let undecided = self.tracks.iter().find(|t| {
            t.kind == TrackKind::Audio
                && matches!(
                    caps::output_for(t, settings.connect_pcm, &self.mime),
                    Ok(None)
                )
        })?;
        Some(format!(
            "a MimeType: track {} ({:?}) is A_AAC, and only a MimeType tells AAC from PCM",
            undecided.number, undecided.name
        ))
    }

    /// Configures the pads for the started fragment and sends its tags, then
    /// lets its held blocks go; unless it must wait for its trailing tags
    /// and `forced` is false. `forced` decides with what is known.
    fn open_output(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        forced: bool,
    ) -> FlowResult {
        if !self.fragment.started || self.fragment.open || self.stopped {
            return Ok(gst::FlowSuccess::Ok);
        }
        match self.hold_reason(settings) {
            Some(reason) if !forced => {
                if self.fragment.held.is_empty() {
                    gst::debug!(
                        CAT,
                        imp = imp,
                        "Holding the blocks of fragment {} for {reason}",
                        self.fragment_name()
                    );
                }
                return Ok(gst::FlowSuccess::Ok);
            }
            Some(reason) => gst::debug!(
                CAT,
                imp = imp,
                "Fragment {} ended or grew too long without {reason}: deciding with what is known",
                self.fragment_name()
            ),
            None => {}
        }
        self.fragment.open = true;
        if forced {
            self.mime = self.mime.settled();
        }
        let changed = self.configure(imp, settings);
        // Tags first: a pad-added handler finds the track name in the sticky
        // tag event.
        let mut result = self.push_tags(imp);
        for pad in std::mem::take(&mut self.new_pads) {
            imp.add_src_pad(&pad);
        }
        if changed {
            imp.obj().no_more_pads();
        }
        let held = std::mem::take(&mut self.fragment.held);
        if !held.is_empty() {
            gst::debug!(CAT, imp = imp, "Letting {} held blocks go", held.len());
        }
        for (block, region) in held {
            if result.is_err() {
                break;
            }
            result = self
                .on_block(imp, settings, block, &region)
                .and_then(|_| self.push_if_due(imp));
        }
        result
    }

    /// Pushes every pad's pending buffers once one of them holds enough.
    fn push_if_due(&mut self, imp: &KvsAudioDemux) -> FlowResult {
        if self
            .streams
            .iter()
            .any(|s| s.pending_span() >= PENDING_SPAN)
        {
            return self.flush_all(imp);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Brings the pads in line with the tracks in force. New pads go to
    /// `new_pads`, to be added once they carry their tags. Returns whether
    /// the set of pads changed.
    fn configure(&mut self, imp: &KvsAudioDemux, settings: &Settings) -> bool {
        let key = (self.tracks.clone(), self.mime.clone(), settings.connect_pcm);
        if self.configured.as_ref() == Some(&key) {
            return false;
        }
        self.configured = Some(key);
        let mut wanted = Vec::new();
        for track in &self.tracks {
            if track.kind != TrackKind::Audio {
                gst::debug!(
                    CAT,
                    imp = imp,
                    "Skipping {:?} track {} ({:?})",
                    track.kind,
                    track.number,
                    track.codec_id
                );
                continue;
            }
            match caps::output_for(track, settings.connect_pcm, &self.mime.settled()) {
                Ok(Some((output, reason))) => wanted.push((track.clone(), output, reason)),
                Ok(None) => unreachable!("a settled MimeType decides every track"),
                Err(err) if !self.warned.contains(&track.number) => {
                    self.warned.push(track.number);
                    gst::element_imp_warning!(
                        imp,
                        gst::StreamError::CodecNotFound,
                        (
                            "Skipping audio track {} ({:?}): {}",
                            track.number,
                            track.name,
                            err
                        )
                    );
                }
                Err(_) => {}
            }
        }
        let mut old: Vec<Option<Stream>> = std::mem::take(&mut self.streams)
            .into_iter()
            .map(Some)
            .collect();
        let mut added = false;
        for (track, output, reason) in wanted {
            // Same number and name, else same name: a pad keeps its speaker
            // even when Connect swaps the track order.
            let same = |s: &Option<Stream>, by_number: bool| {
                s.as_ref().is_some_and(|s| {
                    s.track.name == track.name && (!by_number || s.track.number == track.number)
                })
            };
            let found = old.iter().position(|s| same(s, true)).or_else(|| {
                (!track.name.is_empty())
                    .then(|| old.iter().position(|s| same(s, false)))
                    .flatten()
            });
            let stream = match found.and_then(|i| old[i].take()) {
                Some(mut s) => {
                    if s.output.caps != output.caps {
                        gst::info!(
                            CAT,
                            obj = s.pad,
                            "Track {} ({:?}): caps change to {} because {reason}",
                            track.number,
                            track.name,
                            output.caps
                        );
                        let _ = s.send_event(imp, gst::event::Caps::new(&output.caps));
                    }
                    s.track = track;
                    s.output = output;
                    s
                }
                None => {
                    added = true;
                    gst::info!(
                        CAT,
                        imp = imp,
                        "Track {} ({:?}, {}): {} because {reason}",
                        track.number,
                        track.name,
                        track.codec_id,
                        output.caps
                    );
                    self.new_stream(imp, track, output)
                }
            };
            self.streams.push(stream);
        }
        let mut removed: Vec<Stream> = old.into_iter().flatten().collect();
        for s in &mut removed {
            gst::debug!(
                CAT,
                obj = s.pad,
                "Track {} is gone, removing its pad",
                s.track.number
            );
            let _ = s.send_event(imp, gst::event::Eos::new());
            imp.remove_src_pad(&s.pad);
        }
        added || !removed.is_empty()
    }

    fn segment_event(&mut self) -> gst::Event {
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        let seqnum = *self.seqnum.get_or_insert_with(gst::Seqnum::next);
        gst::event::Segment::builder(&segment)
            .seqnum(seqnum)
            .build()
    }

    fn new_stream(&mut self, imp: &KvsAudioDemux, track: Track, output: Output) -> Stream {
        let obj = imp.obj();
        let templ = obj.element_class().pad_template("audio_%u").unwrap();
        let pad = gst::Pad::builder_from_template(&templ)
            .name(format!("audio_{}", self.next_index))
            .build();
        self.next_index += 1;
        pad.set_active(true).ok();
        let stream_id = pad.create_stream_id(&*obj, Some(&track.number.to_string()));
        let group = *self.group_id.get_or_insert_with(gst::GroupId::next);
        pad.push_event(
            gst::event::StreamStart::builder(&stream_id)
                .group_id(group)
                .build(),
        );
        pad.push_event(gst::event::Caps::new(&output.caps));
        pad.push_event(self.segment_event());
        self.new_pads.push(pad.clone());
        let position = self.streams.iter().map(|s| s.position).max().unwrap_or(0);
        Stream {
            pad,
            track,
            output,
            position,
            last_abs: None,
            discont: true,
            pending: Vec::new(),
            lists: self.lists,
            refused: false,
        }
    }

    /// What the tag event of the fragment says: its values but the lag and
    /// token (the tags carry the previous fragment's), and the contact.
    fn tag_view(&self) -> (FragmentMeta, Option<String>) {
        let mut meta = self.fragment.meta.clone();
        meta.millis_behind_now = None;
        meta.continuation_token = None;
        (meta, self.contact.clone())
    }

    fn push_tags(&mut self, imp: &KvsAudioDemux) -> FlowResult {
        self.fragment.sent = Some(self.tag_view());
        let ctx = report::Context {
            prev_token: self.prev_token.as_deref(),
            prev_millis: self.prev_millis,
            contact: self.contact.as_deref(),
        };
        let mut result = Ok(gst::FlowSuccess::Ok);
        for s in &mut self.streams {
            let list = report::fragment_tags(&self.fragment.meta, &s.track.name, &ctx);
            result = result.and(s.send_event(imp, gst::event::Tag::new(list)));
        }
        result
    }

    fn on_block(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        block: Block,
        region: &gst::Buffer,
    ) -> FlowResult {
        let scale = self.fragment.timestamp_scale;
        let abs = (i128::from(block.cluster_timecode) + i128::from(block.relative))
            .saturating_mul(i128::from(scale));
        if !self.fragment.open {
            return self.hold(imp, settings, block, region, abs);
        }
        match self
            .fragment
            .blocks
            .iter_mut()
            .find(|(t, _)| *t == block.track)
        {
            Some((_, n)) => *n += 1,
            None => self.fragment.blocks.push((block.track, 1)),
        }
        let Some(idx) = self
            .streams
            .iter()
            .position(|s| s.track.number == block.track)
        else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let (anchor_abs, anchor_producer) = *self
            .fragment
            .anchor
            .get_or_insert((abs, self.fragment.meta.producer_timestamp));
        if self.fragment.replay && self.streams[idx].last_abs.is_some_and(|last| abs <= last) {
            gst::trace!(
                CAT,
                imp = imp,
                "Dropping replayed block of track {} at {abs} ns",
                block.track
            );
            return Ok(gst::FlowSuccess::Ok);
        }
        let out = self.place(imp, settings, idx, abs);
        self.fragment.first_out.get_or_insert(out);
        // Keep silent pads moving first, so that sinks preroll and mixers and
        // interleave never wait on them.
        for i in 0..self.streams.len() {
            if i != idx && self.streams[i].position + GAP_LAG < out {
                self.streams[i].fill(imp, out - GAP_LAG)?;
            }
        }
        let stream = &mut self.streams[idx];
        if out > stream.position + DISCONT_TOLERANCE {
            gst::debug!(CAT, obj = stream.pad, "Gap of {} ns", out - stream.position);
            stream.fill(imp, out)?;
            stream.discont = true;
        }
        stream.last_abs = Some(abs);
        let producer = anchor_producer.map_or(abs, |p| i128::from(p) + abs - anchor_abs);
        let producer = gst::ClockTime::from_nseconds(u64::try_from(producer).unwrap_or(0));
        stream.push_block(&block, region, out, scale, producer)
    }

    /// Keeps a block of a fragment that waits for its trailing tags, within
    /// bounds; past them the fragment is decided with what is known.
    fn hold(
        &mut self,
        imp: &KvsAudioDemux,
        settings: &Settings,
        block: Block,
        region: &gst::Buffer,
        abs: i128,
    ) -> FlowResult {
        let scale = i128::from(self.fragment.timestamp_scale);
        let first = self.fragment.held.first().map(|(b, _)| {
            (i128::from(b.cluster_timecode) + i128::from(b.relative)).saturating_mul(scale)
        });
        self.fragment.held_bytes += block.frames.iter().map(|f| f.len()).sum::<usize>();
        self.fragment.held.push((block, region.clone()));
        let span = first.map_or(0, |first| abs - first);
        if span > MAX_HOLD_SPAN || self.fragment.held_bytes > MAX_HOLD_BYTES {
            gst::debug!(
                CAT,
                imp = imp,
                "Held blocks reached {} ns, {} bytes",
                span,
                self.fragment.held_bytes
            );
            return self.open_output(imp, settings, true);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Output time of a block of stream `idx` at absolute time `abs`. Moves
    /// the timeline offset when time goes back, or jumps forward further
    /// than `max-gap` for every pad.
    fn place(&mut self, imp: &KvsAudioDemux, settings: &Settings, idx: usize, abs: i128) -> u64 {
        let offset = *self.offset.get_or_insert(-abs);
        let out = abs + offset;
        let position = i128::from(self.streams[idx].position);
        let newest = self
            .streams
            .iter()
            .map(|s| i128::from(s.position))
            .max()
            .unwrap_or(0);
        let max_gap = i128::from(settings.max_gap) * 1_000_000;
        let target = if out + i128::from(DISCONT_TOLERANCE) < position {
            gst::debug!(
                CAT,
                imp = imp,
                "Time went back by {} ns; continuing from {position}",
                position - out
            );
            position
        } else if out > newest + max_gap {
            gst::debug!(
                CAT,
                imp = imp,
                "Time jumped by {} ns; continuing from {newest}",
                out - newest
            );
            newest
        } else {
            return u64::try_from(out).unwrap_or(0);
        };
        self.offset = Some(offset + target - out);
        self.streams.iter_mut().for_each(|s| s.discont = true);
        target as u64
    }

    /// The fragment's last tags are in (or its chunk ended): held blocks go
    /// out, tags that came after its blocks are sent, and it is reported.
    fn complete_fragment(&mut self, imp: &KvsAudioDemux, settings: &Settings) -> FlowResult {
        self.open_output(imp, settings, true)?;
        if self.fragment.meta.mime_type.is_none() && self.mime == Mime::Unknown {
            self.mime = Mime::Absent;
        }
        let f = &self.fragment;
        if f.reported || f.damaged || !f.seen {
            return Ok(gst::FlowSuccess::Ok);
        }
        // Tags after the Cluster (real Connect: ContactId, MimeType...)
        // belong to this fragment: its pads get them now, after its audio.
        let stale = f.open && f.sent.as_ref() != Some(&self.tag_view());
        self.fragment.reported = true;
        let result = if stale {
            self.push_tags(imp)
        } else {
            Ok(gst::FlowSuccess::Ok)
        };
        let f = &self.fragment;
        self.fragments += 1;
        self.prev_token = f.meta.continuation_token.clone();
        self.prev_millis = f.meta.millis_behind_now;
        let s = report::fragment_message(
            self.fragments - 1,
            &f.meta,
            self.contact.as_deref(),
            &f.blocks,
        );
        gst::debug!(CAT, imp = imp, "Fragment complete: {s}");
        imp.obj()
            .post_message(gst::message::Element::builder(s).src(&*imp.obj()).build())
            .ok();
        result
    }

    /// Handles EOS: delivers what is complete, then EOS on every pad.
    pub fn finish(&mut self, imp: &KvsAudioDemux, settings: &Settings) {
        if self.stopped {
            return;
        }
        // What waited for bytes that will not come is decided now.
        self.parser.set_last();
        let _ = self.drain(imp, settings);
        let left = self.adapter.available();
        if (left > 0 || self.parser.is_skipping()) && self.fragment.seen {
            gst::element_imp_warning!(
                imp,
                gst::StreamError::Demux,
                ("The stream ended inside fragment {}", self.fragment_name()),
                [
                    "Dropped an incomplete element at byte {} ({left} bytes); every complete block was output",
                    self.parser.offset()
                ]
            );
            self.fragment.damaged = true;
        }
        self.adapter.clear();
        let mut events = Vec::new();
        self.parser.finish(&mut events);
        for event in events {
            let _ = self.handle(imp, settings, event, None);
        }
        let _ = self.open_output(imp, settings, true);
        if self.stopped {
            return;
        }
        if self.streams.is_empty() {
            gst::element_imp_error!(
                imp,
                gst::StreamError::Demux,
                ("No audio track in stream"),
                [
                    "Parsed {} complete fragments ({} bytes) and found no audio track to output",
                    self.fragments,
                    self.bytes
                ]
            );
            return;
        }
        let newest = self.streams.iter().map(|s| s.position).max().unwrap_or(0);
        for s in &mut self.streams {
            if s.position < newest && s.fill(imp, newest).is_err() {
                gst::debug!(CAT, obj = s.pad, "Could not fill up to {newest} before EOS");
            }
            let _ = s.send_event(imp, gst::event::Eos::new());
        }
    }

    /// Forgets parsing state after a flush and starts a new segment; pads stay.
    pub fn flush(&mut self) {
        self.adapter.clear();
        self.parser.reset();
        self.fragment = Fragment::default();
        self.offset = None;
        self.last_number = None;
        self.stopped = false;
        self.seqnum = None;
        let segment = self.segment_event();
        for s in &mut self.streams {
            s.position = 0;
            s.last_abs = None;
            s.discont = true;
            s.pending.clear();
            s.pad.push_event(segment.clone());
        }
    }
}
