// SPDX-License-Identifier: MPL-2.0
//! What moves on one PutMedia connection: fragment bytes out of the store
//! as they are written, and acknowledgements back, letting fragments go.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_smithy_types::byte_stream::ByteStream;
use bytes::Bytes;

use super::connection::BodyTx;
use super::shared::{Report, Reporter, Shared};
use crate::aws::Failure;
use kvs_mkv::ack::{self, Event};

/// Nothing to send for this long: a close by KVS is then expected.
const IDLE: Duration = Duration::from_secs(10);

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
    /// This connection's number, marked on the fragments it sends.
    pub conn: u64,
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
                // Idle past this, KVS may close the connection (it does
                // after 30 s): that is not a failure.
                Found::Wait => {
                    if tokio::time::timeout(IDLE, notified).await.is_err() {
                        self.shared.idle.store(true, Ordering::SeqCst);
                        self.shared.wake.notified().await;
                    }
                    self.shared.idle.store(false, Ordering::SeqCst);
                }
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
            // Acknowledged already (sent before a resend began).
            if f.acked {
                return Found::Skip(seq + 1);
            }
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
            f.conn = self.conn;
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
    conn: u64,
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
        let (acks, broken) = reader.push(&chunk);
        for a in acks {
            let final_event = if shared.persisted.load(Ordering::SeqCst) {
                Event::Persisted
            } else {
                Event::Received
            };
            match a.event {
                Event::Error => return AcksEnd::ErrorAck(a.error_id.unwrap_or(5000), a.timecode),
                e if e == final_event => {
                    if let Some(timecode) = a.timecode {
                        let number = a.number.unwrap_or_default();
                        release(&shared, &report, timecode, conn, &number);
                    }
                }
                _ => {}
            }
        }
        if let Some(e) = broken {
            return AcksEnd::Broken(Failure::Transient(e));
        }
    }
}

/// Lets go what an ACK on connection `conn` acknowledges, then reports it
/// (with no lock held: a bus handler may read the stats).
fn release(shared: &Shared, report: &Reporter, timecode: u64, conn: u64, number: &str) {
    let released = shared
        .store
        .lock()
        .unwrap()
        .fragments
        .acknowledge(timecode, conn);
    if released.is_empty() {
        return;
    }
    shared.space.notify_all();
    let mut reports = Vec::with_capacity(released.len());
    {
        let mut stats = shared.stats.lock().unwrap();
        for f in released {
            let latency = f.closed_at.map_or(Duration::ZERO, |t| t.elapsed());
            let ms = latency.as_millis() as u64;
            stats.fragments_persisted += 1;
            stats.last_latency_ms = ms;
            stats.max_latency_ms = stats.max_latency_ms.max(ms);
            stats.total_latency_ms += ms;
            reports.push(Report::Acknowledged {
                timecode: f.timecode,
                number: if f.timecode == timecode {
                    number.to_string()
                } else {
                    String::new()
                },
                latency,
                sends: f.sends,
            });
        }
    }
    reports.into_iter().for_each(|r| report(r));
}

/// After a rotation: the old connection's last ACKs. If they do not all
/// come, the fragments it carried are sent again.
pub async fn finish_old(shared: Arc<Shared>, acks: tokio::task::JoinHandle<AcksEnd>, conn: u64) {
    let end = acks.await;
    let mut store = shared.store.lock().unwrap();
    if !matches!(end, Ok(AcksEnd::Closed)) || store.fragments.waiting_on(conn) {
        store.resend = true;
        drop(store);
        shared.wake.notify_one();
    }
}
