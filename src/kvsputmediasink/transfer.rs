// SPDX-License-Identifier: MPL-2.0
//! What moves on one PutMedia connection: fragment bytes out of the store
//! as they are written, and acknowledgements back, letting fragments go.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_smithy_types::byte_stream::ByteStream;
use bytes::Bytes;

use super::connection::BodyTx;
use super::session::{Report, Reporter, Shared};
use crate::aws::Failure;
use crate::put::ack::{self, Event};

/// How sending on a connection ended.
pub enum Sent {
    Rotate(u64),
    Finished,
    Resend,
    Broken,
}

/// What the sender found in the store.
enum Found {
    /// Bytes to send, whether the fragment is closed, and the offset in it
    /// they reach.
    Data(Bytes, bool, usize),
    Wait,
    Skip(u64),
    End(Sent),
}

pub struct Sender<'a> {
    pub shared: &'a Shared,
    pub tx: BodyTx,
    pub rotate_at: Instant,
    pub rate: u64,
}

impl Sender<'_> {
    /// Sends from fragment `start` until a boundary calls for a new
    /// connection, input ends, or the connection breaks.
    pub async fn run(self, start: u64) -> Sent {
        let began = Instant::now();
        let mut sent = 0u64;
        let (mut seq, mut offset) = (start, 0usize);
        let mut header = None;
        loop {
            let notified = self.shared.wake.notified();
            let found = self.look(seq, offset, &mut header);
            match found {
                Found::Data(bytes, closed, reached) => {
                    offset = reached;
                    sent += bytes.len() as u64;
                    if !bytes.is_empty() {
                        self.shared.stats.lock().unwrap().bytes_sent += bytes.len() as u64;
                        if !self.tx.send(bytes).await {
                            return Sent::Broken;
                        }
                    }
                    if closed {
                        (seq, offset) = (seq + 1, 0);
                    }
                    if self.rate > 0 {
                        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
                        if let Some(wait) = due.checked_sub(began.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                Found::Skip(first) => (seq, offset) = (first, 0),
                Found::Wait => notified.await,
                Found::End(end) => {
                    self.tx.finish();
                    return end;
                }
            }
        }
    }

    /// The next bytes to send at (`seq`, `offset`), after the connection's
    /// headers if none went yet.
    fn look(&self, seq: u64, offset: usize, header: &mut Option<Arc<Vec<u8>>>) -> Found {
        let mut store = self.shared.store.lock().unwrap();
        if offset == 0 && store.resend {
            return Found::End(Sent::Resend);
        }
        let first = store.fragments.first();
        let eos = store.eos;
        let Some(f) = store.fragments.get_mut(seq) else {
            return match () {
                _ if seq < first => Found::Skip(first),
                _ if eos => Found::End(Sent::Finished),
                _ => Found::Wait,
            };
        };
        let mut bytes = Vec::new();
        let mut again = None;
        if offset == 0 {
            match header {
                Some(h) if !Arc::ptr_eq(h, &f.header) || Instant::now() >= self.rotate_at => {
                    return Found::End(Sent::Rotate(seq));
                }
                Some(_) => {}
                None => {
                    *header = Some(f.header.clone());
                    bytes.extend_from_slice(&f.header);
                }
            }
            f.sends += 1;
            again = Some(f.sends > 1);
        } else if offset >= f.bytes.len() && !f.closed {
            return Found::Wait;
        }
        bytes.extend_from_slice(&f.bytes[offset.min(f.bytes.len())..]);
        let found = Found::Data(Bytes::from(bytes), f.closed, f.bytes.len());
        store.in_flight = (!f.closed).then_some(seq);
        drop(store);
        if let Some(again) = again {
            self.count_send(again);
        }
        found
    }

    fn count_send(&self, again: bool) {
        let mut stats = self.shared.stats.lock().unwrap();
        if again {
            stats.fragments_resent += 1;
        } else {
            stats.fragments_sent += 1;
        }
    }
}

/// How an ACK stream ended.
pub enum AcksEnd {
    Closed,
    Broken(Failure),
    ErrorAck(u32, Option<u64>),
}

/// Reads the ACKs of one connection, letting fragments go as KVS
/// acknowledges them.
pub async fn read_acks(
    shared: Arc<Shared>,
    mut body: ByteStream,
    report: Reporter,
    staleness: Duration,
) -> AcksEnd {
    let mut reader = ack::Reader::default();
    loop {
        let chunk = match tokio::time::timeout(staleness, body.next()).await {
            Err(_) => {
                return AcksEnd::Broken(Failure::Transient(format!(
                    "no acknowledgement for {} s",
                    staleness.as_secs()
                )));
            }
            Ok(None) => return AcksEnd::Closed,
            Ok(Some(Err(e))) => {
                return AcksEnd::Broken(Failure::Transient(format!(
                    "the acknowledgement stream broke: {e}"
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let acks = match reader.push(&chunk) {
            Ok(acks) => acks,
            Err(e) => return AcksEnd::Broken(Failure::Transient(e)),
        };
        for a in acks {
            let final_event = if shared.persisted.load(Ordering::SeqCst) {
                Event::Persisted
            } else {
                Event::Received
            };
            match a.event {
                Event::Error => return AcksEnd::ErrorAck(a.error_id.unwrap_or(5000), a.timecode),
                e if e == final_event => {
                    let Some(timecode) = a.timecode else {
                        continue;
                    };
                    let released = shared.store.lock().unwrap().fragments.release(timecode);
                    if released.is_empty() {
                        continue;
                    }
                    shared.space.notify_all();
                    let mut stats = shared.stats.lock().unwrap();
                    for f in released {
                        let latency = f.closed_at.map_or(Duration::ZERO, |t| t.elapsed());
                        let ms = latency.as_millis() as u64;
                        stats.fragments_persisted += 1;
                        stats.last_latency_ms = ms;
                        stats.max_latency_ms = stats.max_latency_ms.max(ms);
                        stats.total_latency_ms += ms;
                        report(Report::Acknowledged {
                            timecode: f.timecode,
                            number: a.number.clone().unwrap_or_default(),
                            latency,
                            sends: f.sends,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// After a rotation: the old connection's last ACKs. If they do not all
/// come, the fragments it carried are sent again.
pub async fn finish_old(shared: Arc<Shared>, acks: tokio::task::JoinHandle<AcksEnd>, next: u64) {
    let end = acks.await;
    let mut store = shared.store.lock().unwrap();
    let missing = store.fragments.first() < next && !store.fragments.is_empty();
    if !matches!(end, Ok(AcksEnd::Closed)) || missing {
        store.resend = true;
        drop(store);
        shared.wake.notify_one();
    }
}
