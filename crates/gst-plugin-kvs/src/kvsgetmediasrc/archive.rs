// SPDX-License-Identifier: MPL-2.0
//! Archive mode: ListFragments over a time range, then the fragments in
//! order through GetMediaForFragmentList, in batches of up to 1,000, several
//! fetched at once (`archive-connections`) and read in order. A failed or
//! cut batch is fetched again from its first fragment not yet complete.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::Client;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    FragmentSelector, FragmentSelectorType, TimestampRange,
};
use aws_smithy_types::DateTime;
use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, mpsc};

use super::imp::CAT;
use super::live::{Next, Policy, Stats};
use crate::aws::retry::{Retry, within};
use crate::aws::{self, Clients, Failure, Pace, Target};
use kvs_mkv::feed::Scanner;
use kvs_mkv::kvs;
use kvs_mkv::{Event, Parser};

/// GetMediaForFragmentList takes at most this many fragments.
pub const BATCH: usize = 1000;
/// What a batch may hold ahead of the reader before it waits, in KiB.
const AHEAD_KIB: usize = 8 * 1024;

/// What the reader joins into one buffer, of the chunks already downloaded,
/// in bytes: downstream then wakes once per 256 KiB, not once per read.
const GATHER: usize = 256 * 1024;

/// The KiB of the budget a chunk takes.
fn cost(bytes: &Bytes) -> u32 {
    bytes.len().div_ceil(1024).min(AHEAD_KIB) as u32
}

/// Fragments per batch: the range split over `connections`, at most BATCH.
pub fn batch_len(total: usize, connections: usize) -> usize {
    total.div_ceil(connections.max(1)).clamp(1, BATCH)
}

/// The time range to record, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub start: f64,
    pub end: f64,
    /// Producer timestamps rather than server ones.
    pub producer: bool,
}

/// One fragment as ListFragments describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub number: String,
    /// On the range's clock, in ms since the Unix epoch.
    pub timestamp_ms: i64,
    pub duration_ms: u64,
    pub size: u64,
}

/// Puts listed fragments in stream order: by timestamp, then by fragment
/// number as a big integer; drops repeats.
pub fn order(list: &mut Vec<Listed>) {
    list.sort_by(|a, b| {
        a.timestamp_ms
            .cmp(&b.timestamp_ms)
            .then_with(|| kvs::compare_fragment_numbers(&a.number, &b.number))
    });
    list.dedup_by(|a, b| kvs::compare_fragment_numbers(&a.number, &b.number) == Ordering::Equal);
}

/// Where a position falls in a listed range: the fragment index, and its
/// start in ms and in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    pub index: usize,
    pub ms: u64,
    pub byte: u64,
}

/// In a table of fragments' (length in ms, size in bytes), the fragment
/// that holds `ms` (`by_byte`: byte `ms`); past the end, the last one.
pub fn locate(table: &[(u64, u64)], at: u64, by_byte: bool) -> Spot {
    let mut spot = Spot {
        index: 0,
        ms: 0,
        byte: 0,
    };
    for (i, &(ms, size)) in table.iter().enumerate() {
        spot.index = i;
        let end = if by_byte {
            spot.byte + size
        } else {
            spot.ms + ms
        };
        if at < end || i + 1 == table.len() {
            break;
        }
        spot.ms += ms;
        spot.byte += size;
    }
    spot
}

/// A GetMediaForFragmentList call in flight, feeding its body to a channel.
struct Batch {
    first: usize,
    end: usize,
    rx: mpsc::UnboundedReceiver<Result<Bytes, Failure>>,
    /// KiB the fetch may still read ahead.
    budget: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
    /// Chunk headers seen so far: the fragments begun.
    begun: usize,
    /// A failure met while gathering, for the next `recv`.
    held: Option<Failure>,
}

impl Batch {
    /// The next chunk, joined with those already downloaded after it, up
    /// to `GATHER` bytes.
    async fn recv(&mut self) -> Option<Result<Bytes, Failure>> {
        if let Some(failure) = self.held.take() {
            return Some(Err(failure));
        }
        let first = match self.rx.recv().await? {
            Ok(bytes) => bytes,
            Err(failure) => return Some(Err(failure)),
        };
        self.budget.add_permits(cost(&first) as usize);
        let mut joined: Option<BytesMut> = None;
        while joined.as_ref().map_or(first.len(), BytesMut::len) < GATHER {
            match self.rx.try_recv() {
                Ok(Ok(more)) => {
                    self.budget.add_permits(cost(&more) as usize);
                    let j = joined.get_or_insert_with(|| {
                        let mut j = BytesMut::with_capacity(GATHER + more.len());
                        j.extend_from_slice(&first);
                        j
                    });
                    j.extend_from_slice(&more);
                }
                Ok(Err(failure)) => {
                    self.held = Some(failure);
                    break;
                }
                Err(_) => break,
            }
        }
        Some(Ok(joined.map_or(first, BytesMut::freeze)))
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a fetch may wait: for its answer to begin, then between reads.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    request: Duration,
    read: Duration,
}

/// Fetches `numbers` and forwards the body as it arrives, within `budget`.
async fn fetch(
    client: Client,
    target: Target,
    numbers: Vec<String>,
    deadlines: Deadlines,
    budget: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Result<Bytes, Failure>>,
) {
    let sent = client
        .get_media_for_fragment_list()
        .set_stream_name(target.stream_name)
        .set_stream_arn(target.stream_arn)
        .set_fragments(Some(numbers))
        .send();
    let answer = async { sent.await.map_err(|e| aws::classify(e, true)) };
    let mut body = match within(deadlines.request, "GetMediaForFragmentList", answer).await {
        Ok(out) => out.payload,
        Err(failure) => {
            let _ = tx.send(Err(failure));
            return;
        }
    };
    let read_timeout = deadlines.read;
    loop {
        let failure = match tokio::time::timeout(read_timeout, body.next()).await {
            Ok(Some(Ok(bytes))) => {
                match budget.acquire_many(cost(&bytes)).await {
                    Ok(permits) => permits.forget(),
                    Err(_) => return,
                }
                if tx.send(Ok(bytes)).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => Failure::Transient(format!("the body broke: {e}")),
            Err(_) => Failure::Transient(format!("no data for {read_timeout:?}")),
        };
        let _ = tx.send(Err(failure));
        return;
    }
}

pub struct Archive {
    target: Target,
    range: Range,
    policy: Policy,
    clients: Clients,
    lister: Option<Client>,
    fetcher: Option<Client>,
    list_pace: Pace,
    fetch_pace: Pace,
    /// None until listed.
    fragments: Option<Vec<Listed>>,
    /// Fragments complete, in order, and their duration and size.
    done: usize,
    done_ms: u64,
    done_bytes: u64,
    inflight: VecDeque<Batch>,
    /// The first fragment no batch asked for yet.
    requested: usize,
    /// Counts chunk headers: where fragments begin.
    scanner: Scanner,
    retry: Retry,
    discont: bool,
    pub stats: Stats,
}

/// How far an archive run has come.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub done_ms: u64,
    pub total_ms: u64,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

impl Archive {
    pub async fn new(target: Target, range: Range, policy: Policy) -> Archive {
        let clients = Clients::new(&target).await;
        let retry = Retry::new(*CAT, target.stream(), policy.limits);
        Archive {
            target,
            range,
            policy,
            clients,
            lister: None,
            fetcher: None,
            list_pace: Pace::default(),
            fetch_pace: Pace::default(),
            fragments: None,
            done: 0,
            done_ms: 0,
            done_bytes: 0,
            inflight: VecDeque::new(),
            requested: 0,
            scanner: Scanner::new(Parser::metadata_only()),
            retry,
            discont: false,
            stats: Stats::default(),
        }
    }

    pub fn region(&self) -> &str {
        self.clients.region()
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// None until the listing is done.
    pub fn progress(&self) -> Option<Progress> {
        let list = self.fragments.as_ref()?;
        Some(Progress {
            done: self.done,
            total: list.len(),
            done_ms: self.done_ms,
            total_ms: list.iter().map(|f| f.duration_ms).sum(),
            done_bytes: self.done_bytes,
            total_bytes: list.iter().map(|f| f.size).sum(),
        })
    }

    /// Each fragment's (length in ms, size in bytes). None until listed.
    pub fn table(&self) -> Option<Vec<(u64, u64)>> {
        let list = self.fragments.as_ref()?;
        Some(list.iter().map(|f| (f.duration_ms, f.size)).collect())
    }

    /// Goes on from fragment `index`: batches in flight are dropped, and
    /// the next bytes are that fragment's, flagged DISCONT.
    pub fn seek_to(&mut self, index: usize) {
        let Some(list) = self.fragments.as_ref() else {
            return;
        };
        let index = index.min(list.len());
        self.done_ms = list[..index].iter().map(|f| f.duration_ms).sum();
        self.done_bytes = list[..index].iter().map(|f| f.size).sum();
        self.done = index;
        self.requested = index;
        self.inflight.clear();
        self.reset_scan();
        self.discont = true;
    }

    /// Lists the range (once). Returns the number of fragments.
    pub async fn list(&mut self) -> Result<usize, Failure> {
        if let Some(list) = &self.fragments {
            return Ok(list.len());
        }
        let mut all = Vec::new();
        let mut token = None;
        loop {
            match self.list_page(token.clone()).await {
                Ok((page, next)) => {
                    self.retry.succeeded();
                    all.extend(page);
                    match next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
                Err(failure) => {
                    self.recover(failure, true).await?;
                }
            }
        }
        order(&mut all);
        let n = all.len();
        gst::info!(
            CAT,
            "Stream {}: ListFragments found {n} fragments ({} ms, {} bytes) in the range",
            self.target.stream(),
            all.iter().map(|f| f.duration_ms).sum::<u64>(),
            all.iter().map(|f| f.size).sum::<u64>()
        );
        self.fragments = Some(all);
        Ok(n)
    }

    async fn list_page(
        &mut self,
        token: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>), Failure> {
        let limit = self.policy.limits.request_timeout;
        if self.lister.is_none() {
            let client = self
                .clients
                .archive_client(&self.target, ApiName::ListFragments);
            self.lister = Some(within(limit, "GetDataEndpoint", client).await?);
        }
        self.list_pace.call().await;
        let kind = if self.range.producer {
            FragmentSelectorType::ProducerTimestamp
        } else {
            FragmentSelectorType::ServerTimestamp
        };
        let range = TimestampRange::builder()
            .start_timestamp(DateTime::from_secs_f64(self.range.start))
            .end_timestamp(DateTime::from_secs_f64(self.range.end))
            .build()
            .map_err(|e| Failure::InvalidArgument(e.to_string()))?;
        let selector = FragmentSelector::builder()
            .fragment_selector_type(kind)
            .timestamp_range(range)
            .build()
            .map_err(|e| Failure::InvalidArgument(e.to_string()))?;
        let sent = self
            .lister
            .as_ref()
            .unwrap()
            .list_fragments()
            .set_stream_name(self.target.stream_name.clone())
            .set_stream_arn(self.target.stream_arn.clone())
            .fragment_selector(selector)
            .max_results(BATCH as i64)
            .set_next_token(token)
            .send();
        let answer = async { sent.await.map_err(|e| aws::classify(e, true)) };
        let out = within(limit, "ListFragments", answer).await?;
        let producer = self.range.producer;
        let page = out
            .fragments()
            .iter()
            .filter_map(|f| {
                let t = if producer {
                    f.producer_timestamp()
                } else {
                    f.server_timestamp()
                };
                Some(Listed {
                    number: f.fragment_number()?.to_string(),
                    timestamp_ms: t.and_then(|t| t.to_millis().ok()).unwrap_or(0),
                    duration_ms: f.fragment_length_in_milliseconds().max(0) as u64,
                    size: f.fragment_size_in_bytes().max(0) as u64,
                })
            })
            .collect();
        Ok((page, out.next_token().map(String::from)))
    }

    /// The next bytes, in fragment order; `End` after the last fragment.
    pub async fn next(&mut self) -> Result<Next, Failure> {
        // The rare steps are boxed: this future is made for every chunk, and
        // the SDK calls inside them would make it large to move.
        let listed = match &self.fragments {
            Some(list) => list.len(),
            None => Box::pin(self.list()).await?,
        };
        if listed == 0 {
            let r = self.range;
            let clock = if r.producer { "producer" } else { "server" };
            return Err(Failure::NoFragments(format!(
                "from {} to {} ({clock} timestamps)",
                r.start, r.end
            )));
        }
        loop {
            if self.needs_batch() {
                Box::pin(self.prefetch()).await?;
            }
            let Some(batch) = self.inflight.front_mut() else {
                return Ok(Next::End);
            };
            match batch.recv().await {
                Some(Ok(bytes)) => {
                    self.retry.succeeded();
                    self.watch(&bytes);
                    self.stats.bytes += bytes.len() as u64;
                    return Ok(Next::Data(bytes, std::mem::take(&mut self.discont)));
                }
                None => {
                    // The body ended: its last fragment is complete.
                    let batch = self.inflight.pop_front().unwrap();
                    if batch.begun > 0 {
                        self.complete(batch.first + batch.begun);
                    }
                    self.reset_scan();
                    if self.done < batch.end {
                        let failure = Failure::Transient("the body ended early".into());
                        Box::pin(self.retry(batch.end, failure)).await?;
                    }
                }
                Some(Err(failure)) => {
                    let batch = self.inflight.pop_front().unwrap();
                    self.reset_scan();
                    Box::pin(self.retry(batch.end, failure)).await?;
                }
            }
        }
    }

    fn needs_batch(&self) -> bool {
        let total = self.fragments.as_ref().map_or(0, Vec::len);
        self.inflight.len() < self.policy.archive_connections.max(1) && self.requested < total
    }

    /// Starts batches until `archive-connections` are in flight.
    async fn prefetch(&mut self) -> Result<(), Failure> {
        let total = self.fragments.as_ref().map_or(0, Vec::len);
        let len = batch_len(total, self.policy.archive_connections);
        while self.needs_batch() {
            let end = (self.requested + len).min(total);
            let batch = self.start_batch(self.requested, end).await?;
            self.inflight.push_back(batch);
            self.requested = end;
        }
        Ok(())
    }

    async fn start_batch(&mut self, first: usize, end: usize) -> Result<Batch, Failure> {
        if self.fetcher.is_none() {
            let api = ApiName::GetMediaForFragmentList;
            let limit = self.policy.limits.request_timeout;
            loop {
                let client = self.clients.archive_client(&self.target, api.clone());
                match within(limit, "GetDataEndpoint", client).await {
                    Ok(client) => {
                        self.fetcher = Some(client);
                        break;
                    }
                    Err(failure) => self.recover(failure, false).await?,
                }
            }
        }
        self.fetch_pace.call().await;
        gst::debug!(
            CAT,
            "Stream {}: GetMediaForFragmentList for fragments {first} to {}",
            self.target.stream(),
            end - 1
        );
        let numbers = self.fragments.as_ref().unwrap()[first..end]
            .iter()
            .map(|f| f.number.clone())
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(AHEAD_KIB));
        let task = tokio::spawn(fetch(
            self.fetcher.clone().unwrap(),
            self.target.clone(),
            numbers,
            Deadlines {
                request: self.policy.limits.request_timeout,
                read: self.policy.read_timeout,
            },
            budget.clone(),
            tx,
        ));
        Ok(Batch {
            first,
            end,
            rx,
            budget,
            task,
            begun: 0,
            held: None,
        })
    }

    /// Fetches again, from the first fragment not complete up to `end`, in
    /// front of the batches already in flight.
    async fn retry(&mut self, end: usize, failure: Failure) -> Result<(), Failure> {
        self.stats.reconnects += 1;
        self.discont = true;
        gst::info!(
            CAT,
            "Stream {}: a batch broke off ({failure:?}); fetching again from fragment {}",
            self.target.stream(),
            self.done
        );
        self.recover(failure, false).await?;
        let batch = self.start_batch(self.done, end).await?;
        self.inflight.push_front(batch);
        Ok(())
    }

    /// Waits before trying again, or gives up.
    async fn recover(&mut self, failure: Failure, listing: bool) -> Result<(), Failure> {
        let what = if listing {
            "ListFragments"
        } else {
            "GetMediaForFragmentList"
        };
        if self.retry.recover(what, failure, &mut self.stats).await? {
            if listing {
                self.lister = None;
            } else {
                self.fetcher = None;
            }
        }
        Ok(())
    }

    /// Marks fragments before `upto` complete.
    fn complete(&mut self, upto: usize) {
        let list = self.fragments.as_ref().unwrap();
        while self.done < upto.min(list.len()) {
            let f = &list[self.done];
            self.done_ms += f.duration_ms;
            self.done_bytes += f.size;
            self.stats.fragments += 1;
            self.done += 1;
        }
    }

    fn reset_scan(&mut self) {
        self.scanner.reset();
    }

    /// Counts chunk headers: each one after a batch's first completes the
    /// fragment before it.
    fn watch(&mut self, bytes: &[u8]) {
        let mut headers = 0;
        self.scanner.push(bytes, |event, _| {
            headers += usize::from(matches!(event, Event::Header { .. }));
        });
        if headers > 0 {
            let batch = self.inflight.front_mut().unwrap();
            batch.begun += headers;
            let upto = batch.first + batch.begun - 1;
            self.complete(upto);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(number: &str, t: i64) -> Listed {
        Listed {
            number: number.into(),
            timestamp_ms: t,
            duration_ms: 1000,
            size: 10,
        }
    }

    #[test]
    fn locate_by_time_and_by_byte() {
        let table = [(1000, 10), (1000, 10), (1000, 10)];
        let spot = |index, ms, byte| Spot { index, ms, byte };
        assert_eq!(locate(&table, 0, false), spot(0, 0, 0));
        assert_eq!(locate(&table, 1500, false), spot(1, 1000, 10));
        assert_eq!(
            locate(&table, 99_000, false),
            spot(2, 2000, 20),
            "past the end"
        );
        assert_eq!(locate(&table, 25, true), spot(2, 2000, 20));
        assert_eq!(locate(&[], 5, true), spot(0, 0, 0));
    }

    #[test]
    fn batches_split_the_range_over_the_connections() {
        assert_eq!(batch_len(3600, 2), 1000, "at most 1,000 fragments");
        assert_eq!(batch_len(1800, 2), 900);
        assert_eq!(batch_len(1800, 5), 360);
        assert_eq!(batch_len(7, 3), 3);
        assert_eq!(batch_len(1, 5), 1);
        assert_eq!(batch_len(10, 0), 10, "0 counts as 1");
    }

    #[test]
    fn order_by_time_then_number() {
        let mut list = vec![
            listed("100", 2000),
            listed("99", 1000),
            listed("1000", 1000),
            listed("100", 2000),
            listed("0099", 1000),
            listed("5", 3000),
        ];
        order(&mut list);
        let numbers: Vec<&str> = list.iter().map(|f| f.number.as_str()).collect();
        assert_eq!(numbers, ["99", "1000", "100", "5"]);
    }

    #[test]
    fn a_batch_gathers_what_is_downloaded_and_keeps_a_failure_for_later() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let budget = Arc::new(Semaphore::new(0));
            let mut batch = Batch {
                first: 0,
                end: 1,
                rx,
                budget: budget.clone(),
                task: tokio::spawn(async {}),
                begun: 0,
                held: None,
            };
            let chunk = |byte: u8| Ok(Bytes::from(vec![byte; 100 * 1024]));
            for byte in 0..5 {
                tx.send(chunk(byte)).unwrap();
            }
            tx.send(Err(Failure::Transient("cut".into()))).unwrap();
            tx.send(chunk(9)).unwrap();
            // Three chunks reach GATHER: they leave as one buffer, in order.
            let first = batch.recv().await.unwrap().unwrap();
            assert_eq!(first.len(), 300 * 1024);
            assert!(
                first
                    .chunks(100 * 1024)
                    .zip(0u8..)
                    .all(|(c, b)| c.iter().all(|&x| x == b))
            );
            // The rest up to the failure; the failure next, then what follows.
            let second = batch.recv().await.unwrap().unwrap();
            assert_eq!(
                (second.len(), second[0], second[second.len() - 1]),
                (200 * 1024, 3, 4)
            );
            assert!(matches!(
                batch.recv().await,
                Some(Err(Failure::Transient(_)))
            ));
            assert_eq!(batch.recv().await.unwrap().unwrap()[0], 9);
            // Every chunk taken gave its budget back.
            assert_eq!(budget.available_permits(), 6 * 100);
            drop(tx);
            assert!(batch.recv().await.is_none());
        });
    }
}
