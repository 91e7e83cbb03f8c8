//! The route table: how the kernel finds a request's route, longest prefix
//! first, with a few hash probes instead of an LPM trie walk.
//!
//! A route is a [`RouteKey`](crate::route::RouteKey) and a length: the key's
//! first word (port, host tag, padding; see [`crate::route`]) and the first
//! `len` bytes (0..=[`ROUTE_LINE_LEN`]) of its request line. The daemon
//! writes every route as a [`RouteEntry`], files it in the [`RouteBucket`]
//! its [`probe_hash`] names, and lists for every [`RouteHeader`] class the
//! distinct lengths of the routes a request of that class can match, longest
//! first. The kernel, for a request line, probes those lengths in order: at
//! each, one hash of the line's prefix of that length, one bucket, and on a
//! matching check a compare of the entry's words with the line's (so a hash
//! collision never routes a request wrongly). The first hit is the longest
//! matching prefix, as the trie's answer was.
//!
//! The class of a request is a hash of its line's first four bytes (the
//! method and what follows it): a `GET` request probes only the lengths of
//! routes that begin with its four bytes (and of routes shorter than four
//! bytes, which are in every class), not those of `POST` or `DELETE` routes.
//! Routes that name a host have their own lists: the kernel probes them with
//! the Host header's tag in the first word, before the lists without a host.
//!
//! There are two generations of everything (header, buckets, entries): the
//! daemon writes the one not in use and then flips
//! [`crate::SETTINGS_ROUTE_TABLE`], so a packet never sees a half-written
//! table.

use crate::route::{ROUTE_KEY_LEN, ROUTE_LINE_LEN, RouteValue};

/// Words of a route key: the first (port, host tag, padding), then the line's.
pub const ROUTE_KEY_WORDS: usize = ROUTE_KEY_LEN / 8;
/// Request-line words of a key.
pub const ROUTE_LINE_WORDS: usize = ROUTE_KEY_WORDS - 1;
/// Request classes (by the line's first four bytes), per kind of list.
pub const ROUTE_CLASSES: usize = 16;
/// Line lengths a route can have: 0 (a whole port) ..= [`ROUTE_LINE_LEN`].
pub const ROUTE_LENGTHS: usize = ROUTE_LINE_LEN + 1;
/// Entries of one bucket.
pub const ROUTE_BUCKET_SLOTS: usize = 4;
/// Buckets of one generation (a power of two).
pub const ROUTE_BUCKETS: u32 = 4096;
/// Entries of one generation: every route on every HTTP port.
pub const ROUTE_ENTRIES: u32 = crate::route::MAX_ROUTES * crate::MAX_HTTP_PORTS as u32;
/// Generations of the table (the one in use, the one being written).
pub const ROUTE_GENERATIONS: u32 = 2;

/// One class's list of line lengths, longest first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteLengths {
    /// Lengths in `lengths` (at most [`ROUTE_LENGTHS`]).
    pub count: u32,
    pub lengths: [u8; 60],
}

impl Default for RouteLengths {
    fn default() -> Self {
        RouteLengths {
            count: 0,
            lengths: [0; 60],
        }
    }
}

/// A generation's header: the hash seed, the entries in use, and the length
/// lists, without a host (`lengths[class]`) and with one
/// (`lengths[ROUTE_CLASSES + class]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteHeader {
    /// Mixed into every hash; the daemon picks one under which no bucket
    /// overflows.
    pub seed: u64,
    /// Entries `0..entries` of the generation hold routes.
    pub entries: u32,
    pub _reserved: u32,
    pub lengths: [RouteLengths; 2 * ROUTE_CLASSES],
}

impl Default for RouteHeader {
    fn default() -> Self {
        RouteHeader {
            seed: 0,
            entries: 0,
            _reserved: 0,
            lengths: [RouteLengths::default(); 2 * ROUTE_CLASSES],
        }
    }
}

/// A bucket: up to [`ROUTE_BUCKET_SLOTS`] routes, each by its probe hash
/// (never 0: 0 is a free slot) and its entry's index in the generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteBucket {
    pub checks: [u64; ROUTE_BUCKET_SLOTS],
    pub entries: [u32; ROUTE_BUCKET_SLOTS],
}

/// A route: its key words (the line's masked to its length, zeros after),
/// the masks of its line words ([`line_mask`]), its line length and its
/// value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteEntry {
    pub words: [u64; ROUTE_KEY_WORDS],
    pub masks: [u64; ROUTE_LINE_WORDS],
    pub len: u32,
    pub _reserved: u32,
    pub value: RouteValue,
}

/// One step of the hash: a multiply, whose high bits pick the bucket. Not
/// keyed against an adversary, and it need not be: a match is always
/// confirmed word by word, so a collision costs a compare, never a wrong
/// route.
#[inline(always)]
pub const fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The hash of a key's first word and its first `k` line words, for `k` in
/// `0..=ROUTE_LINE_WORDS`, into `prefix[k]` (the kernel's lives in a map
/// value, so it is written in place).
#[inline(always)]
pub fn prefix_hashes_into(
    seed: u64,
    words: &[u64; ROUTE_KEY_WORDS],
    prefix: &mut [u64; ROUTE_KEY_WORDS],
) {
    let mut h = mix(seed, words[0]);
    prefix[0] = h;
    let mut k = 1;
    while k < ROUTE_KEY_WORDS {
        h = mix(h, words[k]);
        prefix[k] = h;
        k += 1;
    }
}

/// [`prefix_hashes_into`] a new array.
#[inline(always)]
pub fn prefix_hashes(seed: u64, words: &[u64; ROUTE_KEY_WORDS]) -> [u64; ROUTE_KEY_WORDS] {
    let mut prefix = [0u64; ROUTE_KEY_WORDS];
    prefix_hashes_into(seed, words, &mut prefix);
    prefix
}

/// The probe hash of the prefix of `len` line bytes of a key whose prefix
/// hashes are `prefix` ([`prefix_hashes_into`]); `len` at most
/// [`ROUTE_LINE_LEN`].
#[inline(always)]
pub fn key_probe_hash(
    words: &[u64; ROUTE_KEY_WORDS],
    prefix: &[u64; ROUTE_KEY_WORDS],
    len: u32,
) -> u64 {
    let full = (len / 8) as usize & (ROUTE_KEY_WORDS - 1);
    // The line word `full` masked to its first `len % 8` bytes, without a
    // branch: the mask is 0 when `len % 8` is 0 (and so for `len` = 56,
    // where the word read is the key's first, wrapped around).
    let tail = words[(1 + full) & (ROUTE_KEY_WORDS - 1)] & ((1u64 << ((len & 7) * 8)) - 1);
    probe_hash(prefix[full], tail, len)
}

/// Whether an entry's route is the key's first word and its line's first
/// bytes (the entry's line words are masked to its length, and its masks
/// say how): one compare at the end, no branch per word.
#[inline(always)]
pub fn entry_matches(entry: &RouteEntry, words: &[u64; ROUTE_KEY_WORDS]) -> bool {
    let mut diff = entry.words[0] ^ words[0];
    let mut j = 0;
    while j < ROUTE_LINE_WORDS {
        diff |= (words[1 + j] & entry.masks[j]) ^ entry.words[1 + j];
        j += 1;
    }
    diff == 0
}

/// The mask of line word `j` for a prefix of `len` line bytes (little-endian:
/// the word's first byte is its lowest).
#[inline(always)]
pub const fn line_mask(len: u32, j: u32) -> u64 {
    let from = j * 8;
    if len >= from + 8 {
        u64::MAX
    } else if len <= from {
        0
    } else {
        (1u64 << ((len - from) * 8)) - 1
    }
}

/// The probe hash of a line prefix of `len` bytes: `prefix` is
/// `prefix_hashes(..)[len / 8]`, `tail` the line word `len / 8` masked to the
/// prefix (0 when `len` is [`ROUTE_LINE_LEN`]). Never 0.
#[inline(always)]
pub const fn probe_hash(prefix: u64, tail: u64, len: u32) -> u64 {
    // A masked tail has at most seven bytes: its top byte carries the length.
    let h = mix(prefix, tail | ((len as u64) << 56));
    // One fold and multiply more, so every input bit reaches the high bits
    // that pick the bucket.
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1
}

/// A probe hash's bucket in a generation: its high bits, the ones a
/// multiply mixes best.
#[inline(always)]
pub const fn bucket_of(hash: u64) -> u32 {
    ((hash >> 40) as u32) & (ROUTE_BUCKETS - 1)
}

/// The class of a request line by its first line word (its first four bytes).
#[inline(always)]
pub const fn class_of(line_word: u64) -> u32 {
    (((line_word & 0xffff_ffff).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 60) as u32
}

/// Line bytes that decide a class: a route shorter than this is in every class.
pub const ROUTE_CLASS_BYTES: u32 = 4;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] plain integers.
    unsafe impl aya::Pod for RouteLengths {}
    unsafe impl aya::Pod for RouteHeader {}
    unsafe impl aya::Pod for RouteBucket {}
    unsafe impl aya::Pod for RouteEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_masks_cover_exactly_the_prefix() {
        assert_eq!(line_mask(0, 0), 0);
        assert_eq!(line_mask(3, 0), 0x00ff_ffff);
        assert_eq!(line_mask(8, 0), u64::MAX);
        assert_eq!(line_mask(8, 1), 0);
        assert_eq!(line_mask(9, 1), 0xff);
        assert_eq!(line_mask(56, 6), u64::MAX);
        for len in 0..=ROUTE_LINE_LEN as u32 {
            let bytes: u32 = (0..ROUTE_LINE_WORDS as u32)
                .map(|j| line_mask(len, j).count_ones() / 8)
                .sum();
            assert_eq!(bytes, len);
        }
    }

    #[test]
    fn probe_hashes_tell_lengths_apart_and_are_never_zero() {
        let words = [80u64, u64::from_le_bytes(*b"GET /api"), 0, 0, 0, 0, 0, 0];
        let p = prefix_hashes(7, &words);
        // "GET /api" as 8 bytes, and as the first 8 of a longer prefix whose
        // ninth byte is zero: different lengths, different hashes.
        let eight = probe_hash(p[1], 0, 8);
        let nine = probe_hash(p[1], 0, 9);
        assert_ne!(eight, nine);
        assert_ne!(eight, 0);
        assert_eq!(probe_hash(0, 0, 0) & 1, 1);
    }

    #[test]
    fn the_class_is_the_first_four_bytes() {
        let a = u64::from_le_bytes(*b"GET /api");
        let b = u64::from_le_bytes(*b"GET /xyz");
        assert_eq!(class_of(a), class_of(b));
        assert!(class_of(a) < ROUTE_CLASSES as u32);
    }
}
