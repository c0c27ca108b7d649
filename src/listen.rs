//! The listening sockets: one `SO_REUSEPORT` listener per worker thread, all on one
//! port, and that port kept to this process unless the user asks to share it.
//!
//! `SO_REUSEPORT` is how the workers of one process share a port (the kernel spreads
//! connections over their listeners), but Linux lets any process of the same user join
//! that group: a second `duet serve --port 8080` would silently answer half the
//! connections. So, unless `--reuse-port`:
//!
//! 1. **Probe.** A socket without `SO_REUSEPORT` is bound to the address first. It
//!    cannot share with anyone, so it fails if any other socket listens on that port
//!    (a second server started after the first stops here, before it has listened at
//!    all). With `--port 0` it also picks the port every worker then binds.
//! 2. **Bind** the workers' `SO_REUSEPORT` listeners (the probe is closed first).
//! 3. **Check.** Two servers starting at once can both pass the probe. After listening,
//!    the listening sockets on the port (`/proc/net/tcp`, `/proc/net/tcp6`) must all be
//!    this process's own; otherwise it fails. Of two servers that bound at the same
//!    time at least the later one sees the other, so they never both serve.
//!
//! 4. **Close the group.** A later process that sets `SO_REUSEPORT` itself (`duet serve
//!    --reuse-port`) is let into the group by the kernel whatever this one does, so
//!    the group gets a classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`) that hands each
//!    new connection to one of this process's listeners, which hold the group's first
//!    places: a latecomer binds, and is never handed a connection. It runs once per
//!    connection (on its SYN), never per request.
//!
//! With `--reuse-port` none of this runs: processes that all ask for it share the port.

use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use tracing::{debug, warn};

/// Binds `threads` listeners on `addr` (see the module docs); `reuse_port` lets other
/// processes share the port. Errors are one line for the user.
pub fn bind_listeners(addr: SocketAddr, threads: usize, reuse_port: bool) -> Result<Vec<TcpListener>, String> {
    let mut addr = addr;
    if !reuse_port {
        // Closed at the end of this block, before the listeners bind.
        let probe = new_socket(addr).map_err(|e| format!("cannot create a socket: {e}"))?;
        probe.set_reuse_address(true).and_then(|()| probe.bind(&addr.into())).map_err(|e| bind_error(addr, &e))?;
        addr = local_addr(&probe)?;
    }
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(threads);
    for _ in 0..threads {
        let socket = new_socket(addr).map_err(|e| format!("cannot create a socket: {e}"))?;
        let setup = || -> io::Result<()> {
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(4096)
        };
        setup().map_err(|e| bind_error(addr, &e))?;
        if listeners.is_empty() {
            // With --reuse-port and --port 0, the first listener picks the port.
            addr = local_addr(&socket)?;
        }
        listeners.push(socket.into());
    }
    if !reuse_port {
        check_port_is_ours(addr, &listeners)?;
        let count = u32::try_from(listeners.len()).unwrap_or(u32::MAX);
        if let Err(e) = duet_engine::socket::reuseport_pick_among_first(listeners[0].as_fd(), count) {
            warn!("cannot keep port {} to this process ({e}): a later --reuse-port server could join it", addr.port());
        }
    }
    Ok(listeners)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
}

fn local_addr(socket: &Socket) -> Result<SocketAddr, String> {
    socket.local_addr().ok().and_then(|a| a.as_socket()).ok_or_else(|| "cannot read the bound address".to_string())
}

/// The line for a failed bind or listen on `addr`.
fn bind_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => in_use(addr.port()),
        io::ErrorKind::AddrNotAvailable => format!("cannot listen on {addr}: no such local address (check --bind)"),
        io::ErrorKind::PermissionDenied => {
            format!("cannot listen on {addr}: permission denied (ports below 1024 need privileges)")
        }
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

fn in_use(port: u16) -> String {
    format!(
        "port {port} is already in use by another process (stop it or pick another --port; \
         --reuse-port shares a port on purpose)"
    )
}

/// Step 3: every socket listening on `addr`'s port at an overlapping address is one of
/// `ours`. When the kernel's socket tables cannot be read, the probe alone stands.
fn check_port_is_ours(addr: SocketAddr, ours: &[TcpListener]) -> Result<(), String> {
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = match std::fs::read_to_string(table) {
        Ok(text) => text,
        Err(e) => {
            debug!("cannot read {table} ({e}); the port is checked at bind time only");
            return Ok(());
        }
    };
    let ours: HashSet<u64> = ours.iter().filter_map(|l| socket_inode(l.as_raw_fd())).collect();
    let others = listening_inodes(&text, addr).into_iter().filter(|inode| !ours.contains(inode)).count();
    if others > 0 {
        return Err(in_use(addr.port()));
    }
    Ok(())
}

/// The inode of socket `fd` (`/proc/self/fd/N` reads `socket:[INODE]`).
fn socket_inode(fd: i32) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let target = target.to_str()?;
    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The inodes of the sockets in `table` (the text of `/proc/net/tcp` or `tcp6`) that
/// listen on `addr`'s port at an address that overlaps `addr`'s (the same one, or
/// either is the wildcard).
fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            if u16::from_str_radix(port, 16).ok()? != addr.port() {
                return None;
            }
            let ip = parse_proc_ip(ip)?;
            let overlaps = ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified();
            if !overlaps {
                return None;
            }
            inode.parse().ok()
        })
        .collect()
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in hex, each the word as
/// it lies in memory read in the host's byte order.
fn parse_proc_ip(hex: &str) -> Option<IpAddr> {
    let word =
        |i: usize| -> Option<[u8; 4]> { Some(u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes()) };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_word(bytes: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(bytes))
    }

    #[test]
    fn proc_addresses_parse_in_host_byte_order() {
        assert_eq!(parse_proc_ip(&hex_word([127, 0, 0, 1])), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(parse_proc_ip("00000000"), Some(IpAddr::from([0, 0, 0, 0])));
        let v6 = Ipv6Addr::LOCALHOST.octets();
        let hex: String = v6.chunks(4).map(|c| hex_word([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(parse_proc_ip(&hex), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(parse_proc_ip("12345"), None);
        assert_eq!(parse_proc_ip("zzzzzzzz"), None);
    }

    #[test]
    fn only_listening_sockets_on_the_port_at_an_overlapping_address_count() {
        let lo = hex_word([127, 0, 0, 1]);
        let other = hex_word([10, 0, 0, 5]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 111 1 0 100 0 0 10 0\n\
             1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 222 1 0 100 0 0 10 0\n\
             2: {other}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 333 1 0 100 0 0 10 0\n\
             3: {lo}:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 444 1 0 100 0 0 10 0\n\
             4: {lo}:1F90 {lo}:D431 01 00000000:00000000 00:00000000 00000000  1000  0 555 1 0 100 0 0 10 0\n"
        );
        let on = |ip: [u8; 4]| SocketAddr::from((ip, 8080));
        assert_eq!(listening_inodes(&table, on([127, 0, 0, 1])), [111, 222], "same address and the wildcard");
        assert_eq!(listening_inodes(&table, on([0, 0, 0, 0])), [111, 222, 333], "the wildcard overlaps all");
        assert_eq!(listening_inodes(&table, on([10, 0, 0, 6])), [222]);
        assert_eq!(listening_inodes("garbage\nmore garbage", on([127, 0, 0, 1])), Vec::<u64>::new());
    }

    #[test]
    fn every_worker_gets_the_same_port_even_when_the_kernel_picks_it() {
        let listeners = bind_listeners(SocketAddr::from(([127, 0, 0, 1], 0)), 4, false).expect("bind");
        let ports: HashSet<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_eq!(ports.len(), 1, "{ports:?}");
        assert_ne!(ports.into_iter().next(), Some(0));
    }

    #[test]
    fn a_port_another_socket_listens_on_is_refused_by_the_probe() {
        let first = bind_listeners(SocketAddr::from(([127, 0, 0, 1], 0)), 2, false).expect("bind");
        let addr = first[0].local_addr().unwrap();
        let err = bind_listeners(addr, 2, false).expect_err("a second set of listeners on the port");
        assert!(err.starts_with(&format!("port {} is already in use by another process", addr.port())), "{err}");
        // Sharing on purpose: both sets have SO_REUSEPORT.
        let shared = bind_listeners(SocketAddr::from(([127, 0, 0, 1], 0)), 1, true).expect("bind");
        let addr = shared[0].local_addr().unwrap();
        bind_listeners(addr, 1, true).expect("--reuse-port joins");
    }

    #[test]
    fn a_listener_that_joined_after_the_probe_is_found_by_the_check() {
        // What a server starting at the same moment does: it passes its probe too and
        // joins the reuseport group; the check after listening sees its socket.
        let ours = bind_listeners(SocketAddr::from(([127, 0, 0, 1], 0)), 1, false).expect("bind");
        let addr = ours[0].local_addr().unwrap();
        let intruder = bind_listeners(addr, 1, true).expect("a reuseport listener joins");
        let err = check_port_is_ours(addr, &ours).expect_err("the other listener is found");
        assert!(err.starts_with(&format!("port {} is already in use by another process", addr.port())), "{err}");
        let all: Vec<TcpListener> = ours.into_iter().chain(intruder).collect();
        check_port_is_ours(addr, &all).expect("all of them ours");
    }
}
