// SPDX-License-Identifier: MPL-2.0
//! kvsaudiodemux on the shared captures in ../shared/kvs-captures: real
//! GetMedia responses and Connect-shaped fixtures. Skipped, with a note,
//! where that folder is absent.

mod common;

use std::cmp::Ordering;

use kvs_local_server::synth::{AGENT, CALLER};
use kvs_mkv::kvs::compare_fragment_numbers;

fn fragment_numbers(run: &common::Run) -> Vec<String> {
    run.fragments()
        .iter()
        .filter_map(|s| s.get::<&str>("fragment-number").ok().map(String::from))
        .collect()
}

fn block_total(run: &common::Run) -> u64 {
    run.fragments()
        .iter()
        .map(|s| {
            let blocks = s.get::<gst::Structure>("blocks").unwrap();
            blocks
                .iter()
                .map(|(_, v)| v.get::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn real_getmedia_captures_parse_to_the_end() {
    let Some(dir) = common::captures() else {
        return;
    };
    // (file, complete chunks, blocks in complete chunks, truncated)
    let cases = [
        ("output_get_media.mkv", 5, Some(300), false),
        (
            "kinesis_video_renderer_example_output.mkv",
            8,
            Some(444),
            false,
        ),
        ("output_get_media_sparse_fragments.mkv", 3, Some(180), false),
        ("output-get-media-equal-timecode.mkv", 1, None, true),
        (
            "output-get-media-non-increasing-timecode.mkv",
            11,
            None,
            true,
        ),
        ("test_mixed_tags.mkv", 10, Some(100), false),
        ("empty-mkv-with-tags.mkv", 1, Some(0), false),
    ];
    for (file, chunks, blocks, truncated) in cases {
        let data = std::fs::read(dir.join("getmedia").join(file)).unwrap();
        for size in [4096, 997] {
            let run = common::demux_with(&data, || size, &[]);
            assert!(run.pads.is_empty(), "{file}: video only, so no audio pad");
            assert_eq!(
                run.fragments().len(),
                chunks,
                "{file}: one kvs-fragment per complete chunk"
            );
            if let Some(blocks) = blocks {
                assert_eq!(block_total(&run), blocks, "{file}");
            }
            let numbers = fragment_numbers(&run);
            assert_eq!(numbers.len(), chunks, "{file}");
            for n in &numbers {
                assert!(
                    n.len() == 47 && n.bytes().all(|b| b.is_ascii_digit()),
                    "{file}: {n}"
                );
            }
            for w in numbers.windows(2) {
                assert_eq!(
                    compare_fragment_numbers(&w[0], &w[1]),
                    Ordering::Less,
                    "{file}"
                );
            }
            assert_eq!(run.errors.len(), 1, "{file}: {:?}", run.errors);
            assert!(
                run.errors[0].starts_with("No audio track in stream"),
                "{file}"
            );
            let ended_inside = run
                .warnings
                .iter()
                .any(|w| w.contains("ended inside fragment"));
            assert_eq!(ended_inside, truncated, "{file}: {:?}", run.warnings);
        }
    }
}

fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn connect_shaped_fixtures() {
    let Some(dir) = common::captures() else {
        return;
    };
    let dir = dir.join("connect-shaped");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("fixtures.json")).unwrap()).unwrap();
    let fixtures = index.as_object().unwrap();
    assert!(fixtures.len() >= 19);
    for (name, fixture) in fixtures {
        let data = std::fs::read(dir.join(format!("{name}.mkv"))).unwrap();
        let run = common::demux_with(&data, || 61, &[]);
        assert!(run.eos, "{name}: {:?}", run.errors);
        assert!(run.warnings.is_empty(), "{name}: {:?}", run.warnings);
        let fragments = fixture["fragments"].as_u64().unwrap() as usize;
        let messages = run.fragments();
        assert_eq!(messages.len(), fragments, "{name}");
        assert_eq!(
            block_total(&run),
            fixture["simple_blocks"].as_u64().unwrap(),
            "{name}"
        );

        // Fragment numbers, where the fragment carries one.
        let numbers = json_strings(&fixture["fragment_numbers"]);
        for (i, m) in messages.iter().enumerate() {
            if let Ok(n) = m.get::<&str>("fragment-number") {
                // fixtures.json shortens long numbers to "...001".
                match numbers[i].strip_prefix("...") {
                    Some(tail) => assert!(n.ends_with(tail), "{name} fragment {i}: {n}"),
                    None => assert_eq!(n, numbers[i], "{name} fragment {i}"),
                }
            }
        }

        // Contacts: a tagless fragment belongs to the contact before it.
        let mut contacts: Vec<String> = json_strings(&fixture["contact_ids"]);
        contacts.resize(fragments, String::new());
        let mut current = String::new();
        let mut expected = Vec::new();
        let mut changes = 0;
        for c in contacts {
            if !c.is_empty() {
                changes += usize::from(!current.is_empty() && current != c);
                current = c;
            }
            expected.push(current.clone());
        }
        let got: Vec<String> = messages
            .iter()
            .map(|m| m.get::<&str>("contact-id").unwrap_or("").to_string())
            .collect();
        assert_eq!(got, expected, "{name}");
        let changed = run
            .messages
            .iter()
            .filter(|s| s.name() == "kvs-contact-changed")
            .count();
        assert_eq!(changed, changes, "{name}");

        // Tracks by name.
        let titles: Vec<String> = run.pads.values().filter_map(|p| p.title()).collect();
        assert!(!titles.is_empty(), "{name}");
        for t in &titles {
            assert!(t == CALLER || t == AGENT, "{name}: {t}");
        }
        let expected_first = match name.as_str() {
            "track_order_swapped" => Some(AGENT),
            "connect_real_shape" => Some(CALLER),
            _ => None,
        };
        if let Some(first) = expected_first {
            assert_eq!(run.pad("audio_0").title().as_deref(), Some(first), "{name}");
            let raw = run.pad("audio_0").caps[0].to_string();
            assert!(
                raw.contains("S16LE") && raw.contains("rate=(int)8000"),
                "{name}: {raw}"
            );
        }
    }
}

#[test]
fn false_magic_in_pcm_stays_data() {
    let Some(dir) = common::captures() else {
        return;
    };
    let data = std::fs::read(dir.join("connect-shaped/false_ebml_magic_in_pcm.mkv")).unwrap();
    let run = common::demux(&data);
    let pcm = run.pad("audio_0").pcm();
    assert!(
        pcm.windows(4).any(|w| w == [0x1A, 0x45, 0xDF, 0xA3]),
        "the magic stays in the payload"
    );
    assert!(run.warnings.is_empty());
}

#[test]
fn scaled_timestamps_and_negative_relative_times() {
    let Some(dir) = common::captures() else {
        return;
    };
    let data = std::fs::read(dir.join("connect-shaped/scaled_timestamps.mkv")).unwrap();
    let run = common::demux(&data);
    // TimestampScale 100000 ns and block times -20, 0, +20 around 1000: 2 ms apart.
    let pts: Vec<u64> = run
        .pad("audio_0")
        .buffers
        .iter()
        .filter(|b| !b.gap)
        .map(|b| b.pts.unwrap().nseconds())
        .collect();
    assert_eq!(pts, [0, 2_000_000, 4_000_000]);
}
