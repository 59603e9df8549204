// SPDX-License-Identifier: MPL-2.0
//! Shared test helpers: run bytes through kvsaudiodemux in a real pipeline
//! and record everything it outputs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;

pub mod impair;

pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstkvs::plugin_register_static().expect("register the kvs plugin");
    });
}

/// One buffer as it left the demuxer.
#[derive(Debug, Clone, PartialEq)]
pub struct Buf {
    pub pts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub discont: bool,
    /// Silence the demuxer made up for a pad without blocks.
    pub gap: bool,
    /// Not a keyframe.
    pub delta: bool,
    pub data: Vec<u8>,
    /// The `timestamp/x-unix` reference timestamp.
    pub unix: Option<gst::ClockTime>,
}

/// Everything one source pad carried, in order.
#[derive(Debug, Default, Clone)]
pub struct PadLog {
    pub caps: Vec<gst::Caps>,
    pub buffers: Vec<Buf>,
    pub tags: Vec<gst::TagList>,
    pub gaps: Vec<(gst::ClockTime, gst::ClockTime)>,
    pub segments: usize,
    pub eos: bool,
}

impl PadLog {
    /// The payload of the stream's own blocks.
    pub fn pcm(&self) -> Vec<u8> {
        self.buffers
            .iter()
            .filter(|b| !b.gap)
            .flat_map(|b| b.data.iter().copied())
            .collect()
    }

    /// Everything the pad carried, made-up silence included.
    pub fn pcm_with_gaps(&self) -> Vec<u8> {
        self.buffers
            .iter()
            .flat_map(|b| b.data.iter().copied())
            .collect()
    }

    pub fn title(&self) -> Option<String> {
        self.tags
            .first()?
            .get::<gst::tags::Title>()
            .map(|t| t.get().to_string())
    }
}

#[derive(Debug, Default)]
pub struct Run {
    pub pads: BTreeMap<String, PadLog>,
    /// Element messages from the demuxer and the source, in order.
    pub messages: Vec<gst::Structure>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    /// How many element messages came before the first error.
    pub before_error: Option<usize>,
    pub eos: bool,
    /// The pipeline's duration, asked at EOS.
    pub duration: Option<gst::ClockTime>,
}

impl Run {
    pub fn pad(&self, name: &str) -> &PadLog {
        self.pads
            .get(name)
            .unwrap_or_else(|| panic!("no pad {name}; pads: {:?}", self.pads.keys()))
    }

    pub fn fragments(&self) -> Vec<&gst::Structure> {
        self.named("kvs-fragment")
    }

    /// The fragments reported before the first error: what is defined to
    /// come first. The source posts its error once the demuxer has had every
    /// byte before the failure; what follows an error is not defined.
    pub fn fragments_before_error(&self) -> usize {
        let end = self.before_error.unwrap_or(self.messages.len());
        self.messages[..end]
            .iter()
            .filter(|s| s.name() == "kvs-fragment")
            .count()
    }

    pub fn named(&self, name: &str) -> Vec<&gst::Structure> {
        self.messages.iter().filter(|s| s.name() == name).collect()
    }

    /// Everything but timing-free details, for comparing runs.
    pub fn summary(&self) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}",
            self.pads, self.messages, self.warnings, self.errors
        )
    }
}

fn record(pad: &gst::Pad, log: Arc<Mutex<PadLog>>) {
    let unix_caps = gst::Caps::new_empty_simple("timestamp/x-unix");
    let probe_types = gst::PadProbeType::BUFFER
        | gst::PadProbeType::BUFFER_LIST
        | gst::PadProbeType::EVENT_DOWNSTREAM;
    pad.add_probe(probe_types, move |_, info| {
        let mut log = log.lock().unwrap();
        let mut add = |b: &gst::BufferRef| {
            let unix = b
                .iter_meta::<gst::ReferenceTimestampMeta>()
                .find(|m| m.reference().is_subset(&unix_caps))
                .map(|m| m.timestamp());
            log.buffers.push(Buf {
                pts: b.pts(),
                duration: b.duration(),
                discont: b.flags().contains(gst::BufferFlags::DISCONT),
                gap: b.flags().contains(gst::BufferFlags::GAP),
                delta: b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                data: b.map_readable().unwrap().to_vec(),
                unix,
            });
        };
        match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => add(b),
            Some(gst::PadProbeData::BufferList(list)) => list.iter().for_each(add),
            Some(gst::PadProbeData::Event(e)) => match e.view() {
                gst::EventView::Caps(c) => log.caps.push(c.caps_owned()),
                gst::EventView::Tag(t) => log.tags.push(t.tag_owned()),
                gst::EventView::Gap(g) => {
                    let (start, dur) = g.get();
                    log.gaps.push((start, dur.unwrap_or(gst::ClockTime::ZERO)));
                }
                gst::EventView::Segment(_) => log.segments += 1,
                gst::EventView::Eos(_) => log.eos = true,
                _ => {}
            },
            _ => {}
        }
        gst::PadProbeReturn::Ok
    });
}

type Logs = Arc<Mutex<BTreeMap<String, Arc<Mutex<PadLog>>>>>;

/// Records every pad `demux` adds, each linked to a fakesink.
fn attach(pipeline: &gst::Pipeline, demux: &gst::Element) -> Logs {
    let logs: Logs = Default::default();
    let weak = pipeline.downgrade();
    let logs_added = logs.clone();
    demux.connect_pad_added(move |_, pad| {
        let log = Arc::new(Mutex::new(PadLog::default()));
        logs_added
            .lock()
            .unwrap()
            .insert(pad.name().to_string(), log.clone());
        record(pad, log);
        let pipeline = weak.upgrade().unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    logs
}

fn message_into(run: &mut Run, msg: &gst::Message, demux: &gst::Element) {
    match msg.view() {
        gst::MessageView::Element(e)
            if msg.src() == Some(demux.upcast_ref())
                || msg.src().is_some_and(|s| s.name() == "src") =>
        {
            run.messages.push(e.structure().unwrap().to_owned());
        }
        gst::MessageView::Warning(w) => {
            run.warnings
                .push(format!("{} | {}", w.error(), w.debug().unwrap_or_default()))
        }
        gst::MessageView::Error(e) => {
            run.errors
                .push(format!("{} | {}", e.error(), e.debug().unwrap_or_default()))
        }
        _ => {}
    }
}

/// Plays the pipeline to EOS or the first error, within `limit`.
fn play(pipeline: &gst::Pipeline, demux: &gst::Element, logs: Logs, limit: Duration) -> Run {
    // A failed start shows as an error on the bus.
    let _ = pipeline.set_state(gst::State::Playing);
    let mut run = Run::default();
    let bus = pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            assert!(
                std::time::Instant::now() < deadline,
                "no EOS or error within {limit:?}"
            );
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                run.eos = true;
                run.duration = pipeline.query_duration();
                break;
            }
            gst::MessageView::Error(_) => {
                run.before_error = Some(run.messages.len());
                message_into(&mut run, &msg, demux);
                break;
            }
            _ => message_into(&mut run, &msg, demux),
        }
    }
    // Messages posted just before EOS or the error may still be queued.
    while let Some(msg) = bus.pop() {
        message_into(&mut run, &msg, demux);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    run.pads = logs
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.lock().unwrap().clone()))
        .collect();
    run
}

/// Feeds `data` to kvsaudiodemux in chunks sized by `next_size` and records
/// its output. `props` are set on the demuxer.
pub fn demux_with(data: &[u8], next_size: impl FnMut() -> usize, props: &[(&str, &str)]) -> Run {
    run_element("kvsaudiodemux", data, next_size, props)
}

/// As [`demux_with`], through the demuxer `element`.
pub fn run_element(
    element: &str,
    data: &[u8],
    mut next_size: impl FnMut() -> usize,
    props: &[(&str, &str)],
) -> Run {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&gst::Caps::new_empty_simple("video/x-matroska"))
        .format(gst::Format::Bytes)
        .max_bytes(0)
        .build();
    let demux = gst::ElementFactory::make(element)
        .name("demux")
        .build()
        .unwrap();
    for (k, v) in props {
        demux.set_property_from_str(k, v);
    }
    pipeline.add_many([src.upcast_ref(), &demux]).unwrap();
    src.link(&demux).unwrap();
    let logs = attach(&pipeline, &demux);
    let mut fed = 0;
    while fed < data.len() {
        let n = next_size().clamp(1, data.len() - fed);
        src.push_buffer(gst::Buffer::from_slice(data[fed..fed + n].to_vec()))
            .unwrap();
        fed += n;
    }
    src.end_of_stream().unwrap();
    play(&pipeline, &demux, logs, Duration::from_secs(30))
}

/// Runs `<src> ! kvsaudiodemux name=demux` (a gst-launch description of
/// the source) and records the demuxer's output. Returns the run and the
/// source element, for its stats.
pub fn source_run(src: &str, limit: Duration) -> (Run, gst::Element) {
    source_run_with(src, "kvsaudiodemux", limit)
}

/// As [`source_run`], through the demuxer `element`.
pub fn source_run_with(src: &str, element: &str, limit: Duration) -> (Run, gst::Element) {
    init();
    let pipeline = gst::parse::launch(&format!("{src} name=src ! {element} name=demux"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let demux = pipeline.by_name("demux").unwrap();
    let logs = attach(&pipeline, &demux);
    let run = play(&pipeline, &demux, logs, limit);
    (run, pipeline.by_name("src").unwrap())
}

pub fn demux(data: &[u8]) -> Run {
    demux_with(data, || 4096, &[])
}

/// A small xorshift generator for chunk sizes.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Says that a test's parts are missing. Where `scripts/setup.sh` installs
/// them (CI runs it first), their absence is a failure, not a skip.
pub fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing, though scripts/setup.sh installs it");
    }
    eprintln!("SKIPPED: {what} is not installed (scripts/setup.sh installs it)");
}

/// A Python 3 that can import GStreamer through PyGObject: the one on PATH,
/// else Debian's (a pyenv or venv Python on PATH lacks python3-gst-1.0).
pub fn python_with_gst() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        std::process::Command::new(python)
            .args([
                "-c",
                "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Where the shared KVS captures are, if they are there.
pub fn captures() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kvs-captures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is absent, so the tests on real KVS captures did not run",
            dir.display()
        );
        None
    }
}

/// The payload of a WAV file's data chunk.
pub fn wav_data(wav: &[u8]) -> Vec<u8> {
    let mut pos = 12;
    while pos + 8 <= wav.len() {
        let size = u32::from_le_bytes(wav[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if &wav[pos..pos + 4] == b"data" {
            return wav[pos + 8..pos + 8 + size].to_vec();
        }
        pos += 8 + size + (size & 1);
    }
    panic!("no data chunk");
}

/// Splits stereo S16 frames into left and right channel bytes.
pub fn deinterleave(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let left = data.chunks(4).flat_map(|f| [f[0], f[1]]).collect();
    let right = data.chunks(4).flat_map(|f| [f[2], f[3]]).collect();
    (left, right)
}

/// A local KVS server on 127.0.0.1 with a runtime of its own; it stops when
/// dropped. It derefs to the server, for `endpoint()` and `state`.
pub struct Server {
    kvs: kvs_local_server::LocalKvs,
    runtime: tokio::runtime::Runtime,
}

impl std::ops::Deref for Server {
    type Target = kvs_local_server::LocalKvs;

    fn deref(&self) -> &Self::Target {
        &self.kvs
    }
}

/// Starts a local KVS server on a free port.
pub fn serve(state: kvs_local_server::State) -> Server {
    Server::run(|| kvs_local_server::LocalKvs::start(0, state))
}

/// As [`serve`], on a listener made elsewhere (in a network namespace).
pub fn serve_on(listener: std::net::TcpListener, state: kvs_local_server::State) -> Server {
    Server::run(|| kvs_local_server::LocalKvs::start_with(listener, state))
}

impl Server {
    /// Runs `task` beside the server, on its runtime, for as long as it.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Adds a live stream of `call` played again and again, back to back,
    /// each with a new ContactId, as kvs-local-server plays its demo calls.
    pub fn add_repeated_call(&self, name: &str, call: &kvs_local_server::synth::Call) {
        let stream = kvs_local_server::Stream::from_call(name, call, true);
        self.state.add_stream(stream);
        let stream = self.state.stream_named(name).unwrap();
        self.spawn(kvs_local_server::repeat_calls(stream, call.clone()));
    }

    fn run<F: std::future::Future<Output = std::io::Result<kvs_local_server::LocalKvs>>>(
        start: impl FnOnce() -> F,
    ) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let kvs = runtime.block_on(start()).unwrap();
        Server { kvs, runtime }
    }
}

/// A call named "call" on an in-process server: stored, or live (its
/// blocks sent as they are spoken, from now on).
pub struct ServedCall {
    pub server: Server,
    pub call: kvs_local_server::synth::Call,
}

impl ServedCall {
    pub fn stored(call: kvs_local_server::synth::Call) -> ServedCall {
        Self::with(call, false, |_| {})
    }

    pub fn live(call: kvs_local_server::synth::Call) -> ServedCall {
        Self::with(call, true, |_| {})
    }

    /// The call, live or stored, on a server whose state `setup` changes
    /// first (faults, the session end).
    pub fn with(
        call: kvs_local_server::synth::Call,
        live: bool,
        setup: impl FnOnce(&mut kvs_local_server::State),
    ) -> ServedCall {
        let stream = kvs_local_server::Stream::from_call("call", &call, live);
        let mut state = kvs_local_server::State::new(vec![stream]);
        setup(&mut state);
        ServedCall {
            server: serve(state),
            call,
        }
    }

    /// Pauses the server (it takes requests and answers nothing) after
    /// `after`, for `pause` (None: for good).
    pub fn pause_later(
        &self,
        after: Duration,
        pause: Option<Duration>,
    ) -> std::thread::JoinHandle<()> {
        let state = self.server.state.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            state.faults.pause(true);
            if let Some(pause) = pause {
                std::thread::sleep(pause);
                state.faults.pause(false);
            }
        })
    }
}

/// A server with empty streams to put into, keeping every PutMedia body.
pub fn put_server(names: &[&str]) -> Server {
    let mut state = kvs_local_server::State::new(
        names
            .iter()
            .map(|n| kvs_local_server::Stream::empty(n, 24))
            .collect(),
    );
    state.put_bodies = Some(Default::default());
    serve(state)
}

/// Reads a whole stream back through kvsgetmediasrc and kvsaudiodemux.
pub fn read_back(server: &Server, stream: &str) -> Run {
    let (run, _) = source_run(
        &format!(
            "kvsgetmediasrc stream-name={stream} region=us-east-1 access-key=AKIDTEST \
             secret-access-key=test-secret endpoint-uri={} start-selector=earliest idle-timeout=1000",
            server.endpoint()
        ),
        Duration::from_secs(60),
    );
    run
}

/// A stream's whole fragments, in order.
pub fn stored(server: &Server, stream: &str) -> Vec<Arc<kvs_local_server::store::Fragment>> {
    let s = server.state.stream_named(stream).unwrap();
    (0..s.len()).filter_map(|i| s.fragment(i)).collect()
}

/// Runs `check` on `call` laid out as real Connect writes it and with its
/// tags before the Cluster, each fed whole and 1 byte at a time. `check`
/// gets the call in that layout, the run and a label for its messages.
pub fn each_layout_and_feeding(
    call: &kvs_local_server::synth::Call,
    props: &[(&str, &str)],
    check: impl FnMut(&kvs_local_server::synth::Call, &Run, &str),
) {
    each_way(call, kvs_local_server::synth::Call::bytes, props, check)
}

/// [`each_layout_and_feeding`] on the bytes `make` writes for the call.
pub fn each_way(
    call: &kvs_local_server::synth::Call,
    make: impl Fn(&kvs_local_server::synth::Call) -> Vec<u8>,
    props: &[(&str, &str)],
    mut check: impl FnMut(&kvs_local_server::synth::Call, &Run, &str),
) {
    use kvs_local_server::synth::{Call, Layout};
    for layout in [Layout::Real, Layout::TagsFirst] {
        let call = Call {
            layout,
            ..call.clone()
        };
        let data = make(&call);
        for (feeding, size) in [("whole", usize::MAX), ("1 byte at a time", 1)] {
            let run = demux_with(&data, || size, props);
            check(&call, &run, &format!("{layout:?} layout, fed {feeding}"));
        }
    }
}

/// The pad whose track is named `name` (its title tag).
pub fn speaker<'a>(run: &'a Run, name: &str) -> &'a PadLog {
    run.pads
        .values()
        .find(|p| p.title().as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no pad for track {name}: {:?}", run.pads.keys()))
}

/// Checks that each speaker's pad carried exactly that speaker's PCM.
pub fn assert_speakers(run: &Run, call: &kvs_local_server::synth::Call, label: &str) {
    use kvs_local_server::synth::Side;
    assert!(
        run.eos && run.errors.is_empty(),
        "{label}: {:?}",
        run.errors
    );
    for side in [Side::Caller, Side::Agent] {
        let pad = speaker(run, side.track_name());
        assert!(
            pad.pcm() == call.pcm(side),
            "{label}: {side:?}'s PCM ({} bytes, {} expected)",
            pad.pcm().len(),
            call.pcm(side).len()
        );
    }
}

/// One buffer out of a pipeline's appsink.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub data: Vec<u8>,
    pub delta: bool,
    pub pts: Option<gst::ClockTime>,
    pub caps: Option<gst::Caps>,
}

/// Sets `pipeline` playing and pushes `data` into its appsrc named `src`
/// in pieces of `piece` bytes, then EOS.
pub fn play_and_feed(pipeline: &gst::Pipeline, data: &[u8], piece: usize) {
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for piece in data.chunks(piece) {
        src.push_buffer(gst::Buffer::from_slice(piece.to_vec()))
            .unwrap();
    }
    src.end_of_stream().unwrap();
}

/// Runs `appsrc ! <middle> ! appsink` on `data` and returns what the sink got.
pub fn pull(data: &[u8], middle: &str) -> Vec<Out> {
    pull_as("video/x-matroska", data, middle)
}

/// The same, with `data` of other `caps`.
pub fn pull_as(caps: &str, data: &[u8], middle: &str) -> Vec<Out> {
    init();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src caps={caps} format=bytes ! {middle} ! \
         appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    play_and_feed(&pipeline, data, 65536);
    let bus = pipeline.bus().unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            pipeline.set_state(gst::State::Null).unwrap();
            if let gst::MessageView::Error(e) = msg.view() {
                panic!("{middle}: {} ({:?})", e.error(), e.debug());
            }
        }
        if sink.is_eos() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{middle}: no EOS");
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        let b = sample.buffer().unwrap();
        out.push(Out {
            data: b.map_readable().unwrap().to_vec(),
            delta: b.flags().contains(gst::BufferFlags::DELTA_UNIT),
            pts: b.pts(),
            caps: sample.caps_owned(),
        });
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// True when every one of `elements` is installed; else says which is
/// missing, as [`missing`] does.
pub fn have(elements: &[&str]) -> bool {
    init();
    match elements
        .iter()
        .find(|e| gst::ElementFactory::find(e).is_none())
    {
        Some(e) => {
            missing(e);
            false
        }
        None => true,
    }
}

/// The `sh` blocks of the section titled `### {title}` of the markdown file
/// `path` (relative to the repository's root), after its setup block.
pub fn readme_section_commands(path: &str, title: &str) -> Vec<String> {
    let text = match path {
        "README.md" => include_str!("../../../../README.md"),
        "docs/recipes.md" => include_str!("../../../../docs/recipes.md"),
        _ => panic!("{path}: not one of the markdown files these tests read"),
    };
    sh_blocks(text, &format!("### {title}"))
        .unwrap_or_else(|| panic!("a '{title}' section in {path}"))
        .split_off(1)
}

/// The `sh` blocks of the markdown section under `heading` (`## Title`),
/// up to the next heading of its level; None without that section.
pub fn sh_blocks(text: &str, heading: &str) -> Option<Vec<String>> {
    let section = text.split(&format!("\n{heading}")).nth(1)?;
    let level = heading.split(' ').next().unwrap_or("##");
    let section = section.split(&format!("\n{level} ")).next().unwrap();
    Some(
        section
            .split("```sh\n")
            .skip(1)
            .map(|block| block.split("```").next().unwrap().trim().to_string())
            .collect(),
    )
}

/// A fresh folder for a recipe test, with the plugin as this test build
/// made it alone in `plugins/`: (folder, plugins folder).
pub fn recipe_dir(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("kvs-{name}-{}", std::process::id()));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join("libgstkvs.so");
    std::fs::copy(&lib, plugins.join("libgstkvs.so"))
        .unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    (dir, plugins)
}

/// Runs a README command with `sh` in `dir`, against the local server at
/// `endpoint` (for http://127.0.0.1:4566) with the plugin in `plugins` and
/// the README's credentials; at most 120 s, so that a hung recipe fails the
/// test rather than CI. Returns the output, stdout then stderr.
pub fn run_readme_command(
    command: &str,
    endpoint: &str,
    dir: &std::path::Path,
    plugins: &std::path::Path,
) -> String {
    let command = command.replace("http://127.0.0.1:4566", endpoint);
    let out = std::process::Command::new("timeout")
        .args(["120", "sh", "-c", &command])
        .current_dir(dir)
        .env("GST_PLUGIN_PATH", plugins)
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command}\n{text}");
    text
}
