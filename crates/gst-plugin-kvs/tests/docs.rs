// SPDX-License-Identifier: MPL-2.0
//! The reference part of each element's page, `docs/elements/NAME.md`, is
//! made from the element itself: its metadata, pad templates, properties
//! (with pad properties) and signals. This test fails when a page is not
//! what the element says, as gst-plugins-rs checks its documentation
//! cache; `GSTKVS_BLESS_DOCS=1 cargo test --test docs` writes it.
#![cfg(feature = "aws")]

mod common;

use std::fmt::Write;

use gst::glib;
use gst::prelude::*;

const ELEMENTS: &[&str] = &[
    "kvsaudiodemux",
    "kvsdemux",
    "kvsgetmediasrc",
    "kvsputmediasink",
];

const BEGIN: &str = "<!-- BEGIN generated: properties, pads and signals, from the element \
                     (GSTKVS_BLESS_DOCS=1 cargo test --test docs rewrites it) -->";
const END: &str = "<!-- END generated -->";

/// GST_PARAM_MUTABLE_READY, GST_PARAM_MUTABLE_PAUSED, GST_PARAM_MUTABLE_PLAYING.
const MUTABLE: [(u32, &str); 3] = [
    (1 << 10, "in NULL and READY"),
    (1 << 11, "up to PAUSED"),
    (1 << 12, "in any state"),
];

/// A table cell: no line breaks, no bars.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn type_of(spec: &glib::ParamSpec) -> String {
    let t = spec.value_type();
    if let Some(s) = spec.downcast_ref::<glib::ParamSpecUInt>() {
        return format!("uint, {} to {}", s.minimum(), s.maximum());
    }
    if let Some(s) = spec.downcast_ref::<glib::ParamSpecUInt64>() {
        return format!("uint64, {} to {}", s.minimum(), s.maximum());
    }
    if let Some(s) = spec.downcast_ref::<glib::ParamSpecInt>() {
        return format!("int, {} to {}", s.minimum(), s.maximum());
    }
    if let Some(class) = glib::EnumClass::with_type(t) {
        let nicks: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        return format!("enum: {}", nicks.join(", "));
    }
    match t.name() {
        "gchararray" => "string".into(),
        "gboolean" => "boolean".into(),
        name => name.into(),
    }
}

fn default_of(spec: &glib::ParamSpec) -> String {
    let value = spec.default_value();
    if let Some(class) = glib::EnumClass::with_type(spec.value_type()) {
        return class
            .value(value.get::<&glib::EnumValue>().map_or(0, |v| v.value()))
            .map_or(String::new(), |v| format!("`{}`", v.nick()));
    }
    if let Ok(Some(s)) = value.get::<Option<String>>() {
        return format!("`\"{s}\"`");
    }
    if value.get::<Option<String>>().is_ok() {
        return "none".into();
    }
    for t in [
        glib::Type::BOOL,
        glib::Type::U32,
        glib::Type::U64,
        glib::Type::I32,
    ] {
        if value.type_() == t {
            return format!(
                "`{}`",
                value
                    .serialize()
                    .map_or_else(|_| "?".into(), |s| s.to_string())
            );
        }
    }
    "none".into()
}

fn flags_of(spec: &glib::ParamSpec) -> String {
    let flags = spec.flags();
    let mut out = Vec::new();
    match (
        flags.contains(glib::ParamFlags::READABLE),
        flags.contains(glib::ParamFlags::WRITABLE),
    ) {
        (true, true) => out.push("read-write"),
        (true, false) => out.push("read-only"),
        (false, true) => out.push("write-only"),
        _ => {}
    }
    if flags.contains(glib::ParamFlags::WRITABLE) {
        let bits = flags.bits();
        if let Some((_, when)) = MUTABLE.iter().find(|(bit, _)| bits & bit != 0) {
            out.push(when);
        }
    }
    if flags.contains(glib::ParamFlags::DEPRECATED) {
        out.push("deprecated");
    }
    out.join(", ")
}

fn properties(doc: &mut String, specs: &[glib::ParamSpec], skip: &[glib::Type]) {
    doc.push_str("| property | type | default | access | what |\n|---|---|---|---|---|\n");
    for spec in specs {
        if skip.contains(&spec.owner_type()) {
            continue;
        }
        writeln!(
            doc,
            "| `{}` | {} | {} | {} | {} |",
            spec.name(),
            cell(&type_of(spec)),
            cell(&default_of(spec)),
            flags_of(spec),
            cell(spec.blurb().unwrap_or_default())
        )
        .unwrap();
    }
}

/// The signals a type declares itself (not those of its parents).
fn own_signals(t: glib::Type) -> Vec<String> {
    let mut n = 0u32;
    // SAFETY: g_signal_list_ids returns an array of n ids that the caller frees.
    unsafe {
        let ids = glib::gobject_ffi::g_signal_list_ids(t.into_glib(), &mut n);
        let list = (0..n as usize)
            .map(|i| {
                let name = glib::gobject_ffi::g_signal_name(*ids.add(i));
                std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        glib::ffi::g_free(ids as *mut _);
        list
    }
}

use glib::translate::IntoGlib;

/// The generated part of an element's page.
fn reference(name: &str) -> String {
    let factory = gst::ElementFactory::find(name).unwrap();
    let element = factory.create().build().unwrap();
    let mut doc = String::new();
    writeln!(doc, "| | |\n|---|---|").unwrap();
    for (key, label) in [
        ("long-name", "name"),
        ("klass", "class"),
        ("description", "description"),
        ("author", "author"),
    ] {
        writeln!(
            doc,
            "| {label} | {} |",
            cell(factory.metadata(key).unwrap_or_default())
        )
        .unwrap();
    }
    writeln!(doc, "| rank | {} |", i32::from(factory.rank())).unwrap();
    doc.push_str("\n### Pads\n\n| pad | direction | presence | caps |\n|---|---|---|---|\n");
    let mut templates: Vec<_> = factory.static_pad_templates().into_iter().collect();
    templates.sort_by_key(|t| t.name_template().to_string());
    let mut pad_types = Vec::new();
    for t in &templates {
        let template = t.get();
        if template.gtype() != gst::Pad::static_type()
            && t.presence() == gst::PadPresence::Request
            && !pad_types.iter().any(|(t, _)| *t == template.gtype())
        {
            pad_types.push((template.gtype(), t.name_template().to_string()));
        }
        writeln!(
            doc,
            "| `{}` | {:?} | {:?} | `{}` |",
            t.name_template(),
            t.direction(),
            t.presence(),
            cell(&t.caps().to_string())
        )
        .unwrap();
    }
    doc.push_str("\n### Properties\n\n");
    properties(
        &mut doc,
        &element.list_properties(),
        &[gst::Object::static_type(), glib::Object::static_type()],
    );
    for (_, template) in pad_types {
        let pad = element.request_pad_simple(&template).unwrap();
        writeln!(
            doc,
            "\n### Pad properties ({template}: {})\n",
            pad.type_().name()
        )
        .unwrap();
        properties(
            &mut doc,
            &pad.list_properties(),
            &[
                gst::Pad::static_type(),
                gst::Object::static_type(),
                glib::Object::static_type(),
            ],
        );
    }
    doc.push_str("\n### Signals\n\n");
    let signals = own_signals(element.type_());
    if signals.is_empty() {
        doc.push_str(
            "None of its own; GstElement's `pad-added`, `pad-removed` and `no-more-pads` as usual.\n",
        );
    } else {
        for s in signals {
            writeln!(doc, "- `{s}`").unwrap();
        }
    }
    doc
}

#[test]
fn element_pages_say_what_the_elements_say() {
    common::init();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bless = std::env::var_os("GSTKVS_BLESS_DOCS").is_some();
    let mut stale = Vec::new();
    for name in ELEMENTS {
        let path = root.join("docs/elements").join(format!("{name}.md"));
        let page =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (head, rest) = page
            .split_once(BEGIN)
            .unwrap_or_else(|| panic!("{}: no BEGIN marker", path.display()));
        let (old, tail) = rest
            .split_once(END)
            .unwrap_or_else(|| panic!("{}: no END marker", path.display()));
        let new = format!("\n{}", reference(name));
        if old != new {
            if bless {
                std::fs::write(&path, format!("{head}{BEGIN}{new}{END}{tail}")).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "not what the elements say: {stale:?}; run GSTKVS_BLESS_DOCS=1 cargo test --test docs"
    );
}
