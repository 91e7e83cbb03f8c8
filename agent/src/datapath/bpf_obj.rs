//! The few bpf(2) commands aya 0.14 does not expose on plain fds: opening and
//! pinning any object by path, a link's info (with the XDP interface index),
//! detaching a link, and reading a hash map in batches.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `enum bpf_link_type`'s BPF_LINK_TYPE_XDP.
pub(super) const LINK_TYPE_XDP: u32 = 6;

/// `union bpf_attr` as BPF_OBJ_PIN and BPF_OBJ_GET read it.
#[repr(C, align(8))]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes the attr struct of `cmd`; the kernel reads
    // (at most) size_of::<T>() bytes of it and writes only through the
    // pointers it holds, which point at live buffers of the stated size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Opens the BPF object (map, program or link) pinned at `pin`.
pub(super) fn get(pin: &Path) -> io::Result<OwnedFd> {
    let path = c_path(pin)?;
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let fd = sys_bpf(BPF_OBJ_GET, &attr)?;
    // SAFETY: the kernel just gave us this fd; OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the object behind `fd` at `pin` (which must not exist).
pub(super) fn pin(fd: &OwnedFd, pin: &Path) -> io::Result<()> {
    let path = c_path(pin)?;
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    sys_bpf(BPF_OBJ_PIN, &attr).map(drop)
}

/// Detaches a link from its hook now (BPF_LINK_DETACH, Linux 5.9+), whoever
/// else holds it.
pub(super) fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    #[repr(C, align(8))]
    struct LinkDetach {
        link_fd: u32,
        _pad: u32,
    }
    let attr = LinkDetach {
        link_fd: fd.as_raw_fd() as u32,
        _pad: 0,
    };
    sys_bpf(BPF_LINK_DETACH, &attr).map(drop)
}

/// The parts of `struct bpf_link_info` tollgate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For an XDP link: the interface it is attached to, 0 once the interface
    /// is gone (the link is then defunct).
    pub ifindex: u32,
}

/// A link's info, including the XDP interface index aya's `LinkInfo` does not
/// expose.
pub(super) fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
    // struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose
    // `xdp.ifindex` is its first u32 (offset 16).
    #[repr(C, align(8))]
    struct Buf([u8; 256]);
    let mut info = Buf([0; 256]);
    #[repr(C, align(8))]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.0.len() as u32,
        info: info.0.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr)?;
    let u32_at = |o: usize| u32::from_ne_bytes(info.0[o..o + 4].try_into().expect("4 bytes"));
    Ok(LinkInfo {
        link_type: u32_at(0),
        id: u32_at(4),
        prog_id: u32_at(8),
        ifindex: u32_at(16),
    })
}

/// One BPF_MAP_LOOKUP_BATCH call (Linux 5.6+) on a hash map: copies up to
/// `keys.len()` entries into `keys` and `values`, starting at the batch token
/// `from` (`None`: the first bucket). Returns how many entries it filled and
/// the token to continue from, `None` once the walk is complete.
///
/// `K` and `V` must be the map's key and value types (plain `#[repr(C)]` data
/// of the map's key and value sizes); `keys` and `values` must be equally long.
pub(super) fn lookup_batch<K: Copy, V: Copy>(
    fd: &OwnedFd,
    from: Option<u32>,
    keys: &mut [K],
    values: &mut [V],
) -> io::Result<(usize, Option<u32>)> {
    assert_eq!(keys.len(), values.len(), "one value slot per key slot");
    #[repr(C, align(8))]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    // Hash maps use a bucket index (u32) as their batch token.
    let token_in = from.unwrap_or(0);
    let mut token_out: u32 = 0;
    let mut attr = BatchAttr {
        in_batch: if from.is_some() {
            &token_in as *const u32 as u64
        } else {
            0
        },
        out_batch: &mut token_out as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: as in sys_bpf; the kernel also writes `count` back into attr,
    // so it gets a pointer to our mutable copy.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    let filled = (attr.count as usize).min(keys.len());
    if rc == 0 {
        return Ok((filled, Some(token_out)));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        // The last batch (possibly empty): the walk is complete.
        return Ok((filled, None));
    }
    Err(err)
}
