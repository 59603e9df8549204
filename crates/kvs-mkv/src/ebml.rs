// SPDX-License-Identifier: MPL-2.0
//! EBML primitives: variable-size integers, element headers and a child iterator
//! over a complete element body.

/// Marker for an element whose size is unknown (all size bits set).
pub const UNKNOWN_SIZE: u64 = u64::MAX;

/// A decoded element header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u32,
    /// Body size in bytes, or [`UNKNOWN_SIZE`].
    pub size: u64,
    /// Length of the ID and size fields together.
    pub len: usize,
}

/// Why a header could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// More bytes are needed: at least this many in total.
    Short(usize),
    /// The bytes can never form a valid header.
    Invalid,
}

/// Length of a vint from its first byte, or `None` if the byte is 0.
fn vint_len(first: u8, max: u32) -> Option<usize> {
    let len = first.leading_zeros() + 1;
    (len <= max).then_some(len as usize)
}

/// The value bits of a vint's first byte.
fn value_mask(len: usize) -> u8 {
    0xFFu8.checked_shr(len as u32).unwrap_or(0)
}

/// Decodes an element header at the start of `data`.
pub fn read_header(data: &[u8]) -> Result<Header, HeaderError> {
    let first = *data.first().ok_or(HeaderError::Short(1))?;
    let id_len = vint_len(first, 4).ok_or(HeaderError::Invalid)?;
    let size_first = *data.get(id_len).ok_or(HeaderError::Short(id_len + 1))?;
    let size_len = vint_len(size_first, 8).ok_or(HeaderError::Invalid)?;
    let len = id_len + size_len;
    if data.len() < len {
        return Err(HeaderError::Short(len));
    }
    let id = data[..id_len]
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let mask = value_mask(size_len);
    let mut size = u64::from(size_first & mask);
    let mut all_ones = size_first & mask == mask;
    for &b in &data[id_len + 1..len] {
        size = (size << 8) | u64::from(b);
        all_ones &= b == 0xFF;
    }
    let size = if all_ones { UNKNOWN_SIZE } else { size };
    Ok(Header { id, size, len })
}

/// Decodes a signed "EBML lacing" vint difference; returns (value, length).
pub fn read_signed_vint(data: &[u8]) -> Option<(i64, usize)> {
    let (v, len) = read_vint(data)?;
    let bias = (1i64 << (7 * len - 1)) - 1;
    Some((v as i64 - bias, len))
}

/// Decodes an unsigned vint (marker removed); returns (value, length).
pub fn read_vint(data: &[u8]) -> Option<(u64, usize)> {
    let first = *data.first()?;
    let len = vint_len(first, 8)?;
    let bytes = data.get(1..len)?;
    let v = bytes
        .iter()
        .fold(u64::from(first & value_mask(len)), |acc, &b| {
            (acc << 8) | u64::from(b)
        });
    Some((v, len))
}

/// Big-endian unsigned integer of up to 8 bytes.
pub fn uint(data: &[u8]) -> Option<u64> {
    (data.len() <= 8).then(|| data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Big-endian two's complement integer of up to 8 bytes.
pub fn sint(data: &[u8]) -> Option<i64> {
    let v = uint(data)?;
    let bits = 8 * data.len() as u32;
    Some(match bits {
        0 => 0,
        64 => v as i64,
        _ => ((v << (64 - bits)) as i64) >> (64 - bits),
    })
}

/// IEEE float of 0, 4 or 8 bytes.
pub fn float(data: &[u8]) -> Option<f64> {
    match data.len() {
        0 => Some(0.0),
        4 => Some(f64::from(f32::from_be_bytes(data.try_into().ok()?))),
        8 => Some(f64::from_be_bytes(data.try_into().ok()?)),
        _ => None,
    }
}

/// A string element, with trailing NULs removed and invalid UTF-8 replaced.
pub fn string(data: &[u8]) -> String {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// Iterates the children of a complete element body. Stops at the first child
/// that is malformed or runs past the end; `truncated()` tells if that happened.
pub struct Children<'a> {
    data: &'a [u8],
    pos: usize,
    broken: bool,
}

impl<'a> Children<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Children {
            data,
            pos: 0,
            broken: false,
        }
    }

    /// True if iteration stopped on a malformed child.
    pub fn broken(&self) -> bool {
        self.broken
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() || self.broken {
            return None;
        }
        let rest = &self.data[self.pos..];
        let child = read_header(rest).ok().and_then(|h| {
            let end = usize::try_from(h.size).ok()?.checked_add(h.len)?;
            Some((h.id, rest.get(h.len..end)?, end))
        });
        match child {
            Some((id, body, end)) => {
                self.pos += end;
                Some((id, body))
            }
            None => {
                self.broken = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        // Segment, unknown size (8-byte all ones).
        let h = read_header(&[
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ])
        .unwrap();
        assert_eq!((h.id, h.size, h.len), (0x1853_8067, UNKNOWN_SIZE, 12));
        // One-byte unknown size.
        assert_eq!(read_header(&[0xA3, 0xFF]).unwrap().size, UNKNOWN_SIZE);
        let h = read_header(&[0xA3, 0x40, 0x02]).unwrap();
        assert_eq!((h.id, h.size, h.len), (0xA3, 2, 3));
        assert_eq!(read_header(&[0x1A, 0x45]), Err(HeaderError::Short(5)));
        assert_eq!(read_header(&[0x1A]), Err(HeaderError::Short(5)));
        assert_eq!(read_header(&[]), Err(HeaderError::Short(1)));
        assert_eq!(read_header(&[0xA3, 0x10]), Err(HeaderError::Short(5)));
        assert_eq!(read_header(&[0x00, 0x81]), Err(HeaderError::Invalid));
        assert_eq!(
            read_header(&[0x08, 0, 0, 0, 0x81]),
            Err(HeaderError::Invalid)
        );
        assert_eq!(read_header(&[0xA3, 0x00]), Err(HeaderError::Invalid));
    }

    #[test]
    fn values() {
        assert_eq!(sint(&[0xFF]), Some(-1));
        assert_eq!(sint(&[0x01, 0x00]), Some(256));
        assert_eq!(sint(&[0x80, 0x00]), Some(-32768));
        assert_eq!(sint(&[]), Some(0));
        assert_eq!(uint(&[0x0F, 0x42, 0x40]), Some(1_000_000));
        assert_eq!(uint(&[]), Some(0));
        assert_eq!(uint(&[0; 9]), None);
        assert_eq!(float(&8000f32.to_be_bytes()), Some(8000.0));
        assert_eq!(float(&44100f64.to_be_bytes()), Some(44100.0));
        assert_eq!(float(&[1, 2, 3]), None);
        assert_eq!(string(b"A_AAC\0\0"), "A_AAC");
        assert_eq!(read_signed_vint(&[0x81]), Some((-62, 1)));
        assert_eq!(read_signed_vint(&[0xBF]), Some((0, 1)));
        assert_eq!(read_vint(&[0x40, 0x10]), Some((16, 2)));
    }

    #[test]
    fn children() {
        let data = [0xD7, 0x81, 0x01, 0x86, 0x82, b'A', b'B', 0x83];
        let mut it = Children::new(&data);
        assert_eq!(it.next(), Some((0xD7, &[1u8][..])));
        assert_eq!(it.next(), Some((0x86, &b"AB"[..])));
        assert_eq!(it.next(), None);
        assert!(it.broken());
    }
}
