// SPDX-License-Identifier: MPL-2.0
//! Reads and writes the Matroska chunk streams of Amazon Kinesis Video
//! Streams, with no GStreamer, no AWS SDK and no async: the Rust
//! counterpart of the AWS Java KVS parser library.
//!
//! - [`Parser`]: an incremental EBML/Matroska parser. Feed it the bytes of a
//!   GetMedia or GetMediaForFragmentList response as they arrive, in pieces
//!   of any size; it reports chunk headers, tracks, tags and blocks as soon
//!   as each is complete, resynchronises after damage at the next chunk,
//!   and never holds more than one element.
//! - [`feed::Scanner`]: a parser driven over pieces that keeps the unread
//!   tail for you.
//! - [`kvs`]: what KVS puts in its tags (fragment numbers, server and
//!   producer timestamps, continuation tokens, Connect's MimeType and
//!   ContactId, in-band errors) and the order of fragment numbers.
//! - [`writer`]: KVS-shaped chunks and PutMedia Clusters.
//! - [`ack`]: PutMedia acknowledgements and what each ErrorId means.
//!
//! ```
//! use kvs_mkv::feed::Scanner;
//! use kvs_mkv::kvs::FragmentMeta;
//! use kvs_mkv::writer::{BlockSpec, Chunk, TrackSpec};
//! use kvs_mkv::{Event, Parser};
//!
//! // A one-fragment chunk as GetMedia sends it, then read back in 7-byte pieces.
//! let chunk = Chunk {
//!     tracks: vec![TrackSpec::connect(1, "AUDIO_FROM_CUSTOMER")],
//!     tags_before: vec![vec![("AWS_KINESISVIDEO_FRAGMENT_NUMBER".into(), "91343852".into())]],
//!     blocks: vec![BlockSpec::simple(1, 0, vec![0; 1024])],
//!     ..Chunk::default()
//! }
//! .to_bytes();
//! let mut scanner = Scanner::new(Parser::new(1 << 20));
//! let (mut meta, mut blocks) = (FragmentMeta::default(), 0);
//! for piece in chunk.chunks(7) {
//!     scanner.push(piece, |event, _data| match event {
//!         Event::Tags(tags) => meta.apply(tags),
//!         Event::Block(_) => blocks += 1,
//!         _ => {}
//!     });
//! }
//! assert_eq!(meta.fragment_number.as_deref(), Some("91343852"));
//! assert_eq!(blocks, 1);
//! ```

pub mod ack;
pub mod ebml;
pub mod elements;
pub mod feed;
pub mod kvs;
pub mod parser;
pub mod writer;

pub use elements::{Block, Picture, SimpleTag, Track, TrackKind};
pub use parser::{Event, Parser};
