// SPDX-License-Identifier: MPL-2.0
//! N-second WAV pieces, written from an appsink. splitmuxsink can miss the
//! end of a fast, non-live stream in GStreamer 1.22, so the recorder writes
//! its pieces itself: each file is complete when it is written.

use std::io::Write;
use std::sync::{Arc, Mutex};

use gst::prelude::*;

/// The path for piece `index`: the pattern's `%d` or `%0Nd` is the index.
pub fn piece_path(pattern: &str, index: u32) -> String {
    let Some(at) = pattern.find('%') else {
        return format!("{pattern}{index}");
    };
    let rest = &pattern[at + 1..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Some(tail) = rest[digits.len()..].strip_prefix('d') else {
        return format!("{pattern}{index}");
    };
    let width = digits.parse::<usize>().unwrap_or(0);
    format!("{}{index:0width$}{tail}", &pattern[..at])
}

/// A canonical 44-byte WAV header for 16-bit PCM.
pub fn wav_header(rate: u32, channels: u16, data_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data_len).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    h.extend_from_slice(&(channels * 2).to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

struct Pieces {
    pattern: String,
    seconds: u64,
    index: u32,
    format: Option<(u32, u16)>,
    pcm: Vec<u8>,
}

impl Pieces {
    fn bytes_per_piece(&self) -> usize {
        let (rate, channels) = self.format.unwrap_or((8000, 1));
        (u64::from(rate) * u64::from(channels) * 2 * self.seconds) as usize
    }

    fn write(&mut self, len: usize) -> std::io::Result<()> {
        let (rate, channels) = self.format.unwrap_or((8000, 1));
        let path = piece_path(&self.pattern, self.index);
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&wav_header(rate, channels, len as u32))?;
        file.write_all(&self.pcm[..len])?;
        self.pcm.drain(..len);
        self.index += 1;
        Ok(())
    }

    fn push(&mut self, sample: &gst::Sample) -> std::io::Result<()> {
        if self.format.is_none()
            && let Some(s) = sample.caps().and_then(|c| c.structure(0))
        {
            let rate = s.get::<i32>("rate").unwrap_or(8000) as u32;
            let channels = s.get::<i32>("channels").unwrap_or(1) as u16;
            self.format = Some((rate, channels));
        }
        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
            self.pcm.extend_from_slice(&map);
        }
        let per = self.bytes_per_piece();
        while self.pcm.len() >= per {
            self.write(per)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if self.pcm.is_empty() {
            return Ok(());
        }
        self.write(self.pcm.len())
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("kvs-record: cannot write the last piece: {e}");
        }
    }
}

/// An appsink that writes what it gets as `seconds`-long WAV pieces.
pub fn sink(pattern: String, seconds: u64) -> Result<gst::Element, String> {
    let sink = gst::ElementFactory::make("appsink")
        .property("emit-signals", true)
        .property("sync", false)
        .property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("layout", "interleaved")
                .build(),
        )
        .build()
        .map_err(
            |_| "the GStreamer element appsink is missing: install gstreamer1.0-plugins-base",
        )?;
    let pieces = Arc::new(Mutex::new(Pieces {
        pattern,
        seconds,
        index: 0,
        format: None,
        pcm: Vec::new(),
    }));
    let writer = pieces.clone();
    sink.connect("new-sample", false, move |values| {
        let sink = values[0].get::<gst::Element>().unwrap();
        let sample = sink.emit_by_name::<Option<gst::Sample>>("pull-sample", &[]);
        let result = match sample {
            Some(sample) => writer.lock().unwrap().push(&sample),
            None => Ok(()),
        };
        let flow = match result {
            Ok(()) => gst::FlowReturn::Ok,
            Err(e) => {
                eprintln!("kvs-record: cannot write a piece: {e}");
                gst::FlowReturn::Error
            }
        };
        Some(flow.to_value())
    });
    sink.connect("eos", false, move |_| {
        if let Err(e) = pieces.lock().unwrap().finish() {
            eprintln!("kvs-record: cannot write the last piece: {e}");
        }
        None
    });
    Ok(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_header() {
        assert_eq!(piece_path("call-%05d.wav", 7), "call-00007.wav");
        assert_eq!(piece_path("p%d.wav", 12), "p12.wav");
        assert_eq!(piece_path("x%s", 1), "x%s1");
        let h = wav_header(8000, 2, 32000);
        assert_eq!(h.len(), 44);
        assert_eq!(&h[4..8], &32036u32.to_le_bytes());
        assert_eq!(&h[28..32], &32000u32.to_le_bytes());
    }
}
