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
use tollgate_common::tracked::{
    TRACKED_FILTER_GENERATION, TRACKED_FILTER_SIZE, bits_of_entries, word_index,
};

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
    /// Bits per generation.
    pub bits: u64,
}

/// Bits per generation of the filter, 0 while it is off.
pub fn bits(filter: &Array<MapData, u64>) -> Result<u64, MapError> {
    Ok(u64::from(words(filter)?) * 64)
}

/// Writes the filter's size word from the map's real size (a fresh map, or
/// a pinned one made by another build), which turns the filter on. A map
/// whose size is not a filter size keeps the filter off (every packet looks
/// its source up, as without a filter).
pub fn init(filter: &mut Array<MapData, u64>) -> Result<Option<u32>, MapError> {
    let Some(bits) = bits_of_entries(filter.len()) else {
        return Ok(None);
    };
    if filter.get(&TRACKED_FILTER_SIZE, 0)? != u64::from(bits) {
        filter.set(TRACKED_FILTER_SIZE, u64::from(bits), 0)?;
    }
    Ok(Some(bits))
}

/// Words cleared per [`Ageing::step`]: the daemon ages the filter in
/// chunks, releasing its lock between them (a whole default-sized filter,
/// 131,072 words a generation, takes about 0.1–0.6 s of map syscalls).
pub const AGING_CHUNK: u32 = 4096;

/// An ageing in progress: the older generation cleared a chunk at a time,
/// then made current. The kernel marks only the current generation, so
/// nothing writes to the words being cleared meanwhile.
#[derive(Debug, Default)]
pub struct Ageing {
    next_word: u32,
    cleared_bits: u64,
}

impl Ageing {
    /// One step: the next [`AGING_CHUNK`] words of the older generation, or,
    /// past the last, the flip that makes it current (`Some`: done).
    pub fn step(&mut self, filter: &mut Array<MapData, u64>) -> Result<Option<Aged>, MapError> {
        let words = words(filter)?;
        let older = (filter.get(&TRACKED_FILTER_GENERATION, 0)? & 1) ^ 1;
        if self.next_word < words {
            let end = self.next_word.saturating_add(AGING_CHUNK).min(words);
            for word in self.next_word..end {
                let index = word_index(word, older);
                let set = filter.get(&index, 0)?;
                if set != 0 {
                    filter.set(index, 0, 0)?;
                    self.cleared_bits += u64::from(set.count_ones());
                }
            }
            self.next_word = end;
            return Ok(None);
        }
        filter.set(TRACKED_FILTER_GENERATION, older, 0)?;
        Ok(Some(Aged {
            generation: older,
            cleared_bits: self.cleared_bits,
            bits: u64::from(words) * 64,
        }))
    }
}

/// Words per generation of a filter that is on, else 0 (off: nothing to
/// clear, only the flip).
fn words(filter: &Array<MapData, u64>) -> Result<u32, MapError> {
    let bits = filter.get(&TRACKED_FILTER_SIZE, 0)?;
    Ok(match bits_of_entries(filter.len()) {
        Some(b) if u64::from(b) == bits => 1u32 << (b - 6),
        _ => 0,
    })
}

/// Clears the older generation and makes it current, in one go (the daemon
/// takes the same steps with its lock released between them).
pub fn age(filter: &mut Array<MapData, u64>) -> Result<Aged, MapError> {
    let mut ageing = Ageing::default();
    loop {
        if let Some(aged) = ageing.step(filter)? {
            return Ok(aged);
        }
    }
}
