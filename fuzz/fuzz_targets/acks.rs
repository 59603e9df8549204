// SPDX-License-Identifier: MPL-2.0
//! The PutMedia acknowledgement reader on whatever a peer sends back: it
//! never panics, and cutting the bytes differently never changes the
//! acknowledgements read before the stream stops being JSON. The first
//! byte picks the piece size.
#![no_main]

use kvs_mkv::ack::{Ack, Reader};
use libfuzzer_sys::fuzz_target;

/// The acknowledgements up to the first broken one, and whether it broke.
fn read(data: &[u8], size: usize) -> (Vec<Ack>, bool) {
    let mut reader = Reader::default();
    let mut all = Vec::new();
    for piece in data.chunks(size) {
        let (acks, broken) = reader.push(piece);
        all.extend(acks);
        if broken.is_some() {
            return (all, true);
        }
    }
    (all, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let size = usize::from(first % 64) + 1;
    let (whole, whole_broke) = read(data, data.len().max(1));
    let (cut, cut_broke) = read(data, size);
    if !whole_broke && !cut_broke {
        assert_eq!(whole, cut, "pieces of {size}");
    } else {
        // A break cut short may come later, never earlier, than the whole.
        let n = whole.len().min(cut.len());
        assert_eq!(whole[..n], cut[..n], "pieces of {size}");
    }
});
