//! Recognising the first packet of an HTTP/1.x request from its payload's first
//! bytes: a method token followed by a space (RFC 9110 methods).

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
}
