// SPDX-License-Identifier: MPL-2.0
//! The kvs-record command, run as a child process against the local KVS
//! server: its demo, Connect events, WAV, Opus and split output, Ctrl-C and
//! its errors.

#[path = "../../gst-plugin-kvs/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kvs_local_server::synth::{Call, Side};

const RECORD: &str = env!("CARGO_BIN_EXE_kvs-record");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvs-record-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(args: &[&str], stdin: Option<&str>) -> Output {
    run_record(args, stdin, &[])
}

/// kvs-record with these environment variables changed (an empty value
/// removes one).
fn record_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_record(args, None, env)
}

fn run_record(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(RECORD);
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    // Whatever happened, GStreamer itself had nothing to complain about.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("GStreamer-CRITICAL") && !stderr.contains("GStreamer-WARNING"),
        "{}",
        text(&out)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The data of a WAV whose header sizes match the file; its channel count.
fn valid_wav(path: &Path) -> (Vec<u8>, u16) {
    let wav = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&wav[..4], b"RIFF");
    let riff = u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff, wav.len() - 8, "RIFF size of {}", path.display());
    let data = common::wav_data(&wav);
    // Every chunk (data, and any LIST after it) ends where the next begins.
    let mut at = 12;
    while at < wav.len() {
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + size + (size & 1);
    }
    assert_eq!(at, wav.len(), "chunk sizes of {}", path.display());
    let channels = u16::from_le_bytes(wav[22..24].try_into().unwrap());
    (data, channels)
}

fn interleave(left: &[u8], right: &[u8]) -> Vec<u8> {
    left.chunks(2)
        .zip(right.chunks(2))
        .flat_map(|(l, r)| [l[0], l[1], r[0], r[1]])
        .collect()
}

use common::ServedCall as Fixture;

impl Fixture {
    fn arn(&self) -> String {
        self.server.state.stream_named("call").unwrap().arn.clone()
    }

    /// Both sides, silence as zeros, caller left.
    fn stereo(&self) -> Vec<u8> {
        interleave(
            &self.call.pcm_with_silence(Side::Caller),
            &self.call.pcm_with_silence(Side::Agent),
        )
    }
}

#[test]
fn demo_records_the_call_bit_exact_with_a_silent_side() {
    let dir = temp_dir("demo");
    let out = dir.join("demo.wav");
    let run = record(
        &[
            "--demo",
            "--demo-seconds",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("audio_0 (AUDIO_FROM_CUSTOMER) -> left")
            && stdout.contains("audio_1 (AUDIO_TO_CUSTOMER) -> right"),
        "{stdout}"
    );
    let (data, channels) = valid_wav(&out);
    assert_eq!(channels, 2);
    let call = Call::demo(8);
    let (left, right) = common::deinterleave(&data);
    assert!(left == call.pcm(Side::Caller), "caller channel");
    assert!(right == call.pcm_with_silence(Side::Agent), "agent channel");
    // The agent's 3 s of silence are zeros, and both sides last as long.
    // Blocks are 64 ms: the silent ones run from 3.008 s to 6.016 s.
    assert!(right[3008 * 16..6016 * 16].iter().all(|&b| b == 0));
    assert!(right[..3 * 16000].iter().any(|&b| b != 0));
    assert_eq!(left.len(), right.len());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ctrl_c_leaves_a_valid_wav() {
    let dir = temp_dir("sigint");
    let out = dir.join("cut.wav");
    let mut child = Command::new(RECORD)
        .args(["--demo", "--demo-seconds", "60", "--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some seconds of audio are in the file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 3 * 32000 {
        assert!(Instant::now() < deadline, "nothing recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", text(&run));
    let (data, channels) = valid_wav(&out);
    assert_eq!(channels, 2);
    // What is there is the start of the call, exactly.
    let call = Call::demo(60);
    let expected = interleave(
        &call.pcm_with_silence(Side::Caller),
        &call.pcm_with_silence(Side::Agent),
    );
    assert!(data.len() >= 3 * 32000, "{} bytes", data.len());
    assert!(data.len() < expected.len());
    assert!(data == expected[..data.len()], "a prefix of the call");
    std::fs::remove_dir_all(&dir).ok();
}

/// kvs-record arguments for the fixture's stored stream, from its start.
fn stored<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--stream",
        "call",
        "--region",
        "us-east-1",
        "--start",
        "earliest",
        "--idle-timeout",
        "1",
        "--endpoint-uri",
        endpoint,
    ];
    args.extend_from_slice(extra);
    args
}

fn connect_event(arn: &str, audio_extra: &str) -> String {
    format!(
        r#"{{"Name": "ContactFlowEvent", "Details": {{"ContactData": {{
            "ContactId": "5b8b6d2e-1c8f-4f3a-9a57-2f1d3c4e5a6b",
            "MediaStreams": {{"Customer": {{"Audio": {{"StreamARN": "{arn}" {audio_extra}}}}}}}}}}}}}"#
    )
}

/// A call whose track 1 is the agent, with the agent silent 3 s to 6 s.
fn swapped_call() -> Call {
    Call {
        fragments: 12,
        swapped: true,
        silence: vec![(Side::Agent, 3000..6000)],
        ..Call::default()
    }
}

/// `--event` with a worker's range message: the stream's audio over that
/// time, across the change to another contact (a reused stream), where a
/// contact event would stop.
#[test]
fn a_range_message_records_across_contacts() {
    let f = Fixture::stored(Call {
        fragments: 8,
        next_contact: Some((5, "the-next-one".into())),
        ..Call::default()
    });
    let dir = temp_dir("range");
    let event = dir.join("range.json");
    let (start, fragment_ms) = (f.call.start_ms, f.call.fragment_ms());
    // Fragments 1 to 6: the end is fragment 6's start, included.
    let range = format!(
        r#"{{"Range": {{"StreamARN": "{}", "Start": {}, "End": {}, "Name": "day/part-000"}}}}"#,
        f.arn(),
        start + fragment_ms,
        start + 6 * fragment_ms
    );
    std::fs::write(&event, range).unwrap();
    let out = dir.join("range.wav");
    let run = record(
        &[
            "--event",
            event.to_str().unwrap(),
            "--endpoint-uri",
            &f.server.endpoint(),
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("Range day/part-000: recording"), "{stdout}");
    let (data, _) = valid_wav(&out);
    let frame = f.call.rate as usize * 4 * fragment_ms as usize / 1000;
    assert_eq!(data.len(), 6 * frame, "six fragments");
    assert!(data[..] == f.stereo()[frame..7 * frame], "bit-exact");
}

#[test]
fn ended_contact_from_an_event_file_by_track_name() {
    let f = Fixture::stored(swapped_call());
    let dir = temp_dir("event");
    let event = dir.join("event.json");
    let start = f.call.start_ms;
    let stop = start + f.call.fragments * f.call.fragment_ms() - 1;
    let extra = format!(
        r#", "StartFragmentNumber": "{}", "StartTimestamp": "{start}", "StopTimestamp": "{stop}""#,
        f.call.fragment_number(0)
    );
    std::fs::write(&event, connect_event(&f.arn(), &extra)).unwrap();
    let out = dir.join("contact.wav");
    let endpoint = f.server.endpoint();
    let run = record(
        &[
            "--event",
            event.to_str().unwrap(),
            "--endpoint-uri",
            &endpoint,
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("from the archive"), "{stdout}");
    // Track 1 is the agent, yet the caller is on the left.
    assert!(
        stdout.contains("audio_1 (AUDIO_FROM_CUSTOMER) -> left"),
        "{stdout}"
    );
    let (data, _) = valid_wav(&out);
    assert!(data == f.stereo(), "caller left, agent right, bit-exact");

    // The same contact in 2-second pieces, from the archive as fast as it comes.
    let pieces = dir.join("contact.wav");
    let run = record(
        &[
            "--event",
            event.to_str().unwrap(),
            "--endpoint-uri",
            &endpoint,
            "--split-seconds",
            "2",
        ]
        .into_iter()
        .chain(["--out", pieces.to_str().unwrap()])
        .collect::<Vec<_>>(),
        None,
    );
    assert!(run.status.success(), "{}", text(&run));
    let mut joined = Vec::new();
    for i in 0..7 {
        let (piece, _) = valid_wav(&dir.join(format!("contact-{i:05}.wav")));
        assert_eq!(
            piece.len(),
            if i < 6 {
                64000
            } else {
                f.stereo().len() - 6 * 64000
            }
        );
        joined.extend(piece);
    }
    assert!(!dir.join("contact-00007.wav").exists());
    assert!(joined == f.stereo(), "the pieces make the contact");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn live_contact_from_stdin_to_opus_and_to_pieces() {
    let f = Fixture::stored(swapped_call());
    let dir = temp_dir("opus");
    let event = connect_event(
        &f.arn(),
        &format!(r#", "StartTimestamp": {}"#, f.call.start_ms),
    );
    let endpoint = f.server.endpoint();
    let opus = dir.join("call.opus");
    let run = record(
        &[
            "--event",
            "-",
            "--endpoint-uri",
            &endpoint,
            "--idle-timeout",
            "1",
            "--out",
            opus.to_str().unwrap(),
        ],
        Some(&event),
    );
    assert!(run.status.success(), "{}", text(&run));
    let ogg = std::fs::read(&opus).unwrap();
    assert_eq!(&ogg[..4], b"OggS");
    assert!(ogg.windows(8).any(|w| w == b"OpusHead"));
    // The last page ends the stream, at the call's length (48 kHz granules).
    let last = ogg.windows(4).rposition(|w| w == b"OggS").unwrap();
    assert_eq!(ogg[last + 5] & 0x04, 0x04, "EOS page");
    let granule = u64::from_le_bytes(ogg[last + 6..last + 14].try_into().unwrap());
    let seconds = f.call.fragments as f64 * f.call.fragment_ms() as f64 / 1000.0;
    assert!(
        (granule as f64 / 48000.0 - seconds).abs() < 0.1,
        "granule {granule}, call {seconds} s"
    );

    let pieces = dir.join("piece.wav");
    let args = stored(
        &endpoint,
        &["--split-seconds", "1", "--out", pieces.to_str().unwrap()],
    );
    let run = record(&args, None);
    assert!(run.status.success(), "{}", text(&run));
    let mut joined = Vec::new();
    let mut count = 0;
    while let Ok(true) = dir.join(format!("piece-{count:05}.wav")).try_exists() {
        let (data, channels) = valid_wav(&dir.join(format!("piece-{count:05}.wav")));
        assert_eq!(channels, 2);
        assert!(
            data.len() <= 32000 + 640,
            "piece {count}: {} bytes",
            data.len()
        );
        joined.extend(data);
        count += 1;
    }
    assert_eq!(count, seconds.ceil() as usize, "one piece a second");
    assert!(joined == f.stereo(), "the pieces make the call");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mono_mix_has_one_channel() {
    let f = Fixture::stored(Call {
        fragments: 3,
        ..Call::default()
    });
    let dir = temp_dir("mono");
    let out = dir.join("mono.wav");
    let endpoint = f.server.endpoint();
    let args = stored(&endpoint, &["--mono-mix", "--out", out.to_str().unwrap()]);
    let run = record(&args, None);
    assert!(run.status.success(), "{}", text(&run));
    let (data, channels) = valid_wav(&out);
    assert_eq!(channels, 1);
    assert_eq!(data.len(), f.call.pcm(Side::Caller).len());
    // Each sample is the sum of both sides.
    let caller = f.call.pcm(Side::Caller);
    let agent = f.call.pcm(Side::Agent);
    let s = |b: &[u8], i: usize| i32::from(i16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
    for i in [0, 100, 5000, 12000] {
        assert_eq!(s(&data, i), s(&caller, i) + s(&agent, i), "sample {i}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stream_in_either_track_order_is_caller_left_agent_right() {
    for swapped in [false, true] {
        let f = Fixture::stored(Call {
            fragments: 4,
            swapped,
            silence: vec![(Side::Caller, 1024..2048)],
            ..Call::default()
        });
        let dir = temp_dir(&format!("order-{swapped}"));
        let out = dir.join("call.wav");
        let endpoint = f.server.endpoint();
        let run = record(&stored(&endpoint, &["--out", out.to_str().unwrap()]), None);
        assert!(run.status.success(), "{}", text(&run));
        let (data, channels) = valid_wav(&out);
        assert_eq!(channels, 2);
        assert!(
            data == f.stereo(),
            "swapped {swapped}: caller left, agent right"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn live_event_stops_at_the_end_of_its_contact() {
    // The stream goes on with the next contact after three fragments; its
    // ContactId comes only after the new contact's first Cluster.
    let f = Fixture::stored(Call {
        fragments: 5,
        next_contact: Some((3, "the-next-contact".into())),
        ..Call::default()
    });
    let dir = temp_dir("contact-end");
    let out = dir.join("contact.wav");
    let event = connect_event(
        &f.arn(),
        &format!(r#", "StartTimestamp": {}"#, f.call.start_ms),
    );
    let endpoint = f.server.endpoint();
    let run = record(
        &[
            "--event",
            "-",
            "--endpoint-uri",
            &endpoint,
            "--out",
            out.to_str().unwrap(),
        ],
        Some(&event),
    );
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("The contact ended (the stream moved on to contact the-next-contact)"),
        "{}",
        text(&run)
    );
    let (data, _) = valid_wav(&out);
    let contact = Call {
        fragments: 3,
        ..f.call.clone()
    };
    let expected = interleave(
        &contact.pcm_with_silence(Side::Caller),
        &contact.pcm_with_silence(Side::Agent),
    );
    assert!(
        data == expected,
        "exactly the contact's {} bytes",
        expected.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// What was given, the arguments, the environment changed, the exit code,
/// and what the output must say.
type BadInput<'a> = (
    &'a str,
    Vec<String>,
    Vec<(&'a str, &'a str)>,
    i32,
    &'a [&'a str],
);

/// Bad input as a new user gives it: each gets its exit code and a message
/// that names the cause, and leaves no empty file behind.
#[test]
fn bad_input_table() {
    let f = Fixture::stored(Call {
        fragments: 2,
        ..Call::default()
    });
    let endpoint = f.server.endpoint();
    let dir = temp_dir("bad");
    let out = dir.join("out.wav");
    let out = out.to_str().unwrap();
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "{\"Details\": {").unwrap();
    std::fs::create_dir_all(dir.join("taken.wav")).unwrap();
    let taken = dir.join("taken.wav");
    let missing = dir.join("no/such/dir/out.wav");
    let down = "http://127.0.0.1:9";
    let stored_to = |extra: &[&str]| {
        let mut args: Vec<String> = stored(&endpoint, extra)
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--out".into(), out.into()]);
        args
    };
    let with = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut unknown = stored_to(&[]);
    unknown[1] = "no-such-stream".into();
    let mut refused = stored_to(&["--idle-timeout", "2"]);
    refused[9] = down.into();
    let cases: Vec<BadInput> = vec![
        (
            "missing directory",
            with(&["--demo", "--out", missing.to_str().unwrap()]),
            vec![],
            2,
            &["the folder", "does not exist"],
        ),
        (
            "unwritable file",
            with(&["--demo", "--out", taken.to_str().unwrap()]),
            vec![],
            2,
            &["cannot write the output", "Is a directory"],
        ),
        (
            "endpoint down",
            refused,
            vec![],
            1,
            &[
                "Could not read Kinesis video stream call in region us-east-1: connection \
                 refused at http://127.0.0.1:9 (4 attempts in a row failed",
                "; nothing listens there: check --endpoint-uri",
            ],
        ),
        (
            "unknown stream",
            unknown,
            vec![],
            1,
            &["no-such-stream was not found in region us-east-1; check --stream"],
        ),
        (
            "wrong secret",
            stored_to(&[]),
            vec![("AWS_SECRET_ACCESS_KEY", "wrong")],
            1,
            &[
                "Could not read Kinesis video stream call in region us-east-1: signature \
                 rejected: a wrong secret access key, or a clock more than 5 minutes off",
                "; check AWS_SECRET_ACCESS_KEY and the machine's clock",
            ],
        ),
        (
            "access denied",
            stored_to(&[]),
            vec![("AWS_ACCESS_KEY_ID", "AKIDDENIED")],
            1,
            &["call in region us-east-1: access denied; the IAM policy of these credentials"],
        ),
        (
            "no credentials",
            stored_to(&[]),
            vec![
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_CONFIG_FILE", "/nonexistent/config"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
            ],
            1,
            &[
                "Could not read Kinesis video stream call in region us-east-1: no AWS \
                 credentials found (looked in the environment",
                "; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            ],
        ),
        (
            "no region",
            with(&[
                "--stream",
                "call",
                "--start",
                "earliest",
                "--endpoint-uri",
                &endpoint,
                "--out",
                out,
            ]),
            vec![
                ("AWS_REGION", ""),
                ("AWS_DEFAULT_REGION", ""),
                ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ],
            2,
            &["no AWS region was given and none is configured; give --region or set AWS_REGION"],
        ),
        (
            "endpoint without a scheme",
            stored_to(&["--endpoint-uri", "127.0.0.1:9"]),
            vec![],
            2,
            &["--endpoint-uri 127.0.0.1:9: give the scheme, as in http://127.0.0.1:9"],
        ),
        (
            "endpoint of another scheme",
            stored_to(&["--endpoint-uri", "htp://127.0.0.1:9"]),
            vec![],
            2,
            &["the scheme must be http:// or https://, not htp://"],
        ),
        (
            "region near miss",
            stored_to(&["--region", "us-east1"]),
            vec![],
            2,
            &["--region \"us-east1\" is not an AWS region: did you mean us-east-1?"],
        ),
        (
            "region with a space",
            stored_to(&["--region", "US East"]),
            vec![],
            2,
            &["did you mean us-east-1?"],
        ),
        (
            "a time that does not parse",
            stored_to(&["--start", "timestamp:yesterday"]),
            vec![],
            2,
            &["--start \"timestamp:yesterday\": \"yesterday\" is not a time"],
        ),
        (
            "end before start",
            stored_to(&[
                "--start",
                "timestamp:2023-11-14T22:13:30Z",
                "--end",
                "2023-11-14T22:13:20Z",
            ]),
            vec![],
            2,
            &["--end 2023-11-14T22:13:20Z is before --start 2023-11-14T22:13:30Z"],
        ),
        (
            "end with start now",
            stored_to(&["--start", "now", "--end", "2023-11-14T22:13:30Z"]),
            vec![],
            2,
            &["--end reads the archive, so it needs a --start in the past"],
        ),
        (
            "bad event JSON",
            with(&["--event", bad_json.to_str().unwrap()]),
            vec![],
            2,
            &["not valid JSON"],
        ),
        (
            "caps that cannot be negotiated",
            stored_to(&["--connect-pcm", "never"]),
            vec![],
            1,
            &[
                "Track 1 (\"AUDIO_FROM_CUSTOMER\", CodecID A_AAC) came out as audio/mpeg",
                "try --connect-pcm always",
                "no audio was recorded, so",
            ],
        ),
    ];
    for (what, args, env, code, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = record_env(&args, &env);
        let all = text(&run);
        assert_eq!(run.status.code(), Some(code), "{what}: {all}");
        for s in says {
            assert!(all.contains(s), "{what}: no {s:?} in {all}");
        }
        assert!(!all.contains("panicked"), "{what}: {all}");
        // In the tool's terms: no SDK dump, no source path, no property.
        for word in [
            "DispatchFailure",
            ".rs(",
            "endpoint-uri (if set)",
            "start-timestamp",
        ] {
            assert!(!all.contains(word), "{what}: {word:?} in {all}");
        }
        if code == 2 {
            assert!(all.contains("Try 'kvs-record --help'."), "{what}: {all}");
        }
        assert!(!std::path::Path::new(out).exists(), "{what}: left {out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_errors_say_what_to_do() {
    let run = record(
        &["--event", "-"],
        Some(&connect_event("", r#", "StartTimestamp": 1"#)),
    );
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        text(&run).contains("StreamARN is missing"),
        "{}",
        text(&run)
    );

    let run = record(&["--stream"], None);
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run).contains("--help"));
}

/// A live call of `fragments` on its own server, changed by `setup`.
fn live(fragments: u64, setup: impl FnOnce(&mut kvs_local_server::State)) -> Fixture {
    let call = Call {
        fragments,
        ..Call::default()
    };
    Fixture::with(call, true, setup)
}

/// kvs-record reading the fixture's live call from its start; its output
/// and how long it took.
fn record_live(f: &Fixture, out: &Path, extra: &[&str]) -> (Output, Duration) {
    let endpoint = f.server.endpoint();
    let mut args = vec![
        "--stream",
        "call",
        "--region",
        "us-east-1",
        "--start",
        "earliest",
    ];
    args.extend([
        "-q",
        "--endpoint-uri",
        &endpoint,
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend(extra);
    let started = Instant::now();
    let run = record(&args, None);
    (run, started.elapsed())
}

/// The peer stops for 8 s, longer than --idle-timeout and kvs-record's
/// 5 s read and request deadlines: the recording rides it out, complete.
#[test]
fn an_outage_shorter_than_max_outage_is_ridden_out() {
    let f = live(12, |_| {});
    let out = temp_dir("short-outage").join("call.wav");
    let pause = f.pause_later(Duration::from_millis(2500), Some(Duration::from_secs(8)));
    let (run, took) = record_live(&f, &out, &["--idle-timeout", "2", "--max-outage", "30"]);
    pause.join().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let (data, _) = valid_wav(&out);
    assert!(data == f.stereo(), "every sample once\n{}", text(&run));
    eprintln!("kvs-record, 8 s outage: exit 0 after {took:?}, the whole call kept");
}

/// The peer stops for good: exit status 1, a line naming the cause, and a
/// finalized WAV holding what came before, of which it says how much.
/// (kvs-record makes at least four attempts of 5 s each, and keeps up
/// --max-outage S after the first failure.)
#[test]
fn an_outage_longer_than_max_outage_fails_and_says_what_was_kept() {
    let f = live(12, |_| {});
    let out = temp_dir("long-outage").join("call.wav");
    let _pause = f.pause_later(Duration::from_millis(2500), None);
    let (run, took) = record_live(&f, &out, &["--idle-timeout", "2", "--max-outage", "3"]);
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("got no answer within 5.0 s"), "{stderr}");
    let kept = stderr
        .split("kvs-record: the ")
        .nth(1)
        .and_then(|rest| {
            rest.split(" s of audio recorded before the error are in")
                .next()
        })
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("how much was kept: {stderr}"));
    let (data, _) = valid_wav(&out);
    assert!(!data.is_empty() && f.stereo().starts_with(&data));
    let seconds = data.len() as f64 / 32_000.0;
    assert!(
        (seconds - kept).abs() < 0.1,
        "{seconds} s in the file, {kept} s said"
    );
    eprintln!("kvs-record, peer stopped for good: exit 1 after {took:?}, {kept} s kept");
}

/// KVS ends every GetMedia session after 40 to 45 minutes; here after 3 s,
/// at a chunk boundary and in the middle of a chunk: the WAV is whole.
#[test]
fn a_live_call_across_getmedia_session_ends_is_recorded_whole() {
    for mid_chunk in [false, true] {
        let f = live(10, |state| {
            state
                .faults
                .idle_end_ms
                .store(500, std::sync::atomic::Ordering::SeqCst);
            state.session_end = kvs_local_server::SessionEnd {
                after: Some(Duration::from_secs(3)),
                mid_chunk,
            };
        });
        let out = temp_dir(&format!("session-{mid_chunk}")).join("call.wav");
        let (run, _) = record_live(&f, &out, &["--idle-timeout", "2"]);
        assert!(run.status.success(), "{}", text(&run));
        let (data, _) = valid_wav(&out);
        assert!(
            data == f.stereo(),
            "mid-chunk {mid_chunk}: every sample once"
        );
        let ended = f
            .server
            .state
            .counters
            .sessions_ended
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(ended >= 2, "{ended} session ends");
    }
}

/// The sample contact event of examples/ names the local server's demo
/// stream and its first contact: kvs-record records that call exactly and
/// stops where the next begins. Later, with that call long over, a live
/// reader run twice in a row gets a call each time, as on a Connect
/// stream that goes from call to call.
#[test]
fn the_sample_event_and_late_live_readers_get_the_demo_servers_calls() {
    let call = Call::demo(4);
    let server = common::serve(kvs_local_server::State::new(Vec::new()));
    server.add_repeated_call("demo-call", &call);
    let endpoint = server.endpoint();
    let dir = temp_dir("sample-event");
    let event = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/contact-event.json"
    );
    let out = dir.join("contact.wav");
    let run = record(
        &[
            "--event",
            event,
            "--endpoint-uri",
            &endpoint,
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains(
            "The contact ended (the stream moved on to contact 5b8b6d2e-1c8f-4f3a-9a57-2f1d3c4e5a6c)"
        ),
        "{}",
        text(&run)
    );
    let whole = interleave(
        &call.pcm_with_silence(Side::Caller),
        &call.pcm_with_silence(Side::Agent),
    );
    assert!(valid_wav(&out).0 == whole, "the first call, exactly");
    // The first two calls are over now.
    std::thread::sleep(Duration::from_secs(5));
    for run in 0..2 {
        let out = dir.join(format!("late-{run}.wav"));
        let done = record(
            &[
                "--stream",
                "demo-call",
                "--region",
                "us-east-1",
                "--endpoint-uri",
                &endpoint,
                "-q",
                "--out",
                out.to_str().unwrap(),
            ],
            None,
        );
        assert!(done.status.success(), "run {run}: {}", text(&done));
        assert!(
            text(&done).contains("The contact ended"),
            "run {run}: {}",
            text(&done)
        );
        let (data, _) = valid_wav(&out);
        assert!(data.len() >= 32000, "run {run}: {} bytes", data.len());
        assert!(
            whole.ends_with(&data),
            "run {run}: the end of a call, exactly"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The man page and the shell completions come from the parser, as meson
/// installs them.
#[test]
fn man_page_and_completions_come_from_the_parser() {
    let run = |kind: &str| {
        let out = Command::new(RECORD)
            .args(["--generate", kind])
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let man = run("man");
    assert!(man.contains(".TH kvs-record 1"), "{man}");
    assert!(man.contains("\\-\\-idle\\-timeout"), "every flag: {man}");
    assert!(man.contains("serve"), "the subcommands");
    assert!(run("bash").contains("-o bashdefault -o default kvs-record"));
    assert!(run("zsh").starts_with("#compdef kvs-record"));
    assert!(run("fish").contains("complete -c kvs-record"));
    let bad = Command::new(RECORD)
        .args(["--generate", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
