// SPDX-License-Identifier: MPL-2.0
//! `kvs-record serve`: takes Amazon Connect contact events from an SQS
//! queue and records each contact to a WAV object in S3, many at once, with
//! checkpoints so that another worker can finish a call this one could not.

mod call;
mod checkpoint;
mod dir;
mod mix;
mod ops;
mod opus;
mod queue;
mod s3;
pub mod split;
mod spool;
mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::watch;
use tokio::task::JoinSet;

use call::{Job, Outcome, Setup};
use ops::{Metrics, log};
use queue::{Message, Queue};
use store::{Backend, Destination, Format};

/// `kvs-record serve`'s command line. Every option can also be set with
/// its environment variable.
#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "Records Amazon Connect contacts from an SQS queue to S3 or a directory",
    args_override_self = true,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    group(clap::ArgGroup::new("storage").args(["bucket", "out_dir"]).required(true))
)]
pub struct Cli {
    #[command(flatten)]
    place: Place,
    /// Calls recorded at once
    #[arg(long, value_name = "N", env = "KVS_RECORD_MAX_CALLS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    max_calls: u64,
    /// Seconds a running call's message stays hidden; it is renewed every third of that
    #[arg(long, value_name = "S", env = "KVS_RECORD_VISIBILITY", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..))]
    visibility: u64,
    /// Seconds before a failed call's message comes back; the queue's redrive policy
    /// dead-letters it after its maxReceiveCount
    #[arg(
        long,
        value_name = "S",
        env = "KVS_RECORD_RETRY_DELAY",
        default_value_t = 30
    )]
    retry_delay: u64,
    /// Where /metrics, /healthz and /readyz are served
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "KVS_RECORD_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    listen: std::net::SocketAddr,
    /// A call ends after S seconds without new audio
    #[arg(long, value_name = "S", env = "KVS_RECORD_IDLE_TIMEOUT", default_value_t = crate::args::DEFAULT_IDLE_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Keep trying to reach KVS for S seconds of failures in a row, then give the call back to
    /// the queue (never finish it short)
    #[arg(long, value_name = "S", env = "KVS_RECORD_MAX_OUTAGE", default_value_t = crate::args::DEFAULT_MAX_OUTAGE)]
    max_outage: u64,
    /// MiB of audio per checkpoint, at least 5
    #[arg(long, value_name = "N", env = "KVS_RECORD_PIECE_MIB", default_value_t = 5, value_parser = clap::value_parser!(u64).range(5..))]
    piece_mib: u64,
    /// Keep each call's audio since its last checkpoint in an (unlinked) file here, not in
    /// memory: 64 KiB of memory per call for it rather than up to a piece [default: in memory]
    #[arg(long, value_name = "DIR", env = "KVS_RECORD_SPOOL_DIR")]
    spool_dir: Option<String>,
    #[command(flatten)]
    aws: Aws,
    /// KVS endpoint, as for a local server
    #[arg(long, value_name = "URL", env = "KVS_RECORD_ENDPOINT_URI")]
    endpoint_uri: Option<String>,
}

/// The queue the workers take from and where they record to: for `serve`
/// and `split` alike.
#[derive(clap::Args, Debug, Clone)]
pub struct Place {
    /// The workers' SQS queue: contact events and range messages
    #[arg(long, value_name = "URL", env = "KVS_RECORD_QUEUE_URL")]
    queue_url: String,
    /// The S3 bucket the recordings go to
    #[arg(long, value_name = "NAME", env = "KVS_RECORD_BUCKET")]
    bucket: Option<String>,
    /// A local directory instead, for small setups: the same pieces and checkpoints as files, so
    /// that one machine's workers can resume one another's calls
    #[arg(long, value_name = "DIR", env = "KVS_RECORD_OUT_DIR")]
    out_dir: Option<String>,
    /// Key prefix, as in calls/
    #[arg(
        long,
        value_name = "TEXT",
        env = "KVS_RECORD_PREFIX",
        default_value = ""
    )]
    prefix: String,
    /// Stereo WAV, or Ogg Opus (opusenc's defaults) to PREFIX{ContactId}.opus
    #[arg(long, value_enum, env = "KVS_RECORD_FORMAT", default_value_t = Format::Wav)]
    format: Format,
}

/// Where the queue and the bucket are: for `serve` and `split`.
#[derive(clap::Args, Debug, Clone)]
pub struct Aws {
    /// AWS region of the queue and bucket
    #[arg(long, value_name = "REGION", env = "AWS_REGION")]
    region: Option<String>,
    /// SQS endpoint
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_SQS")]
    sqs_endpoint: Option<String>,
    /// S3 endpoint (path-style)
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_S3")]
    s3_endpoint: Option<String>,
}

impl Aws {
    /// The region, and the endpoints, with the SDK's other variables.
    fn resolved(&self) -> (Option<String>, Option<String>, Option<String>) {
        let any = || std::env::var("AWS_ENDPOINT_URL").ok();
        (
            self.region
                .clone()
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok()),
            self.sqs_endpoint.clone().or_else(any),
            self.s3_endpoint.clone().or_else(any),
        )
    }
}

const LONG_ABOUT: &str = "\
Takes Amazon Connect contact events (the contact flow's event, or its
Details.ContactData) from an SQS queue and records each contact's two
tracks to s3://BUCKET/PREFIX{ContactId}.wav (or DIR/PREFIX{ContactId}.wav),
caller left, agent right. A message may also be a time range of a stream,
recorded from the archive to PREFIX{Name}.wav:
  {\"Range\": {\"StreamARN\": ARN, \"Start\": TIME, \"End\": TIME, \"Name\": NAME}}
with the fragments that start from Start to End, both included (TIME: epoch
milliseconds or ISO 8601; Name by default STREAM/START-END).
`kvs-record split` puts a long range on the queue in pieces.
Every option can also be set with the environment variable in brackets.";

const AFTER_HELP: &str = "\
SIGTERM or Ctrl-C: stop taking messages and give running calls back to the
queue at once; their checkpoints let the next worker continue them.";

/// An SDK error with all its causes, after `what` failed.
fn explain(what: &str, e: impl std::error::Error) -> String {
    format!(
        "{what}: {}",
        aws_smithy_types::error::display::DisplayErrorContext(&e)
    )
}

#[derive(Debug, Clone)]
struct Config {
    queue_url: String,
    /// The recordings go to S3, or with `out_dir` to files.
    bucket: String,
    out_dir: Option<String>,
    prefix: String,
    format: Format,
    max_calls: usize,
    visibility: u64,
    retry_delay: u64,
    listen: std::net::SocketAddr,
    idle_timeout: u64,
    max_outage: u64,
    piece_mib: u64,
    spool_dir: Option<String>,
    region: Option<String>,
    endpoint_uri: Option<String>,
    sqs_endpoint: Option<String>,
    s3_endpoint: Option<String>,
}

impl Cli {
    fn config(self) -> Config {
        let (region, sqs_endpoint, s3_endpoint) = self.aws.resolved();
        Config {
            queue_url: self.place.queue_url,
            bucket: self.place.bucket.unwrap_or_default(),
            out_dir: self.place.out_dir,
            prefix: self.place.prefix,
            format: self.place.format,
            max_calls: self.max_calls as usize,
            visibility: self.visibility,
            retry_delay: self.retry_delay,
            listen: self.listen,
            idle_timeout: self.idle_timeout,
            max_outage: self.max_outage,
            piece_mib: self.piece_mib,
            spool_dir: self.spool_dir,
            region,
            endpoint_uri: self.endpoint_uri,
            sqs_endpoint,
            s3_endpoint,
        }
    }
}

/// Runs the worker; returns the exit code.
pub fn main(cli: Cli) -> i32 {
    let config = cli.config();
    let dirs = [
        (&config.out_dir, "write recordings to --out-dir"),
        (&config.spool_dir, "keep audio in --spool-dir"),
    ];
    for (dir, what) in dirs {
        if let Some(dir) = dir
            && let Err(e) = dir::check(std::path::Path::new(dir), what)
        {
            eprintln!("kvs-record serve: {e}");
            return 1;
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvs-record serve: cannot start: {e}");
            return 1;
        }
    };
    runtime.block_on(Worker::run(config))
}

/// Seconds a receive waits for messages (SQS's long poll, at most 20).
const RECEIVE_WAIT_S: i32 = 10;

struct Worker {
    config: Config,
    queue: Arc<Queue>,
    s3: aws_sdk_s3::Client,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

pub(crate) async fn sdk_config(region: &Option<String>) -> aws_types::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = region {
        loader = loader.region(aws_types::region::Region::new(r.clone()));
    }
    loader.load().await
}

impl Worker {
    async fn run(config: Config) -> i32 {
        let sdk = sdk_config(&config.region).await;
        let mut sqs = aws_sdk_sqs::config::Builder::from(&sdk);
        if let Some(url) = &config.sqs_endpoint {
            sqs = sqs.endpoint_url(url);
        }
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
        if let Some(url) = &config.s3_endpoint {
            s3 = s3.endpoint_url(url).force_path_style(true);
        }
        let metrics = Arc::new(Metrics::default());
        let addr = match ops::serve(config.listen, metrics.clone()).await {
            Ok(a) => a,
            Err(e) => {
                log(
                    "error",
                    None,
                    &format!("cannot listen on {} (--listen): {e}", config.listen),
                    &[],
                );
                return 1;
            }
        };
        let worker = Worker {
            queue: Arc::new(Queue {
                sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
                url: config.queue_url.clone(),
            }),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            metrics,
            stop: watch::channel(false).0,
            config,
        };
        log(
            "info",
            None,
            "worker started",
            &[
                ("metrics", format!("http://{addr}/metrics")),
                ("queue", worker.config.queue_url.clone()),
                ("max_calls", worker.config.max_calls.to_string()),
            ],
        );
        worker.metrics.ready.store(true, Ordering::Relaxed);
        worker.work().await
    }

    async fn work(self) -> i32 {
        let mut calls = JoinSet::new();
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    log("error", None, &format!("cannot watch SIGTERM: {e}"), &[]);
                    return 1;
                }
            };
        let stopping = async {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            }
        };
        tokio::pin!(stopping);
        let visibility = self.config.visibility as i32;
        let (why, late) = loop {
            while calls.try_join_next().is_some() {}
            let free = self.config.max_calls.saturating_sub(calls.len());
            if free == 0 {
                tokio::select! {
                    why = &mut stopping => break (why, Vec::new()),
                    _ = calls.join_next() => continue,
                }
            }
            let receive = self.queue.receive(free, RECEIVE_WAIT_S, visibility);
            tokio::pin!(receive);
            let received = tokio::select! {
                why = &mut stopping => {
                    // SQS keeps a long poll open when its client goes away,
                    // and would hand it the calls given back below: let it
                    // end, and give back what it took.
                    self.metrics.ready.store(false, Ordering::Relaxed);
                    log(
                        "info",
                        None,
                        "draining: no new calls; waiting for the last receive to end",
                        &[("signal", why.into()), ("calls", calls.len().to_string())],
                    );
                    let limit = Duration::from_secs(RECEIVE_WAIT_S as u64 + 5);
                    let late = tokio::time::timeout(limit, receive).await;
                    break (why, late.ok().and_then(Result::ok).unwrap_or_default());
                }
                r = &mut receive => r,
            };
            match received {
                Ok(messages) => {
                    self.metrics.receives_failing.store(0, Ordering::Relaxed);
                    for m in messages {
                        calls.spawn(self.handle(m));
                    }
                }
                Err(e) => {
                    self.metrics.receive_errors.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .receives_failing
                        .fetch_add(1, Ordering::Relaxed);
                    log("warn", None, &e, &[]);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        self.metrics.ready.store(false, Ordering::Relaxed);
        for m in &late {
            self.metrics.released.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.queue.hide(m, 0).await {
                log("warn", None, &e, &[]);
            }
        }
        log(
            "info",
            None,
            "draining: running calls go back to the queue",
            &[
                ("signal", why.into()),
                ("calls", calls.len().to_string()),
                ("given_back_unstarted", late.len().to_string()),
            ],
        );
        let _ = self.stop.send(true);
        while calls.join_next().await.is_some() {}
        log("info", None, "worker stopped", &[]);
        0
    }

    /// Records one message's contact and settles the message.
    fn handle(&self, m: Message) -> impl Future<Output = ()> + use<> {
        let queue = self.queue.clone();
        let metrics = self.metrics.clone();
        let config = self.config.clone();
        let s3 = self.s3.clone();
        let stop = self.stop.subscribe();
        async move {
            let receives = m.receives.to_string();
            let contact = match crate::event::parse_message(&m.body) {
                Ok(c) => c,
                Err(e) => {
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                    log(
                        "error",
                        None,
                        &format!(
                            "message {} is neither a contact event nor a range: {e}",
                            m.id
                        ),
                        &[("receives", receives)],
                    );
                    let _ = queue.hide(&m, config.retry_delay as i32).await;
                    return;
                }
            };
            let id = contact.contact_id.clone().unwrap_or_else(|| m.id.clone());
            let name = format!("{}{id}.{}", config.prefix, config.format.extension());
            log(
                "info",
                Some(&id),
                "call started",
                &[
                    ("stream", contact.stream_arn.clone()),
                    ("receives", receives.clone()),
                ],
            );
            let job = Job {
                contact,
                contact_id: id.clone(),
                store: Destination {
                    backend: match &config.out_dir {
                        Some(dir) => Backend::Dir(dir::Dir {
                            path: std::path::Path::new(dir).join(name),
                        }),
                        None => Backend::S3(s3::S3 {
                            s3,
                            bucket: config.bucket.clone(),
                            key: name,
                        }),
                    },
                    format: config.format,
                },
                setup: Setup {
                    endpoint_uri: config.endpoint_uri.clone(),
                    idle_timeout_ms: config.idle_timeout * 1000,
                    max_outage: config.max_outage,
                    part_size: config.piece_mib * 1024 * 1024,
                    spool_dir: config.spool_dir.clone().map(Into::into),
                },
                metrics: metrics.clone(),
                stop,
            };
            let keep_hidden = async {
                let every = Duration::from_millis(config.visibility * 1000 / 3);
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = queue.hide(&m, config.visibility as i32).await {
                        log("warn", Some(&id), &e, &[]);
                    }
                }
            };
            let outcome = tokio::select! {
                o = job.run() => o,
                _ = keep_hidden => unreachable!(),
            };
            match outcome {
                Outcome::Done {
                    bytes,
                    seconds,
                    behind_max_ms,
                } => {
                    metrics.done.fetch_add(1, Ordering::Relaxed);
                    let settled = queue.delete(&m).await;
                    let mut fields = vec![
                        ("audio_bytes", bytes.to_string()),
                        ("audio_seconds", format!("{seconds:.3}")),
                        ("behind_live_max_ms", behind_max_ms.to_string()),
                    ];
                    if let Err(e) = settled {
                        fields.push(("warning", e));
                    }
                    let msg = match bytes {
                        0 => "call recorded already (the object is there, with no checkpoint)",
                        _ => "call recorded",
                    };
                    log("info", Some(&id), msg, &fields);
                }
                Outcome::Failed { reason, fatal } => {
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                    log(
                        "error",
                        Some(&id),
                        &format!("call failed: {reason}"),
                        &[
                            ("receives", receives),
                            ("retry_helps", (!fatal).to_string()),
                        ],
                    );
                    let _ = queue.hide(&m, config.retry_delay as i32).await;
                }
                Outcome::Released => {
                    metrics.released.fetch_add(1, Ordering::Relaxed);
                    let _ = queue.hide(&m, 0).await;
                    log("info", Some(&id), "call handed back to the queue", &[]);
                }
            }
        }
    }
}
