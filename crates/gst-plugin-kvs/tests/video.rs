// SPDX-License-Identifier: MPL-2.0
//! kvsdemux on video: the real GetMedia captures in ../shared/kvs-captures
//! (skipped, with a note, where that folder is absent), compared with
//! matroskademux on each chunk cut out alone, frame by frame and decoded
//! picture by picture.

mod common;

use kvs_local_server::synth::camera::{Camera, Codec};
use kvs_mkv::{Event, Parser};

/// The chunks of a GetMedia response, where the parser sees EBML headers.
fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let mut parser = Parser::new(1 << 24);
    parser.set_last();
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = parser.parse(&data[pos..], &mut events);
        if n == 0 {
            break;
        }
        pos += n;
    }
    let mut starts: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Header { offset, .. } => Some(*offset as usize),
            _ => None,
        })
        .collect();
    starts.push(data.len());
    starts.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// What matroskademux gives on each chunk alone, one after the other.
fn per_chunk(data: &[u8], after: &str) -> Vec<common::Out> {
    chunks(data)
        .into_iter()
        .flat_map(|c| common::pull(c, &format!("matroskademux {after}")))
        .collect()
}

const CAPTURES: [(&str, usize); 7] = [
    ("output_get_media.mkv", 300),
    ("kinesis_video_renderer_example_output.mkv", 444),
    ("output_get_media_sparse_fragments.mkv", 180),
    ("output-get-media-equal-timecode.mkv", 239),
    ("output-get-media-non-increasing-timecode.mkv", 358),
    ("test_mixed_tags.mkv", 100),
    ("empty-mkv-with-tags.mkv", 0),
];

#[test]
fn every_complete_frame_of_the_captures_comes_out_once() {
    let Some(dir) = common::captures() else {
        return;
    };
    for (file, frames) in CAPTURES {
        let data = std::fs::read(dir.join("getmedia").join(file)).unwrap();
        let expected = if frames > 0 {
            per_chunk(&data, "")
        } else {
            Vec::new()
        };
        for size in [65536, 4096, 997] {
            let run = common::run_element("kvsdemux", &data, || size, &[]);
            if frames == 0 {
                assert!(run.pads.is_empty(), "{file}: {}", run.summary());
                assert!(run.errors[0].contains("No audio or video track"), "{file}");
                continue;
            }
            assert_eq!(run.pads.keys().collect::<Vec<_>>(), ["video_0"], "{file}");
            let pad = run.pad("video_0");
            let got: Vec<&[u8]> = pad.buffers.iter().map(|b| b.data.as_slice()).collect();
            let want: Vec<&[u8]> = expected.iter().map(|b| b.data.as_slice()).collect();
            assert_eq!(got.len(), frames, "{file} fed {size} bytes at a time");
            assert!(got == want, "{file}: frames differ from matroskademux's");
            let deltas: Vec<bool> = pad.buffers.iter().map(|b| b.delta).collect();
            let want_deltas: Vec<bool> = expected.iter().map(|b| b.delta).collect();
            assert_eq!(deltas, want_deltas, "{file}: DELTA_UNIT flags");
            // One timeline: output time never goes back, even where the
            // stream's timecodes start again at 0.
            let pts: Vec<_> = pad.buffers.iter().map(|b| b.pts.unwrap()).collect();
            assert!(pts.windows(2).all(|w| w[0] <= w[1]), "{file}: {pts:?}");
            eprintln!(
                "{file}: {} frames, {} keyframes, {} fragments",
                got.len(),
                deltas.iter().filter(|d| !**d).count(),
                run.fragments().len()
            );
        }
    }
}

/// The caps of the first buffer `middle` gives on `data`.
fn first_caps(data: &[u8], middle: &str) -> gst::Caps {
    common::pull(data, middle)[0].caps.clone().unwrap()
}

#[test]
fn h264_caps_are_matroskademux_caps() {
    let Some(dir) = common::captures() else {
        return;
    };
    for (file, _) in &CAPTURES[..5] {
        let data = std::fs::read(dir.join("getmedia").join(file)).unwrap();
        let ours = first_caps(&data, "kvsdemux");
        let mut theirs = first_caps(chunks(&data)[0], "matroskademux");
        // matroskademux also reads the Colour element; kvsdemux does not.
        for field in ["colorimetry", "chroma-site"] {
            theirs
                .make_mut()
                .structure_mut(0)
                .unwrap()
                .remove_field(field);
        }
        assert_eq!(ours, theirs, "{file}");
    }
}

#[test]
fn mjpeg_dummies_come_out_unchanged() {
    let Some(dir) = common::captures() else {
        return;
    };
    let data = std::fs::read(dir.join("getmedia/test_mixed_tags.mkv")).unwrap();
    let run = common::run_element("kvsdemux", &data, || 4096, &[]);
    let pad = run.pad("video_0");
    let caps = pad.caps[0].structure(0).unwrap();
    assert_eq!(caps.name(), "image/jpeg");
    assert_eq!(caps.get::<i32>("width").unwrap(), 640);
    assert_eq!(pad.buffers.len(), 100);
    assert!(pad.buffers.iter().all(|b| b.data.len() == 100));
    // Each is the payload of its SimpleBlock, byte for byte.
    let blocks: Vec<Vec<u8>> = {
        let mut parser = Parser::new(1 << 24);
        let mut events = Vec::new();
        parser.parse(&data, &mut events);
        events
            .iter()
            .filter_map(|e| match e {
                Event::Block(b) => Some(
                    b.frames
                        .iter()
                        .map(|r| data[r].to_vec())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let got: Vec<Vec<u8>> = pad.buffers.iter().map(|b| b.data.clone()).collect();
    assert_eq!(got, blocks);
}

#[test]
fn h264_captures_decode_to_the_same_pictures_as_matroskademux() {
    let Some(dir) = common::captures() else {
        return;
    };
    if !common::have(&["avdec_h264"]) {
        return;
    }
    let decode = "! h264parse ! avdec_h264 max-threads=1";
    for (file, frames) in &CAPTURES[..5] {
        let data = std::fs::read(dir.join("getmedia").join(file)).unwrap();
        let want = per_chunk(&data, decode);
        let got = common::pull(&data, &format!("kvsdemux {decode}"));
        assert_eq!(got.len(), *frames, "{file}: decoded pictures");
        assert_eq!(want.len(), *frames, "{file}: matroskademux chunk by chunk");
        let same = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.data == b.data)
            .count();
        assert_eq!(
            same, *frames,
            "{file}: pictures identical to matroskademux's"
        );
        eprintln!("{file}: {} pictures decoded, all identical", got.len());
    }
}

/// Encodes `camera`, or says which element is missing.
fn camera_bytes(camera: &Camera) -> Option<Vec<u8>> {
    common::init();
    let decoder = camera
        .codec
        .decoder()
        .split(' ')
        .find(|t| t.contains("dec"));
    let mut needed = vec![camera.codec.encoder(), decoder.unwrap()];
    if camera.audio {
        needed.push("voaacenc");
    }
    if !common::have(&needed) {
        return None;
    }
    Some(camera.bytes().unwrap())
}

#[test]
fn generated_cameras_decode_to_the_same_pictures_as_matroskademux() {
    let cameras = [
        (Codec::H264, false),
        (Codec::H264, true),
        (Codec::H265, false),
        (Codec::Vp8, false),
        (Codec::Vp9, true),
    ];
    let b_frames = [(Codec::H264, false)];
    let cases = cameras
        .iter()
        .map(|c| (c, 0))
        .chain(b_frames.iter().map(|c| (c, 2)));
    for (&(codec, audio), bframes) in cases {
        let camera = Camera {
            codec,
            audio,
            bframes,
            width: 320,
            height: 180,
            fragment_frames: 20,
            ..Camera::default()
        };
        let Some(data) = camera_bytes(&camera) else {
            continue;
        };
        let label = format!(
            "{codec:?}{}{}",
            if audio { " + AAC" } else { "" },
            if bframes > 0 { " with B-frames" } else { "" }
        );
        let run = common::run_element("kvsdemux", &data, || 4096, &[]);
        assert!(
            run.errors.is_empty() && run.warnings.is_empty(),
            "{label}: {}",
            run.summary()
        );
        let pad = run.pad("video_0");
        let caps = pad.caps[0].structure(0).unwrap();
        assert_eq!(caps.get::<i32>("width").unwrap(), 320, "{label}");
        assert_eq!(caps.get::<i32>("height").unwrap(), 180, "{label}");
        assert_eq!(
            caps.get::<gst::Fraction>("framerate").unwrap(),
            gst::Fraction::new(25, 1),
            "{label}"
        );
        assert_eq!(pad.buffers.len() as u32, camera.frames(), "{label}");
        // In presentation order (B-frames come out of it): a frame every
        // 40 ms, each with its producer time.
        let mut frames: Vec<_> = pad.buffers.iter().collect();
        frames.sort_by_key(|b| b.pts);
        for (i, b) in frames.iter().enumerate() {
            // The encoder's keyframes are where the fragments start.
            assert_eq!(b.delta, i % 20 != 0, "{label}: frame {i}");
            assert_eq!(b.pts, Some(gst::ClockTime::from_mseconds(40 * i as u64)));
            assert_eq!(
                b.unix,
                Some(gst::ClockTime::from_mseconds(
                    camera.start_ms + 40 * i as u64
                ))
            );
        }
        let in_order = pad.buffers.windows(2).all(|w| w[0].pts < w[1].pts);
        assert_eq!(in_order, bframes == 0, "{label}: decode order");
        assert_eq!(run.fragments().len() as u32, camera.fragments, "{label}");
        if audio {
            let a = run.pad("audio_0");
            assert!(a.caps[0].to_string().starts_with("audio/mpeg"), "{label}");
            let want = common::pull(&data, "matroskademux name=m m.audio_0");
            let got: Vec<&[u8]> = a.buffers.iter().map(|b| b.data.as_slice()).collect();
            let want: Vec<&[u8]> = want.iter().map(|b| b.data.as_slice()).collect();
            assert!(!got.is_empty() && got == want, "{label}: AAC packets");
        }
        let decoder = codec.decoder();
        let got = common::pull(&data, &format!("kvsdemux name=d d.video_0 ! {decoder}"));
        let want = common::pull(
            &data,
            &format!("matroskademux name=m m.video_0 ! {decoder}"),
        );
        assert_eq!(got.len() as u32, camera.frames(), "{label}: decoded");
        assert!(
            got.iter().map(|o| &o.data).eq(want.iter().map(|o| &o.data)),
            "{label}: pictures"
        );
        eprintln!(
            "{label}: {} frames decoded, identical to matroskademux",
            got.len()
        );
    }
}

#[test]
fn a_camera_restarted_with_new_settings_renegotiates() {
    let first = Camera {
        width: 320,
        height: 180,
        fragment_frames: 10,
        fragments: 2,
        ..Camera::default()
    };
    let second = Camera {
        width: 480,
        height: 270,
        start_ms: first.start_ms + 2 * first.fragment_ms(),
        first_fragment: 2,
        ..first.clone()
    };
    let (Some(mut data), Some(more)) = (camera_bytes(&first), camera_bytes(&second)) else {
        return;
    };
    data.extend_from_slice(&more);
    let run = common::run_element("kvsdemux", &data, || 4096, &[]);
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    let pad = run.pad("video_0");
    let widths: Vec<i32> = pad
        .caps
        .iter()
        .map(|c| c.structure(0).unwrap().get("width").unwrap())
        .collect();
    assert_eq!(widths, [320, 480], "one caps event per configuration");
    assert_eq!(pad.buffers.len(), 40);
    // The decoder follows: every picture, each in its own size.
    let decoded = common::pull(&data, &format!("kvsdemux ! {}", first.codec.decoder()));
    let sizes: Vec<usize> = decoded.iter().map(|o| o.data.len()).collect();
    let (small, large) = (320 * 180 * 3 / 2, 480 * 270 * 3 / 2);
    assert_eq!(sizes, [vec![small; 20], vec![large; 20]].concat());
    let want = per_chunk(&data, &format!("! {}", first.codec.decoder()));
    assert!(
        decoded
            .iter()
            .map(|o| &o.data)
            .eq(want.iter().map(|o| &o.data))
    );
}

/// A saved camera stream cut off mid-chunk and followed by the next
/// response, or with garbage in a chunk or a range deleted: every other
/// fragment's frames come out exactly; a cut chunk gives a prefix of its
/// frames, never a part of one, and all of them decode.
#[test]
fn damaged_camera_chunks_lose_only_their_own_frames() {
    let camera = Camera {
        width: 320,
        height: 180,
        fragment_frames: 10,
        fragments: 5,
        ..Camera::default()
    };
    if !common::have(&["x264enc", "avdec_h264"]) {
        return;
    }
    let enc = camera.encode().unwrap();
    let chunks: Vec<Vec<u8>> = camera
        .fragments(&enc)
        .iter()
        .map(|f| f.to_bytes())
        .collect();
    let frames: Vec<&[u8]> = enc.video.iter().map(|f| f.data.as_slice()).collect();
    let mut rng = common::Rng(0x5EED);
    for case in 0..15 {
        let hit = 1 + case % 3;
        let mut chunk = chunks[hit].clone();
        let at = 200 + rng.below(chunk.len() as u64 - 200) as usize;
        let kind = ["cut", "garbage", "deleted"][case / 5];
        match kind {
            "cut" => chunk.truncate(at),
            "garbage" => {
                let junk: Vec<u8> = (0..1 + rng.below(300))
                    .map(|_| rng.below(256) as u8)
                    .collect();
                chunk.splice(at..at, junk);
            }
            _ => {
                let end = (at + 1 + rng.below(300) as usize).min(chunk.len());
                chunk.drain(at..end);
            }
        }
        let mut data = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            data.extend_from_slice(if i == hit { &chunk } else { c });
        }
        let label = format!("{kind} in fragment {hit} at byte {at}");
        let run = common::run_element("kvsdemux", &data, || 4096, &[]);
        let got: Vec<&[u8]> = run
            .pad("video_0")
            .buffers
            .iter()
            .map(|b| b.data.as_slice())
            .collect();
        let (before, after) = (hit * 10, (hit + 1) * 10);
        assert!(
            got.len() >= 40 && got.len() <= 50,
            "{label}: {} frames",
            got.len()
        );
        let kept = got.len() - 40;
        assert!(
            got[..before] == frames[..before],
            "{label}: the fragments before"
        );
        assert!(
            got[before + kept..] == frames[after..],
            "{label}: the fragments after"
        );
        if kind == "cut" {
            assert!(
                got[before..before + kept] == frames[before..before + kept],
                "{label}"
            );
            let pictures = common::pull(&data, "kvsdemux ! h264parse ! avdec_h264 max-threads=1");
            assert_eq!(
                pictures.len(),
                got.len(),
                "{label}: every frame out decodes"
            );
        }
    }
}
