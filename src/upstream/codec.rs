//! HTTP/1.1 on the upstream side (RFC 9112), as plain functions over bytes: the request
//! head written into one buffer, the response head parsed with `httparse`, the response
//! body's framing decided (§6.3), and chunked bodies decoded (§7.1). No I/O here.

use std::io::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use crate::chunked::{self, Chunk};

/// A response head longer than this is refused (502).
pub const MAX_HEAD: usize = 64 * 1024;
/// Header lines accepted in a response head.
pub const MAX_HEADERS: usize = 128;
/// Bytes a connection's read buffer starts with (it grows to [`MAX_HEAD`] for a long head).
pub const BUF_SIZE: usize = 16 * 1024;
/// Chunked framing between two pieces of data (a size line with its extensions, or the
/// trailer section) longer than this is refused.
const MAX_FRAMING: usize = 16 * 1024;

/// The response could not be understood: the exchange fails with 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream response")]
pub struct Malformed;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header (a GET without a body).
    None,
    Length(u64),
    Chunked,
}

/// Writes the request line and header section: `headers`, then `added` (lines already
/// encoded by [`crate::headers::Added`]). The framing header is ours: any
/// `Content-Length`/`Transfer-Encoding` in `headers` is left out. Header values cannot hold
/// CR or LF (`HeaderValue` refuses them, and so does `Added`), nor can a `Uri` hold a space,
/// so nothing here can split the head.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    (headers, added): (&HeaderMap, &[u8]),
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added);
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The framing line that precedes a chunk of `len` bytes.
pub fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    let _ = write!(out, "{len:x}\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// The header section without hop-by-hop headers and those `Connection` names (design
    /// §5.1): they are about this connection, not for the client. A `101` keeps `Upgrade`.
    pub headers: HeaderMap,
    /// What the framing and connection headers said.
    pub framing: HeadFraming,
    /// Bytes of the input the head took.
    pub len: usize,
}

/// The response's `Transfer-Encoding`, `Content-Length` and `Connection: close`, read from
/// the raw head (the first and last are not kept in [`Head::headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFraming {
    /// `Transfer-Encoding` was present: whether its final coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// Every `Content-Length` value agreed (`Ok(None)`: none was sent).
    content_length: Result<Option<u64>, Malformed>,
    close: bool,
}

impl HeadFraming {
    /// Reads the framing headers of a raw head. Also returns the names `Connection` lists
    /// that are not hop-by-hop anyway (these are dropped too); usually none, and then
    /// nothing is allocated.
    fn read<'h>(raw: &[httparse::Header<'h>]) -> (Self, Vec<&'h [u8]>) {
        let mut f = Self {
            transfer_encoding: None,
            content_length: Ok(None),
            close: false,
        };
        let mut listed = Vec::new();
        for h in raw {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // The final coding over all lines: an empty line leaves it as it was.
                let last = tokens(h.value).next_back();
                let chunked = last.map(|t| t.eq_ignore_ascii_case(b"chunked"));
                f.transfer_encoding = chunked.or(f.transfer_encoding).or(Some(false));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                for part in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    f.content_length = match (f.content_length, chunked::decimal(part)) {
                        (Ok(None), Some(n)) => Ok(Some(n)),
                        (Ok(Some(l)), Some(n)) if l == n => Ok(Some(n)),
                        _ => Err(Malformed),
                    };
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if !crate::headers::is_hop_by_hop_name(t) {
                        listed.push(t);
                    }
                }
            }
        }
        (f, listed)
    }
}

/// The non-empty comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Parses a response head from the front of `buf`: `Ok(None)` until it is complete.
pub fn parse_response(buf: &[u8]) -> Result<Option<Head>, Malformed> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) | Err(_) => return Err(Malformed),
    };
    if len > MAX_HEAD {
        return Err(Malformed);
    }
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Malformed)?;
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let (framing, listed) = HeadFraming::read(resp.headers);
    let keep_upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    // One copy of the head; every value is a slice of it (no allocation per value).
    let head = Bytes::copy_from_slice(buf.get(..len).ok_or(Malformed)?);
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let raw_name = h.name.as_bytes();
        let hop = crate::headers::is_hop_by_hop_name(raw_name)
            && !(keep_upgrade && raw_name.eq_ignore_ascii_case(b"upgrade"));
        if hop || listed.iter().any(|t| t.eq_ignore_ascii_case(raw_name)) {
            continue;
        }
        let name = HeaderName::from_bytes(raw_name).map_err(|_| Malformed)?;
        let start = (h.value.as_ptr() as usize).wrapping_sub(base);
        let end = start.checked_add(h.value.len()).ok_or(Malformed)?;
        if end > head.len() {
            return Err(Malformed);
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| Malformed)?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        len,
    }))
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// The framing of the response to a request with `method`.
pub fn response_framing(
    method: &Method,
    status: StatusCode,
    head: &HeadFraming,
) -> Result<BodyFraming, Malformed> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyFraming::Empty);
    }
    if let Some(chunked) = head.transfer_encoding {
        return Ok(if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::Close
        });
    }
    Ok(match head.content_length? {
        Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::Close,
    })
}

/// Whether the connection may carry another exchange after this response.
pub fn keep_alive(version: Version, head: &HeadFraming, framing: BodyFraming) -> bool {
    version == Version::HTTP_11
        && framing != BodyFraming::Close
        && !(head.transfer_encoding.is_some() && head.content_length != Ok(None))
        && !head.close
}

/// The chunked-body decoder: the grammar the request framing watcher follows
/// ([`crate::chunked`]), plus a bound on the framing between two pieces of data (size
/// lines, extensions, trailers: read and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    /// `None` once the body has ended.
    state: Option<Chunk>,
    /// Framing bytes since the last chunk data.
    framing: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: Some(Chunk::Start),
            framing: 0,
        }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state.is_none()
    }

    /// Reads framing from the front of `input` up to the next chunk data, the end of the
    /// body, or the end of `input`. Returns `(skip, data)`: `skip` framing bytes to drop,
    /// then `data` bytes of chunk data (possibly 0) that follow them.
    pub fn advance(&mut self, input: &[u8]) -> Result<(usize, usize), Malformed> {
        let mut i = 0;
        loop {
            let Some(state) = self.state else {
                return Ok((i, 0));
            };
            if let Chunk::Data(left) = state {
                let avail = input.len().saturating_sub(i) as u64;
                if avail == 0 {
                    return Ok((i, 0));
                }
                let n = left.min(avail);
                self.state = Some(if n == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - n)
                });
                self.framing = 0;
                // n <= avail, which fits in usize.
                return Ok((i, usize::try_from(n).map_err(|_| Malformed)?));
            }
            let Some(&b) = input.get(i) else {
                return Ok((i, 0));
            };
            self.framing += 1;
            if self.framing > MAX_FRAMING {
                return Err(Malformed);
            }
            self.state = chunked::step(state, b).ok_or(Malformed)?;
            i += 1;
        }
    }
}

/// A connection's read buffer: unread bytes are `data[start..end]`. Initialised once, so
/// reads go straight into it without `unsafe`.
pub struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for Buf {
    fn default() -> Self {
        Self {
            data: vec![0; BUF_SIZE],
            start: 0,
            end: 0,
        }
    }
}

impl Buf {
    pub fn filled(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The unread bytes, removed from the buffer.
    pub fn take(&mut self) -> Bytes {
        let b = Bytes::copy_from_slice(self.filled());
        self.consume(self.end);
        b
    }

    /// Room to read into: unread bytes are moved to the front, and a full buffer grows up
    /// to `max` bytes. `None` when it holds `max` unread bytes already.
    pub fn spare(&mut self, max: usize) -> Option<&mut [u8]> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.data.len() < max {
                let grown = (self.data.len() * 2).min(max);
                self.data.resize(grown, 0);
            } else {
                return None;
            }
        }
        self.data.get_mut(self.end..)
    }

    /// `n` bytes were read into [`Self::spare`].
    pub fn filled_by(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_head_has_origin_form_our_framing_and_no_client_framing() {
        let mut out = Vec::new();
        let h = headers(&[
            ("host", "api"),
            ("content-length", "99"),
            ("transfer-encoding", "chunked"),
            ("x-a", "1"),
            ("x-a", "2"),
        ]);
        let uri: Uri = "/p?q=1".parse().unwrap();
        let mut added = crate::headers::Added::default();
        added.put(&HeaderName::from_static("x-auth-subject"), b"alice");
        encode_head(
            &mut out,
            &Method::POST,
            &uri,
            (&h, added.as_bytes()),
            RequestFraming::Length(5),
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: api\r\nx-a: 1\r\nx-a: 2\r\nx-auth-subject: alice\r\ncontent-length: 5\r\n\r\n"
        );
        out.clear();
        encode_head(
            &mut out,
            &Method::GET,
            &uri,
            (&h, &[]),
            RequestFraming::None,
        );
        assert!(out.ends_with(b"x-a: 2\r\n\r\n"));
        out.clear();
        encode_head(
            &mut out,
            &Method::PUT,
            &uri,
            (&h, &[]),
            RequestFraming::Chunked,
        );
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn response_head_is_parsed_with_values_shared() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Y: a b\r\nx-y: c\r\n\r\nabc";
        assert!(parse_response(&raw[..20]).unwrap().is_none());
        let head = parse_response(raw).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.len, raw.len() - 3);
        assert_eq!(head.headers["content-length"], "3");
        let ys: Vec<_> = head.headers.get_all("x-y").iter().collect();
        assert_eq!(ys, ["a b", "c"]);
        assert_eq!(
            response_framing(&Method::GET, head.status, &head.framing),
            Ok(BodyFraming::Length(3))
        );
    }

    #[test]
    fn malformed_or_oversized_heads_are_refused() {
        assert_eq!(
            parse_response(b"HTTP/1.1 2000 X\r\n\r\n").unwrap_err(),
            Malformed
        );
        assert_eq!(parse_response(b"garbage\r\n\r\n").unwrap_err(), Malformed);
        let mut long = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse_response(&long).unwrap_err(), Malformed);
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"a: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_response(&many).unwrap_err(), Malformed);
    }

    /// The framing headers of a response with `status` and these header lines, as the
    /// upstream client reads them.
    fn framing_of(status: StatusCode, h: &[(&str, &str)]) -> HeadFraming {
        let mut raw = format!("HTTP/1.1 {} X\r\n", status.as_u16());
        for (k, v) in h {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        parse_response(raw.as_bytes()).unwrap().unwrap().framing
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        use BodyFraming::{Chunked, Close, Empty, Length};
        let (get, head, ok) = (&Method::GET, &Method::HEAD, StatusCode::OK);
        let te = "transfer-encoding";
        let cl = "content-length";
        /// Request method, response status, header lines, the framing they mean.
        type Case<'a> = (
            &'a Method,
            StatusCode,
            &'a [(&'a str, &'a str)],
            Result<BodyFraming, Malformed>,
        );
        let cases: &[Case<'_>] = &[
            (head, ok, &[(cl, "10")], Ok(Empty)),
            (get, StatusCode::NO_CONTENT, &[], Ok(Empty)),
            (get, StatusCode::NOT_MODIFIED, &[(cl, "9")], Ok(Empty)),
            (get, ok, &[(te, "gzip, chunked")], Ok(Chunked)),
            (
                get,
                ok,
                &[("Transfer-Encoding", "gzip"), (te, "Chunked")],
                Ok(Chunked),
            ),
            (get, ok, &[(te, "chunked"), (te, "")], Ok(Chunked)),
            (get, ok, &[(te, "")], Ok(Close)),
            (get, ok, &[(te, "chunked"), (cl, "4")], Ok(Chunked)),
            (get, ok, &[(te, "chunked, gzip")], Ok(Close)),
            (
                get,
                ok,
                &[(cl, "7, 7"), ("Content-Length", "7")],
                Ok(Length(7)),
            ),
            (get, ok, &[(cl, "0")], Ok(Empty)),
            (get, ok, &[(cl, "7"), (cl, "8")], Err(Malformed)),
            (get, ok, &[(cl, "+7")], Err(Malformed)),
            (get, ok, &[(cl, "")], Err(Malformed)),
            (get, ok, &[(cl, "99999999999999999999")], Err(Malformed)),
            (get, ok, &[], Ok(Close)),
        ];
        for (method, status, h, want) in cases {
            let got = response_framing(method, *status, &framing_of(*status, h));
            assert_eq!(got, *want, "{method} {status} {h:?}");
        }
    }

    #[test]
    fn keep_alive_needs_http_1_1_a_delimited_body_and_no_close() {
        let ok = StatusCode::OK;
        let h = framing_of(ok, &[("content-length", "1")]);
        let len = BodyFraming::Length(1);
        assert!(keep_alive(Version::HTTP_11, &h, len));
        assert!(!keep_alive(Version::HTTP_10, &h, len));
        assert!(!keep_alive(Version::HTTP_11, &h, BodyFraming::Close));
        let closing = framing_of(ok, &[("connection", "foo, Close")]);
        assert!(!keep_alive(Version::HTTP_11, &closing, len));
        let kept = framing_of(ok, &[("connection", "keep-alive"), ("content-length", "1")]);
        assert!(keep_alive(Version::HTTP_11, &kept, len));
        let both = framing_of(
            ok,
            &[("transfer-encoding", "chunked"), ("content-length", "1")],
        );
        assert!(!keep_alive(Version::HTTP_11, &both, BodyFraming::Chunked));
        let bad_length = framing_of(
            ok,
            &[("transfer-encoding", "chunked"), ("content-length", "x")],
        );
        assert!(!keep_alive(
            Version::HTTP_11,
            &bad_length,
            BodyFraming::Chunked
        ));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_left_out() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private, close\r\nKeep-Alive: timeout=5\r\nx-private: 1\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nTrailer: x\r\nTE: trailers\r\nContent-Length: 2\r\nX-Kept: yes\r\n\r\n";
        let head = parse_response(raw).unwrap().unwrap();
        let names = |h: &Head| h.headers.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&head), ["content-length", "x-kept"]);
        assert_eq!(head.framing.transfer_encoding, Some(true));
        assert!(head.framing.close);
        // A 101 keeps its Upgrade, the proxy needs it for the client.
        let switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            names(&parse_response(switching).unwrap().unwrap()),
            ["upgrade"]
        );
    }

    /// Decodes `wire` fed in pieces split at `cuts`; returns the data and whether the body
    /// ended, and where (bytes of `wire` consumed).
    fn decode(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Option<usize>), Malformed> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        bounds.push(wire.len());
        bounds.sort_unstable();
        let mut fed = 0;
        for b in bounds {
            pending.extend_from_slice(&wire[fed..b]);
            fed = b;
            loop {
                let (skip, n) = d.advance(&pending)?;
                out.extend_from_slice(&pending[skip..skip + n]);
                pending.drain(..skip + n);
                consumed += skip + n;
                if d.is_done() {
                    return Ok((out, Some(consumed)));
                }
                if skip + n == 0 || pending.is_empty() {
                    break;
                }
            }
        }
        Ok((out, None))
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let wire = b"5;name=value\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let (data, end) = decode(wire, &[]).unwrap();
        assert_eq!(data, b"hello0123456789");
        assert_eq!(end, Some(wire.len() - 4), "stops at the end of the body");
        let (data, end) = decode(b"0\r\n\r\n", &[]).unwrap();
        assert!(data.is_empty());
        assert_eq!(end, Some(5));
        assert_eq!(decode(b"5\r\nhel", &[]).unwrap(), (b"hel".to_vec(), None));
    }

    #[test]
    fn chunked_framing_errors_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"12345678901234567\r\n",
            b"5 \n",
            b"0\r\n\r\r",
            b"\r\n",
        ] {
            assert_eq!(
                decode(bad, &[]),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long_ext = b"1;".to_vec();
        long_ext.resize(MAX_FRAMING + 10, b'a');
        assert_eq!(decode(&long_ext, &[]), Err(Malformed));
    }

    proptest! {
        #[test]
        fn chunked_round_trips_whatever_the_read_boundaries(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            upper in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                if upper {
                    wire.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
                } else {
                    chunk_size_line(&mut wire, c.len());
                }
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let (data, end) = decode(&wire, &cuts).unwrap();
            prop_assert_eq!(data, chunks.concat());
            prop_assert_eq!(end, Some(wire.len()));
        }
    }

    #[test]
    fn buffer_compacts_then_grows_up_to_the_limit() {
        let mut b = Buf::default();
        let n = b.spare(MAX_HEAD).unwrap().len();
        assert_eq!(n, BUF_SIZE);
        b.spare(MAX_HEAD).unwrap().fill(7);
        b.filled_by(n);
        b.consume(10);
        // Full: the unread bytes move to the front.
        assert_eq!(b.spare(MAX_HEAD).unwrap().len(), 10);
        b.filled_by(10);
        assert_eq!(b.filled().len(), BUF_SIZE);
        // Full with nothing consumed: it grows, until the limit.
        assert_eq!(b.spare(MAX_HEAD).unwrap().len(), BUF_SIZE);
        assert!(b.spare(BUF_SIZE * 2).is_some());
        b.filled_by(BUF_SIZE);
        assert!(b.spare(BUF_SIZE * 2).is_none());
        assert_eq!(b.take().len(), BUF_SIZE * 2);
        assert!(b.is_empty());
    }
}
