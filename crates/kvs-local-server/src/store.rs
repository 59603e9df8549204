// SPDX-License-Identifier: MPL-2.0
//! What the local KVS server serves: streams of stored fragments (KVS chunks),
//! either all there at once (from an MKV file), appearing in real time, block
//! by block (a synthetic live Connect call), or put by a producer (PutMedia).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::synth::camera::{Camera, Encoded};
use crate::synth::{Call, archived};
use kvs_mkv::feed::{Owned, feed};
use kvs_mkv::kvs::{self, FragmentMeta};
use kvs_mkv::{Event, Parser};

/// One fragment: its chunk bytes and when each part of it exists.
pub struct Fragment {
    pub number: String,
    /// Producer and server timestamps, in ms since the Unix epoch.
    pub producer_ms: u64,
    pub server_ms: u64,
    pub duration_ms: u64,
    pub bytes: Bytes,
    /// The chunk as GetMediaForFragmentList returns it, in pieces.
    pub archive: Vec<Bytes>,
    /// For live streams: (byte offset, ms after the fragment's start) at which
    /// the bytes up to that offset exist. The whole chunk exists at the end.
    pub steps: Vec<(usize, u64)>,
}

impl Fragment {
    pub fn archive_len(&self) -> usize {
        self.archive.iter().map(Bytes::len).sum()
    }
}

/// A fragment being put: its GetMedia bytes so far.
pub struct Open {
    pub number: String,
    pub producer_ms: u64,
    pub server_ms: u64,
    pub bytes: Vec<u8>,
    /// The archive form: this head, then `bytes` from `cluster_from`.
    pub archive_head: Vec<u8>,
    pub cluster_from: usize,
}

/// A place in a stream's sequence of fragments.
pub enum Slot {
    Done(Arc<Fragment>),
    Open(Open),
    /// Abandoned mid-way (the connection broke) or past the retention.
    Gone,
}

/// What a reader finds at a place in the stream.
pub enum Read {
    /// Bytes from the offset asked for; `true` when the fragment is whole.
    Data(Bytes, bool),
    /// Nothing here any more: go on to the next place.
    Skip,
    /// Nothing yet.
    Wait,
}

pub struct Stream {
    pub name: String,
    pub arn: String,
    slots: RwLock<Vec<Slot>>,
    /// For a live stream, when fragment 0 starts; fragment i starts
    /// `i * fragment_ms` later.
    pub live: Option<(Instant, u64)>,
    /// DataRetentionInHours: with 0, PutMedia sends no PERSISTED.
    pub retention_hours: AtomicU32,
    pub media_type: Mutex<String>,
    /// A producer has put fragments: NOW waits for the next one.
    put: AtomicBool,
    /// Bumped on every change, for readers waiting at the live edge.
    changes: tokio::sync::watch::Sender<u64>,
    /// When recent PutMedia calls came, for KVS's 5 a second.
    pub put_calls: Mutex<VecDeque<Instant>>,
}

/// The fragments of a synthetic call, as a stream stores them.
fn call_fragments(call: &Call) -> Vec<Fragment> {
    (0..call.fragments)
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
                archive: vec![Bytes::from(call.archive_fragment(i).to_bytes())],
            }
        })
        .collect()
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
                    archive: vec![bytes.slice(start..end)],
                    steps: Vec::new(),
                }
            })
            .collect();
        Stream::new(name, fragments, None)
    }

    /// An empty stream, for producers to put into.
    pub fn empty(name: &str, retention_hours: u32) -> Stream {
        let s = Stream::new(name, Vec::new(), None);
        s.retention_hours.store(retention_hours, Ordering::SeqCst);
        s
    }

    fn new(name: &str, fragments: Vec<Fragment>, live: Option<(Instant, u64)>) -> Stream {
        Stream {
            name: name.into(),
            arn: arn(name),
            slots: RwLock::new(
                fragments
                    .into_iter()
                    .map(|f| Slot::Done(Arc::new(f)))
                    .collect(),
            ),
            live,
            retention_hours: AtomicU32::new(24),
            media_type: Mutex::new(String::new()),
            put: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            put_calls: Mutex::new(VecDeque::new()),
        }
    }

    /// A synthetic Connect call. Live: fragment 0 starts now and the bytes of
    /// each block appear when the block has been spoken.
    pub fn from_call(name: &str, call: &Call, live: bool) -> Stream {
        Self::from_call_at(name, call, live.then(Instant::now))
    }

    /// A live call whose fragment 0 started at `started` (earlier
    /// fragments are already stored), or a stored one with `None`.
    pub fn from_call_at(name: &str, call: &Call, started: Option<Instant>) -> Stream {
        Stream::new(
            name,
            call_fragments(call),
            started.map(|at| (at, call.fragment_ms())),
        )
    }

    /// Appends `call` to a live stream of calls like it, after the last:
    /// its fragments exist when their time comes. Only the newest `keep`
    /// places stay; older ones go, as past a stream's retention.
    pub fn push_call(&self, call: &Call, keep: usize) {
        let mut slots = self.slots.write().unwrap();
        slots.extend(
            call_fragments(call)
                .into_iter()
                .map(|f| Slot::Done(Arc::new(f))),
        );
        let old = slots.len().saturating_sub(keep);
        for slot in &mut slots[..old] {
            *slot = Slot::Gone;
        }
        drop(slots);
        self.changed();
    }

    /// Another live stream of the same fragments, `delay` later: calls that
    /// did not start together. None for a stream that is not live.
    pub fn live_copy(&self, name: &str, delay: Duration) -> Option<Stream> {
        let (t0, ms) = self.live?;
        let slots = self.slots.read().unwrap();
        let fragments = slots.iter().map(|slot| match slot {
            Slot::Done(f) => Slot::Done(f.clone()),
            _ => Slot::Gone,
        });
        let copy = Stream::new(name, Vec::new(), Some((t0 + delay, ms)));
        copy.slots.write().unwrap().extend(fragments);
        Some(copy)
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
                    archive: vec![Bytes::from(archived(f).to_bytes())],
                }
            })
            .collect();
        Stream::new(name, fragments, live.then(|| (Instant::now(), fragment_ms)))
    }

    /// When fragment `i` starts to exist (None: it exists already).
    pub fn fragment_start(&self, i: usize) -> Option<Instant> {
        self.live
            .map(|(t0, ms)| t0 + Duration::from_millis(i as u64 * ms))
    }

    /// The whole fragment at place `i`, if there is one.
    pub fn fragment(&self, i: usize) -> Option<Arc<Fragment>> {
        match self.slots.read().unwrap().get(i) {
            Some(Slot::Done(f)) => Some(f.clone()),
            _ => None,
        }
    }

    /// How many places: whole, open and gone fragments.
    pub fn len(&self) -> usize {
        self.slots.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole fragments, with their places.
    fn done(&self) -> Vec<(usize, Arc<Fragment>)> {
        let slots = self.slots.read().unwrap();
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Done(f) => Some((i, f.clone())),
                _ => None,
            })
            .collect()
    }

    /// Place of the first fragment at or after `ms` on the chosen clock.
    pub fn index_at(&self, ms: u64, producer: bool) -> usize {
        self.done()
            .into_iter()
            .find(|(_, f)| {
                let t = if producer { f.producer_ms } else { f.server_ms };
                t + f.duration_ms > ms
            })
            .map_or(self.len(), |(i, _)| i)
    }

    /// Place of the fragment after the one numbered `number`.
    pub fn index_after(&self, number: &str) -> Option<usize> {
        let done = self.done();
        let pos = done
            .iter()
            .position(|(_, f)| kvs::compare_fragment_numbers(&f.number, number).is_ge())?;
        let (i, f) = &done[pos];
        Some(if f.number == number { i + 1 } else { *i })
    }

    /// Place of the fragment numbered `number`, if the stream has it.
    pub fn index_of(&self, number: &str) -> Option<usize> {
        self.done()
            .into_iter()
            .find(|(_, f)| f.number == number)
            .map(|(i, _)| i)
    }

    /// How many places are complete: all of a stored or put stream, those
    /// already produced of a live one.
    pub fn complete(&self) -> usize {
        let len = self.len();
        match self.live {
            Some((t0, ms)) => (((t0.elapsed().as_millis() as u64) / ms) as usize).min(len),
            None => len,
        }
    }

    /// The fragment being produced now (live or put), or the last one.
    pub fn now_index(&self) -> usize {
        let slots = self.slots.read().unwrap();
        if let Some((t0, ms)) = self.live {
            return (((t0.elapsed().as_millis() as u64) / ms) as usize).min(slots.len());
        }
        if self.put.load(Ordering::SeqCst) {
            return slots
                .iter()
                .position(|s| matches!(s, Slot::Open(_)))
                .unwrap_or(slots.len());
        }
        slots.len().saturating_sub(1)
    }

    /// What a reader finds at place `i` from byte `from` on.
    pub fn read(&self, i: usize, from: usize) -> Read {
        match self.slots.read().unwrap().get(i) {
            Some(Slot::Done(f)) => Read::Data(f.bytes.slice(from.min(f.bytes.len())..), true),
            Some(Slot::Open(o)) if o.bytes.len() > from => {
                Read::Data(Bytes::copy_from_slice(&o.bytes[from..]), false)
            }
            Some(Slot::Open(_)) | None => Read::Wait,
            Some(Slot::Gone) => Read::Skip,
        }
    }

    /// A receiver that sees every later change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Opens a fragment for a producer, made by `make` for its place;
    /// returns the place.
    pub fn open(&self, make: impl FnOnce(usize) -> Open) -> usize {
        self.put.store(true, Ordering::SeqCst);
        let mut slots = self.slots.write().unwrap();
        let i = slots.len();
        slots.push(Slot::Open(make(i)));
        drop(slots);
        self.changed();
        i
    }

    /// The number of the fragment at place `i`, open or whole.
    pub fn number(&self, i: usize) -> String {
        match self.slots.read().unwrap().get(i) {
            Some(Slot::Open(o)) => o.number.clone(),
            Some(Slot::Done(f)) => f.number.clone(),
            _ => String::new(),
        }
    }

    /// Appends bytes to the open fragment at place `i`.
    pub fn append(&self, i: usize, data: &[u8]) {
        if let Some(Slot::Open(o)) = self.slots.write().unwrap().get_mut(i) {
            o.bytes.extend_from_slice(data);
        }
        self.changed();
    }

    /// Closes the open fragment at place `i` with `trailer` (the KVS tags
    /// that end a GetMedia chunk). `keep` whole fragments stay; older ones go.
    pub fn close(&self, i: usize, duration_ms: u64, trailer: &[u8], keep: Option<usize>) {
        let mut slots = self.slots.write().unwrap();
        let Some(Slot::Open(o)) = slots.get_mut(i) else {
            return;
        };
        let cluster_end = o.bytes.len();
        o.bytes.extend_from_slice(trailer);
        let bytes = Bytes::from(std::mem::take(&mut o.bytes));
        let archive = vec![
            Bytes::from(std::mem::take(&mut o.archive_head)),
            bytes.slice(o.cluster_from..cluster_end),
        ];
        slots[i] = Slot::Done(Arc::new(Fragment {
            number: o.number.clone(),
            producer_ms: o.producer_ms,
            server_ms: o.server_ms,
            duration_ms,
            bytes,
            archive,
            steps: Vec::new(),
        }));
        if let Some(keep) = keep {
            let mut whole = 0;
            for slot in slots.iter_mut().rev() {
                if matches!(slot, Slot::Done(_)) {
                    whole += 1;
                    if whole > keep {
                        *slot = Slot::Gone;
                    }
                }
            }
        }
        drop(slots);
        self.changed();
    }

    /// Gives up the open fragment at place `i`: its producer went away.
    pub fn abandon(&self, i: usize) {
        if let Some(slot @ Slot::Open(_)) = self.slots.write().unwrap().get_mut(i) {
            *slot = Slot::Gone;
        }
        self.changed();
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
        assert_eq!(stream.len(), 3);
        assert_eq!(stream.fragment(1).unwrap().number, call.fragment_number(1));
        assert_eq!(
            stream.fragment(1).unwrap().producer_ms,
            call.start_ms + 1024
        );
        assert_eq!(stream.index_after(&call.fragment_number(0)), Some(1));
        assert_eq!(stream.index_at(call.start_ms + 1500, true), 1);
        let live = Stream::from_call("s", &call, true);
        let f = live.fragment(0).unwrap();
        assert_eq!(f.steps.len(), 32);
        assert_eq!(f.steps[0].1, 64);
        assert!(f.steps.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(f.bytes, stream.fragment(0).unwrap().bytes);
        assert_ne!(f.archive[0], f.bytes);
        assert_eq!(live.index_of(&call.fragment_number(2)), Some(2));
        assert_eq!(live.index_of("1"), None);
        assert_eq!(stream.complete(), 3);
    }

    #[test]
    fn a_live_copy_starts_later_with_the_same_fragments() {
        let call = Call {
            fragments: 3,
            ..Call::default()
        };
        let live = Stream::from_call("s", &call, true);
        let copy = live.live_copy("s-0", Duration::from_millis(300)).unwrap();
        assert_eq!(copy.name, "s-0");
        assert_eq!(copy.len(), 3);
        assert!(Arc::ptr_eq(
            &copy.fragment(2).unwrap(),
            &live.fragment(2).unwrap()
        ));
        assert_eq!(
            copy.fragment_start(1).unwrap() - live.fragment_start(1).unwrap(),
            Duration::from_millis(300)
        );
        assert!(
            Stream::from_call("t", &call, false)
                .live_copy("t-0", Duration::ZERO)
                .is_none()
        );
    }
}
