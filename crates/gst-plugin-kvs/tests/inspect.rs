// SPDX-License-Identifier: MPL-2.0
//! What `gst-inspect-1.0` shows of each element: it loads the plugin as
//! built, with no warning, and every property and pad property says what it
//! is for.

mod common;

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;

const ELEMENTS: &[&str] = &[
    "kvsaudiodemux",
    "kvsdemux",
    #[cfg(feature = "aws")]
    "kvsgetmediasrc",
    #[cfg(feature = "aws")]
    "kvsputmediasink",
];

/// Properties every GstObject has, which the elements do not declare.
const INHERITED: &[&str] = &["name", "parent"];

fn blurbs_of(what: &str, specs: &[glib::ParamSpec]) {
    for spec in specs {
        if INHERITED.contains(&spec.name()) {
            continue;
        }
        let blurb = spec.blurb().unwrap_or_default();
        assert!(
            blurb.len() > 20 && blurb != spec.name(),
            "{what}::{} has no real blurb: {blurb:?}",
            spec.name()
        );
    }
}

#[test]
fn every_property_says_what_it_is_for() {
    common::init();
    for name in ELEMENTS {
        let element = gst::ElementFactory::make(name).build().unwrap();
        blurbs_of(name, &element.list_properties());
        // Request pads may be of a type with properties of their own.
        for template in element.pad_template_list() {
            if template.presence() != gst::PadPresence::Request
                || template.direction() != gst::PadDirection::Sink
            {
                continue;
            }
            let pad = element
                .request_pad_simple(template.name_template())
                .unwrap();
            let props: Vec<glib::ParamSpec> = pad
                .list_properties()
                .into_iter()
                .filter(|p| {
                    p.owner_type() != gst::Pad::static_type()
                        && p.owner_type() != gst::Object::static_type()
                })
                .collect();
            blurbs_of(&format!("{name} {}", pad.name()), &props);
        }
    }
}

#[test]
fn gst_inspect_loads_each_element_without_a_warning() {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let dir: PathBuf = std::env::temp_dir().join(format!("kvs-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(target.join("deps/libgstkvs.so"), dir.join("libgstkvs.so")).unwrap();
    for name in ELEMENTS {
        let out = std::process::Command::new("gst-inspect-1.0")
            .arg(name)
            .env("GST_PLUGIN_PATH", &dir)
            .env("GST_REGISTRY", dir.join("registry.bin"))
            .output()
            .expect("gst-inspect-1.0 (gstreamer1.0-tools)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            !stderr.contains("WARNING") && !stderr.contains("CRITICAL"),
            "{name}: {stderr}"
        );
        assert!(stdout.contains("Element Properties:"), "{name}: {stdout}");
        assert!(stdout.contains("Pad Templates:"), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The worker's SQS and S3 clients stay in kvs-record: the plugin GStreamer
/// loads has none of their code, whatever features were built.
#[test]
fn the_plugin_holds_no_worker_code() {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join("libgstkvs.so");
    let bytes = std::fs::read(&lib).unwrap();
    for name in [
        &b"aws_sdk_s3"[..],
        b"aws_sdk_sqs",
        b"aws-sdk-s3",
        b"aws-sdk-sqs",
    ] {
        assert!(
            memchr::memmem::find(&bytes, name).is_none(),
            "{} holds {}",
            lib.display(),
            String::from_utf8_lossy(name)
        );
    }
    // The check can see crates: the SDK the plugin does use is there.
    let kvs = b"aws_sdk_kinesisvideomedia";
    assert!(memchr::memmem::find(&bytes, kvs).is_some());
}

/// Both network elements take the AWS settings under the same names, those
/// of gst-plugins-rs' AWS elements; the sink's kvssink names are marked
/// deprecated.
#[cfg(feature = "aws")]
#[test]
fn both_network_elements_name_the_aws_settings_alike() {
    common::init();
    const AWS: &[&str] = &[
        "stream-name",
        "stream-arn",
        "region",
        "access-key",
        "secret-access-key",
        "session-token",
        "endpoint-uri",
    ];
    for name in ["kvsgetmediasrc", "kvsputmediasink"] {
        let element = gst::ElementFactory::make(name).build().unwrap();
        for prop in AWS {
            let spec = element
                .find_property(prop)
                .unwrap_or_else(|| panic!("{name} has no {prop}"));
            assert!(
                !spec.flags().contains(glib::ParamFlags::DEPRECATED),
                "{name}::{prop}"
            );
        }
        let secret = element.find_property("secret-access-key").unwrap();
        assert!(
            !secret.flags().contains(glib::ParamFlags::READABLE),
            "{name}: a readable secret"
        );
    }
    let sink = gst::ElementFactory::make("kvsputmediasink")
        .build()
        .unwrap();
    for old in [
        "aws-region",
        "secret-key",
        "allow-create-stream",
        "rotation-period",
    ] {
        let spec = sink.find_property(old).unwrap();
        assert!(spec.flags().contains(glib::ParamFlags::DEPRECATED), "{old}");
    }
    let src = gst::ElementFactory::make("kvsgetmediasrc").build().unwrap();
    assert!(src.find_property("aws-region").is_none());
}
