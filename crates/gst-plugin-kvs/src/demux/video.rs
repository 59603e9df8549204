// SPDX-License-Identifier: MPL-2.0
//! Maps a Matroska video track to output caps, with the fields matroskademux
//! gives: width, height, pixel-aspect-ratio, framerate, interlace-mode, and
//! H.264's profile and level.

use super::caps::{Output, Payload};
use kvs_mkv::Track;

/// Frame rate from a frame duration in ns: the NTSC rates and whole rates
/// when the duration is that close to one, else the exact fraction.
pub fn framerate(duration: u64) -> gst::Fraction {
    if duration == 0 {
        return gst::Fraction::new(0, 1);
    }
    let fps = 1e9 / duration as f64;
    let close = |n: i32, d: i32| (fps - f64::from(n) / f64::from(d)).abs() < fps * 0.0002;
    for n in [24_000, 30_000, 60_000, 120_000] {
        if close(n, 1001) {
            return gst::Fraction::new(n, 1001);
        }
    }
    let whole = fps.round() as i32;
    if whole > 0 && close(whole, 1) {
        return gst::Fraction::new(whole, 1);
    }
    gst::Fraction::approximate_f64(fps).unwrap_or(gst::Fraction::new(0, 1))
}

/// The pixel aspect ratio, when the track gives a display size.
fn pixel_aspect(track: &Track) -> Option<gst::Fraction> {
    let p = &track.picture;
    let (w, h, dw, dh) = (p.width?, p.height?, p.display_width?, p.display_height?);
    let (n, d) = (dw * h, dh * w);
    let g = gcd(n, d);
    let (n, d) = (n / g, d / g);
    (n <= i32::MAX as u64 && d <= i32::MAX as u64).then(|| gst::Fraction::new(n as i32, d as i32))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// The `profile` and `level` of an avcC (`codec_data` of H.264), named as
/// GStreamer's codec utilities name them.
pub fn h264_profile_level(avcc: &[u8]) -> Option<(&'static str, String)> {
    let (&profile, &flags, &level) = (avcc.get(1)?, avcc.get(2)?, avcc.get(3)?);
    let set = |bit: u8| flags & (0x80 >> bit) != 0;
    let name = match profile {
        66 if set(1) => "constrained-baseline",
        66 => "baseline",
        77 => "main",
        88 => "extended",
        100 if set(4) && set(5) => "constrained-high",
        100 if set(4) => "progressive-high",
        100 => "high",
        110 if set(3) => "high-10-intra",
        110 => "high-10",
        122 if set(3) => "high-4:2:2-intra",
        122 => "high-4:2:2",
        244 if set(3) => "high-4:4:4-intra",
        244 => "high-4:4:4",
        44 => "cavlc-4:4:4-intra",
        _ => return None,
    };
    let level = match level {
        9 => "1b".to_string(),
        11 if set(3) && matches!(profile, 66 | 77 | 88) => "1b".to_string(),
        l if l % 10 == 0 => (l / 10).to_string(),
        l => format!("{}.{}", l / 10, l % 10),
    };
    Some((name, level))
}

/// Caps of a `V_MS/VFW/FOURCC` track from its BITMAPINFOHEADER's
/// compression code, for the codes cameras use.
fn vfw(private: &[u8]) -> Result<gst::caps::Builder<gst::caps::NoFeature>, String> {
    let fourcc: [u8; 4] = private
        .get(16..20)
        .and_then(|b| b.try_into().ok())
        .ok_or("V_MS/VFW/FOURCC without a BITMAPINFOHEADER")?;
    Ok(match &fourcc {
        b"MJPG" | b"mjpg" | b"JPEG" | b"jpeg" | b"AVRn" | b"dmb1" => {
            gst::Caps::builder("image/jpeg")
        }
        b"H264" | b"h264" | b"X264" | b"x264" | b"avc1" => {
            gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream")
        }
        b"HEVC" | b"hevc" | b"H265" | b"h265" => {
            gst::Caps::builder("video/x-h265").field("stream-format", "byte-stream")
        }
        b"VP80" => gst::Caps::builder("video/x-vp8"),
        _ => {
            return Err(format!(
                "V_MS/VFW/FOURCC with FOURCC {:?} is not supported",
                String::from_utf8_lossy(&fourcc)
            ));
        }
    })
}

/// Output caps for a video track.
pub fn output_for(track: &Track) -> Result<Output, String> {
    let private = &track.codec_private;
    let with_data = |b: gst::caps::Builder<gst::caps::NoFeature>| {
        b.field_if_some(
            "codec_data",
            (!private.is_empty()).then(|| gst::Buffer::from_slice(private.clone())),
        )
    };
    let builder = match track.codec_id.as_str() {
        "V_MPEG4/ISO/AVC" => {
            let (profile, level) = h264_profile_level(private).unzip();
            with_data(
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "avc")
                    .field("alignment", "au")
                    .field_if_some("profile", profile)
                    .field_if_some("level", level),
            )
        }
        "V_MPEGH/ISO/HEVC" => with_data(
            gst::Caps::builder("video/x-h265")
                .field("stream-format", "hvc1")
                .field("alignment", "au"),
        ),
        "V_VP8" => gst::Caps::builder("video/x-vp8"),
        "V_VP9" => gst::Caps::builder("video/x-vp9"),
        "V_AV1" => with_data(
            gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", "tu"),
        ),
        "V_MJPEG" => gst::Caps::builder("image/jpeg"),
        "V_MS/VFW/FOURCC" => vfw(private)?,
        other => return Err(format!("codec {other:?} is not supported")),
    };
    let p = &track.picture;
    let size = |v: Option<u64>| v.and_then(|v| i32::try_from(v).ok());
    let caps = builder
        .field_if_some("width", size(p.width))
        .field_if_some("height", size(p.height))
        .field_if_some("pixel-aspect-ratio", pixel_aspect(track))
        .field_if_some(
            "interlace-mode",
            match p.interlaced {
                Some(1) => Some("mixed"),
                Some(2) => Some("progressive"),
                _ => None,
            },
        )
        .field("framerate", framerate(track.default_duration.unwrap_or(0)))
        .build();
    Ok(Output {
        caps,
        payload: Payload::Video,
    })
}

/// Caps of the `video_%u` pad template.
pub fn template_caps() -> gst::Caps {
    let mut caps = gst::Caps::new_empty();
    let c = caps.get_mut().unwrap();
    for name in [
        "video/x-h264",
        "video/x-h265",
        "video/x-vp8",
        "video/x-vp9",
        "video/x-av1",
        "image/jpeg",
    ] {
        c.append(gst::Caps::new_empty_simple(name));
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_mkv::{Picture, TrackKind};

    fn track(codec: &str, private: &[u8]) -> Track {
        Track {
            number: 1,
            kind: TrackKind::Video,
            codec_id: codec.into(),
            codec_private: private.to_vec(),
            name: String::new(),
            rate: None,
            channels: None,
            bit_depth: None,
            default_duration: None,
            codec_delay: None,
            picture: Picture {
                width: Some(1280),
                height: Some(720),
                ..Default::default()
            },
        }
    }

    #[test]
    fn rates() {
        gst::init().unwrap();
        assert_eq!(framerate(33_366_667), gst::Fraction::new(30_000, 1001));
        assert_eq!(framerate(41_708_333), gst::Fraction::new(24_000, 1001));
        assert_eq!(framerate(40_000_000), gst::Fraction::new(25, 1));
        assert_eq!(framerate(33_333_333), gst::Fraction::new(30, 1));
        assert_eq!(framerate(0), gst::Fraction::new(0, 1));
    }

    #[test]
    fn h264_profiles_and_levels() {
        let pl = |p: u8, f: u8, l: u8| h264_profile_level(&[1, p, f, l]);
        assert_eq!(pl(66, 0xC0, 30), Some(("constrained-baseline", "3".into())));
        assert_eq!(pl(66, 0x80, 31), Some(("baseline", "3.1".into())));
        assert_eq!(pl(77, 0x40, 40), Some(("main", "4".into())));
        assert_eq!(pl(77, 0x10, 11), Some(("main", "1b".into())));
        assert_eq!(pl(100, 0, 51), Some(("high", "5.1".into())));
        assert_eq!(pl(100, 0x0C, 42), Some(("constrained-high", "4.2".into())));
        assert_eq!(pl(110, 0x10, 9), Some(("high-10-intra", "1b".into())));
        assert_eq!(pl(1, 0, 30), None);
        assert_eq!(h264_profile_level(&[1, 100]), None);
    }

    #[test]
    fn codec_map() {
        gst::init().unwrap();
        let caps = |t: &Track| output_for(t).unwrap().caps;
        let mut avc = track("V_MPEG4/ISO/AVC", &[1, 0x64, 0, 0x1f]);
        avc.default_duration = Some(40_000_000);
        let expected: gst::Caps = "video/x-h264, stream-format=avc, alignment=au, \
            profile=high, level=(string)3.1, codec_data=(buffer)0164001f, width=1280, height=720, \
            framerate=25/1"
            .parse()
            .unwrap();
        assert_eq!(caps(&avc), expected);
        let mut hevc = track("V_MPEGH/ISO/HEVC", &[1]);
        hevc.picture.display_width = Some(1920);
        hevc.picture.display_height = Some(1080);
        let s = caps(&hevc).to_string();
        assert!(
            s.starts_with("video/x-h265, stream-format=(string)hvc1"),
            "{s}"
        );
        assert!(s.contains("pixel-aspect-ratio=(fraction)1/1"), "{s}");
        hevc.picture.display_width = Some(1707);
        assert!(caps(&hevc).to_string().contains("569/640"));
        for (id, name) in [
            ("V_VP8", "video/x-vp8"),
            ("V_VP9", "video/x-vp9"),
            ("V_AV1", "video/x-av1"),
            ("V_MJPEG", "image/jpeg"),
        ] {
            let s = caps(&track(id, &[]));
            assert_eq!(s.structure(0).unwrap().name(), name);
            assert!(s.to_string().contains("framerate=(fraction)0/1"));
        }
        let mut bih = vec![0u8; 40];
        bih[16..20].copy_from_slice(b"MJPG");
        let s = caps(&track("V_MS/VFW/FOURCC", &bih));
        assert_eq!(s.structure(0).unwrap().name(), "image/jpeg");
        bih[16..20].copy_from_slice(b"WMV3");
        let err = output_for(&track("V_MS/VFW/FOURCC", &bih)).unwrap_err();
        assert!(err.contains("WMV3"), "{err}");
        assert!(output_for(&track("V_MS/VFW/FOURCC", &[0; 8])).is_err());
        assert!(output_for(&track("V_THEORA", &[])).is_err());
    }
}
