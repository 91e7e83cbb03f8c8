//! Decoding the records the XDP program writes into `TG_SAMPLES`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tollgate_common::{SAMPLE_FLAG_REQUEST, SAMPLE_HTTP, SAMPLE_VERDICT, SampleHeader, Verdict};

/// One decoded ring-buffer record, borrowing its payload from the ring.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub header: SampleHeader,
    pub payload: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a sample header")]
    Short(usize),
    #[error("record kind {0} is unknown")]
    Kind(u8),
    #[error("record claims {claimed} payload bytes but carries {carried}")]
    Payload { claimed: usize, carried: usize },
    #[error("address family {0} is unknown")]
    Family(u8),
    #[error("verdict {0} is unknown")]
    Verdict(u8),
}

impl<'a> Sample<'a> {
    /// Decodes one record; never trusts the lengths it carries.
    pub fn decode(record: &'a [u8]) -> Result<Sample<'a>, DecodeError> {
        let size = std::mem::size_of::<SampleHeader>();
        if record.len() < size {
            return Err(DecodeError::Short(record.len()));
        }
        // SAFETY: length checked; SampleHeader is plain integers, any bits valid.
        let header: SampleHeader =
            unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<SampleHeader>()) };
        if header.kind != SAMPLE_HTTP && header.kind != SAMPLE_VERDICT {
            return Err(DecodeError::Kind(header.kind));
        }
        if header.family != 4 && header.family != 6 {
            return Err(DecodeError::Family(header.family));
        }
        if header.verdict as usize >= Verdict::ALL.len() {
            return Err(DecodeError::Verdict(header.verdict));
        }
        let claimed = header.captured as usize;
        let carried = record.len() - size;
        if claimed > carried {
            return Err(DecodeError::Payload { claimed, carried });
        }
        Ok(Sample {
            header,
            payload: &record[size..size + claimed],
        })
    }

    pub fn source(&self) -> IpAddr {
        let s = self.header.src;
        if self.header.family == 4 {
            IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(s))
        }
    }

    pub fn verdict(&self) -> Verdict {
        Verdict::ALL[self.header.verdict as usize]
    }

    pub fn is_http(&self) -> bool {
        self.header.kind == SAMPLE_HTTP
    }

    pub fn is_request(&self) -> bool {
        self.header.flags & SAMPLE_FLAG_REQUEST != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(h: SampleHeader, payload: &[u8], pad: usize) -> Vec<u8> {
        let mut v = vec![0u8; std::mem::size_of::<SampleHeader>()];
        // SAFETY: v is large enough.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<SampleHeader>(), h) };
        v.extend_from_slice(payload);
        v.extend(std::iter::repeat_n(0, pad));
        v
    }

    #[test]
    fn decodes_and_bounds_payload() {
        let h = SampleHeader {
            kind: SAMPLE_HTTP,
            family: 4,
            src: [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            captured: 5,
            ..Default::default()
        };
        let r = record(h, b"GET /", 100);
        let s = Sample::decode(&r).unwrap();
        assert_eq!(s.payload, b"GET /");
        assert_eq!(s.source(), "10.1.2.3".parse::<IpAddr>().unwrap());
        let lying = SampleHeader { captured: 500, ..h };
        assert!(matches!(
            Sample::decode(&record(lying, b"x", 0)),
            Err(DecodeError::Payload { .. })
        ));
        assert!(matches!(
            Sample::decode(&[0u8; 3]),
            Err(DecodeError::Short(3))
        ));
    }
}
