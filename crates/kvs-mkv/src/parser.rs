// SPDX-License-Identifier: MPL-2.0
//! Incremental parser for a stream of KVS chunks (EBML header + Segment).
//!
//! The caller keeps the bytes; [`Parser::parse`] reads as many whole elements
//! as the slice holds and reports how far it got. Only Segment and Cluster are
//! entered; every other element it cares about is decoded whole, so a caller
//! must be able to present [`Parser::need`] contiguous bytes.

use std::sync::LazyLock;

use memchr::memmem;

use super::ebml::{self, HeaderError, UNKNOWN_SIZE};
use super::elements::{self, Block, SimpleTag, Track, id};

/// Default limit for one element's size (16 MiB).
pub const DEFAULT_MAX_ELEMENT_SIZE: u64 = 16 << 20;

/// Largest EBML header body the resync scan accepts.
const MAX_EBML_HEADER: u64 = 256;

/// What the parser found. Block frame ranges index the slice given to `parse`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An EBML header at this stream offset: a new chunk (KVS fragment) starts.
    Header {
        offset: u64,
        doc_type: String,
    },
    Info {
        timestamp_scale: u64,
    },
    Tracks(Vec<Track>),
    Tags(Vec<SimpleTag>),
    ClusterStart,
    Block(Block),
    ClusterEnd,
    SegmentEnd,
    /// Damaged input at this stream offset. The parser now skips to the next
    /// valid EBML header.
    Corrupt {
        offset: u64,
        reason: String,
    },
}

pub struct Parser {
    pos: u64,
    need: usize,
    skip: u64,
    resyncing: bool,
    /// End offset of the open Segment and Cluster ([`UNKNOWN_SIZE`] if unknown).
    segment: Option<u64>,
    cluster: Option<u64>,
    cluster_timecode: u64,
    max_element_size: u64,
    /// Skip blocks instead of decoding them (for readers that only want tags).
    skip_blocks: bool,
    /// No more bytes will come (see [`Parser::set_last`]).
    last: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ELEMENT_SIZE)
    }
}

/// True for the IDs that may appear inside a Cluster.
fn is_cluster_level(id: u32) -> bool {
    !matches!(
        id,
        id::EBML
            | id::SEGMENT
            | id::CLUSTER
            | id::TAGS
            | id::INFO
            | id::TRACKS
            | id::CUES
            | id::SEEK_HEAD
            | id::CHAPTERS
            | id::ATTACHMENTS
    )
}

impl Parser {
    pub fn new(max_element_size: u64) -> Self {
        Parser {
            pos: 0,
            need: 1,
            skip: 0,
            resyncing: false,
            segment: None,
            cluster: None,
            cluster_timecode: 0,
            max_element_size,
            skip_blocks: false,
            last: false,
        }
    }

    /// A parser that reports everything but blocks, which it skips without
    /// needing them whole: cheap for a reader that only wants tags.
    pub fn metadata_only() -> Self {
        Parser {
            skip_blocks: true,
            ..Self::default()
        }
    }

    /// Stream offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Contiguous bytes the next `parse` call needs to make progress.
    pub fn need(&self) -> usize {
        self.need
    }

    /// Says that the bytes given so far are all there is: what could only
    /// be told from bytes to come is decided without them.
    pub fn set_last(&mut self) {
        self.last = true;
    }

    pub fn is_last(&self) -> bool {
        self.last
    }

    /// True while bytes of an element being skipped are still to come.
    pub fn is_skipping(&self) -> bool {
        self.skip > 0
    }

    /// Forgets all state, as after a flush.
    pub fn reset(&mut self) {
        *self = Parser {
            skip_blocks: self.skip_blocks,
            ..Self::new(self.max_element_size)
        };
    }

    /// Closes what is open at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if self.cluster.take().is_some() {
            out.push(Event::ClusterEnd);
        }
        if self.segment.take().is_some() {
            out.push(Event::SegmentEnd);
        }
    }

    /// Parses whole elements from `data`, which starts at [`Parser::offset`].
    /// Returns the number of bytes consumed; the rest must be presented again.
    pub fn parse(&mut self, data: &[u8], out: &mut Vec<Event>) -> usize {
        let mut p = 0;
        loop {
            self.need = 1;
            if self.skip > 0 {
                // A chunk that starts inside a skipped element cuts it short.
                let n = self.skip.min((data.len() - p) as u64) as usize;
                match chunk_start(&data[p..], n, self.last) {
                    ChunkStart::At(k) => {
                        self.advance(&mut p, k);
                        self.skip = 0;
                        self.cut("a skipped element", out);
                    }
                    ChunkStart::Maybe { at, need } => {
                        self.advance(&mut p, at);
                        self.skip -= at as u64;
                        self.need = need;
                        break;
                    }
                    ChunkStart::None => {
                        self.advance(&mut p, n);
                        self.skip -= n as u64;
                        if self.skip > 0 {
                            break;
                        }
                    }
                }
            }
            self.close_ended(out);
            if p == data.len() {
                break;
            }
            if self.resyncing {
                match self.find_header(&data[p..]) {
                    (n, None) => {
                        self.advance(&mut p, n);
                        self.resyncing = false;
                        continue;
                    }
                    (n, Some(need)) => {
                        self.advance(&mut p, n);
                        self.need = need;
                        break;
                    }
                }
            }
            match self.element(&data[p..], p, out) {
                Step::Consumed(n) => self.advance(&mut p, n),
                Step::Again => {}
                Step::Need(n) => {
                    self.need = n;
                    break;
                }
            }
        }
        p
    }

    fn advance(&mut self, p: &mut usize, n: usize) {
        *p += n;
        self.pos += n as u64;
    }

    fn close_ended(&mut self, out: &mut Vec<Event>) {
        if self
            .cluster
            .is_some_and(|end| end != UNKNOWN_SIZE && self.pos >= end)
        {
            self.cluster = None;
            out.push(Event::ClusterEnd);
        }
        if self
            .segment
            .is_some_and(|end| end != UNKNOWN_SIZE && self.pos >= end)
        {
            self.segment = None;
            out.push(Event::SegmentEnd);
        }
    }

    fn corrupt(&mut self, reason: String, out: &mut Vec<Event>) -> Step {
        out.push(Event::Corrupt {
            offset: self.pos,
            reason,
        });
        self.resyncing = true;
        self.segment = None;
        self.cluster = None;
        Step::Again
    }

    /// A new chunk starts here, inside `what`: the fragment before it was
    /// cut short (a saved response that broke off, then the next one).
    fn cut(&mut self, what: &str, out: &mut Vec<Event>) {
        out.push(Event::Corrupt {
            offset: self.pos,
            reason: format!("a new chunk starts inside {what}: the fragment was cut short"),
        });
        self.resyncing = false;
        self.segment = None;
        self.cluster = None;
    }

    /// Reads one element at the start of `rest` (which is at `base` in the
    /// caller's slice).
    fn element(&mut self, rest: &[u8], base: usize, out: &mut Vec<Event>) -> Step {
        let h = match ebml::read_header(rest) {
            Ok(h) => h,
            Err(HeaderError::Short(n)) => return Step::Need(n),
            Err(HeaderError::Invalid) => {
                return self.corrupt("invalid element ID or size (broken vint)".into(), out);
            }
        };
        // A chunk that starts inside this header (a cut size field) cuts
        // the element short.
        match chunk_start(&rest[1..], h.len - 1, self.last) {
            ChunkStart::At(k) => {
                self.cut(&format!("the header of element {:#x}", h.id), out);
                return Step::Consumed(1 + k);
            }
            ChunkStart::Maybe { at, need } => return Step::Need(1 + at + need),
            ChunkStart::None => {}
        }
        // Unknown-size parents end where an element of their level or above starts.
        if self.cluster == Some(UNKNOWN_SIZE) && !is_cluster_level(h.id) {
            self.cluster = None;
            out.push(Event::ClusterEnd);
            return Step::Again;
        }
        if self.cluster.is_none()
            && self.segment == Some(UNKNOWN_SIZE)
            && matches!(h.id, id::EBML | id::SEGMENT)
        {
            self.segment = None;
            out.push(Event::SegmentEnd);
            return Step::Again;
        }
        // An EBML header inside a known-size parent: that parent was cut.
        if h.id == id::EBML && self.segment.is_some() {
            match chunk_start(rest, 1, self.last) {
                ChunkStart::At(_) => {
                    self.cut("a Segment or Cluster of known size", out);
                    return Step::Again;
                }
                ChunkStart::Maybe { need, .. } => return Step::Need(need),
                ChunkStart::None => {}
            }
        }
        let parent_end = self.cluster.or(self.segment).unwrap_or(UNKNOWN_SIZE);
        let end = (h.size != UNKNOWN_SIZE).then(|| self.pos + h.len as u64 + h.size);
        if end.is_some_and(|end| parent_end != UNKNOWN_SIZE && end > parent_end) {
            let msg = format!(
                "element {:#x} of {} bytes overruns its parent",
                h.id, h.size
            );
            return self.corrupt(msg, out);
        }
        let enter = matches!(
            (self.segment, self.cluster, h.id),
            (None, _, id::SEGMENT) | (Some(_), None, id::CLUSTER)
        );
        if enter {
            let end = end.unwrap_or(UNKNOWN_SIZE);
            if self.segment.is_none() {
                self.segment = Some(end);
            } else {
                self.cluster = Some(end);
                self.cluster_timecode = 0;
                out.push(Event::ClusterStart);
            }
            return Step::Consumed(h.len);
        }
        if h.size == UNKNOWN_SIZE {
            return self.corrupt(format!("element {:#x} has an unknown size", h.id), out);
        }
        if h.size > self.max_element_size {
            let msg = format!(
                "element {:#x} of {} bytes is over the {} byte limit",
                h.id, h.size, self.max_element_size
            );
            return self.corrupt(msg, out);
        }
        let total = h.len + h.size as usize;
        let whole = match (self.segment.is_some(), self.cluster.is_some(), h.id) {
            (false, _, id::EBML) => true,
            (false, _, id::VOID | id::CRC32) => false,
            (false, _, _) => {
                return self.corrupt(
                    format!("unexpected element {:#x} outside a Segment", h.id),
                    out,
                );
            }
            (true, false, id::INFO | id::TRACKS | id::TAGS) => true,
            (true, true, id::TIMECODE) => true,
            (true, true, id::SIMPLE_BLOCK | id::BLOCK_GROUP) => !self.skip_blocks,
            _ => false,
        };
        if !whole {
            self.skip = total as u64;
            return Step::Again;
        }
        if rest.len() < total {
            return Step::Need(total);
        }
        // A chunk that starts inside the element cuts it short: the element
        // is dropped, the chunk is read.
        match chunk_start(&rest[h.len..], h.size as usize, self.last) {
            ChunkStart::At(k) => {
                self.cut(&format!("element {:#x} of {} bytes", h.id, h.size), out);
                return Step::Consumed(h.len + k);
            }
            ChunkStart::Maybe { at, need } => return Step::Need(h.len + at + need),
            ChunkStart::None => {}
        }
        let body = &rest[h.len..total];
        let body_base = base + h.len;
        match h.id {
            id::EBML => match elements::parse_ebml_header(body) {
                Some(doc_type) => out.push(Event::Header {
                    offset: self.pos,
                    doc_type,
                }),
                None => return self.corrupt("EBML header is not Matroska or WebM".into(), out),
            },
            id::INFO => out.push(Event::Info {
                timestamp_scale: elements::parse_info(body),
            }),
            id::TRACKS => out.push(Event::Tracks(elements::parse_tracks(body))),
            id::TAGS => out.push(Event::Tags(elements::parse_tags(body))),
            id::TIMECODE => self.cluster_timecode = ebml::uint(body).unwrap_or(0),
            _ => {
                let block = if h.id == id::SIMPLE_BLOCK {
                    elements::parse_block(body, body_base, self.cluster_timecode)
                } else {
                    elements::parse_block_group(body, body_base, self.cluster_timecode)
                };
                match block {
                    Ok(block) => out.push(Event::Block(block)),
                    Err(reason) => return self.corrupt(reason.into(), out),
                }
            }
        }
        Step::Consumed(total)
    }

    /// Looks for a chunk start in `data`. Returns how many bytes to drop,
    /// and `Some(need)` if more bytes are needed to decide.
    fn find_header(&self, data: &[u8]) -> (usize, Option<usize>) {
        match chunk_start(data, data.len(), self.last) {
            ChunkStart::At(at) => (at, None),
            ChunkStart::Maybe { at, need } => (at, Some(need)),
            ChunkStart::None => (data.len(), Some(1)),
        }
    }
}

/// Where a KVS chunk starts: an EBML header of a Matroska or WebM document,
/// then a Segment. Four magic bytes alone are not enough: PCM holds them.
enum ChunkStart {
    /// At this offset.
    At(usize),
    /// Perhaps at `at`: `need` bytes from there tell.
    Maybe {
        at: usize,
        need: usize,
    },
    None,
}

const MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
const SEGMENT_ID: [u8; 4] = [0x18, 0x53, 0x80, 0x67];

/// Looks for a chunk start at offsets below `limit` in `data`; the bytes
/// after `limit` may be read to tell. With `last`, no more bytes will come:
/// a candidate they would have to tell about is none.
fn chunk_start(data: &[u8], limit: usize, last: bool) -> ChunkStart {
    // Whole magics that start below `limit`.
    let hay = &data[..(limit + 3).min(data.len())];
    static FINDER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(&MAGIC));
    for at in FINDER.find_iter(hay) {
        let rest = &data[at..];
        match ebml::read_header(rest) {
            Err(HeaderError::Short(need)) if !last => return ChunkStart::Maybe { at, need },
            Ok(h) if h.size <= MAX_EBML_HEADER => {
                let total = h.len + h.size as usize;
                if rest.len() < total + 4 {
                    if last {
                        continue;
                    }
                    return ChunkStart::Maybe {
                        at,
                        need: total + 4,
                    };
                }
                let header = elements::parse_ebml_header(&rest[h.len..total]);
                if header.is_some() && rest[total..total + 4] == SEGMENT_ID {
                    return ChunkStart::At(at);
                }
            }
            _ => {}
        }
    }
    // A magic that the end of the data cuts.
    if !last {
        let tail = data.len().saturating_sub(3)..limit.min(data.len());
        if let Some(at) = tail.into_iter().find(|&at| MAGIC.starts_with(&data[at..])) {
            return ChunkStart::Maybe { at, need: 4 };
        }
    }
    ChunkStart::None
}

enum Step {
    Consumed(usize),
    /// State changed without consuming; look again.
    Again,
    Need(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{BlockSpec, Chunk, Lacing, TrackSpec};

    use crate::feed::{Owned, feed};

    fn run(data: &[u8], next_size: impl FnMut() -> usize) -> Vec<Owned> {
        feed(&mut Parser::new(1 << 20), data, next_size)
    }

    fn whole(data: &[u8]) -> Vec<Owned> {
        run(data, || usize::MAX)
    }

    fn fragment(n: u64) -> Chunk {
        Chunk {
            timestamp_scale: Some(1_000_000),
            tracks: vec![
                TrackSpec::connect(1, "AUDIO_FROM_CUSTOMER"),
                TrackSpec::connect(2, "AUDIO_TO_CUSTOMER"),
            ],
            tags_before: vec![vec![(
                "AWS_KINESISVIDEO_FRAGMENT_NUMBER".into(),
                n.to_string(),
            )]],
            cluster_timecode: 1000 * n,
            blocks: (0..4)
                .map(|i| BlockSpec::simple(1 + i % 2, (i / 2 * 64) as i16, vec![i as u8; 300]))
                .collect(),
            tags_after: vec![vec![(
                "AWS_KINESISVIDEO_CONTINUATION_TOKEN".into(),
                n.to_string(),
            )]],
            ..Default::default()
        }
    }

    fn stream(n: u64) -> Vec<u8> {
        (0..n).flat_map(|i| fragment(i).to_bytes()).collect()
    }

    #[test]
    fn chunk_starts_are_told_from_magic_in_payload() {
        let mut data = vec![7u8; 10];
        data.extend(fragment(0).to_bytes());
        assert!(matches!(
            chunk_start(&data, data.len(), false),
            ChunkStart::At(10)
        ));
        // Only offsets below the limit count.
        assert!(matches!(chunk_start(&data, 10, true), ChunkStart::None));
        // Four magic bytes without a valid EBML header and Segment are data.
        let fake = [0, 0x1A, 0x45, 0xDF, 0xA3, 0x4C, 0x4D, 1, 2, 3];
        assert!(matches!(
            chunk_start(&fake, fake.len(), false),
            ChunkStart::None
        ));
        // A magic that the end cuts may be a chunk, unless nothing more comes.
        let cut = [0, 0, 0x1A, 0x45];
        assert!(matches!(
            chunk_start(&cut, cut.len(), false),
            ChunkStart::Maybe { at: 2, need: 4 }
        ));
        assert!(matches!(
            chunk_start(&cut, cut.len(), true),
            ChunkStart::None
        ));
    }

    fn blocks(events: &[Owned]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Owned::Block(..)))
            .count()
    }

    #[test]
    fn event_order() {
        let ev = whole(&fragment(7).to_bytes());
        let kinds: Vec<String> = ev
            .iter()
            .map(|e| match e {
                Owned::Block(t, c, r, _) => format!("Block {t} {c} {r}"),
                Owned::Event(Event::Header { .. }) => "Header".into(),
                Owned::Event(Event::Info { .. }) => "Info".into(),
                Owned::Event(Event::Tracks(t)) => format!("Tracks {}", t.len()),
                Owned::Event(Event::Tags(t)) => format!("Tags {}", t[0].value),
                Owned::Event(e) => format!("{e:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Header",
                "Info",
                "Tracks 2",
                "Tags 7",
                "ClusterStart",
                "Block 1 7000 0",
                "Block 2 7000 0",
                "Block 1 7000 64",
                "Block 2 7000 64",
                "ClusterEnd",
                "Tags 7",
                "SegmentEnd"
            ]
        );
    }

    #[test]
    fn split_invariant() {
        let data = stream(5);
        let reference = whole(&data);
        assert_eq!(blocks(&reference), 20);
        for size in [1, 2, 3, 7, 13, 100, 1000] {
            assert_eq!(run(&data, || size), reference, "chunk size {size}");
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20 {
            let got = run(&data, || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 600) as usize + 1
            });
            assert_eq!(got, reference);
        }
    }

    #[test]
    fn lacing_and_groups() {
        let mut f = fragment(1);
        f.known_size_cluster = true;
        f.blocks = vec![
            BlockSpec {
                track: 1,
                relative: -5,
                frames: vec![vec![1; 10], vec![2; 300], vec![3; 4]],
                lacing: Lacing::Xiph,
                group: None,
                delta: false,
            },
            BlockSpec {
                track: 2,
                relative: 0,
                frames: vec![vec![4; 10], vec![5; 12], vec![6; 1]],
                lacing: Lacing::Ebml,
                group: Some(Some(30)),
                delta: false,
            },
            BlockSpec {
                track: 1,
                relative: 9,
                frames: vec![vec![7; 6], vec![8; 6]],
                lacing: Lacing::Fixed,
                group: None,
                delta: false,
            },
        ];
        let ev = whole(&f.to_bytes());
        let got: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, Owned::Block(..)))
            .cloned()
            .collect();
        assert_eq!(
            got,
            [
                Owned::Block(1, 1000, -5, vec![vec![1; 10], vec![2; 300], vec![3; 4]]),
                Owned::Block(2, 1000, 0, vec![vec![4; 10], vec![5; 12], vec![6; 1]]),
                Owned::Block(1, 1000, 9, vec![vec![7; 6], vec![8; 6]]),
            ]
        );
        assert_eq!(run(&f.to_bytes(), || 3), ev);
    }

    #[test]
    fn resync_after_garbage() {
        let mut data = fragment(0).to_bytes();
        // Cut after the last block, where the trailing Tags start.
        let cut = data
            .windows(4)
            .rposition(|w| w == [0x12, 0x54, 0xC3, 0x67])
            .unwrap();
        data.truncate(cut);
        // A broken vint, then fake magic inside junk, then a good fragment.
        data.extend_from_slice(&[
            0x00, 0x00, 0x1A, 0x45, 0xDF, 0xA3, 0x84, 0x42, 0x82, 0x81, b'x', 0x55,
        ]);
        data.extend(fragment(1).to_bytes());
        let ev = whole(&data);
        let corrupt: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Owned::Event(Event::Corrupt { offset, .. }) => Some(*offset),
                _ => None,
            })
            .collect();
        assert_eq!(corrupt, [cut as u64]);
        let headers = ev
            .iter()
            .filter(|e| matches!(e, Owned::Event(Event::Header { .. })))
            .count();
        assert_eq!(headers, 2);
        assert_eq!(run(&data, || 5), ev);
    }

    #[test]
    fn oversized_element() {
        let mut data = fragment(0).to_bytes();
        // A SimpleBlock claiming 32 MiB inside the Cluster.
        let mut bad = Vec::new();
        crate::writer::element(&mut bad, id::VOID, &[]);
        bad.extend_from_slice(&[0xA3, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00]);
        let at = data.len();
        data.extend_from_slice(&bad);
        data.extend(fragment(1).to_bytes());
        let ev = whole(&data);
        assert!(ev.contains(&Owned::Event(Event::Corrupt {
            offset: at as u64 + 2,
            reason: "element 0xa3 of 33554432 bytes is over the 1048576 byte limit".into()
        })));
        assert_eq!(blocks(&ev), 8);
    }

    #[test]
    fn magic_inside_payload_is_data() {
        let mut f = fragment(0);
        let mut payload = vec![0x1A, 0x45, 0xDF, 0xA3, 0x84, 0x42, 0x82, 0x84];
        payload.extend_from_slice(b"webm");
        f.blocks[0].frames[0] = payload.clone();
        let ev = whole(&f.to_bytes());
        assert_eq!(blocks(&ev), 4);
        assert!(ev.contains(&Owned::Block(1, 0, 0, vec![payload])));
    }

    #[test]
    fn unknown_and_void_elements_are_skipped() {
        let mut data = Vec::new();
        let f = fragment(3);
        let bytes = f.to_bytes();
        // Insert an unknown master-like element and a Void right after the Segment header.
        let seg = bytes
            .windows(4)
            .position(|w| w == [0x18, 0x53, 0x80, 0x67])
            .unwrap()
            + 12;
        data.extend_from_slice(&bytes[..seg]);
        crate::writer::element(&mut data, 0x4FFF, &[0xD7, 0x81, 0x01, 0xAA, 0x80]);
        crate::writer::element(&mut data, id::VOID, &[0; 40]);
        data.extend_from_slice(&bytes[seg..]);
        assert_eq!(whole(&data), whole(&bytes));
    }

    #[test]
    fn truncated_stream_keeps_complete_blocks() {
        let data = stream(2);
        let ev = whole(&data[..data.len() - 250]);
        assert_eq!(blocks(&ev), 7);
        assert_eq!(ev.last(), Some(&Owned::Event(Event::SegmentEnd)));
    }
}
