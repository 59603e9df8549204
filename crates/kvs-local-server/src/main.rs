// SPDX-License-Identifier: MPL-2.0
//! A local Kinesis Video Streams server for tests, benchmarks and demos.
//! Point kvsgetmediasrc (or any AWS SDK) at it with `endpoint-uri`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kvs_local_server::synth::Call;
use kvs_local_server::synth::camera::Camera;
use kvs_local_server::{LocalKvs, State, Stream};

use clap::Parser;

/// `kvs-record serve` on this machine, as docs/serve.md walks through it.
const WALKTHROUGH: &str = "\
Try kvs-record serve here, with moto for SQS and S3 (from the repository's root,
each command in a terminal of its own):
  pip install 'moto[server]' && python3 -m moto.server -p 5000
  kvs-local-server --port 4566 --demo-call 60
  python3 -c \"import boto3; kw = dict(endpoint_url='http://127.0.0.1:5000', region_name='us-east-1', \\
      aws_access_key_id='AKIDLOCAL', aws_secret_access_key='local'); sqs = boto3.client('sqs', **kw); \\
      boto3.client('s3', **kw).create_bucket(Bucket='recordings'); q = sqs.create_queue(QueueName='calls')['QueueUrl']; \\
      sqs.send_message(QueueUrl=q, MessageBody=open('examples/contact-event.json').read()); print(q)\"
  AWS_ACCESS_KEY_ID=AKIDLOCAL AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 kvs-record serve \\
      --queue-url http://127.0.0.1:5000/123456789012/calls --bucket recordings \\
      --sqs-endpoint http://127.0.0.1:5000 --s3-endpoint http://127.0.0.1:5000 --endpoint-uri http://127.0.0.1:4566
The call's WAV is then s3://recordings/5b8b6d2e-1c8f-4f3a-9a57-2f1d3c4e5a6b.wav (see docs/serve.md).";

/// kvs-local-server's command line.
#[derive(Parser, Debug)]
#[command(
    name = "kvs-local-server",
    version,
    about = ABOUT,
    after_help = WALKTHROUGH,
    args_override_self = true
)]
struct Cli {
    /// Serve the chunks of a GetMedia capture or MKV file
    #[arg(
        long = "stream",
        value_name = "NAME=FILE.mkv",
        help_heading = "Streams"
    )]
    streams: Vec<String>,
    /// Serve live synthetic Connect calls of SECONDS each as stream 'demo-call', paced in real
    /// time and back to back, each with a new ContactId, as Connect reuses a stream; the first
    /// is examples/contact-event.json's contact [default: 60, when no other stream is given]
    #[arg(long, value_name = "SECONDS", help_heading = "Streams")]
    demo_call: Option<u64>,
    /// With it, N more: 'demo-call-0' to 'demo-call-N-1', each 1/N of a fragment later than the
    /// one before, as calls that did not start together (benchmarks)
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Streams")]
    demo_copies: u64,
    /// Serve a stored synthetic Connect call as stream 'archive-call', all of it available at once
    #[arg(long, value_name = "SECONDS", help_heading = "Streams")]
    archive_call: Option<u64>,
    /// Serve a live synthetic camera: H.264 640x360 at 25 fps from x264enc, 2 s fragments,
    /// producer times from now (default: 600 s)
    #[arg(
        long = "camera",
        value_name = "NAME[=SECONDS]",
        help_heading = "Streams"
    )]
    cameras: Vec<String>,
    /// The same, stored: all of it available at once, from 2023-11-14T22:13:20Z (producer time)
    #[arg(
        long = "archive-camera",
        value_name = "NAME[=SECONDS]",
        help_heading = "Streams"
    )]
    archive_cameras: Vec<String>,
    /// An empty stream for producers to put into (PutMedia); CreateStream makes more
    #[arg(long = "put-stream", value_name = "NAME", help_heading = "Streams")]
    put_streams: Vec<String>,
    /// Bytes a second read from one PutMedia connection (0: no limit) [default: 12500000, as KVS]
    #[arg(long, value_name = "BYTES", help_heading = "PutMedia")]
    put_rate: Option<u64>,
    /// PutMedia calls a second per stream [default: 5, as KVS]
    #[arg(long, value_name = "N", help_heading = "PutMedia")]
    put_calls: Option<usize>,
    /// Keep only the newest N fragments of each put stream [default: all]
    #[arg(long, value_name = "N", help_heading = "PutMedia")]
    keep_fragments: Option<usize>,
    /// Cut K PutMedia connections ...
    #[arg(long, value_name = "K", help_heading = "PutMedia")]
    put_cuts: Option<u32>,
    /// ... when N fragments are whole and the next has a block
    #[arg(long, value_name = "N", help_heading = "PutMedia")]
    put_cut_after: Option<u32>,
    /// Answer K fragments with an ERROR acknowledgement ...
    #[arg(long, value_name = "K", help_heading = "PutMedia")]
    put_errors: Option<u32>,
    /// ... of this ErrorId [default: 5000]
    #[arg(long, value_name = "ID", help_heading = "PutMedia")]
    put_error_id: Option<u32>,
    /// Port to listen on (0: any free port)
    #[arg(long, value_name = "N", default_value_t = 0)]
    port: u16,
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    /// Check the signatures of requests signed with KEY
    #[arg(long = "key", value_name = "KEY:SECRET")]
    keys: Vec<String>,
    /// End each GetMedia response after S seconds, at a chunk boundary, as KVS ends every
    /// GetMedia session after about 40 to 45 minutes
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    session_seconds: Option<u64>,
    /// With it: end the response in the middle of a chunk
    #[arg(long, requires = "session_seconds")]
    session_end_mid_chunk: bool,
    /// Cut each connection after BYTES body bytes
    #[arg(long, value_name = "BYTES", help_heading = "Faults")]
    cut_after: Option<u64>,
    /// Cut each connection after a random count of bytes up to MAX
    #[arg(long, value_name = "MAX", help_heading = "Faults")]
    cut_random: Option<u64>,
    /// How many connections to cut [default with a cut: 1000000]
    #[arg(long, value_name = "N", help_heading = "Faults")]
    cuts: Option<u32>,
    /// Refuse the first K GetMedia, ListFragments or GetMediaForFragmentList calls
    /// (ClientLimitExceeded)
    #[arg(long, value_name = "K", help_heading = "Faults")]
    throttle: Option<u32>,
    /// Refuse the next K GetMedia calls (InvalidEndpoint)
    #[arg(long, value_name = "K", help_heading = "Faults")]
    invalid_endpoint: Option<u32>,
    /// Stall one body for T ms ...
    #[arg(long, value_name = "T", help_heading = "Faults")]
    stall_ms: Option<u64>,
    /// ... after BYTES
    #[arg(long, value_name = "BYTES", help_heading = "Faults")]
    stall_after: Option<u64>,
    /// Send in-band error tags in place of fragment N (GetMediaForFragmentList: as if it were
    /// missing)
    #[arg(long, value_name = "N", help_heading = "Faults")]
    error_at: Option<u32>,
    /// At most N fragments per ListFragments page
    #[arg(long, value_name = "N", help_heading = "Faults")]
    page_max: Option<u32>,
    /// Send each GetMediaForFragmentList body at most BYTES a second, as one connection to a
    /// faraway region does
    #[arg(long, value_name = "BYTES", help_heading = "Faults")]
    archive_rate: Option<u64>,
    /// Serve only the first N fragments
    #[arg(long, value_name = "N", help_heading = "Faults")]
    end_after: Option<u32>,
    /// End a body with nothing to send after MS [default: 3000]
    #[arg(long, value_name = "MS", help_heading = "Faults")]
    idle_end_ms: Option<u64>,
    /// Take the next K GetMedia, GetMediaForFragmentList or PutMedia requests and never answer
    /// them
    #[arg(long, value_name = "K", help_heading = "Faults")]
    unanswered: Option<u32>,
}

const ABOUT: &str = "\
Serves the KVS REST API (CreateStream, DeleteStream, DescribeStream, GetDataEndpoint,
PutMedia, GetMedia, ListFragments, GetMediaForFragmentList) on 127.0.0.1
and prints the endpoint URL. What producers put is served to readers at
once, a reader waiting at NOW included. Requests must be SigV4-signed. For the access keys it
knows (AKIDTEST, AKIDBENCH, AKIDDEMO and AKIDLOCAL, with the secrets
test-secret, bench, demo and local, and any given with --key) it signs each
request again and refuses a wrong signature with InvalidSignatureException;
other keys are accepted on the form of the header. AKIDDENIED gets
NotAuthorizedException.";

/// Stores `value` in `to` when it was given.
fn set<A, T>(to: &A, value: Option<T>, store: impl Fn(&A, T)) {
    if let Some(v) = value {
        store(to, v);
    }
}

fn main() {
    let cli = Cli::parse();
    let fail = |what: String| -> ! {
        eprintln!("kvs-local-server: {what}");
        std::process::exit(2)
    };
    let mut streams = Vec::new();
    for spec in &cli.streams {
        let Some((name, file)) = spec.split_once('=') else {
            fail("--stream takes NAME=FILE.mkv".into())
        };
        let data = std::fs::read(file).unwrap_or_else(|e| {
            eprintln!("kvs-local-server: cannot read {file}: {e}");
            std::process::exit(1)
        });
        streams.push(Stream::from_mkv(name, &data));
    }
    streams.extend(cli.put_streams.iter().map(|n| Stream::empty(n, 24)));
    if let Some(seconds) = cli.archive_call {
        streams.push(Stream::from_call(
            "archive-call",
            &Call::demo(seconds),
            false,
        ));
    }
    let cameras = cli
        .cameras
        .iter()
        .map(|c| (c, true))
        .chain(cli.archive_cameras.iter().map(|c| (c, false)));
    for (spec, live) in cameras {
        let (name, seconds) = match spec.split_once('=') {
            Some((name, s)) => match s.parse() {
                Ok(seconds) => (name, seconds),
                Err(_) => fail(format!("--camera {spec:?}: the seconds are a number")),
            },
            None => (spec.as_str(), 600),
        };
        streams.push(camera(name, seconds, live));
    }
    let demo = (streams.is_empty() || cli.demo_call.is_some())
        .then(|| Call::demo(cli.demo_call.unwrap_or(60)));
    if let Some(call) = &demo {
        let stream = Stream::from_call("demo-call", call, true);
        let copies = cli.demo_copies;
        let step = Duration::from_millis(call.fragment_ms()) / (copies.max(1) as u32);
        for i in 0..copies {
            streams.extend(stream.live_copy(&format!("demo-call-{i}"), step * (i as u32 + 1)));
        }
        streams.push(stream);
    }
    let mut state = State::new(streams);
    for spec in &cli.keys {
        let Some((key, secret)) = spec.split_once(':') else {
            fail("--key takes KEY:SECRET".into())
        };
        state.secrets.insert(key.to_string(), secret.to_string());
    }
    state.session_end = kvs_local_server::SessionEnd {
        after: cli.session_seconds.map(Duration::from_secs),
        mid_chunk: cli.session_end_mid_chunk,
    };
    if let Some(v) = cli.put_rate {
        state.put.bytes_per_second = v;
    }
    if let Some(v) = cli.put_calls {
        state.put.calls_per_second = v;
    }
    state.put.keep = cli.keep_fragments.or(state.put.keep);
    let f = &state.faults;
    let store32 = |a: &std::sync::atomic::AtomicU32, v: u32| a.store(v, Ordering::SeqCst);
    let store64 = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::SeqCst);
    set(&f.cut_after, cli.cut_after, store64);
    set(&f.cut_max, cli.cut_random, store64);
    set(&f.cuts, cli.cuts, store32);
    if (cli.cut_after.is_some() || cli.cut_random.is_some()) && cli.cuts.is_none() {
        f.cuts.store(1_000_000, Ordering::SeqCst);
    }
    set(&f.throttle, cli.throttle, store32);
    set(&f.invalid_endpoint, cli.invalid_endpoint, store32);
    set(&f.stall_ms, cli.stall_ms, store64);
    set(&f.stall_after, cli.stall_after, store64);
    set(&f.error_at, cli.error_at, store32);
    set(&f.end_after, cli.end_after, store32);
    set(&f.idle_end_ms, cli.idle_end_ms, store64);
    set(&f.page_max, cli.page_max, store32);
    set(&f.archive_rate, cli.archive_rate, store64);
    set(&f.put_cuts, cli.put_cuts, store32);
    set(&f.put_cut_after, cli.put_cut_after, store32);
    set(&f.put_errors, cli.put_errors, store32);
    set(&f.put_error_id, cli.put_error_id, store32);
    set(&f.unanswered, cli.unanswered, store32);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let addr = std::net::SocketAddr::new(cli.listen, cli.port);
    runtime.block_on(async {
        let server = LocalKvs::start_on(addr, state).await.unwrap_or_else(|e| {
            eprintln!("kvs-local-server: cannot listen on {addr}: {e}");
            std::process::exit(1)
        });
        println!("kvs-local-server listening on {}", server.endpoint());
        if let Some(call) = demo
            && let Some(stream) = server.state.stream_named("demo-call")
        {
            tokio::spawn(kvs_local_server::repeat_calls(stream, call));
        }
        for name in server.state.stream_names() {
            let stream = server.state.stream_named(&name).expect("a listed stream");
            println!("stream {name}: {}", stream.arn);
        }
        tokio::signal::ctrl_c().await.ok();
    });
}

/// A synthetic camera stream: five fragments encoded, then repeated.
fn camera(name: &str, seconds: u64, live: bool) -> Stream {
    gst::init().expect("GStreamer");
    let mut camera = Camera {
        fragments: seconds.div_ceil(2).max(1) as u32,
        encoded_fragments: 5,
        ..Camera::default()
    };
    let enc = camera.encode().unwrap_or_else(|e| {
        eprintln!("kvs-local-server: cannot make camera {name:?}: {e} (x264enc is in gstreamer1.0-plugins-ugly)");
        std::process::exit(1)
    });
    // A live camera's producer times run from now, its start.
    if live {
        camera.start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
    }
    Stream::from_camera(name, &camera, &enc, live)
}
