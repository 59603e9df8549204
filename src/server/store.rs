// SPDX-License-Identifier: MPL-2.0
//! What the local KVS server serves: streams of stored fragments (KVS chunks),
//! either all there at once (from an MKV file) or appearing in real time, block
//! by block (a synthetic live Connect call).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::kvs::{self, FragmentMeta};
use crate::mkv::feed::{Owned, feed};
use crate::mkv::{Event, Parser};
use crate::synth::camera::{Camera, Encoded};
use crate::synth::{Call, archived};

/// One fragment: its chunk bytes and when each part of it exists.
pub struct Fragment {
    pub number: String,
    /// Producer and server timestamps, in ms since the Unix epoch.
    pub producer_ms: u64,
    pub server_ms: u64,
    pub duration_ms: u64,
    pub bytes: Bytes,
    /// The chunk as GetMediaForFragmentList returns it.
    pub archive: Bytes,
    /// For live streams: (byte offset, ms after the fragment's start) at which
    /// the bytes up to that offset exist. The whole chunk exists at the end.
    pub steps: Vec<(usize, u64)>,
}

pub struct Stream {
    pub name: String,
    pub arn: String,
    pub fragments: Vec<Fragment>,
    /// For a live stream, when fragment 0 starts; fragment i starts
    /// `i * fragment_ms` later.
    pub live: Option<(Instant, u64)>,
}

fn arn(name: &str) -> String {
    format!("arn:aws:kinesisvideo:us-east-1:000000000000:stream/{name}/1700000000000")
}

/// Splits a byte stream into its chunks, with the values their tags give.
fn split_chunks(data: &[u8]) -> Vec<(usize, usize, FragmentMeta)> {
    let mut chunks: Vec<(usize, usize, FragmentMeta)> = Vec::new();
    for ev in feed(&mut Parser::default(), data, || usize::MAX) {
        match ev {
            Owned::Event(Event::Header { offset, .. }) => {
                let offset = offset as usize;
                if let Some(last) = chunks.last_mut() {
                    last.1 = offset;
                }
                chunks.push((offset, data.len(), FragmentMeta::default()));
            }
            Owned::Event(Event::Tags(tags)) => {
                if let Some(last) = chunks.last_mut() {
                    last.2.apply(&tags);
                }
            }
            _ => {}
        }
    }
    chunks
}

impl Stream {
    /// A stream of the chunks in `data` (a GetMedia capture or a generated
    /// file), all available from the start.
    pub fn from_mkv(name: &str, data: &[u8]) -> Stream {
        let bytes = Bytes::copy_from_slice(data);
        let fragments = split_chunks(data)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end, meta))| {
                let ms = |ns: Option<u64>| {
                    ns.map_or(1_700_000_000_000 + i as u64 * 1000, |t| t / 1_000_000)
                };
                Fragment {
                    number: meta.fragment_number.unwrap_or_else(|| format!("{i}")),
                    producer_ms: ms(meta.producer_timestamp),
                    server_ms: ms(meta.server_timestamp),
                    duration_ms: 1000,
                    bytes: bytes.slice(start..end),
                    // Stored chunks are served as they are.
                    archive: bytes.slice(start..end),
                    steps: Vec::new(),
                }
            })
            .collect();
        Stream {
            name: name.into(),
            arn: arn(name),
            fragments,
            live: None,
        }
    }

    /// A synthetic Connect call. Live: fragment 0 starts now and the bytes of
    /// each block appear when the block has been spoken.
    pub fn from_call(name: &str, call: &Call, live: bool) -> Stream {
        let fragments = (0..call.fragments)
            .map(|i| {
                let bytes = call.fragment(i).to_bytes();
                let steps = block_steps(&bytes, call.block_ms);
                let start = call.start_ms + i * call.fragment_ms();
                Fragment {
                    number: call.fragment_number(i),
                    producer_ms: start,
                    server_ms: start + 450,
                    duration_ms: call.fragment_ms(),
                    steps,
                    bytes: Bytes::from(bytes),
                    archive: Bytes::from(call.archive_fragment(i).to_bytes()),
                }
            })
            .collect();
        Stream {
            name: name.into(),
            arn: arn(name),
            fragments,
            live: live.then(|| (Instant::now(), call.fragment_ms())),
        }
    }

    /// A synthetic camera. Live: fragment 0 starts now and each frame's
    /// bytes appear when its time has come.
    pub fn from_camera(name: &str, camera: &Camera, enc: &Encoded, live: bool) -> Stream {
        let fragment_ms = camera.fragment_ms();
        let fragments = camera
            .fragments(enc)
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let bytes = f.to_bytes();
                let start = f.cluster_timecode;
                Fragment {
                    number: camera.fragment_number(i as u64),
                    producer_ms: start,
                    server_ms: start + 120,
                    duration_ms: fragment_ms,
                    steps: block_steps(&bytes, camera.frame_ms()),
                    bytes: Bytes::from(bytes),
                    archive: Bytes::from(archived(f).to_bytes()),
                }
            })
            .collect();
        Stream {
            name: name.into(),
            arn: arn(name),
            fragments,
            live: live.then(|| (Instant::now(), fragment_ms)),
        }
    }

    /// When fragment `i` starts to exist (None: it exists already).
    pub fn fragment_start(&self, i: usize) -> Option<Instant> {
        self.live
            .map(|(t0, ms)| t0 + Duration::from_millis(i as u64 * ms))
    }

    /// Index of the first fragment at or after `ms` on the chosen clock.
    pub fn index_at(&self, ms: u64, producer: bool) -> usize {
        self.fragments
            .iter()
            .position(|f| {
                let t = if producer { f.producer_ms } else { f.server_ms };
                t + f.duration_ms > ms
            })
            .unwrap_or(self.fragments.len())
    }

    /// Index of the fragment after the one numbered `number`.
    pub fn index_after(&self, number: &str) -> Option<usize> {
        let pos = self
            .fragments
            .iter()
            .position(|f| kvs::compare_fragment_numbers(&f.number, number).is_ge())?;
        Some(if self.fragments[pos].number == number {
            pos + 1
        } else {
            pos
        })
    }

    /// Index of the fragment numbered `number`, if the stream has it.
    pub fn index_of(&self, number: &str) -> Option<usize> {
        self.fragments
            .binary_search_by(|f| kvs::compare_fragment_numbers(&f.number, number))
            .ok()
            .or_else(|| self.fragments.iter().position(|f| f.number == number))
    }

    /// How many fragments are complete: all of a stored stream, those
    /// already produced of a live one.
    pub fn complete(&self) -> usize {
        match self.live {
            Some((t0, ms)) => ((t0.elapsed().as_millis() as u64) / ms) as usize,
            None => self.fragments.len(),
        }
        .min(self.fragments.len())
    }

    /// The fragment being produced now (live) or the last one.
    pub fn now_index(&self) -> usize {
        match self.live {
            Some((t0, ms)) => ((t0.elapsed().as_millis() as u64) / ms) as usize,
            None => self.fragments.len().saturating_sub(1),
        }
        .min(self.fragments.len())
    }
}

/// Where each block of a chunk ends, and when (ms after the chunk's
/// cluster time) it has been spoken.
fn block_steps(bytes: &[u8], block_ms: u64) -> Vec<(usize, u64)> {
    let mut events = Vec::new();
    Parser::default().parse(bytes, &mut events);
    events
        .iter()
        .filter_map(|e| match e {
            Event::Block(b) => {
                let end = b.frames.iter().map(|r| r.end).max()?;
                Some((end, b.relative.max(0) as u64 + block_ms))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_of_a_call() {
        let call = Call {
            fragments: 3,
            ..Call::default()
        };
        let stream = Stream::from_mkv("s", &call.bytes());
        assert_eq!(stream.fragments.len(), 3);
        assert_eq!(stream.fragments[1].number, call.fragment_number(1));
        assert_eq!(stream.fragments[1].producer_ms, call.start_ms + 1024);
        assert_eq!(stream.index_after(&call.fragment_number(0)), Some(1));
        assert_eq!(stream.index_at(call.start_ms + 1500, true), 1);
        let live = Stream::from_call("s", &call, true);
        let f = &live.fragments[0];
        assert_eq!(f.steps.len(), 32);
        assert_eq!(f.steps[0].1, 64);
        assert!(f.steps.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(f.bytes, stream.fragments[0].bytes);
        assert_ne!(f.archive, f.bytes);
        assert_eq!(live.index_of(&call.fragment_number(2)), Some(2));
        assert_eq!(live.index_of("1"), None);
        assert_eq!(stream.complete(), 3);
    }
}
