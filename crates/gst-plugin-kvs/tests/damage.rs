// SPDX-License-Identifier: MPL-2.0
//! Damaged streams, as people keep them: a saved GetMedia response that broke
//! off mid-chunk followed by the next response's chunks, garbage inserted
//! into a fragment, or a range of it deleted. Only the damaged fragment may
//! be lost: every intact one comes out exactly, whatever the cut point.

mod common;

use common::{Rng, speaker};
use kvs_local_server::synth::{Call, Layout, Side};

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The chunk stops at a byte; the next chunk follows.
    Cut,
    /// Random bytes inserted inside the chunk.
    Garbage,
    /// A range of the chunk deleted.
    Deleted,
}

/// The call's chunks with chunk `hit` damaged; the damage is inside it.
fn damaged(call: &Call, hit: usize, damage: Damage, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..call.fragments as usize {
        let mut chunk = call.fragment(i as u64).to_bytes();
        if i == hit {
            let len = chunk.len() as u64;
            let at = 1 + rng.below(len - 1) as usize;
            match damage {
                Damage::Cut => chunk.truncate(at),
                Damage::Garbage => {
                    let n = 1 + rng.below(300) as usize;
                    let junk: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                    chunk.splice(at..at, junk);
                }
                Damage::Deleted => {
                    let end = (at + 1 + rng.below(300) as usize).min(chunk.len());
                    chunk.drain(at..end);
                }
            }
        }
        out.extend(chunk);
    }
    out
}

/// How many fragments other than `hit` came out exactly: each of their
/// blocks once, at its producer time, with its bytes, and the fragment
/// reported.
fn intact_out(call: &Call, run: &common::Run, hit: usize) -> u64 {
    let block_bytes = (call.block_ms * u64::from(call.rate) / 1000 * 2) as usize;
    let mut good = 0;
    for f in (0..call.fragments).filter(|&f| f as usize != hit) {
        let reported = run.fragments().iter().any(|s| {
            s.get::<&str>("fragment-number").ok() == Some(call.fragment_number(f).as_str())
        });
        let exact = [Side::Caller, Side::Agent].iter().all(|&side| {
            let pad = speaker(run, side.track_name());
            let pcm = call.pcm(side);
            (0..call.blocks_per_fragment).all(|b| {
                let block = f * call.blocks_per_fragment + b;
                let unix = gst::ClockTime::from_mseconds(call.start_ms + block * call.block_ms);
                let at = block as usize * block_bytes;
                let expected = &pcm[at..at + block_bytes];
                let mut same_time = pad.buffers.iter().filter(|x| x.unix == Some(unix));
                same_time.next().is_some_and(|x| x.data == expected) && same_time.next().is_none()
            })
        });
        good += u64::from(reported && exact);
    }
    good
}

#[test]
fn only_the_damaged_fragment_is_lost() {
    let mut rng = Rng(0x5EED_0001);
    let (mut files, mut intact, mut recovered) = (0, 0, 0);
    for damage in [Damage::Cut, Damage::Garbage, Damage::Deleted] {
        for n in 0..30 {
            let call = Call {
                fragments: 8,
                layout: if n % 3 == 2 {
                    Layout::TagsFirst
                } else {
                    Layout::Real
                },
                ..Call::default()
            };
            let hit = rng.below(call.fragments - 1) as usize;
            let data = damaged(&call, hit, damage, &mut rng);
            let mut sizes = Rng(rng.below(1 << 30) + 1);
            let run = common::demux_with(&data, || 1 + sizes.below(5000) as usize, &[]);
            assert!(
                run.eos && run.errors.is_empty(),
                "{damage:?} {n}: {:?}",
                run.errors
            );
            let good = intact_out(&call, &run, hit);
            let label = format!("{damage:?} #{n}: fragment {hit} of {}", call.fragments);
            assert_eq!(good, call.fragments - 1, "{label}: intact fragments out");
            files += 1;
            intact += call.fragments - 1;
            recovered += good;
        }
    }
    eprintln!("{files} damaged files: {recovered} of {intact} intact fragments came out exactly");
}

#[test]
fn a_cut_at_every_byte_of_a_fragment_loses_only_that_fragment() {
    // Every cut point: block headers, size fields, Tags, the Cluster header.
    let call = Call {
        fragments: 3,
        blocks_per_fragment: 2,
        ..Call::default()
    };
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| call.fragment(i).to_bytes()).collect();
    for at in 1..chunks[1].len() {
        let data = [&chunks[0][..], &chunks[1][..at], &chunks[2][..]].concat();
        let run = common::demux_with(&data, || usize::MAX, &[]);
        assert_eq!(intact_out(&call, &run, 1), 2, "cut at byte {at}");
    }
}
