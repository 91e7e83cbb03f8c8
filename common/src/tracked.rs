//! The tracked-source filter: which sources the source maps may hold.
//!
//! A spoofed flood's packets come from sources no map holds, and each of
//! them used to pay a lookup in a source map of up to millions of entries
//! (a miss on a random bucket: a cache miss, the largest part of an
//! untracked packet's cost under a flood). The filter answers first, from a
//! bitmap small enough to stay in cache: a clear bit means the source is not
//! tracked, so its lookup is skipped; a set bit means it may be (a bit is
//! shared by many keys, and an evicted source leaves its bit set), and the
//! lookup decides.
//!
//! The filter has two generations of [`filter_bits`] bits each, one hash. A source's bit is set in the current generation before the source is
//! inserted, and again on a later packet if that generation lacks it; a
//! lookup tests both. The daemon ages the filter: every period it clears the
//! older generation and makes it the current one
//! ([`TRACKED_FILTER_GENERATION`]), so a bit lives for one to two periods
//! after its source's last packet. A source that has sent nothing for two
//! periods is judged as new again even if its state is still in the map
//! (the trade-off is in the README). Between two agings the filter has no
//! false negative: every insert and every tracked packet sets its bit first.
//!
//! Layout of `TG_TRACKED` (an array of `u64`): word 0 holds the current
//! generation (its low bit), word 1 the bits per generation as a power of
//! two (written by whoever creates the map, from its size: 0 turns the
//! filter off), then the two generations' words interleaved (word `w` of
//! generation `g` at `2 + 2w + g`, so a lookup's two words share a cache
//! line). The size follows the source maps: [`filter_bits`].

use crate::atomic;

/// Index of the word holding the current generation (its low bit).
pub const TRACKED_FILTER_GENERATION: u32 = 0;
/// Index of the word holding the bits per generation (log2).
pub const TRACKED_FILTER_SIZE: u32 = 1;
/// Smallest and largest filter, in bits per generation (log2): 8 KiB to
/// 8 MiB per generation.
pub const TRACKED_FILTER_MIN_BITS: u32 = 16;
pub const TRACKED_FILTER_MAX_BITS: u32 = 26;
/// Filter bits per source the maps hold: a sustained flood at the default
/// new-source budget (the map's size a minute) marks at most twice the map's
/// size in the one to two minutes a bit lives, so a generation is at most
/// about a quarter full (1 − e^(−2/8) = 22%).
pub const TRACKED_FILTER_BITS_PER_SOURCE: u32 = 8;

/// Bits per generation (log2) for source maps of `max_sources` entries.
pub const fn filter_bits(max_sources: u32) -> u32 {
    let want = (max_sources as u64) * TRACKED_FILTER_BITS_PER_SOURCE as u64;
    let mut bits = TRACKED_FILTER_MIN_BITS;
    while bits < TRACKED_FILTER_MAX_BITS && (1u64 << bits) < want {
        bits += 1;
    }
    bits
}

/// Entries of `TG_TRACKED` for a filter of `bits` bits per generation.
pub const fn filter_entries(bits: u32) -> u32 {
    2 + 2 * (1 << (bits - 6))
}

/// The bits per generation (log2) a filter of `entries` entries holds, if
/// `entries` is a size [`filter_entries`] gives.
pub const fn bits_of_entries(entries: u32) -> Option<u32> {
    let mut bits = TRACKED_FILTER_MIN_BITS;
    while bits <= TRACKED_FILTER_MAX_BITS {
        if filter_entries(bits) == entries {
            return Some(bits);
        }
        bits += 1;
    }
    None
}

/// How many compare-and-swap attempts [`mark`] makes. Each failure needs
/// another CPU to have changed the same word (64 bits of the filter) between
/// the read and the swap.
const MARK_ATTEMPTS: u32 = 8;

/// A source's bit: the word within a generation, and the bit in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterBit {
    pub word: u32,
    pub mask: u64,
}

impl FilterBit {
    /// The bit of an IPv4 source (its `TG_SOURCES_V4` key) in a filter of
    /// `bits` bits per generation (log2, `TRACKED_FILTER_MIN_BITS..=MAX`).
    #[inline(always)]
    pub const fn v4(key: u32, bits: u32) -> FilterBit {
        Self::of(key as u64, bits)
    }

    /// The bit of an IPv6 source (its `TG_SOURCES_V6` key, the grouped prefix).
    #[inline(always)]
    pub const fn v6(key: u64, bits: u32) -> FilterBit {
        // Keeps an IPv6 key whose high half is zero off the IPv4 keys' bits.
        Self::of(key ^ 0x5bd1_e995_0000_0000, bits)
    }

    /// Fibonacci hashing: the top `bits` bits of the key times 2^64/φ.
    #[inline(always)]
    const fn of(key: u64, bits: u32) -> FilterBit {
        let bit = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> ((64 - bits) & 63)) as u32;
        FilterBit {
            word: bit >> 6,
            mask: 1 << (bit & 63),
        }
    }

    /// Index in `TG_TRACKED` of this bit's word in `generation` (0 or 1).
    #[inline(always)]
    pub const fn index(self, generation: u64) -> u32 {
        word_index(self.word, generation)
    }
}

/// Index in `TG_TRACKED` of word `word` of `generation` (0 or 1).
#[inline(always)]
pub const fn word_index(word: u32, generation: u64) -> u32 {
    2 + ((word << 1) | (generation & 1) as u32)
}

/// Sets `mask` in `*word` unless it is set: one read when it is, one
/// compare-and-swap (at most [`MARK_ATTEMPTS`]) when it is not. Returns
/// whether the bit is set afterwards.
///
/// # Safety
/// `word` must be valid and naturally aligned, and every concurrent writer
/// must use the crate's atomics (or the daemon's whole-word writes of zero).
#[inline(always)]
pub unsafe fn mark(word: *mut u64, mask: u64) -> bool {
    // SAFETY: as the caller guarantees.
    let mut current = unsafe { atomic::load_u64(word) };
    let mut attempt = 0;
    while attempt < MARK_ATTEMPTS {
        if current & mask != 0 {
            return true;
        }
        match unsafe { atomic::cas_u64(word, current, current | mask) } {
            Ok(_) => return true,
            Err(seen) => current = seen,
        }
        attempt += 1;
    }
    current & mask != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_stay_inside_the_filter() {
        for bits in TRACKED_FILTER_MIN_BITS..=TRACKED_FILTER_MAX_BITS {
            for key in [0u64, 1, 0xffff_ffff, u64::MAX, 0x2001_0db8_0000_0001] {
                for bit in [FilterBit::v6(key, bits), FilterBit::v4(key as u32, bits)] {
                    assert!(bit.word < 1 << (bits - 6));
                    assert_eq!(bit.mask.count_ones(), 1);
                    assert!(bit.index(1) < filter_entries(bits));
                    assert!(bit.index(0) > TRACKED_FILTER_SIZE);
                    // Both generations' words are neighbours: one cache line.
                    assert_eq!(bit.index(0) + 1, bit.index(1));
                    assert_eq!(bit.index(0) / 8, bit.index(1) / 8);
                }
            }
            assert_eq!(bits_of_entries(filter_entries(bits)), Some(bits));
        }
        assert_eq!(bits_of_entries(12345), None);
    }

    #[test]
    fn the_filter_follows_the_source_maps() {
        assert_eq!(filter_bits(1), TRACKED_FILTER_MIN_BITS);
        assert_eq!(filter_bits(65_536), 19);
        assert_eq!(filter_bits(1 << 20), 23);
        assert_eq!(filter_bits(u32::MAX), TRACKED_FILTER_MAX_BITS);
    }

    #[test]
    fn consecutive_addresses_spread_over_words() {
        // A /16 of consecutive IPv4 keys must not pile into a few words.
        let mut words = std::collections::HashSet::new();
        for i in 0..65_536u32 {
            words.insert(FilterBit::v4(0x0a00_0000 + i, 20).word);
        }
        assert!(words.len() > 10_000, "{} distinct words", words.len());
    }

    #[test]
    fn mark_sets_once_and_keeps_other_bits() {
        let mut word = 0b1010u64;
        assert!(unsafe { mark(&mut word, 0b0100) });
        assert_eq!(word, 0b1110);
        assert!(unsafe { mark(&mut word, 0b0100) });
        assert_eq!(word, 0b1110);
    }
}
