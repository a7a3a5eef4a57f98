//! The listening sockets: one per core on the same port (SO_REUSEPORT), non-blocking (the epoll driver accepts
//! on it directly), and a guard against a second server taking the port silently.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use crate::server::StartError;

/// Listen backlog per core.
pub const BACKLOG: i32 = 4096;

/// SO_REUSEPORT would let a second server bind the same port silently and steal half the connections; a plain
/// bind first makes that a clear error. Port 0 picks a free port for all cores.
pub fn claim_port(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    match StdListener::bind(addr) {
        Ok(probe) => probe.local_addr().map_err(|e| StartError::Bind(addr, e)),
        // Connections of a server that just exited can still hold the port, and an io_uring server's listener
        // outlives its process for a moment (the ring is torn down asynchronously): only a listener that stays
        // is a conflict.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && !listens_for_a_while(addr) => Ok(addr),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(StartError::AddressInUse(addr)),
        Err(e) => Err(StartError::Bind(addr, e)),
    }
}

/// How long a listener must persist on our port before it counts as another server.
const PORT_CONFLICT_WAIT: Duration = Duration::from_secs(2);

fn listens_for_a_while(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + PORT_CONFLICT_WAIT;
    while someone_listens(addr) {
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn someone_listens(addr: SocketAddr) -> bool {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_ok()
}

pub fn bind_reuseport(addr: SocketAddr) -> io::Result<StdListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we create and own; on error it is closed by OwnedFd.
    unsafe {
        use std::os::fd::{FromRawFd, OwnedFd};
        // Non-blocking: the epoll driver accepts on it directly (io_uring does not care).
        let fd = libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                len,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let (storage, slen) = sockaddr(addr);
        if libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), slen) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(fd, BACKLOG) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StdListener::from(owned))
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
