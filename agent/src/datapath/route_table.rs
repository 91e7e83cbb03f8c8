//! Building a generation of the kernel's route table
//! (`tollgate_common::route_table`) from the routes it is to hold: each
//! route's entry, a hash seed under which every route fits its bucket, and
//! the per-class length lists. Pure: `datapath::routes` writes the result.

use tollgate_common::{
    route::{ROUTE_KEY_LEN, ROUTE_LINE_LEN, ROUTE_LINE_OFFSET, RouteKey, RouteValue},
    route_table::{
        ROUTE_BUCKET_SLOTS, ROUTE_BUCKETS, ROUTE_CLASS_BYTES, ROUTE_CLASSES, ROUTE_ENTRIES,
        ROUTE_KEY_WORDS, ROUTE_LINE_WORDS, RouteBucket, RouteEntry, RouteHeader, bucket_of,
        class_of, key_probe_hash, line_mask, prefix_hashes,
    },
};

/// A route as the daemon names it: its prefix length in bits (16: a whole
/// port; 48: a whole port for one host; 64 + 8 × n: a request line's first
/// n bytes) and its key bytes (`tollgate_common::route::route_key_for_host`).
pub type RoutePrefix = (u32, RouteKey);

/// Hash seeds tried before the table is declared full.
const SEEDS: u64 = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteTableError {
    #[error(
        "a route prefix of {0} bits is not a route key (16: a port, 48: a host's port, 64 + 8 × n: a request line's first n ≤ {ROUTE_LINE_LEN} bytes)"
    )]
    Prefix(u32),
    #[error("{0} route entries (routes × HTTP ports): the kernel's table holds {ROUTE_ENTRIES}")]
    TooMany(usize),
    #[error(
        "no hash seed of {SEEDS} tried files every one of {0} route entries in a bucket of {ROUTE_BUCKET_SLOTS}"
    )]
    Unplaceable(usize),
}

/// One generation of the table, ready to write.
#[derive(Debug, Clone)]
pub struct BuiltTable {
    pub header: RouteHeader,
    /// Every bucket of the generation ([`ROUTE_BUCKETS`]).
    pub buckets: Vec<RouteBucket>,
    /// The entries in use, by index.
    pub entries: Vec<RouteEntry>,
}

/// The entry of a route: its key words, the line's masked to its length.
pub fn entry_of(
    (bits, key): &RoutePrefix,
    value: &RouteValue,
) -> Result<RouteEntry, RouteTableError> {
    let word = |i: usize| u64::from_le_bytes(key[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let line_bits = (ROUTE_LINE_OFFSET * 8) as u32;
    let (first_mask, len) = match *bits {
        16 => (0xffff, 0),
        48 => (0xffff_ffff_ffff, 0),
        b if b >= line_bits && b % 8 == 0 && b <= (ROUTE_KEY_LEN * 8) as u32 => {
            (u64::MAX, b / 8 - ROUTE_LINE_OFFSET as u32)
        }
        b => return Err(RouteTableError::Prefix(b)),
    };
    let mut words = [0u64; ROUTE_KEY_WORDS];
    let mut masks = [0u64; ROUTE_LINE_WORDS];
    words[0] = word(0) & first_mask;
    for j in 0..ROUTE_LINE_WORDS {
        masks[j] = line_mask(len, j as u32);
        words[1 + j] = word(1 + j) & masks[j];
    }
    Ok(RouteEntry {
        words,
        masks,
        len,
        _reserved: 0,
        value: *value,
    })
}

/// The route an entry holds, as [`entry_of`] took it.
pub fn prefix_of(entry: &RouteEntry) -> RoutePrefix {
    let mut key = [0u8; ROUTE_KEY_LEN];
    for (i, w) in entry.words.iter().enumerate() {
        key[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let bits = match entry.len {
        0 if is_hosted(entry) => 48,
        0 => 16,
        n => (ROUTE_LINE_OFFSET as u32 + n) * 8,
    };
    (bits, key)
}

/// Whether an entry's route names a host (its first word carries a tag).
fn is_hosted(entry: &RouteEntry) -> bool {
    entry.words[0] >> 16 != 0
}

/// The table holding `routes` (at most one per prefix).
pub fn build(routes: &[(RoutePrefix, RouteValue)]) -> Result<BuiltTable, RouteTableError> {
    if routes.len() > ROUTE_ENTRIES as usize {
        return Err(RouteTableError::TooMany(routes.len()));
    }
    let entries = routes
        .iter()
        .map(|(prefix, value)| entry_of(prefix, value))
        .collect::<Result<Vec<_>, _>>()?;
    let mut header = RouteHeader {
        entries: entries.len() as u32,
        ..RouteHeader::default()
    };
    for (kind, hosted) in [false, true].into_iter().enumerate() {
        for class in 0..ROUTE_CLASSES {
            let mut lengths: Vec<u8> = entries
                .iter()
                .filter(|e| is_hosted(e) == hosted)
                .filter(|e| e.len < ROUTE_CLASS_BYTES || class_of(e.words[1]) as usize == class)
                .map(|e| e.len as u8)
                .collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            lengths.dedup();
            let list = &mut header.lengths[kind * ROUTE_CLASSES + class];
            list.count = lengths.len() as u32;
            list.lengths[..lengths.len()].copy_from_slice(&lengths);
        }
    }
    for seed in 0..SEEDS {
        let seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if let Some(buckets) = place(seed, &entries) {
            header.seed = seed;
            return Ok(BuiltTable {
                header,
                buckets,
                entries,
            });
        }
    }
    Err(RouteTableError::Unplaceable(entries.len()))
}

/// The probe hash the kernel computes for an entry's own key.
pub fn entry_hash(seed: u64, entry: &RouteEntry) -> u64 {
    key_probe_hash(&entry.words, &prefix_hashes(seed, &entry.words), entry.len)
}

/// Every entry filed in its bucket under `seed`, or `None` if a bucket
/// overflows.
fn place(seed: u64, entries: &[RouteEntry]) -> Option<Vec<RouteBucket>> {
    let mut buckets = vec![RouteBucket::default(); ROUTE_BUCKETS as usize];
    let mut used = vec![0usize; ROUTE_BUCKETS as usize];
    for (index, entry) in entries.iter().enumerate() {
        let hash = entry_hash(seed, entry);
        let b = bucket_of(hash) as usize;
        let slot = used[b];
        if slot == ROUTE_BUCKET_SLOTS {
            return None;
        }
        buckets[b].checks[slot] = hash;
        buckets[b].entries[slot] = index as u32;
        used[b] += 1;
    }
    Some(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tollgate_common::{
        Limit,
        route::{host_tag, route_key_for_host},
        route_table::entry_matches,
    };

    fn value(index: u32) -> RouteValue {
        RouteValue {
            index,
            cost: 1,
            ceiling: Limit::UNLIMITED,
            flags: 0,
            _reserved: 0,
        }
    }

    /// The kernel's lookup (`tg_route_lookup`), step for step, over a built
    /// table: the route index it finds for a key.
    fn lookup(table: &BuiltTable, key: &RouteKey, hosted: bool) -> Option<u32> {
        let mut words = [0u64; ROUTE_KEY_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from_le_bytes(key[i * 8..i * 8 + 8].try_into().unwrap());
        }
        let prefix = prefix_hashes(table.header.seed, &words);
        let class = class_of(words[1]) as usize;
        let list = &table.header.lengths[hosted as usize * ROUTE_CLASSES + class];
        for &len in &list.lengths[..list.count as usize] {
            let len = len as u32;
            let hash = key_probe_hash(&words, &prefix, len);
            let bucket = &table.buckets[bucket_of(hash) as usize];
            for s in 0..ROUTE_BUCKET_SLOTS {
                let entry = &table.entries.get(bucket.entries[s] as usize);
                if bucket.checks[s] == hash
                    && let Some(entry) = entry
                    && entry.len == len
                    && entry_matches(entry, &words)
                {
                    return Some(entry.value.index);
                }
            }
        }
        None
    }

    /// The longest route whose prefix the key begins with (what the LPM trie
    /// answered), by brute force over the routes.
    fn longest(routes: &[(RoutePrefix, RouteValue)], key: &RouteKey) -> Option<u32> {
        routes
            .iter()
            .filter(|((bits, rk), _)| {
                let n = (*bits / 8) as usize;
                match *bits {
                    16 => rk[..2] == key[..2],
                    48 => rk[..6] == key[..6],
                    _ => rk[..n] == key[..n],
                }
            })
            .max_by_key(|((bits, _), _)| *bits)
            .map(|(_, v)| v.index)
    }

    fn request(port: u16, tag: u32, line: &[u8]) -> RouteKey {
        let line = &line[..line.len().min(ROUTE_LINE_LEN)];
        route_key_for_host(port, tag, line).unwrap().1
    }

    #[test]
    fn the_longest_prefix_wins_and_ports_and_hosts_are_apart() {
        let tag = host_tag(b"api.example.com");
        let routes: Vec<(RoutePrefix, RouteValue)> = [
            (80, 0, &b""[..], 0),
            (80, 0, b"GET /", 1),
            (80, 0, b"GET /api", 2),
            (80, 0, b"GET /api/v1/items", 3),
            (80, 0, b"POST /api", 4),
            (8080, 0, b"GET /api", 5),
            (80, tag, b"GET /api", 6),
            (80, tag, b"", 7),
        ]
        .into_iter()
        .map(|(port, tag, line, index)| {
            (route_key_for_host(port, tag, line).unwrap(), value(index))
        })
        .collect();
        let table = build(&routes).unwrap();
        let at = |port, tag, line: &[u8], hosted| lookup(&table, &request(port, tag, line), hosted);
        assert_eq!(
            at(80, 0, b"GET /api/v1/items?id=7 HTTP/1.1", false),
            Some(3)
        );
        assert_eq!(at(80, 0, b"GET /api/v2 HTTP/1.1", false), Some(2));
        assert_eq!(at(80, 0, b"GET /index.html HTTP/1.1", false), Some(1));
        assert_eq!(at(80, 0, b"PUT /x HTTP/1.1", false), Some(0));
        assert_eq!(at(80, 0, b"POST /api HTTP/1.1", false), Some(4));
        assert_eq!(at(8080, 0, b"GET /api/x HTTP/1.1", false), Some(5));
        assert_eq!(at(8080, 0, b"GET /other HTTP/1.1", false), None);
        assert_eq!(at(80, tag, b"GET /api/x HTTP/1.1", true), Some(6));
        assert_eq!(at(80, tag, b"DELETE /x HTTP/1.1", true), Some(7));
        assert_eq!(at(80, host_tag(b"other"), b"GET /api HTTP/1.1", true), None);
    }

    #[test]
    fn entries_give_back_their_prefixes_and_odd_prefixes_are_refused() {
        for (port, tag, line) in [
            (80u16, 0u32, &b""[..]),
            (443, 9, b""),
            (80, 0, b"GET /a"),
            (81, 3, b"X"),
        ] {
            let prefix = route_key_for_host(port, tag, line).unwrap();
            assert_eq!(prefix_of(&entry_of(&prefix, &value(0)).unwrap()), prefix);
        }
        let (_, key) = route_key_for_host(80, 0, b"GET /").unwrap();
        assert_eq!(
            entry_of(&(24, key), &value(0)),
            Err(RouteTableError::Prefix(24))
        );
        assert_eq!(
            entry_of(&(65, key), &value(0)),
            Err(RouteTableError::Prefix(65))
        );
        assert_eq!(
            entry_of(&(520, key), &value(0)),
            Err(RouteTableError::Prefix(520))
        );
    }

    #[test]
    fn a_full_table_places_every_entry() {
        // Every route on every port: the most the kernel holds.
        let routes: Vec<(RoutePrefix, RouteValue)> = (0..ROUTE_ENTRIES)
            .map(|i| {
                let line = format!("GET /r/{i}");
                (
                    route_key_for_host(80 + (i % 8) as u16, 0, line.as_bytes()).unwrap(),
                    value(i % 256),
                )
            })
            .collect();
        let table = build(&routes).unwrap();
        for ((_, key), v) in routes.iter().take(64) {
            let mut probe = *key;
            probe[ROUTE_LINE_OFFSET + 12] = b'?';
            assert_eq!(lookup(&table, &probe, false), Some(v.index));
        }
        let mut more = routes.clone();
        more.push((route_key_for_host(80, 0, b"GET /x").unwrap(), value(0)));
        assert!(matches!(build(&more), Err(RouteTableError::TooMany(_))));
    }

    fn arb_line() -> impl Strategy<Value = Vec<u8>> {
        // A small alphabet, so that lines share prefixes often.
        prop::collection::vec(
            prop::sample::select(b"GETPOS /a1".to_vec()),
            0..=ROUTE_LINE_LEN,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn lookups_agree_with_the_longest_prefix(
            routes in prop::collection::vec((prop::sample::select(vec![80u16, 81]), prop::sample::select(vec![0u32, 5]), arb_line()), 0..40),
            requests in prop::collection::vec((prop::sample::select(vec![80u16, 81, 82]), prop::sample::select(vec![0u32, 5, 6]), arb_line()), 1..40),
        ) {
            let mut unique = std::collections::BTreeMap::new();
            for (i, (port, tag, line)) in routes.iter().enumerate() {
                unique.insert(route_key_for_host(*port, *tag, line).unwrap(), value(i as u32));
            }
            let routes: Vec<_> = unique.into_iter().collect();
            let table = build(&routes).unwrap();
            for (port, tag, line) in &requests {
                let key = request(*port, *tag, line);
                // A lookup with a host's tag sees only routes of hosts; one
                // without sees only routes without a host.
                let hosted = *tag != 0;
                let kind: Vec<_> = routes
                    .iter()
                    .filter(|((_, k), _)| (k[2..6] != [0; 4]) == hosted)
                    .cloned()
                    .collect();
                prop_assert_eq!(lookup(&table, &key, hosted), longest(&kind, &key));
            }
            prop_assert!(table.entries.len() <= ROUTE_ENTRIES as usize);
        }
    }
}
