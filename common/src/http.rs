//! HTTP/1.x in a TCP payload: whether a segment starts a request (its first
//! bytes are a method token and a space, RFC 9110 methods: what is sampled),
//! and how many request heads it ends ([`HeadEnds`]: what a request limit
//! charges).

use crate::route::ROUTED_HEADS;

/// Bytes of payload the check needs. Every request line is longer than this
/// ("GET / HTTP/1.1\r\n" is 16 bytes), so shorter payloads are never requests.
pub const PREFIX_LEN: usize = 8;

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"PUT ",
    b"POST ",
    b"HEAD ",
    b"PATCH ",
    b"TRACE ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
];

/// Whether `prefix` (the first [`PREFIX_LEN`] payload bytes) starts an HTTP request.
///
/// Compares 64-bit words under a mask: one load, a handful of compares, no
/// data-dependent loop, which keeps the verifier and the branch predictor happy.
#[inline(always)]
pub fn starts_request(prefix: [u8; PREFIX_LEN]) -> bool {
    let word = u64::from_le_bytes(prefix);
    // Dispatch on the first byte so at most two masked compares run.
    match prefix[0] {
        b'G' => word & mask(4) == pattern(METHODS[0]),
        b'P' => {
            word & mask(4) == pattern(METHODS[1])
                || word & mask(5) == pattern(METHODS[2])
                || word & mask(6) == pattern(METHODS[4])
        }
        b'H' => word & mask(5) == pattern(METHODS[3]),
        b'T' => word & mask(6) == pattern(METHODS[5]),
        b'D' => word & mask(7) == pattern(METHODS[6]),
        b'O' => word == pattern(METHODS[7]),
        b'C' => word == pattern(METHODS[8]),
        _ => false,
    }
}

#[inline(always)]
const fn mask(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (len * 8)) - 1
    }
}

#[inline(always)]
const fn pattern(method: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut i = 0;
    while i < method.len() {
        word |= (method[i] as u64) << (i * 8);
        i += 1;
    }
    word
}

/// Counts the ends of HTTP/1.x request heads (an empty line after a non-empty
/// one, `\n` or `\r\n` line endings) in a TCP segment's payload, fed in
/// pieces: what a request-limited tier charges per segment.
///
/// Every request a server acts on has exactly one head end, so counting them
/// charges pipelined requests and requests that TCP coalesced on
/// retransmission one each, and a request whose method token was split across
/// segments once, in the segment that completes its head. A segment is
/// scanned on its own, without the stream before it, so its start is taken
/// as the start of a line inside a head (the conservative choice): a segment
/// that begins with the rest of a head end (`\n`, `\r\n`) is charged for it.
/// Over-counts, never under-counts, what a server parses: a body holding an
/// empty line (multipart parts, a chunked body's last chunk) costs one more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadEnds {
    state: u8,
    /// Head ends seen so far.
    pub ends: u32,
    /// Bytes fed so far.
    pub pos: u32,
    /// Request lines that began after a head end (the next request of a
    /// pipeline): how many, and where the first [`ROUTED_HEADS`] began
    /// (offsets from the first byte fed). Routing reads them
    /// ([`crate::route`]).
    pub starts: u32,
    pub start_at: [u32; ROUTED_HEADS],
}

/// Inside a non-empty line.
const MID_LINE: u8 = 0;
/// At the start of a line inside a head.
const LINE_START: u8 = 1;
/// A `\r` at the start of a line inside a head.
const LINE_START_CR: u8 = 2;
/// Between requests (after a head end): empty lines are skipped.
const IDLE: u8 = 3;
/// A `\r` between requests.
const IDLE_CR: u8 = 4;

/// `x` has a byte equal to `b` (the classic has-zero-byte test on `x ^ b…b`).
#[inline(always)]
pub const fn has_byte(x: u64, b: u8) -> bool {
    let t = x ^ (0x0101_0101_0101_0101u64 * b as u64);
    t.wrapping_sub(0x0101_0101_0101_0101) & !t & 0x8080_8080_8080_8080 != 0
}

/// The top bit of every byte of `x` that equals `b`, and no other bit
/// (unlike [`has_byte`]'s mask, exact for every byte).
#[inline(always)]
pub const fn bytes_equal(x: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let t = x ^ (0x0101_0101_0101_0101u64 * b as u64);
    !(((t & LOW7).wrapping_add(LOW7)) | t | LOW7)
}

/// What [`last_block`] fills a block with after a segment's end: a byte
/// that ends no head (inside a line or at a line's start it leaves or puts
/// the scan inside a line; between requests it notes a request line that
/// begins there, which nothing reads, as no head ends after it).
const FILL: u64 = 0x0101_0101_0101_0101 * b'a' as u64;

/// The segment's last `left` bytes (1..=31) as a block of four words, the
/// rest [`FILL`]: `tail` is the 32 bytes that end where the segment ends,
/// whose first `32 - left` were fed already. One block, so the scan's last
/// step is a block like the others.
#[inline(always)]
pub fn last_block(tail: [u64; 4], left: u32) -> [u64; 4] {
    let left = left.clamp(1, 31);
    let shift = 32 - left;
    // Whole words first, then bytes (constant indices only: the verifier
    // refuses a stack read at an index it cannot bound).
    let mut w = tail;
    if shift >= 16 {
        w = [w[2], w[3], 0, 0];
    }
    if shift & 8 != 0 {
        w = [w[1], w[2], w[3], 0];
    }
    let bits = (shift % 8) * 8;
    if bits != 0 {
        w = [
            (w[0] >> bits) | (w[1] << (64 - bits)),
            (w[1] >> bits) | (w[2] << (64 - bits)),
            (w[2] >> bits) | (w[3] << (64 - bits)),
            w[3] >> bits,
        ];
    }
    let mut i = 0;
    while i < 4 {
        let kept = left.saturating_sub(i as u32 * 8);
        let mask = if kept >= 8 {
            u64::MAX
        } else {
            (1u64 << (kept * 8)) - 1
        };
        w[i] = (w[i] & mask) | (FILL & !mask);
        i += 1;
    }
    w
}

impl HeadEnds {
    /// The state at the start of a segment.
    pub const fn segment_start() -> HeadEnds {
        HeadEnds {
            state: LINE_START,
            ends: 0,
            pos: 0,
            starts: 0,
            start_at: [0; ROUTED_HEADS],
        }
    }

    /// Sets `self` to [`HeadEnds::segment_start`] a field at a time. In the
    /// kernel `self` lives in a map, and LLVM's BPF backend turns the store
    /// of a whole `HeadEnds` into a call to a byte-at-a-time `memset` (about
    /// 25 ns a segment); twelve stores cost a few.
    #[inline(always)]
    pub fn reset(&mut self) {
        // SAFETY: fields of `self` (volatile so that LLVM does not join
        // them back into a `memset`).
        unsafe {
            core::ptr::write_volatile(&mut self.state, LINE_START);
            core::ptr::write_volatile(&mut self.ends, 0);
            core::ptr::write_volatile(&mut self.pos, 0);
            core::ptr::write_volatile(&mut self.starts, 0);
            let mut i = 0;
            while i < ROUTED_HEADS {
                core::ptr::write_volatile(&mut self.start_at[i], 0);
                i += 1;
            }
        }
    }

    /// The state, read from memory every time: in the kernel `HeadEnds`
    /// lives in a map, and a volatile load makes the verifier see the state
    /// as any value at every byte instead of following each constant through
    /// every later byte (which multiplies the paths it has to walk).
    #[inline(always)]
    fn load_state(&self) -> u8 {
        // SAFETY: a field of `self`.
        unsafe { core::ptr::read_volatile(&self.state) }
    }

    #[inline(always)]
    fn store_state(&mut self, state: u8) {
        // SAFETY: a field of `self`.
        unsafe { core::ptr::write_volatile(&mut self.state, state) }
    }

    /// A request line begins at the byte about to be fed.
    #[inline(always)]
    fn note_start(&mut self) {
        // SAFETY: a field of `self` (volatile for the reason of `load_state`:
        // the count indexes `start_at`).
        let n = unsafe { core::ptr::read_volatile(&self.starts) };
        if (n as usize) < ROUTED_HEADS {
            self.start_at[n as usize] = self.pos;
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut self.starts, n + 1) };
    }

    /// Feeds one byte.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        let next = match (self.load_state(), b) {
            (LINE_START | LINE_START_CR, b'\n') => {
                self.ends += 1;
                IDLE
            }
            (LINE_START, b'\r') => LINE_START_CR,
            (IDLE, b'\r') => IDLE_CR,
            (IDLE | IDLE_CR, b'\n') => IDLE,
            (IDLE | IDLE_CR, _) => {
                self.note_start();
                MID_LINE
            }
            (_, b'\n') => LINE_START,
            _ => MID_LINE,
        };
        self.store_state(next);
        self.pos += 1;
    }

    /// Feeds eight bytes (in payload order, as read little-endian): a word
    /// without `\r` or `\n` only ends up inside a line, which skips the
    /// per-byte steps for most of a head and most of a body.
    #[inline(always)]
    pub fn word(&mut self, word: u64) {
        let state = self.load_state();
        // Inside a line, only a `\n` can change the state.
        if state == MID_LINE {
            let newlines = bytes_equal(word, b'\n');
            if newlines == 0 {
                self.pos += 8;
                return;
            }
            // One `\n` (a line's end inside the word, as in most words of a
            // head): the line after it begins in the word and, unless with
            // `\r`, is not empty, so the word ends inside it; or the `\n` is
            // the word's last byte, and the word ends at a line's start.
            if newlines & (newlines - 1) == 0 {
                // The lowest bit of the byte after the `\n` (0 when none).
                let after = newlines << 1;
                if after == 0 {
                    self.store_state(LINE_START);
                    self.pos += 8;
                    return;
                }
                if word & after.wrapping_mul(0xff) != after.wrapping_mul(b'\r' as u64) {
                    self.pos += 8;
                    return;
                }
            }
        } else if !has_byte(word, b'\n') && !has_byte(word, b'\r') {
            if state == IDLE || state == IDLE_CR {
                self.note_start();
            }
            self.store_state(MID_LINE);
            self.pos += 8;
            return;
        }
        let mut i = 0;
        while i < 8 {
            self.byte((word >> (i * 8)) as u8);
            i += 1;
        }
    }

    /// Whether the 32 bytes of `words` (each as [`HeadEnds::word`] takes
    /// it) leave the state as it is: inside a line, a block without `\n`,
    /// which is most of a body. One test for the block; [`HeadEnds::skip`]
    /// then moves past it.
    #[inline(always)]
    pub fn skips(&self, words: &[u64; 4]) -> bool {
        self.load_state() == MID_LINE
            && !(has_byte(words[0], b'\n')
                || has_byte(words[1], b'\n')
                || has_byte(words[2], b'\n')
                || has_byte(words[3], b'\n'))
    }

    /// Moves past `n` bytes that [`HeadEnds::skips`] said leave the state.
    #[inline(always)]
    pub fn skip(&mut self, n: u32) {
        self.pos += n;
    }

    /// Feeds 32 bytes a word at a time.
    #[inline(always)]
    pub fn words(&mut self, words: [u64; 4]) {
        self.word(words[0]);
        self.word(words[1]);
        self.word(words[2]);
        self.word(words[3]);
    }

    /// Feeds 32 bytes: skipped with one test when [`HeadEnds::skips`] says
    /// so, else a word at a time.
    #[inline(always)]
    pub fn block(&mut self, words: [u64; 4]) {
        if self.skips(&words) {
            self.skip(32);
        } else {
            self.words(words);
        }
    }
}

/// Test support: 32 bytes as the four words the program reads.
#[cfg(test)]
pub(crate) fn block_words(bytes: &[u8]) -> [u64; 4] {
    core::array::from_fn(|i| u64::from_le_bytes(bytes[i * 8..][..8].try_into().unwrap()))
}

/// Test support: `payload` scanned as the program scans a segment: blocks
/// of 32 bytes, then the last 1 to 31 as a filled block ([`last_block`]),
/// whose 32 bytes read before the segment's end start with `before` where
/// the payload is shorter (the headers, in the program).
#[cfg(test)]
pub(crate) fn scan_as_the_program_does(payload: &[u8], before: u8) -> HeadEnds {
    let mut scan = HeadEnds::segment_start();
    let mut blocks = payload.chunks_exact(32);
    for block in &mut blocks {
        scan.block(block_words(block));
    }
    let left = blocks.remainder().len();
    if left != 0 {
        let mut tail = [before; 32];
        let from = payload.len().saturating_sub(32);
        tail[32 - (payload.len() - from)..].copy_from_slice(&payload[from..]);
        scan.block(last_block(block_words(&tail), left as u32));
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &[u8]) -> [u8; PREFIX_LEN] {
        let mut p = [0u8; PREFIX_LEN];
        let n = s.len().min(PREFIX_LEN);
        p[..n].copy_from_slice(&s[..n]);
        p
    }

    #[test]
    fn every_method_is_recognised() {
        for m in METHODS {
            let mut line = m.to_vec();
            line.extend_from_slice(b"/x HTTP/1.1\r\n");
            assert!(
                starts_request(prefix(&line)),
                "{:?}",
                core::str::from_utf8(m)
            );
        }
    }

    #[test]
    fn near_misses_are_not_requests() {
        for s in [
            &b"GETX / HTTP/1.1"[..],
            b"get / HTTP/1.1",
            b"POSTED /",
            b"HTTP/1.1 200 OK",
            b"PRI * HTTP/2.0",
            b"\x16\x03\x01\x02\x00\x01\x00\x01",
            b"OPTIONS\t",
            b"CONNECTX",
            b"DELETE/",
        ] {
            assert!(
                !starts_request(prefix(s)),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn reset_is_the_segment_start() {
        let mut h = HeadEnds::segment_start();
        for &b in b"GET / HTTP/1.1\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\n\r\nGET" {
            h.byte(b);
        }
        assert_ne!(h, HeadEnds::segment_start());
        h.reset();
        assert_eq!(h, HeadEnds::segment_start());
    }

    fn count(segment: &[u8]) -> u32 {
        scan(segment).ends
    }

    fn scan(segment: &[u8]) -> HeadEnds {
        let mut h = HeadEnds::segment_start();
        let mut chunks = segment.chunks_exact(8);
        for c in &mut chunks {
            h.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        for &b in chunks.remainder() {
            h.byte(b);
        }
        h
    }

    #[test]
    fn the_request_lines_after_head_ends_are_noted_where_they_begin() {
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let three = one.repeat(3);
        let h = scan(&three);
        assert_eq!((h.ends, h.starts, h.pos), (3, 2, three.len() as u32));
        assert_eq!(&h.start_at[..2], &[one.len() as u32, 2 * one.len() as u32]);
        // Empty lines between requests are skipped; LF-only heads.
        let h = scan(b"GET / HTTP/1.1\n\n\r\n\nPUT /b HTTP/1.1\nHost: y\n\n");
        assert_eq!((h.ends, h.starts, h.start_at[0]), (2, 1, 19));
        // More starts than are kept: counted, the first ones placed.
        let many = one.repeat(ROUTED_HEADS + 3);
        let h = scan(&many);
        assert_eq!(h.starts, ROUTED_HEADS as u32 + 2);
        assert_eq!(
            h.start_at[ROUTED_HEADS - 1],
            (ROUTED_HEADS * one.len()) as u32
        );
        // A segment that starts mid-head notes nothing until a head ends.
        let h = scan(b"Host: x\r\n\r\nGET /c");
        assert_eq!((h.ends, h.starts, h.start_at[0]), (1, 1, 11));
    }

    #[test]
    fn head_ends_count_pipelined_requests_once_each() {
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(count(one), 1);
        assert_eq!(count(&one.repeat(40)), 40);
        // LF-only line endings, and empty lines between requests skipped.
        assert_eq!(
            count(b"GET / HTTP/1.1\nHost: x\n\n\r\n\nGET / HTTP/1.1\n\n"),
            2
        );
        // A head without its end, a body, a response-like payload: nothing.
        assert_eq!(count(b"GET / HTTP/1.1\r\nHost: x\r\n"), 0);
        assert_eq!(count(b"{\"q\": \"search\"}"), 0);
        assert_eq!(count(b""), 0);
    }

    /// Every way to cut a request in two: the two halves, each scanned as a
    /// segment of its own, are charged at least the one request they carry.
    #[test]
    fn a_request_cut_anywhere_is_charged_at_least_once() {
        for line in [
            &b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /a HTTP/1.1\nHost: x\n\n",
        ] {
            for cut in 0..=line.len() {
                let (a, b) = line.split_at(cut);
                let charged = count(a) + count(b);
                assert!(
                    (1..=2).contains(&charged),
                    "cut at {cut}: {charged} for {:?} | {:?}",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                );
            }
        }
    }

    #[test]
    fn words_and_bytes_agree() {
        // Every 8-byte pattern over a small alphabet, from every state.
        // (0x0b is `\n` ^ 1, the byte a has-zero test can mistake.)
        let alphabet = [b'\r', b'\n', b'a', 0x0b];
        for n in 0..4usize.pow(8) {
            let mut word = [0u8; 8];
            let mut k = n;
            for w in &mut word {
                *w = alphabet[k % 4];
                k /= 4;
            }
            for state in [MID_LINE, LINE_START, LINE_START_CR, IDLE, IDLE_CR] {
                let mut by_word = HeadEnds {
                    state,
                    ..HeadEnds::segment_start()
                };
                let mut by_byte = by_word;
                by_word.word(u64::from_le_bytes(word));
                for b in word {
                    by_byte.byte(b);
                }
                assert_eq!(by_word, by_byte, "{word:?} from {state}");
            }
        }
    }

    #[test]
    fn bytes_equal_marks_exactly_the_equal_bytes() {
        for word in [
            *b"\n\x0b\n\x0b\x0b\n\x00\xff",
            *b"\x0b\x0b\x0b\x0b\x0b\x0b\x0b\n",
            [b'\n'; 8],
            [0x8a; 8],
        ] {
            let expected = word
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .fold(0u64, |m, (i, _)| m | 0x80 << (i * 8));
            assert_eq!(
                bytes_equal(u64::from_le_bytes(word), b'\n'),
                expected,
                "{word:x?}"
            );
        }
    }

    #[test]
    fn the_last_block_is_the_last_bytes_then_fill() {
        let tail: Vec<u8> = (0..32u8).map(|b| b + 0x30).collect();
        for left in 1..32usize {
            let mut expected = tail[32 - left..].to_vec();
            expected.resize(32, b'a');
            assert_eq!(
                last_block(block_words(&tail), left as u32),
                block_words(&expected),
                "{left}"
            );
        }
    }

    #[test]
    fn a_segment_ending_in_a_filled_block_counts_as_fed_whole() {
        // Every cut of heads, pipelined and with empty lines between them,
        // fed whole and fed as the program feeds it: the same head ends,
        // and the same starts where a head ends after them.
        let payload =
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\nPOST /b HTTP/1.1\n\nGET /c HTTP/1.1\r\n\r\n\n";
        for len in 1..=payload.len() {
            let segment = &payload[..len];
            let whole = scan(segment);
            let h = scan_as_the_program_does(segment, b'a');
            assert_eq!(h.ends, whole.ends, "{len}");
            let used = (whole.ends as usize).min(ROUTED_HEADS);
            assert_eq!(
                h.start_at[..used.saturating_sub(1)],
                whole.start_at[..used.saturating_sub(1)],
                "{len}"
            );
        }
    }

    #[test]
    fn blocks_and_words_agree() {
        // A block of one line-end pattern word among plain words, at each
        // of the four places, from every state; and a block of none.
        let plain = u64::from_le_bytes(*b"abcdefgh");
        let mut blocks = vec![[plain; 4]];
        for pattern in [
            *b"abc\r\nxyz",
            *b"\r\n\r\nabcd",
            *b"abcdefg\n",
            *b"\nbcdefgh",
        ] {
            for at in 0..4 {
                let mut block = [plain; 4];
                block[at] = u64::from_le_bytes(pattern);
                blocks.push(block);
            }
        }
        for block in blocks {
            for state in [MID_LINE, LINE_START, LINE_START_CR, IDLE, IDLE_CR] {
                let mut by_block = HeadEnds {
                    state,
                    ..HeadEnds::segment_start()
                };
                let mut by_word = by_block;
                by_block.block(block);
                for w in block {
                    by_word.word(w);
                }
                assert_eq!(by_block, by_word, "{block:x?} from {state}");
            }
        }
    }
}
