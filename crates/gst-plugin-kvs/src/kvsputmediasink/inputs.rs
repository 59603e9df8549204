// SPDX-License-Identifier: MPL-2.0
//! The sink's inputs: each pad's track and queue, and which buffer goes
//! out next, so that blocks of all tracks leave in producer-time order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::shared::Shared;
use kvs_mkv::writer::TrackSpec;

/// A buffer waiting for the other pads, so that blocks go out in time order.
pub(super) struct Pending {
    pub(super) ms: u64,
    pub(super) key: bool,
    pub(super) buffer: gst::Buffer,
}

pub(super) struct Input {
    pub(super) pad: super::KvsPutMediaSinkPad,
    pub(super) video: bool,
    /// From the caps; its number is set when the tracks are written.
    pub(super) track: Option<TrackSpec>,
    pub(super) segment: gst::FormattedSegment<gst::ClockTime>,
    pub(super) queue: VecDeque<Pending>,
    pub(super) eos: bool,
    /// Sent nothing for `MAX_WAIT` while others waited: passed over.
    pub(super) stalled: bool,
}

impl Input {
    /// Not waited for: ended, or passed over.
    pub(super) fn gone(&self) -> bool {
        self.eos || self.stalled
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) inputs: Vec<Input>,
    /// The tracks of the headers being written, None before the first.
    pub(super) written: Option<Vec<TrackSpec>>,
    /// Epoch ms at running time 0, for buffers without a producer time.
    pub(super) epoch_at_zero: Option<i128>,
    pub(super) shared: Option<Arc<Shared>>,
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
    pub(super) before_key_frame: u64,
}

/// The producer time of a buffer from its `timestamp/x-unix` meta.
pub(super) fn unix_meta_ms(buffer: &gst::BufferRef) -> Option<u64> {
    buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| {
            m.reference()
                .structure(0)
                .is_some_and(|s| s.name() == "timestamp/x-unix")
        })
        .map(|m| m.timestamp().mseconds())
}

pub(super) fn now_ms() -> i128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i128)
}

impl State {
    /// Numbers the tracks, video first, and gives the list if every pad
    /// has caps (or has ended), or if one has held the others back too long.
    pub(super) fn tracks(&mut self, force: bool) -> Option<Vec<TrackSpec>> {
        let missing = self.inputs.iter().any(|i| i.track.is_none() && !i.eos);
        if missing && !force {
            return None;
        }
        let mut order: Vec<usize> = (0..self.inputs.len()).collect();
        order.sort_by_key(|&i| !self.inputs[i].video);
        let mut list = Vec::new();
        for i in order {
            if let Some(t) = &mut self.inputs[i].track {
                t.number = list.len() as u64 + 1;
                t.uid = Some(t.number);
                list.push(t.clone());
            }
        }
        (!list.is_empty()).then_some(list)
    }

    /// The input whose next buffer is due, if it can go now.
    pub(super) fn next(&self, all: bool) -> Option<usize> {
        let ready = all || self.inputs.iter().all(|i| i.gone() || !i.queue.is_empty());
        if !ready {
            return None;
        }
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(n, i)| Some((i.queue.front()?.ms, n)))
            .min()
            .map(|(_, n)| n)
    }
}
