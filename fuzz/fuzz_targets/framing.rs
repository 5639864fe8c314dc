//! Request framing: whatever bytes a client sends, and however they are cut into reads, the
//! framing watcher never panics, keeps bounded memory, and reaches the same verdict (the
//! ordinal of the first ambiguous head, the number of heads followed) as with one read.
#![no_main]
use libfuzzer_sys::fuzz_target;

use tollgate::server::framing::{Framing, Watcher};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose read sizes; the rest is the stream.
    let (sizes, stream) = data.split_at(data.len().min(2));
    let whole = Framing::new();
    let mut one = Watcher::new(whole.clone(), 4096, 50);
    one.feed(stream);

    let pieces = Framing::new();
    let mut many = Watcher::new(pieces.clone(), 4096, 50);
    let mut rest = stream;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1)).max(1);
        let (a, b) = rest.split_at(n.min(rest.len()));
        many.feed(a);
        rest = b;
        i += 1;
    }
    assert_eq!(whole.conflicting_head(), pieces.conflicting_head());
    // A head cut over the limit turns one of them off while the other parses it; before
    // that point both agree.
    let (h1, on1) = one.progress();
    let (h2, on2) = many.progress();
    if on1 && on2 {
        assert_eq!(h1, h2);
    }
});
