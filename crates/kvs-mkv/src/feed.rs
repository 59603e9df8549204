// SPDX-License-Identifier: MPL-2.0
//! Drives a [`Parser`] over bytes that arrive in pieces: the one place that
//! keeps the unread tail. A piece is parsed where it lies, and only what it
//! leaves unread is copied, to be parsed with the next.

use super::parser::{Event, Parser};

/// A parser and the bytes it has not used yet.
#[derive(Default)]
pub struct Scanner {
    parser: Parser,
    pending: Vec<u8>,
    events: Vec<Event>,
}

impl Scanner {
    pub fn new(parser: Parser) -> Scanner {
        Scanner {
            parser,
            pending: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Forgets the bytes held and the parser's state, as after a reconnect.
    pub fn reset(&mut self) {
        self.parser.reset();
        self.pending.clear();
    }

    /// Bytes held for the next piece.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Parses what `piece` completes. `each` sees every event with the bytes
    /// its block ranges index.
    pub fn push(&mut self, piece: &[u8], mut each: impl FnMut(&Event, &[u8])) {
        if self.pending.is_empty() {
            let used = self.parse(piece, &mut each);
            self.pending.extend_from_slice(&piece[used..]);
        } else {
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(piece);
            let used = self.parse(&data, &mut each);
            data.drain(..used);
            self.pending = data;
        }
    }

    /// The stream is over: what waited for bytes that will not come is
    /// decided now, and what is open is closed.
    pub fn finish(&mut self, mut each: impl FnMut(&Event, &[u8])) {
        self.parser.set_last();
        let data = std::mem::take(&mut self.pending);
        let used = self.parse(&data, &mut each);
        self.pending = data[used..].to_vec();
        let mut events = std::mem::take(&mut self.events);
        self.parser.finish(&mut events);
        for ev in events.drain(..) {
            each(&ev, &[]);
        }
        self.events = events;
    }

    /// Parses `data` while it makes progress; returns how much it used.
    fn parse(&mut self, data: &[u8], each: &mut impl FnMut(&Event, &[u8])) -> usize {
        let mut pos = 0;
        let mut events = std::mem::take(&mut self.events);
        while pos < data.len() && (data.len() - pos >= self.parser.need() || self.parser.is_last())
        {
            let need = self.parser.need();
            let used = self.parser.parse(&data[pos..], &mut events);
            let progressed = used > 0 || !events.is_empty() || self.parser.need() > need;
            for ev in events.drain(..) {
                each(&ev, &data[pos..]);
            }
            pos += used;
            if !progressed {
                break;
            }
        }
        self.events = events;
        pos
    }
}

/// An event with block payloads copied out, so runs can be compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Event(Event),
    /// Track, cluster timecode, relative timecode, frame payloads.
    Block(u64, u64, i16, Vec<Vec<u8>>),
}

impl Owned {
    fn of(event: &Event, data: &[u8]) -> Owned {
        match event {
            Event::Block(b) => Owned::Block(
                b.track,
                b.cluster_timecode,
                b.relative,
                b.frames.iter().map(|r| data[r].to_vec()).collect(),
            ),
            other => Owned::Event(other.clone()),
        }
    }
}

/// Every event of `data`, fed in pieces whose sizes `next_size` picks, then
/// finished. Tests and the fuzz target use it to check that any cut gives
/// the same events.
pub fn feed(parser: &mut Parser, data: &[u8], mut next_size: impl FnMut() -> usize) -> Vec<Owned> {
    let mut scanner = Scanner::new(std::mem::take(parser));
    let mut out = Vec::new();
    let mut fed = 0;
    while fed < data.len() {
        let n = next_size().clamp(1, data.len() - fed);
        scanner.push(&data[fed..fed + n], |ev, d| out.push(Owned::of(ev, d)));
        fed += n;
    }
    scanner.finish(|ev, d| out.push(Owned::of(ev, d)));
    *parser = scanner.parser;
    out
}
