//! Who owns the far end of a loopback TCP connection: one `sock_diag` netlink request
//! (`SOCK_DIAG_BY_FAMILY` for the exact 4-tuple, as `ss` asks) in the calling thread's network
//! namespace. It replaced reading `/proc/thread-self/net/tcp` whole, which lists every socket
//! of every namespace's hash buckets: in the 16-node lab, with thousands of connections from
//! the transfer, the agents' 2-second membership refresh spent a tenth of the machine there.
//! The request and reply layouts are the kernel's (`linux/inet_diag.h`, `linux/netlink.h`).

use nix::sys::socket::SockType;
use nix::sys::socket::{recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IPPROTO_TCP: u8 = 6;
/// The only state whose owner the kernel reports: a connection waiting for its last ACK
/// (`SYN_RECV`) or closed (`TIME_WAIT`) is reported as root's (`idiag_uid` 0 in
/// `inet_req_diag_fill` and `inet_twsk_diag_fill`), which would pass a squatter as Serf.
const TCP_ESTABLISHED: u8 = 1;
const HEADER: usize = 16;
const SEQ: u32 = 1;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the socket's id.
const REQUEST: usize = 8 + SOCKID;
/// `struct inet_diag_sockid`: ports (big-endian), addresses (16 bytes each), interface, cookie.
const SOCKID: usize = 48;
/// Where `idiag_uid` sits in `struct inet_diag_msg`: family, state, timer, retrans, the id,
/// then expires, rqueue and wqueue.
const UID_AT: usize = 4 + SOCKID + 12;

/// The uid owning the established socket whose own end is `local` and whose far end is
/// `remote`; `None` when the kernel lists no such established socket (yet).
pub(super) fn established_owner(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<u32>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(|e| {
        // What a systemd unit's `RestrictAddressFamilies=` without AF_NETLINK returns.
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "a sock_diag netlink socket ({e}): where a systemd unit runs this, its \
                 RestrictAddressFamilies= needs AF_NETLINK"
            ),
        )
    })?;
    send(fd.as_raw_fd(), &request(local, remote), MsgFlags::empty())?;
    // The kernel answers a sock_diag request while it takes it: the reply is queued by the
    // time `send` returns, so waiting could only mean something is wrong.
    let mut reply = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut reply, MsgFlags::MSG_DONTWAIT)?;
    owner(&reply[..n.min(reply.len())], local, remote)
}

/// Looks up the owner of the socket whose own end is the first address and far end the second ([`established_owner`]).
pub(super) type Lookup = dyn Fn(SocketAddr, SocketAddr) -> io::Result<Option<u32>>;

/// The owner of the far end of this process's connection `local` → `far`, asked every 5 ms
/// until `within` has passed (the kernel may list the accepted end a moment after `connect`
/// returns); `None` if it is never listed established. When the kernel lists not even this
/// end, sock_diag itself is missing (a kernel without `inet_diag`, or its module not loaded
/// where modules are locked): an error saying so, where "not Serf" would send the operator
/// looking for a squatter.
pub(super) fn far_owner(
    lookup: &Lookup,
    local: SocketAddr,
    far: SocketAddr,
    within: std::time::Duration,
) -> io::Result<Option<u32>> {
    let started = std::time::Instant::now();
    loop {
        if let Some(uid) = lookup(far, local)? {
            return Ok(Some(uid));
        }
        if started.elapsed() >= within {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    match lookup(local, far)? {
        Some(_) => Ok(None),
        None => Err(io::Error::other(
            "the kernel's sock_diag lists neither end of the connection \
             (is the inet_diag/tcp_diag module loaded?)",
        )),
    }
}

/// The request for the one socket `local` → `remote`.
fn request(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let len = (HEADER + REQUEST) as u32;
    let mut out = Vec::with_capacity(HEADER + REQUEST);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&SEQ.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // the kernel's port id
    out.extend_from_slice(&[family(local), IPPROTO_TCP, 0, 0]);
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    out.extend_from_slice(&sockid(local, remote));
    out
}

fn family(addr: SocketAddr) -> u8 {
    match addr.ip() {
        IpAddr::V4(_) => nix::libc::AF_INET as u8,
        IpAddr::V6(_) => nix::libc::AF_INET6 as u8,
    }
}

/// `struct inet_diag_sockid` for `local` → `remote`, no interface, no cookie.
fn sockid(local: SocketAddr, remote: SocketAddr) -> [u8; SOCKID] {
    let mut id = [0u8; SOCKID];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    let octets = |ip: IpAddr| -> Vec<u8> {
        match ip {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        }
    };
    let (src, dst) = (octets(local.ip()), octets(remote.ip()));
    id[4..4 + src.len()].copy_from_slice(&src);
    id[20..20 + dst.len()].copy_from_slice(&dst);
    // INET_DIAG_NOCOOKIE: look the socket up by its addresses.
    id[40..48].copy_from_slice(&[0xff; 8]);
    id
}

/// Reads the kernel's reply: an error (`ENOENT`: no such socket) or the socket, whose owner
/// counts only when it is established and is the one asked for.
fn owner(reply: &[u8], local: SocketAddr, remote: SocketAddr) -> io::Result<Option<u32>> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "a short sock_diag reply");
    let header = reply.get(..HEADER).ok_or_else(short)?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    // Only the kernel may send to this socket (others need CAP_NET_ADMIN); the sequence
    // number is checked all the same.
    if u32::from_ne_bytes([header[8], header[9], header[10], header[11]]) != SEQ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a sock_diag reply to another request",
        ));
    }
    let body = &reply[HEADER..];
    if kind == NLMSG_ERROR {
        let code = body.get(..4).ok_or_else(short)?;
        let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        return match errno {
            0 => Err(short()),
            e if e == nix::libc::ENOENT => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a sock_diag reply of type {kind}"),
        ));
    }
    let msg = body.get(..UID_AT + 4).ok_or_else(short)?;
    let asked = sockid(local, remote);
    // Ports and addresses as asked (the interface and cookie are the kernel's to fill).
    if msg[0] != family(local) || msg[1] != TCP_ESTABLISHED || msg[4..4 + 36] != asked[..36] {
        return Ok(None);
    }
    let uid = &msg[UID_AT..UID_AT + 4];
    Ok(Some(u32::from_ne_bytes([uid[0], uid[1], uid[2], uid[3]])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_far_end_of_a_loopback_connection_is_owned_by_this_process_user() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let (mine, far) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(established_owner(far, mine).unwrap(), Some(me));
        // Asked the other way round, it is this end: also ours.
        assert_eq!(established_owner(mine, far).unwrap(), Some(me));
    }

    #[test]
    fn a_connection_nobody_holds_has_no_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = listener.local_addr().unwrap();
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(established_owner(far, nobody).unwrap(), None);
    }

    /// The kernel reports a connection still in its handshake (`SYN_RECV`) or closed as
    /// root's: such a reply names no owner, or a squatter would pass as Serf.
    #[test]
    fn only_an_established_socket_as_asked_has_an_owner() {
        let (local, remote): (SocketAddr, SocketAddr) = (
            "127.0.0.1:7373".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
        );
        let reply = |state: u8, id: [u8; SOCKID], uid: u32| {
            let mut r = vec![0u8; HEADER + UID_AT + 8];
            r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            r[8..12].copy_from_slice(&SEQ.to_ne_bytes());
            r[HEADER] = nix::libc::AF_INET as u8;
            r[HEADER + 1] = state;
            r[HEADER + 4..HEADER + 4 + SOCKID].copy_from_slice(&id);
            r[HEADER + UID_AT..HEADER + UID_AT + 4].copy_from_slice(&uid.to_ne_bytes());
            r
        };
        let id = sockid(local, remote);
        assert_eq!(owner(&reply(1, id, 0), local, remote).unwrap(), Some(0));
        assert_eq!(
            owner(&reply(1, id, 1000), local, remote).unwrap(),
            Some(1000)
        );
        for state in [3, 6, 8, 12] {
            assert_eq!(owner(&reply(state, id, 0), local, remote).unwrap(), None);
        }
        let other = sockid(local, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(owner(&reply(1, other, 0), local, remote).unwrap(), None);
        assert!(owner(&reply(1, id, 0)[..HEADER + 10], local, remote).is_err());
        let mut ipv6 = reply(1, id, 0);
        ipv6[HEADER] = nix::libc::AF_INET6 as u8;
        assert_eq!(owner(&ipv6, local, remote).unwrap(), None);
        let mut other_request = reply(1, id, 0);
        other_request[8..12].copy_from_slice(&2u32.to_ne_bytes());
        assert!(owner(&other_request, local, remote).is_err());
        let mut error = vec![0u8; HEADER + 4];
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[8..12].copy_from_slice(&SEQ.to_ne_bytes());
        error[HEADER..].copy_from_slice(&(-nix::libc::ENOENT).to_ne_bytes());
        assert_eq!(owner(&error, local, remote).unwrap(), None);
        error[HEADER..].copy_from_slice(&(-nix::libc::EPERM).to_ne_bytes());
        assert!(owner(&error, local, remote).is_err());
    }

    /// A kernel without sock_diag lists no socket at all: said as such, not as a squatter.
    #[test]
    fn a_kernel_listing_neither_end_says_sock_diag_is_missing() {
        let (local, far): (SocketAddr, SocketAddr) = (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:7373".parse().unwrap(),
        );
        let within = std::time::Duration::from_millis(20);
        let nothing = |_: SocketAddr, _: SocketAddr| Ok(None);
        let err = far_owner(&nothing, local, far, within).unwrap_err();
        assert!(err.to_string().contains("sock_diag"), "{err}");
        let only_mine = move |asked: SocketAddr, _: SocketAddr| Ok((asked == local).then_some(0));
        assert_eq!(far_owner(&only_mine, local, far, within).unwrap(), None);
        let squatter = move |asked: SocketAddr, _: SocketAddr| Ok((asked == far).then_some(65534));
        assert_eq!(
            far_owner(&squatter, local, far, within).unwrap(),
            Some(65534)
        );
    }
}
