// SPDX-License-Identifier: MPL-2.0
//! Fragment tracking, without GStreamer: the KVS chunk being read and its
//! tags, whether it replays one already output, the contact and MimeType in
//! force, the blocks held until its trailing tags are in, and what to report
//! when it is complete. `R` is what a held block keeps its bytes in.

use std::cmp::Ordering;

use super::ConnectPcm;
use kvs_mkv::elements::DEFAULT_TIMESTAMP_SCALE;
use kvs_mkv::kvs::{self, FragmentMeta, InbandError};
use kvs_mkv::{Block, SimpleTag, Track, TrackKind};

/// Held blocks are let go, decided with what is known, past this span of
/// block time or these many bytes.
const MAX_HOLD_SPAN: i128 = 10_000_000_000;
const MAX_HOLD_BYTES: usize = 4 << 20;

/// What the stream's MimeType tags have said so far. Connect sends one in
/// every fragment, after the fragment's Cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mime {
    /// No MimeType yet, and no fragment has ended.
    #[default]
    Unknown,
    /// A fragment ended without one: A_AAC tracks are read by their CodecID.
    Absent,
    /// The latest MimeType value.
    Said(String),
}

impl Mime {
    /// The state to decide on once a fragment has ended.
    pub fn settled(&self) -> Mime {
        match self {
            Mime::Unknown => Mime::Absent,
            other => other.clone(),
        }
    }
}

/// How an A_AAC track is read: as S16LE PCM of this rate and channels, or
/// as AAC (`None`), with the reason; `None` while that cannot be told yet.
pub fn aac_reading(
    track: &Track,
    mode: ConnectPcm,
    mime: &Mime,
) -> Option<(Option<(u32, u32)>, &'static str)> {
    let l16 = match mime {
        Mime::Said(m) => kvs::parse_l16(m),
        _ => None,
    };
    Some(match (mode, mime) {
        (ConnectPcm::Never, _) => (None, "connect-pcm=never"),
        (ConnectPcm::Always, _) => (
            Some(l16.unwrap_or((8000, 1))),
            "connect-pcm=always (the rate and channels from the MimeType, else 8000 Hz mono)",
        ),
        (ConnectPcm::Auto, Mime::Said(_)) if l16.is_some() => {
            (l16, "the stream's MimeType is audio/L16")
        }
        (ConnectPcm::Auto, Mime::Said(_)) => (None, "the stream's MimeType is not audio/L16"),
        (ConnectPcm::Auto, _) if kvs::is_connect_track_name(&track.name) => (
            Some((8000, 1)),
            "an Amazon Connect track name and no MimeType yet: 8000 Hz mono L16 assumed",
        ),
        (ConnectPcm::Auto, Mime::Absent) => (None, "no MimeType tag: the CodecID holds"),
        (ConnectPcm::Auto, Mime::Unknown) => return None,
    })
}

/// The CodecIDs read as AAC (or as Connect's PCM).
pub fn is_aac(codec_id: &str) -> bool {
    matches!(codec_id, "A_AAC" | "A_AAC/MPEG4/LC" | "A_AAC/MPEG2/LC")
}

/// The chunk being read.
pub struct Reading<R> {
    pub meta: FragmentMeta,
    /// Its Tracks, until its Cluster puts them in force.
    tracks: Option<Vec<Track>>,
    pub timestamp_scale: u64,
    /// Its Cluster has started.
    pub started: bool,
    /// The pads are configured for it, and its blocks go out as they come.
    pub open: bool,
    /// Its fragment number is not past the last one seen: a replay after a reconnect.
    pub replay: bool,
    /// Blocks waiting for its trailing tags, with the bytes they hold.
    held: Vec<(Block, R)>,
    held_bytes: usize,
    /// Absolute time of its first block, and the producer time it maps to.
    anchor: Option<(i128, Option<u64>)>,
    /// Output time of its first block.
    pub first_out: Option<u64>,
    /// Blocks per TrackNumber.
    pub blocks: Vec<(u64, u64)>,
    /// What its tag event said (see [`Tracker::tag_view`]).
    pub sent: Option<TagView>,
    pub damaged: bool,
    /// Dropped whole for being too far behind live (max-latency).
    pub skipped: bool,
    reported: bool,
    /// An EBML header or tags were seen.
    pub seen: bool,
}

impl<R> Default for Reading<R> {
    fn default() -> Self {
        Reading {
            meta: FragmentMeta::default(),
            tracks: None,
            timestamp_scale: DEFAULT_TIMESTAMP_SCALE,
            started: false,
            open: false,
            replay: false,
            held: Vec::new(),
            held_bytes: 0,
            anchor: None,
            first_out: None,
            blocks: Vec::new(),
            sent: None,
            skipped: false,
            damaged: false,
            reported: false,
            seen: false,
        }
    }
}

/// A fragment's values as its GstTags carry them: all but the lag and the
/// token (the tags carry the previous fragment's), plus the contact.
pub type TagView = (FragmentMeta, Option<String>);

/// What a Tags element changed.
#[derive(Debug, Default, PartialEq)]
pub struct TagNews {
    pub error: Option<InbandError>,
    /// A MimeType that differs from the one in force.
    pub mime: Option<String>,
    /// The started fragment's ContactId, now known.
    pub contact: Option<String>,
    /// The started fragment's trailing KVS tags are in.
    pub complete: bool,
}

/// Stream-wide fragment state.
pub struct Tracker<R> {
    pub fragment: Reading<R>,
    /// The Tracks in force (a chunk without Tracks keeps the previous ones).
    pub tracks: Vec<Track>,
    pub mime: Mime,
    /// The contact in force.
    pub contact: Option<String>,
    last_number: Option<String>,
    /// Continuation token and lag of the last complete fragment.
    pub prev_token: Option<String>,
    pub prev_millis: Option<u64>,
    /// The server timestamp of the last complete fragment, in ns.
    prev_server: Option<u64>,
    /// Complete fragments so far.
    pub fragments: u64,
}

impl<R> Default for Tracker<R> {
    fn default() -> Self {
        Tracker {
            fragment: Reading::default(),
            tracks: Vec::new(),
            mime: Mime::Unknown,
            contact: None,
            last_number: None,
            prev_token: None,
            prev_millis: None,
            prev_server: None,
            fragments: 0,
        }
    }
}

impl<R> Tracker<R> {
    /// A new chunk starts (its EBML header).
    pub fn chunk(&mut self) {
        self.fragment = Reading {
            seen: true,
            ..Reading::default()
        };
    }

    pub fn set_tracks(&mut self, tracks: Vec<Track>) {
        self.fragment.tracks = Some(tracks);
    }

    /// The fragment's name, for messages.
    pub fn name(&self) -> &str {
        self.fragment
            .meta
            .fragment_number
            .as_deref()
            .unwrap_or("without number")
    }

    pub fn tags(&mut self, tags: &[SimpleTag]) -> TagNews {
        let f = &mut self.fragment;
        f.seen = true;
        let had_contact = f.meta.contact_id.is_some();
        f.meta.apply(tags);
        let mut news = TagNews::default();
        if tags.iter().any(|t| kvs::is_error_tag(&t.name)) {
            news.error = Some(f.meta.error.clone().unwrap_or_default());
            return news;
        }
        if let Some(mime) = tags.iter().rev().find(|t| t.name == kvs::MIME_TYPE) {
            let said = Mime::Said(mime.value.trim().to_string());
            if said != self.mime {
                news.mime = Some(mime.value.trim().to_string());
                self.mime = said;
            }
        }
        // Before the Cluster, the fragment's other tags may still come:
        // `begin` gives the contact then.
        if f.started && !had_contact {
            news.contact = f.meta.contact_id.clone();
        }
        news.complete = f.started && f.meta.continuation_token.is_some();
        news
    }

    /// The fragment's Cluster starts: its Tracks are in force. Returns its
    /// ContactId, if it came before the Cluster.
    pub fn begin(&mut self) -> Option<String> {
        let f = &mut self.fragment;
        f.started = true;
        if let Some(number) = &f.meta.fragment_number {
            f.replay = self.last_number.as_deref().is_some_and(|last| {
                kvs::compare_fragment_numbers(number, last) != Ordering::Greater
            });
            if !f.replay {
                self.last_number = Some(number.clone());
            }
        }
        if let Some(tracks) = f.tracks.take() {
            self.tracks = tracks;
        }
        f.meta.contact_id.clone()
    }

    /// Puts `contact` in force; returns the one before if it differs.
    pub fn contact_change(&mut self, contact: String) -> Option<String> {
        let previous = self.contact.replace(contact.clone())?;
        (previous != contact).then_some(previous)
    }

    /// How far behind live the started fragment is, in ms. KVS puts
    /// MILLIS_BEHIND_NOW at the end of each fragment, so it is the last
    /// fragment's figure less the server time between the two; before any
    /// such figure, the local clock (`now`, ns since the epoch) against the
    /// fragment's producer time.
    pub fn behind_ms(&self, now: u64) -> Option<u64> {
        let meta = &self.fragment.meta;
        if let (Some(millis), Some(prev), Some(server)) =
            (self.prev_millis, self.prev_server, meta.server_timestamp)
        {
            return Some(millis.saturating_sub(server.saturating_sub(prev) / 1_000_000));
        }
        meta.producer_timestamp
            .map(|p| now.saturating_sub(p) / 1_000_000)
    }

    /// Why the fragment's blocks must wait for its trailing tags, if they must.
    pub fn hold_reason(&self, mode: ConnectPcm, stop_at_contact_end: bool) -> Option<String> {
        if stop_at_contact_end && self.contact.is_some() && self.fragment.meta.contact_id.is_none()
        {
            return Some("its ContactId (stop-at-contact-end)".into());
        }
        // Connect sends no video: next to a video track, A_AAC is AAC.
        if self.tracks.iter().any(|t| t.kind == TrackKind::Video) {
            return None;
        }
        let undecided = self.tracks.iter().find(|t| {
            t.kind == TrackKind::Audio
                && is_aac(&t.codec_id)
                && aac_reading(t, mode, &self.mime).is_none()
        })?;
        Some(format!(
            "a MimeType: track {} ({:?}) is A_AAC, and only a MimeType tells AAC from PCM",
            undecided.number, undecided.name
        ))
    }

    /// The pads are configured for the fragment. `forced`: it was decided
    /// without its trailing tags.
    pub fn open(&mut self, forced: bool) -> Vec<(Block, R)> {
        self.fragment.open = true;
        if forced {
            self.mime = self.mime.settled();
        }
        self.fragment.held_bytes = 0;
        std::mem::take(&mut self.fragment.held)
    }

    /// Keeps a block of a fragment that waits; true once the held blocks
    /// pass their bounds.
    pub fn hold(&mut self, block: Block, bytes: R, abs: i128) -> bool {
        let f = &mut self.fragment;
        let scale = i128::from(f.timestamp_scale);
        let first = f.held.first().map(|(b, _)| {
            (i128::from(b.cluster_timecode) + i128::from(b.relative)).saturating_mul(scale)
        });
        f.held_bytes += block.frames.iter().map(|r| r.len()).sum::<usize>();
        f.held.push((block, bytes));
        first.is_some_and(|first| abs - first > MAX_HOLD_SPAN) || f.held_bytes > MAX_HOLD_BYTES
    }

    pub fn held(&self) -> usize {
        self.fragment.held.len()
    }

    /// Drops the held blocks (they belong to a contact not to be output).
    pub fn drop_held(&mut self) {
        self.fragment.held.clear();
        self.fragment.held_bytes = 0;
    }

    pub fn count_block(&mut self, track: u64) {
        match self.fragment.blocks.iter_mut().find(|(t, _)| *t == track) {
            Some((_, n)) => *n += 1,
            None => self.fragment.blocks.push((track, 1)),
        }
    }

    /// Producer time of a block at absolute time `abs`: the fragment's
    /// producer timestamp plus the block's distance from its first block.
    pub fn producer_time(&mut self, abs: i128) -> u64 {
        let producer = self.fragment.meta.producer_timestamp;
        let (first, producer) = *self.fragment.anchor.get_or_insert((abs, producer));
        let t = producer.map_or(abs, |p| i128::from(p) + abs - first);
        u64::try_from(t).unwrap_or(0)
    }

    pub fn tag_view(&self) -> TagView {
        let mut meta = self.fragment.meta.clone();
        meta.millis_behind_now = None;
        meta.continuation_token = None;
        (meta, self.contact.clone())
    }

    /// The fragment is over. Returns whether it is to be reported (it is
    /// whole), and whether its tags changed since its tag event went out.
    pub fn end(&mut self) -> Option<bool> {
        if self.fragment.meta.mime_type.is_none() && self.mime == Mime::Unknown {
            self.mime = Mime::Absent;
        }
        let f = &self.fragment;
        if f.reported || f.damaged || !f.seen {
            return None;
        }
        let stale = f.open && f.sent.as_ref() != Some(&self.tag_view());
        self.fragment.reported = true;
        Some(stale)
    }

    /// Counts the ended fragment as complete; returns its index.
    pub fn reported(&mut self) -> u64 {
        self.fragments += 1;
        self.prev_token = self.fragment.meta.continuation_token.clone();
        self.prev_millis = self.fragment.meta.millis_behind_now;
        self.prev_server = self.fragment.meta.server_timestamp;
        self.fragments - 1
    }

    /// Forgets the fragment and the replay order, as after a flush.
    pub fn flush(&mut self) {
        self.fragment = Reading::default();
        self.last_number = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, value: &str) -> SimpleTag {
        SimpleTag::new(name, value)
    }

    fn track(number: u64, name: &str) -> Track {
        Track {
            number,
            kind: TrackKind::Audio,
            codec_id: "A_AAC".into(),
            codec_private: vec![0x11, 0x90],
            name: name.into(),
            rate: None,
            channels: None,
            bit_depth: None,
            default_duration: None,
            codec_delay: None,
            picture: Default::default(),
        }
    }

    fn block(relative: i16) -> Block {
        Block {
            track: 1,
            cluster_timecode: 1000,
            relative,
            keyframe: true,
            duration: None,
            discard_padding: None,
            frames: Default::default(),
        }
    }

    /// One fragment as real Connect lays it out, up to its Cluster.
    fn real_fragment(t: &mut Tracker<()>, number: &str, names: [&str; 2]) {
        t.chunk();
        t.set_tracks(vec![track(1, names[0]), track(2, names[1])]);
        t.tags(&[tag(kvs::FRAGMENT_NUMBER, number)]);
    }

    #[test]
    fn how_far_behind_live() {
        let mut t = Tracker::<()>::default();
        t.chunk();
        t.tags(&[
            tag(kvs::SERVER_TIMESTAMP, "100.000"),
            tag(kvs::PRODUCER_TIMESTAMP, "99.000"),
        ]);
        t.begin();
        // No MILLIS_BEHIND_NOW yet: the local clock against producer time.
        assert_eq!(t.behind_ms(104_500_000_000), Some(5_500));
        t.tags(&[tag(kvs::MILLIS_BEHIND_NOW, "8000")]);
        t.end();
        t.reported();
        t.chunk();
        t.tags(&[
            tag(kvs::SERVER_TIMESTAMP, "102.000"),
            tag(kvs::PRODUCER_TIMESTAMP, "101.000"),
        ]);
        t.begin();
        // 8 s behind after the last one, which is 2 s of server time older.
        assert_eq!(t.behind_ms(0), Some(6_000));
    }

    #[test]
    fn connect_names_decide_at_once_other_names_wait_for_a_mime_type() {
        let mut t = Tracker::<()>::default();
        real_fragment(&mut t, "1", ["AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"]);
        assert_eq!(t.begin(), None);
        assert_eq!(t.hold_reason(ConnectPcm::Auto, false), None);

        let mut t = Tracker::<()>::default();
        real_fragment(&mut t, "1", ["left", "right"]);
        t.begin();
        assert!(
            t.hold_reason(ConnectPcm::Auto, false)
                .unwrap()
                .contains("MimeType")
        );
        assert_eq!(t.hold_reason(ConnectPcm::Never, false), None);
        assert!(!t.hold(block(0), (), 1_000_000_000));
        // The trailing MimeType decides.
        let news = t.tags(&[tag(kvs::MIME_TYPE, "audio/L16;rate=8000;channels=1;")]);
        assert_eq!(
            news.mime.as_deref(),
            Some("audio/L16;rate=8000;channels=1;")
        );
        assert_eq!(t.hold_reason(ConnectPcm::Auto, false), None);
        assert_eq!(t.open(false).len(), 1);

        // A camera's A_AAC next to its video is AAC at once.
        let mut t = Tracker::<()>::default();
        t.chunk();
        let mut camera = track(1, "camera");
        camera.kind = TrackKind::Video;
        camera.codec_id = "V_MPEG4/ISO/AVC".into();
        t.set_tracks(vec![camera, track(2, "left")]);
        t.begin();
        assert_eq!(t.hold_reason(ConnectPcm::Auto, false), None);
    }

    #[test]
    fn a_fragment_without_mime_type_settles_the_codec_id() {
        let mut t = Tracker::<()>::default();
        real_fragment(&mut t, "1", ["left", "right"]);
        t.begin();
        t.open(true);
        t.fragment.sent = Some(t.tag_view());
        assert_eq!(t.end(), Some(false));
        assert_eq!(t.mime, Mime::Absent);
        real_fragment(&mut t, "2", ["left", "right"]);
        t.begin();
        assert_eq!(t.hold_reason(ConnectPcm::Auto, false), None);
    }

    #[test]
    fn holds_are_bounded() {
        let mut t = Tracker::<()>::default();
        real_fragment(&mut t, "1", ["left", "right"]);
        t.begin();
        let ms = 1_000_000i128;
        assert!(!t.hold(block(0), (), 1000 * ms));
        assert!(!t.hold(block(1), (), 11_000 * ms));
        assert!(t.hold(block(2), (), 11_001 * ms));
    }

    #[test]
    fn contact_comes_after_the_cluster_and_replays_are_told() {
        let mut t = Tracker::<()>::default();
        real_fragment(&mut t, "5", ["AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"]);
        t.begin();
        let news = t.tags(&[tag(kvs::CONTACT_ID, "a")]);
        assert_eq!(news.contact.as_deref(), Some("a"));
        assert_eq!(t.contact_change("a".into()), None);
        let news = t.tags(&[
            tag(kvs::MILLIS_BEHIND_NOW, "10"),
            tag(kvs::CONTINUATION_TOKEN, "5"),
        ]);
        assert!(news.complete && news.contact.is_none());
        t.open(false);
        assert_eq!(t.end(), Some(true), "tags came after the tag event");
        assert_eq!(t.reported(), 0);
        assert_eq!(t.prev_token.as_deref(), Some("5"));
        // The next contact: held with stop-at-contact-end until it is known.
        real_fragment(&mut t, "6", ["AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"]);
        t.begin();
        assert!(
            t.hold_reason(ConnectPcm::Auto, true)
                .unwrap()
                .contains("ContactId")
        );
        assert_eq!(
            t.tags(&[tag(kvs::CONTACT_ID, "b")]).contact.as_deref(),
            Some("b")
        );
        assert_eq!(t.contact_change("b".into()).as_deref(), Some("a"));
        // A fragment numbered at or before the last is a replay.
        real_fragment(&mut t, "6", ["AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"]);
        t.begin();
        assert!(t.fragment.replay);
    }

    #[test]
    fn in_band_errors_are_news() {
        let mut t = Tracker::<()>::default();
        t.chunk();
        let news = t.tags(&[tag(kvs::ERROR_CODE, "X"), tag(kvs::ERROR_ID, "4000")]);
        assert_eq!(news.error.unwrap().id, "4000");
    }
}
