#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Record a Kinesis video stream (an Amazon Connect call) from Python.

kvsgetmediasrc reads the stream, kvsaudiodemux gives one pad per track, and
interleave puts the caller (AUDIO_FROM_CUSTOMER) left and the agent
(AUDIO_TO_CUSTOMER) right. An appsink hands 1-second stereo S16LE pieces to
on_piece(), the shape a transcriber wants; this example writes them to a WAV
file and prints each kvs-fragment message.

    GST_PLUGIN_PATH=target/release python3 examples/python/record.py \\
        --stream my-stream --region us-east-1 --out call.wav

Needs python3-gst-1.0 and gir1.2-gst-plugins-base-1.0 (Debian).
"""

import argparse
import sys
import wave

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

CALLER, AGENT = "AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"


def say(line):
    """Prints a whole line at once: GStreamer's threads print too, and
    print() writes the text and its newline separately."""
    sys.stdout.write(line + "\n")


class Recorder:
    def __init__(self, args, on_piece):
        self.on_piece = on_piece
        self.pending = b""
        self.bytes_per_second = 0
        self.pieces = 0
        self.pipeline = Gst.parse_launch(
            "kvsgetmediasrc name=src ! kvsaudiodemux name=demux "
            "interleave name=mix ! audioconvert ! audio/x-raw,format=S16LE,channels=2 "
            "! appsink name=sink emit-signals=true sync=false"
        )
        src = self.pipeline.get_by_name("src")
        src.set_property("stream-name", args.stream)
        for prop, value in (("region", args.region), ("endpoint-uri", args.endpoint_uri)):
            if value:
                src.set_property(prop, value)
        src.set_property("idle-timeout", args.idle_timeout)
        Gst.util_set_object_arg(src, "start-selector", args.start)
        mix = self.pipeline.get_by_name("mix")
        # Requested in this order, so the caller is the left channel.
        self.channels = {CALLER: mix.request_pad_simple("sink_%u"),
                         AGENT: mix.request_pad_simple("sink_%u")}
        self.pipeline.get_by_name("demux").connect("pad-added", self.pad_added)
        self.pipeline.get_by_name("sink").connect("new-sample", self.new_sample)

    def pad_added(self, _demux, pad):
        # The track name is the title tag the pad carries before its audio.
        event = pad.get_sticky_event(Gst.EventType.TAG, 0)
        name = event.parse_tag().get_string(Gst.TAG_TITLE)[1] if event else ""
        target = self.channels.pop(name, None)
        if target is None:  # not a Connect track name: the next free channel
            if not self.channels:
                say(f"{pad.get_name()}: track {name!r} not recorded")
                return
            target = self.channels.pop(next(iter(self.channels)))
        say(f"{pad.get_name()}: {name} -> {'left' if target.get_name() == 'sink_0' else 'right'}")
        queue = Gst.ElementFactory.make("queue")
        self.pipeline.add(queue)
        queue.sync_state_with_parent()
        pad.link(queue.get_static_pad("sink"))
        queue.get_static_pad("src").link(target)

    def new_sample(self, sink):
        sample = sink.emit("pull-sample")
        if not self.bytes_per_second:
            rate = sample.get_caps().get_structure(0).get_value("rate")
            self.bytes_per_second = rate * 4
        buf = sample.get_buffer()
        self.pending += buf.extract_dup(0, buf.get_size())
        while len(self.pending) >= self.bytes_per_second:
            self.deliver(self.pending[: self.bytes_per_second])
            self.pending = self.pending[self.bytes_per_second:]
        return Gst.FlowReturn.OK

    def deliver(self, pcm):
        self.on_piece(pcm, self.pieces)
        self.pieces += 1

    def run(self):
        self.pipeline.set_state(Gst.State.PLAYING)
        bus = self.pipeline.get_bus()
        code = 0
        while True:
            msg = bus.timed_pop_filtered(
                Gst.CLOCK_TIME_NONE,
                Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.ELEMENT,
            )
            if msg.type == Gst.MessageType.ELEMENT:
                s = msg.get_structure()
                if s.get_name() == "kvs-fragment":
                    say(f"kvs-fragment {s.get_value('fragment-number')} "
                          f"contact {s.get_value('contact-id')}")
                continue
            if msg.type == Gst.MessageType.ERROR:
                err, debug = msg.parse_error()
                print(f"error: {err.message}\n  {debug}", file=sys.stderr)
                code = 1
            break
        if self.pending:  # the last, shorter piece
            self.deliver(self.pending)
        self.pipeline.set_state(Gst.State.NULL)
        return code


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", required=True, help="stream name")
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--endpoint-uri", help="KVS endpoint, e.g. a local kvs-local-server")
    parser.add_argument("--start", default="now", help="now or earliest (default: now)")
    parser.add_argument("--idle-timeout", type=int, default=10000,
                        help="ms without a new fragment before stopping (default: 10000)")
    parser.add_argument("--out", default="call.wav", help="stereo WAV to write")
    args = parser.parse_args()
    Gst.init(None)
    with wave.open(args.out, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)  # Connect audio is 8 kHz

        def on_piece(pcm, index):
            # Hand this to a transcriber; here it goes to the file.
            say(f"piece {index}: {len(pcm) // 4 / 8000:.3f} s")
            out.writeframes(pcm)

        code = Recorder(args, on_piece).run()
    sys.exit(code)


if __name__ == "__main__":
    main()
