// SPDX-License-Identifier: MPL-2.0
//! Matroska element IDs and decoders for the elements that KVS streams use.
//! Each decoder takes a complete element body.

use std::ops::Range;

use super::ebml::{self, Children};

pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const SEGMENT_UID: u32 = 0x73A4;
    pub const TITLE: u32 = 0x7BA9;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const NAME: u32 = 0x536E;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const BIT_DEPTH: u32 = 0x6264;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const DISPLAY_WIDTH: u32 = 0x54B0;
    pub const DISPLAY_HEIGHT: u32 = 0x54BA;
    pub const FLAG_INTERLACED: u32 = 0x9A;
    pub const TAGS: u32 = 0x1254_C367;
    pub const TAG: u32 = 0x7373;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const POSITION: u32 = 0xA7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const BLOCK_DURATION: u32 = 0x9B;
    pub const REFERENCE_BLOCK: u32 = 0xFB;
    pub const DISCARD_PADDING: u32 = 0x75A2;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;
}

/// Default TimestampScale: one tick is 1 ms.
pub const DEFAULT_TIMESTAMP_SCALE: u64 = 1_000_000;

/// Returns the DocType of an EBML header body if it is Matroska or WebM.
pub fn parse_ebml_header(body: &[u8]) -> Option<String> {
    let mut doc_type = String::from("matroska");
    let mut children = Children::new(body);
    for (id, value) in children.by_ref() {
        if id == id::DOC_TYPE {
            doc_type = ebml::string(value);
        }
    }
    let known = doc_type == "matroska" || doc_type == "webm";
    (known && !children.broken()).then_some(doc_type)
}

/// Reads TimestampScale from an Info body (default 1 ms; 0 is invalid).
pub fn parse_info(body: &[u8]) -> u64 {
    Children::new(body)
        .find(|(id, _)| *id == id::TIMESTAMP_SCALE)
        .and_then(|(_, v)| ebml::uint(v))
        .filter(|&scale| scale > 0)
        .unwrap_or(DEFAULT_TIMESTAMP_SCALE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
    Subtitle,
    Other(u64),
}

/// One TrackEntry.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub number: u64,
    pub kind: TrackKind,
    pub codec_id: String,
    pub codec_private: Vec<u8>,
    pub name: String,
    pub rate: Option<f64>,
    pub channels: Option<u64>,
    pub bit_depth: Option<u64>,
    /// Nanoseconds per frame, when given.
    pub default_duration: Option<u64>,
    /// CodecDelay: nanoseconds of decoder delay to drop at the start (Opus).
    pub codec_delay: Option<u64>,
    pub picture: Picture,
}

/// The Video element of a TrackEntry, in pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Picture {
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub display_width: Option<u64>,
    pub display_height: Option<u64>,
    /// FlagInterlaced: 1 interlaced, 2 progressive.
    pub interlaced: Option<u64>,
}

fn parse_track(body: &[u8]) -> Option<Track> {
    let mut track = Track {
        number: 0,
        kind: TrackKind::Other(0),
        codec_id: String::new(),
        codec_private: Vec::new(),
        name: String::new(),
        rate: None,
        channels: None,
        bit_depth: None,
        default_duration: None,
        codec_delay: None,
        picture: Picture::default(),
    };
    for (id, value) in Children::new(body) {
        match id {
            id::TRACK_NUMBER => track.number = ebml::uint(value)?,
            id::TRACK_TYPE => {
                track.kind = match ebml::uint(value)? {
                    1 => TrackKind::Video,
                    2 => TrackKind::Audio,
                    0x11 => TrackKind::Subtitle,
                    other => TrackKind::Other(other),
                }
            }
            id::CODEC_ID => track.codec_id = ebml::string(value),
            id::CODEC_PRIVATE => track.codec_private = value.to_vec(),
            id::NAME => track.name = ebml::string(value),
            id::DEFAULT_DURATION => track.default_duration = ebml::uint(value),
            id::CODEC_DELAY => track.codec_delay = ebml::uint(value).filter(|&d| d > 0),
            id::AUDIO => {
                for (id, value) in Children::new(value) {
                    match id {
                        id::SAMPLING_FREQUENCY => track.rate = ebml::float(value),
                        id::CHANNELS => track.channels = ebml::uint(value),
                        id::BIT_DEPTH => track.bit_depth = ebml::uint(value),
                        _ => {}
                    }
                }
            }
            id::VIDEO => {
                let p = &mut track.picture;
                for (id, value) in Children::new(value) {
                    let v = ebml::uint(value).filter(|&v| v > 0);
                    match id {
                        id::PIXEL_WIDTH => p.width = v,
                        id::PIXEL_HEIGHT => p.height = v,
                        id::DISPLAY_WIDTH => p.display_width = v,
                        id::DISPLAY_HEIGHT => p.display_height = v,
                        id::FLAG_INTERLACED => p.interlaced = v,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (track.number > 0).then_some(track)
}

/// Decodes a Tracks body, sorted by TrackNumber. Malformed entries are dropped.
pub fn parse_tracks(body: &[u8]) -> Vec<Track> {
    let mut tracks: Vec<Track> = Children::new(body)
        .filter(|(id, _)| *id == id::TRACK_ENTRY)
        .filter_map(|(_, v)| parse_track(v))
        .collect();
    tracks.sort_by_key(|t| t.number);
    tracks.dedup_by_key(|t| t.number);
    tracks
}

/// A SimpleTag's name and string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleTag {
    pub name: String,
    pub value: String,
}

impl SimpleTag {
    pub fn new(name: &str, value: &str) -> Self {
        SimpleTag {
            name: name.into(),
            value: value.into(),
        }
    }
}

fn collect_simple_tag(body: &[u8], out: &mut Vec<SimpleTag>, depth: u32) {
    let mut tag = SimpleTag {
        name: String::new(),
        value: String::new(),
    };
    for (id, value) in Children::new(body) {
        match id {
            id::TAG_NAME => tag.name = ebml::string(value),
            id::TAG_STRING => tag.value = ebml::string(value),
            id::SIMPLE_TAG if depth < 8 => collect_simple_tag(value, out, depth + 1),
            _ => {}
        }
    }
    if !tag.name.is_empty() {
        out.push(tag);
    }
}

/// Decodes a Tags body into its SimpleTags, in stream order (nested ones flattened).
pub fn parse_tags(body: &[u8]) -> Vec<SimpleTag> {
    let mut out = Vec::new();
    for (_, tag) in Children::new(body).filter(|(id, _)| *id == id::TAG) {
        for (_, simple) in Children::new(tag).filter(|(id, _)| *id == id::SIMPLE_TAG) {
            collect_simple_tag(simple, &mut out, 0);
        }
    }
    out
}

/// A SimpleBlock or a BlockGroup's Block. Frame ranges are offsets into the
/// buffer that was passed to the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub track: u64,
    /// Cluster Timecode, in TimestampScale ticks.
    pub cluster_timecode: u64,
    /// Block timecode relative to the cluster, in ticks.
    pub relative: i16,
    pub keyframe: bool,
    /// BlockDuration in ticks, when a BlockGroup gives one.
    pub duration: Option<u64>,
    /// DiscardPadding: nanoseconds to drop at the end of the block (Opus).
    pub discard_padding: Option<u64>,
    pub frames: Frames,
}

/// Frame ranges of a block. The first is stored inline, so an unlaced block
/// (nearly all of them) costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frames {
    first: Range<usize>,
    rest: Vec<Range<usize>>,
    count: usize,
}

impl Frames {
    pub fn push(&mut self, range: Range<usize>) {
        if self.count == 0 {
            self.first = range;
        } else {
            self.rest.push(range);
        }
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let first = (self.count > 0).then(|| self.first.clone());
        first.into_iter().chain(self.rest.iter().cloned())
    }

    pub fn to_vec(&self) -> Vec<Range<usize>> {
        self.iter().collect()
    }
}

/// Why a block could not be decoded.
pub type BlockError = &'static str;

/// Decodes a block body starting at `base` in the caller's buffer.
pub fn parse_block(body: &[u8], base: usize, cluster_timecode: u64) -> Result<Block, BlockError> {
    let (track, n) = ebml::read_vint(body).ok_or("broken track number in block")?;
    let head = body.get(n..n + 3).ok_or("block header is truncated")?;
    let relative = i16::from_be_bytes([head[0], head[1]]);
    let flags = head[2];
    let mut pos = n + 3;
    let mut frames = Frames::default();
    let lacing = (flags >> 1) & 3;
    if lacing == 0 {
        frames.push(base + pos..base + body.len());
    } else {
        let count = usize::from(*body.get(pos).ok_or("lace count is missing")?) + 1;
        pos += 1;
        let mut sizes = Vec::with_capacity(count);
        match lacing {
            1 => {
                for _ in 1..count {
                    let mut size = 0usize;
                    loop {
                        let b = *body.get(pos).ok_or("Xiph lace sizes are truncated")?;
                        pos += 1;
                        size += usize::from(b);
                        if b != 255 {
                            break;
                        }
                    }
                    sizes.push(size);
                }
            }
            3 => {
                let (first, len) = ebml::read_vint(&body[pos..]).ok_or("broken EBML lace size")?;
                pos += len;
                let mut size = i64::try_from(first).map_err(|_| "EBML lace size overflow")?;
                sizes.push(usize::try_from(size).map_err(|_| "bad EBML lace size")?);
                for _ in 2..count {
                    let (diff, len) =
                        ebml::read_signed_vint(&body[pos..]).ok_or("broken EBML lace size")?;
                    pos += len;
                    size = size.checked_add(diff).ok_or("EBML lace size overflow")?;
                    sizes.push(usize::try_from(size).map_err(|_| "negative EBML lace size")?);
                }
            }
            _ => {
                let total = body.len() - pos;
                if !total.is_multiple_of(count) {
                    return Err("fixed lace does not divide evenly");
                }
                sizes.resize(count - 1, total / count);
            }
        }
        for size in sizes {
            let end = pos.checked_add(size).filter(|&e| e <= body.len());
            let end = end.ok_or("laced frames overrun the block")?;
            frames.push(base + pos..base + end);
            pos = end;
        }
        frames.push(base + pos..base + body.len());
    }
    Ok(Block {
        track,
        cluster_timecode,
        relative,
        keyframe: flags & 0x80 != 0,
        duration: None,
        discard_padding: None,
        frames,
    })
}

/// Decodes a BlockGroup body: its Block, BlockDuration and ReferenceBlock.
pub fn parse_block_group(
    body: &[u8],
    base: usize,
    cluster_timecode: u64,
) -> Result<Block, BlockError> {
    let mut block = None;
    let mut duration = None;
    let mut discard_padding = None;
    let mut keyframe = true;
    for (id, value) in Children::new(body) {
        // `value` is a sub-slice of `body`; find where it starts.
        let start = value.as_ptr() as usize - body.as_ptr() as usize;
        match id {
            id::BLOCK => {
                block = Some(parse_block(value, base + start, cluster_timecode)?);
            }
            id::BLOCK_DURATION => duration = ebml::uint(value),
            id::REFERENCE_BLOCK => keyframe = false,
            // Negative padding has no meaning for audio: ignored.
            id::DISCARD_PADDING => {
                discard_padding = ebml::sint(value).and_then(|p| u64::try_from(p).ok())
            }
            _ => {}
        }
    }
    let mut block = block.ok_or("BlockGroup has no Block")?;
    block.duration = duration;
    block.discard_padding = discard_padding.filter(|&p| p > 0);
    block.keyframe = keyframe;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_body(flags: u8, extra: &[u8]) -> Vec<u8> {
        let mut v = vec![0x81, 0x00, 0x0A, flags];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn simple_block() {
        let body = block_body(0x80, &[1, 2, 3]);
        let b = parse_block(&body, 100, 5).unwrap();
        assert_eq!((b.track, b.relative, b.keyframe), (1, 10, true));
        assert_eq!(b.frames.to_vec(), vec![104..107]);
    }

    #[test]
    fn xiph_lacing() {
        // 3 frames: 300, 2, rest(1).
        let mut extra = vec![2, 255, 45, 2];
        extra.extend(std::iter::repeat_n(7u8, 303));
        let b = parse_block(&block_body(0x02, &extra), 0, 0).unwrap();
        assert_eq!(b.frames.to_vec(), vec![8..308, 308..310, 310..311]);
    }

    #[test]
    fn ebml_lacing() {
        // 3 frames: 10, 12 (diff +2), rest 5.
        let mut extra = vec![2, 0x8A, 0xC1];
        extra.extend(std::iter::repeat_n(1u8, 27));
        let b = parse_block(&block_body(0x06, &extra), 0, 0).unwrap();
        assert_eq!(b.frames.to_vec(), vec![7..17, 17..29, 29..34]);
    }

    #[test]
    fn fixed_lacing() {
        let mut extra = vec![1];
        extra.extend([0u8; 8]);
        let b = parse_block(&block_body(0x04, &extra), 0, 0).unwrap();
        assert_eq!(b.frames.to_vec(), vec![5..9, 9..13]);
        let mut extra = vec![1];
        extra.extend([0u8; 7]);
        assert!(parse_block(&block_body(0x04, &extra), 0, 0).is_err());
    }

    #[test]
    fn hostile_blocks() {
        assert!(parse_block(&[], 0, 0).is_err());
        assert!(parse_block(&[0x81, 0], 0, 0).is_err());
        // Xiph sizes larger than the block.
        assert!(parse_block(&block_body(0x02, &[1, 255, 255, 9]), 0, 0).is_err());
        // EBML size going negative.
        assert!(parse_block(&block_body(0x06, &[2, 0x81, 0x80, 0, 0]), 0, 0).is_err());
    }

    #[test]
    fn ebml_header_doc_types() {
        assert_eq!(
            parse_ebml_header(&[0x42, 0x82, 0x84, b'w', b'e', b'b', b'm']).as_deref(),
            Some("webm")
        );
        assert_eq!(parse_ebml_header(&[]).as_deref(), Some("matroska"));
        assert_eq!(
            parse_ebml_header(&[0x42, 0x82, 0x83, b'a', b'v', b'i']),
            None
        );
    }
}
