// SPDX-License-Identifier: MPL-2.0
//! Places each track's S16LE blocks on one timeline by producer time and
//! interleaves them. Its decisions depend only on its state and the blocks
//! that follow, so a worker that restores a checkpointed state and reads
//! the stream again from there writes the very same bytes.

use serde_json::{Value, json};

/// Gaps and overlaps this small (40 ms, as audio sinks allow) are clock
/// jitter: the block follows on.
const JITTER_DIVISOR: u64 = 25;
/// A side this far behind the other is silent: it is filled with zeros up
/// to this distance, so the other side's audio can go out.
const HOLD_MS: u64 = 3000;

#[derive(Debug, Clone, Default, PartialEq)]
struct Track {
    /// Frames placed, from the start of the call.
    end: u64,
    /// Producer time of the last block placed: older blocks are repeats.
    last_ms: Option<u64>,
    /// S16LE samples placed but not yet handed out.
    pending: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mixer {
    rate: u64,
    /// Producer time of frame 0.
    start_ms: Option<u64>,
    tracks: Vec<Track>,
    /// Frames handed out.
    written: u64,
}

impl Mixer {
    pub fn new(rate: u32, channels: usize) -> Self {
        Mixer {
            rate: u64::from(rate),
            start_ms: None,
            tracks: vec![Track::default(); channels],
            written: 0,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    pub fn channels(&self) -> usize {
        self.tracks.len()
    }

    /// The header of a WAV holding `bytes` of the mixed output. A WAV
    /// cannot say more than 4 GiB (37 hours of a call).
    pub fn wav_header(&self, bytes: u64) -> Vec<u8> {
        crate::pieces::wav_header(
            self.rate(),
            self.channels() as u16,
            u32::try_from(bytes).unwrap_or(u32::MAX - 36),
        )
    }

    /// The seconds `bytes` of the mixed S16 output hold.
    pub fn seconds(&self, bytes: u64) -> f64 {
        let frames = bytes / (self.channels() as u64 * 2).max(1);
        frames as f64 / self.rate.max(1) as f64
    }

    /// Frames handed out so far.
    #[cfg(test)]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Places one block of channel `channel` that starts at producer time
    /// `ms`.
    pub fn push(&mut self, channel: usize, ms: u64, pcm: &[u8]) {
        let start = *self.start_ms.get_or_insert(ms);
        let jitter = self.rate / JITTER_DIVISOR;
        let t = &mut self.tracks[channel];
        if t.last_ms.is_some_and(|last| ms <= last) {
            return;
        }
        t.last_ms = Some(ms);
        let pos = ms.saturating_sub(start) * self.rate / 1000;
        let mut pcm = &pcm[..pcm.len() & !1];
        if pos > t.end + jitter {
            let zeros = (pos - t.end) as usize * 2;
            t.pending.resize(t.pending.len() + zeros, 0);
            t.end = pos;
        } else if pos + jitter < t.end {
            let skip = ((t.end - pos) as usize * 2).min(pcm.len());
            pcm = &pcm[skip..];
        }
        t.pending.extend_from_slice(pcm);
        t.end += pcm.len() as u64 / 2;
        self.fill_silent();
    }

    fn fill_silent(&mut self) {
        let hold = self.rate * HOLD_MS / 1000;
        let newest = self.tracks.iter().map(|t| t.end).max().unwrap_or(0);
        for t in &mut self.tracks {
            if t.end + hold < newest {
                let frames = newest - hold - t.end;
                t.pending.resize(t.pending.len() + frames as usize * 2, 0);
                t.end += frames;
            }
        }
    }

    /// Interleaved S16LE frames every channel has reached.
    pub fn take_ready(&mut self) -> Vec<u8> {
        let ready = self.tracks.iter().map(|t| t.end).min().unwrap_or(0);
        let frames = (ready - self.written) as usize;
        let channels = self.tracks.len();
        let mut out = Vec::with_capacity(frames * channels * 2);
        for f in 0..frames {
            for t in &self.tracks {
                out.extend_from_slice(&t.pending[f * 2..f * 2 + 2]);
            }
        }
        for t in &mut self.tracks {
            t.pending.drain(..frames * 2);
        }
        self.written = ready;
        out
    }

    /// At the end of the call: silence after a side that stopped first.
    pub fn finish(&mut self) -> Vec<u8> {
        let newest = self.tracks.iter().map(|t| t.end).max().unwrap_or(0);
        for t in &mut self.tracks {
            let frames = newest - t.end;
            t.pending.resize(t.pending.len() + frames as usize * 2, 0);
            t.end = newest;
        }
        self.take_ready()
    }

    /// The state as JSON and the pending samples as bytes.
    pub fn save(&self) -> (Value, Vec<u8>) {
        let tracks: Vec<Value> = self
            .tracks
            .iter()
            .map(|t| json!({"end": t.end, "last_ms": t.last_ms, "pending": t.pending.len()}))
            .collect();
        let bytes = self.tracks.iter().flat_map(|t| t.pending.clone()).collect();
        let state = json!({
            "rate": self.rate,
            "start_ms": self.start_ms,
            "written": self.written,
            "tracks": tracks,
        });
        (state, bytes)
    }

    /// The mixer `save` described.
    pub fn load(state: &Value, bytes: &[u8]) -> Result<Mixer, String> {
        let num = |v: &Value, k: &str| v[k].as_u64().ok_or(format!("no {k} in the mixer state"));
        let mut rest = bytes;
        let mut tracks = Vec::new();
        for t in state["tracks"]
            .as_array()
            .ok_or("no tracks in the mixer state")?
        {
            let n = num(t, "pending")? as usize;
            if n > rest.len() {
                return Err("the checkpoint's samples are cut short".into());
            }
            let (pending, tail) = rest.split_at(n);
            rest = tail;
            tracks.push(Track {
                end: num(t, "end")?,
                last_ms: t["last_ms"].as_u64(),
                pending: pending.to_vec(),
            });
        }
        Ok(Mixer {
            rate: num(state, "rate")?,
            start_ms: state["start_ms"].as_u64(),
            tracks,
            written: num(state, "written")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(value: i16, frames: usize) -> Vec<u8> {
        (0..frames).flat_map(|_| value.to_le_bytes()).collect()
    }

    fn frames(out: &[u8], channels: usize) -> Vec<Vec<i16>> {
        out.chunks(channels * 2)
            .map(|f| {
                f.chunks(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn interleaves_two_sides_by_time() {
        let mut m = Mixer::new(8000, 2);
        m.push(0, 1000, &block(1, 512));
        assert!(m.take_ready().is_empty(), "the right side is not there yet");
        m.push(1, 1000, &block(2, 512));
        m.push(0, 1064, &block(3, 512));
        let out = frames(&m.take_ready(), 2);
        assert_eq!(out.len(), 512);
        assert!(out.iter().all(|f| f == &[1, 2]));
        m.push(1, 1064, &block(4, 512));
        assert_eq!(frames(&m.take_ready(), 2), vec![vec![3, 4]; 512]);
        assert_eq!(m.written(), 1024);
    }

    #[test]
    fn gaps_become_silence_and_repeats_are_dropped() {
        let mut m = Mixer::new(8000, 1);
        m.push(0, 0, &block(1, 8));
        m.push(0, 0, &block(9, 8));
        m.push(0, 1, &block(2, 8));
        m.push(0, 100, &block(3, 8));
        let out: Vec<i16> = frames(&m.take_ready(), 1).concat();
        assert_eq!(out.len(), 808);
        assert_eq!(&out[..16], &[[1; 8], [2; 8]].concat()[..]);
        assert!(out[16..800].iter().all(|&s| s == 0));
        assert_eq!(&out[800..], &[3; 8]);
    }

    #[test]
    fn a_silent_side_holds_the_other_back_three_seconds_at_most() {
        let mut m = Mixer::new(8000, 2);
        for i in 0..100 {
            m.push(0, i * 64, &block(5, 512));
        }
        let out = frames(&m.take_ready(), 2);
        assert_eq!(out.len() as u64, 100 * 512 - 24000);
        assert!(out.iter().all(|f| f == &[5, 0]));
        m.push(1, 6400, &block(6, 512));
        m.push(0, 6400, &block(7, 512));
        let out = frames(&m.finish(), 2);
        assert_eq!(out.len(), 24000 + 512);
        assert_eq!(out[24000], vec![7, 6]);
    }

    #[test]
    fn a_restored_mixer_continues_with_the_same_bytes() {
        let blocks: Vec<(usize, u64, Vec<u8>)> = (0..40u64)
            .flat_map(|i| {
                let mut v = vec![(0, i * 64, block(i as i16, 512))];
                if !(10..20).contains(&i) {
                    v.push((1, i * 64 + 1, block(-(i as i16), 512)));
                }
                v
            })
            .collect();
        let mut whole = Mixer::new(8000, 2);
        let mut expected = Vec::new();
        for (c, ms, pcm) in &blocks {
            whole.push(*c, *ms, pcm);
            expected.extend(whole.take_ready());
        }
        expected.extend(whole.finish());
        for cut in [1, 17, 29, 44, blocks.len() - 1] {
            let mut first = Mixer::new(8000, 2);
            let mut got = Vec::new();
            for (c, ms, pcm) in &blocks[..cut] {
                first.push(*c, *ms, pcm);
                got.extend(first.take_ready());
            }
            let (state, bytes) = first.save();
            let mut second = Mixer::load(&state, &bytes).unwrap();
            assert_eq!(second, first);
            // The stream is read again from a little before the cut.
            for (c, ms, pcm) in &blocks[cut.saturating_sub(3)..] {
                second.push(*c, *ms, pcm);
                got.extend(second.take_ready());
            }
            got.extend(second.finish());
            assert!(got == expected, "cut at block {cut}");
        }
    }
}
