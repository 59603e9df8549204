// SPDX-License-Identifier: MPL-2.0
//! The output timeline, without GStreamer. Output time is a block's absolute
//! time plus one stream-wide offset, chosen so that the first block is at 0.
//! Time going back, or the whole stream jumping forward past `max-gap`,
//! moves the offset so that output time keeps running on.

/// A block this much later than its pad's position starts a gap (DISCONT);
/// this much earlier counts as time going backwards.
pub const DISCONT_TOLERANCE: u64 = 200_000_000;

/// A pad this far behind another is brought forward to that distance. It is
/// well under a default queue's 1 s, so a silent pad never stalls a pipeline.
pub const GAP_LAG: u64 = 400_000_000;

/// Why the timeline moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    /// Time went back by this many ns.
    Back(u64),
    /// The whole stream jumped forward by this many ns, past `max-gap`.
    Forward(u64),
}

#[derive(Debug, Default)]
pub struct Timeline {
    offset: Option<i128>,
    /// The next block continues at the furthest pad's position, whatever
    /// its time (after skipped data).
    rebase: bool,
    /// The next block goes where the offset puts it, with no jump (after a
    /// seek, where the pads' positions mean nothing).
    resync: bool,
}

impl Timeline {
    /// Output time, in ns, of a block at absolute time `abs` (ns) on a pad
    /// at `position`, while the pad furthest on is at `newest`. When the
    /// timeline moves, the jump is returned: every pad is then DISCONT.
    pub fn place(
        &mut self,
        abs: i128,
        position: u64,
        newest: u64,
        max_gap: u64,
    ) -> (u64, Option<Jump>) {
        let offset = *self.offset.get_or_insert(-abs);
        let out = abs + offset;
        if std::mem::take(&mut self.resync) {
            return (u64::try_from(out).unwrap_or(0), None);
        }
        let (position, newest) = (i128::from(position), i128::from(newest));
        let (target, jump) = if std::mem::take(&mut self.rebase) && out != newest {
            let jump = if out < newest {
                Jump::Back((newest - out) as u64)
            } else {
                Jump::Forward((out - newest) as u64)
            };
            (newest, jump)
        } else if out + i128::from(DISCONT_TOLERANCE) < position {
            (position, Jump::Back((position - out) as u64))
        } else if out > newest + i128::from(max_gap) {
            (newest, Jump::Forward((out - newest) as u64))
        } else {
            return (u64::try_from(out).unwrap_or(0), None);
        };
        self.offset = Some(offset + target - out);
        (target as u64, Some(jump))
    }

    /// Starts again: the next block is at 0.
    pub fn reset(&mut self) {
        *self = Timeline::default();
    }

    /// After a seek: output time stays the stream's own, and the next block
    /// sets where the pads are.
    pub fn resync(&mut self) {
        self.resync = true;
        self.rebase = false;
    }

    pub fn resyncing(&self) -> bool {
        self.resync
    }

    /// Data was skipped: the next block goes where the pads are, so that
    /// output time does not jump over what was dropped.
    pub fn rebase(&mut self) {
        self.rebase = true;
    }
}

/// Where a pad at `position` must be brought to when another pad's block
/// goes out at `out`, if it lags.
pub fn lag_fill(position: u64, out: u64) -> Option<u64> {
    (position + GAP_LAG < out).then(|| out - GAP_LAG)
}

/// True when a block at `out` leaves a gap after its pad's `position`.
pub fn is_gap(position: u64, out: u64) -> bool {
    out > position + DISCONT_TOLERANCE
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const MAX_GAP: u64 = 10_000 * MS;

    fn at(ms: u64) -> i128 {
        i128::from(1_700_000_000_000 + ms) * i128::from(MS)
    }

    #[test]
    fn runs_from_zero_and_on() {
        let mut t = Timeline::default();
        assert_eq!(t.place(at(0), 0, 0, MAX_GAP), (0, None));
        assert_eq!(t.place(at(64), 64 * MS, 64 * MS, MAX_GAP), (64 * MS, None));
        // A small gap stays a gap on the same timeline.
        assert_eq!(
            t.place(at(3000), 128 * MS, 128 * MS, MAX_GAP),
            (3000 * MS, None)
        );
    }

    #[test]
    fn back_and_long_jumps_move_the_timeline() {
        let mut t = Timeline::default();
        t.place(at(5000), 0, 0, MAX_GAP);
        // Time goes back 4 s: output continues where the pad is.
        let (out, jump) = t.place(at(1000), 1024 * MS, 1024 * MS, MAX_GAP);
        assert_eq!((out, jump), (1024 * MS, Some(Jump::Back(5024 * MS))));
        assert_eq!(t.place(at(1064), 0, 0, MAX_GAP).0, 1088 * MS);
        // A day later: output continues where the furthest pad is.
        let (out, jump) = t.place(at(86_400_000), 1152 * MS, 1152 * MS, MAX_GAP);
        assert_eq!(out, 1152 * MS);
        assert!(matches!(jump, Some(Jump::Forward(_))));
        t.reset();
        assert_eq!(t.place(at(7), 0, 0, MAX_GAP), (0, None));
    }

    #[test]
    fn after_a_skip_output_continues_where_the_pads_are() {
        let mut t = Timeline::default();
        t.place(at(0), 0, 0, MAX_GAP);
        t.rebase();
        // 4 s of stream were dropped; output goes on at the pads' 1 s.
        let (out, jump) = t.place(at(5000), 1000 * MS, 1000 * MS, MAX_GAP);
        assert_eq!((out, jump), (1000 * MS, Some(Jump::Forward(4000 * MS))));
        assert_eq!(t.place(at(5064), 0, 0, MAX_GAP).0, 1064 * MS);
    }

    #[test]
    fn after_a_seek_output_time_is_the_stream_time() {
        let mut t = Timeline::default();
        t.place(at(0), 0, 0, MAX_GAP);
        t.place(at(64), 64 * MS, 64 * MS, MAX_GAP);
        t.resync();
        assert!(t.resyncing());
        // Far ahead and behind the pads: no jump, the stream's own time.
        assert_eq!(t.place(at(60_000), 0, 0, MAX_GAP), (60_000 * MS, None));
        assert!(!t.resyncing());
        t.resync();
        assert_eq!(
            t.place(at(2000), 60_000 * MS, 60_000 * MS, MAX_GAP),
            (2000 * MS, None)
        );
    }

    #[test]
    fn lags_and_gaps() {
        assert_eq!(lag_fill(0, 400 * MS), None);
        assert_eq!(lag_fill(0, 1000 * MS), Some(600 * MS));
        assert!(!is_gap(1000 * MS, 1200 * MS));
        assert!(is_gap(1000 * MS, 1201 * MS));
    }
}
