//! The chunked transfer coding's framing (RFC 9112 §7.1), one byte at a time, with the
//! strict CRLF line ends hyper's decoder requires. Shared by the request framing watcher
//! (`server::framing`), which must cut request bodies where hyper does, and the upstream
//! response decoder (`upstream::codec`). Chunk data is the caller's to skip or take: in
//! [`Chunk::Data`] the caller consumes the bytes itself. Also the `Content-Length` number
//! both sides read ([`decimal`]).

/// A `Content-Length` value (or one element of a list of them): decimal digits only, no
/// sign, no blanks, at most 19 digits (so it cannot overflow).
pub fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// RFC 9112 §7.1, with the strict CRLF line ends hyper's decoder requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before the first hex digit of a chunk size.
    Start,
    Size(u64),
    /// Blanks after the size.
    Blank(u64),
    /// A chunk extension, up to CR.
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk or a trailer line: CR ends the body, anything else starts a
    /// trailer line.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

/// One byte of chunked framing: `Some(Some(next))` to go on, `Some(None)` at the end of the
/// body, `None` for a framing error (hyper refuses the body and closes).
pub fn step(c: Chunk, b: u8) -> Option<Option<Chunk>> {
    let next = match (c, b) {
        (Chunk::Start, _) => Chunk::Size(hex(b)?),
        (Chunk::Size(n), _) if hex(b).is_some() => {
            Chunk::Size(n.checked_mul(16)?.checked_add(hex(b)?)?)
        }
        (Chunk::Size(n) | Chunk::Blank(n), b' ' | b'\t') => Chunk::Blank(n),
        (Chunk::Size(n) | Chunk::Blank(n), b';') => Chunk::Extension(n),
        (Chunk::Size(n) | Chunk::Blank(n) | Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Extension(_), b'\n') => return None,
        (Chunk::Extension(n), _) => Chunk::Extension(n),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::EndLf, b'\n') => return Some(None),
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        _ => return None,
    };
    Some(Some(next))
}
