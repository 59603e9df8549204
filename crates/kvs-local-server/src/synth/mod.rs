// SPDX-License-Identifier: MPL-2.0
//! Synthetic Amazon Connect calls, shaped like the real thing: two A_AAC
//! labelled L16 tracks named by direction, epoch-millisecond cluster
//! timecodes, 64 ms blocks and the full set of KVS and Connect tags, laid
//! out as real Connect GetMedia output is (see [`Layout`]). Tests,
//! benchmarks and the demo all use it, and it tells what PCM to expect.

use std::ops::Range;

use kvs_mkv::kvs;
use kvs_mkv::writer::{BlockSpec, Chunk, Producer, TrackSpec};

pub mod camera;

pub const CALLER: &str = kvs::AUDIO_FROM_CUSTOMER;
pub const AGENT: &str = kvs::AUDIO_TO_CUSTOMER;

/// Which side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Agent,
}

impl Side {
    pub fn track_name(self) -> &'static str {
        match self {
            Side::Caller => CALLER,
            Side::Agent => AGENT,
        }
    }
}

/// A deterministic, side-specific sample value: a tone (440 Hz for the
/// caller, 660 Hz for the agent at 8 kHz) with a hashed dither, so that it
/// sounds like two speakers and any lost, repeated or swapped sample shows.
pub fn sample(side: Side, n: u64) -> i16 {
    let (seed, hz) = match side {
        Side::Caller => (0x9E37_79B9u64, 440.0),
        Side::Agent => (0x85EB_CA6Bu64, 660.0),
    };
    let dither = (n.wrapping_add(seed)).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 58;
    let tone = (n as f64 * hz * std::f64::consts::TAU / 8000.0).sin() * 6000.0;
    tone as i16 + dither as i16
}

/// Where a fragment's Connect tags sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As real Connect writes it: only the KVS fragment tags come before the
    /// Cluster. ContactId, InstanceId, MimeType, AUDIO_FROM_CUSTOMER,
    /// AUDIO_TO_CUSTOMER and Events follow it, each in a Tags element of its
    /// own, then the Tags with MILLIS_BEHIND_NOW and CONTINUATION_TOKEN.
    /// Info has the SDK's SegmentUID, Title and app names; the Cluster has
    /// an unknown size and a Position.
    Real,
    /// The Connect tags in one Tags element before the Cluster, as older
    /// fixtures have them. Real streams never do this.
    TagsFirst,
}

/// A GetMedia fragment as GetMediaForFragmentList returns it: the KVS
/// timestamps under their archive names, and no trailing KVS tags.
pub fn archived(mut f: Chunk) -> Chunk {
    for tags in &mut f.tags_before {
        for (name, _) in tags.iter_mut() {
            if name == kvs::SERVER_TIMESTAMP {
                *name = kvs::SERVER_SIDE_TIMESTAMP.into();
            } else if name == kvs::PRODUCER_TIMESTAMP {
                *name = kvs::PRODUCER_SIDE_TIMESTAMP.into();
            }
        }
    }
    f.tags_after.pop();
    f
}

pub const L16_8K_MONO: &str = "audio/L16;rate=8000;channels=1;";

#[derive(Debug, Clone)]
pub struct Call {
    pub fragments: u64,
    /// Blocks per track per fragment.
    pub blocks_per_fragment: u64,
    pub block_ms: u64,
    pub rate: u32,
    /// Producer time of the first block, in epoch milliseconds.
    pub start_ms: u64,
    pub contact_id: String,
    /// Track 1 is the agent, as Connect sometimes does.
    pub swapped: bool,
    /// Times (ms from the start) where a side sends no blocks.
    pub silence: Vec<(Side, Range<u64>)>,
    pub layout: Layout,
    /// The MimeType tag of every fragment.
    pub mime_type: String,
    /// From this fragment index on, the stream carries this other contact
    /// (a reused stream).
    pub next_contact: Option<(u64, String)>,
    /// MILLIS_BEHIND_NOW of each fragment, by index (1250 past the end).
    pub behind_ms: Vec<u64>,
    /// Place of the call's fragment 0 in its stream: its fragment numbers
    /// follow those of the calls before it.
    pub first_fragment: u64,
}

impl Default for Call {
    fn default() -> Self {
        Call {
            fragments: 10,
            blocks_per_fragment: 16,
            block_ms: 64,
            rate: 8000,
            start_ms: 1_700_000_000_000,
            contact_id: "5b8b6d2e-1c8f-4f3a-9a57-2f1d3c4e5a6b".into(),
            swapped: false,
            silence: Vec::new(),
            layout: Layout::Real,
            mime_type: L16_8K_MONO.into(),
            next_contact: None,
            behind_ms: Vec::new(),
            first_fragment: 0,
        }
    }
}

impl Call {
    /// A call of about `seconds` long, in 1.024 s fragments.
    pub fn of_seconds(seconds: u64) -> Self {
        Call {
            fragments: (seconds * 1000).div_ceil(1024),
            ..Call::default()
        }
    }

    pub fn fragment_ms(&self) -> u64 {
        self.blocks_per_fragment * self.block_ms
    }

    fn samples_per_block(&self) -> u64 {
        self.block_ms * u64::from(self.rate) / 1000
    }

    /// The demo call: `seconds` long, with the agent silent from 3 s to 6 s.
    pub fn demo(seconds: u64) -> Self {
        Call {
            silence: vec![(Side::Agent, 3000..6000)],
            ..Call::of_seconds(seconds)
        }
    }

    /// KVS-style 47-digit fragment number.
    pub fn fragment_number(&self, index: u64) -> String {
        format!(
            "91343852333181432392682062607743920146{:09}",
            264_245_331 + (self.first_fragment + index) * 7
        )
    }

    /// The call's length in ms.
    pub fn duration_ms(&self) -> u64 {
        self.fragments * self.fragment_ms()
    }

    /// The `k`-th of this call played back to back on one stream, as
    /// Connect reuses a stream for its next contact: a ContactId of its
    /// own, and times and fragment numbers following the call before.
    pub fn repeated(&self, k: u64) -> Call {
        let base = &self.contact_id[..self.contact_id.len().saturating_sub(12)];
        let tail = u64::from_str_radix(&self.contact_id[base.len()..], 16).unwrap_or(0);
        Call {
            start_ms: self.start_ms + k * self.duration_ms(),
            first_fragment: self.first_fragment + k * self.fragments,
            contact_id: format!("{base}{:012x}", (tail + k) & 0xffff_ffff_ffff),
            ..self.clone()
        }
    }

    pub fn continuation_token(&self, index: u64) -> String {
        self.fragment_number(index)
    }

    fn sides(&self) -> [Side; 2] {
        if self.swapped {
            [Side::Agent, Side::Caller]
        } else {
            [Side::Caller, Side::Agent]
        }
    }

    fn silent(&self, side: Side, ms: u64) -> bool {
        self.silence
            .iter()
            .any(|(s, r)| *s == side && r.contains(&ms))
    }

    fn block_payload(&self, side: Side, block: u64) -> Vec<u8> {
        let n = self.samples_per_block();
        (block * n..(block + 1) * n)
            .flat_map(|i| sample(side, i).to_le_bytes())
            .collect()
    }

    fn seconds(ms: u64) -> String {
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }

    pub fn fragment(&self, index: u64) -> Chunk {
        let start = self.start_ms + index * self.fragment_ms();
        let sides = self.sides();
        let mut blocks = Vec::new();
        for b in 0..self.blocks_per_fragment {
            let block = index * self.blocks_per_fragment + b;
            for (i, side) in sides.iter().enumerate() {
                if !self.silent(*side, block * self.block_ms) {
                    let relative = (b * self.block_ms) as i16;
                    blocks.push(BlockSpec::simple(
                        i as u64 + 1,
                        relative,
                        self.block_payload(*side, block),
                    ));
                }
            }
        }
        let contact = match &self.next_contact {
            Some((from, next)) if index >= *from => next.as_str(),
            _ => self.contact_id.as_str(),
        };
        let connect: Vec<(String, String)> = [
            ("ContactId", contact),
            ("InstanceId", "8e3c2a1b-0000-4000-8000-0000000000aa"),
            ("MimeType", self.mime_type.as_str()),
            (CALLER, "1"),
            (AGENT, "2"),
            ("Events", "[]"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kvs_tags = vec![
            (kvs::FRAGMENT_NUMBER.into(), self.fragment_number(index)),
            (kvs::SERVER_TIMESTAMP.into(), Self::seconds(start + 450)),
            (kvs::PRODUCER_TIMESTAMP.into(), Self::seconds(start)),
        ];
        let trailer = vec![
            (
                kvs::MILLIS_BEHIND_NOW.into(),
                self.behind_ms
                    .get(index as usize)
                    .unwrap_or(&1250)
                    .to_string(),
            ),
            (
                kvs::CONTINUATION_TOKEN.into(),
                self.continuation_token(index),
            ),
        ];
        let real = self.layout == Layout::Real;
        let (tags_before, tags_after) = if real {
            let mut after: Vec<_> = connect.into_iter().map(|t| vec![t]).collect();
            after.push(trailer);
            (vec![kvs_tags], after)
        } else {
            (vec![connect, kvs_tags], vec![trailer])
        };
        Chunk {
            doc_type: None,
            timestamp_scale: Some(1_000_000),
            producer: real.then(Producer::connect),
            tracks: vec![
                TrackSpec::connect(1, sides[0].track_name()),
                TrackSpec::connect(2, sides[1].track_name()),
            ],
            tags_before,
            cluster_timecode: start,
            known_size_cluster: false,
            cluster_position: real,
            blocks,
            tags_after,
        }
    }

    /// Fragment `index` as GetMediaForFragmentList returns it: the KVS
    /// timestamps under their archive names, and no trailing KVS tags.
    pub fn archive_fragment(&self, index: u64) -> Chunk {
        archived(self.fragment(index))
    }

    /// The whole call as one GetMedia byte stream.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..self.fragments {
            self.fragment(i).write(&mut out);
        }
        out
    }

    /// The PCM (S16LE) a side's track carries, block by block.
    pub fn pcm(&self, side: Side) -> Vec<u8> {
        let blocks = self.fragments * self.blocks_per_fragment;
        (0..blocks)
            .filter(|b| !self.silent(side, b * self.block_ms))
            .flat_map(|b| self.block_payload(side, b))
            .collect()
    }

    /// The side's PCM on a continuous timeline: silence as zeros.
    pub fn pcm_with_silence(&self, side: Side) -> Vec<u8> {
        let blocks = self.fragments * self.blocks_per_fragment;
        let zeros = vec![0u8; self.samples_per_block() as usize * 2];
        (0..blocks)
            .flat_map(|b| {
                if self.silent(side, b * self.block_ms) {
                    zeros.clone()
                } else {
                    self.block_payload(side, b)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_shape() {
        let call = Call {
            fragments: 2,
            silence: vec![(Side::Agent, 0..128)],
            ..Call::default()
        };
        assert_eq!(call.pcm(Side::Caller).len(), 2 * 16 * 1024);
        assert_eq!(call.pcm(Side::Agent).len(), (2 * 16 - 2) * 1024);
        assert_eq!(call.pcm_with_silence(Side::Agent).len(), 2 * 16 * 1024);
        assert_ne!(sample(Side::Caller, 5), sample(Side::Agent, 5));
        assert_eq!(call.fragment_number(0).len(), 47);
        let f = call.fragment(1);
        assert_eq!(f.cluster_timecode, 1_700_000_001_024);
        assert_eq!(f.blocks.len(), 32);
    }
}
