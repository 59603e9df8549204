// SPDX-License-Identifier: MPL-2.0
//! How many real-time Connect calls one `kvs-record serve` worker keeps up
//! with. For each count N: N live synthetic calls on a local KVS server (a
//! child process), N contact events on an SQS queue and a bucket in moto's
//! server mode, and one worker with `--max-calls N`. It prints the
//! worker's CPU and RSS per call, each call's lag (when its object was
//! complete in S3, after the call's last audio and the 1 s idle timeout),
//! and the S3 requests per call-minute.
//!
//! ```sh
//! cargo build --release --features serve --bin kvs-record --example serve_bench
//! target/release/examples/serve_bench [--calls 100,300,500] [--seconds 60]
//! # a soak: 200 calls of 30 minutes, a row of the worker's CPU and RSS each minute
//! target/release/examples/serve_bench --calls 200 --seconds 1800 --sample-every 60
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../../gst-plugin-kvs/examples/common/mod.rs"]
mod common;
// The bench uses moto alone, not the tests' queue and bucket.
#[allow(dead_code)]
#[path = "../tests/common/moto.rs"]
mod moto;
use common::{arg, percentiles, process_cpu_seconds, process_mb};
use kvs_local_server::synth::Call;
use kvs_local_server::{LocalKvs, State, Stream};
use moto::Moto;

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn call(i: usize, seconds: u64) -> Call {
    Call {
        contact_id: format!("bench-{i:05}"),
        ..Call::of_seconds(seconds)
    }
}

/// The child: N live calls, starting `delay_s` from now, until stdin
/// closes. Prints its endpoint and the epoch ms at which the calls start.
fn kvs_child(n: usize, seconds: u64, delay_s: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now() + Duration::from_secs(delay_s);
    let at = epoch_ms() + delay_s * 1000;
    // One call's fragments, shared by every stream (each named by its
    // contact): a long soak's calls need not each hold their own audio.
    let first = call(0, seconds);
    let one = Stream::from_call_at(&first.contact_id, &first, Some(started));
    let mut streams: Vec<Stream> = (1..n)
        .filter_map(|i| one.live_copy(&call(i, seconds).contact_id, Duration::ZERO))
        .collect();
    streams.push(one);
    let server = runtime
        .block_on(LocalKvs::start(0, State::new(streams)))
        .unwrap();
    println!("{} {at}", server.endpoint());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates the bucket and the queue and sends the events; the queue URL.
fn fill_queue(rt: &tokio::runtime::Runtime, moto: &Moto, events: Vec<String>) -> String {
    let (sqs, s3) = moto.clients("AKIDBENCH", "bench");
    rt.block_on(async {
        s3.create_bucket().bucket("bench").send().await.unwrap();
        let url = sqs
            .create_queue()
            .queue_name("calls")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        for (i, batch) in events.chunks(10).enumerate() {
            let entries = batch.iter().enumerate().map(|(j, e)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}-{j}"))
                    .message_body(e)
                    .build()
                    .unwrap()
            });
            sqs.send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries.collect()))
                .send()
                .await
                .unwrap();
        }
        url
    })
}

fn event(c: &Call) -> String {
    format!(
        r#"{{"ContactId": "{id}", "MediaStreams": {{"Customer": {{"Audio": {{
            "StreamARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/{id}/1700000000000",
            "StartTimestamp": "{start}"}}}}}}}}"#,
        id = c.contact_id,
        start = c.start_ms
    )
}

fn metrics(port: u16) -> String {
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    text
}

fn scrape(port: u16, name: &str) -> f64 {
    metrics(port)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `every` seconds (0: never), a row of the worker's CPU and RSS.
fn run(n: usize, seconds: u64, worker_exe: &std::path::Path, every: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = Moto::start();
    let moto_url = moto.endpoint.clone();
    let calls: Vec<Call> = (0..n).map(|i| call(i, seconds)).collect();
    let queue = fill_queue(&rt, &moto, calls.iter().map(event).collect());
    // The calls start once the worker has taken every message (moto hands
    // out about a hundred a second), so that the figures are the worker's.
    let delay = 10 + n as u64 / 15;
    let mut kvs = Command::new(std::env::current_exe().unwrap())
        .args([
            "--kvs-child",
            &n.to_string(),
            &seconds.to_string(),
            &delay.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(kvs.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _kvs = Killed(kvs);
    let mut words = line.split_whitespace();
    let kvs_url = words.next().unwrap().to_string();
    let started_ms: u64 = words.next().unwrap().parse().unwrap();
    let end_ms = started_ms + calls[0].fragments * calls[0].fragment_ms();
    let port = free_port();
    // Calls wait for their first audio up to the idle timeout.
    let idle = delay + 3;
    let mut worker = Command::new(worker_exe)
        .args(["serve", "--queue-url", &queue, "--bucket", "bench"])
        .args(["--sqs-endpoint", &moto_url, "--s3-endpoint", &moto_url])
        .args(["--endpoint-uri", &kvs_url, "--region", "us-east-1"])
        .args([
            "--max-calls",
            &n.to_string(),
            "--idle-timeout",
            &idle.to_string(),
        ])
        // No visibility renewals within a call: moto, not the worker, would
        // be what is measured.
        .args(["--visibility", "900"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = worker.id();
    let done: Arc<Mutex<Vec<u64>>> = Arc::default();
    // When each call was taken, by contact id.
    let taken: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let (out, keep, count) = (worker.stdout.take().unwrap(), done.clone(), taken.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["msg"] == "call recorded" {
                keep.lock().unwrap().push(v["ts"].as_u64().unwrap_or(0));
            }
            if v["msg"] == "call started" {
                let id = v["contact_id"].as_str().unwrap_or_default().to_string();
                count
                    .lock()
                    .unwrap()
                    .push((id, v["ts"].as_u64().unwrap_or(0)));
            }
        }
    });
    let _worker = Killed(worker);
    // Steady state: from 25% to 90% of the calls' length.
    let from = started_ms + seconds * 250;
    let to = started_ms + seconds * 900;
    while epoch_ms() < from {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu0 = process_cpu_seconds(pid);
    let mut rss = Vec::new();
    let (mut step_cpu, mut step_ms) = (cpu0, epoch_ms());
    while epoch_ms() < to {
        rss.push(process_mb(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(1000));
        if every > 0 && epoch_ms() - step_ms >= every * 1000 {
            let cpu = process_cpu_seconds(pid);
            println!(
                "  minute {:3.0}: worker CPU {:4.0}% of one core, RSS {:7.1} MB, {} calls recorded",
                (epoch_ms() - started_ms) as f64 / 60_000.0,
                (cpu - step_cpu) / ((epoch_ms() - step_ms) as f64 / 1000.0) * 100.0,
                rss.last().copied().unwrap_or(0.0),
                done.lock().unwrap().len()
            );
            (step_cpu, step_ms) = (cpu, epoch_ms());
        }
    }
    let cpu = (process_cpu_seconds(pid) - cpu0) / ((to - from) as f64 / 1000.0);
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    while done.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let requests = scrape(port, "kvs_record_s3_requests_total");
    // Calls taken after their audio began start behind and catch up from
    // the stream's past: their lag says how fast messages came, not how
    // the worker keeps up, so they are counted apart.
    let late: std::collections::HashSet<String> = taken
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, ts)| *ts > started_ms)
        .map(|(id, _)| id.clone())
        .collect();
    if !late.is_empty() {
        println!(
            "  {} of {n} calls were taken from the queue after their audio began",
            late.len()
        );
    }
    let lags: Vec<f64> = done
        .lock()
        .unwrap()
        .iter()
        .map(|&ts| ts.saturating_sub(end_ms + idle * 1000) as f64)
        .collect();
    let recorded = lags.len();
    let rss_mb = rss.iter().copied().fold(0.0, f64::max);
    let minutes = (calls[0].fragments * calls[0].fragment_ms()) as f64 / 60_000.0;
    println!(
        "{n} calls of {seconds} s: {recorded} recorded; worker CPU {:.0}% of a core ({:.2}% per call), \
         RSS {rss_mb:.0} MB ({:.2} MB per call); S3 requests {:.1} per call-minute; \
         object complete after the call's end and idle timeout: {}",
        cpu * 100.0,
        cpu * 100.0 / n as f64,
        rss_mb / n as f64,
        requests / (n as f64 * minutes),
        percentiles(lags, "calls")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--kvs-child") {
        let num = |i: usize| args[i].parse().unwrap();
        kvs_child(num(2) as usize, num(3), num(4));
        return;
    }
    let worker = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("kvs-record");
    assert!(
        worker.exists(),
        "{} is missing: cargo build --release --features serve --bin kvs-record",
        worker.display()
    );
    let seconds: u64 = arg("--seconds").map_or(60, |s| s.parse().unwrap());
    let counts = arg("--calls").unwrap_or("100,300,500".into());
    println!("kvs-record serve, one worker; moto and the KVS server in other processes");
    let every: u64 = arg("--sample-every").map_or(0, |s| s.parse().unwrap());
    for n in counts.split(',').map(|c| c.parse().unwrap()) {
        run(n, seconds, &worker, every);
    }
}
