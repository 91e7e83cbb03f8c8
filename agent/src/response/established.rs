//! Who holds (or recently held) a TCP connection to a local HTTP port, from
//! the host's TCP stack (`/proc/net/tcp` and `/proc/net/tcp6` of the daemon's
//! network namespace).
//!
//! XDP sees a segment carrying `GET /` but not whether it belongs to an
//! established connection: a spoofer can send lone request segments with a
//! forged source. A socket past the handshake (ESTABLISHED, or closing:
//! FIN_WAIT, TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING) proves the peer
//! answered our SYN-ACK, which a blind spoofer cannot do.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// TCP states (include/net/tcp_states.h) a socket reaches only after the
/// three-way handshake completed.
const AFTER_HANDSHAKE: [u8; 8] = [
    1,  // ESTABLISHED
    4,  // FIN_WAIT1
    5,  // FIN_WAIT2
    6,  // TIME_WAIT
    7,  // CLOSE
    8,  // CLOSE_WAIT
    9,  // LAST_ACK
    11, // CLOSING
];

/// The remote addresses of sockets past the handshake whose local port is
/// one of `ports`, read from the TCP stack now.
pub fn peers(ports: &[u16]) -> io::Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(path) {
            Ok(text) => out.extend(parse(&text, ports)),
            // A kernel without IPv6 has no tcp6.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Parses one `/proc/net/tcp{,6}` table.
pub fn parse(text: &str, ports: &[u16]) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace().skip(1);
            let (local, remote, state) = (f.next()?, f.next()?, f.next()?);
            let state = u8::from_str_radix(state, 16).ok()?;
            if !AFTER_HANDSHAKE.contains(&state) {
                return None;
            }
            let (_, port) = endpoint(local)?;
            if !ports.contains(&port) {
                return None;
            }
            Some(endpoint(remote)?.0)
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word printed as a number in host byte order.
fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            // A v4-mapped peer of a dual-stack socket is the IPv4 source.
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn reads_peers_of_sockets_past_the_handshake_on_the_ports() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0A01A8C0:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F90 0B01A8C0:C351 03 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:1F90 0C01A8C0:C352 06 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   4: 0100007F:0016 0D01A8C0:C353 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";
        let got = parse(v4, &[8080]);
        // LISTEN (0A), SYN_RECV (03) and other ports are left out.
        assert_eq!(
            got,
            vec![
                "192.168.1.10".parse::<IpAddr>().unwrap(),
                "192.168.1.12".parse().unwrap()
            ]
        );
        let v6 =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000A01A8C0:D431 01 0
   1: 00000000000000000000000001000000:1F90 B80D0120000000000000000001000000:D432 08 0
";
        let got = parse(v6, &[8080]);
        assert_eq!(
            got,
            vec![
                "192.168.1.10".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
    }
}
