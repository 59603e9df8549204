// SPDX-License-Identifier: MPL-2.0
//! What kvsputmediasink's element side and its PutMedia session share: the
//! session's configuration, the fragment store both touch, the counts for
//! `stats`, and what the session reports back.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::fragments::Fragments;
use crate::aws::retry::{Counts, Limits};
use crate::aws::{Failure, Target};

/// How a session runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub create_stream: bool,
    pub retention_hours: u32,
    pub media_type: String,
    /// Rotate the connection at the first fragment boundary after this.
    pub max_age: Duration,
    /// Rotate this long before the credentials expire.
    pub credentials_margin: Duration,
    /// When failures in a row are final, and how long a request may wait.
    pub limits: Limits,
    /// Reconnect after an ERROR ACK that sending again can fix.
    pub restart_on_error: bool,
    /// Bytes a second at most (KVS reads 12.5 MB/s); 0: no limit.
    pub rate: u64,
    /// A connection with no acknowledgement for this long is dead.
    pub staleness: Duration,
}

/// The fragments and what the element and the session tell each other.
pub struct Backlog {
    pub fragments: Fragments,
    /// Input has ended and the last fragment is closed.
    pub eos: bool,
    /// A connection that was rotated away lost acknowledgements: send
    /// again from the oldest fragment not acknowledged.
    pub resend: bool,
    /// The session has stopped for good.
    pub stopped: bool,
    /// The fragment the sender is in the middle of: not to be dropped.
    pub in_flight: Option<u64>,
}

/// Counts for the `stats` property.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub connections: u64,
    pub fragments_sent: u64,
    pub fragments_persisted: u64,
    pub fragments_resent: u64,
    pub fragments_dropped: u64,
    pub bytes_sent: u64,
    pub errors: u64,
    pub throttles: u64,
    pub endpoint_refreshes: u64,
    pub last_latency_ms: u64,
    pub max_latency_ms: u64,
    pub total_latency_ms: u64,
}

impl Counts for Stats {
    fn throttled(&mut self) {
        self.throttles += 1;
    }

    fn refreshed(&mut self) {
        self.endpoint_refreshes += 1;
    }
}

pub struct Shared {
    pub store: Mutex<Backlog>,
    /// Signalled when fragments are let go (room in the store).
    pub space: Condvar,
    /// Woken when there is more to send.
    pub wake: Notify,
    pub stats: Mutex<Stats>,
    /// KVS sends PERSISTED (the stream keeps data); else RECEIVED is final.
    pub persisted: AtomicBool,
    /// The sender has had nothing to send for a while.
    pub idle: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(fragments: Fragments) -> Self {
        Shared {
            store: Mutex::new(Backlog {
                fragments,
                eos: false,
                resend: false,
                stopped: false,
                in_flight: None,
            }),
            space: Condvar::new(),
            wake: Notify::new(),
            stats: Mutex::new(Stats::default()),
            persisted: AtomicBool::new(true),
            idle: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What the session tells the element.
#[derive(Debug, Clone)]
pub enum Report {
    /// KVS has the fragment.
    Acknowledged {
        timecode: u64,
        number: String,
        latency: Duration,
        sends: u32,
    },
    /// Sending stopped and will start again.
    Retrying(String),
    /// Every fragment is acknowledged after the end of input.
    Done,
    /// A failure that ends the session.
    Failed(Stop),
}

/// Why a session stopped for good.
#[derive(Debug, Clone)]
pub enum Stop {
    Failure(Failure),
    /// An ERROR ACK: its ErrorId and the fragment timecode.
    Ack(u32, Option<u64>),
}

pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;
