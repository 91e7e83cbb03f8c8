//! Ageing of the tracked-source filter (`TG_TRACKED`, `common::tracked`).
//!
//! The kernel sets a source's bit in the filter's current generation before
//! it tracks the source and on its later packets; the filter lets a packet
//! from a source no map holds skip the source-map lookup (the costly part of
//! a spoofed flood's packets). Bits of sources that left would pile up and
//! make the filter useless, so every [`AGING_PERIOD`] the daemon clears the
//! older generation and makes it the current one: a source's bit lives for
//! one to two periods after its last packet. Only the generation no packet
//! writes to is cleared, so no bit a packet sets is lost.

use std::time::Duration;

use aya::maps::{Array, MapData, MapError};
use tollgate_common::tracked::{TRACKED_FILTER_GENERATION, TRACKED_FILTER_WORDS, word_index};

/// How often the daemon ages the filter. A source silent for twice this long
/// is judged like a new one when it comes back (its state, if still in the
/// map, is found again once it is admitted: README, "Spoofed floods").
pub const AGING_PERIOD: Duration = Duration::from_secs(60);

/// What one ageing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aged {
    /// The generation now current (0 or 1).
    pub generation: u64,
    /// Bits cleared: sources (or bit-sharing groups of them) not seen for
    /// one to two periods.
    pub cleared_bits: u64,
}

/// Clears the older generation and makes it current. The kernel marks only
/// the current generation, so nothing writes to the words being cleared.
pub fn age(filter: &mut Array<MapData, u64>) -> Result<Aged, MapError> {
    let current = filter.get(&TRACKED_FILTER_GENERATION, 0)? & 1;
    let older = current ^ 1;
    let mut cleared_bits = 0;
    for word in 0..TRACKED_FILTER_WORDS {
        let index = word_index(word, older);
        let bits = filter.get(&index, 0)?;
        if bits != 0 {
            filter.set(index, 0, 0)?;
            cleared_bits += u64::from(bits.count_ones());
        }
    }
    filter.set(TRACKED_FILTER_GENERATION, older, 0)?;
    Ok(Aged {
        generation: older,
        cleared_bits,
    })
}
