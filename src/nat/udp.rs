//! The one blocking UDP receive that every NAT daemon's loop is built on: the proxy's (both
//! its ports) and the NAT client's plain socket. What counts as "nothing this time" lives here,
//! once.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};

/// Waits for one datagram (up to the socket's read timeout). `Ok(None)` when the wait ended
/// without one: a timeout, a signal, or an ICMP "port unreachable" for an earlier send, which
/// Linux reports on the next receive and which says nothing about this socket. `buf` should be
/// one byte longer than the largest datagram wanted, so an oversized one shows as such.
pub fn receive<'a>(
    socket: &UdpSocket,
    buf: &'a mut [u8],
) -> std::io::Result<Option<(SocketAddr, &'a [u8])>> {
    match socket.recv_from(buf) {
        Ok((len, from)) => Ok(buf.get(..len).map(|datagram| (from, datagram))),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock
                    | ErrorKind::TimedOut
                    | ErrorKind::Interrupted
                    | ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
