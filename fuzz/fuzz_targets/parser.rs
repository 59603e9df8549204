// SPDX-License-Identifier: MPL-2.0
//! The parser never panics, and cutting the input differently never changes
//! what it finds. The first byte picks the chunk size.
#![no_main]

use kvs_mkv::Parser;
use kvs_mkv::feed::feed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let whole = feed(&mut Parser::new(1 << 16), data, || usize::MAX);
    let size = usize::from(first % 64) + 1;
    let cut = feed(&mut Parser::new(1 << 16), data, || size);
    assert_eq!(whole, cut, "chunks of {size}");
});
