// SPDX-License-Identifier: MPL-2.0
//! The local server's PutMedia ingest on whatever a producer sends: it
//! never panics, and cutting the body differently never changes the pieces
//! it finds or whether it refuses the body. The first byte picks the piece
//! size.
#![no_main]

use kvs_local_server::ingest::{Ingest, Piece};
use libfuzzer_sys::fuzz_target;

/// The pieces, and the ErrorId of the refusal if the body was refused.
fn ingest(data: &[u8], size: usize) -> (Vec<Piece>, Option<u32>) {
    let mut ingest = Ingest::default();
    let mut out = Vec::new();
    for piece in data.chunks(size) {
        if let Err(refusal) = ingest.push(piece, &mut out) {
            return (out, Some(refusal.id));
        }
    }
    let refused = ingest.finish(&mut out).err().map(|r| r.id);
    (out, refused)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let size = usize::from(first % 64) + 1;
    let whole = ingest(data, data.len().max(1));
    let cut = ingest(data, size);
    assert_eq!(whole, cut, "pieces of {size}");
});
