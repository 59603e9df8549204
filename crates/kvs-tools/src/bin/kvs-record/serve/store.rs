// SPDX-License-Identifier: MPL-2.0
//! Where a call's recording goes (S3 or a directory) and in what form (WAV
//! or Ogg Opus): the one place where the two meet.
//!
//! Audio is cut at fragment boundaries into pieces of at least `part_size`
//! bytes (S3's 5 MiB minimum for a multipart part). Each piece is stored,
//! then a checkpoint that names the pieces. At the end the recording is
//! made from the pieces and the audio since the last one: a WAV whose header
//! says the length, or Ogg Opus encoded once from the PCM, so that a call
//! resumed by another worker is exact either way.

use tokio::task::block_in_place;

use super::checkpoint::{Checkpoint, Meta};
use super::dir::Dir;
use super::mix::Mixer;
use super::opus::Encoder;
use super::s3::S3;

/// Where the pieces, the checkpoint and the recording are kept.
pub enum Backend {
    S3(S3),
    Dir(Dir),
}

/// What the recording is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Stereo WAV
    Wav,
    /// Ogg Opus
    Opus,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Opus => "opus",
        }
    }
}

pub struct Destination {
    pub backend: Backend,
    pub format: Format,
}

impl Destination {
    pub async fn load(&self) -> Result<Option<Checkpoint>, String> {
        match &self.backend {
            Backend::S3(s) => s.load().await,
            Backend::Dir(d) => d.load(),
        }
    }

    /// Whether the recording is there already.
    pub async fn exists(&self) -> Result<bool, String> {
        match &self.backend {
            Backend::S3(s) => s.exists().await,
            Backend::Dir(d) => Ok(d.exists()),
        }
    }

    pub async fn save(&self, piece: Vec<u8>, cp: &Checkpoint) -> Result<(), String> {
        match &self.backend {
            Backend::S3(s) => s.save(piece, cp).await,
            Backend::Dir(d) => block_in_place(|| d.save(&piece, cp)),
        }
    }

    async fn piece(&self, n: usize) -> Result<Vec<u8>, String> {
        match &self.backend {
            Backend::S3(s) => s.piece(n).await,
            Backend::Dir(d) => block_in_place(|| d.piece(n)),
        }
    }

    /// Makes the recording from the stored pieces and `tail`, then removes
    /// the work objects. Returns the bytes of audio.
    pub async fn finish(
        &self,
        pieces: &[u64],
        tail: Vec<u8>,
        mixer: &Mixer,
        meta: &Meta,
    ) -> Result<u64, String> {
        let data = pieces.iter().sum::<u64>() + tail.len() as u64;
        let seconds = format!("{:.3}", mixer.seconds(data));
        let metadata = [
            ("contact-id", meta.contact_id.as_str()),
            ("tracks", meta.tracks.as_str()),
            ("duration-seconds", seconds.as_str()),
        ];
        let n = pieces.len();
        match (self.format, &self.backend) {
            (Format::Wav, Backend::S3(s)) => {
                s.write_wav(n, mixer.wav_header(data), tail, &metadata)
                    .await?
            }
            (Format::Wav, Backend::Dir(d)) => {
                block_in_place(|| d.write_wav(n, &mixer.wav_header(data), &tail))?
            }
            (Format::Opus, _) => self.encode(n, tail, mixer, &metadata).await?,
        }
        match &self.backend {
            Backend::S3(s) => s.clean(n).await,
            Backend::Dir(d) => d.clean(),
        }
        Ok(data)
    }

    /// Encodes the `pieces` stored pieces, then `tail`, into the recording
    /// as the Ogg bytes come out.
    async fn encode(
        &self,
        pieces: usize,
        tail: Vec<u8>,
        mixer: &Mixer,
        metadata: &[(&str, &str)],
    ) -> Result<(), String> {
        let mut out = match &self.backend {
            Backend::S3(s) => Writer::S3(s.writer("audio/ogg", metadata)),
            Backend::Dir(d) => Writer::Dir(block_in_place(|| d.writer())?),
        };
        let encoded = async {
            let mut enc = Encoder::new(mixer.rate(), mixer.channels())?;
            for n in 0..pieces {
                let piece = self.piece(n).await?;
                block_in_place(|| enc.push(piece))?;
                out.add(enc.take()).await?;
            }
            block_in_place(|| enc.push(tail))?;
            out.add(block_in_place(|| enc.finish())?).await
        }
        .await;
        match encoded {
            Ok(()) => out.finish().await,
            Err(e) => {
                out.abort().await;
                Err(e)
            }
        }
    }
}

/// A recording written as its bytes come.
enum Writer<'a> {
    S3(super::s3::Upload<'a>),
    Dir(super::dir::Output),
}

impl Writer<'_> {
    async fn add(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Writer::S3(u) => u.add(bytes).await,
            Writer::Dir(o) => block_in_place(|| o.add(&bytes)),
        }
    }

    /// The recording complete; a multipart upload whose completion fails
    /// is aborted.
    async fn finish(self) -> Result<(), String> {
        match self {
            Writer::S3(mut u) => {
                let done = u.finish().await;
                if done.is_err() {
                    u.abort().await;
                }
                done
            }
            Writer::Dir(o) => block_in_place(|| o.finish()),
        }
    }

    /// Drops what was begun (an S3 upload; a `.part` file stays, to be
    /// written again).
    async fn abort(self) {
        if let Writer::S3(mut u) = self {
            u.abort().await;
        }
    }
}
