#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Builds the plugin (OUTPUT libgstkvs.so) or a tool (OUTPUT kvs-record or
kvs-put, with the worker) with cargo for meson, and copies it to meson's
output. CARGO_TARGET_DIR, when set, is the target directory used."""
import os
import shutil
import subprocess
import sys

source_root, build_root, profile, output = sys.argv[1:5]
target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(build_root, "cargo-target")
name = os.path.basename(output)
if name == "libgstkvs.so":
    what = ["-p", "gst-plugin-kvs", "--lib"]
else:
    what = ["-p", "kvs-tools", "--features", "serve", "--bin", name]
cmd = ["cargo", "build", *what, "--locked", "--manifest-path",
       os.path.join(source_root, "Cargo.toml"), "--target-dir", target_dir]
if profile == "release":
    cmd.append("--release")
subprocess.run(cmd, check=True)
shutil.copy2(os.path.join(target_dir, profile, name), output)
