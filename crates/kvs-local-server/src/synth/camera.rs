// SPDX-License-Identifier: MPL-2.0
//! KVS-shaped camera streams for tests and benchmarks: frames from GStreamer
//! encoders (`x264enc`, `x265enc`, `vp8enc`, `vp9enc`, and `voaacenc` for an
//! optional AAC track), cut into one fragment per keyframe as the KVS
//! producer SDK does, with the KVS tags around each Cluster.

use std::sync::{Arc, Mutex};

use gst::prelude::*;

use kvs_mkv::kvs;
use kvs_mkv::writer::{BlockSpec, Chunk, TrackSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Vp8,
    Vp9,
}

impl Codec {
    pub fn codec_id(self) -> &'static str {
        match self {
            Codec::H264 => "V_MPEG4/ISO/AVC",
            Codec::H265 => "V_MPEGH/ISO/HEVC",
            Codec::Vp8 => "V_VP8",
            Codec::Vp9 => "V_VP9",
        }
    }

    /// The encoder element, to check that it is installed.
    pub fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "x264enc",
            Codec::H265 => "x265enc",
            Codec::Vp8 => "vp8enc",
            Codec::Vp9 => "vp9enc",
        }
    }

    /// The decoder chain a test puts after the demuxer's pad.
    pub fn decoder(self) -> &'static str {
        match self {
            Codec::H264 => "h264parse ! avdec_h264 max-threads=1",
            Codec::H265 => "h265parse ! avdec_h265 max-threads=1",
            Codec::Vp8 => "vp8dec threads=1",
            Codec::Vp9 => "vp9dec threads=1",
        }
    }

    /// Encoder settings: a keyframe every `key` frames, `bframes` B-frames
    /// (H.264 only; the others get none).
    fn encode(self, key: u32, bframes: u32) -> String {
        let tune = if bframes == 0 { "tune=zerolatency" } else { "" };
        match self {
            Codec::H264 => format!(
                "x264enc key-int-max={key} bframes={bframes} speed-preset=ultrafast {tune} \
                 bitrate=1000 ! video/x-h264,stream-format=avc,alignment=au"
            ),
            Codec::H265 => format!(
                "x265enc key-int-max={key} speed-preset=ultrafast tune=zerolatency bitrate=1000 \
                 ! h265parse ! video/x-h265,stream-format=hvc1,alignment=au"
            ),
            Codec::Vp8 => format!(
                "vp8enc keyframe-max-dist={key} deadline=1 target-bitrate=1000000 threads=1"
            ),
            Codec::Vp9 => format!(
                "vp9enc keyframe-max-dist={key} deadline=1 cpu-used=8 target-bitrate=1000000 \
                 threads=1"
            ),
        }
    }
}

/// A camera's stream.
#[derive(Debug, Clone)]
pub struct Camera {
    pub codec: Codec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Frames per fragment (the keyframe interval).
    pub fragment_frames: u32,
    pub fragments: u32,
    /// With an AAC track (48 kHz mono, from voaacenc).
    pub audio: bool,
    /// H.264 B-frames between references: frames then come out of
    /// presentation order.
    pub bframes: u32,
    /// Producer time of the first frame, in epoch milliseconds.
    pub start_ms: u64,
    /// Index of the first fragment in the stream (its fragment number).
    pub first_fragment: u64,
    /// Encode this many fragments at most and repeat them, retimed, for
    /// the rest (long demo and benchmark streams).
    pub encoded_fragments: u32,
}

impl Default for Camera {
    fn default() -> Self {
        Camera {
            codec: Codec::H264,
            width: 640,
            height: 360,
            fps: 25,
            fragment_frames: 50,
            fragments: 3,
            audio: false,
            bframes: 0,
            start_ms: 1_700_000_000_000,
            first_fragment: 0,
            encoded_fragments: u32::MAX,
        }
    }
}

/// One encoded frame (or AAC packet) and its time from the start, in ms.
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Vec<u8>,
    pub key: bool,
    pub ms: u64,
}

/// What the encoders gave.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    pub video_private: Vec<u8>,
    pub video: Vec<Frame>,
    pub audio_private: Vec<u8>,
    pub audio: Vec<Frame>,
}

type Sink = Arc<Mutex<(Vec<Frame>, Vec<u8>)>>;

/// Collects what reaches fakesink `name`, and its codec_data.
fn collect(pipeline: &gst::Bin, name: &str) -> Sink {
    let out: Sink = Default::default();
    let sink = pipeline.by_name(name).unwrap();
    let o = out.clone();
    sink.connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().unwrap();
        let pad = args[2].get::<gst::Pad>().unwrap();
        let mut o = o.lock().unwrap();
        if o.1.is_empty() {
            let data = pad.current_caps().and_then(|c| {
                let s = c.structure(0)?;
                s.get::<gst::Buffer>("codec_data").ok()
            });
            if let Some(d) = data {
                o.1 = d.map_readable().unwrap().to_vec();
            }
        }
        o.0.push(Frame {
            data: buffer.map_readable().unwrap().to_vec(),
            key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            ms: buffer.pts().map_or(0, |p| p.mseconds()),
        });
        None
    });
    out
}

impl Camera {
    /// Frames in the stream.
    pub fn frames(&self) -> u32 {
        self.fragments * self.fragment_frames
    }

    fn encoded_frames(&self) -> u32 {
        self.fragments.min(self.encoded_fragments) * self.fragment_frames
    }

    pub fn frame_ms(&self) -> u64 {
        1000 / u64::from(self.fps)
    }

    pub fn fragment_ms(&self) -> u64 {
        u64::from(self.fragment_frames) * self.frame_ms()
    }

    /// Runs the encoders. Fails when one is not installed.
    pub fn encode(&self) -> Result<Encoded, String> {
        let mut desc = format!(
            "videotestsrc num-buffers={n} pattern=ball ! \
             video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 ! {enc} ! \
             fakesink name=video signal-handoffs=true sync=false",
            n = self.encoded_frames(),
            w = self.width,
            h = self.height,
            fps = self.fps,
            enc = self.codec.encode(self.fragment_frames, self.bframes),
        );
        if self.audio {
            let seconds = u64::from(self.encoded_frames()) * self.frame_ms() / 1000;
            desc += &format!(
                " audiotestsrc num-buffers={} samplesperbuffer=1024 ! \
                 audio/x-raw,rate=48000,channels=1 ! voaacenc ! \
                 audio/mpeg,stream-format=raw ! fakesink name=audio signal-handoffs=true sync=false",
                seconds * 48000 / 1024
            );
        }
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("cannot build the encoding pipeline: {e}"))?
            .downcast::<gst::Bin>()
            .unwrap();
        let video = collect(&pipeline, "video");
        let audio = self.audio.then(|| collect(&pipeline, "audio"));
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the encoders: {e}"))?;
        let bus = pipeline.bus().unwrap();
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(300),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        if let Some(gst::MessageView::Error(e)) = msg.as_ref().map(|m| m.view()) {
            return Err(format!("encoding failed: {}", e.error()));
        }
        // Times from each encoder's first output (x264enc starts at 1000 h).
        let take = |s: Sink| {
            let (mut frames, private) = std::mem::take(&mut *s.lock().unwrap());
            let first = frames.iter().map(|f| f.ms).min().unwrap_or(0);
            frames.iter_mut().for_each(|f| f.ms -= first);
            (frames, private)
        };
        let (video, video_private) = take(video);
        let (audio, audio_private) = audio.map(take).unwrap_or_default();
        Ok(Encoded {
            video_private,
            video,
            audio_private,
            audio,
        })
    }

    pub fn fragment_number(&self, index: u64) -> String {
        let index = self.first_fragment + index;
        format!("91343852333181432397633741200000{:015}", index * 3 + 11)
    }

    /// The blocks of each encoded fragment (a new one at each keyframe),
    /// each with its place in the fragment: frames in decode order, each
    /// AAC packet after the frame of its time.
    fn gops(&self, enc: &Encoded) -> Vec<Vec<(u64, BlockSpec)>> {
        let mut starts: Vec<usize> = (0..enc.video.len()).filter(|&i| enc.video[i].key).collect();
        starts.push(enc.video.len());
        starts
            .windows(2)
            .map(|w| {
                let start = enc.video[w[0]].ms;
                let end = enc.video.get(w[1]).map_or(u64::MAX, |f| f.ms);
                // In decode order: with B-frames, times go back and forth.
                let video = enc.video[w[0]..w[1]].iter().enumerate().map(|(i, f)| {
                    let rel = f.ms as i64 - start as i64;
                    (
                        i as u64,
                        BlockSpec::frame(1, rel as i16, f.data.clone(), f.key),
                    )
                });
                // Each AAC packet after the frame of its time.
                let frame_ms = self.frame_ms();
                let audio = enc
                    .audio
                    .iter()
                    .filter(|a| a.ms >= start && a.ms < end)
                    .map(|a| {
                        let rel = a.ms - start;
                        let order = rel / frame_ms;
                        (order, BlockSpec::simple(2, rel as i16, a.data.clone()))
                    });
                let mut blocks: Vec<_> = video.chain(audio).collect();
                blocks.sort_by_key(|(order, b)| (*order, b.track));
                blocks
            })
            .collect()
    }

    fn tracks(&self, enc: &Encoded) -> Vec<TrackSpec> {
        let frame_ns = 1_000_000_000 / u64::from(self.fps);
        let mut tracks = vec![TrackSpec::video(
            1,
            self.codec.codec_id(),
            enc.video_private.clone(),
            (u64::from(self.width), u64::from(self.height)),
            Some(frame_ns),
        )];
        if !enc.audio.is_empty() {
            let mut aac = TrackSpec::audio(2, "audio", "A_AAC", 48000.0, 1, 16);
            aac.codec_private = enc.audio_private.clone();
            if let Some(a) = &mut aac.audio {
                a.bit_depth = None;
            }
            tracks.push(aac);
        }
        tracks
    }

    /// The stream's fragments: the encoded ones, repeated and retimed up to
    /// `fragments` when fewer were encoded.
    pub fn fragments(&self, enc: &Encoded) -> Vec<Chunk> {
        let gops = self.gops(enc);
        let tracks = self.tracks(enc);
        let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        let count = match self.encoded_fragments < self.fragments && !gops.is_empty() {
            true => self.fragments as usize,
            false => gops.len(),
        };
        (0..count)
            .map(|index| {
                let producer = self.start_ms + index as u64 * self.fragment_ms();
                let number = self.fragment_number(index as u64);
                let blocks = &gops[index % gops.len()];
                Chunk {
                    doc_type: None,
                    timestamp_scale: Some(1_000_000),
                    producer: None,
                    tracks: tracks.clone(),
                    tags_before: vec![vec![
                        (kvs::FRAGMENT_NUMBER.into(), number.clone()),
                        (kvs::SERVER_TIMESTAMP.into(), seconds(producer + 120)),
                        (kvs::PRODUCER_TIMESTAMP.into(), seconds(producer)),
                    ]],
                    cluster_timecode: producer,
                    known_size_cluster: false,
                    cluster_position: true,
                    blocks: blocks.iter().map(|(_, b)| b.clone()).collect(),
                    tags_after: vec![vec![
                        (kvs::MILLIS_BEHIND_NOW.into(), "300".into()),
                        (kvs::CONTINUATION_TOKEN.into(), number),
                    ]],
                }
            })
            .collect()
    }

    /// The whole stream as one GetMedia byte stream.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let enc = self.encode()?;
        let mut out = Vec::new();
        for f in self.fragments(&enc) {
            f.write(&mut out);
        }
        Ok(out)
    }
}
