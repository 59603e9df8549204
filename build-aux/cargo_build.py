#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Builds the plugin with cargo for meson and copies it to meson's output."""
import os
import shutil
import subprocess
import sys

source_root, build_root, profile, output = sys.argv[1:5]
target_dir = os.path.join(build_root, "cargo-target")
cmd = ["cargo", "build", "-p", "gst-plugin-kvs", "--lib", "--locked", "--manifest-path",
       os.path.join(source_root, "Cargo.toml"), "--target-dir", target_dir]
if profile == "release":
    cmd.append("--release")
subprocess.run(cmd, check=True)
shutil.copy2(os.path.join(target_dir, profile, "libgstkvs.so"), output)
