// SPDX-License-Identifier: MPL-2.0
//! kvs-record: records a Kinesis video stream's audio (an Amazon Connect
//! call) to a stereo WAV or Ogg Opus file with kvsgetmediasrc and
//! kvsaudiodemux. See `kvs-record --help`.

mod args;
mod event;
mod output;
mod pieces;
#[cfg(feature = "serve")]
mod serve;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use kvs_local_server::synth::Call;
use kvs_local_server::{LocalKvs, State, Stream};

use args::{Args, Input};
use clap::{Parser, Subcommand};
use kvs_tools::checks::{self, Clock, When};
use kvs_tools::cli::{Read, usage_exit};
use kvs_tools::failure::BusError;

/// What the recorder is told on the command line, as given.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kvs-record",
    version,
    about = "Records a Kinesis video stream's audio, such as an Amazon Connect call, to a stereo \
             WAV or Ogg Opus file: the caller (track AUDIO_FROM_CUSTOMER) on the left, the agent \
             (AUDIO_TO_CUSTOMER) on the right, aligned by time, with silence where a side says \
             nothing.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    // As with most tools, a flag given twice takes its last value.
    args_override_self = true,
    subcommand_negates_reqs = true,
    group(args::input_group())
)]
pub struct Cli {
    #[command(subcommand)]
    pub tool: Option<Tool>,
    #[command(flatten)]
    pub record: args::Record,
}

/// The other tools of kvs-record.
#[derive(Subcommand, Debug, Clone)]
pub enum Tool {
    /// Records contacts from an SQS queue to S3 or a directory
    #[cfg(feature = "serve")]
    Serve(serve::Cli),
    /// Puts a long time range on the workers' queue in pieces
    #[cfg(feature = "serve")]
    Split(serve::split::Cli),
}

const AFTER_HELP: &str = "\
Credentials come from the AWS SDK's default chain: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, or an instance or task role. They need
kinesisvideo:GetDataEndpoint and GetMedia (ListFragments and
GetMediaForFragmentList with --end or an ended contact).

Recording stops at the end of the contact (a new ContactId in the stream), after
--idle-timeout, at --end, or on Ctrl-C; every stop leaves a finalized file.
Exit status: 0 recorded, 1 failed (the reason is printed), 2 bad usage.";

/// Reads the command line: the recorder's arguments, another tool's, or
/// the text of --help or --version.
fn read(args: impl IntoIterator<Item = String>) -> Result<Read<Cli>, kvs_tools::cli::Usage> {
    kvs_tools::cli::read::<Cli>("kvs-record", args)
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if kvs_tools::cli::generate::<Cli>(&all) {
        return;
    }
    #[cfg(not(feature = "serve"))]
    if matches!(all.first().map(String::as_str), Some("serve" | "split")) {
        fail(
            2,
            "this kvs-record was built without the worker: build it with \
             cargo build --release --features serve",
        );
    }
    // A mistake is said with the pointer to the help of what was run.
    let program = match all.first().map(String::as_str) {
        Some(tool @ ("serve" | "split")) => format!("kvs-record {tool}"),
        _ => "kvs-record".to_string(),
    };
    let cli = match read(all) {
        Ok(Read::Args(cli)) => cli,
        Ok(Read::Said(text)) => {
            print!("{text}");
            return;
        }
        Err(mistake) => usage_exit(&program, &mistake),
    };
    match cli.tool {
        #[cfg(feature = "serve")]
        Some(Tool::Serve(serve)) => std::process::exit(self::serve(serve)),
        #[cfg(feature = "serve")]
        Some(Tool::Split(split)) => std::process::exit(serve::split::main(split)),
        None => {
            let args = args::check(cli.record).unwrap_or_else(|m| usage_exit(&program, &m));
            std::process::exit(Recording::run(args));
        }
    }
}

/// `kvs-record serve`, the queue-fed worker.
#[cfg(feature = "serve")]
fn serve(cli: serve::Cli) -> i32 {
    if let Err(e) = gst::init()
        .map_err(|e| e.to_string())
        .and_then(|_| gstkvs::plugin_register_static().map_err(|e| e.to_string()))
    {
        fail(
            1,
            &format!("cannot start GStreamer and the kvs elements: {e}"),
        );
    }
    serve::main(cli)
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("kvs-record: {message}");
    std::process::exit(code)
}

/// kvsgetmediasrc and kvsaudiodemux settings for the input, and the local
/// server the demo needs.
struct Source {
    src: Vec<(&'static str, String)>,
    demux: Vec<(&'static str, String)>,
    _demo: Option<(tokio::runtime::Runtime, LocalKvs)>,
}

/// The source's properties for --start alone.
fn start_props(when: &When) -> Vec<(&'static str, String)> {
    match when {
        When::Now => vec![("start-selector", "now".into())],
        When::Earliest => vec![("start-selector", "earliest".into())],
        When::Fragment(n) => vec![
            ("start-selector", "fragment-number".into()),
            ("fragment-number", n.clone()),
        ],
        When::At(t, clock) => vec![
            (
                "start-selector",
                selector(clock.unwrap_or(Clock::Server)).into(),
            ),
            ("start-timestamp", t.to_string()),
        ],
    }
}

fn selector(clock: Clock) -> &'static str {
    match clock {
        Clock::Server => "server-timestamp",
        Clock::Producer => "producer-timestamp",
    }
}

/// The source's properties for a range of the archive.
fn range_props(r: &checks::Range) -> Vec<(&'static str, String)> {
    vec![
        ("start-selector", selector(r.clock).into()),
        ("start-timestamp", r.start.to_string()),
        ("end-timestamp", r.end.to_string()),
    ]
}

/// An --end's time (checked to be one).
fn end_secs(end: &When) -> f64 {
    match end {
        When::At(t, _) => *t,
        _ => unreachable!("args::check takes only a time for --end"),
    }
}

impl Source {
    fn new(args: &Args) -> Result<Source, String> {
        let mut s = Source {
            src: Vec::new(),
            demux: Vec::new(),
            _demo: None,
        };
        match &args.input {
            Input::None => unreachable!("args::parse requires an input"),
            Input::Name(name) => s.src.push(("stream-name", name.clone())),
            Input::Arn(arn) => {
                s.src.push(("stream-arn", arn.clone()));
                if let Some(region) = kvs_tools::checks::arn_region(arn) {
                    s.src.push(("region", region.into()));
                }
            }
            Input::Event(path) => s.contact(path, args)?,
            Input::Demo => s.demo(args)?,
        }
        let event = matches!(args.input, Input::Event(_));
        // A live stream's recording is one contact: Connect reuses a
        // stream for the next call. A range holds whichever it spans.
        if !event && args.end.is_none() {
            s.demux.push(("stop-at-contact-end", "true".into()));
        }
        match (&args.start, &args.end) {
            (start, Some(end)) if !event => {
                let range = checks::range(start.as_ref(), end).map_err(|u| u.0)?;
                let from = match start {
                    Some(When::Earliest) => "the stream's start".to_string(),
                    _ => checks::iso(range.start),
                };
                println!(
                    "Recording {from} to {} from the archive",
                    checks::iso(range.end)
                );
                s.src.extend(range_props(&range));
            }
            (Some(when), end) => {
                s.src.extend(start_props(when));
                if let Some(end) = end {
                    s.src.push(("end-timestamp", end_secs(end).to_string()));
                }
            }
            (None, Some(end)) => s.src.push(("end-timestamp", end_secs(end).to_string())),
            (None, None) => {}
        }
        if let Some(region) = &args.region {
            s.src.push(("region", region.clone()));
        }
        if let Some(uri) = &args.endpoint_uri {
            s.src.push(("endpoint-uri", uri.clone()));
        }
        if let Some(mode) = &args.connect_pcm {
            s.demux.push(("connect-pcm", mode.clone()));
        }
        // A buffer per block makes interleave switch threads per block: half
        // the time of an archive download.
        s.demux.push(("merge-raw-audio", "true".into()));
        if args.input != Input::Demo {
            s.src
                .push(("idle-timeout", (args.idle_timeout * 1000).to_string()));
            s.src.extend(args::outage_props(args.max_outage));
        }
        Ok(s)
    }

    fn contact(&mut self, path: &str, args: &Args) -> Result<(), String> {
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|e| format!("cannot read the event {path}: {e}"))?;
        let c = event::parse_message(&text).map_err(|e| format!("the event {path}: {e}"))?;
        // Stop when the stream moves on to another contact; a range holds
        // whichever contacts it spans.
        self.demux
            .push(("stop-at-contact-end", (!c.range).to_string()));
        let props = if args.start.is_some() {
            // --start says where instead: the event names the stream.
            c.stream_props()
        } else if args.end.is_some() && c.is_ended() {
            // --end says where to stop: from the contact's start.
            let mut props = c.stream_props();
            let start = c.start.unwrap_or_default().to_string();
            props.push(("start-selector", "producer-timestamp".into()));
            props.push(("start-timestamp", start));
            props
        } else {
            c.source_props(&event::Resume::default())
        };
        if let (None, Some(start), Some(stop)) = (&args.start, c.start, c.stop)
            && args.end.is_none()
        {
            println!(
                "{} {}: recording {} to {} from the archive",
                if c.range { "Range" } else { "Contact" },
                c.contact_id.as_deref().unwrap_or("?"),
                checks::iso(start),
                checks::iso(stop)
            );
        }
        self.src.extend(props);
        Ok(())
    }

    fn demo(&mut self, args: &Args) -> Result<(), String> {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let call = Call::demo(args.demo_seconds);
        let state = State::new(vec![Stream::from_call("demo-call", &call, true)]);
        state.faults.idle_end_ms.store(1000, Ordering::SeqCst);
        let server = runtime
            .block_on(LocalKvs::start(0, state))
            .map_err(|e| format!("cannot start the local KVS server: {e}"))?;
        println!(
            "Demo: a local KVS server at {} streams a synthetic {} s Connect call (the agent is silent from 3 s to 6 s)",
            server.endpoint(),
            args.demo_seconds
        );
        for (k, v) in [
            ("stream-name", "demo-call".to_string()),
            ("region", "us-east-1".into()),
            ("endpoint-uri", server.endpoint()),
            ("access-key", "AKIDDEMO".into()),
            ("secret-access-key", "demo".into()),
            ("start-selector", "earliest".into()),
            ("idle-timeout", "1500".into()),
        ] {
            self.src.push((k, v));
        }
        self._demo = Some((runtime, server));
        Ok(())
    }
}

/// What the bus has told so far.
#[derive(Default)]
struct Seen {
    fragments: u64,
    millis_behind: Option<u64>,
    archive: Option<(u64, u64)>,
}

struct Recording {
    args: Args,
    pipeline: gst::Pipeline,
    src: gst::Element,
    demux: gst::Element,
    recorded: Arc<AtomicU64>,
    mapping: Arc<Mutex<Option<Result<String, String>>>>,
    seen: Seen,
}

impl Recording {
    fn run(args: Args) -> i32 {
        if let Err(e) = gst::init() {
            fail(1, &format!("cannot start GStreamer: {e}"));
        }
        if let Err(e) = gstkvs::plugin_register_static() {
            fail(1, &format!("cannot register the kvs elements: {e}"));
        }
        if args.verbose {
            gst::log::set_threshold_from_string("kvs*:4", false);
        }
        if let Err(e) = output::check_target(&args) {
            usage_exit("kvs-record", &e.into());
        }
        let source = Source::new(&args).unwrap_or_else(|e| usage_exit("kvs-record", &e.into()));
        let rec = Recording::build(args, &source);
        let code = rec.play();
        drop(source);
        code
    }

    fn build(args: Args, source: &Source) -> Recording {
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("kvsgetmediasrc").build().unwrap();
        let demux = gst::ElementFactory::make("kvsaudiodemux").build().unwrap();
        for (k, v) in &source.src {
            src.set_property_from_str(k, v);
        }
        for (k, v) in &source.demux {
            demux.set_property_from_str(k, v);
        }
        pipeline.add_many([&src, &demux]).unwrap();
        src.link(&demux).unwrap();
        let rec = Recording {
            args,
            pipeline,
            src,
            demux,
            recorded: Arc::new(AtomicU64::new(0)),
            mapping: Arc::new(Mutex::new(None)),
            seen: Seen::default(),
        };
        rec.wire();
        rec
    }

    /// Links the output once the demuxer has announced its pads (it calls
    /// no-more-pads before it pushes any audio).
    fn wire(&self) {
        let pads: Arc<Mutex<Vec<(gst::Pad, String)>>> = Arc::default();
        let added = pads.clone();
        self.demux.connect_pad_added(move |_, pad| {
            let name = output::track_title(pad);
            added.lock().unwrap().push((pad.clone(), name));
        });
        let weak = self.pipeline.downgrade();
        let (args, recorded, mapping) = (
            self.args.clone(),
            self.recorded.clone(),
            self.mapping.clone(),
        );
        self.demux.connect_no_more_pads(move |_| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let mut mapping = mapping.lock().unwrap();
            let mut pads = pads.lock().unwrap();
            let linked = if mapping.is_none() {
                output::link(&pipeline, &args, &pads, recorded.clone())
            } else {
                // A later change of tracks: keep the file as it is.
                pads.iter()
                    .filter(|(p, _)| !p.is_linked())
                    .try_for_each(|(p, _)| output::discard(&pipeline, p))
                    .map(|_| String::new())
            };
            pads.clear();
            if let Err(e) = &linked {
                // The main loop stops on the first error and reports it.
                gst::element_error!(pipeline, gst::ResourceError::Failed, ("{}", e));
            }
            if mapping.is_none() || linked.is_err() {
                *mapping = Some(linked);
            }
        });
    }

    /// Ends the recording cleanly: EOS flows through the encoder, which
    /// finalizes the file.
    fn finish_file(&self) {
        if let Some(pad) = self.demux.static_pad("sink") {
            pad.send_event(gst::event::Eos::new());
        }
    }

    fn play(mut self) -> i32 {
        watch_ctrl_c(&self.pipeline);
        let progress = !self.args.quiet && std::io::stderr().is_terminal();
        let _ = self.pipeline.set_state(gst::State::Playing);
        let bus = self.pipeline.bus().unwrap();
        let started = Instant::now();
        let mut last_line = Instant::now();
        let mut failed = None;
        let mut told = false;
        loop {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(250)) else {
                if progress && last_line.elapsed() >= Duration::from_millis(500) {
                    self.progress_line();
                    last_line = Instant::now();
                }
                continue;
            };
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => {
                    failed = Some(BusError::of(e));
                    if self.recorded.load(Ordering::Relaxed) == 0 {
                        // Nothing to keep: an EOS would only make the
                        // encoder write a bare header.
                        break;
                    }
                    // Keep what was recorded: finish the file, then stop.
                    self.finish_file();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        match bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
                            Some(m) if matches!(m.view(), gst::MessageView::Eos(_)) => break,
                            _ => {}
                        }
                    }
                    break;
                }
                gst::MessageView::Element(e) => self.note(e.structure()),
                _ => {}
            }
            if !told && let Some(Ok(m)) = self.mapping.lock().unwrap().as_ref() {
                println!("Tracks: {m}");
                told = true;
            }
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        if progress {
            eprintln!();
        }
        let mapping = self.mapping.lock().unwrap().clone();
        if let (Some(Ok(m)), false) = (&mapping, told) {
            println!("Tracks: {m}");
        }
        let recorded = self.recorded.load(Ordering::Relaxed) > 0;
        if let Some(error) = failed {
            eprintln!("kvs-record: {}", self.say(&error));
            if self.args.verbose && !error.debug.is_empty() {
                eprintln!("kvs-record: detail: {}", detail(&error.debug));
            }
            if recorded {
                eprintln!(
                    "kvs-record: the {:.1} s of audio recorded before the error are in {}",
                    self.recorded.load(Ordering::Relaxed) as f64 / 1e9,
                    self.target()
                );
            } else {
                self.remove_empty_output();
            }
            if error.is_usage() {
                eprintln!("Try 'kvs-record --help'.");
                return 2;
            }
            return 1;
        }
        if !recorded {
            self.remove_empty_output();
        }
        if let Some(Err(e)) = &mapping {
            eprintln!("kvs-record: {e}");
            return 1;
        }
        let stats = self.src.property::<gst::Structure>("stats");
        println!(
            "Recorded {:.1} s of audio from {} fragments to {} in {:.1} s ({} reconnects)",
            self.recorded.load(Ordering::Relaxed) as f64 / 1e9,
            self.seen.fragments,
            self.target(),
            started.elapsed().as_secs_f64(),
            stats.get::<u64>("reconnects").unwrap_or(0)
        );
        0
    }

    /// An error as one line in the recorder's terms.
    fn say(&self, error: &BusError) -> String {
        match error.cause.as_deref() {
            Some("no-fragment") => {
                let from = match (&self.args.start, &self.args.input) {
                    (Some(when), _) => describe(when),
                    (None, Input::Event(_)) => "the contact's start".into(),
                    (None, _) => "now".into(),
                };
                format!(
                    "no fragment arrived from {from} (the stream had no data after it; try \
                     --start earliest)"
                )
            }
            Some("no-track") => "the stream has no audio track".into(),
            _ if error.negotiation => format!(
                "{}; the output takes raw audio only: if this is an Amazon Connect stream whose \
                 PCM is labelled A_AAC, try --connect-pcm always",
                error.message
            ),
            _ => error.line("check --stream (or --stream-arn) and --region"),
        }
    }

    /// Removes an output file that holds no audio (a bare header), and says so.
    fn remove_empty_output(&self) {
        if self.args.split_seconds.is_some() {
            return;
        }
        let out = self.target();
        if std::path::Path::new(&out).is_file() && std::fs::remove_file(&out).is_ok() {
            eprintln!("kvs-record: no audio was recorded, so {out} was not kept");
        }
    }

    fn target(&self) -> String {
        match self.args.split_seconds {
            Some(_) => self.args.split_pattern(),
            None => self.args.out.clone().unwrap_or_default(),
        }
    }

    fn note(&mut self, s: Option<&gst::StructureRef>) {
        let Some(s) = s else { return };
        match s.name().as_str() {
            "kvs-fragment" => {
                self.seen.fragments += 1;
                self.seen.millis_behind = s.get::<u64>("millis-behind-now").ok();
            }
            "kvs-progress" => {
                self.seen.archive = Some((
                    s.get::<u64>("fragments-done").unwrap_or(0),
                    s.get::<u64>("fragments-total").unwrap_or(0),
                ));
            }
            "kvs-contact-changed" => {
                println!(
                    "\nThe contact ended (the stream moved on to contact {})",
                    s.get::<&str>("contact-id").unwrap_or("?")
                );
            }
            _ => {}
        }
    }

    fn progress_line(&self) {
        let stats = self.src.property::<gst::Structure>("stats");
        let mut line = format!(
            "\r{:8.1} s recorded, {} fragments",
            self.recorded.load(Ordering::Relaxed) as f64 / 1e9,
            self.seen.fragments
        );
        match (self.seen.archive, self.seen.millis_behind) {
            (Some((done, total)), _) => line += &format!(" ({done} of {total} from the archive)"),
            (None, Some(ms)) => line += &format!(", {ms} ms behind live"),
            _ => {}
        }
        line += &format!(
            ", {} reconnects   ",
            stats.get::<u64>("reconnects").unwrap_or(0)
        );
        let mut err = std::io::stderr();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }
}

/// A --start as the user would say it: ISO 8601 UTC for times.
fn describe(when: &When) -> String {
    match when {
        When::Now => "now".into(),
        When::Earliest => "the stream's start".into(),
        When::Fragment(n) => format!("fragment {n}"),
        When::At(t, Some(Clock::Producer)) => format!("producer time {}", checks::iso(*t)),
        When::At(t, _) => checks::iso(*t),
    }
}

/// An error's debug text without the source location GStreamer puts first.
fn detail(debug: &str) -> &str {
    match debug.split_once('\n') {
        Some((first, rest)) if first.contains("(): /") => rest.trim(),
        _ => debug.trim(),
    }
}

/// First Ctrl-C: finish the file and stop. Second: quit at once.
fn watch_ctrl_c(pipeline: &gst::Pipeline) {
    let weak = pipeline.downgrade();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\nkvs-record: stopping; finishing the file (Ctrl-C again to quit at once)");
            if let Some(p) = weak.upgrade() {
                p.send_event(gst::event::Eos::new());
            }
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
    });
}
