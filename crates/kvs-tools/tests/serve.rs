// SPDX-License-Identifier: MPL-2.0
//! `kvs-record serve` against real parts: SQS and S3 from moto's server
//! mode, KVS from the local server, all through the real AWS SDK clients,
//! and the worker as its own process (so it can be killed).

#![cfg(feature = "serve")]

#[path = "../../gst-plugin-kvs/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

#[path = "common/moto.rs"]
mod moto;

use moto::{Aws, BUCKET};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvs_local_server::synth::{Call, Side};
use kvs_local_server::{State, Stream};

/// A worker process and the JSON lines it logged.
struct Worker {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Worker {
    fn start(aws: &Aws, kvs: &str, extra: &[&str]) -> Worker {
        // Recordings go to the bucket unless the test names a directory.
        let to = match extra.contains(&"--out-dir") {
            true => vec![],
            false => vec!["--bucket", BUCKET],
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-record"))
            .args(["serve", "--queue-url", &aws.queue])
            .args(to)
            .args([
                "--sqs-endpoint",
                &aws.moto.endpoint,
                "--s3-endpoint",
                &aws.moto.endpoint,
            ])
            .args([
                "--endpoint-uri",
                kvs,
                "--region",
                "us-east-1",
                "--listen",
                "127.0.0.1:0",
            ])
            .args([
                "--visibility",
                "3",
                "--retry-delay",
                "1",
                "--idle-timeout",
                "1",
            ])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (out, keep) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
                keep.lock().unwrap().push(v);
            }
        });
        Worker { child, lines }
    }

    /// Log lines whose msg starts with `msg`.
    fn said(&self, msg: &str) -> Vec<serde_json::Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l["msg"].as_str().is_some_and(|m| m.starts_with(msg)))
            .cloned()
            .collect()
    }

    /// Contacts whose recording this worker completed.
    fn recorded(&self) -> std::collections::BTreeSet<String> {
        self.said("call recorded")
            .iter()
            .filter_map(|l| l["contact_id"].as_str().map(String::from))
            .collect()
    }

    fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|l| l.to_string() + "\n").collect()
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops with SIGTERM; returns the exit code and how long it took.
    fn stop(&mut self) -> (Option<i32>, Duration) {
        let asked = Instant::now();
        self.signal(libc::SIGTERM);
        let deadline = asked + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), asked.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metrics(&self) -> String {
        self.get("/metrics")
    }

    /// The port of /metrics, from the worker's first line.
    fn port(&self) -> u16 {
        let started = self.said("worker started");
        let url = started[0]["metrics"].as_str().unwrap().to_string();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        assert!(
            addr.starts_with("127.0.0.1:"),
            "--listen 127.0.0.1:0: {addr}"
        );
        addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The whole HTTP answer to a GET of `path` on the worker's port.
    fn get(&self, path: &str) -> String {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port())).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).unwrap();
        text
    }

    fn wait_started(&self) {
        wait(
            || !self.said("worker started").is_empty(),
            "the worker to start",
            self,
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(mut done: impl FnMut() -> bool, what: &str, worker: &Worker) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited 120 s for {what}:\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names of the series in a /metrics answer, label sets included.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(' ') && !l.starts_with("HTTP"))
        .filter(|l| l.starts_with("kvs_record_"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn contact_event(call: &Call, stream: &str) -> String {
    format!(
        r#"{{"Name": "ContactFlowEvent", "Details": {{"ContactData": {{
            "ContactId": "{}",
            "MediaStreams": {{"Customer": {{"Audio": {{
                "StreamARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/{stream}/1700000000000",
                "StartTimestamp": "{}"}}}}}}}}}}}}"#,
        call.contact_id, call.start_ms
    )
}

/// Call `i`: its own contact id, start and length; some have the agent on
/// track 1 or a silent stretch.
fn call(i: u64, fragments: u64) -> Call {
    Call {
        fragments: fragments + i % 3,
        contact_id: format!("contact-{i:02}"),
        start_ms: 1_700_000_000_000 + i * 3_600_000,
        swapped: i % 2 == 1,
        silence: if i % 5 == 2 {
            vec![(Side::Agent, 2000..4000)]
        } else {
            Vec::new()
        },
        ..Call::default()
    }
}

/// Asserts the object holds the call: caller left, agent right, every
/// sample once; and its metadata.
fn assert_recorded(aws: &Aws, call: &Call) {
    let key = format!("{}.wav", call.contact_id);
    let (wav, meta) = aws
        .object(&key)
        .unwrap_or_else(|| panic!("no {key} in s3 (objects: {:?})", aws.keys()));
    assert_wav(&key, &wav, call);
    assert_eq!(meta.get("contact-id"), Some(&call.contact_id), "{key}");
    let seconds: f64 = meta["duration-seconds"].parse().unwrap();
    let expected = call.pcm_with_silence(Side::Caller).len() as f64 / 2.0 / 8000.0;
    assert!(
        (seconds - expected).abs() < 0.001,
        "{key}: duration {seconds} s, not {expected} s"
    );
    assert!(meta["tracks"].contains("audio_"), "{key}: {meta:?}");
}

/// A whole WAV holding the caller left and the agent right, bit-exact.
fn assert_wav(key: &str, wav: &[u8], call: &Call) {
    assert_eq!(&wav[..4], b"RIFF", "{key}");
    assert_eq!(
        u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize,
        wav.len() - 8,
        "{key}: RIFF size"
    );
    let (left, right) = common::deinterleave(&common::wav_data(wav));
    let caller = call.pcm_with_silence(Side::Caller);
    let agent = call.pcm_with_silence(Side::Agent);
    assert_eq!(left.len(), caller.len(), "{key}: caller samples");
    assert!(left == caller, "{key}: the caller's PCM, bit-exact");
    assert!(right == agent, "{key}: the agent's PCM, bit-exact");
}

fn kvs_with(calls: &[Call], started: Instant) -> common::Server {
    common::init();
    let streams = calls
        .iter()
        .map(|c| Stream::from_call_at(&c.contact_id, c, Some(started)))
        .collect();
    common::serve(State::new(streams))
}

#[test]
fn twenty_live_calls_two_workers() {
    let aws = Aws::start(3);
    let calls: Vec<Call> = (0..20).map(|i| call(i, 8)).collect();
    let kvs = kvs_with(&calls, Instant::now());
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    let endpoint = kvs.endpoint();
    let mut a = Worker::start(&aws, &endpoint, &["--max-calls", "8"]);
    let mut b = Worker::start(&aws, &endpoint, &["--max-calls", "8"]);
    wait(|| a.said("call started").len() == 8, "a's first calls", &a);
    let during: std::collections::HashMap<u16, String> =
        [&a, &b].iter().map(|w| (w.port(), w.metrics())).collect();
    wait(
        || a.recorded().union(&b.recorded()).count() == 20,
        "20 calls",
        &a,
    );
    for c in &calls {
        assert_recorded(&aws, c);
    }
    // No work objects are left, and the queue is empty.
    let keys = aws.keys();
    assert_eq!(keys.len(), 20, "{keys:?}");
    wait(|| aws.depth(&aws.queue) == 0, "an empty queue", &a);
    for w in [&a, &b] {
        let most = w.said("call started").len();
        assert!(most >= 1, "both workers took calls:\n{}", w.log());
        for line in w.said("call") {
            assert!(
                line["contact_id"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("contact-")),
                "{line}"
            );
        }
    }
    let done = metric(&a.metrics(), "kvs_record_calls_done_total")
        + metric(&b.metrics(), "kvs_record_calls_done_total");
    assert_eq!(done, 20);
    assert!(metric(&a.metrics(), "kvs_record_audio_bytes_total") > 0);
    for w in [&a, &b] {
        let m = w.metrics();
        // No series per call: the same names whether calls run or not.
        assert_eq!(series(&m), series(&during[&w.port()]), "{m}");
        assert!(!m.contains("contact_id"), "{m}");
        assert!(
            m.contains(&format!(
                "kvs_record_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{m}"
        );
        let recorded = w.recorded().len() as u64;
        assert_eq!(metric(&m, "kvs_record_call_audio_seconds_count"), recorded);
        assert!(metric(&m, "kvs_record_behind_live_seconds_count") >= 8 * recorded);
        for line in w.said("call recorded") {
            let seconds: f64 = line["audio_seconds"].as_str().unwrap().parse().unwrap();
            assert!(seconds > 8.0, "{line}");
        }
    }
    for w in [&mut a, &mut b] {
        assert_eq!(w.stop().0, Some(0), "{}", w.log());
    }
}

#[test]
fn a_killed_workers_calls_are_finished_by_another_from_its_checkpoints() {
    let aws = Aws::start(5);
    // 220 s calls: 200 s are stored already, the rest comes live. The
    // first piece (5 MiB, 164 s) is checkpointed within a second.
    let calls: Vec<Call> = (0..2).map(|i| call(i * 3, 215)).collect();
    let kvs = kvs_with(&calls, Instant::now() - Duration::from_secs(200));
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    kill_and_resume(&aws, &kvs.endpoint(), &["--max-calls", "2"], || {
        let keys = aws.keys();
        let checkpoints = keys.iter().filter(|k| k.ends_with(".work/checkpoint"));
        assert_eq!(checkpoints.count(), 2, "{keys:?}");
    });
    for c in &calls {
        assert_recorded(&aws, c);
    }
    assert_eq!(aws.keys().len(), 2, "work objects left: {:?}", aws.keys());
}

/// Starts a worker, SIGKILLs it once it has written two checkpoints, runs
/// `between`, then starts another that must finish both calls from them.
fn kill_and_resume(aws: &Aws, kvs: &str, args: &[&str], between: impl FnOnce()) -> Worker {
    let a = Worker::start(aws, kvs, args);
    wait(
        || a.said("checkpoint written").len() == 2,
        "two checkpoints",
        &a,
    );
    a.signal(libc::SIGKILL);
    between();
    let b = Worker::start(aws, kvs, args);
    wait(
        || b.recorded().len() == 2,
        "the second worker to finish both calls",
        &b,
    );
    assert_eq!(b.said("resuming from a checkpoint").len(), 2, "{}", b.log());
    b
}

/// --spool-dir: the audio since the last checkpoint waits in an unlinked
/// file (seen through /proc), a killed worker leaves no file behind, and
/// every sample still lands exactly once.
#[test]
fn spooled_audio_waits_in_unlinked_files_and_nothing_is_lost() {
    let aws = Aws::start(5);
    let spool = std::env::temp_dir().join(format!("kvs-serve-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let calls: Vec<Call> = (0..2).map(|i| call(i * 3 + 60, 215)).collect();
    let kvs = kvs_with(&calls, Instant::now() - Duration::from_secs(200));
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    let args = ["--max-calls", "2", "--spool-dir", spool.to_str().unwrap()];
    let a = Worker::start(&aws, &kvs.endpoint(), &args);
    // Sizes of the worker's open files in the spool directory, all unlinked.
    let spooled = |w: &Worker| -> Vec<u64> {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", w.child.id())) else {
            return Vec::new();
        };
        fds.filter_map(|fd| {
            let fd = fd.ok()?.path();
            let target = std::fs::read_link(&fd).ok()?;
            let unlinked = target.to_string_lossy().ends_with(" (deleted)");
            assert!(!target.starts_with(&spool) || unlinked, "{target:?}");
            let size = std::fs::metadata(&fd).ok()?.len();
            target.starts_with(&spool).then_some(size)
        })
        .collect()
    };
    // The first piece of each call is stored; the next 36 s of stored audio
    // (1.1 MB each; 64 KiB at most stays in memory) wait in two spool files.
    wait(
        || {
            let sizes = spooled(&a);
            a.said("checkpoint written").len() == 2
                && sizes.len() == 2
                && sizes.iter().all(|&n| n > 500_000)
        },
        "two checkpoints and two spool files holding the audio since",
        &a,
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "named files");
    a.signal(libc::SIGKILL);
    let b = Worker::start(&aws, &kvs.endpoint(), &args);
    wait(
        || b.recorded().len() == 2,
        "the second worker to finish both calls",
        &b,
    );
    assert_eq!(b.said("resuming from a checkpoint").len(), 2, "{}", b.log());
    for c in &calls {
        assert_recorded(&aws, c);
    }
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "files left");
    std::fs::remove_dir_all(&spool).ok();
}

/// --out-dir: the same recordings as files, and a killed worker's calls
/// finished by another from the checkpoints in the directory.
#[test]
fn a_local_directory_gets_the_recordings_and_its_checkpoints_resume() {
    let aws = Aws::start(5);
    let dir = std::env::temp_dir().join(format!("kvs-serve-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let calls: Vec<Call> = (0..2).map(|i| call(i * 3 + 30, 215)).collect();
    let kvs = kvs_with(&calls, Instant::now() - Duration::from_secs(200));
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    let args = ["--max-calls", "2", "--out-dir", out, "--prefix", "calls/"];
    let b = kill_and_resume(&aws, &kvs.endpoint(), &args, || {
        for c in &calls {
            let work = dir.join(format!("calls/{}.wav.work", c.contact_id));
            assert!(work.join("checkpoint").is_file(), "{work:?}");
            assert!(work.join("piece-00001").is_file(), "{work:?}");
        }
    });
    for c in &calls {
        let key = format!("calls/{}.wav", c.contact_id);
        assert_wav(&key, &std::fs::read(dir.join(&key)).unwrap(), c);
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.join("calls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let expected: Vec<String> = calls
        .iter()
        .map(|c| format!("{}.wav", c.contact_id))
        .collect();
    assert_eq!(left, expected, "work files left");
    assert!(aws.keys().is_empty(), "nothing in S3: {:?}", aws.keys());
    wait(|| aws.depth(&aws.queue) == 0, "an empty queue", &b);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_hands_running_calls_back_and_loses_nothing() {
    let aws = Aws::start(5);
    let calls: Vec<Call> = (0..3).map(|i| call(i + 10, 10)).collect();
    let kvs = kvs_with(&calls, Instant::now());
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    let endpoint = kvs.endpoint();
    let mut a = Worker::start(&aws, &endpoint, &["--max-calls", "3"]);
    wait(|| a.said("call started").len() == 3, "three calls", &a);
    std::thread::sleep(Duration::from_secs(2));
    let (code, took) = a.stop();
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(code, Some(0), "{}", a.log());
    assert_eq!(a.said("call handed back").len(), 3, "{}", a.log());
    assert!(a.said("call recorded").is_empty());
    // Handed back at once: another worker takes them without waiting for
    // the visibility timeout.
    let b = Worker::start(&aws, &endpoint, &["--max-calls", "3", "--visibility", "60"]);
    wait(
        || b.recorded().len() == 3,
        "the calls on another worker",
        &b,
    );
    for c in &calls {
        assert_recorded(&aws, c);
    }
}

/// KVS ends every GetMedia session after 40 to 45 minutes; here after 3 s,
/// in the middle of a chunk: the worker's call comes out whole.
#[test]
fn a_call_across_getmedia_session_ends_is_recorded_whole() {
    let aws = Aws::start(5);
    let c = call(22, 10);
    common::init();
    let mut state = State::new(vec![Stream::from_call(&c.contact_id, &c, true)]);
    state.session_end = kvs_local_server::SessionEnd {
        after: Some(Duration::from_secs(3)),
        mid_chunk: true,
    };
    let kvs = common::serve(state);
    aws.send(&contact_event(&c, &c.contact_id));
    let a = Worker::start(&aws, &kvs.endpoint(), &[]);
    wait(|| a.recorded().len() == 1, "the call", &a);
    assert_recorded(&aws, &c);
    let ended = kvs
        .state
        .counters
        .sessions_ended
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(ended >= 2, "{ended} session ends");
}

/// SIGTERM while calls run and slots are free, so that a long poll is in
/// flight: SQS keeps such a poll open after its client goes away, and
/// would hand it the calls given back. The worker lets it end first.
#[test]
fn sigterm_with_free_slots_hands_every_call_back_for_good() {
    let aws = Aws::start(5);
    let calls: Vec<Call> = (0..4).map(|i| call(i + 30, 14)).collect();
    let kvs = kvs_with(&calls, Instant::now());
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    let endpoint = kvs.endpoint();
    let args = ["--max-calls", "8", "--visibility", "60"];
    let mut a = Worker::start(&aws, &endpoint, &args);
    wait(|| a.said("call started").len() == 4, "four calls", &a);
    // The worker is back in a 10 s receive for its four free slots.
    std::thread::sleep(Duration::from_secs(2));
    let (code, took) = a.stop();
    assert_eq!(code, Some(0), "{}", a.log());
    assert_eq!(a.said("call handed back").len(), 4, "{}", a.log());
    // No worker runs: every call is visible, none taken by a lost poll.
    let (visible, hidden) = aws.visibility(&aws.queue);
    eprintln!(
        "SIGTERM with free slots: exit after {took:?}; {visible} visible, {hidden} in flight"
    );
    assert_eq!((visible, hidden), (4, 0), "{}", a.log());
    // The next worker takes them at once (not after the 60 s visibility),
    // each received once more than by the first worker.
    let b = Worker::start(&aws, &endpoint, &args);
    b.wait_started();
    let started = Instant::now();
    wait(
        || b.said("call started").len() == 4,
        "the calls on another worker",
        &b,
    );
    let retaken = started.elapsed();
    eprintln!("retaken by the next worker {retaken:?} after it was started");
    assert!(retaken < Duration::from_secs(30), "{retaken:?}");
    for line in b.said("call started") {
        assert_eq!(line["receives"], "2", "{line}");
    }
    wait(|| b.recorded().len() == 4, "the calls recorded", &b);
    for c in &calls {
        assert_recorded(&aws, c);
    }
}

/// KVS stops answering in the middle of a live call for longer than
/// --max-outage: the worker gives the call back (it is not an end), and
/// once KVS answers again the call is recorded whole, bit-exact.
#[test]
fn an_outage_longer_than_max_outage_gives_the_call_back_and_it_is_finished_later() {
    let aws = Aws::start(5);
    let c = call(21, 10);
    let kvs = kvs_with(std::slice::from_ref(&c), Instant::now());
    aws.send(&contact_event(&c, &c.contact_id));
    let endpoint = kvs.endpoint();
    let a = Worker::start(&aws, &endpoint, &["--max-outage", "2"]);
    wait(|| !a.said("call started").is_empty(), "the call", &a);
    std::thread::sleep(Duration::from_millis(2500));
    kvs.state.faults.pause(true);
    wait(
        || !a.said("call failed").is_empty(),
        "the call given back",
        &a,
    );
    let failed = &a.said("call failed")[0];
    assert_eq!(failed["retry_helps"], "true", "{failed}");
    assert!(
        failed["msg"].as_str().unwrap().contains("got no answer"),
        "{failed}"
    );
    assert!(a.recorded().is_empty(), "not finished short: {}", a.log());
    kvs.state.faults.pause(false);
    wait(
        || a.recorded().len() == 1,
        "the call recorded after all",
        &a,
    );
    assert_recorded(&aws, &c);
}

#[test]
fn poison_and_missing_streams_are_dead_lettered_and_throttles_retried() {
    let aws = Aws::start(2);
    let good = call(7, 4);
    let kvs = kvs_with(std::slice::from_ref(&good), Instant::now());
    kvs.state
        .faults
        .throttle
        .store(3, std::sync::atomic::Ordering::SeqCst);
    aws.send("{\"Details\": {");
    aws.send(&contact_event(&call(8, 4), "no-such-stream"));
    // A stream that exists but never gets audio: no 44-byte WAV for it.
    kvs.state.add_stream(Stream::empty("quiet", 24));
    aws.send(&contact_event(&call(9, 4), "quiet"));
    forward(&aws, &contact_event(&good, &good.contact_id));
    let endpoint = kvs.endpoint();
    let w = Worker::start(&aws, &endpoint, &["--max-calls", "4"]);
    w.wait_started();
    wait(|| aws.depth(&aws.dlq) == 3, "three dead letters", &w);
    wait(|| w.recorded().len() == 1, "the good call", &w);
    assert_recorded(&aws, &good);
    let failures = w.said("call failed");
    assert!(
        failures
            .iter()
            .any(|l| l["msg"].as_str().unwrap().contains("no-such-stream")),
        "the missing stream is named:\n{}",
        w.log()
    );
    assert!(
        failures
            .iter()
            .all(|l| l["contact_id"] == "contact-08" || l["contact_id"] == "contact-09"),
        "{}",
        w.log()
    );
    assert!(
        failures.iter().any(|l| l["contact_id"] == "contact-09"),
        "the quiet stream failed:\n{}",
        w.log()
    );
    assert_eq!(
        aws.keys(),
        ["contact-07.wav"],
        "only the good call is stored"
    );
    assert!(
        !w.said("message").is_empty(),
        "the bad JSON is logged:\n{}",
        w.log()
    );
    let m = w.metrics();
    assert_eq!(metric(&m, "kvs_record_calls_done_total"), 1);
    assert!(metric(&m, "kvs_record_calls_failed_total") >= 6, "{m}");
    assert!(metric(&m, "kvs_record_throttles_total") >= 1, "{m}");
    assert!(
        kvs.state
            .counters
            .throttled
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    wait(|| aws.depth(&aws.queue) == 0, "an empty queue", &w);
}

/// A queue the worker cannot read makes /readyz say so, with the reason;
/// it is ready again once a receive works.
#[test]
fn readyz_says_when_the_queue_cannot_be_read() {
    let mut aws = Aws::start(5);
    // The worker starts on a queue that is not there yet.
    let (base, _) = aws.queue.rsplit_once('/').unwrap();
    aws.queue = format!("{base}/calls-later");
    let w = Worker::start(&aws, "http://127.0.0.1:9", &[]);
    w.wait_started();
    wait(
        || w.get("/readyz").starts_with("HTTP/1.1 503"),
        "/readyz to turn 503",
        &w,
    );
    let why = w.get("/readyz");
    assert!(
        why.contains("the queue cannot be read: the last ") && why.contains(" receives failed"),
        "{why}"
    );
    assert!(metric(&w.metrics(), "kvs_record_queue_receive_errors_total") >= 3);
    assert!(
        w.get("/healthz").starts_with("HTTP/1.1 200"),
        "alive all along"
    );
    aws.rt.block_on(async {
        let made = aws
            .sqs
            .create_queue()
            .queue_name("calls-later")
            .send()
            .await;
        assert_eq!(made.unwrap().queue_url.as_deref(), Some(aws.queue.as_str()));
    });
    wait(
        || w.get("/readyz").starts_with("HTTP/1.1 200"),
        "/readyz to be ready again",
        &w,
    );
}

/// Puts an event on the queue with deploy/forwarder/forwarder.py, as the
/// contact flow's Lambda would.
fn forward(aws: &Aws, event: &str) {
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/forwarder/forwarder.py"
        ))
        .env("QUEUE_URL", &aws.queue)
        .env("AWS_ENDPOINT_URL", &aws.moto.endpoint)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the forwarder failed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"queued": true}"#
    );
}

/// The deployment files parse, and every setting they give the worker is
/// one it knows.
#[test]
fn deploy_files_name_only_known_settings() {
    let help = Command::new(env!("CARGO_BIN_EXE_kvs-record"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(help.contains("KVS_RECORD_QUEUE_URL"), "{help}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let files = [
        "kubernetes/deployment.yaml",
        "kubernetes/serviceaccount.yaml",
        "kubernetes/keda-scaledobject.yaml",
        "ecs/task-definition.json",
        "ecs/service.json",
        "ecs/autoscaling.json",
        "iam-policy.json",
    ];
    let mut names = 0;
    for f in files {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        if f.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        } else {
            let check = Command::new("python3")
                .args([
                    "-c",
                    "import sys, yaml; list(yaml.safe_load_all(sys.stdin))",
                ])
                .stdin(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    c.stdin.take().unwrap().write_all(text.as_bytes())?;
                    c.wait()
                })
                .unwrap();
            assert!(check.success(), "{f} is not valid YAML");
        }
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("KVS_RECORD_") {
                names += 1;
                assert!(
                    help.contains(word),
                    "{f} sets {word}, which kvs-record serve does not read"
                );
            }
        }
    }
    assert!(names >= 10, "{names} settings");
    let docker = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    assert!(docker.contains("--features serve --bin kvs-record"));
    assert!(docker.contains("ENTRYPOINT [\"kvs-record\", \"serve\"]"));
}

/// Bad flags: exit code 2 and a message that says what to give.
/// An --out-dir or --spool-dir where nothing can be written stops the worker at once,
/// naming the directory and the cause.
#[test]
fn an_out_or_spool_dir_that_cannot_be_written_is_refused_at_start() {
    let file = std::env::temp_dir().join(format!("kvs-serve-file-{}", std::process::id()));
    std::fs::write(&file, b"").unwrap();
    let dir = file.join("calls");
    // The spool directory is checked the same way.
    let d = dir.to_str().unwrap();
    let cases = [
        (vec!["--out-dir", d], "write recordings to --out-dir"),
        (
            vec!["--bucket", "b", "--spool-dir", d],
            "keep audio in --spool-dir",
        ),
    ];
    for (args, what) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_kvs-record"))
            .args(["serve", "--queue-url", "http://127.0.0.1:9/q"])
            .args(args)
            .env_remove("KVS_RECORD_BUCKET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let says = format!("cannot {what} {}: ", dir.display());
        assert!(stderr.contains(&says), "{stderr}");
    }
    std::fs::remove_file(&file).ok();
}

#[test]
fn usage_errors_say_what_to_do() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[],
            "the following required arguments were not provided: --queue-url <URL>",
        ),
        (
            &["--queue-url", "http://q"],
            "the following required arguments were not provided: <--bucket <NAME>|--out-dir <DIR>>",
        ),
        (
            &["--queue-url", "http://q", "--bucket", "b", "--out-dir", "d"],
            "the argument '--bucket <NAME>' cannot be used with '--out-dir <DIR>'",
        ),
        (
            &[
                "--queue-url",
                "http://q",
                "--bucket",
                "b",
                "--piece-mib",
                "1",
            ],
            "invalid value '1' for '--piece-mib <N>'",
        ),
        (
            &[
                "--queue-url",
                "http://q",
                "--bucket",
                "b",
                "--max-calls",
                "many",
            ],
            "invalid value 'many' for '--max-calls <N>'",
        ),
        (
            &[
                "--queue-url",
                "http://q",
                "--bucket",
                "b",
                "--listen",
                "9090",
            ],
            "invalid value '9090' for '--listen <ADDR:PORT>'",
        ),
        (
            &[
                "--queue-url",
                "http://q",
                "--bucket",
                "b",
                "--format",
                "mp3",
            ],
            "invalid value 'mp3' for '--format <FORMAT>'",
        ),
        (
            &["--no-such-flag"],
            "unexpected argument '--no-such-flag' found",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_kvs-record"))
            .arg("serve")
            .args(*args)
            .env_remove("KVS_RECORD_QUEUE_URL")
            .env_remove("KVS_RECORD_BUCKET")
            .env_remove("KVS_RECORD_OUT_DIR")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: no {says:?} in {stderr}");
        assert!(stderr.contains("kvs-record serve --help"), "{stderr}");
    }
}

/// `kvs-record split`: a stored stream cut by time into four pieces (not on
/// fragment boundaries) for two workers. It holds two contacts, the second
/// from fragment 12, inside the second piece. The manifest lists the pieces
/// in order; their audio one after the other is the stream's, bit-exact, so
/// each fragment is in exactly one piece and no piece stops at a contact's
/// end.
#[test]
fn a_long_range_split_over_two_workers_is_recorded_piece_by_piece() {
    let aws = Aws::start(3);
    let c = Call {
        fragments: 30,
        contact_id: "line-1".into(),
        start_ms: 1_700_000_000_000,
        silence: vec![(Side::Agent, 2000..4000)],
        next_contact: Some((12, "contact-b".into())),
        ..Call::default()
    };
    common::init();
    let kvs = common::serve(State::new(vec![Stream::from_call_at("line-1", &c, None)]));
    let end_ms = c.start_ms + c.fragments * c.fragment_ms() - 1;
    let out = Command::new(env!("CARGO_BIN_EXE_kvs-record"))
        .args(["split", "--stream-arn"])
        .arg("arn:aws:kinesisvideo:us-east-1:000000000000:stream/line-1/1700000000000")
        .args([
            "--start",
            &c.start_ms.to_string(),
            "--end",
            &end_ms.to_string(),
        ])
        .args([
            "--pieces",
            "4",
            "--name",
            "line-1/day",
            "--prefix",
            "ranges/",
        ])
        .args([
            "--queue-url",
            &aws.queue,
            "--bucket",
            BUCKET,
            "--region",
            "us-east-1",
        ])
        .args([
            "--sqs-endpoint",
            &aws.moto.endpoint,
            "--s3-endpoint",
            &aws.moto.endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("4 pieces of line-1/day"), "{said}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &aws.object("ranges/line-1/day/manifest.json")
            .expect("the manifest is written before the messages")
            .0,
    )
    .unwrap();
    let pieces = manifest["pieces"].as_array().unwrap();
    assert_eq!(pieces.len(), 4, "{manifest}");
    assert_eq!(manifest["start_ms"], c.start_ms);
    assert_eq!(manifest["end_ms"], end_ms);

    let prefix = ["--prefix", "ranges/", "--max-calls", "2"];
    let mut a = Worker::start(&aws, &kvs.endpoint(), &prefix);
    let mut b = Worker::start(&aws, &kvs.endpoint(), &prefix);
    wait(
        || a.recorded().union(&b.recorded()).count() == 4,
        "four pieces",
        &a,
    );
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for (i, piece) in pieces.iter().enumerate() {
        let name = format!("line-1/day/part-{i:03}");
        assert_eq!(piece["name"], name.as_str());
        let key = format!("ranges/{name}.wav");
        assert_eq!(piece["recording"], format!("s3://{BUCKET}/{key}").as_str());
        let (wav, meta) = aws.object(&key).unwrap_or_else(|| panic!("no {key}"));
        assert_eq!(meta.get("contact-id"), Some(&name));
        let (l, r) = common::deinterleave(&common::wav_data(&wav));
        assert!(!l.is_empty(), "{key} holds audio");
        left.extend(l);
        right.extend(r);
    }
    let caller = c.pcm_with_silence(Side::Caller);
    assert_eq!(
        left.len(),
        caller.len(),
        "the pieces hold the call's samples"
    );
    assert!(
        left == caller,
        "the caller's PCM, bit-exact, piece after piece"
    );
    assert!(right == c.pcm_with_silence(Side::Agent), "the agent's PCM");
    let mut keys = aws.keys();
    keys.sort();
    assert_eq!(keys.len(), 5, "four WAVs and the manifest: {keys:?}");
    wait(|| aws.depth(&aws.queue) == 0, "an empty queue", &a);
    for w in [&mut a, &mut b] {
        assert_eq!(w.stop().0, Some(0), "{}", w.log());
    }
}

/// Decodes an Ogg Opus recording to 8 kHz: left and right samples.
fn decode_opus(ogg: &[u8]) -> (Vec<i16>, Vec<i16>) {
    let decoded = common::pull_as(
        "application/ogg",
        ogg,
        "oggdemux ! opusdec ! audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,rate=8000,channels=2",
    );
    let pcm: Vec<u8> = decoded.into_iter().flat_map(|o| o.data).collect();
    let frames = samples(&pcm);
    (
        frames.iter().step_by(2).copied().collect(),
        frames.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// How alike two signals are: their correlation, 1 for the same shape.
fn likeness(a: &[i16], b: &[i16]) -> f64 {
    let dot = |x: &[i16], y: &[i16]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(&p, &q)| f64::from(p) * f64::from(q))
            .sum()
    };
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt().max(1.0)
}

fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// An Ogg Opus recording holds the call: as long as its PCM, the caller
/// left and the agent right (each like its own side's audio and not the
/// other's), and the agent silent where the call has it silent.
fn assert_opus(key: &str, ogg: &[u8], call: &Call) {
    assert_eq!(&ogg[..4], b"OggS", "{key}");
    let (left, right) = decode_opus(ogg);
    let caller = samples(&call.pcm_with_silence(Side::Caller));
    let agent = samples(&call.pcm_with_silence(Side::Agent));
    // Within one 20 ms Opus frame of the call's length.
    assert!(
        left.len().abs_diff(caller.len()) <= 160,
        "{key}: {} samples decoded, the call has {}",
        left.len(),
        caller.len()
    );
    let n = left.len().min(caller.len());
    let (l, r) = (
        likeness(&left[..n], &caller[..n]),
        likeness(&right[..n], &agent[..n]),
    );
    assert!(
        l > 0.99 && r > 0.99,
        "{key}: likeness left {l:.3}, right {r:.3}"
    );
    let crossed = likeness(&left[..n], &agent[..n]);
    assert!(
        crossed.abs() < 0.2,
        "{key}: left is like the agent ({crossed:.3})"
    );
    let rms =
        |s: &[i16]| (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    // The agent is silent from 2 s to 4 s; 100 ms kept clear at each end.
    let (quiet, loud) = (&right[16_800..31_200], &left[16_800..31_200]);
    assert!(
        rms(quiet) < rms(loud) / 100.0,
        "{key}: the agent's silence, rms {:.1} against the caller's {:.1}",
        rms(quiet),
        rms(loud)
    );
}

/// --format opus: a stored call of 700 s (four PCM pieces read back from
/// S3, then its Ogg in 5 MiB parts) and a short one (one PUT).
#[test]
fn opus_recordings_hold_the_calls() {
    let aws = Aws::start(3);
    let calls = [
        Call {
            fragments: 684,
            contact_id: "opus-long".into(),
            silence: vec![(Side::Agent, 2000..4000)],
            swapped: true,
            ..Call::default()
        },
        Call {
            fragments: 20,
            contact_id: "opus-short".into(),
            start_ms: 1_700_100_000_000,
            silence: vec![(Side::Agent, 2000..4000)],
            ..Call::default()
        },
    ];
    let kvs = kvs_with(&calls, Instant::now() - Duration::from_secs(3600));
    for c in &calls {
        aws.send(&contact_event(c, &c.contact_id));
    }
    let mut w = Worker::start(&aws, &kvs.endpoint(), &["--format", "opus"]);
    wait(|| w.recorded().len() == 2, "two calls", &w);
    assert!(
        w.said("checkpoint written").len() >= 4,
        "the long call was stored in pieces:\n{}",
        w.log()
    );
    for c in &calls {
        let key = format!("{}.opus", c.contact_id);
        let (ogg, meta) = aws
            .object(&key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", aws.keys()));
        assert_opus(&key, &ogg, c);
        assert_eq!(meta.get("contact-id"), Some(&c.contact_id));
    }
    assert!(
        aws.object("opus-long.opus").unwrap().0.len() as u64 > 5 * 1024 * 1024,
        "the long call's Ogg took more than one part"
    );
    assert_eq!(aws.keys().len(), 2, "work objects left: {:?}", aws.keys());
    assert_eq!(w.stop().0, Some(0), "{}", w.log());
}

/// --format opus with --out-dir: the same recording as a file, and no work
/// files left.
#[test]
fn opus_recordings_in_a_local_directory() {
    let aws = Aws::start(3);
    let dir = std::env::temp_dir().join(format!("kvs-serve-opus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = call(2, 20);
    let kvs = kvs_with(
        std::slice::from_ref(&c),
        Instant::now() - Duration::from_secs(600),
    );
    aws.send(&contact_event(&c, &c.contact_id));
    let args = ["--format", "opus", "--out-dir", dir.to_str().unwrap()];
    let mut w = Worker::start(&aws, &kvs.endpoint(), &args);
    wait(|| w.recorded().len() == 1, "the call", &w);
    let name = format!("{}.opus", c.contact_id);
    assert_opus(&name, &std::fs::read(dir.join(&name)).unwrap(), &c);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(&name)], "work files left");
    assert_eq!(w.stop().0, Some(0), "{}", w.log());
    std::fs::remove_dir_all(&dir).ok();
}

/// docs/serve.md's "Try it locally", run as written against moto and the
/// local server on free ports (for the ports the page names) with a short
/// demo call: the sample event's call is recorded to the bucket, exactly.
#[test]
fn the_local_walkthrough_records_the_sample_contact() {
    let blocks = common::sh_blocks(include_str!("../../../docs/serve.md"), "## Try it locally")
        .expect("a 'Try it locally' section in docs/serve.md");
    assert_eq!(blocks.len(), 4, "{blocks:#?}");
    // The first two start moto and the server: the test starts them, as
    // they would, on free ports.
    assert!(
        blocks[0].contains("python3 -m moto.server -p 5000"),
        "{}",
        blocks[0]
    );
    assert!(
        blocks[1].starts_with("kvs-local-server --port 4566 --demo-call 60"),
        "{}",
        blocks[1]
    );
    let moto = moto::Moto::start();
    let call = Call::demo(4);
    let kvs = common::serve(State::new(Vec::new()));
    kvs.add_repeated_call("demo-call", &call);
    let ports = |block: &str| {
        block
            .replace("http://127.0.0.1:5000", &moto.endpoint)
            .replace("http://127.0.0.1:4566", &kvs.endpoint())
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let made = Command::new("sh")
        .args(["-c", &ports(&blocks[2])])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let queue = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert!(
        ports(&blocks[3]).contains(&queue),
        "the page's queue URL is the one made: {queue}"
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kvs-record"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut worker = Command::new("sh")
        // exec env: the worker is the child, for the SIGTERM.
        .args(["-c", &format!("exec env {}", ports(&blocks[3]))])
        .current_dir(root)
        .env("PATH", path)
        .env("KVS_RECORD_LISTEN", listen.to_string())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, s3) = moto.clients("AKIDLOCAL", "local");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = "5b8b6d2e-1c8f-4f3a-9a57-2f1d3c4e5a6b.wav";
    let deadline = Instant::now() + Duration::from_secs(60);
    let wav = loop {
        let got = rt.block_on(async {
            let out = s3
                .get_object()
                .bucket("recordings")
                .key(key)
                .send()
                .await
                .ok()?;
            Some(out.body.collect().await.ok()?.into_bytes().to_vec())
        });
        if let Some(wav) = got {
            break wav;
        }
        if let Ok(Some(status)) = worker.try_wait() {
            let mut err = String::new();
            worker
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the worker exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no {key} in the bucket after 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let _ = worker.wait();
    let (left, right) = common::deinterleave(&common::wav_data(&wav));
    assert!(
        left == call.pcm_with_silence(Side::Caller),
        "the caller, exactly"
    );
    assert!(
        right == call.pcm_with_silence(Side::Agent),
        "the agent, exactly"
    );
}
