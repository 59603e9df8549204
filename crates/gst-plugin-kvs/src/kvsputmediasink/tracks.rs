// SPDX-License-Identifier: MPL-2.0
//! From a sink pad's caps to its Matroska TrackEntry, as matroskamux and
//! the KVS producer SDK write them.

use kvs_mkv::writer::{AudioSpec, TrackSpec};

/// The caps each kind of pad takes.
pub fn video_caps() -> gst::Caps {
    gst::Caps::builder_full()
        .structure(
            gst::Structure::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        )
        .structure(
            gst::Structure::builder("video/x-h265")
                .field("stream-format", gst::List::new(["hvc1", "hev1"]))
                .field("alignment", "au")
                .build(),
        )
        .build()
}

pub fn audio_caps() -> gst::Caps {
    gst::Caps::builder_full()
        .structure(
            gst::Structure::builder("audio/mpeg")
                .field("mpegversion", 4i32)
                .field("stream-format", "raw")
                .build(),
        )
        .structure(gst::Structure::new_empty("audio/x-alaw"))
        .structure(gst::Structure::new_empty("audio/x-mulaw"))
        .structure(
            gst::Structure::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("layout", "interleaved")
                .build(),
        )
        .structure(gst::Structure::new_empty("audio/x-opus"))
        .build()
}

/// A WAVEFORMATEX (no extra bytes) for A_MS/ACM.
fn waveformatex(tag: u16, rate: u32, channels: u16, bits: u16) -> Vec<u8> {
    let block_align = channels * bits.div_ceil(8);
    let mut w = Vec::with_capacity(18);
    w.extend_from_slice(&tag.to_le_bytes());
    w.extend_from_slice(&channels.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    w.extend_from_slice(&block_align.to_le_bytes());
    w.extend_from_slice(&bits.to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes());
    w
}

/// An OpusHead for `channels` at `rate`, mapping family 0.
fn opus_head(rate: u32, channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&312u16.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.push(0);
    h
}

fn codec_data(s: &gst::StructureRef) -> Vec<u8> {
    s.get::<gst::Buffer>("codec_data")
        .ok()
        .and_then(|b| b.map_readable().ok().map(|m| m.to_vec()))
        .unwrap_or_default()
}

/// The TrackEntry for `caps`: what it lacks, as an error to show.
pub fn track_for(caps: &gst::CapsRef, number: u64, name: &str) -> Result<TrackSpec, String> {
    let s = caps.structure(0).ok_or("empty caps")?;
    let int = |field: &str| s.get::<i32>(field).ok();
    let rate = int("rate").unwrap_or(0).max(0) as u32;
    let channels = int("channels").unwrap_or(1).max(1) as u32;
    let audio = |codec: &str, private: Vec<u8>, bits: Option<u64>| TrackSpec {
        number,
        uid: Some(number),
        track_type: 2,
        name: name.into(),
        codec_id: codec.into(),
        codec_private: private,
        audio: Some(AudioSpec {
            rate: f64::from(rate),
            channels: u64::from(channels),
            bit_depth: bits,
        }),
        video: None,
        default_duration: None,
    };
    let need_rate = || {
        if rate == 0 {
            Err(format!("{} caps without a rate", s.name()))
        } else {
            Ok(())
        }
    };
    match s.name().as_str() {
        "video/x-h264" | "video/x-h265" => {
            let private = codec_data(s);
            if private.is_empty() {
                return Err(format!(
                    "{} caps without codec_data: put h264parse or h265parse before the sink",
                    s.name()
                ));
            }
            let width = int("width").unwrap_or(0).max(0) as u64;
            let height = int("height").unwrap_or(0).max(0) as u64;
            let frame_ns = s
                .get::<gst::Fraction>("framerate")
                .ok()
                .filter(|f| f.numer() > 0 && f.denom() > 0)
                .map(|f| 1_000_000_000 * f.denom() as u64 / f.numer() as u64);
            let codec = if s.name() == "video/x-h264" {
                "V_MPEG4/ISO/AVC"
            } else {
                "V_MPEGH/ISO/HEVC"
            };
            let mut t = TrackSpec::video(number, codec, private, (width, height), frame_ns);
            t.name = name.into();
            Ok(t)
        }
        "audio/mpeg" => {
            let private = codec_data(s);
            if private.is_empty() {
                return Err("AAC caps without codec_data: put aacparse before the sink".into());
            }
            Ok(audio("A_AAC", private, None))
        }
        "audio/x-alaw" | "audio/x-mulaw" => {
            need_rate()?;
            let tag = if s.name() == "audio/x-alaw" { 6 } else { 7 };
            let private = waveformatex(tag, rate, channels as u16, 8);
            Ok(audio("A_MS/ACM", private, Some(8)))
        }
        "audio/x-raw" => {
            need_rate()?;
            Ok(audio("A_PCM/INT/LIT", Vec::new(), Some(16)))
        }
        "audio/x-opus" => {
            let head = s
                .get::<gst::ArrayRef>("streamheader")
                .ok()
                .and_then(|a| a.first()?.get::<gst::Buffer>().ok())
                .and_then(|b| b.map_readable().ok().map(|m| m.to_vec()))
                .filter(|h| h.starts_with(b"OpusHead"));
            let head = match head {
                Some(h) => h,
                None => {
                    if int("channel-mapping-family").unwrap_or(0) != 0 || channels > 2 {
                        return Err("Opus with more than 2 channels needs a streamheader".into());
                    }
                    opus_head(if rate == 0 { 48000 } else { rate }, channels as u8)
                }
            };
            let mut t = audio("A_OPUS", head, None);
            if let Some(a) = &mut t.audio {
                a.rate = 48000.0;
            }
            Ok(t)
        }
        other => Err(format!("{other} is not a codec kvsputmediasink puts")),
    }
}

/// The MediaType a created stream gets, from its tracks.
pub fn media_type(tracks: &[TrackSpec]) -> String {
    tracks
        .iter()
        .map(|t| match t.codec_id.as_str() {
            "V_MPEG4/ISO/AVC" => "video/h264",
            "V_MPEGH/ISO/HEVC" => "video/h265",
            "A_AAC" => "audio/aac",
            "A_OPUS" => "audio/opus",
            "A_PCM/INT/LIT" => "audio/L16",
            _ => "audio/x-g711",
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_to_tracks() {
        gst::init().unwrap();
        let pcm = gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("rate", 8000i32)
            .field("channels", 1i32)
            .build();
        let t = track_for(&pcm, 1, "AUDIO_FROM_CUSTOMER").unwrap();
        assert_eq!(t.codec_id, "A_PCM/INT/LIT");
        assert_eq!(t.audio.as_ref().unwrap().bit_depth, Some(16));
        assert_eq!(t.name, "AUDIO_FROM_CUSTOMER");
        let alaw = gst::Caps::builder("audio/x-alaw")
            .field("rate", 8000i32)
            .field("channels", 1i32)
            .build();
        let t = track_for(&alaw, 2, "a").unwrap();
        assert_eq!(t.codec_private[..2], [6, 0]);
        assert_eq!(t.codec_private.len(), 18);
        let h264 = gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .build();
        assert!(track_for(&h264, 1, "v").unwrap_err().contains("h264parse"));
        let opus = gst::Caps::builder("audio/x-opus")
            .field("rate", 48000i32)
            .field("channels", 2i32)
            .build();
        let t = track_for(&opus, 1, "o").unwrap();
        assert!(t.codec_private.starts_with(b"OpusHead"));
        assert_eq!(t.codec_private[9], 2);
        assert_eq!(media_type(&[t]), "audio/opus");
    }
}
