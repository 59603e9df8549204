// SPDX-License-Identifier: MPL-2.0
//! A call's recording in a local directory, for small setups: the same
//! pieces and checkpoint as in S3, as files under `NAME.work/`, and at the
//! end the recording written beside them and renamed into place.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use super::checkpoint::Checkpoint;

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

    fn piece_path(&self, n: usize) -> PathBuf {
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
        Self::replace(&self.piece_path(cp.pieces.len() - 1), piece)?;
        Self::replace(&self.checkpoint(), &cp.to_bytes())
    }

    /// Stored piece `n`.
    pub fn piece(&self, n: usize) -> Result<Vec<u8>, String> {
        let path = self.piece_path(n);
        fs::read(&path).map_err(|e| say("read", &path, e))
    }

    /// Writes the WAV: `header`, the stored pieces, then `tail`.
    pub fn write_wav(&self, pieces: usize, header: &[u8], tail: &[u8]) -> Result<(), String> {
        let mut out = self.writer()?;
        let mut write = || -> std::io::Result<()> {
            out.file.write_all(header)?;
            for n in 0..pieces {
                std::io::copy(&mut fs::File::open(self.piece_path(n))?, &mut out.file)?;
            }
            out.file.write_all(tail)
        };
        write().map_err(|e| say("write the recording", &self.path, e))?;
        out.finish()
    }

    /// A recording written as its bytes come, renamed into place at the end.
    pub fn writer(&self) -> Result<Output, String> {
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).map_err(|e| say("make", parent, e))?;
        }
        let part = part_of(&self.path);
        let file = fs::File::create(&part).map_err(|e| say("write", &part, e))?;
        Ok(Output {
            file: std::io::BufWriter::new(file),
            part,
            path: self.path.clone(),
        })
    }

    /// Removes the work files, the checkpoint first: pieces without one
    /// are started over.
    pub fn clean(&self) {
        let _ = fs::remove_file(self.checkpoint());
        let _ = fs::remove_dir_all(self.work());
    }
}

/// A recording being written to its `.part` file.
pub struct Output {
    file: std::io::BufWriter<fs::File>,
    part: PathBuf,
    path: PathBuf,
}

impl Output {
    pub fn add(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .map_err(|e| say("write the recording", &self.path, e))
    }

    /// Flushed, synced and renamed into place.
    pub fn finish(self) -> Result<(), String> {
        self.file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|_| fs::rename(&self.part, &self.path))
            .map_err(|e| say("write the recording", &self.path, e))
    }
}
