// SPDX-License-Identifier: MPL-2.0
//! Maps a Matroska audio track to output caps, the way matroskademux does,
//! plus the Amazon Connect rule (A_AAC label over L16 PCM).

use gst_audio::AudioFormat;

use super::ConnectPcm;
use super::fragment::{Mime, aac_reading, is_aac};
use kvs_mkv::Track;

/// How buffers of a track are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Raw samples: durations follow from the byte count. `silence` is the
    /// byte value of a silent sample.
    Raw {
        bytes_per_frame: usize,
        rate: u32,
        silence: u8,
    },
    Coded,
    /// Video frames: non-key blocks are DELTA_UNIT.
    Video,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub caps: gst::Caps,
    pub payload: Payload,
}

fn raw(format: AudioFormat, rate: u32, channels: u32) -> Result<Output, String> {
    if rate == 0 || channels == 0 || channels > 64 {
        return Err(format!("invalid raw audio: {rate} Hz, {channels} channels"));
    }
    let mut builder = gst_audio::AudioCapsBuilder::new_interleaved()
        .format(format)
        .rate(rate as i32)
        .channels(channels as i32);
    if channels > 2 {
        builder = builder.field("channel-mask", gst::Bitmask::new(0));
    }
    let info = gst_audio::AudioFormatInfo::from_format(format);
    let bytes_per_frame = (info.width() / 8) as usize * channels as usize;
    Ok(Output {
        caps: builder.build(),
        payload: Payload::Raw {
            bytes_per_frame,
            rate,
            silence: if format == AudioFormat::U8 { 0x80 } else { 0 },
        },
    })
}

fn int_format(bits: u64, big_endian: bool) -> Option<AudioFormat> {
    use AudioFormat::*;
    Some(match (bits, big_endian) {
        (8, _) => U8,
        (16, false) => S16le,
        (16, true) => S16be,
        (24, false) => S24le,
        (24, true) => S24be,
        (32, false) => S32le,
        (32, true) => S32be,
        _ => return None,
    })
}

fn track_rate(track: &Track) -> u32 {
    track
        .rate
        .filter(|r| *r >= 1.0 && *r < 1e7)
        .map_or(8000, |r| r.round() as u32)
}

fn track_channels(track: &Track) -> u32 {
    track.channels.map_or(1, |c| c.min(255) as u32)
}

/// AAC sample rate and channels from an AudioSpecificConfig.
fn aac_config(asc: &[u8]) -> Option<(u32, u32)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let v = u16::from_be_bytes([*asc.first()?, *asc.get(1)?]);
    let rate = *RATES.get(usize::from((v >> 7) & 0xF))?;
    Some((rate, u32::from((v >> 3) & 0xF)))
}

fn acm(private: &[u8]) -> Result<Output, String> {
    if private.len() < 16 {
        return Err("A_MS/ACM without a WAVEFORMATEX".into());
    }
    let u16le = |o: usize| u16::from_le_bytes([private[o], private[o + 1]]);
    let tag = u16le(0);
    let channels = u32::from(u16le(2));
    let rate = u32::from_le_bytes([private[4], private[5], private[6], private[7]]);
    let bits = u64::from(u16le(14));
    match tag {
        1 | 0xFFFE => {
            let format =
                int_format(bits, false).ok_or(format!("{bits}-bit PCM is not supported"))?;
            raw(format, rate, channels)
        }
        3 if bits == 32 => raw(AudioFormat::F32le, rate, channels),
        3 if bits == 64 => raw(AudioFormat::F64le, rate, channels),
        6 | 7 => {
            let name = if tag == 6 {
                "audio/x-alaw"
            } else {
                "audio/x-mulaw"
            };
            if rate == 0 || channels == 0 {
                return Err(format!("invalid {name}: {rate} Hz, {channels} channels"));
            }
            Ok(Output {
                caps: gst::Caps::builder(name)
                    .field("rate", rate as i32)
                    .field("channels", channels as i32)
                    .build(),
                payload: Payload::Raw {
                    bytes_per_frame: channels as usize,
                    rate,
                    silence: if tag == 6 { 0xD5 } else { 0xFF },
                },
            })
        }
        other => Err(format!(
            "WAVEFORMATEX format tag {other:#06x} is not supported"
        )),
    }
}

/// Opus caps as matroskademux makes them: the OpusHead goes into
/// `streamheader` with the track's rate as its input rate and the
/// CodecDelay as its pre-skip. The decoder drops the pre-skip through the
/// clipping meta on the first buffers (see `TrackPad::push_block`).
fn opus(track: &Track) -> Result<Output, String> {
    let private = &track.codec_private;
    if private.len() < 19 || &private[..8] != b"OpusHead" {
        return Err("A_OPUS without an OpusHead".into());
    }
    let mut head = private.clone();
    let header_rate = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    let rate = match track.rate {
        Some(_) => track_rate(track),
        None if header_rate > 0 => header_rate,
        None => 48000,
    };
    head[12..16].copy_from_slice(&rate.to_le_bytes());
    if let Some(delay) = track.codec_delay {
        let samples = (delay * 48 + 500_000) / 1_000_000;
        head[10..12].copy_from_slice(&(samples.min(u64::from(u16::MAX)) as u16).to_le_bytes());
    }
    let channels = track
        .channels
        .map_or(i32::from(head[9]), |_| track_channels(track) as i32);
    let family = i32::from(head[18]);
    let mut caps = gst::Caps::builder("audio/x-opus")
        .field("rate", rate as i32)
        .field("channels", channels)
        .field("channel-mapping-family", family);
    if family == 0 {
        caps = caps
            .field("stream-count", 1i32)
            .field("coupled-count", channels - 1);
    } else {
        let table = head
            .get(19..21 + usize::from(head[9]))
            .ok_or("short OpusHead mapping table")?;
        let mapping: Vec<i32> = table[2..].iter().map(|&c| i32::from(c)).collect();
        caps = caps
            .field("stream-count", i32::from(table[0]))
            .field("coupled-count", i32::from(table[1]))
            .field("channel-mapping", gst::Array::new(mapping));
    }
    // An empty OpusTags: the decoder wants a header pair.
    let vendor = b"gst-plugin-kvs";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    let header: Vec<gst::Buffer> = [head, tags]
        .into_iter()
        .map(|bytes| {
            let mut b = gst::Buffer::from_mut_slice(bytes);
            b.make_mut().set_flags(gst::BufferFlags::HEADER);
            b
        })
        .collect();
    caps = caps.field("streamheader", gst::Array::new(header));
    Ok(Output {
        caps: caps.build(),
        payload: Payload::Coded,
    })
}

/// Output caps for an audio track, with the reason they were chosen; `None`
/// while an A_AAC track's kind cannot be told yet (see [`aac_reading`]).
pub fn output_for(
    track: &Track,
    mode: ConnectPcm,
    mime: &Mime,
) -> Result<Option<(Output, &'static str)>, String> {
    let codec = track.codec_id.as_str();
    let bits = track.bit_depth.unwrap_or(16);
    let out = match codec {
        id if is_aac(id) => {
            let Some((pcm, reason)) = aac_reading(track, mode, mime) else {
                return Ok(None);
            };
            let out = match pcm {
                Some((rate, channels)) => raw(AudioFormat::S16le, rate, channels)?,
                None => aac(track),
            };
            return Ok(Some((out, reason)));
        }
        "A_PCM/INT/LIT" | "A_PCM/INT/BIG" => {
            let format = int_format(bits, codec.ends_with("BIG"))
                .ok_or(format!("{bits}-bit PCM is not supported"))?;
            raw(format, track_rate(track), track_channels(track))
        }
        "A_PCM/FLOAT/IEEE" => {
            let format = match bits {
                32 | 16 => AudioFormat::F32le,
                64 => AudioFormat::F64le,
                _ => return Err(format!("{bits}-bit float PCM is not supported")),
            };
            raw(format, track_rate(track), track_channels(track))
        }
        "A_MS/ACM" => acm(&track.codec_private),
        "A_OPUS" => opus(track),
        "A_MPEG/L3" => Ok(Output {
            caps: gst::Caps::builder("audio/mpeg")
                .field("mpegversion", 1i32)
                .field("layer", 3i32)
                .field("rate", track_rate(track) as i32)
                .field("channels", track_channels(track) as i32)
                .build(),
            payload: Payload::Coded,
        }),
        other => Err(format!("codec {other:?} is not supported")),
    }?;
    Ok(Some((out, "the CodecID")))
}

fn aac(track: &Track) -> Output {
    let (rate, channels) = aac_config(&track.codec_private)
        .map(|(r, c)| {
            (
                track.rate.map_or(r, |_| track_rate(track)),
                track.channels.map_or(c, |_| track_channels(track)),
            )
        })
        .unwrap_or((track_rate(track), track_channels(track)));
    let mut caps = gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .field("framed", true)
        .field("rate", rate as i32)
        .field("channels", channels as i32);
    if !track.codec_private.is_empty() {
        caps = caps.field(
            "codec_data",
            gst::Buffer::from_slice(track.codec_private.clone()),
        );
    }
    Output {
        caps: caps.build(),
        payload: Payload::Coded,
    }
}

/// Caps of the `audio_%u` pad template.
pub fn template_caps() -> gst::Caps {
    let mut caps = gst::Caps::new_empty();
    let caps_mut = caps.get_mut().unwrap();
    caps_mut.append(gst_audio::AudioCapsBuilder::new_interleaved().build());
    for name in ["audio/x-alaw", "audio/x-mulaw", "audio/x-opus"] {
        caps_mut.append(gst::Caps::new_empty_simple(name));
    }
    caps_mut.append(
        gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .build(),
    );
    caps_mut.append(
        gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
    );
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_mkv::TrackKind;

    fn track(codec: &str, private: &[u8]) -> Track {
        Track {
            number: 1,
            kind: TrackKind::Audio,
            codec_id: codec.into(),
            codec_private: private.to_vec(),
            name: String::new(),
            rate: None,
            channels: None,
            bit_depth: None,
            default_duration: None,
            codec_delay: None,
            picture: Default::default(),
        }
    }

    fn caps_str(t: &Track, mode: ConnectPcm, mime: &Mime) -> String {
        output_for(t, mode, mime)
            .unwrap()
            .unwrap()
            .0
            .caps
            .to_string()
    }

    fn l16(m: &str) -> Mime {
        Mime::Said(m.into())
    }

    #[test]
    fn connect_rule() {
        gst::init().unwrap();
        let auto = ConnectPcm::Auto;
        let mut named = track("A_AAC", &[0x11, 0x90]);
        named.name = "AUDIO_TO_CUSTOMER".into();
        let unnamed = track("A_AAC", &[0x11, 0x90]);
        // A Connect name decides at once; another name waits for a MimeType
        // or the end of a fragment without one.
        for mime in [Mime::Unknown, Mime::Absent] {
            assert!(caps_str(&named, auto, &mime).contains("rate=(int)8000, channels=(int)1"));
        }
        assert_eq!(output_for(&unnamed, auto, &Mime::Unknown), Ok(None));
        assert!(caps_str(&unnamed, auto, &Mime::Absent).starts_with("audio/mpeg"));
        // The MimeType is the authority, wherever it came from.
        let wide = l16("audio/L16;rate=16000;channels=2;");
        for t in [&named, &unnamed] {
            assert!(caps_str(t, auto, &wide).contains("rate=(int)16000, channels=(int)2"));
            assert!(caps_str(t, auto, &l16("audio/aac")).starts_with("audio/mpeg"));
            assert!(caps_str(t, ConnectPcm::Never, &wide).starts_with("audio/mpeg"));
            assert!(caps_str(t, ConnectPcm::Always, &Mime::Unknown).contains("S16LE"));
        }
    }

    #[test]
    fn codec_map() {
        gst::init().unwrap();
        let unknown = &Mime::Unknown;
        let connect = track("A_AAC", &[0x11, 0x90]);
        let expected: gst::Caps =
            "audio/x-raw,format=S16LE,layout=interleaved,rate=8000,channels=1"
                .parse()
                .unwrap();
        let said = l16("audio/L16;rate=8000;channels=1;");
        assert_eq!(
            output_for(&connect, ConnectPcm::Auto, &said)
                .unwrap()
                .unwrap()
                .0
                .caps,
            expected
        );
        let aac = caps_str(&connect, ConnectPcm::Auto, &Mime::Absent);
        assert!(aac.starts_with("audio/mpeg, mpegversion=(int)4"), "{aac}");
        assert!(aac.contains("rate=(int)48000, channels=(int)2"), "{aac}");
        assert!(caps_str(&connect, ConnectPcm::Never, &said).starts_with("audio/mpeg"));
        assert!(caps_str(&connect, ConnectPcm::Always, unknown).contains("S16LE"));

        let mut pcm = track("A_PCM/INT/BIG", &[]);
        pcm.rate = Some(16000.0);
        pcm.channels = Some(2);
        pcm.bit_depth = Some(24);
        let out = output_for(&pcm, ConnectPcm::Auto, unknown)
            .unwrap()
            .unwrap()
            .0;
        assert!(out.caps.to_string().contains("S24BE"));
        assert_eq!(
            out.payload,
            Payload::Raw {
                bytes_per_frame: 6,
                rate: 16000,
                silence: 0
            }
        );

        let mut wav = vec![7, 0, 1, 0, 0x40, 0x1F, 0, 0, 0x40, 0x1F, 0, 0, 1, 0, 8, 0];
        let acm = |wav: &[u8]| caps_str(&track("A_MS/ACM", wav), ConnectPcm::Auto, unknown);
        assert!(acm(&wav).starts_with("audio/x-mulaw"));
        wav[0] = 6;
        assert!(acm(&wav).starts_with("audio/x-alaw"));
        wav[0] = 1;
        wav[14] = 16;
        assert!(acm(&wav).contains("S16LE"));

        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        let opus = caps_str(&track("A_OPUS", &head), ConnectPcm::Auto, unknown);
        assert!(
            opus.contains("channels=(int)2") && opus.contains("coupled-count=(int)1"),
            "{opus}"
        );
        assert!(
            caps_str(&track("A_MPEG/L3", &[]), ConnectPcm::Auto, unknown).contains("layer=(int)3")
        );
        assert!(output_for(&track("A_VORBIS", &[]), ConnectPcm::Auto, unknown).is_err());
        assert!(output_for(&track("A_OPUS", b"junk"), ConnectPcm::Auto, unknown).is_err());
    }
}
