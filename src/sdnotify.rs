//! sd_notify(3) for the units `init` renders as `Type=notify`: a daemon tells systemd it is
//! ready once it can do its work (sockets bound, children started), so `systemctl start`
//! reports a start that failed before that, and units ordered `After=` it wait for it. A few
//! lines over a datagram socket; nothing happens where `NOTIFY_SOCKET` is unset.

use std::os::unix::net::UnixDatagram;

/// Sends `READY=1` to the service manager, if there is one listening. Errors are ignored:
/// systemd then times the start out, which says more than a log line here could.
pub fn ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let _ = send(&socket.to_string_lossy(), "READY=1");
}

/// Sends `STATUS=...`, what the daemon is doing now, which `systemctl status` shows: one line,
/// control characters removed, at most [`MAX_STATUS`] characters (a reason may quote a file
/// another user wrote).
pub fn status(text: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let _ = send(&socket.to_string_lossy(), &status_line(text));
}

/// The most of a status that is sent.
pub const MAX_STATUS: usize = 200;

fn status_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_STATUS)
        .collect();
    format!("STATUS={}", line.trim())
}

fn send(socket: &str, message: &str) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        // An abstract socket: its name begins with a NUL byte.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            datagram.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            datagram.send_to(message.as_bytes(), socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    /// A status is one line of at most 200 characters, whatever the reason it carries.
    #[test]
    fn a_status_is_one_bounded_line() {
        assert_eq!(status_line("idle"), "STATUS=idle");
        assert_eq!(
            status_line("held by x (a\nb\x1b[2J)"),
            "STATUS=held by x (a b [2J)"
        );
        assert_eq!(
            status_line(&"y".repeat(500)).len(),
            "STATUS=".len() + MAX_STATUS
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), &status_line("applying site.pp")).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=applying site.pp");
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("p2pu-sdnotify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
