// SPDX-License-Identifier: MPL-2.0
//! Drives a [`Parser`] over a byte slice cut into chunks, keeping the unread
//! tail as a caller must. Used by tests and the fuzz target to check that
//! any chunking gives the same events.

use super::parser::{Event, Parser};

/// An event with block payloads copied out, so runs can be compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Event(Event),
    /// Track, cluster timecode, relative timecode, frame payloads.
    Block(u64, u64, i16, Vec<Vec<u8>>),
}

/// Feeds `data` in chunks whose sizes `next_size` picks, then finishes.
pub fn feed(parser: &mut Parser, data: &[u8], mut next_size: impl FnMut() -> usize) -> Vec<Owned> {
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let mut result = Vec::new();
    let mut fed = 0;
    while fed < data.len() {
        let n = next_size().clamp(1, data.len() - fed);
        pending.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        while !pending.is_empty() && pending.len() >= parser.need() {
            let need = parser.need();
            let used = parser.parse(&pending, &mut events);
            let progressed = used > 0 || !events.is_empty() || parser.need() > need;
            result.extend(take(&mut events, &pending));
            pending.drain(..used);
            if !progressed {
                break;
            }
        }
    }
    // What waited for bytes that will not come is decided now, as the
    // demuxer does at EOS.
    parser.set_last();
    while !pending.is_empty() {
        let used = parser.parse(&pending, &mut events);
        let progressed = used > 0 || !events.is_empty();
        result.extend(take(&mut events, &pending));
        pending.drain(..used);
        if !progressed {
            break;
        }
    }
    parser.finish(&mut events);
    result.extend(events.drain(..).map(Owned::Event));
    result
}

/// The events with block payloads copied out of `data`.
fn take(events: &mut Vec<Event>, data: &[u8]) -> Vec<Owned> {
    events
        .drain(..)
        .map(|ev| match ev {
            Event::Block(b) => Owned::Block(
                b.track,
                b.cluster_timecode,
                b.relative,
                b.frames.iter().map(|r| data[r].to_vec()).collect(),
            ),
            other => Owned::Event(other),
        })
        .collect()
}
