// SPDX-License-Identifier: MPL-2.0
//! A call's WAV object in S3 (or a file, `dir.rs`; Ogg Opus, `opus.rs`),
//! written as the call goes, and its checkpoint.
//!
//! Audio is cut at fragment boundaries into pieces of at least `part_size`
//! bytes (S3's 5 MiB minimum for a multipart part). Each piece is stored
//! as a work object, then a checkpoint names the pieces, the mixer's state
//! and where to read the stream again. At the end one multipart upload
//! builds the WAV: part 1 is the header and the first piece, the other
//! pieces are copied inside S3, and the last part is the audio since the
//! last piece. The header is written last, when the length is known.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde_json::{Value, json};

use super::explain as err;
use super::mix::Mixer;
use crate::pieces::wav_header;

const ASSEMBLE: &str = "cannot assemble the recording";

pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// Where the stream is read again after a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// The continuation token of the last fragment before the cut (live).
    pub token: Option<String>,
    /// Producer time of the first fragment after the cut (archive), ms.
    pub producer_ms: Option<u64>,
}

/// What a restarted worker needs to go on with a call.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Bytes of each stored piece, in order.
    pub pieces: Vec<u64>,
    pub resume: Resume,
    pub mixer: Mixer,
}

impl Checkpoint {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let (state, samples) = self.mixer.save();
        let head = json!({
            "version": 1,
            "pieces": self.pieces,
            "resume": {"token": self.resume.token, "producer_ms": self.resume.producer_ms},
            "mixer": state,
        });
        let mut out = head.to_string().into_bytes();
        out.push(b'\n');
        out.extend(samples);
        out
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let head: Value = serde_json::from_slice(&bytes[..nl]).map_err(|e| e.to_string())?;
        if head["version"] != 1 {
            return Err(format!("version {} is not known", head["version"]));
        }
        let pieces = head["pieces"]
            .as_array()
            .ok_or("no pieces")?
            .iter()
            .map(|p| p.as_u64().ok_or("a piece without a size"))
            .collect::<Result<_, _>>()?;
        Ok(Checkpoint {
            pieces,
            resume: Resume {
                token: head["resume"]["token"].as_str().map(String::from),
                producer_ms: head["resume"]["producer_ms"].as_u64(),
            },
            mixer: Mixer::load(&head["mixer"], &bytes[nl + 1..])?,
        })
    }
}

/// Object metadata of a finished recording.
pub struct Meta {
    pub contact_id: String,
    pub tracks: String,
}

/// Counts S3 requests, for the figures.
pub static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count() {
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Where a call's recording goes.
pub enum Store {
    S3(S3),
    Dir(super::dir::Dir),
}

impl Store {
    pub async fn load(&self) -> Result<Option<Checkpoint>, String> {
        match self {
            Store::S3(s) => s.load().await,
            Store::Dir(d) => d.load(),
        }
    }

    /// Whether the recording is there already.
    pub async fn exists(&self) -> Result<bool, String> {
        match self {
            Store::S3(s) => s.exists().await,
            Store::Dir(d) => Ok(d.exists()),
        }
    }

    pub async fn save(&self, piece: Vec<u8>, cp: &Checkpoint) -> Result<(), String> {
        match self {
            Store::S3(s) => s.save(piece, cp).await,
            Store::Dir(d) => tokio::task::block_in_place(|| d.save(&piece, cp)),
        }
    }

    pub async fn finish(
        &self,
        pieces: &[u64],
        tail: Vec<u8>,
        mixer: &Mixer,
        meta: &Meta,
    ) -> Result<u64, String> {
        match self {
            Store::S3(s) => s.finish(pieces, tail, mixer, meta).await,
            Store::Dir(d) => tokio::task::block_in_place(|| d.finish(pieces, &tail, mixer)),
        }
    }
}

pub struct S3 {
    pub s3: Client,
    pub bucket: String,
    pub key: String,
    /// Ogg Opus (`opus.rs`) rather than WAV.
    pub opus: bool,
}

impl S3 {
    fn piece_key(&self, n: usize) -> String {
        format!("{}.work/piece-{:05}", self.key, n + 1)
    }

    fn checkpoint_key(&self) -> String {
        format!("{}.work/checkpoint", self.key)
    }

    pub async fn load(&self) -> Result<Option<Checkpoint>, String> {
        count();
        let got = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(self.checkpoint_key())
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(err("cannot read the checkpoint", e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| err("cannot read the checkpoint", e))?
            .into_bytes();
        Checkpoint::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| format!("the checkpoint {} is damaged: {e}", self.checkpoint_key()))
    }

    /// Whether the recording is already in S3.
    pub async fn exists(&self) -> Result<bool, String> {
        count();
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(e) => Err(err("cannot look for the recording", e)),
        }
    }

    async fn put(&self, key: String, body: Vec<u8>) -> Result<(), String> {
        count();
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err(&format!("cannot write s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }

    /// Stores piece `n`, then the checkpoint that counts it.
    pub async fn save(&self, piece: Vec<u8>, cp: &Checkpoint) -> Result<(), String> {
        self.put(self.piece_key(cp.pieces.len() - 1), piece).await?;
        self.put(self.checkpoint_key(), cp.to_bytes()).await
    }

    /// Writes the WAV from the stored pieces and `tail`, then removes the
    /// work objects.
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
        // A WAV cannot say more than 4 GiB (37 hours of a call).
        let header = || {
            wav_header(
                mixer.rate(),
                mixer.channels() as u16,
                u32::try_from(data).unwrap_or(u32::MAX - 36),
            )
        };
        if self.opus {
            super::opus::to_s3(self, pieces.len(), &tail, mixer, &metadata).await?;
        } else if pieces.is_empty() {
            self.put_whole([header(), tail].concat(), "audio/wav", &metadata)
                .await?;
        } else {
            self.assemble(pieces.len(), header(), tail, &metadata)
                .await?;
        }
        self.clean(pieces.len()).await;
        Ok(data)
    }

    /// The recording in one PUT.
    pub(super) async fn put_whole(
        &self,
        body: Vec<u8>,
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), String> {
        count();
        let mut req = self.s3.put_object().bucket(&self.bucket).key(&self.key);
        for (k, v) in metadata {
            req = req.metadata(*k, *v);
        }
        req.content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err("cannot write the recording", e))?;
        Ok(())
    }

    /// Stored piece `n`.
    pub(super) async fn piece(&self, n: usize) -> Result<Vec<u8>, String> {
        count();
        let body = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(self.piece_key(n))
            .send()
            .await
            .map_err(|e| err(ASSEMBLE, e))?
            .body
            .collect()
            .await
            .map_err(|e| err(&format!("cannot read piece {}", n + 1), e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn assemble(
        &self,
        pieces: usize,
        header: Vec<u8>,
        tail: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> Result<(), String> {
        let first = self.piece(0).await?;
        let id = self.start_upload("audio/wav", metadata).await?;
        match self
            .parts(&id, pieces, [header, first].concat(), tail)
            .await
        {
            Ok(parts) => self.complete(&id, parts).await,
            Err(e) => {
                self.abort(&id).await;
                Err(e)
            }
        }
    }

    /// Starts the multipart upload of the recording; gives its id.
    pub(super) async fn start_upload(
        &self,
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> Result<String, String> {
        count();
        let mut req = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type(content_type);
        for (k, v) in metadata {
            req = req.metadata(*k, *v);
        }
        req.send()
            .await
            .map_err(|e| err(ASSEMBLE, e))?
            .upload_id
            .ok_or_else(|| "S3 gave no upload id".to_string())
    }

    pub(super) async fn complete(&self, id: &str, parts: Vec<CompletedPart>) -> Result<(), String> {
        count();
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err(ASSEMBLE, e))?;
        Ok(())
    }

    pub(super) async fn abort(&self, id: &str) {
        count();
        let _ = self
            .s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .send()
            .await;
    }

    async fn parts(
        &self,
        id: &str,
        pieces: usize,
        first: Vec<u8>,
        tail: Vec<u8>,
    ) -> Result<Vec<CompletedPart>, String> {
        let mut parts = vec![self.upload_part(id, 1, first).await?];
        for n in 1..pieces {
            count();
            let out = self
                .s3
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id)
                .part_number(n as i32 + 1)
                .copy_source(format!("{}/{}", self.bucket, self.piece_key(n)))
                .send()
                .await
                .map_err(|e| err(ASSEMBLE, e))?;
            parts.push(part(
                n as i32 + 1,
                out.copy_part_result.and_then(|r| r.e_tag),
            ));
        }
        if !tail.is_empty() {
            parts.push(self.upload_part(id, pieces as i32 + 1, tail).await?);
        }
        Ok(parts)
    }

    pub(super) async fn upload_part(
        &self,
        id: &str,
        n: i32,
        body: Vec<u8>,
    ) -> Result<CompletedPart, String> {
        count();
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err(ASSEMBLE, e))?;
        Ok(part(n, out.e_tag))
    }

    /// Removes the checkpoint first: a worker that finds pieces but no
    /// checkpoint starts over, which is safe.
    async fn clean(&self, pieces: usize) {
        let keys =
            std::iter::once(self.checkpoint_key()).chain((0..pieces).map(|n| self.piece_key(n)));
        for key in keys {
            count();
            let _ = self
                .s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
        }
    }
}

fn part(n: i32, e_tag: Option<String>) -> CompletedPart {
    CompletedPart::builder()
        .part_number(n)
        .set_e_tag(e_tag)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip() {
        let mut mixer = Mixer::new(8000, 2);
        mixer.push(0, 1000, &[1, 0, 2, 0]);
        let cp = Checkpoint {
            pieces: vec![MIN_PART, MIN_PART + 4],
            resume: Resume {
                token: Some("91343852333181432392682062607743920146264245338".into()),
                producer_ms: Some(1_700_000_001_024),
            },
            mixer,
        };
        let back = Checkpoint::from_bytes(&cp.to_bytes()).unwrap();
        assert_eq!(back.pieces, cp.pieces);
        assert_eq!(back.resume, cp.resume);
        assert_eq!(back.mixer, cp.mixer);
        assert!(Checkpoint::from_bytes(b"{\"version\": 2}\n").is_err());
        let mut short = cp.to_bytes();
        short.pop();
        assert!(Checkpoint::from_bytes(&short).is_err());
    }
}
