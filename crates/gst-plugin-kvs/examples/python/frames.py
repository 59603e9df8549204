#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Read a Kinesis video camera stream as RGB frames in Python.

kvsgetmediasrc reads the stream live, kvsdemux hands each frame on as soon
as its block is complete, decodebin decodes it, and an appsink that keeps
only the newest frame hands it to the loop below as a numpy array, with the
producer's timestamp and the end-to-end latency. A consumer slower than the
camera gets the newest frame each time; older ones are dropped.

    GST_PLUGIN_PATH=target/release python3 examples/python/frames.py \\
        --stream my-camera --region us-east-1 --frames 100

Needs python3-gst-1.0, gir1.2-gst-plugins-base-1.0 and python3-numpy (Debian).
"""

import argparse
import sys
import time

import gi
import numpy as np

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

def say(line):
    sys.stdout.write(line + "\n")


def frames(args):
    """Yields (frame, producer_ns, latency_ms, pts_ns): frame is an
    height x width x 3 uint8 array."""
    pipeline = Gst.parse_launch(
        "kvsgetmediasrc name=src ! kvsdemux name=demux demux.video_0 ! queue ! decodebin ! "
        "videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=sink max-buffers=1 drop=true sync=false"
    )
    src = pipeline.get_by_name("src")
    src.set_property("stream-name", args.stream)
    for prop, value in (("region", args.region), ("endpoint-uri", args.endpoint_uri)):
        if value:
            src.set_property(prop, value)
    src.set_property("idle-timeout", args.idle_timeout)
    Gst.util_set_object_arg(src, "start-selector", args.start)
    if args.max_latency:
        pipeline.get_by_name("demux").set_property("max-latency", args.max_latency)
    sink = pipeline.get_by_name("sink")
    unix = Gst.Caps.from_string("timestamp/x-unix")
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    try:
        while True:
            sample = sink.emit("try-pull-sample", Gst.SECOND // 10)
            msg = bus.pop_filtered(Gst.MessageType.ERROR)
            if msg:
                err, debug = msg.parse_error()
                raise RuntimeError(f"{err.message} ({debug})")
            if sample is None:
                if sink.get_property("eos"):
                    return
                continue
            buf = sample.get_buffer()
            s = sample.get_caps().get_structure(0)
            width, height = s.get_value("width"), s.get_value("height")
            ok, info = buf.map(Gst.MapFlags.READ)
            if not ok:
                continue
            try:
                # Rows of an RGB frame are padded to 4 bytes.
                stride = (width * 3 + 3) & ~3
                rows = np.frombuffer(info.data, np.uint8, stride * height)
                frame = rows.reshape(height, stride)[:, : width * 3].reshape(height, width, 3).copy()
            finally:
                buf.unmap(info)
            meta = buf.get_reference_timestamp_meta(unix)
            producer = meta.timestamp if meta else None
            latency = (time.time_ns() - producer) / 1e6 if producer else None
            yield frame, producer, latency, buf.pts
    finally:
        pipeline.set_state(Gst.State.NULL)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", required=True)
    p.add_argument("--region")
    p.add_argument("--endpoint-uri")
    p.add_argument("--start", default="now", help="start-selector (default: now)")
    p.add_argument("--idle-timeout", type=int, default=5000, help="ms (default: 5000)")
    p.add_argument("--max-latency", type=int, default=0,
                   help="skip fragments more than this many ms behind live (default: 0, off)")
    p.add_argument("--frames", type=int, default=0, help="stop after this many (default: 0, all)")
    p.add_argument("--slow", type=int, default=0,
                   help="spend this many ms on each frame, as a slow consumer would")
    args = p.parse_args()
    Gst.init(None)
    count, latencies, last_pts, frame_ns = 0, [], None, None
    for frame, producer, latency, pts in frames(args):
        count += 1
        if latency is not None:
            latencies.append(latency)
        step = pts - last_pts if last_pts is not None else None
        if step and (frame_ns is None or step < frame_ns):
            frame_ns = step
        last_pts = pts
        lat = f"{latency:.1f} ms" if latency is not None else "unknown"
        say(f"frame {count}: {frame.shape[1]}x{frame.shape[0]} rgb, mean {frame.mean():.1f}, "
            f"pts {pts / 1e9:.3f} s, producer {producer}, latency {lat}")
        if args.slow:
            time.sleep(args.slow / 1000)
        if args.frames and count >= args.frames:
            break
    if latencies:
        latencies.sort()
        median = latencies[len(latencies) // 2]
        say(f"frames {count}, latency median {median:.1f} ms, max {latencies[-1]:.1f} ms")
    else:
        say(f"frames {count}")


if __name__ == "__main__":
    main()
