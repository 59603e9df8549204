// SPDX-License-Identifier: MPL-2.0
//! The PutMedia side of kvsputmediasink: one long-lived signed POST at a
//! time, fed from the fragment store as it grows, its acknowledgements read
//! as they arrive. Fragments are let go only when KVS has them; after a
//! drop, an error ACK or a throttle, sending starts again at the first
//! fragment KVS has not acknowledged. Connections are rotated at fragment
//! boundaries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_kinesisvideo::types::ApiName;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::HttpConnectorSettings;

use super::connection::{self, Connection};
use super::imp::CAT;
use super::shared::{Config, Report, Reporter, Shared, Stats, Stop};
use super::transfer::{AcksEnd, Sender, Sent, finish_old, read_acks};
use crate::aws::retry::{Retry, within};
use crate::aws::{Clients, Failure, Pace, classify};
use kvs_mkv::ack::{self, Remedy};

/// Runs until every fragment is acknowledged after the end of input, or
/// until a failure that cannot be retried.
pub async fn run(shared: Arc<Shared>, cfg: Config, report: Reporter) {
    let result = Uploader::new(shared.clone(), cfg, report.clone())
        .await
        .run()
        .await;
    shared.store.lock().unwrap().stopped = true;
    shared.space.notify_all();
    report(match result {
        Ok(()) => Report::Done,
        Err(stop) => Report::Failed(stop),
    });
}

/// How one connection ended.
enum Outcome {
    /// At a fragment boundary, to go on with a new connection from `next`.
    Rotate(u64),
    /// Input ended and every fragment is acknowledged.
    Done,
    /// Lost acknowledgements on an older connection: start again from
    /// the oldest fragment not acknowledged.
    Resend,
    Broken(Failure),
    /// KVS closed a connection with nothing to send for a long while.
    Idle,
    ErrorAck(u32, Option<u64>),
}

struct Uploader {
    shared: Arc<Shared>,
    cfg: Config,
    report: Reporter,
    clients: Clients,
    http: aws_smithy_http_client::Connector,
    endpoint: Option<String>,
    retry: Retry,
    /// Numbers the connections, to tell whose ACK is whose.
    conns: u64,
}

impl Uploader {
    async fn new(shared: Arc<Shared>, cfg: Config, report: Reporter) -> Uploader {
        let clients = Clients::new(&cfg.target).await;
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(10))
            .build();
        let http = aws_smithy_http_client::Connector::builder()
            .connector_settings(settings)
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build();
        let retry = Retry::new(*CAT, cfg.target.stream(), cfg.limits);
        Uploader {
            shared,
            cfg,
            report,
            clients,
            http,
            endpoint: None,
            retry,
            conns: 0,
        }
    }

    fn stream(&self) -> &str {
        self.cfg.target.stream()
    }

    /// Waits after a failure, or gives it back as final.
    async fn recover(&mut self, what: &str, failure: Failure) -> Result<(), Stop> {
        self.shared.stats.lock().unwrap().errors += 1;
        (self.report)(Report::Retrying(format!("{failure:?}")));
        let mut stats = Stats::default();
        let refresh = self
            .retry
            .recover(what, failure, &mut stats)
            .await
            .map_err(Stop::Failure)?;
        {
            let mut s = self.shared.stats.lock().unwrap();
            s.throttles += stats.throttles;
            s.endpoint_refreshes += stats.endpoint_refreshes;
        }
        if refresh {
            self.endpoint = None;
        }
        Ok(())
    }

    async fn run(mut self) -> Result<(), Stop> {
        while let Err(failure) = self.prepare().await {
            self.recover("DescribeStream", failure).await?;
        }
        let mut pace = Pace::default();
        let mut from = None;
        loop {
            if !self.wait_for_work().await {
                return Ok(());
            }
            if self.endpoint.is_none() {
                let limit = self.cfg.limits.request_timeout;
                let endpoint = self
                    .clients
                    .data_endpoint(&self.cfg.target, ApiName::PutMedia);
                match within(limit, "GetDataEndpoint", endpoint).await {
                    Ok(e) => self.endpoint = Some(e),
                    Err(failure) => {
                        self.recover("GetDataEndpoint", failure).await?;
                        continue;
                    }
                }
            }
            pace.call().await;
            let start = {
                let mut store = self.shared.store.lock().unwrap();
                let first = store.fragments.first();
                let from = from.take().filter(|&f| f >= first && !store.resend);
                store.resend = false;
                store.in_flight = None;
                self.shared.idle.store(false, Ordering::SeqCst);
                from.unwrap_or(first)
            };
            let endpoint = self.endpoint.clone().unwrap_or_default();
            let acked = self.shared.stats.lock().unwrap().fragments_persisted;
            let opened = connection::open(&self.http, &self.clients, &self.cfg, &endpoint);
            let opened = within(self.cfg.limits.request_timeout, "PutMedia", opened).await;
            let outcome = match opened {
                Ok(conn) => {
                    self.shared.stats.lock().unwrap().connections += 1;
                    gst::info!(
                        CAT,
                        "Stream {}: PutMedia connected to {endpoint}",
                        self.stream()
                    );
                    self.send(conn, start).await
                }
                Err(failure) => Outcome::Broken(failure),
            };
            // A connection that got fragments through ends a run of failures.
            if self.shared.stats.lock().unwrap().fragments_persisted > acked {
                self.retry.succeeded();
            }
            match outcome {
                Outcome::Rotate(next) => from = Some(next),
                Outcome::Done => return Ok(()),
                Outcome::Resend => {
                    gst::info!(
                        CAT,
                        "Stream {}: acknowledgements were lost; sending again from the oldest fragment not acknowledged",
                        self.stream()
                    );
                }
                Outcome::Broken(failure) => self.recover("PutMedia", failure).await?,
                // KVS closed a connection that had nothing to send: wait
                // for data, then go on (not a failure).
                Outcome::Idle => {
                    gst::debug!(
                        CAT,
                        "Stream {}: KVS closed the idle PutMedia connection",
                        self.stream()
                    );
                    self.retry.succeeded();
                    self.shared.wake.notified().await;
                }
                Outcome::ErrorAck(id, timecode) => {
                    let (meaning, _, remedy) = ack::explain(id);
                    if remedy == Remedy::Fatal || !self.cfg.restart_on_error {
                        return Err(Stop::Ack(id, timecode));
                    }
                    let failure = Failure::Transient(format!("ERROR ACK {id}: {meaning}"));
                    self.recover("PutMedia", failure).await?;
                }
            }
        }
    }

    /// DescribeStream, and CreateStream when the stream is missing and
    /// creating it is allowed. Learns whether KVS will send PERSISTED.
    async fn prepare(&mut self) -> Result<(), Failure> {
        let target = &self.cfg.target;
        let limit = self.cfg.limits.request_timeout;
        let described = self
            .clients
            .video()
            .describe_stream()
            .set_stream_name(target.stream_name.clone())
            .set_stream_arn(target.stream_arn.clone())
            .send();
        let described = within(limit, "DescribeStream", async {
            described.await.map_err(|e| classify(e, false))
        })
        .await;
        let retention = match described {
            Ok(out) => out
                .stream_info
                .and_then(|i| i.data_retention_in_hours)
                .unwrap_or(1),
            Err(failure) => match failure {
                Failure::NotFound(_) if self.cfg.create_stream && target.stream_name.is_some() => {
                    let name = target.stream_name.clone().unwrap();
                    let created = self
                        .clients
                        .video()
                        .create_stream()
                        .stream_name(&name)
                        .data_retention_in_hours(self.cfg.retention_hours as i32)
                        .media_type(&self.cfg.media_type)
                        .send();
                    within(limit, "CreateStream", async {
                        created.await.map_err(|e| classify(e, false))
                    })
                    .await?;
                    gst::info!(
                        CAT,
                        "Stream {name}: created, keeping data {} h",
                        self.cfg.retention_hours
                    );
                    self.cfg.retention_hours as i32
                }
                Failure::NotFound(text) => {
                    return Err(Failure::NotFound(format!(
                        "{text} (set create-stream=true to create it)"
                    )));
                }
                // Without DescribeStream permission, expect PERSISTED.
                Failure::NotAuthorized(text) => {
                    gst::warning!(
                        CAT,
                        "Stream {}: DescribeStream is not allowed ({text}); expecting PERSISTED acknowledgements",
                        self.stream()
                    );
                    1
                }
                other => return Err(other),
            },
        };
        self.shared.persisted.store(retention > 0, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until there is a fragment to send; false when input has
    /// ended and every fragment is acknowledged.
    async fn wait_for_work(&self) -> bool {
        loop {
            let notified = self.shared.wake.notified();
            {
                let store = self.shared.store.lock().unwrap();
                if !store.fragments.is_empty() {
                    return true;
                }
                if store.eos {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Sends from fragment `start` while reading the ACKs.
    async fn send(&mut self, conn: Connection, start: u64) -> Outcome {
        let Connection {
            tx,
            acks,
            rotate_at,
        } = conn;
        self.conns += 1;
        let conn = self.conns;
        let mut acks = tokio::spawn(read_acks(
            self.shared.clone(),
            acks,
            self.report.clone(),
            self.cfg.staleness,
            conn,
        ));
        let idle = self.shared.idle.clone();
        let sender = Sender {
            shared: &self.shared,
            conn,
            tx,
            rotate_at,
            rate: self.cfg.rate,
        };
        tokio::select! {
            end = sender.run(start) => match end {
                Sent::Rotate(next) => {
                    gst::debug!(CAT, "Stream {}: rotating the PutMedia connection", self.stream());
                    tokio::spawn(finish_old(self.shared.clone(), acks, conn));
                    Outcome::Rotate(next)
                }
                Sent::Finished => match acks.await {
                    Ok(AcksEnd::Closed) if self.shared.store.lock().unwrap().fragments.is_empty() => {
                        Outcome::Done
                    }
                    Ok(AcksEnd::Closed) => Outcome::Broken(Failure::Transient(
                        "the connection ended before every fragment was acknowledged".into(),
                    )),
                    Ok(AcksEnd::Broken(f)) => Outcome::Broken(f),
                    Ok(AcksEnd::ErrorAck(id, t)) => Outcome::ErrorAck(id, t),
                    Err(e) => Outcome::Broken(Failure::Transient(e.to_string())),
                },
                // This connection's own ACKs first: only what KVS lacks
                // goes again.
                Sent::Resend => {
                    let _ = acks.await;
                    Outcome::Resend
                }
                // ACKs that arrived before the break still count: a fragment
                // they acknowledge must not go again.
                Sent::Broken => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut acks).await;
                    acks.abort();
                    Outcome::Broken(Failure::Transient("the PutMedia connection broke while sending".into()))
                }
            },
            end = &mut acks => match end {
                Ok(AcksEnd::ErrorAck(id, t)) => Outcome::ErrorAck(id, t),
                Ok(AcksEnd::Broken(f)) => Outcome::Broken(f),
                Ok(AcksEnd::Closed) if idle.load(Ordering::SeqCst) => Outcome::Idle,
                Ok(AcksEnd::Closed) => Outcome::Broken(Failure::Transient("KVS closed the PutMedia connection".into())),
                Err(e) => Outcome::Broken(Failure::Transient(e.to_string())),
            },
        }
    }
}
