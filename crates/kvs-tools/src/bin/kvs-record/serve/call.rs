// SPDX-License-Identifier: MPL-2.0
//! One contact: kvsgetmediasrc and kvsaudiodemux in a pipeline of its own,
//! its audio mixed by producer time and stored in S3 as it comes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstkvs::tags;
use tokio::sync::{mpsc, watch};

use super::checkpoint::{Checkpoint, Meta, Resume};
use super::mix::Mixer;
use super::ops::{self, Metrics};
use super::spool::Pending;
use super::store::Destination;
use crate::event::Contact;

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The recording is complete in S3: `bytes` of audio, or none when an
    /// earlier worker had finished it.
    Done {
        bytes: u64,
        /// Seconds of audio in it.
        seconds: f64,
        /// The most any of its fragments was behind live, in ms.
        behind_max_ms: u64,
    },
    /// Not recorded; the message may come back. `fatal` says retrying
    /// will not help (a stream that does not exist, access denied).
    Failed { reason: String, fatal: bool },
    /// The worker is stopping: the call goes back to the queue.
    Released,
}

/// Per call settings of the worker.
#[derive(Clone)]
pub struct Setup {
    pub endpoint_uri: Option<String>,
    pub idle_timeout_ms: u64,
    /// Seconds of failures in a row before the call is given back.
    pub max_outage: u64,
    pub part_size: u64,
    /// Where a call's audio waits for its next piece; None: in memory.
    pub spool_dir: Option<std::path::PathBuf>,
}

enum Msg {
    Audio(Vec<u8>),
    /// A fragment boundary after at least a piece's worth of audio.
    Cut(Resume, Mixer),
    Eos,
    Error(String, bool),
}

/// What the pad probes share, in the streaming thread.
struct Feed {
    mixer: Option<Mixer>,
    /// Demuxer pad name to channel.
    channels: Vec<(String, usize)>,
    fragment: Option<String>,
    since_cut: u64,
    part_size: u64,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Feed {
    fn buffer(&mut self, pad: &gst::Pad, buffer: &gst::BufferRef) {
        let Some(&(_, channel)) = self.channels.iter().find(|(n, _)| *n == pad.name()) else {
            return;
        };
        let Some(mixer) = &mut self.mixer else {
            return;
        };
        let ms = buffer
            .iter_meta::<gst::ReferenceTimestampMeta>()
            .find(|m| {
                m.reference()
                    .structure(0)
                    .is_some_and(|s| s.name() == "timestamp/x-unix")
            })
            .map(|m| m.timestamp().mseconds());
        let (Some(ms), Ok(map)) = (ms, buffer.map_readable()) else {
            return;
        };
        mixer.push(channel, ms, &map);
        let ready = mixer.take_ready();
        if !ready.is_empty() {
            self.since_cut += ready.len() as u64;
            let _ = self.tx.send(Msg::Audio(ready));
        }
    }

    fn tags(&mut self, list: &gst::TagListRef, stats: &ops::Call) {
        if let Some(ms) = list.get::<tags::MillisBehindNow>() {
            stats.behind(ms.get());
        }
        let Some(number) = list.get::<tags::FragmentNumber>() else {
            return;
        };
        let number = number.get().to_string();
        if self.fragment.as_ref() == Some(&number) {
            return;
        }
        let boundary = self.fragment.replace(number).is_some();
        if !boundary || self.since_cut < self.part_size {
            return;
        }
        let Some(mixer) = &self.mixer else { return };
        let resume = Resume {
            token: list
                .get::<tags::ContinuationToken>()
                .map(|t| t.get().to_string()),
            producer_ms: list
                .get::<tags::ProducerTimestamp>()
                .map(|t| t.get() / 1_000_000),
        };
        self.since_cut = 0;
        let _ = self.tx.send(Msg::Cut(resume, mixer.clone()));
    }
}

/// kvsgetmediasrc settings for the contact, from the checkpoint if any.
fn source_props(
    c: &Contact,
    resume: Option<&Resume>,
    setup: &Setup,
) -> Vec<(&'static str, String)> {
    let mut p = c.source_props(resume.unwrap_or(&Resume::default()));
    p.push(("idle-timeout", setup.idle_timeout_ms.to_string()));
    p.extend(crate::args::outage_props(setup.max_outage));
    if let Some(uri) = &setup.endpoint_uri {
        p.push(("endpoint-uri", uri.clone()));
    }
    if c.is_ended() {
        // Many calls run side by side already: one batch at a time keeps
        // an ended call's memory as flat as a live one's.
        p.push(("archive-connections", "1".into()));
    }
    p
}

/// Errors that will not go away on a retry.
fn is_fatal(err: &gst::glib::Error) -> bool {
    let text = err.to_string();
    err.matches(gst::ResourceError::NotFound)
        || err.matches(gst::ResourceError::NotAuthorized)
        || text.contains("not found")
        || text.contains("Not authorized")
}

pub struct Job {
    pub contact: Contact,
    pub contact_id: String,
    pub store: Destination,
    pub setup: Setup,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Receiver<bool>,
}

impl Job {
    pub async fn run(mut self) -> Outcome {
        let checkpoint = match self.store.load().await {
            Ok(cp) => cp,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    fatal: false,
                };
            }
        };
        if checkpoint.is_none() {
            match self.store.exists().await {
                Ok(true) => {
                    return Outcome::Done {
                        bytes: 0,
                        seconds: 0.0,
                        behind_max_ms: 0,
                    };
                }
                Ok(false) => {}
                Err(reason) => {
                    return Outcome::Failed {
                        reason,
                        fatal: false,
                    };
                }
            }
        }
        if let Some(cp) = &checkpoint {
            ops::log(
                "info",
                Some(&self.contact_id),
                "resuming from a checkpoint",
                &[("pieces", cp.pieces.len().to_string())],
            );
        }
        let stats = self.metrics.start_call(&self.contact_id);
        let outcome = self.record(checkpoint, &stats).await;
        let behind = self.metrics.end_call(&self.contact_id);
        match outcome {
            Outcome::Done { bytes, seconds, .. } => {
                self.metrics.recorded(seconds);
                Outcome::Done {
                    bytes,
                    seconds,
                    behind_max_ms: behind,
                }
            }
            other => other,
        }
    }

    async fn record(&mut self, checkpoint: Option<Checkpoint>, stats: &Arc<ops::Call>) -> Outcome {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let resume = checkpoint.as_ref().map(|c| c.resume.clone());
        let (pipeline, src, feed) = match self.pipeline(
            resume.as_ref(),
            tx.clone(),
            checkpoint.as_ref().map(|c| c.mixer.clone()),
            stats,
        ) {
            Ok(p) => p,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    fatal: false,
                };
            }
        };
        *stats.src.lock().unwrap() = Some(src.downgrade());
        let mut pieces = checkpoint.map(|c| c.pieces).unwrap_or_default();
        let mut pending = match Pending::new(self.setup.spool_dir.as_deref()) {
            Ok(p) => p,
            Err(reason) => {
                return Outcome::Failed {
                    reason,
                    fatal: false,
                };
            }
        };
        if set_state(&pipeline, gst::State::Playing).await.is_err() {
            let _ = set_state(&pipeline, gst::State::Null).await;
            // The bus said why, if anything did.
            while let Ok(msg) = rx.try_recv() {
                if let Msg::Error(reason, fatal) = msg {
                    return Outcome::Failed { reason, fatal };
                }
            }
            return Outcome::Failed {
                reason: "the pipeline did not start".into(),
                fatal: false,
            };
        }
        let outcome = loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = self.stop.changed() => break Outcome::Released,
            };
            match msg {
                Some(Msg::Audio(bytes)) => {
                    stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if let Err(reason) = pending.push(&bytes) {
                        break Outcome::Failed {
                            reason,
                            fatal: false,
                        };
                    }
                }
                Some(Msg::Cut(resume, mixer)) => {
                    pieces.push(pending.len());
                    let cp = Checkpoint {
                        pieces: pieces.clone(),
                        resume,
                        mixer,
                    };
                    let saved = match pending.take() {
                        Ok(piece) => self.store.save(piece, &cp).await,
                        Err(reason) => Err(reason),
                    };
                    if let Err(reason) = saved {
                        break Outcome::Failed {
                            reason,
                            fatal: false,
                        };
                    }
                    ops::log(
                        "info",
                        Some(&self.contact_id),
                        "checkpoint written",
                        &[
                            ("pieces", pieces.len().to_string()),
                            ("audio_bytes", pieces.iter().sum::<u64>().to_string()),
                        ],
                    );
                }
                Some(Msg::Eos) => match pending.take() {
                    Ok(rest) => break self.finish(&pieces, rest, &feed).await,
                    Err(reason) => {
                        break Outcome::Failed {
                            reason,
                            fatal: false,
                        };
                    }
                },
                Some(Msg::Error(reason, fatal)) => break Outcome::Failed { reason, fatal },
                None => {
                    break Outcome::Failed {
                        reason: "the pipeline went away".into(),
                        fatal: false,
                    };
                }
            }
        };
        *stats.counts.lock().unwrap() = ops::source_stats(&src);
        let _ = set_state(&pipeline, gst::State::Null).await;
        outcome
    }

    async fn finish(
        &self,
        pieces: &[u64],
        mut buffer: Vec<u8>,
        feed: &Arc<Mutex<Feed>>,
    ) -> Outcome {
        let (tail, mixer, tracks) = {
            let mut feed = feed.lock().unwrap();
            let tracks = feed
                .channels
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
                .join(",");
            match feed.mixer.as_mut() {
                Some(m) => (m.finish(), m.clone(), tracks),
                None => {
                    return Outcome::Failed {
                        reason: "the stream had no audio track".into(),
                        fatal: true,
                    };
                }
            }
        };
        buffer.extend(tail);
        if pieces.is_empty() && buffer.is_empty() {
            // No 44-byte WAV for a call that never had audio.
            return Outcome::Failed {
                reason: "no audio arrived before the stream ended (or went quiet for the idle \
                         timeout); nothing was written"
                    .into(),
                fatal: false,
            };
        }
        let meta = Meta {
            contact_id: self.contact_id.clone(),
            tracks,
        };
        match self.store.finish(pieces, buffer, &mixer, &meta).await {
            Ok(bytes) => Outcome::Done {
                bytes,
                seconds: mixer.seconds(bytes),
                behind_max_ms: 0,
            },
            Err(reason) => Outcome::Failed {
                reason,
                fatal: false,
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn pipeline(
        &self,
        resume: Option<&Resume>,
        tx: mpsc::UnboundedSender<Msg>,
        restored: Option<Mixer>,
        stats: &Arc<ops::Call>,
    ) -> Result<(gst::Pipeline, gst::Element, Arc<Mutex<Feed>>), String> {
        let make = |f: &str| {
            gst::ElementFactory::make(f)
                .build()
                .map_err(|_| format!("the GStreamer element {f} is missing"))
        };
        let pipeline = gst::Pipeline::new();
        let src = make("kvsgetmediasrc")?;
        let demux = make("kvsaudiodemux")?;
        for (k, v) in source_props(&self.contact, resume, &self.setup) {
            src.set_property_from_str(k, &v);
        }
        // A contact ends where the stream moves on to the next; a range
        // holds whichever contacts it spans.
        demux.set_property("stop-at-contact-end", !self.contact.range);
        pipeline
            .add_many([&src, &demux])
            .map_err(|e| e.to_string())?;
        src.link(&demux).map_err(|e| e.to_string())?;
        let feed = Arc::new(Mutex::new(Feed {
            mixer: None,
            channels: Vec::new(),
            fragment: None,
            since_cut: 0,
            part_size: self.setup.part_size,
            tx: tx.clone(),
        }));
        let pads: Arc<Mutex<Vec<(String, String, u32)>>> = Arc::default();
        let weak = pipeline.downgrade();
        let (f, p, s) = (feed.clone(), pads.clone(), stats.clone());
        demux.connect_pad_added(move |_, pad| {
            let title = crate::output::track_title(pad);
            let rate = pad
                .sticky_event::<gst::event::Caps>(0)
                .and_then(|c| {
                    c.caps()
                        .structure(0)
                        .and_then(|s| s.get::<i32>("rate").ok())
                })
                .unwrap_or(8000);
            p.lock()
                .unwrap()
                .push((pad.name().to_string(), title, rate as u32));
            let (f, s) = (f.clone(), s.clone());
            pad.add_probe(
                gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST
                    | gst::PadProbeType::EVENT_DOWNSTREAM,
                move |pad, info| {
                    let mut feed = f.lock().unwrap();
                    match &info.data {
                        Some(gst::PadProbeData::Buffer(b)) => feed.buffer(pad, b),
                        Some(gst::PadProbeData::BufferList(l)) => {
                            for b in l.iter() {
                                feed.buffer(pad, b);
                            }
                        }
                        Some(gst::PadProbeData::Event(e)) => {
                            if let gst::EventView::Tag(t) = e.view() {
                                feed.tags(t.tag(), &s);
                            }
                        }
                        _ => {}
                    }
                    gst::PadProbeReturn::Ok
                },
            );
            if let Some(pipeline) = weak.upgrade() {
                let sink = gst::ElementFactory::make("fakesink")
                    .property("sync", false)
                    .property("async", false)
                    .build()
                    .unwrap();
                let _ = pipeline.add(&sink);
                let _ = sink.sync_state_with_parent();
                let _ = pad.link(&sink.static_pad("sink").unwrap());
            }
        });
        let (f, tx_pads) = (feed.clone(), tx.clone());
        demux.connect_no_more_pads(move |_| {
            let pads = pads.lock().unwrap();
            let titles: Vec<String> = pads.iter().map(|(_, t, _)| t.clone()).collect();
            let used = crate::output::channels(&titles);
            let mut feed = f.lock().unwrap();
            feed.channels = used
                .iter()
                .enumerate()
                .map(|(c, &i)| (pads[i].0.clone(), c))
                .collect();
            let rate = used.first().map_or(8000, |&i| pads[i].2);
            match &restored {
                Some(m) if m.channels() != used.len() || m.rate() != rate => {
                    let _ = tx_pads.send(Msg::Error(
                        format!(
                            "the stream now has {} tracks at {rate} Hz, the checkpoint {} at {} Hz",
                            used.len(),
                            m.channels(),
                            m.rate()
                        ),
                        true,
                    ));
                }
                Some(m) => feed.mixer = Some(m.clone()),
                None if used.is_empty() => {}
                None => feed.mixer = Some(Mixer::new(rate, used.len())),
            }
        });
        let bus = pipeline.bus().unwrap();
        bus.set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Eos(_) => {
                    let _ = tx.send(Msg::Eos);
                }
                gst::MessageView::Error(e) => {
                    let reason = kvs_tools::failure::BusError::of(e)
                        .line("check the stream ARN of the message");
                    let _ = tx.send(Msg::Error(reason, is_fatal(&e.error())));
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
        Ok((pipeline, src, feed))
    }
}

/// State changes block (the source starts its session on the shared
/// runtime), so they run off the async threads.
async fn set_state(
    pipeline: &gst::Pipeline,
    state: gst::State,
) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
    let pipeline = pipeline.clone();
    tokio::task::spawn_blocking(move || pipeline.set_state(state))
        .await
        .unwrap_or(Err(gst::StateChangeError))
}
