// SPDX-License-Identifier: MPL-2.0
//! A call's recording in S3, written as the call goes: each piece of audio
//! is a work object, then the checkpoint that counts it. At the end a WAV
//! is one multipart upload: part 1 is the header and the first piece, the
//! other pieces are copied inside S3, and the last part is the audio since
//! the last piece; an Ogg Opus recording is uploaded as it is encoded, in
//! parts of at least 5 MiB.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::checkpoint::Checkpoint;
use super::explain as err;

const ASSEMBLE: &str = "cannot assemble the recording";
const WAV: &str = "audio/wav";

/// S3's least size of a multipart part other than the last.
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// Counts S3 requests, for the figures.
pub static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count() {
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The recording's object and its work objects in a bucket.
pub struct S3 {
    pub s3: Client,
    pub bucket: String,
    pub key: String,
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

    /// Writes the WAV: `header` and the stored pieces, copied inside S3,
    /// then `tail`.
    pub async fn write_wav(
        &self,
        pieces: usize,
        header: Vec<u8>,
        tail: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> Result<(), String> {
        if pieces == 0 {
            return self.put_whole([header, tail].concat(), WAV, metadata).await;
        }
        self.assemble(pieces, header, tail, metadata).await
    }

    /// A recording written as its bytes come (Ogg Opus).
    pub fn writer<'a>(
        &'a self,
        content_type: &'a str,
        metadata: &'a [(&'a str, &'a str)],
    ) -> Upload<'a> {
        Upload {
            s3: self,
            content_type,
            metadata,
            pending: Vec::new(),
            upload: None,
        }
    }

    /// The recording in one PUT.
    async fn put_whole(
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
    pub async fn piece(&self, n: usize) -> Result<Vec<u8>, String> {
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
        let id = self.start_upload(WAV, metadata).await?;
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
    async fn start_upload(
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

    async fn complete(&self, id: &str, parts: Vec<CompletedPart>) -> Result<(), String> {
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

    async fn abort(&self, id: &str) {
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

    async fn upload_part(&self, id: &str, n: i32, body: Vec<u8>) -> Result<CompletedPart, String> {
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
    pub async fn clean(&self, pieces: usize) {
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

/// Bytes to the recording's object as they come: one PUT when they stay
/// under a part, else a multipart upload of 5 MiB parts.
pub struct Upload<'a> {
    s3: &'a S3,
    content_type: &'a str,
    metadata: &'a [(&'a str, &'a str)],
    pending: Vec<u8>,
    upload: Option<(String, Vec<CompletedPart>)>,
}

impl Upload<'_> {
    pub async fn add(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.pending.extend(bytes);
        if (self.pending.len() as u64) < MIN_PART {
            return Ok(());
        }
        if self.upload.is_none() {
            let id = self
                .s3
                .start_upload(self.content_type, self.metadata)
                .await?;
            self.upload = Some((id, Vec::new()));
        }
        let (id, done) = self.upload.as_mut().expect("started above");
        let n = done.len() as i32 + 1;
        let body = std::mem::take(&mut self.pending);
        done.push(self.s3.upload_part(id, n, body).await?);
        Ok(())
    }

    /// Stores what is left; the upload is dropped from `self` only once it
    /// is complete, so that a failure can still abort it.
    pub async fn finish(&mut self) -> Result<(), String> {
        let body = std::mem::take(&mut self.pending);
        let Some((id, done)) = self.upload.as_mut() else {
            return self
                .s3
                .put_whole(body, self.content_type, self.metadata)
                .await;
        };
        if !body.is_empty() {
            let n = done.len() as i32 + 1;
            done.push(self.s3.upload_part(id, n, body).await?);
        }
        self.s3.complete(id, done.clone()).await?;
        self.upload = None;
        Ok(())
    }

    /// A failure on the way: an upload begun is aborted.
    pub async fn abort(&mut self) {
        if let Some((id, _)) = self.upload.take() {
            self.s3.abort(&id).await;
        }
    }
}
