// SPDX-License-Identifier: MPL-2.0
//! A call's recording in a local directory, for small setups: the same
//! pieces and checkpoint as in S3, as files under `NAME.work/`, and at the
//! end the WAV (or Ogg Opus) written whole beside them and renamed into
//! place.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use super::mix::Mixer;
use super::store::Checkpoint;
use crate::pieces::wav_header;

/// Makes `dir` if needed and checks that files can be written there;
/// `what` says what for.
pub fn check(dir: &std::path::Path, what: &str) -> Result<(), String> {
    let probe = dir.join(".kvs-record-write-check");
    fs::create_dir_all(dir)
        .and_then(|_| fs::write(&probe, b""))
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| say(what, dir, e))
}

pub struct Dir {
    /// The recording's path: the directory, the prefix and
    /// `{ContactId}.wav` (or `.opus`).
    pub path: PathBuf,
    /// Ogg Opus (`opus.rs`) rather than WAV.
    pub opus: bool,
}

fn say(what: &str, path: &std::path::Path, e: std::io::Error) -> String {
    format!("cannot {what} {}: {e}", path.display())
}

/// `path` with `.part` added: where a file is written before it is renamed.
fn part_of(path: &std::path::Path) -> PathBuf {
    let mut part = path.to_path_buf().into_os_string();
    part.push(".part");
    PathBuf::from(part)
}

impl Dir {
    fn work(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".work");
        PathBuf::from(name)
    }

    fn piece(&self, n: usize) -> PathBuf {
        self.work().join(format!("piece-{:05}", n + 1))
    }

    fn checkpoint(&self) -> PathBuf {
        self.work().join("checkpoint")
    }

    /// Writes `body` to `path` whole: a crash leaves the old file or the new.
    fn replace(path: &std::path::Path, body: &[u8]) -> Result<(), String> {
        let part = part_of(path);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&part)?;
            f.write_all(body)?;
            f.sync_all()?;
            fs::rename(&part, path)
        };
        write().map_err(|e| say("write", path, e))
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, String> {
        let path = self.checkpoint();
        match fs::read(&path) {
            Ok(bytes) => Checkpoint::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| format!("the checkpoint {} is damaged: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(say("read the checkpoint", &path, e)),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Stores the newest piece, then the checkpoint that counts it.
    pub fn save(&self, piece: &[u8], cp: &Checkpoint) -> Result<(), String> {
        let work = self.work();
        fs::create_dir_all(&work).map_err(|e| say("make", &work, e))?;
        Self::replace(&self.piece(cp.pieces.len() - 1), piece)?;
        Self::replace(&self.checkpoint(), &cp.to_bytes())
    }

    /// Writes the recording from the pieces and `tail`, then removes the
    /// work files. Returns the bytes of audio.
    pub fn finish(&self, pieces: &[u64], tail: &[u8], mixer: &Mixer) -> Result<u64, String> {
        let data = pieces.iter().sum::<u64>() + tail.len() as u64;
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).map_err(|e| say("make", parent, e))?;
        }
        let part = part_of(&self.path);
        let mut f =
            std::io::BufWriter::new(fs::File::create(&part).map_err(|e| say("write", &part, e))?);
        if self.opus {
            let files = (0..pieces.len()).map(|n| self.piece(n));
            super::opus::to_file(files, tail, mixer, &mut f)?;
        } else {
            let header = wav_header(
                mixer.rate(),
                mixer.channels() as u16,
                u32::try_from(data).unwrap_or(u32::MAX - 36),
            );
            let mut write = || -> std::io::Result<()> {
                f.write_all(&header)?;
                for n in 0..pieces.len() {
                    std::io::copy(&mut fs::File::open(self.piece(n))?, &mut f)?;
                }
                f.write_all(tail)
            };
            write().map_err(|e| say("write the recording", &self.path, e))?;
        }
        f.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|_| fs::rename(&part, &self.path))
            .map_err(|e| say("write the recording", &self.path, e))?;
        // The checkpoint first: pieces without one are started over.
        let _ = fs::remove_file(self.checkpoint());
        let _ = fs::remove_dir_all(self.work());
        Ok(data)
    }
}
