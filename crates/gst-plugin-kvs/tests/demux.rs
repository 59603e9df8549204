// SPDX-License-Identifier: MPL-2.0
//! kvsaudiodemux on generated KVS streams, through real pipelines.

mod common;

use common::{Rng, assert_speakers, demux, demux_with, each_layout_and_feeding, speaker};
use gst::prelude::*;
use kvs_local_server::synth::{AGENT, CALLER, Call, Layout, Side};
use kvs_mkv::writer::{BlockSpec, Chunk, Lacing, TrackSpec};

fn ms(v: u64) -> gst::ClockTime {
    gst::ClockTime::from_mseconds(v)
}

fn l16_caps(rate: u32) -> gst::Caps {
    format!("audio/x-raw,format=S16LE,layout=interleaved,rate={rate},channels=1")
        .parse()
        .unwrap()
}

#[test]
fn connect_call_pcm_is_bit_exact_per_track() {
    let call = Call::of_seconds(3);
    each_layout_and_feeding(&call, &[], |call, run, label| {
        assert_speakers(run, call, label);
        assert_eq!(run.pads.len(), 2, "{label}");
        assert_eq!(run.pad("audio_0").title().as_deref(), Some(CALLER));
        assert_eq!(run.pad("audio_1").title().as_deref(), Some(AGENT));
        for pad in run.pads.values() {
            // PCM from the first sample: no AAC caps, and no renegotiation.
            assert_eq!(pad.caps, vec![l16_caps(8000)], "{label}");
            assert!(pad.eos, "{label}");
            assert_eq!(pad.segments, 1, "{label}: one segment for the whole stream");
        }
        assert!(run.warnings.is_empty(), "{label}: {:?}", run.warnings);
    });
}

#[test]
fn timestamps_run_on_from_zero_across_fragments() {
    let call = Call::of_seconds(3);
    each_layout_and_feeding(&call, &[], |call, run, label| {
        let bufs = &speaker(run, CALLER).buffers;
        assert_eq!(bufs.len() as u64, call.fragments * call.blocks_per_fragment);
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(b.pts, Some(ms(64 * i as u64)), "{label}: buffer {i}");
            assert_eq!(b.duration, Some(ms(64)));
            assert_eq!(b.discont, i == 0, "{label}: buffer {i}");
            assert_eq!(
                b.unix,
                Some(ms(call.start_ms + 64 * i as u64)),
                "{label}: absolute producer time"
            );
        }
    });
}

#[test]
fn split_invariant_over_chunkings() {
    for layout in [Layout::Real, Layout::TagsFirst] {
        let call = Call {
            layout,
            ..Call::of_seconds(3)
        };
        let data = call.bytes();
        let reference = demux(&data).summary();
        for size in [1usize, 7, 1000, 65536] {
            assert_eq!(
                demux_with(&data, || size, &[]).summary(),
                reference,
                "{layout:?}: chunks of {size}"
            );
        }
        let mut rng = Rng(42);
        for _ in 0..3 {
            let run = demux_with(&data, || rng.below(3000) as usize + 1, &[]);
            assert_eq!(run.summary(), reference, "{layout:?}");
        }
    }
}

/// Each fragment's tag lists on a pad, by fragment number, in order.
fn tags_by_fragment(pad: &common::PadLog) -> Vec<(String, Vec<gst::TagList>)> {
    let mut out: Vec<(String, Vec<gst::TagList>)> = Vec::new();
    for t in &pad.tags {
        let number = t
            .get::<gstkvs::tags::FragmentNumber>()
            .unwrap()
            .get()
            .to_string();
        match out.last_mut() {
            Some((n, lists)) if *n == number => lists.push(t.clone()),
            _ => out.push((number, vec![t.clone()])),
        }
    }
    out
}

fn comments(t: &gst::TagList) -> Vec<String> {
    t.iter_tag::<gst::tags::ExtendedComment>()
        .map(|c| c.get().to_string())
        .collect()
}

#[test]
fn tags_carry_each_fragment_own_values_in_constant_size() {
    let call = Call::of_seconds(12);
    each_layout_and_feeding(&call, &[], |call, run, label| {
        let frags = tags_by_fragment(speaker(run, AGENT));
        assert_eq!(frags.len() as u64, call.fragments, "{label}");
        let mut sizes = Vec::new();
        for (i, (number, lists)) in frags.iter().enumerate() {
            assert_eq!(*number, call.fragment_number(i as u64), "{label}");
            // One list before the audio; real Connect's trailing tags bring
            // one more, after it.
            assert!(!lists.is_empty() && lists.len() <= 2, "{label}: {lists:?}");
            let last = lists.last().unwrap();
            sizes.push(last.n_tags());
            assert_eq!(last.scope(), gst::TagScope::Stream);
            assert_eq!(
                last.get::<gstkvs::tags::ContactId>().unwrap().get(),
                call.contact_id,
                "{label}"
            );
            let producer = last.get::<gstkvs::tags::ProducerTimestamp>().unwrap().get();
            assert_eq!(producer, (call.start_ms + 1024 * i as u64) * 1_000_000);
            let server = last.get::<gstkvs::tags::ServerTimestamp>().unwrap().get();
            assert_eq!(server, producer + 450_000_000);
            let comments = comments(last);
            for expected in [
                "MimeType=audio/L16;rate=8000;channels=1;",
                "AUDIO_FROM_CUSTOMER=1",
                "AUDIO_TO_CUSTOMER=2",
                "Events=[]",
            ] {
                assert!(
                    comments.contains(&expected.to_string()),
                    "{label}: {comments:?}"
                );
            }
            assert!(comments.iter().any(|c| c.starts_with("InstanceId=")));
            for t in lists.iter().filter(|_| i > 0) {
                let token = t.get::<gstkvs::tags::ContinuationToken>().unwrap();
                assert_eq!(token.get(), call.continuation_token(i as u64 - 1));
                assert_eq!(
                    t.get::<gstkvs::tags::MillisBehindNow>().unwrap().get(),
                    1250
                );
            }
        }
        // The first fragment has no previous continuation token or lag.
        assert!(
            sizes[1..].iter().all(|&n| n == sizes[1]),
            "{label}: {sizes:?}"
        );
    });
}

#[test]
fn one_message_per_fragment_with_its_own_tags() {
    let call = Call::of_seconds(4);
    each_layout_and_feeding(&call, &[], |call, run, label| {
        let frags = run.fragments();
        assert_eq!(frags.len() as u64, call.fragments, "{label}");
        for (i, s) in frags.iter().enumerate() {
            let i = i as u64;
            assert_eq!(s.get::<u64>("index").unwrap(), i);
            assert_eq!(
                s.get::<&str>("fragment-number").unwrap(),
                call.fragment_number(i)
            );
            assert_eq!(
                s.get::<&str>("continuation-token").unwrap(),
                call.continuation_token(i)
            );
            assert_eq!(s.get::<u64>("millis-behind-now").unwrap(), 1250);
            assert_eq!(s.get::<&str>("contact-id").unwrap(), call.contact_id);
            assert_eq!(s.get::<&str>("mime-type").unwrap(), call.mime_type);
            let tags = s.get::<gst::Structure>("tags").unwrap();
            assert_eq!(tags.get::<&str>("MimeType").unwrap(), call.mime_type);
            assert_eq!(tags.get::<&str>("Events").unwrap(), "[]");
            assert_eq!(tags.get::<&str>(CALLER).unwrap(), "1", "{label}");
            assert!(tags.has_field("InstanceId"));
            assert_eq!(
                s.get::<u64>("producer-timestamp").unwrap(),
                (call.start_ms + 1024 * i) * 1_000_000
            );
            let blocks = s.get::<gst::Structure>("blocks").unwrap();
            assert_eq!(blocks.get::<u64>("track-1").unwrap(), 16);
            assert_eq!(blocks.get::<u64>("track-2").unwrap(), 16);
        }
    });
}

#[test]
fn swapped_track_order_keeps_names() {
    let call = Call {
        fragments: 2,
        swapped: true,
        ..Call::default()
    };
    each_layout_and_feeding(&call, &[], |call, run, label| {
        assert_speakers(run, call, label);
        // audio_0 is track 1, which here is the agent.
        assert_eq!(run.pad("audio_0").title().as_deref(), Some(AGENT));
        assert_eq!(run.pad("audio_1").title().as_deref(), Some(CALLER));
    });
}

#[test]
fn track_order_change_mid_stream_keeps_each_pad_on_its_speaker() {
    for layout in [Layout::Real, Layout::TagsFirst] {
        let first = Call {
            fragments: 2,
            layout,
            ..Call::default()
        };
        let second = Call {
            fragments: 2,
            swapped: true,
            start_ms: first.start_ms + 2048,
            layout,
            ..Call::default()
        };
        let mut data = first.bytes();
        for i in 0..2 {
            // Continue the sample sequence so the expected PCM is the same call.
            let mut f = second.fragment(i);
            for b in &mut f.blocks {
                let side = if b.track == 1 {
                    Side::Agent
                } else {
                    Side::Caller
                };
                let block = (2 + i) * 16 + u64::from(b.relative as u16) / 64;
                b.frames[0] = (block * 512..(block + 1) * 512)
                    .flat_map(|n| kvs_local_server::synth::sample(side, n).to_le_bytes())
                    .collect();
            }
            f.write(&mut data);
        }
        let whole = Call {
            fragments: 4,
            ..Call::default()
        };
        for size in [usize::MAX, 1] {
            let run = demux_with(&data, || size, &[]);
            let label = format!("{layout:?}, {size}-byte buffers");
            assert_eq!(run.pads.len(), 2, "{label}");
            assert_speakers(&run, &whole, &label);
            assert_eq!(run.pad("audio_0").pcm(), whole.pcm(Side::Caller), "{label}");
        }
    }
}

#[test]
fn silent_side_is_filled_with_silence() {
    let call = Call {
        fragments: 6,
        silence: vec![(Side::Agent, 1024..4096)],
        ..Call::default()
    };
    each_layout_and_feeding(&call, &[], |call, run, label| {
        assert_speakers(run, call, label);
        let agent = speaker(run, AGENT);
        assert_eq!(agent.pcm_with_gaps(), call.pcm_with_silence(Side::Agent));
        let resumed = agent
            .buffers
            .iter()
            .find(|b| b.pts == Some(ms(4096)))
            .unwrap();
        assert!(resumed.discont && !resumed.gap, "{label}");
        // Filled while the caller went on, not all at once when the agent came back.
        let first_gap = agent.buffers.iter().position(|b| b.gap).unwrap();
        let caller = &speaker(run, CALLER).buffers;
        assert!(first_gap < caller.len() / 2, "{label}");
    });
}

#[test]
fn silent_coded_side_gets_gap_events() {
    let call = Call {
        fragments: 6,
        silence: vec![(Side::Agent, 1024..4096)],
        ..Call::default()
    };
    each_layout_and_feeding(&call, &[("connect-pcm", "never")], |call, run, label| {
        let agent = speaker(run, AGENT);
        assert!(
            agent.caps[0].to_string().starts_with("audio/mpeg"),
            "{label}"
        );
        assert_eq!(agent.pcm(), call.pcm(Side::Agent), "{label}");
        assert!(agent.buffers.iter().all(|b| !b.gap));
        let covered: u64 = agent.gaps.iter().map(|(_, d)| d.nseconds()).sum();
        assert!(
            covered >= ms(2500).nseconds(),
            "{label}: gaps cover {covered} ns"
        );
        // AAC blocks carry no duration, so the gap starts at the last block's start.
        assert_eq!(agent.gaps[0].0, ms(960), "{label}");
    });
}

#[test]
fn long_jump_continues_the_timeline() {
    for layout in [Layout::Real, Layout::TagsFirst] {
        let a = Call {
            fragments: 2,
            layout,
            ..Call::default()
        };
        let b = Call {
            fragments: 2,
            start_ms: a.start_ms + 5 * 86_400_000,
            ..a.clone()
        };
        let mut data = a.bytes();
        data.extend(b.bytes());
        let run = demux(&data);
        let bufs = &run.pad("audio_0").buffers;
        assert!(bufs.iter().all(|b| !b.gap));
        assert_eq!(bufs[32].pts, Some(ms(2048)), "{layout:?}");
        assert!(bufs[32].discont);
        assert_eq!(bufs[32].unix, Some(ms(b.start_ms)));
        let short = Call {
            fragments: 1,
            start_ms: a.start_ms + 5000,
            ..a.clone()
        };
        let mut data = a.bytes();
        data.extend(short.bytes());
        let run = demux(&data);
        let bufs = &run.pad("audio_0").buffers;
        let first = bufs.iter().position(|b| b.gap).unwrap();
        assert_eq!(bufs[first].pts, Some(ms(2048)), "{layout:?}");
        let resumed = bufs
            .iter()
            .find(|b| !b.gap && b.pts >= Some(ms(2048)))
            .unwrap();
        assert_eq!(resumed.pts, Some(ms(5000)));
        assert!(resumed.discont);
    }
}

#[test]
fn audiomixer_and_interleave_do_not_stall_on_a_silent_side() {
    common::init();
    for layout in [Layout::Real, Layout::TagsFirst] {
        let call = Call {
            fragments: 5,
            silence: vec![(Side::Agent, 1024..4096)],
            layout,
            ..Call::default()
        };
        let dir = tempdir();
        let path = dir.join("call.mkv");
        std::fs::write(&path, call.bytes()).unwrap();
        for mixer in ["interleave", "audiomixer"] {
            let out = dir.join(format!("{mixer}.wav"));
            let desc = format!(
                "filesrc location={} ! kvsaudiodemux name=d {mixer} name=m ! audioconvert ! wavenc ! filesink location={} \
                 d.audio_0 ! queue ! m. d.audio_1 ! queue ! m.",
                path.display(),
                out.display()
            );
            run_launch(&desc);
            let data = common::wav_data(&std::fs::read(&out).unwrap());
            if mixer == "interleave" {
                // Stereo S16: caller left, agent right with zeros where it was silent.
                let (left, right) = common::deinterleave(&data);
                assert_eq!(left, call.pcm(Side::Caller), "{layout:?}");
                assert_eq!(right, call.pcm_with_silence(Side::Agent), "{layout:?}");
            } else {
                assert_eq!(data.len(), 5 * 8192 * 2, "{mixer}, {layout:?}");
            }
        }
    }
}

pub fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kvs-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a gst-launch style pipeline to EOS; panics on an error.
pub fn run_launch(desc: &str) -> Vec<gst::Message> {
    common::init();
    let pipeline = gst::parse::launch(desc).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut messages = Vec::new();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(30))
            .unwrap_or_else(|| panic!("{desc}: no EOS in 30 s"));
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{desc}: {} ({:?})", e.error(), e.debug()),
            _ => messages.push(msg.clone()),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    messages
}

/// A reused stream: contact-a for two fragments, then contact-b for two.
fn reused_stream() -> Call {
    Call {
        fragments: 4,
        contact_id: "contact-a".into(),
        next_contact: Some((2, "contact-b".into())),
        ..Call::default()
    }
}

#[test]
fn contact_change_is_reported_where_the_new_contact_starts() {
    each_layout_and_feeding(&reused_stream(), &[], |call, run, label| {
        assert_speakers(run, call, label);
        let changes = run.named("kvs-contact-changed");
        assert_eq!(changes.len(), 1, "{label}");
        let change = changes[0];
        assert_eq!(
            change.get::<&str>("previous-contact-id").unwrap(),
            "contact-a"
        );
        assert_eq!(change.get::<&str>("contact-id").unwrap(), "contact-b");
        assert_eq!(
            change.get::<&str>("fragment-number").unwrap(),
            call.fragment_number(2)
        );
        // The new contact's first sample, whether or not its ContactId came
        // before its audio.
        assert_eq!(
            change.get::<gst::ClockTime>("timestamp").unwrap(),
            ms(2048),
            "{label}"
        );
        let contacts: Vec<String> = tags_by_fragment(speaker(run, CALLER))
            .iter()
            .map(|(_, lists)| {
                let last = lists.last().unwrap();
                last.get::<gstkvs::tags::ContactId>().unwrap().get().into()
            })
            .collect();
        assert_eq!(
            contacts,
            ["contact-a", "contact-a", "contact-b", "contact-b"],
            "{label}"
        );
        let contacts: Vec<&str> = run
            .fragments()
            .iter()
            .map(|s| s.get::<&str>("contact-id").unwrap())
            .collect();
        assert_eq!(
            contacts,
            ["contact-a", "contact-a", "contact-b", "contact-b"]
        );
    });
}

#[test]
fn stop_at_contact_end_outputs_exactly_the_first_contact() {
    let props = [("stop-at-contact-end", "true")];
    each_layout_and_feeding(&reused_stream(), &props, |call, run, label| {
        let first = Call {
            fragments: 2,
            ..call.clone()
        };
        assert_speakers(run, &first, label);
        assert_eq!(run.fragments().len(), 2, "{label}");
        assert_eq!(run.named("kvs-contact-changed").len(), 1, "{label}");
        for pad in run.pads.values() {
            assert!(pad.eos && pad.buffers.iter().all(|b| !b.gap), "{label}");
        }
    });
}

fn frag(tracks: Vec<TrackSpec>, cluster_timecode: u64, blocks: Vec<BlockSpec>) -> Chunk {
    Chunk {
        timestamp_scale: Some(1_000_000),
        tracks,
        tags_before: vec![vec![(
            "AWS_KINESISVIDEO_FRAGMENT_NUMBER".into(),
            cluster_timecode.to_string(),
        )]],
        cluster_timecode,
        blocks,
        ..Chunk::default()
    }
}

#[test]
fn plain_pcm_codecs_video_skipped_and_lacing() {
    let video = TrackSpec {
        uid: None,
        number: 1,
        track_type: 1,
        name: "video".into(),
        codec_id: "V_MPEG4/ISO/AVC".into(),
        codec_private: vec![1, 2, 3],
        audio: None,
        video: None,
        default_duration: None,
    };
    let tracks = vec![
        video,
        TrackSpec::audio(2, "stereo", "A_PCM/INT/LIT", 48000.0, 2, 16),
        TrackSpec::audio(3, "float", "A_PCM/FLOAT/IEEE", 16000.0, 1, 32),
        TrackSpec::audio(5, "big", "A_PCM/INT/BIG", 8000.0, 1, 24),
    ];
    let laced = BlockSpec {
        track: 2,
        relative: 0,
        frames: vec![vec![1; 400], vec![2; 800], vec![3; 4]],
        lacing: Lacing::Xiph,
        group: None,
        delta: false,
    };
    let grouped = BlockSpec {
        track: 3,
        relative: 0,
        frames: vec![vec![4; 64], vec![5; 64]],
        lacing: Lacing::Ebml,
        group: Some(Some(2)),
        delta: false,
    };
    let fixed = BlockSpec {
        track: 5,
        relative: 0,
        frames: vec![vec![6; 30], vec![7; 30]],
        lacing: Lacing::Fixed,
        group: None,
        delta: false,
    };
    let blocks = vec![
        BlockSpec::simple(1, 0, vec![9; 5000]),
        laced,
        grouped,
        fixed,
    ];
    let run = demux(&frag(tracks, 5000, blocks).to_bytes());
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(
        run.pads.keys().collect::<Vec<_>>(),
        ["audio_0", "audio_1", "audio_2"]
    );
    let stereo = run.pad("audio_0");
    assert!(
        stereo.caps[0].to_string().contains("S16LE")
            && stereo.caps[0].to_string().contains("channels=(int)2")
    );
    let sizes: Vec<usize> = stereo.buffers.iter().map(|b| b.data.len()).collect();
    assert_eq!(sizes, [400, 800, 4]);
    // 400 bytes = 100 stereo frames at 48 kHz.
    let pts: Vec<_> = stereo
        .buffers
        .iter()
        .map(|b| b.pts.unwrap().nseconds())
        .collect();
    assert_eq!(pts, [0, 2_083_333, 6_249_999]);
    assert!(run.pad("audio_1").caps[0].to_string().contains("F32LE"));
    assert_eq!(
        run.pad("audio_1").pcm(),
        [vec![4u8; 64], vec![5; 64]].concat()
    );
    assert!(run.pad("audio_2").caps[0].to_string().contains("S24BE"));
    assert_eq!(
        run.pad("audio_2").pcm(),
        [vec![6u8; 30], vec![7; 30]].concat()
    );
}

#[test]
fn unsupported_codec_is_skipped_with_a_warning() {
    let tracks = vec![
        TrackSpec::audio(1, "vorbis", "A_VORBIS", 48000.0, 2, 16),
        TrackSpec::audio(2, "pcm", "A_PCM/INT/LIT", 8000.0, 1, 16),
    ];
    let blocks = vec![
        BlockSpec::simple(1, 0, vec![1; 10]),
        BlockSpec::simple(2, 0, vec![2; 16]),
    ];
    let run = demux(&frag(tracks, 0, blocks).to_bytes());
    assert_eq!(run.pads.len(), 1);
    assert_eq!(run.pad("audio_0").pcm(), vec![2; 16]);
    assert!(
        run.warnings.iter().any(|w| w.contains("A_VORBIS")),
        "{:?}",
        run.warnings
    );
}

/// The call's fragments as `edit` changes them.
fn edited(call: &Call, edit: impl Fn(&mut Chunk)) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..call.fragments {
        let mut f = call.fragment(i);
        edit(&mut f);
        f.write(&mut out);
    }
    out
}

/// Names the tracks as Connect does not: only a MimeType tells PCM from AAC.
fn rename(f: &mut Chunk) {
    for t in &mut f.tracks {
        t.name = format!("track-{}", t.number);
    }
}

fn without_mime_type(f: &mut Chunk) {
    for tags in f.tags_before.iter_mut().chain(&mut f.tags_after) {
        tags.retain(|(name, _)| name != "MimeType");
    }
}

#[test]
fn other_a_aac_tracks_wait_for_the_mime_type() {
    let call = Call::of_seconds(3);
    let check = |call: &Call, run: &common::Run, label: &str, pcm: bool| {
        assert!(
            run.eos && run.errors.is_empty(),
            "{label}: {:?}",
            run.errors
        );
        for (pad, side) in [("audio_0", Side::Caller), ("audio_1", Side::Agent)] {
            let pad = run.pad(pad);
            assert_eq!(pad.caps.len(), 1, "{label}: {:?}", pad.caps);
            assert_eq!(
                pad.caps[0] == l16_caps(8000),
                pcm,
                "{label}: {:?}",
                pad.caps
            );
            assert_eq!(pad.pcm(), call.pcm(side), "{label}");
        }
        assert!(run.warnings.is_empty(), "{label}: {:?}", run.warnings);
    };
    // Held until the fragment's MimeType (after its Cluster in the real layout).
    common::each_way(
        &call,
        |c| edited(c, rename),
        &[],
        |c, run, label| check(c, run, label, true),
    );
    // GetMediaForFragmentList has no trailing KVS tags: held until the chunk ends.
    let archive = |c: &Call| {
        let mut out = Vec::new();
        for i in 0..c.fragments {
            let mut f = c.archive_fragment(i);
            rename(&mut f);
            f.write(&mut out);
        }
        out
    };
    common::each_way(&call, archive, &[], |c, run, label| {
        check(c, run, label, true)
    });
    // No MimeType at all: the CodecID holds from the first fragment's end on.
    let aac = |c: &Call| {
        edited(c, |f| {
            rename(f);
            without_mime_type(f);
        })
    };
    common::each_way(&call, aac, &[], |c, run, label| check(c, run, label, false));
}

#[test]
fn mime_type_that_disagrees_changes_caps_from_the_next_fragment() {
    let call = Call {
        fragments: 3,
        rate: 16000,
        mime_type: "audio/L16;rate=16000;channels=1;".into(),
        ..Call::default()
    };
    each_layout_and_feeding(&call, &[], |call, run, label| {
        // Every byte once, whatever caps it went out with.
        assert_speakers(run, call, label);
        let caps = &speaker(run, CALLER).caps;
        if call.layout == Layout::Real {
            // The first fragment was read as 8000 Hz before its MimeType came.
            assert_eq!(*caps, vec![l16_caps(8000), l16_caps(16000)], "{label}");
            let warned = run.warnings.iter().filter(|w| {
                w.contains("MimeType says \"audio/L16;rate=16000;channels=1;\"")
                    && w.contains(&call.fragment_number(0))
            });
            assert_eq!(warned.count(), 2, "{label}: {:?}", run.warnings);
            let bufs = &speaker(run, CALLER).buffers;
            let second = bufs
                .iter()
                .position(|b| b.duration == Some(ms(64)))
                .unwrap();
            assert_eq!(second, 16, "{label}: the next fragment is at 16 kHz");
            // Buffers keep their blocks' timestamps.
            assert_eq!(bufs[second].pts, Some(ms(1024)), "{label}");
        } else {
            assert_eq!(*caps, vec![l16_caps(16000)], "{label}");
            assert!(run.warnings.is_empty(), "{label}: {:?}", run.warnings);
        }
    });
}

#[test]
fn connect_pcm_property() {
    let call = Call {
        fragments: 1,
        ..Call::default()
    };
    let caps = |data: &[u8], mode: &str| {
        let run = demux_with(data, || 4096, &[("connect-pcm", mode)]);
        assert_eq!(run.pad("audio_0").pcm(), call.pcm(Side::Caller), "{mode}");
        run.pad("audio_0").caps[0].to_string()
    };
    assert!(caps(&call.bytes(), "never").starts_with("audio/mpeg"));
    // Without a MimeType tag, auto reads Connect's track names as PCM and
    // other A_AAC tracks as AAC; always reads PCM.
    let bare = edited(&call, without_mime_type);
    assert!(caps(&bare, "auto").contains("S16LE"));
    let other = edited(&call, |f| {
        rename(f);
        without_mime_type(f);
    });
    assert!(caps(&other, "auto").starts_with("audio/mpeg"));
    assert!(caps(&other, "always").contains("S16LE"));
}

#[test]
fn in_band_error_reaches_the_bus() {
    let call = Call {
        fragments: 2,
        ..Call::default()
    };
    let mut data = call.fragment(0).to_bytes();
    let mut f = call.fragment(1);
    f.tags_after = vec![vec![
        (
            "AWS_KINESISVIDEO_ERROR_CODE".into(),
            "KMS_KEY_DISABLED".into(),
        ),
        ("AWS_KINESISVIDEO_ERROR_ID".into(), "4501".into()),
    ]];
    f.write(&mut data);
    let run = demux(&data);
    let e = &run.errors[0];
    assert!(
        e.contains("KMS_KEY_DISABLED") && e.contains("4501") && e.contains("KMS key is disabled"),
        "{e}"
    );
    assert!(e.contains(&call.fragment_number(1)), "{e}");

    let mut f = call.fragment(0);
    f.tags_after = vec![vec![
        (
            "AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE".into(),
            "MISSING_FRAGMENT".into(),
        ),
        (
            "AWS_KINESISVIDEO_EXCEPTION_MESSAGE".into(),
            "Fragment 123 was not found".into(),
        ),
    ]];
    let run = demux(&f.to_bytes());
    assert!(
        run.errors[0].contains("MISSING_FRAGMENT")
            && run.errors[0].contains("Fragment 123 was not found")
    );
}

#[test]
fn damaged_fragment_is_skipped_and_the_rest_plays() {
    let call = Call {
        fragments: 3,
        ..Call::default()
    };
    let good = call.bytes();
    let f0 = call.fragment(0).to_bytes();
    let f1 = call.fragment(1).to_bytes();
    // Break a block size inside fragment 1 so that it claims 100 MiB.
    let mut data = f0.clone();
    let mut broken = f1.clone();
    let at = broken
        .windows(3)
        .position(|w| w == [0xA3, 0x44, 0x04])
        .expect("a 1028-byte SimpleBlock");
    broken[at + 1..at + 3].copy_from_slice(&[0x16, 0x40]);
    broken.splice(at + 1..at + 1, [0x00u8, 0x00]);
    broken[at + 1] = 0x16;
    broken[at + 2] = 0x40;
    broken[at + 3] = 0x00;
    broken[at + 4] = 0x00;
    data.extend_from_slice(&broken);
    data.extend_from_slice(&good[f0.len() + f1.len()..]);
    let run = demux(&data);
    assert!(run.eos);
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    let offset = f0.len() + at;
    assert!(
        run.warnings[0].contains(&format!("at byte {offset}")),
        "{}",
        run.warnings[0]
    );
    assert!(
        run.warnings[0].contains("over the 16777216 byte limit"),
        "{}",
        run.warnings[0]
    );
    let numbers: Vec<&str> = run
        .fragments()
        .iter()
        .map(|s| s.get::<&str>("fragment-number").unwrap())
        .collect();
    assert_eq!(numbers, [call.fragment_number(0), call.fragment_number(2)]);
    // Fragment 1 is lost from the broken block on; fragments 0 and 2 are whole.
    let pcm = run.pad("audio_0").pcm();
    let expected = call.pcm(Side::Caller);
    assert_eq!(&pcm[..16 * 1024], &expected[..16 * 1024]);
    assert_eq!(&pcm[pcm.len() - 16 * 1024..], &expected[2 * 16 * 1024..]);
    let resumed = run
        .pad("audio_0")
        .buffers
        .iter()
        .find(|b| b.pts == Some(ms(2048)))
        .unwrap();
    assert!(resumed.discont);
}

#[test]
fn truncated_last_fragment_delivers_complete_blocks_then_eos() {
    let call = Call {
        fragments: 2,
        ..Call::default()
    };
    let data = call.bytes();
    let cut = data.len() - 3000;
    let run = demux(&data[..cut]);
    assert!(run.eos);
    assert!(
        run.warnings
            .iter()
            .any(|w| w.contains("ended inside fragment")),
        "{:?}",
        run.warnings
    );
    assert_eq!(run.fragments().len(), 1);
    let pcm = run.pad("audio_0").pcm();
    assert!(pcm.len() > 16 * 1024 && pcm.len() < 32 * 1024);
    assert_eq!(pcm[..], call.pcm(Side::Caller)[..pcm.len()]);
}

#[test]
fn no_audio_track_is_an_error_after_the_fragments() {
    let video = TrackSpec {
        uid: None,
        number: 1,
        track_type: 1,
        name: "v".into(),
        codec_id: "V_MPEG4/ISO/AVC".into(),
        codec_private: vec![],
        audio: None,
        video: None,
        default_duration: None,
    };
    let data: Vec<u8> = (0..3)
        .flat_map(|i| {
            frag(
                vec![video.clone()],
                i * 1000,
                vec![BlockSpec::simple(1, 0, vec![0; 100])],
            )
            .to_bytes()
        })
        .collect();
    let run = demux(&data);
    assert!(run.pads.is_empty());
    assert_eq!(run.fragments().len(), 3);
    assert_eq!(run.errors.len(), 1);
    assert!(
        run.errors[0].starts_with("No audio track in stream"),
        "{}",
        run.errors[0]
    );
}

/// A file that is not Matroska says so, with its first bytes; a stream
/// with no bytes at all says that no fragment arrived.
#[test]
fn other_files_and_empty_streams_say_what_they_are() {
    let mut wav = b"RIFF\x24\x10\x00\x00WAVEfmt ".to_vec();
    wav.resize(4096, 0);
    let message = |run: &common::Run| -> Vec<String> {
        run.errors
            .iter()
            .map(|e| e.split(" | ").next().unwrap().to_string())
            .collect()
    };
    let run = demux(&wav);
    assert!(run.pads.is_empty());
    assert_eq!(
        message(&run),
        ["Not a Matroska/WebM stream (it starts with 52 49 46 46 24 10 00 00 \"RIFF$...\")"]
    );
    let mut mp4 = b"\x00\x00\x00\x20ftypisom".to_vec();
    mp4.resize(4096, 0);
    let run = demux(&mp4);
    assert_eq!(
        message(&run),
        ["Not a Matroska/WebM stream (it starts with 00 00 00 20 66 74 79 70 \"....ftyp\")"]
    );
    let run = demux(&[]);
    assert_eq!(
        message(&run),
        ["No fragment arrived: the stream had no data after the start"]
    );
}

#[test]
fn garbage_and_hostile_input_never_panic() {
    let call = Call {
        fragments: 2,
        ..Call::default()
    };
    let data = call.bytes();
    let mut rng = Rng(7);
    for round in 0..20 {
        let mut bad = data.clone();
        for _ in 0..(1 + round % 5) {
            let i = rng.below(bad.len() as u64) as usize;
            bad[i] = rng.below(256) as u8;
        }
        let run = demux_with(&bad, || 777, &[]);
        assert!(run.eos || !run.errors.is_empty());
    }
    let noise: Vec<u8> = (0..50_000).map(|_| rng.below(256) as u8).collect();
    let run = demux(&noise);
    assert!(run.pads.is_empty());
    assert!(!run.warnings.is_empty());
}

/// A Harness feeding kvsaudiodemux, with an appsink linked to `audio_0` as
/// soon as it appears (the Harness cannot link a `audio_%u` sometimes pad).
fn harness() -> (gst_check::Harness, gst_app::AppSink) {
    common::init();
    let mut h = gst_check::Harness::with_padnames("kvsaudiodemux", Some("sink"), None);
    h.set_src_caps_str("video/x-matroska");
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .wait_on_eos(false)
        .build();
    sink.set_state(gst::State::Playing).unwrap();
    let sink_pad = sink.static_pad("sink").unwrap();
    h.element().unwrap().connect_pad_added(move |_, pad| {
        if pad.name() == "audio_0" {
            pad.link(&sink_pad).unwrap();
        }
    });
    (h, sink)
}

fn pull_all(sink: &gst_app::AppSink) -> Vec<gst::Buffer> {
    std::iter::from_fn(|| sink.try_pull_sample(gst::ClockTime::ZERO))
        .map(|s| s.buffer_owned().unwrap())
        .collect()
}

/// The fragment with only its first track.
fn first_track_only(mut f: Chunk) -> Vec<u8> {
    f.tracks.truncate(1);
    f.blocks.retain(|b| b.track == 1);
    f.to_bytes()
}

#[test]
fn harness_one_byte_at_a_time() {
    common::init();
    let call = Call {
        fragments: 1,
        blocks_per_fragment: 4,
        ..Call::default()
    };
    let (mut h, sink) = harness();
    for byte in call.bytes() {
        h.push(gst::Buffer::from_slice([byte])).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let mut pcm = Vec::new();
    let mut pts = Vec::new();
    for buf in pull_all(&sink) {
        pts.push(buf.pts().unwrap().mseconds());
        pcm.extend_from_slice(&buf.map_readable().unwrap());
    }
    sink.set_state(gst::State::Null).unwrap();
    assert_eq!(pcm, call.pcm(Side::Caller));
    assert_eq!(pts, [0, 64, 128, 192]);
}

#[test]
fn connect_names_go_out_before_the_trailing_tags_other_names_wait() {
    let call = Call {
        fragments: 1,
        ..Call::default()
    };
    for connect_names in [true, false] {
        let mut f = call.fragment(0);
        if !connect_names {
            rename(&mut f);
        }
        let data = f.to_bytes();
        // Everything up to the end of the Cluster: no MimeType, no ContactId yet.
        let cut = Chunk {
            tags_after: Vec::new(),
            ..f.clone()
        }
        .to_bytes()
        .len();
        let (mut h, sink) = harness();
        h.push(gst::Buffer::from_slice(data[..cut].to_vec()))
            .unwrap();
        let early = pull_all(&sink).len();
        h.push(gst::Buffer::from_slice(data[cut..].to_vec()))
            .unwrap();
        h.push_event(gst::event::Eos::new());
        let late = pull_all(&sink);
        sink.set_state(gst::State::Null).unwrap();
        let expected = if connect_names { 16 } else { 0 };
        assert_eq!(early, expected, "connect names: {connect_names}");
        assert_eq!(early + late.len(), 16);
    }
}

#[test]
fn replayed_fragment_after_reconnect_is_not_duplicated() {
    // What a resumed GetMedia sends: part of fragment 1, then (DISCONT) fragment 1 again.
    let call = Call {
        fragments: 3,
        ..Call::default()
    };
    let f0 = first_track_only(call.fragment(0));
    let f1 = first_track_only(call.fragment(1));
    let f2 = first_track_only(call.fragment(2));
    let (mut h, sink) = harness();
    h.push(gst::Buffer::from_slice(f0.clone())).unwrap();
    h.push(gst::Buffer::from_slice(f1[..f1.len() / 2].to_vec()))
        .unwrap();
    let mut again = gst::Buffer::from_slice([f1.clone(), f2].concat());
    again
        .get_mut()
        .unwrap()
        .set_flags(gst::BufferFlags::DISCONT);
    h.push(again).unwrap();
    h.push_event(gst::event::Eos::new());
    let mut pcm = Vec::new();
    let mut last = None;
    for buf in pull_all(&sink) {
        assert!(last < buf.pts(), "timestamps go forward");
        last = buf.pts();
        pcm.extend_from_slice(&buf.map_readable().unwrap());
    }
    sink.set_state(gst::State::Null).unwrap();
    assert_eq!(pcm, call.pcm(Side::Caller));
}

/// One input buffer holding the whole call: the pads must take turns, or
/// the first pad's queue fills while interleave waits on the second.
#[test]
fn one_huge_input_buffer_does_not_stall_interleave() {
    common::init();
    let call = Call::demo(12);
    let pipeline = gst::parse::launch(
        "appsrc name=src caps=video/x-matroska format=bytes ! kvsaudiodemux name=d \
         interleave name=i ! audioconvert ! appsink name=out sync=false \
         d.audio_0 ! queue ! i.sink_0 d.audio_1 ! queue ! i.sink_1",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let out = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    src.push_buffer(gst::Buffer::from_slice(call.bytes()))
        .unwrap();
    src.end_of_stream().unwrap();
    let mut data = Vec::new();
    while let Some(sample) = out.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        data.extend_from_slice(&sample.buffer().unwrap().map_readable().unwrap());
    }
    assert!(out.is_eos(), "stalled after {} bytes", data.len());
    pipeline.set_state(gst::State::Null).unwrap();
    let (left, right) = common::deinterleave(&data);
    assert!(left == call.pcm(Side::Caller));
    assert!(right == call.pcm_with_silence(Side::Agent));
}

#[test]
fn max_latency_skips_stale_fragments_and_says_so() {
    // KVS says each fragment's lag at its end. The first fragment has no
    // figure before it and its producer time is years old: skipped by the
    // local clock; then 9000 - 1024, 8000 - 1024 and 3000 - 1024 ms behind
    // are skipped, and 2000 - 1024 ms is kept.
    let call = Call {
        behind_ms: vec![9000, 8000, 3000, 2000, 1000],
        ..Call::of_seconds(8)
    };
    each_layout_and_feeding(&call, &[("max-latency", "1500")], |call, run, label| {
        let skipped = run.named("kvs-skipped");
        assert_eq!(skipped.len(), 1, "{label}");
        let s = skipped[0];
        assert_eq!(s.get::<u64>("fragments").unwrap(), 4, "{label}");
        assert_eq!(
            s.get::<gst::ClockTime>("duration").unwrap(),
            ms(4 * 1024),
            "{label}"
        );
        assert_eq!(
            s.get::<&str>("first-fragment-number").unwrap(),
            call.fragment_number(0)
        );
        assert_eq!(
            s.get::<&str>("resumed-fragment-number").unwrap(),
            call.fragment_number(4)
        );
        assert!(s.get::<u64>("behind-ms").unwrap() > 1500, "{label}");
        // Output starts at fragment 4, at time 0, every sample of it on.
        let bytes_per_fragment = (call.blocks_per_fragment * 512 * 2) as usize;
        for side in [Side::Caller, Side::Agent] {
            let pad = speaker(run, side.track_name());
            assert_eq!(pad.buffers[0].pts, Some(ms(0)), "{label}");
            assert!(pad.buffers[0].discont);
            assert_eq!(
                pad.pcm(),
                call.pcm(side)[4 * bytes_per_fragment..],
                "{label}: {side:?}"
            );
        }
        // Every fragment is still reported.
        assert_eq!(run.fragments().len() as u64, call.fragments, "{label}");
    });
    // Off by default: nothing is skipped.
    let run = demux(&call.bytes());
    assert!(run.named("kvs-skipped").is_empty());
    assert_eq!(speaker(&run, CALLER).pcm(), call.pcm(Side::Caller));
}

/// merge-raw-audio joins the blocks of each input chunk that follow one
/// another: the same bytes and times as a buffer per block, in fewer
/// buffers, each with its first block's time, producer time and flags. A
/// silent stretch (made-up GAP buffers) is never joined to real audio.
#[test]
fn merge_raw_audio_joins_blocks_that_follow_one_another() {
    let call = Call {
        silence: vec![(Side::Agent, 1500..3100)],
        ..Call::of_seconds(6)
    };
    each_layout_and_feeding(&call, &[], |call, plain, label| {
        let data = call.bytes();
        let whole = label.ends_with("whole");
        let size = if whole { usize::MAX } else { 1 };
        let merged = demux_with(&data, || size, &[("merge-raw-audio", "true")]);
        assert_speakers(&merged, call, label);
        for (name, pad) in &plain.pads {
            let (blocks, joined) = (&pad.buffers, &merged.pad(name).buffers);
            let bytes =
                |b: &[common::Buf]| b.iter().flat_map(|b| b.data.clone()).collect::<Vec<_>>();
            assert_eq!(bytes(blocks), bytes(joined), "{label} {name}");
            if whole {
                assert!(
                    joined.len() * 3 < blocks.len(),
                    "{label} {name}: {} of {}",
                    joined.len(),
                    blocks.len()
                );
                // Joined buffers reach about a second, never much more.
                let block = blocks[0].duration.unwrap();
                let longest = joined.iter().filter_map(|b| b.duration).max().unwrap();
                assert!(
                    longest > gst::ClockTime::from_mseconds(600)
                        && longest <= gst::ClockTime::SECOND + block,
                    "{label} {name}: longest buffer {longest}"
                );
            } else {
                // A byte at a time, no chunk holds two blocks.
                assert_eq!(joined.len(), blocks.len(), "{label} {name}");
            }
            let mut next = blocks.iter();
            for j in joined {
                let first = next.next().unwrap();
                assert_eq!(
                    (j.pts, j.unix, j.discont, j.gap),
                    (first.pts, first.unix, first.discont, first.gap),
                    "{label} {name}"
                );
                let (mut len, mut duration) = (first.data.len(), first.duration.unwrap());
                while len < j.data.len() {
                    let b = next.next().unwrap();
                    assert_eq!(
                        b.pts,
                        Some(first.pts.unwrap() + duration),
                        "{label} {name}: a hole joined"
                    );
                    assert!(!b.discont && b.gap == first.gap, "{label} {name}");
                    len += b.data.len();
                    duration += b.duration.unwrap();
                }
                assert_eq!(
                    (len, j.duration),
                    (j.data.len(), Some(duration)),
                    "{label} {name}"
                );
            }
            assert!(next.next().is_none(), "{label} {name}");
        }
        let agent = speaker(&merged, AGENT);
        assert!(
            agent.buffers.iter().any(|b| b.gap),
            "{label}: no silence made up"
        );
    });
}

/// A bus sync handler runs in the streaming thread: one that seeks and
/// queries the demuxer from inside its warning and element messages must
/// not deadlock, so the demuxer posts them with its lock released.
#[test]
fn a_sync_bus_handler_may_seek_and_query_the_demuxer_from_its_messages() {
    common::init();
    let call = Call {
        fragments: 4,
        ..Call::default()
    };
    // Garbage between two fragments: a warning, besides a message per fragment.
    let mut data = call.bytes();
    let second = data.len() / 2;
    let at = second
        + data[second..]
            .windows(4)
            .position(|w| w == [0x1A, 0x45, 0xDF, 0xA3])
            .unwrap();
    data.splice(
        at..at,
        [0x1F, 0x43, 0xB6, 0x75, 0xFF, 0x00, 0x01].iter().copied(),
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let pipeline = gst::parse::launch(
            "appsrc name=src caps=video/x-matroska format=bytes ! kvsaudiodemux name=d \
             d.audio_0 ! fakesink sync=false async=false d.audio_1 ! fakesink sync=false async=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let demux = pipeline.by_name("d").unwrap();
        let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (weak, count) = (demux.downgrade(), handled.clone());
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            let from_demux = msg.src().is_some_and(|s| s.name() == "d");
            let kind = matches!(
                msg.view(),
                gst::MessageView::Element(_) | gst::MessageView::Warning(_)
            );
            if let (true, true, Some(demux)) = (from_demux, kind, weak.upgrade()) {
                let mut seeking = gst::query::Seeking::new(gst::Format::Time);
                demux.query(&mut seeking);
                for pad in demux.src_pads() {
                    let seek = gst::event::Seek::new(
                        1.0,
                        gst::SeekFlags::FLUSH,
                        gst::SeekType::Set,
                        gst::ClockTime::ZERO,
                        gst::SeekType::None,
                        gst::ClockTime::NONE,
                    );
                    pad.send_event(seek);
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            gst::BusSyncReply::Pass
        });
        common::play_and_feed(&pipeline, &data, 4096);
        let bus = pipeline.bus().unwrap();
        let end = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        let _ = done_tx.send((
            end.map(|m| m.type_()),
            handled.load(std::sync::atomic::Ordering::SeqCst),
        ));
    });
    let (end, handled) = done_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the pipeline deadlocked in a bus sync handler");
    assert_eq!(end, Some(gst::MessageType::Eos));
    // A warning for the garbage, and a message for each fragment but the
    // damaged one.
    assert!(handled >= 4, "{handled} messages handled");
}
