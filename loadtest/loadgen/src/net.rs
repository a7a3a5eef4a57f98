//! TCP connect with an optional source address (to spread many connections
//! over 127.0.0.x and escape the per-address ephemeral port limit).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use monoio::net::TcpStream;

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Creates a non-blocking socket, optionally binds it to `src:0`, and starts
/// a connect. Returns the socket (connect possibly still in progress).
fn start_connect(
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    rcvbuf: Option<usize>,
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket syscalls; the fd is owned by OwnedFd right away.
    unsafe {
        let fd = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let owned = OwnedFd::from_raw_fd(fd);
        if let Some(n) = rcvbuf {
            // Before connect, so the window scale matches the small buffer.
            let v = n.min(i32::MAX as usize) as libc::c_int;
            let _ = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        if let Some(ip) = src {
            let one: libc::c_int = 1;
            // Defer port choice to connect() so ports are shared per 4-tuple.
            let _ = libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            let sa = sockaddr(SocketAddrV4::new(ip, 0));
            cvt(libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))?;
        }
        let sa = sockaddr(dst);
        let rc = libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(owned)
    }
}

fn so_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out pointers of the right size.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    })?;
    if err != 0 {
        Err(io::Error::from_raw_os_error(err))
    } else {
        Ok(())
    }
}

/// Connects to `dst` (from `src` if given) and returns a monoio stream with
/// TCP_NODELAY set.
pub async fn connect(dst: SocketAddrV4, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    connect_with(dst, src, None).await
}

/// As [`connect`], with an optional `SO_RCVBUF` set before connecting.
pub async fn connect_with(
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    rcvbuf: Option<usize>,
) -> io::Result<TcpStream> {
    let fd = start_connect(dst, src, rcvbuf)?;
    let std_stream = std::net::TcpStream::from(fd);
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    let raw = stream.as_raw_fd();
    so_error(raw)?;
    if !monoio::utils::is_legacy() {
        // io_uring ops expect a blocking fd (like monoio's own sockets); with
        // O_NONBLOCK a recv could complete with EAGAIN instead of waiting.
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let fl = cvt(libc::fcntl(raw, libc::F_GETFL))?;
            cvt(libc::fcntl(raw, libc::F_SETFL, fl & !libc::O_NONBLOCK))?;
        }
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Source address for connection `i` of `total`: none while the total fits
/// on one address, else 127.0.0.(1 + i / per_ip).
pub fn source_ip(i: usize, total: usize, per_ip: usize) -> Option<Ipv4Addr> {
    if total <= per_ip {
        return None;
    }
    let n = (1 + i / per_ip).min(254) as u8;
    Some(Ipv4Addr::new(127, 0, 0, n))
}

/// Kernel TCP state of a socket (`tcpi_state`: 1 = ESTABLISHED, 7 = CLOSE,
/// 8 = CLOSE_WAIT), read with `TCP_INFO`. None if the call fails.
pub fn tcp_state(fd: RawFd) -> Option<u8> {
    // SAFETY: zeroed tcp_info is a valid out-parameter; len is its size.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        );
        if rc == 0 { Some(info.tcpi_state) } else { None }
    }
}

/// Makes the next `close()` of `fd` send a RST instead of a FIN (SO_LINGER 0).
pub fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid pointer and size for SO_LINGER.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Shuts both directions of `fd`: a pending read on it completes with EOF
/// and the peer gets a FIN at once (no WebSocket close handshake).
pub fn shutdown_both(fd: RawFd) {
    // SAFETY: shutdown on an fd; errors (already closed) are ignored.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Shuts the read side only: a pending read completes with EOF and nothing
/// is sent to the peer (the later `close()` decides between FIN and RST).
pub fn shutdown_read(fd: RawFd) {
    // SAFETY: shutdown on an fd; errors (already closed) are ignored.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}
