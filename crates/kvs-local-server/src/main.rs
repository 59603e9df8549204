// SPDX-License-Identifier: MPL-2.0
//! A local Kinesis Video Streams server for tests, benchmarks and demos.
//! Point kvsgetmediasrc (or any AWS SDK) at it with `endpoint-uri`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kvs_local_server::synth::Call;
use kvs_local_server::synth::camera::Camera;
use kvs_local_server::{LocalKvs, State, Stream};

const USAGE: &str = "\
Usage: kvs-local-server [OPTIONS]

Serves the KVS REST API (CreateStream, DeleteStream, DescribeStream, GetDataEndpoint,
PutMedia, GetMedia, ListFragments, GetMediaForFragmentList) on 127.0.0.1
and prints the endpoint URL. What producers put is served to readers at
once, a reader waiting at NOW included. Requests must be SigV4-signed. For the access keys it
knows (AKIDTEST, AKIDBENCH, AKIDDEMO and AKIDLOCAL, with the secrets
test-secret, bench, demo and local, and any given with --key) it signs each
request again and refuses a wrong signature with InvalidSignatureException;
other keys are accepted on the form of the header. AKIDDENIED gets
NotAuthorizedException.

Streams:
  --stream NAME=FILE.mkv   serve the chunks of a GetMedia capture or MKV file
  --demo-call SECONDS      serve a live synthetic Connect call as stream
                           'demo-call', paced in real time (default: 60)
  --demo-copies N          with it, N more: 'demo-call-0' to 'demo-call-N-1',
                           each 1/N of a fragment later than the one before,
                           as calls that did not start together (benchmarks)
  --archive-call SECONDS   serve a stored synthetic Connect call as stream
                           'archive-call', all of it available at once
  --camera NAME[=SECONDS]  serve a live synthetic camera: H.264 640x360 at
                           25 fps from x264enc, 2 s fragments, producer
                           times from now (default: 600 s)
  --archive-camera NAME[=SECONDS]   the same, stored: all of it available at
                           once, from 2023-11-14T22:13:20Z (producer time)
  --put-stream NAME        an empty stream for producers to put into (PutMedia);
                           CreateStream makes more
PutMedia:
  --put-rate BYTES         bytes a second read from one connection
                           (default: 12500000, as KVS; 0: no limit)
  --put-calls N            PutMedia calls a second per stream (default: 5, as KVS)
  --keep-fragments N       keep only the newest N fragments of each put stream
                           (default: all)
  --put-cuts K --put-cut-after N   cut K PutMedia connections when N
                           fragments are whole and the next has a block
  --put-errors K --put-error-id ID answer K fragments with an ERROR ACK
                           of this ErrorId (default 5000)
Options:
  --port N                 port to listen on (default: 0, any free port)
  --listen ADDR            address to listen on (default: 127.0.0.1)
  --session-seconds S      end each GetMedia response after S seconds, at a
                           chunk boundary, as KVS ends every GetMedia session
                           after about 40 to 45 minutes
  --session-end-mid-chunk  with it: end the response in the middle of a chunk
  --key KEY:SECRET         check the signatures of requests signed with KEY
Faults:
  --cut-after BYTES        cut each connection after BYTES body bytes
  --cut-random MAX         cut each connection after a random count up to MAX
  --cuts N                 how many connections to cut (default with a cut: 1000000)
  --throttle K             refuse the first K GetMedia, ListFragments or
                           GetMediaForFragmentList calls (ClientLimitExceeded)
  --invalid-endpoint K     refuse the next K GetMedia calls (InvalidEndpoint)
  --stall-ms T --stall-after BYTES   stall one body for T ms after BYTES
  --error-at N             send in-band error tags in place of fragment N
                           (GetMediaForFragmentList: as if it were missing)
  --page-max N             at most N fragments per ListFragments page
  --archive-rate BYTES     send each GetMediaForFragmentList body at most BYTES
                           a second, as one connection to a faraway region does
  --end-after N            serve only the first N fragments
  --idle-end-ms MS         end a body with nothing to send after MS (default 3000)
  --unanswered K           take the next K GetMedia, GetMediaForFragmentList or
                           PutMedia requests and never answer them
";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = 0u16;
    let mut listen = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut session_end = kvs_local_server::SessionEnd::default();
    let mut streams = Vec::new();
    let mut demo = None;
    let mut copies = 0;
    let mut archive = None;
    let mut faults: Vec<(String, u64)> = Vec::new();
    let mut keys = Vec::new();
    let mut cameras: Vec<(String, u64, bool)> = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("kvs-local-server: {arg} needs a value\n\n{USAGE}");
                std::process::exit(2)
            })
        };
        let number = |v: String| -> u64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("kvs-local-server: {v:?} is not a number");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            "--port" => {
                port = u16::try_from(number(value())).unwrap_or_else(|_| {
                    eprintln!("kvs-local-server: --port takes 0 to 65535");
                    std::process::exit(2)
                })
            }
            "--listen" => {
                let v = value();
                listen = v.parse().unwrap_or_else(|_| {
                    eprintln!("kvs-local-server: --listen {v:?} is not an IP address");
                    std::process::exit(2)
                })
            }
            "--session-seconds" => {
                session_end.after = Some(Duration::from_secs(number(value()).max(1)))
            }
            "--session-end-mid-chunk" => session_end.mid_chunk = true,
            "--demo-call" => demo = Some(number(value())),
            "--demo-copies" => copies = number(value()),
            "--archive-call" => archive = Some(number(value())),
            "--camera" | "--archive-camera" => {
                let spec = value();
                let (name, seconds) = match spec.split_once('=') {
                    Some((name, s)) => (name.to_string(), number(s.to_string())),
                    None => (spec, 600),
                };
                cameras.push((name, seconds, arg == "--camera"));
            }
            "--key" => {
                let spec = value();
                let Some((key, secret)) = spec.split_once(':') else {
                    eprintln!("kvs-local-server: --key takes KEY:SECRET");
                    std::process::exit(2)
                };
                keys.push((key.to_string(), secret.to_string()));
            }
            "--stream" => {
                let spec = value();
                let Some((name, file)) = spec.split_once('=') else {
                    eprintln!("kvs-local-server: --stream takes NAME=FILE.mkv");
                    std::process::exit(2)
                };
                let data = std::fs::read(file).unwrap_or_else(|e| {
                    eprintln!("kvs-local-server: cannot read {file}: {e}");
                    std::process::exit(1)
                });
                streams.push(Stream::from_mkv(name, &data));
            }
            "--put-stream" => streams.push(Stream::empty(&value(), 24)),
            "--cut-after" | "--cut-random" | "--cuts" | "--throttle" | "--invalid-endpoint"
            | "--stall-ms" | "--stall-after" | "--error-at" | "--end-after" | "--idle-end-ms"
            | "--page-max" | "--archive-rate" | "--put-rate" | "--put-calls"
            | "--keep-fragments" | "--put-cuts" | "--put-cut-after" | "--put-errors"
            | "--put-error-id" | "--unanswered" => {
                let v = number(value());
                faults.push((arg, v));
            }
            other => {
                eprintln!("kvs-local-server: unknown option {other:?}\n\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    if let Some(seconds) = archive {
        streams.push(Stream::from_call(
            "archive-call",
            &Call::demo(seconds),
            false,
        ));
    }
    for (name, seconds, live) in cameras {
        streams.push(camera(&name, seconds, live));
    }
    if streams.is_empty() || demo.is_some() {
        let call = Call::demo(demo.unwrap_or(60));
        let stream = Stream::from_call("demo-call", &call, true);
        let step = Duration::from_millis(call.fragment_ms()) / (copies.max(1) as u32);
        for i in 0..copies {
            streams.extend(stream.live_copy(&format!("demo-call-{i}"), step * (i as u32 + 1)));
        }
        streams.push(stream);
    }
    let mut state = State::new(streams);
    state.secrets.extend(keys);
    state.session_end = session_end;
    for (name, v) in &faults {
        match name.as_str() {
            "--put-rate" => state.put.bytes_per_second = *v,
            "--put-calls" => state.put.calls_per_second = *v as usize,
            "--keep-fragments" => state.put.keep = Some(*v as usize),
            _ => {}
        }
    }
    let f = &state.faults;
    for (name, v) in faults {
        match name.as_str() {
            "--cut-after" => f.cut_after.store(v, Ordering::SeqCst),
            "--cut-random" => f.cut_max.store(v, Ordering::SeqCst),
            "--cuts" => f.cuts.store(v as u32, Ordering::SeqCst),
            "--throttle" => f.throttle.store(v as u32, Ordering::SeqCst),
            "--invalid-endpoint" => f.invalid_endpoint.store(v as u32, Ordering::SeqCst),
            "--stall-ms" => f.stall_ms.store(v, Ordering::SeqCst),
            "--stall-after" => f.stall_after.store(v, Ordering::SeqCst),
            "--error-at" => f.error_at.store(v as u32, Ordering::SeqCst),
            "--end-after" => f.end_after.store(v as u32, Ordering::SeqCst),
            "--idle-end-ms" => f.idle_end_ms.store(v, Ordering::SeqCst),
            "--page-max" => f.page_max.store(v as u32, Ordering::SeqCst),
            "--archive-rate" => f.archive_rate.store(v, Ordering::SeqCst),
            "--put-cuts" => f.put_cuts.store(v as u32, Ordering::SeqCst),
            "--put-cut-after" => f.put_cut_after.store(v as u32, Ordering::SeqCst),
            "--put-errors" => f.put_errors.store(v as u32, Ordering::SeqCst),
            "--put-error-id" => f.put_error_id.store(v as u32, Ordering::SeqCst),
            "--unanswered" => f.unanswered.store(v as u32, Ordering::SeqCst),
            "--put-rate" | "--put-calls" | "--keep-fragments" => {}
            _ => unreachable!("every fault flag is handled"),
        }
        if matches!(name.as_str(), "--cut-after" | "--cut-random")
            && f.cuts.load(Ordering::SeqCst) == 0
        {
            f.cuts.store(1_000_000, Ordering::SeqCst);
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let addr = std::net::SocketAddr::new(listen, port);
        let server = LocalKvs::start_on(addr, state).await.unwrap_or_else(|e| {
            eprintln!("kvs-local-server: cannot listen on {addr}: {e}");
            std::process::exit(1)
        });
        println!("kvs-local-server listening on {}", server.endpoint());
        println!("streams: {}", server.state.stream_names().join(", "));
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
