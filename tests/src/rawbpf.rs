//! Hand-assembled BPF programs for the flood benchmark, loaded and run with
//! raw `bpf(2)` calls: the generator's redirecting program, and a reference
//! XDP program that reads the source address and drops (a floor that touches
//! the packet the way any filter must). Not part of tollgate's object: the
//! benchmark owns them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

/// A raw `bpf(2)` call.
fn bpf(cmd: libc::c_long, attr: *mut libc::c_void, size: usize) -> std::io::Result<i64> {
    // SAFETY: `attr` points at `size` initialised bytes the kernel may read and write.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size as libc::c_uint) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

// Opcodes used below.
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_REG: u8 = 0x0f;
const ADD64_IMM: u8 = 0x07;
const AND64_IMM: u8 = 0x57;
const RSH64_IMM: u8 = 0x77;
const XOR64_IMM: u8 = 0xa7;
const LDXW: u8 = 0x61;
const LDXH: u8 = 0x69;
const STXB: u8 = 0x73;
const STXW: u8 = 0x63;
const STXH: u8 = 0x6b;
const STH: u8 = 0x6a;
const JGT_REG: u8 = 0x2d;
const JEQ_IMM: u8 = 0x15;
const JGE_IMM: u8 = 0x35;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const GET_PRANDOM_U32: i32 = 7;
const REDIRECT: i32 = 23;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;

/// One BPF instruction.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst | (src << 4)) as u64) << 8)
        | (((off as u16) as u64) << 16)
        | (((imm as u32) as u64) << 32)
}

/// Loads the packet bounds and jumps to the (patched) last two instructions
/// unless `len` bytes are there: r2 = data, r3 = data_end.
fn bounds(p: &mut Vec<u64>, ctx: u8, len: i32) -> usize {
    p.push(insn(LDXW, 2, ctx, 0, 0)); // r2 = data
    p.push(insn(LDXW, 3, ctx, 4, 0)); // r3 = data_end
    p.push(insn(MOV64_REG, 4, 2, 0, 0)); // r4 = data
    p.push(insn(ADD64_IMM, 4, 0, 0, len)); // r4 += len
    p.push(insn(JGT_REG, 4, 3, 0, 0)); // if r4 > r3 goto out (patched)
    p.len() - 1
}

fn patch_jump(p: &mut [u64], at: usize, to: usize) {
    p[at] = (p[at] & !(0xffff << 16)) | (((((to - at - 1) as i16) as u16) as u64) << 16);
}

/// How the generator's program spoofs each frame's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoof {
    /// A random last octet of the template's IPv4 source: 256 sources.
    LastOctet,
    /// A random IPv4 source over the whole 32-bit space.
    V4,
    /// A random IPv6 /64 (the template's source must have its first 64 bits
    /// zero): bits 0..32 random, bits 32..64 their ones' complement, so the
    /// 16-bit ones'-complement sum of the address, and with it the UDP
    /// checksum, is unchanged. 2^32 distinct /64s.
    V6Prefix,
}

/// The generator's XDP program: gives each frame a random source (see
/// [`Spoof`]), rewrites the IPv4 header checksum for IPv4, and redirects the
/// frame out of `ifindex`.
pub fn redirect_program(ifindex: u32, spoof: Spoof) -> Vec<u64> {
    redirect_program_thinned(ifindex, spoof, THIN_ALL)
}

/// [`redirect_program_thinned`]'s `keep` that keeps every frame.
pub const THIN_ALL: u32 = 1 << 16;

/// [`redirect_program`] redirecting a random `keep` in 65,536 of the frames
/// it runs on and dropping the rest (dropped frames never reach the
/// interface): the redirected frames are spread evenly over the run.
pub fn redirect_program_thinned(ifindex: u32, spoof: Spoof, keep: u32) -> Vec<u64> {
    let mut p = vec![insn(MOV64_REG, 6, 1, 0, 0)]; // r6 = ctx
    let thin = (keep < THIN_ALL).then(|| {
        p.push(insn(CALL, 0, 0, 0, GET_PRANDOM_U32)); // r0 = random
        p.push(insn(AND64_IMM, 0, 0, 0, 0xffff)); // r0 &= 0xffff
        p.push(insn(JGE_IMM, 0, 0, 0, keep as i32)); // if r0 >= keep goto out (patched)
        p.len() - 1
    });
    p.extend([
        insn(CALL, 0, 0, 0, GET_PRANDOM_U32), // r0 = random
        insn(MOV64_REG, 7, 0, 0, 0),          // r7 = r0
    ]);
    let jump = match spoof {
        Spoof::LastOctet | Spoof::V4 => {
            let jump = bounds(&mut p, 6, 34); // Ethernet + IPv4
            if spoof == Spoof::LastOctet {
                p.push(insn(STXB, 2, 7, 29, 0)); // source's last octet = r7
            } else {
                p.push(insn(STXW, 2, 7, 26, 0)); // source = r7
            }
            p.push(insn(STH, 2, 0, 24, 0)); // checksum = 0
            p.push(insn(MOV64_IMM, 0, 0, 0, 0)); // r0 = 0
            for off in (14..34).step_by(2) {
                p.push(insn(LDXH, 5, 2, off, 0)); // r5 = header word
                p.push(insn(ADD64_REG, 0, 5, 0, 0)); // r0 += r5
            }
            for _ in 0..2 {
                p.push(insn(MOV64_REG, 5, 0, 0, 0));
                p.push(insn(RSH64_IMM, 5, 0, 0, 16));
                p.push(insn(AND64_IMM, 0, 0, 0, 0xffff));
                p.push(insn(ADD64_REG, 0, 5, 0, 0));
            }
            p.push(insn(XOR64_IMM, 0, 0, 0, 0xffff)); // r0 = ~sum
            p.push(insn(STXH, 2, 0, 24, 0)); // checksum = r0
            jump
        }
        Spoof::V6Prefix => {
            let jump = bounds(&mut p, 6, 54); // Ethernet + IPv6
            p.push(insn(STXW, 2, 7, 22, 0)); // source bits 0..32 = r7
            p.push(insn(XOR64_IMM, 7, 0, 0, -1)); // r7 = !r7
            p.push(insn(STXW, 2, 7, 26, 0)); // source bits 32..64 = !r7
            jump
        }
    };
    p.push(insn(MOV64_IMM, 1, 0, 0, ifindex as i32));
    p.push(insn(MOV64_IMM, 2, 0, 0, 0));
    p.push(insn(CALL, 0, 0, 0, REDIRECT)); // r0 = XDP_REDIRECT
    p.push(insn(EXIT, 0, 0, 0, 0));
    let out = p.len();
    p.push(insn(MOV64_IMM, 0, 0, 0, XDP_DROP));
    p.push(insn(EXIT, 0, 0, 0, 0));
    patch_jump(&mut p, jump, out);
    if let Some(thin) = thin {
        patch_jump(&mut p, thin, out);
    }
    p
}

/// A reference receiver: reads the IPv4 source address (what any per-source
/// filter must read first), then drops — XDP_PASS only for 0.0.0.0, so the
/// load cannot be optimised away.
pub fn read_source_and_drop_program() -> Vec<u64> {
    let mut p = Vec::new();
    let jump = bounds(&mut p, 1, 34);
    p.push(insn(LDXW, 5, 2, 26, 0)); // r5 = IPv4 source
    p.push(insn(MOV64_IMM, 0, 0, 0, XDP_DROP));
    p.push(insn(JEQ_IMM, 5, 0, 1, 0)); // if r5 == 0 goto pass
    p.push(insn(EXIT, 0, 0, 0, 0));
    p.push(insn(MOV64_IMM, 0, 0, 0, XDP_PASS));
    p.push(insn(EXIT, 0, 0, 0, 0));
    let out = p.len();
    p.push(insn(MOV64_IMM, 0, 0, 0, XDP_PASS)); // too short: not ours to judge
    p.push(insn(EXIT, 0, 0, 0, 0));
    patch_jump(&mut p, jump, out);
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Loads an XDP program (GPL, since `bpf_redirect` needs it).
pub fn load_xdp(insns: &[u64], name: &str) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    let fd = bpf(
        BPF_PROG_LOAD,
        &mut attr as *mut ProgLoadAttr as *mut libc::c_void,
        std::mem::size_of::<ProgLoadAttr>(),
    )
    .map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        anyhow::anyhow!(
            "loading BPF program {name}: {e}\n{}",
            String::from_utf8_lossy(&log[..end])
        )
    })?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs an XDP program over `repeat` live frames built from `frame`
/// (BPF_F_TEST_XDP_LIVE_FRAMES, batches of 256). Returns the kernel's mean ns
/// per frame.
pub fn test_run_live(prog: &OwnedFd, frame: &[u8], repeat: u32) -> Result<u32> {
    test_run_live_batched(prog, frame, repeat, 256)
}

/// [`test_run_live`] with `batch_size` frames per redirect flush (the kernel
/// hands each flush to the target device at once).
pub fn test_run_live_batched(
    prog: &OwnedFd,
    frame: &[u8],
    repeat: u32,
    batch_size: u32,
) -> Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    bpf(
        BPF_PROG_TEST_RUN,
        &mut attr as *mut TestRunAttr as *mut libc::c_void,
        std::mem::size_of::<TestRunAttr>(),
    )
    .context("BPF_PROG_TEST_RUN (live frames)")?;
    Ok(attr.duration)
}

/// Attaches an XDP program natively (driver mode) to `ifindex` with a BPF
/// link; closing the returned fd detaches it.
pub fn attach_xdp_native(prog: &OwnedFd, ifindex: u32) -> Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    let fd = bpf(
        BPF_LINK_CREATE,
        &mut attr as *mut LinkCreateAttr as *mut libc::c_void,
        std::mem::size_of::<LinkCreateAttr>(),
    )
    .context("BPF_LINK_CREATE (XDP, driver mode)")?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jump_target(p: &[u64], at: usize) -> usize {
        let off = ((p[at] >> 16) & 0xffff) as u16 as i16;
        (at as isize + 1 + off as isize) as usize
    }

    #[test]
    fn redirect_program_jumps_to_its_drop_exit() {
        for spoof in [Spoof::LastOctet, Spoof::V4, Spoof::V6Prefix] {
            let p = redirect_program(7, spoof);
            let at = p.iter().position(|i| i & 0xff == JGT_REG as u64).unwrap();
            assert_eq!(jump_target(&p, at), p.len() - 2);
            assert_eq!(p[p.len() - 2], insn(MOV64_IMM, 0, 0, 0, XDP_DROP));
            assert!(p.contains(&insn(MOV64_IMM, 1, 0, 0, 7)));
        }
        // The IPv6 form keeps the address's ones'-complement sum: r and !r.
        let p = redirect_program(7, Spoof::V6Prefix);
        assert!(p.contains(&insn(STXW, 2, 7, 22, 0)) && p.contains(&insn(STXW, 2, 7, 26, 0)));
        assert!(p.contains(&insn(XOR64_IMM, 7, 0, 0, -1)));
        // Thinned: a first random draw jumps to the same drop exit.
        assert_eq!(
            redirect_program_thinned(7, Spoof::V4, THIN_ALL),
            redirect_program(7, Spoof::V4)
        );
        let p = redirect_program_thinned(7, Spoof::V4, 4096);
        let at = p.iter().position(|i| i & 0xff == JGE_IMM as u64).unwrap();
        assert_eq!(at, 3);
        assert_eq!(p[at] >> 32, 4096);
        assert_eq!(jump_target(&p, at), p.len() - 2);
    }

    #[test]
    fn read_program_passes_short_frames_and_drops_the_rest() {
        let p = read_source_and_drop_program();
        let at = p.iter().position(|i| i & 0xff == JGT_REG as u64).unwrap();
        assert_eq!(jump_target(&p, at), p.len() - 2);
        assert_eq!(p[p.len() - 2], insn(MOV64_IMM, 0, 0, 0, XDP_PASS));
        assert!(p.contains(&insn(LDXW, 5, 2, 26, 0)));
    }
}
