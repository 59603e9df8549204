// SPDX-License-Identifier: MPL-2.0
//! The audio a call holds until its next piece: in memory, or with
//! `--spool-dir` in a file of its own, so that a call's memory stays small
//! however large its pieces. The file is unlinked as soon as it is made:
//! only the open handle holds it, and a killed worker leaves nothing behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes gathered in memory before they go to the file in one write.
const WRITE_SIZE: usize = 64 * 1024;

pub struct Pending {
    memory: Vec<u8>,
    file: Option<File>,
    /// Bytes in the file, before those in `memory`.
    spooled: u64,
}

impl Pending {
    pub fn new(dir: Option<&Path>) -> Result<Pending, String> {
        Ok(Pending {
            memory: Vec::new(),
            file: dir.map(open).transpose()?,
            spooled: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.spooled + self.memory.len() as u64
    }

    pub fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.memory.extend_from_slice(bytes);
        if let Some(file) = &mut self.file
            && self.memory.len() >= WRITE_SIZE
        {
            file.write_all(&self.memory).map_err(say)?;
            self.spooled += self.memory.len() as u64;
            self.memory.clear();
        }
        Ok(())
    }

    /// All the audio, in order; nothing is pending after.
    pub fn take(&mut self) -> Result<Vec<u8>, String> {
        let len = self.len() as usize;
        let Some(file) = &mut self.file else {
            return Ok(std::mem::take(&mut self.memory));
        };
        let mut all = Vec::with_capacity(len);
        file.seek(SeekFrom::Start(0)).map_err(say)?;
        Read::by_ref(file)
            .take(self.spooled)
            .read_to_end(&mut all)
            .map_err(say)?;
        if all.len() as u64 != self.spooled {
            return Err(say(std::io::ErrorKind::UnexpectedEof.into()));
        }
        all.extend_from_slice(&self.memory);
        file.set_len(0).map_err(say)?;
        file.seek(SeekFrom::Start(0)).map_err(say)?;
        self.memory.clear();
        self.spooled = 0;
        Ok(all)
    }
}

fn say(e: std::io::Error) -> String {
    format!("the spool file failed: {e}")
}

fn open(dir: &Path) -> Result<File, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".kvs-record-{}-{}.pcm",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("cannot make a spool file in {}: {e}", dir.display()))?;
    std::fs::remove_file(&path)
        .map_err(|e| format!("cannot unlink the spool file {}: {e}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dir: Option<&Path>) {
        let mut p = Pending::new(dir).unwrap();
        let mut expected = Vec::new();
        // Pushes of uneven sizes across several writes, taken twice.
        for round in 0..2u8 {
            for i in 0..100u32 {
                let chunk: Vec<u8> = (0..(i * 37 % 5000))
                    .map(|j| (j as u8) ^ round ^ i as u8)
                    .collect();
                p.push(&chunk).unwrap();
                expected.extend(chunk);
            }
            assert_eq!(p.len(), expected.len() as u64);
            assert_eq!(p.take().unwrap(), expected);
            assert_eq!(p.len(), 0);
            expected.clear();
        }
    }

    #[test]
    fn pending_audio_comes_back_whole_from_memory_and_from_a_spool_file() {
        check(None);
        let dir = std::env::temp_dir().join(format!("kvs-spool-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        check(Some(&dir));
        // The file was unlinked at once: the directory stays empty.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
        let missing = dir.join("missing");
        let e = Pending::new(Some(&missing)).err().unwrap();
        assert!(e.contains("cannot make a spool file in"), "{e}");
    }
}
