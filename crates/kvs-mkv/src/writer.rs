// SPDX-License-Identifier: MPL-2.0
//! Writes KVS-shaped Matroska: the project's fixture generator (tests,
//! benchmarks and the local server build their streams with it), and the
//! elements `kvsputmediasink` writes.

use super::elements::id;

/// Appends an element ID.
pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends an element size as the shortest vint.
pub fn put_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8).find(|&l| size < (1u64 << (7 * l)) - 1).unwrap_or(8);
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Appends an element with a known size.
pub fn element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends the header of an element of unknown size.
pub fn unknown_size_header(out: &mut Vec<u8>, id: u32) {
    put_id(out, id);
    out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
}

pub fn uint_element(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    element(out, id, &bytes[skip..]);
}

/// Appends a master element whose body `fill` writes.
pub fn master(out: &mut Vec<u8>, id: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    fill(&mut body);
    element(out, id, &body);
}

/// Audio parameters of a track entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSpec {
    pub rate: f64,
    pub channels: u64,
    pub bit_depth: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrackSpec {
    pub number: u64,
    /// TrackUID, written when set (the KVS SDK writes it).
    pub uid: Option<u64>,
    /// Matroska TrackType: 1 video, 2 audio.
    pub track_type: u64,
    pub name: String,
    pub codec_id: String,
    pub codec_private: Vec<u8>,
    pub audio: Option<AudioSpec>,
    /// PixelWidth and PixelHeight of a video track.
    pub video: Option<(u64, u64)>,
    /// DefaultDuration, in ns.
    pub default_duration: Option<u64>,
}

impl TrackSpec {
    /// An Amazon Connect track: A_AAC label, no Audio element, L16 payload.
    pub fn connect(number: u64, name: &str) -> Self {
        TrackSpec {
            number,
            uid: Some(number),
            track_type: 2,
            name: name.into(),
            codec_id: "A_AAC".into(),
            codec_private: vec![0x11, 0x90],
            audio: None,
            video: None,
            default_duration: None,
        }
    }

    /// An audio track with an Audio element, e.g. `A_PCM/INT/LIT`.
    pub fn audio(
        number: u64,
        name: &str,
        codec_id: &str,
        rate: f64,
        channels: u64,
        bits: u64,
    ) -> Self {
        TrackSpec {
            number,
            uid: None,
            track_type: 2,
            name: name.into(),
            codec_id: codec_id.into(),
            codec_private: Vec::new(),
            audio: Some(AudioSpec {
                rate,
                channels,
                bit_depth: Some(bits),
            }),
            video: None,
            default_duration: None,
        }
    }

    /// A video track of `width` x `height` pixels, `frame_ns` per frame.
    pub fn video(
        number: u64,
        codec_id: &str,
        codec_private: Vec<u8>,
        (width, height): (u64, u64),
        frame_ns: Option<u64>,
    ) -> Self {
        TrackSpec {
            number,
            uid: Some(number),
            track_type: 1,
            name: format!("video_{number}"),
            codec_id: codec_id.into(),
            codec_private,
            audio: None,
            video: Some((width, height)),
            default_duration: frame_ns,
        }
    }

    /// Appends this TrackEntry.
    pub fn write(&self, out: &mut Vec<u8>) {
        master(out, id::TRACK_ENTRY, |t| {
            uint_element(t, id::TRACK_NUMBER, self.number);
            if let Some(uid) = self.uid {
                uint_element(t, id::TRACK_UID, uid);
            }
            uint_element(t, id::TRACK_TYPE, self.track_type);
            element(t, id::CODEC_ID, self.codec_id.as_bytes());
            if !self.codec_private.is_empty() {
                element(t, id::CODEC_PRIVATE, &self.codec_private);
            }
            if !self.name.is_empty() {
                element(t, id::NAME, self.name.as_bytes());
            }
            if let Some(d) = self.default_duration {
                uint_element(t, id::DEFAULT_DURATION, d);
            }
            if let Some((w, h)) = self.video {
                master(t, id::VIDEO, |v| {
                    uint_element(v, id::PIXEL_WIDTH, w);
                    uint_element(v, id::PIXEL_HEIGHT, h);
                });
            }
            if let Some(a) = &self.audio {
                master(t, id::AUDIO, |b| {
                    element(b, id::SAMPLING_FREQUENCY, &a.rate.to_be_bytes());
                    uint_element(b, id::CHANNELS, a.channels);
                    if let Some(depth) = a.bit_depth {
                        uint_element(b, id::BIT_DEPTH, depth);
                    }
                });
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lacing {
    None,
    Xiph,
    Ebml,
    Fixed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    pub track: u64,
    pub relative: i16,
    pub frames: Vec<Vec<u8>>,
    pub lacing: Lacing,
    /// Write a BlockGroup (with this BlockDuration, if any) instead of a SimpleBlock.
    pub group: Option<Option<u64>>,
    /// Not a keyframe: no key flag on a SimpleBlock, a ReferenceBlock in a group.
    pub delta: bool,
}

impl BlockSpec {
    pub fn simple(track: u64, relative: i16, payload: Vec<u8>) -> Self {
        BlockSpec {
            track,
            relative,
            frames: vec![payload],
            lacing: Lacing::None,
            group: None,
            delta: false,
        }
    }

    /// A video frame: a keyframe or not.
    pub fn frame(track: u64, relative: i16, payload: Vec<u8>, key: bool) -> Self {
        BlockSpec {
            delta: !key,
            ..BlockSpec::simple(track, relative, payload)
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_size(&mut body, self.track);
        body.extend_from_slice(&self.relative.to_be_bytes());
        let lace_bits = match self.lacing {
            Lacing::None => 0,
            Lacing::Xiph => 0x02,
            Lacing::Fixed => 0x04,
            Lacing::Ebml => 0x06,
        };
        let key = if self.group.is_none() && !self.delta {
            0x80
        } else {
            0
        };
        body.push(key | lace_bits);
        if self.lacing != Lacing::None {
            body.push((self.frames.len() - 1) as u8);
            let sizes: Vec<usize> = self.frames[..self.frames.len() - 1]
                .iter()
                .map(Vec::len)
                .collect();
            match self.lacing {
                Lacing::Xiph => {
                    for mut size in sizes {
                        while size >= 255 {
                            body.push(255);
                            size -= 255;
                        }
                        body.push(size as u8);
                    }
                }
                Lacing::Ebml => {
                    for (i, &size) in sizes.iter().enumerate() {
                        if i == 0 {
                            put_size(&mut body, size as u64);
                        } else {
                            put_signed(&mut body, size as i64 - sizes[i - 1] as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        for f in &self.frames {
            body.extend_from_slice(f);
        }
        body
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self.group {
            None => element(out, id::SIMPLE_BLOCK, &self.body()),
            Some(duration) => master(out, id::BLOCK_GROUP, |g| {
                element(g, id::BLOCK, &self.body());
                if let Some(d) = duration {
                    uint_element(g, id::BLOCK_DURATION, d);
                }
                if self.delta {
                    // One tick back: the frame before.
                    element(g, id::REFERENCE_BLOCK, &[0xFF]);
                }
            }),
        }
    }
}

/// Two-byte signed vint (range -8191..=8191), enough for generated laces.
fn put_signed(out: &mut Vec<u8>, v: i64) {
    let raw = (v + 8191) as u64;
    out.extend_from_slice(&((raw | 0x4000) as u16).to_be_bytes());
}

/// What the KVS producer SDK writes into Info besides the TimestampScale.
#[derive(Debug, Clone, PartialEq)]
pub struct Producer {
    pub segment_uid: [u8; 16],
    pub title: String,
    /// Written as both MuxingApp and WritingApp.
    pub app: String,
}

impl Producer {
    /// Info as Amazon Connect's producer (the KVS Java SDK) writes it.
    pub fn connect() -> Self {
        Producer {
            segment_uid: *b"kvs-connect-0001",
            title: "Kinesis Video SDK".into(),
            app: "Kinesis Video SDK 1.1.0 JNI 2.0".into(),
        }
    }
}

/// One KVS chunk: EBML header, then an unknown-size Segment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    pub doc_type: Option<String>,
    /// `None` writes no Info element (the 1 ms default applies).
    pub timestamp_scale: Option<u64>,
    /// SegmentUID, Title and the app names in Info, as the KVS SDK writes them.
    pub producer: Option<Producer>,
    pub tracks: Vec<TrackSpec>,
    /// Tags elements before the Cluster, each a list of (name, value).
    pub tags_before: Vec<Vec<(String, String)>>,
    pub cluster_timecode: u64,
    pub known_size_cluster: bool,
    /// Write Position 0 after the Cluster's Timecode, as the KVS SDK does.
    pub cluster_position: bool,
    pub blocks: Vec<BlockSpec>,
    pub tags_after: Vec<Vec<(String, String)>>,
}

/// Appends a Tags element holding one Tag with these (name, value) pairs.
pub fn write_tags(out: &mut Vec<u8>, tags: &[(String, String)]) {
    master(out, id::TAGS, |t| {
        master(t, id::TAG, |tag| {
            element(tag, 0x63C0, &[]);
            for (name, value) in tags {
                master(tag, id::SIMPLE_TAG, |s| {
                    element(s, id::TAG_NAME, name.as_bytes());
                    element(s, id::TAG_STRING, value.as_bytes());
                });
            }
        });
    });
}

impl Chunk {
    pub fn write(&self, out: &mut Vec<u8>) {
        master(out, id::EBML, |h| {
            uint_element(h, 0x4286, 1);
            uint_element(h, 0x42F7, 1);
            let doc = self.doc_type.as_deref().unwrap_or("matroska");
            element(h, id::DOC_TYPE, doc.as_bytes());
        });
        unknown_size_header(out, id::SEGMENT);
        if self.timestamp_scale.is_some() || self.producer.is_some() {
            master(out, id::INFO, |i| {
                if let Some(p) = &self.producer {
                    element(i, id::SEGMENT_UID, &p.segment_uid);
                }
                if let Some(scale) = self.timestamp_scale {
                    uint_element(i, id::TIMESTAMP_SCALE, scale);
                }
                if let Some(p) = &self.producer {
                    element(i, id::TITLE, p.title.as_bytes());
                    element(i, id::MUXING_APP, p.app.as_bytes());
                    element(i, id::WRITING_APP, p.app.as_bytes());
                }
            });
        }
        if !self.tracks.is_empty() {
            master(out, id::TRACKS, |t| {
                self.tracks.iter().for_each(|tr| tr.write(t))
            });
        }
        for tags in &self.tags_before {
            write_tags(out, tags);
        }
        let mut cluster = Vec::new();
        uint_element(&mut cluster, id::TIMECODE, self.cluster_timecode);
        if self.cluster_position {
            uint_element(&mut cluster, id::POSITION, 0);
        }
        for b in &self.blocks {
            b.write(&mut cluster);
        }
        if self.known_size_cluster {
            element(out, id::CLUSTER, &cluster);
        } else {
            unknown_size_header(out, id::CLUSTER);
            out.extend_from_slice(&cluster);
        }
        for tags in &self.tags_after {
            write_tags(out, tags);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebml::read_header;

    #[test]
    fn sizes_round_trip() {
        for size in [0u64, 1, 126, 127, 128, 16382, 16383, 1 << 20, 1 << 40] {
            let mut out = vec![0xA3];
            put_size(&mut out, size);
            assert_eq!(read_header(&out).unwrap().size, size, "size {size}");
        }
    }
}
