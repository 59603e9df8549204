// SPDX-License-Identifier: MPL-2.0
//! Which pad a track keeps when a chunk brings its Tracks again. No
//! GStreamer in here.
//!
//! A track keeps the pad of the track with the same number and name, else
//! of the one with the same name: so a pad stays on its speaker even when
//! Amazon Connect swaps the track order. A track with no name matches by
//! number and name (empty) only. Each pad is kept by one track at most; the
//! pads no track keeps are gone, and tracks that keep none get new pads.

/// A track as matching sees it: its number and name.
pub type Key<'a> = (u64, &'a str);

/// For each of the `new` tracks, the index in `old` of the pad it keeps,
/// or None for a new pad.
pub fn keep(old: &[Key], new: &[Key]) -> Vec<Option<usize>> {
    let mut taken = vec![false; old.len()];
    let free = |found: Option<usize>, taken: &mut Vec<bool>| {
        let i = found?;
        (!std::mem::replace(&mut taken[i], true)).then_some(i)
    };
    new.iter()
        .map(|&(number, name)| {
            let same = |by_number: bool| {
                old.iter()
                    .enumerate()
                    .position(|(i, &(n, o))| !taken[i] && o == name && (!by_number || n == number))
            };
            let found = same(true).or_else(|| (!name.is_empty()).then(|| same(false)).flatten());
            free(found, &mut taken)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "AUDIO_FROM_CUSTOMER";
    const AGENT: &str = "AUDIO_TO_CUSTOMER";

    #[test]
    fn the_same_tracks_keep_their_pads() {
        let tracks = [(1, CALLER), (2, AGENT)];
        assert_eq!(keep(&tracks, &tracks), [Some(0), Some(1)]);
    }

    #[test]
    fn swapped_track_numbers_keep_each_speaker_on_its_pad() {
        let old = [(1, CALLER), (2, AGENT)];
        let new = [(1, AGENT), (2, CALLER)];
        assert_eq!(keep(&old, &new), [Some(1), Some(0)]);
    }

    #[test]
    fn unnamed_tracks_match_by_number_only() {
        let old = [(1, ""), (2, "")];
        assert_eq!(keep(&old, &[(2, ""), (3, "")]), [Some(1), None]);
    }

    #[test]
    fn new_and_vanished_tracks() {
        let old = [(1, CALLER)];
        // The caller keeps its pad under a new number; the agent is new.
        assert_eq!(keep(&old, &[(5, AGENT), (7, CALLER)]), [None, Some(0)]);
        // Nothing kept: every old pad is gone.
        assert_eq!(keep(&old, &[(1, AGENT)]), [None]);
        assert_eq!(keep(&[], &[(1, CALLER)]), [None]);
    }

    #[test]
    fn a_pad_is_kept_by_one_track_at_most() {
        let old = [(1, CALLER)];
        assert_eq!(keep(&old, &[(1, CALLER), (2, CALLER)]), [Some(0), None]);
        // In track order: the first track with the name takes the pad.
        assert_eq!(keep(&old, &[(3, CALLER), (1, CALLER)]), [Some(0), None]);
    }
}
