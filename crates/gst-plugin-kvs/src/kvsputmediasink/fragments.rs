// SPDX-License-Identifier: MPL-2.0
//! The producer's fragments: frames in, KVS-shaped Matroska out, one
//! Cluster per fragment, kept until KVS has acknowledged them. No
//! GStreamer and no I/O in here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use kvs_mkv::elements::id;
use kvs_mkv::writer::{
    TrackSpec, element, master, put_id, put_size, uint_element, unknown_size_header, write_tags,
};

/// One frame of one track, at a producer time in ms since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub track: u64,
    pub ms: u64,
    pub key: bool,
    pub data: &'a [u8],
}

/// Where fragments start.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Audio only: a new fragment every this many ms. With video: the
    /// shortest fragment when `key_frame_fragmentation` is off.
    pub fragment_ms: u64,
    /// With video: a new fragment at every key frame.
    pub key_frame_fragmentation: bool,
    /// Tags written after each Cluster, each in its own Tags element, as
    /// Amazon Connect lays them out.
    pub tags: Vec<(String, String)>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            fragment_ms: 2000,
            key_frame_fragmentation: true,
            tags: Vec::new(),
        }
    }
}

/// A fragment: its Cluster (and tags) as written, and what became of it.
#[derive(Debug)]
pub struct Held {
    /// The Cluster Timecode: ms since the Unix epoch.
    pub timecode: u64,
    pub bytes: Vec<u8>,
    /// No more bytes will be added.
    pub closed: bool,
    pub closed_at: Option<Instant>,
    /// The headers (EBML, Segment, Info, Tracks) a connection sending this
    /// fragment starts with.
    pub header: Arc<Vec<u8>>,
    /// How many times sending it began.
    pub sends: u32,
    /// The connection that last began sending it.
    pub conn: u64,
    /// KVS has it: it goes once the fragments before it have gone too.
    pub acked: bool,
    /// Latest frame time, to find fragments that grow too long.
    pub last_ms: u64,
}

/// What [`Fragments::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Appended,
    /// It starts a new fragment.
    Opened,
    /// Video is not yet at a key frame: nothing can start before one.
    BeforeKeyFrame,
}

pub struct Fragments {
    rules: Rules,
    video_track: Option<u64>,
    header: Arc<Vec<u8>>,
    list: VecDeque<Held>,
    /// Sequence number of `list[0]`.
    first: u64,
    bytes: usize,
}

/// The EBML header, an unknown-size Segment, Info and Tracks.
pub fn header(tracks: &[TrackSpec], app: &str) -> Vec<u8> {
    let mut out = Vec::new();
    master(&mut out, id::EBML, |h| {
        uint_element(h, 0x4286, 1);
        uint_element(h, 0x42F7, 1);
        uint_element(h, 0x42F2, 4);
        uint_element(h, 0x42F3, 8);
        element(h, id::DOC_TYPE, b"matroska");
        uint_element(h, 0x4287, 4);
        uint_element(h, 0x4285, 2);
    });
    unknown_size_header(&mut out, id::SEGMENT);
    master(&mut out, id::INFO, |i| {
        uint_element(i, id::TIMESTAMP_SCALE, 1_000_000);
        element(i, id::TITLE, b"Kinesis Video SDK");
        element(i, id::MUXING_APP, app.as_bytes());
        element(i, id::WRITING_APP, app.as_bytes());
    });
    master(&mut out, id::TRACKS, |t| {
        tracks.iter().for_each(|tr| tr.write(t))
    });
    out
}

impl Fragments {
    pub fn new(rules: Rules, tracks: &[TrackSpec], app: &str) -> Self {
        let mut f = Fragments {
            rules,
            video_track: None,
            header: Arc::default(),
            list: VecDeque::new(),
            first: 0,
            bytes: 0,
        };
        f.set_tracks(tracks, app);
        f
    }

    /// New track headers: fragments from the next one on carry them, and
    /// the next fragment starts at the next frame (a key frame for video).
    pub fn set_tracks(&mut self, tracks: &[TrackSpec], app: &str) {
        self.header = Arc::new(header(tracks, app));
        self.video_track = tracks.iter().find(|t| t.track_type == 1).map(|t| t.number);
        self.close();
    }

    fn open(&self) -> Option<&Held> {
        self.list.back().filter(|f| !f.closed)
    }

    fn starts_fragment(&self, frame: &Frame) -> Result<bool, Pushed> {
        let video = self.video_track;
        let Some(open) = self.open() else {
            return match video {
                Some(v) if frame.track != v || !frame.key => Err(Pushed::BeforeKeyFrame),
                _ => Ok(true),
            };
        };
        let relative = frame.ms as i64 - open.timecode as i64;
        if !(i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&relative) {
            return Ok(true);
        }
        let due = frame.ms >= open.timecode + self.rules.fragment_ms;
        Ok(match video {
            Some(v) => frame.track == v && frame.key && (self.rules.key_frame_fragmentation || due),
            None => due,
        })
    }

    /// Adds a frame, starting a fragment first when the rules say so.
    pub fn push(&mut self, frame: &Frame) -> Pushed {
        let opens = match self.starts_fragment(frame) {
            Ok(opens) => opens,
            Err(pushed) => return pushed,
        };
        if opens {
            self.close();
            let mut bytes = Vec::with_capacity(256 + frame.data.len());
            unknown_size_header(&mut bytes, id::CLUSTER);
            uint_element(&mut bytes, id::TIMECODE, frame.ms);
            self.bytes += bytes.len();
            self.list.push_back(Held {
                timecode: frame.ms,
                bytes,
                closed: false,
                closed_at: None,
                header: self.header.clone(),
                sends: 0,
                conn: 0,
                acked: false,
                last_ms: frame.ms,
            });
        }
        let open = self.list.back_mut().expect("a fragment is open");
        let before = open.bytes.len();
        let relative = (frame.ms as i64 - open.timecode as i64) as i16;
        put_id(&mut open.bytes, id::SIMPLE_BLOCK);
        let track_len = (1..=8)
            .find(|&l| frame.track < (1 << (7 * l)) - 1)
            .unwrap_or(8);
        put_size(&mut open.bytes, (track_len + 3 + frame.data.len()) as u64);
        put_size(&mut open.bytes, frame.track);
        open.bytes.extend_from_slice(&relative.to_be_bytes());
        open.bytes.push(if frame.key { 0x80 } else { 0 });
        open.bytes.extend_from_slice(frame.data);
        open.last_ms = open.last_ms.max(frame.ms);
        self.bytes += open.bytes.len() - before;
        if opens {
            Pushed::Opened
        } else {
            Pushed::Appended
        }
    }

    /// Ends the open fragment, if any, with the per-fragment tags.
    pub fn close(&mut self) {
        let tags = self.rules.tags.clone();
        let Some(open) = self.list.back_mut().filter(|f| !f.closed) else {
            return;
        };
        let before = open.bytes.len();
        for tag in tags {
            write_tags(&mut open.bytes, &[tag]);
        }
        self.bytes += open.bytes.len() - before;
        open.closed = true;
        open.closed_at = Some(Instant::now());
    }

    /// Sequence number of the oldest fragment kept.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Sequence number the next fragment will have.
    #[cfg(test)]
    pub fn end(&self) -> u64 {
        self.first + self.list.len() as u64
    }

    #[cfg(test)]
    pub fn get(&self, seq: u64) -> Option<&Held> {
        self.list.get(seq.checked_sub(self.first)? as usize)
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Held> {
        self.list.get_mut(seq.checked_sub(self.first)? as usize)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// KVS has what it needs of the fragment with this timecode, sent on
    /// connection `conn`, and of those that connection sent before it (KVS
    /// stores a connection's fragments in order). What another connection
    /// sent is not its to acknowledge. Returns the fragments that can go:
    /// acknowledged, with none before them still waiting.
    pub fn acknowledge(&mut self, timecode: u64, conn: u64) -> Vec<Held> {
        for f in self.list.iter_mut() {
            if f.closed && f.conn == conn && f.timecode <= timecode {
                f.acked = true;
            }
        }
        let mut out = Vec::new();
        while self.list.front().is_some_and(|f| f.acked) {
            out.extend(self.pop_front());
        }
        out
    }

    /// True if a fragment connection `conn` sent is still unacknowledged.
    pub fn waiting_on(&self, conn: u64) -> bool {
        self.list
            .iter()
            .any(|f| f.conn == conn && f.sends > 0 && !f.acked)
    }

    /// Lets the oldest closed fragment go unacknowledged (storage full).
    pub fn drop_oldest(&mut self) -> Option<Held> {
        if self.list.front().is_some_and(|f| f.closed) {
            self.pop_front()
        } else {
            None
        }
    }

    fn pop_front(&mut self) -> Option<Held> {
        let f = self.list.pop_front()?;
        self.first += 1;
        self.bytes -= f.bytes.len();
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_mkv::{Event, Parser};

    fn audio() -> Vec<TrackSpec> {
        vec![TrackSpec::audio(
            1,
            "AUDIO_FROM_CUSTOMER",
            "A_PCM/INT/LIT",
            8000.0,
            1,
            16,
        )]
    }

    fn frame(track: u64, ms: u64, key: bool) -> Frame<'static> {
        Frame {
            track,
            ms,
            key,
            data: &[7; 40],
        }
    }

    #[test]
    fn audio_fragments_by_duration_with_tags_after_the_cluster() {
        let rules = Rules {
            fragment_ms: 1000,
            tags: vec![("ContactId".into(), "c-1".into())],
            ..Rules::default()
        };
        let mut f = Fragments::new(rules, &audio(), "test");
        let pushed: Vec<Pushed> = (0..25)
            .map(|i| f.push(&frame(1, 5000 + i * 100, true)))
            .collect();
        assert_eq!(pushed[0], Pushed::Opened);
        assert_eq!(pushed[10], Pushed::Opened);
        assert_eq!(pushed[20], Pushed::Opened);
        assert_eq!(pushed.iter().filter(|p| **p == Pushed::Opened).count(), 3);
        f.close();
        assert_eq!(f.len(), 3);
        // Header + fragments parse as KVS chunks, tags after the Cluster.
        let mut bytes = f.get(0).unwrap().header.to_vec();
        bytes.extend_from_slice(&f.get(0).unwrap().bytes);
        let (mut parser, mut events) = (Parser::default(), Vec::new());
        parser.parse(&bytes, &mut events);
        parser.finish(&mut events);
        let order: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::ClusterStart => Some("cluster"),
                Event::Block(b) => Some(if b.relative == 0 { "first" } else { "block" }),
                Event::Tags(t) if t[0].name == "ContactId" => Some("tags"),
                _ => None,
            })
            .collect();
        assert_eq!(order[0], "cluster");
        assert_eq!(order[1], "first");
        assert_eq!(order.len(), 12);
        assert_eq!(order[11], "tags");
        let total: usize = (0..3).map(|i| f.get(i).unwrap().bytes.len()).sum();
        assert_eq!(f.bytes(), total);
        // Sent on connection 1, then the third on connection 2.
        for seq in 0..3 {
            let frag = f.get_mut(seq).unwrap();
            frag.sends = 1;
            frag.conn = if seq < 2 { 1 } else { 2 };
        }
        // Connection 2's ACK does not let go what connection 1 sent.
        assert!(f.acknowledge(7000, 2).is_empty());
        assert!(f.waiting_on(1) && !f.waiting_on(2));
        // The second's ACK lets the first go too, and then the third.
        let released = f.acknowledge(6000, 1);
        assert_eq!(
            released.iter().map(|r| r.timecode).collect::<Vec<_>>(),
            [5000, 6000, 7000]
        );
        assert_eq!((f.first(), f.end()), (3, 3));
        assert!(f.acknowledge(123, 1).is_empty());
    }

    #[test]
    fn video_fragments_start_at_key_frames() {
        let tracks = vec![
            TrackSpec::video(1, "V_MPEG4/ISO/AVC", vec![1, 2], (64, 48), None),
            TrackSpec::audio(2, "audio", "A_OPUS", 48000.0, 1, 16),
        ];
        let rules = Rules {
            fragment_ms: 1000,
            key_frame_fragmentation: false,
            ..Rules::default()
        };
        let mut f = Fragments::new(rules.clone(), &tracks, "test");
        assert_eq!(f.push(&frame(2, 0, true)), Pushed::BeforeKeyFrame);
        assert_eq!(f.push(&frame(1, 10, false)), Pushed::BeforeKeyFrame);
        assert_eq!(f.push(&frame(1, 20, true)), Pushed::Opened);
        // A key frame before the duration does not start one; after it does.
        assert_eq!(f.push(&frame(1, 520, true)), Pushed::Appended);
        assert_eq!(f.push(&frame(1, 1100, false)), Pushed::Appended);
        assert_eq!(f.push(&frame(2, 1110, true)), Pushed::Appended);
        assert_eq!(f.push(&frame(1, 1120, true)), Pushed::Opened);
        let mut kf = Fragments::new(
            Rules {
                key_frame_fragmentation: true,
                ..rules
            },
            &tracks,
            "test",
        );
        kf.push(&frame(1, 0, true));
        assert_eq!(kf.push(&frame(1, 40, true)), Pushed::Opened);
        // A gap past the i16 block timecode opens one whatever the frame.
        assert_eq!(kf.push(&frame(1, 40_000, false)), Pushed::Opened);
    }
}
