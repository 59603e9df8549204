// SPDX-License-Identifier: MPL-2.0
//! One kvsgetmediasrc run: connects, reads the GetMedia body as it arrives,
//! watches the KVS tags go by, and reconnects after any drop from the last
//! complete fragment.

use std::pin::Pin;
use std::time::{Duration, Instant};

use aws_sdk_kinesisvideomedia::primitives::ByteStream;
use bytes::Bytes;
use tokio::time::Sleep;

use super::imp::CAT;
use crate::aws::retry::{Limits, Retry, within};
use crate::aws::{self, Clients, Failure, Pace, Start, Target};
use kvs_mkv::feed::Scanner;
use kvs_mkv::kvs::{self, FragmentMeta};
use kvs_mkv::{Event, Parser};

/// How a session behaves when connections fail or go quiet.
#[derive(Debug, Clone)]
pub struct Policy {
    /// EOS after this long without a new fragment, while KVS answers.
    pub idle_timeout: Duration,
    /// A body that sends nothing for this long is dropped and reconnected.
    pub read_timeout: Duration,
    /// When failures in a row are final, and how long a request may wait.
    pub limits: Limits,
    /// Archive mode: GetMediaForFragmentList batches fetched at once.
    pub archive_connections: usize,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub bytes: u64,
    pub fragments: u64,
    pub reconnects: u64,
    pub throttles: u64,
    pub endpoint_refreshes: u64,
    pub continuation_token: Option<String>,
    pub millis_behind_now: Option<u64>,
}

impl Stats {
    /// Brings `self` up to `other`, after every chunk: the token is copied
    /// only when the fragment count moved, as it changes only then.
    pub fn refresh_from(&mut self, other: &Stats) {
        if self.fragments != other.fragments || self.continuation_token.is_none() {
            self.continuation_token
                .clone_from(&other.continuation_token);
        }
        self.bytes = other.bytes;
        self.fragments = other.fragments;
        self.reconnects = other.reconnects;
        self.throttles = other.throttles;
        self.endpoint_refreshes = other.endpoint_refreshes;
        self.millis_behind_now = other.millis_behind_now;
    }
}

/// What `next` gives.
pub enum Next {
    /// Bytes, and whether they start after a reconnect.
    Data(Bytes, bool),
    /// No new fragment for `idle-timeout`: the stream is over.
    Idle,
    /// Archive mode: the last fragment of the range has been read.
    End,
}

pub struct Live {
    target: Target,
    policy: Policy,
    clients: Clients,
    media: Option<aws_sdk_kinesisvideomedia::Client>,
    body: Option<ByteStream>,
    /// Fires `read_timeout` after the last bytes; re-armed only when it
    /// fires, so that reads do not touch the timer.
    watchdog: Pin<Box<Sleep>>,
    last_read: Instant,
    start: Start,
    /// Follows the KVS tags in the bytes.
    scanner: Scanner,
    fragment: FragmentMeta,
    in_cluster: bool,
    /// A fragment's Cluster began and its closing tags have not come yet.
    fragment_open: bool,
    last_fragment: Instant,
    retry: Retry,
    /// The last connection was answered and its body ended as KVS ends
    /// one: only then may no new fragment mean the stream is idle.
    answered: bool,
    connected_once: bool,
    discont: bool,
    pace: Pace,
    pub stats: Stats,
}

impl Live {
    pub async fn new(target: Target, start: Start, policy: Policy) -> Live {
        let clients = Clients::new(&target).await;
        let watchdog = Box::pin(tokio::time::sleep(policy.read_timeout));
        let retry = Retry::new(*CAT, target.stream(), policy.limits);
        Live {
            target,
            policy,
            clients,
            media: None,
            body: None,
            watchdog,
            last_read: Instant::now(),
            start,
            scanner: Scanner::new(Parser::metadata_only()),
            fragment: FragmentMeta::default(),
            in_cluster: false,
            fragment_open: false,
            last_fragment: Instant::now(),
            retry,
            answered: false,
            connected_once: false,
            discont: false,
            pace: Pace::default(),
            stats: Stats::default(),
        }
    }

    pub fn region(&self) -> &str {
        self.clients.region()
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The next bytes of the stream, reconnecting as needed. The stream
    /// is idle only when KVS answered and had nothing new for
    /// `idle-timeout`; while it cannot be reached, the retry policy decides
    /// when the failure is final.
    pub async fn next(&mut self) -> Result<Next, Failure> {
        loop {
            if self.body.is_none() {
                if self.answered && self.last_fragment.elapsed() >= self.policy.idle_timeout {
                    return Ok(Next::Idle);
                }
                // Boxed, as is `recover`: this future is made for every
                // chunk, and the SDK call would make it large to move.
                match Box::pin(self.connect()).await {
                    Ok(()) => {
                        self.retry.succeeded();
                        self.answered = true;
                    }
                    Err(failure) => {
                        self.answered = false;
                        Box::pin(self.recover(failure)).await?;
                        continue;
                    }
                }
            }
            let body = self.body.as_mut().unwrap();
            let read = tokio::select! {
                biased;
                read = body.next() => Some(read),
                _ = self.watchdog.as_mut() => None,
            };
            match read {
                Some(Some(Ok(bytes))) => {
                    self.last_read = Instant::now();
                    self.watch(&bytes);
                    self.stats.bytes += bytes.len() as u64;
                    return Ok(Next::Data(bytes, std::mem::take(&mut self.discont)));
                }
                None => {
                    let quiet_until = self.last_read + self.policy.read_timeout;
                    if Instant::now() < quiet_until {
                        self.watchdog.as_mut().reset(quiet_until.into());
                        continue;
                    }
                    // Quiet for read-timeout, which KVS never is: a stalled
                    // peer. Resume, but conclude nothing from it.
                    self.drop_body("sent nothing for read-timeout", true);
                    self.answered = false;
                }
                // The body ended: resume from the last complete fragment.
                // KVS ends a quiet one after about 3 s, between fragments;
                // one that ends inside a fragment (a session's end, after
                // 40 to 45 minutes) says nothing about the stream being idle.
                Some(None) => {
                    let cut = self.fragment_open;
                    self.drop_body(
                        if cut {
                            "ended inside a fragment"
                        } else {
                            "ended"
                        },
                        cut,
                    );
                    if cut {
                        self.answered = false;
                    }
                }
                Some(Some(Err(e))) => {
                    let why = format!("broke: {e}");
                    self.drop_body(&why, true);
                    self.answered = false;
                }
            }
        }
    }

    /// Drops the body to resume after the last complete fragment; a body
    /// that failed (`dropped`), rather than one KVS ended between
    /// fragments (a quiet stream, a session's end), counts as a reconnect.
    fn drop_body(&mut self, why: &str, dropped: bool) {
        gst::debug!(
            CAT,
            "Stream {}: the GetMedia body {why}; resuming after fragment {}",
            self.target.stream(),
            self.stats
                .continuation_token
                .as_deref()
                .unwrap_or("(none yet)")
        );
        self.body = None;
        if dropped {
            self.stats.reconnects += 1;
        }
        self.discont = true;
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let limit = self.policy.limits.request_timeout;
        if self.media.is_none() {
            let client = self.clients.media_client(&self.target);
            self.media = Some(within(limit, "GetDataEndpoint", client).await?);
        }
        // A first resume goes out at once; a burst waits for KVS's limit.
        self.pace.call().await;
        let start = match &self.stats.continuation_token {
            Some(token) => Start::ContinuationToken(token.clone()),
            None => self.start.clone(),
        };
        let media = self.media.as_ref().unwrap();
        let body = within(
            limit,
            "GetMedia",
            aws::get_media(media, &self.target, &start),
        )
        .await?;
        if self.connected_once {
            gst::info!(
                CAT,
                "Stream {}: GetMedia resumed with {start:?}",
                self.target.stream()
            );
        } else {
            gst::info!(
                CAT,
                "Stream {}: GetMedia connected with {start:?}",
                self.target.stream()
            );
        }
        self.body = Some(body);
        self.last_read = Instant::now();
        let deadline = self.last_read + self.policy.read_timeout;
        self.watchdog.as_mut().reset(deadline.into());
        // A new body starts with a new chunk.
        self.scanner.reset();
        self.in_cluster = false;
        self.fragment_open = false;
        self.discont = self.connected_once;
        self.connected_once = true;
        Ok(())
    }

    /// Waits before the next attempt, or gives up.
    async fn recover(&mut self, failure: Failure) -> Result<(), Failure> {
        if self
            .retry
            .recover("GetMedia", failure, &mut self.stats)
            .await?
        {
            self.media = None;
        }
        Ok(())
    }

    /// Follows the KVS tags: the continuation token of the last complete
    /// fragment is where a reconnect resumes. The scanner skips blocks, so
    /// it nearly always takes a whole chunk; only a leftover is copied.
    fn watch(&mut self, bytes: &[u8]) {
        let Live {
            scanner,
            fragment,
            in_cluster,
            fragment_open,
            stats,
            last_fragment,
            ..
        } = self;
        scanner.push(bytes, |event, _| match event {
            Event::Header { .. } => {
                *fragment = FragmentMeta::default();
                *in_cluster = false;
                *fragment_open = false;
            }
            Event::ClusterStart => {
                *in_cluster = true;
                *fragment_open = true;
            }
            Event::Tags(tags) => {
                fragment.apply(tags);
                let token = tags.iter().find(|t| t.name == kvs::CONTINUATION_TOKEN);
                if let (true, Some(token)) = (*in_cluster, token) {
                    *fragment_open = false;
                    stats.fragments += 1;
                    stats.continuation_token = Some(token.value.trim().to_string());
                    stats.millis_behind_now = fragment.millis_behind_now;
                    *last_fragment = Instant::now();
                }
            }
            _ => {}
        });
    }
}

impl crate::aws::retry::Counts for Stats {
    fn throttled(&mut self) {
        self.throttles += 1;
    }

    fn refreshed(&mut self) {
        self.endpoint_refreshes += 1;
    }
}
