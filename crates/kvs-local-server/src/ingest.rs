// SPDX-License-Identifier: MPL-2.0
//! Reads a PutMedia body as it arrives: one Matroska segment whose headers
//! (EBML, Info, Tracks) come first, then Clusters, each a fragment, with
//! Tags anywhere between them. It hands on whole elements only and holds at
//! most one element's bytes. Errors carry the PutMedia ACK ErrorId.

use kvs_mkv::ebml::{HeaderError, UNKNOWN_SIZE, read_header};
use kvs_mkv::elements::{self, Track, id};
use kvs_mkv::writer::{element, unknown_size_header};

/// KVS refuses fragments (and so elements) larger than this.
pub const MAX_FRAGMENT_BYTES: u64 = 50 * 1024 * 1024;

/// A PutMedia error: its ACK ErrorId and ErrorCode, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: u32,
    pub code: &'static str,
    pub message: String,
}

pub fn refusal(id: u32, message: impl Into<String>) -> Refusal {
    let code = kvs_mkv::ack::code(id);
    Refusal {
        id,
        code,
        message: message.into(),
    }
}

/// What the body holds, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A Cluster starts: its timecode (in TimestampScale ticks) and its
    /// head as a GetMedia chunk carries it (unknown size, then Timecode).
    Cluster { timecode: u64, head: Vec<u8> },
    /// A SimpleBlock or BlockGroup, whole.
    Block {
        track: u64,
        /// Cluster timecode plus the block's relative timecode, in ticks.
        timecode: i64,
        bytes: Vec<u8>,
    },
    /// A Tags element, whole.
    Tags(Vec<u8>),
    /// The open Cluster ended.
    ClusterEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Before the EBML header.
    Start,
    /// After it, before the Segment.
    Header,
    Segment,
    /// In a Cluster: where it ends (bytes into the body) if its size is known.
    Cluster(Option<u64>),
}

pub struct Ingest {
    buf: Vec<u8>,
    /// Bytes of the body before `buf`.
    offset: u64,
    level: Level,
    /// EBML header, Segment header, Info and Tracks, as a chunk starts.
    header: Vec<u8>,
    pub tracks: Vec<Track>,
    /// Nanoseconds per tick.
    pub timestamp_scale: u64,
    cluster_timecode: Option<u64>,
    clusters: u64,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            buf: Vec::new(),
            offset: 0,
            level: Level::Start,
            header: Vec::new(),
            tracks: Vec::new(),
            timestamp_scale: 1_000_000,
            cluster_timecode: None,
            clusters: 0,
        }
    }
}

fn is_level1(id: u32) -> bool {
    matches!(
        id,
        id::CLUSTER
            | id::TAGS
            | id::INFO
            | id::TRACKS
            | id::SEEK_HEAD
            | id::EBML
            | id::SEGMENT
            | 0x1C53_BB6B
    ) || id == 0x1043_A770
        || id == 0x1941_A469
}

impl Ingest {
    /// The headers every chunk of this body starts with.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Takes the next bytes of the body and appends what they complete.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Piece>) -> Result<(), Refusal> {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let result = loop {
            match self.step(pos, out) {
                Ok(Some(used)) => pos += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..pos);
        self.offset += pos as u64;
        result
    }

    /// The body ended: the open Cluster ends too.
    pub fn finish(&mut self, out: &mut Vec<Piece>) -> Result<(), Refusal> {
        if matches!(self.level, Level::Cluster(_)) {
            out.push(Piece::ClusterEnd);
            self.level = Level::Segment;
        }
        if !self.buf.is_empty() {
            return Err(refusal(4006, "The body ends inside an element"));
        }
        Ok(())
    }

    /// Reads one element header (and body, when needed) at `pos`; the bytes
    /// used, or `None` until more arrive.
    fn step(&mut self, pos: usize, out: &mut Vec<Piece>) -> Result<Option<usize>, Refusal> {
        if let Level::Cluster(Some(end)) = self.level
            && self.offset + pos as u64 >= end
        {
            self.level = Level::Segment;
            out.push(Piece::ClusterEnd);
        }
        let data = &self.buf[pos..];
        let h = match read_header(data) {
            Ok(h) => h,
            Err(HeaderError::Short(_)) => return Ok(None),
            Err(HeaderError::Invalid) => {
                let at = self.offset + pos as u64;
                return Err(refusal(4006, format!("No valid element at byte {at}")));
            }
        };
        if h.size != UNKNOWN_SIZE && h.size > MAX_FRAGMENT_BYTES {
            return Err(refusal(
                4001,
                format!("An element of {} bytes is larger than 50 MB", h.size),
            ));
        }
        let unknown = h.size == UNKNOWN_SIZE;
        // Only the Segment and a Cluster may have an unknown size.
        if unknown && h.id != id::SEGMENT && h.id != id::CLUSTER {
            return Err(refusal(
                4006,
                format!("Element {:#x} has an unknown size", h.id),
            ));
        }
        if let Level::Cluster(end) = self.level
            && is_level1(h.id)
        {
            // It ends a Cluster of unknown size; a known size was a lie.
            if end.is_some() {
                return Err(refusal(
                    4006,
                    format!("Element {:#x} inside a Cluster", h.id),
                ));
            }
            self.level = Level::Segment;
            out.push(Piece::ClusterEnd);
            return Ok(Some(0));
        }
        let whole = h.len.saturating_add(h.size as usize);
        let complete = !unknown && data.len() >= whole;
        match (self.level, h.id) {
            (Level::Start, id::EBML) => {
                if !complete {
                    return Ok(None);
                }
                self.header.extend_from_slice(&data[..whole]);
                self.level = Level::Header;
                Ok(Some(whole))
            }
            (Level::Start, other) => Err(refusal(
                4006,
                format!("The body starts with element {other:#x}, not an EBML header"),
            )),
            (Level::Header, id::SEGMENT) => {
                unknown_size_header(&mut self.header, id::SEGMENT);
                self.level = Level::Segment;
                Ok(Some(h.len))
            }
            (Level::Header, other) => Err(refusal(
                4006,
                format!("Element {other:#x} where the Segment should start"),
            )),
            (Level::Segment, id::CLUSTER) => {
                if self.tracks.is_empty() {
                    return Err(refusal(4006, "A Cluster comes before any Tracks"));
                }
                let end = (!unknown).then(|| self.offset + (pos + whole) as u64);
                self.level = Level::Cluster(end);
                self.cluster_timecode = None;
                self.clusters += 1;
                Ok(Some(h.len))
            }
            (Level::Segment, id::EBML | id::SEGMENT) => Err(refusal(
                4006,
                "A second EBML header or Segment: PutMedia takes one segment per connection",
            )),
            (Level::Segment, id::INFO | id::TRACKS) if self.clusters > 0 => Err(refusal(
                4006,
                "Info or Tracks after the first Cluster: start a new PutMedia connection to change tracks",
            )),
            (_, _) if !complete => Ok(None),
            (Level::Segment, id::INFO) => {
                self.timestamp_scale = elements::parse_info(&data[h.len..whole]);
                self.header.extend_from_slice(&data[..whole]);
                Ok(Some(whole))
            }
            (Level::Segment, id::TRACKS) => {
                self.tracks = elements::parse_tracks(&data[h.len..whole]);
                if self.tracks.len() > 3 {
                    return Err(refusal(
                        4012,
                        format!("{} tracks: KVS takes at most 3", self.tracks.len()),
                    ));
                }
                self.header.extend_from_slice(&data[..whole]);
                Ok(Some(whole))
            }
            (Level::Segment, id::TAGS) => {
                out.push(Piece::Tags(data[..whole].to_vec()));
                Ok(Some(whole))
            }
            (Level::Segment, _) => Ok(Some(whole)),
            (Level::Cluster(_), id::TIMECODE) => {
                let timecode = kvs_mkv::ebml::uint(&data[h.len..whole])
                    .filter(|&t| t < 1 << 62)
                    .ok_or_else(|| refusal(4006, "A Cluster Timecode is not a number"))?;
                self.cluster_timecode = Some(timecode);
                let mut head = Vec::new();
                unknown_size_header(&mut head, id::CLUSTER);
                element(&mut head, id::TIMECODE, &data[h.len..whole]);
                out.push(Piece::Cluster { timecode, head });
                Ok(Some(whole))
            }
            (Level::Cluster(_), id::SIMPLE_BLOCK | id::BLOCK_GROUP) => {
                let cluster = self
                    .cluster_timecode
                    .ok_or_else(|| refusal(4006, "A block comes before its Cluster's Timecode"))?;
                let body = &data[h.len..whole];
                let block = if h.id == id::SIMPLE_BLOCK {
                    elements::parse_block(body, 0, cluster)
                } else {
                    elements::parse_block_group(body, 0, cluster)
                }
                .map_err(|e| refusal(4006, format!("A broken block: {e}")))?;
                out.push(Piece::Block {
                    track: block.track,
                    timecode: cluster as i64 + i64::from(block.relative),
                    bytes: data[..whole].to_vec(),
                });
                Ok(Some(whole))
            }
            (Level::Cluster(_), _) => Ok(Some(whole)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_mkv::writer::{BlockSpec, Chunk, TrackSpec};

    fn body() -> (Vec<u8>, usize) {
        let f = |tc: u64, known: bool| Chunk {
            timestamp_scale: Some(1_000_000),
            tracks: vec![TrackSpec::audio(1, "a", "A_PCM/INT/LIT", 8000.0, 1, 16)],
            cluster_timecode: tc,
            known_size_cluster: known,
            blocks: vec![
                BlockSpec::simple(1, 0, vec![1; 320]),
                BlockSpec::simple(1, 20, vec![2; 320]),
            ],
            tags_after: vec![vec![("ContactId".into(), "c1".into())]],
            ..Chunk::default()
        };
        let mut out = f(1000, false).to_bytes();
        let first = out.len();
        // The second fragment: only its Cluster and Tags (no new headers).
        let second = f(2000, true).to_bytes();
        let cluster = second
            .windows(4)
            .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
            .unwrap();
        out.extend_from_slice(&second[cluster..]);
        (out, first)
    }

    fn pieces(data: &[u8], step: usize) -> Result<Vec<Piece>, Refusal> {
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        for part in data.chunks(step) {
            ingest.push(part, &mut out)?;
        }
        ingest.finish(&mut out)?;
        assert_eq!(ingest.tracks.len(), 1);
        assert!(ingest.header().starts_with(&[0x1A, 0x45, 0xDF, 0xA3]));
        Ok(out)
    }

    #[test]
    fn splits_a_body_in_any_pieces() {
        let (data, _) = body();
        let whole = pieces(&data, data.len()).unwrap();
        let kinds: Vec<&str> = whole
            .iter()
            .map(|p| match p {
                Piece::Cluster { .. } => "cluster",
                Piece::Block { .. } => "block",
                Piece::Tags(_) => "tags",
                Piece::ClusterEnd => "end",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "cluster", "block", "block", "end", "tags", "cluster", "block", "block", "end",
                "tags"
            ]
        );
        assert!(matches!(whole[2], Piece::Block { timecode: 1020, .. }));
        assert!(matches!(whole[5], Piece::Cluster { timecode: 2000, .. }));
        for step in [1, 7, 100] {
            assert_eq!(pieces(&data, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn damaged_bodies_are_refused_or_read_never_a_panic() {
        let (data, _) = body();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..500 {
            let mut bad = data.clone();
            for _ in 0..1 + next(4) {
                let at = next(bad.len());
                match next(3) {
                    0 => bad[at] ^= 1 << next(8),
                    1 => {
                        let end = (at + next(40)).min(bad.len());
                        bad.drain(at..end);
                    }
                    _ => bad.insert(at, next(256) as u8),
                }
            }
            let step = 1 + next(300);
            let mut ingest = Ingest::default();
            let mut out = Vec::new();
            let result = bad
                .chunks(step)
                .try_for_each(|c| ingest.push(c, &mut out))
                .and_then(|()| ingest.finish(&mut out));
            if let Err(e) = result {
                assert!([4001, 4006, 4012].contains(&e.id), "{e:?}");
            }
        }
    }

    #[test]
    fn refuses_what_kvs_refuses() {
        let (data, first) = body();
        let err = pieces(&data[20..], 64).unwrap_err();
        assert_eq!(err.id, 4006);
        // A second segment.
        let mut two = data[..first].to_vec();
        two.extend_from_slice(&data[..first]);
        assert_eq!(pieces(&two, 64).unwrap_err().id, 4006);
        // A body cut inside an element.
        assert_eq!(pieces(&data[..first - 3], 64).unwrap_err().id, 4006);
        // Four tracks.
        let four = Chunk {
            tracks: (1..=4)
                .map(|n| TrackSpec::audio(n, "a", "A_OPUS", 48000.0, 1, 16))
                .collect(),
            ..Chunk::default()
        };
        assert_eq!(pieces(&four.to_bytes(), 64).unwrap_err().id, 4012);
        assert_eq!(
            refusal(4004, "x").code,
            "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS"
        );
        // A Cluster of unknown size inside one of known size.
        let mut nested = data[..first].to_vec();
        let at = nested
            .windows(4)
            .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
            .unwrap();
        nested.truncate(at);
        let mut inner = Vec::new();
        unknown_size_header(&mut inner, id::CLUSTER);
        element(&mut nested, id::CLUSTER, &inner);
        assert_eq!(pieces(&nested, 64).unwrap_err().id, 4006);
    }
}
