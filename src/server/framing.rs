//! Ambiguous request framing (design §7, RFC 9112 §6.1 and §6.3): a request head that
//! carries `Content-Length` together with `Transfer-Encoding`, or more than one
//! `Content-Length` line, is answered 400 and its connection closed.
//!
//! hyper resolves such a head safely on its own (chunked wins and the length is dropped;
//! differing lengths are refused) but hides the conflict from the service: by the time a
//! request reaches us the `Content-Length` is gone. So a [`Sniffed`] reader watches the
//! bytes hyper reads, follows HTTP/1 message framing with the same head parser hyper uses
//! (`httparse`) and the chunked grammar of RFC 9112 §7.1, and records the ordinal of the
//! first head with conflicting framing in the connection's [`Framing`]. The service counts
//! the requests it is handed and refuses the one with that ordinal.
//!
//! Anything the watcher does not follow (HTTP/2, a parse error, a head over the limit) turns
//! it off for the rest of the connection: it can miss a conflict (hyper's own handling then
//! applies) but never mark a request that has none.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::chunked::{Chunk, step as chunk_step};

/// Heads with up to this many header lines are parsed without a heap allocation.
const STACK_HEADERS: usize = 128;

/// Shared between a connection's reader and its service.
#[derive(Debug, Default)]
pub struct Framing {
    /// 1-based ordinal of the first head with conflicting framing; 0 for none.
    conflict: AtomicU64,
    /// Requests handed to the service so far.
    served: AtomicU64,
    /// 1-based ordinal of the head being read (bytes of it have come, or, for the first,
    /// the connection is open), 0 between heads or once the watcher is off: what the
    /// header-read timeout watches.
    open: AtomicU64,
}

impl Framing {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicU64::new(1),
            ..Self::default()
        })
    }

    /// The ordinal of the request head being read, if one is (see [`Framing::open`]).
    pub fn open_head(&self) -> Option<u64> {
        Some(self.open.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    fn set_open(&self, n: u64) {
        if self.open.load(Ordering::Relaxed) != n {
            self.open.store(n, Ordering::Relaxed);
        }
    }

    /// Called once per request, in order, by the service of an HTTP/1 connection: whether
    /// this request's head had conflicting framing.
    pub fn next_request_conflicts(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::AcqRel) + 1;
        self.conflict.load(Ordering::Acquire) == n
    }

    /// The 1-based ordinal of the first head with conflicting framing, if any.
    pub fn conflicting_head(&self) -> Option<u64> {
        Some(self.conflict.load(Ordering::Acquire)).filter(|&n| n > 0)
    }
}

/// Where the watcher is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At (or inside) a request head.
    Head,
    /// Inside a `Content-Length` body: bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not following this connection any more.
    Off,
}

/// What one complete head says about the bytes after it.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Partial,
    /// Not something hyper would serve (it answers 400/431 and closes), or not HTTP/1.
    Invalid,
    /// Length of the head and the state of the bytes after it.
    Next(usize, State),
    /// Length of the head; its framing is ambiguous.
    Conflict(usize),
}

/// The framing watcher of one connection.
#[derive(Debug)]
pub struct Watcher {
    state: State,
    /// A head split across reads, kept until it is complete (bounded by `limit`).
    partial: Vec<u8>,
    heads: u64,
    limit: usize,
    max_headers: usize,
    shared: Arc<Framing>,
}

impl Watcher {
    pub fn new(shared: Arc<Framing>, limit: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            partial: Vec::new(),
            heads: 0,
            limit,
            max_headers,
            shared,
        }
    }

    /// Complete heads seen so far, and whether the watcher still follows the connection.
    pub fn progress(&self) -> (u64, bool) {
        (self.heads, self.state != State::Off)
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
        self.shared.set_open(0);
    }

    /// Follows `data`, the next bytes of the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Length(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    data = data.get(n..).unwrap_or_default();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                }
                State::Chunked(Chunk::Data(left)) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    data = data.get(n..).unwrap_or_default();
                    let left = left - n as u64;
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                }
                State::Chunked(c) => {
                    let Some((&b, rest)) = data.split_first() else {
                        return;
                    };
                    data = rest;
                    self.state = match chunk_step(c, b) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => State::Head,
                        None => State::Off,
                    };
                }
                State::Head => {
                    self.shared.set_open(self.heads + 1);
                    data = self.head(data);
                }
            }
        }
    }

    /// Consumes head bytes from `data`, returning what follows the head (if it completed).
    fn head<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let kept = self.partial.len();
        let parsed = if kept == 0 {
            parse_head(data, self.max_headers)
        } else {
            let room = self.limit.saturating_sub(kept).min(data.len());
            self.partial
                .extend_from_slice(data.get(..room).unwrap_or_default());
            parse_head(&self.partial, self.max_headers)
        };
        let parsed = match parsed {
            // hyper refuses a head over its buffer size (431), however it was read.
            Head::Next(len, _) | Head::Conflict(len) if len > self.limit => Head::Invalid,
            other => other,
        };
        match parsed {
            Head::Partial => {
                if kept == 0 {
                    if data.len() >= self.limit {
                        self.off();
                    } else {
                        self.partial.extend_from_slice(data);
                    }
                } else if self.partial.len() >= self.limit {
                    self.off();
                }
                &[]
            }
            Head::Invalid => {
                self.off();
                &[]
            }
            Head::Conflict(_) => {
                self.heads += 1;
                self.shared.conflict.store(self.heads, Ordering::Release);
                // hyper closes the connection after this request: nothing more to follow.
                self.off();
                &[]
            }
            Head::Next(len, next) => {
                self.heads += 1;
                self.shared.set_open(0);
                self.partial.clear();
                self.state = next;
                // The head ends `len - kept` bytes into `data` (a kept partial head was
                // incomplete, so it ends inside `data`).
                match len.checked_sub(kept).and_then(|at| data.get(at..)) {
                    Some(rest) => rest,
                    None => {
                        self.off();
                        &[]
                    }
                }
            }
        }
    }
}

/// Parses one request head the way hyper's server does, and classifies its framing.
fn parse_head(bytes: &[u8], max_headers: usize) -> Head {
    plain_head(bytes, max_headers).unwrap_or_else(|| full_head(bytes, max_headers))
}

/// The common case without a full parse: a complete HTTP/1.x head in which no line could be
/// a framing header, so no body follows. Looks only at line starts (found with `memchr`, as
/// the lines httparse splits at `\n`), so the long `Authorization` line costs one vector
/// scan. `None` (parse it fully) for anything else: a partial head, leading empty lines,
/// obs-folds, too many lines, or a line starting like `Content-Length` or
/// `Transfer-Encoding` in any case. Where this says `Next`, the full parse says the same or
/// `Invalid` (hyper then refuses the head and closes: nothing follows it either way).
fn plain_head(bytes: &[u8], max_headers: usize) -> Option<Head> {
    if !bytes.first()?.is_ascii_uppercase() {
        return None;
    }
    let first = memchr::memchr(b'\n', bytes)?;
    let line = bytes.get(..first)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")) {
        return None;
    }
    let mut start = first + 1;
    let mut lines = 0usize;
    loop {
        let rest = bytes.get(start..)?;
        match *rest.first()? {
            b'\n' => return Some(Head::Next(start + 1, State::Head)),
            b'\r' => {
                return (rest.get(1) == Some(&b'\n')).then_some(Head::Next(start + 2, State::Head));
            }
            b' ' | b'\t' => return None,
            _ => {}
        }
        for name in [&b"content-length"[..], b"transfer-encoding"] {
            let n = name.len().min(rest.len());
            if rest.get(..n)?.eq_ignore_ascii_case(name.get(..n)?) {
                return None;
            }
        }
        lines += 1;
        if lines > max_headers {
            return None;
        }
        start += memchr::memchr(b'\n', rest)? + 1;
    }
}

/// [`parse_head`] with httparse, as hyper parses.
fn full_head(bytes: &[u8], max_headers: usize) -> Head {
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut heap: Vec<MaybeUninit<httparse::Header<'_>>>;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADERS {
        stack.get_mut(..max_headers).unwrap_or_default()
    } else {
        heap = vec![MaybeUninit::uninit(); max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(bytes, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid,
    };
    let mut lengths = 0usize;
    let mut length = Some(0);
    let mut encoded = false;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            // hyper skips a length after `Transfer-Encoding` unparsed: judge the conflict
            // before the value.
            length = crate::chunked::decimal(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            chunked = last_coding_is_chunked(h.value);
        }
    }
    if lengths > 1 || (lengths == 1 && encoded) {
        return Head::Conflict(len);
    }
    let next = if encoded {
        if !chunked || req.version != Some(1) {
            return Head::Invalid;
        }
        State::Chunked(Chunk::Start)
    } else {
        match length {
            None => return Head::Invalid,
            Some(0) => State::Head,
            Some(n) => State::Length(n),
        }
    };
    Head::Next(len, next)
}

/// Whether `chunked` is the final transfer coding of one `Transfer-Encoding` line.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

pin_project_lite::pin_project! {
    /// `T` with every byte read shown to a [`Watcher`].
    pub struct Sniffed<T> {
        #[pin]
        inner: T,
        watcher: Watcher,
    }
}

impl<T> Sniffed<T> {
    pub fn new(inner: T, watcher: Watcher) -> Self {
        Self { inner, watcher }
    }
}

impl<T: AsyncRead> AsyncRead for Sniffed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && this.watcher.state != State::Off {
            this.watcher
                .feed(buf.filled().get(before..).unwrap_or_default());
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Sniffed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn watch(chunks: &[&[u8]]) -> (Watcher, Arc<Framing>) {
        let shared = Framing::new();
        let mut w = Watcher::new(shared.clone(), 32 * 1024, 100);
        for c in chunks {
            w.feed(c);
        }
        (w, shared)
    }

    fn conflict_of(shared: &Framing) -> u64 {
        shared.conflict.load(Ordering::Acquire)
    }

    #[test]
    fn both_orders_of_length_and_encoding_conflict() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: nope\r\n\r\n",
        ] {
            let (w, shared) = watch(&[head]);
            assert_eq!(conflict_of(&shared), 1, "{}", String::from_utf8_lossy(head));
            assert_eq!(w.state, State::Off);
        }
    }

    #[test]
    fn the_ordinal_is_that_of_the_conflicting_request() {
        let stream = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n\
            POST /d HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_, shared) = watch(&[stream]);
        assert_eq!(conflict_of(&shared), 4);
        assert!(!shared.next_request_conflicts());
        assert!(!shared.next_request_conflicts());
        assert!(!shared.next_request_conflicts());
        assert!(shared.next_request_conflicts());
    }

    #[test]
    fn bodies_that_look_like_heads_are_skipped() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (w, shared) = watch(&[&stream]);
        assert_eq!(conflict_of(&shared), 0);
        assert_eq!(w.state, State::Head);
        assert_eq!(w.heads, 2);
    }

    #[test]
    fn non_http1_and_malformed_streams_turn_it_off() {
        for s in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n",
        ] {
            let (w, shared) = watch(&[s]);
            assert_eq!(w.state, State::Off, "{}", String::from_utf8_lossy(s));
            assert_eq!(conflict_of(&shared), 0);
        }
    }

    #[test]
    fn a_head_over_the_limit_turns_it_off_and_memory_stays_bounded() {
        let shared = Framing::new();
        let mut w = Watcher::new(shared, 1024, 100);
        w.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..1000 {
            w.feed(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            assert!(w.partial.len() <= 1024);
        }
        assert_eq!(w.state, State::Off);
    }

    #[test]
    fn many_headers_beyond_the_stack_array_are_parsed() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..300 {
            head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let shared = Framing::new();
        let mut w = Watcher::new(shared.clone(), 64 * 1024, 1000);
        w.feed(&head);
        assert_eq!(conflict_of(&shared), 1);
    }

    #[test]
    fn plain_heads_skip_the_full_parse_and_agree_with_it() {
        let cases: [(&[u8], Option<Head>); 9] = [
            (
                b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\nnext",
                Some(Head::Next(53, State::Head)),
            ),
            (
                b"GET / HTTP/1.0\nHost: x\n\n",
                Some(Head::Next(24, State::Head)),
            ),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", None),
            (b"GET / HTTP/1.1\r\ncontent-LENGTH: 5\r\n\r\nhello", None),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                None,
            ),
            (b"GET / HTTP/1.1\r\nConte", None),
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", None),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
        ];
        for (raw, want) in cases {
            let got = plain_head(raw, 100);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
            if let Some(h) = got {
                assert_eq!(full_head(raw, 100), h);
            }
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        many.extend(b"a: b\r\n".repeat(5));
        many.extend_from_slice(b"\r\n");
        assert_eq!(plain_head(&many, 4), None);
        assert_eq!(
            plain_head(&many, 5),
            Some(Head::Next(many.len(), State::Head))
        );
    }

    /// Lines a generated head is made of: plain ones, framing ones in odd spellings, and
    /// what httparse refuses or treats specially.
    fn head_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"Host: api\r\n".to_vec()),
            Just(b"Authorization: Bearer abc.def.ghi\r\n".to_vec()),
            Just(b"Content-Length: 3\r\n".to_vec()),
            Just(b"cOnTeNt-LeNgTh: 3\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Content-Type: text/plain\r\n".to_vec()),
            Just(b"TE: trailers\r\n".to_vec()),
            Just(b"X-Bare: lf\n".to_vec()),
            Just(b" folded\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever the bytes, where the shortcut answers, the full parse gives the same
        /// answer or refuses the head (and hyper with it).
        #[test]
        fn the_plain_head_shortcut_never_disagrees_with_httparse(
            line in prop_oneof![
                Just(b"GET /x HTTP/1.1\r\n".to_vec()),
                Just(b"POST /x HTTP/1.0\n".to_vec()),
                Just(b"GET /x HTTP/2.0\r\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..20),
            ],
            lines in proptest::collection::vec(head_line(), 0..8),
            end in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut raw = line;
            for l in &lines {
                raw.extend_from_slice(l);
            }
            if end {
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(&tail);
            if let Some(h) = plain_head(&raw, 6) {
                let full = full_head(&raw, 6);
                prop_assert!(full == h || full == Head::Invalid, "{:?}: {:?} vs {:?}",
                    String::from_utf8_lossy(&raw), h, full);
            }
        }
    }

    /// One request of a generated stream: its bytes, and whether its framing conflicts.
    fn request() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let body = proptest::collection::vec(any::<u8>(), 0..40);
        let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..4);
        prop_oneof![
            Just((b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), false)),
            body.prop_map(|b| {
                let mut r =
                    format!("PUT /l HTTP/1.1\r\ncontent-LENGTH: {}\r\n\r\n", b.len()).into_bytes();
                r.extend_from_slice(&b);
                (r, false)
            }),
            (chunks, any::<bool>()).prop_map(|(cs, trailer)| {
                let mut r = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for c in cs {
                    r.extend_from_slice(format!("{:X} ; e=1\r\n", c.len()).as_bytes());
                    r.extend_from_slice(&c);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n");
                if trailer {
                    r.extend_from_slice(b"X-T: 1\r\n");
                }
                r.extend_from_slice(b"\r\n");
                (r, false)
            }),
            Just((
                b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"
                    .to_vec(),
                true
            )),
        ]
    }

    proptest! {
        /// However the stream is cut into reads, the recorded ordinal is that of the first
        /// conflicting request, and nothing is recorded without one.
        #[test]
        fn ordinal_is_independent_of_read_boundaries(
            reqs in proptest::collection::vec(request(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream: Vec<u8> = reqs.iter().flat_map(|(r, _)| r.clone()).collect();
            let expected = reqs.iter().position(|(_, c)| *c).map_or(0, |i| i as u64 + 1);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            at.push(0);
            at.push(stream.len());
            at.sort_unstable();
            let shared = Framing::new();
            let mut w = Watcher::new(shared.clone(), 32 * 1024, 100);
            for pair in at.windows(2) {
                w.feed(&stream[pair[0]..pair[1]]);
            }
            prop_assert_eq!(conflict_of(&shared), expected);
            if expected == 0 {
                prop_assert_eq!(w.state, State::Head);
                prop_assert_eq!(w.heads, reqs.len() as u64);
            }
        }
    }

    #[test]
    fn the_head_being_read_is_tracked_for_the_header_timeout() {
        let shared = Framing::new();
        // A new connection waits for its first head.
        assert_eq!(shared.open_head(), Some(1));
        let mut w = Watcher::new(shared.clone(), 8192, 100);
        w.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(shared.open_head(), None, "between requests");
        w.feed(b"GET /b HTTP/1.1\r\nHo");
        assert_eq!(shared.open_head(), Some(2));
        w.feed(b"st: h\r\ncontent-length: 3\r\n\r\nab");
        assert_eq!(shared.open_head(), None, "inside a body");
        // The body's last byte and the next head, all at once.
        w.feed(b"cGET /c HTTP/1.1\r\n");
        assert_eq!(shared.open_head(), Some(3));
        w.feed(b"\x01garbage\r\n\r\n");
        assert_eq!(
            shared.open_head(),
            None,
            "not followed any more: hyper answers 400"
        );
    }
}
