//! sd_notify(3) for the units `init` renders as `Type=notify`: a daemon tells systemd it is
//! ready once it can do its work (sockets bound, children started), so `systemctl start`
//! reports a start that failed before that, and units ordered `After=` it wait for it. A few
//! lines over a datagram socket; nothing happens where `NOTIFY_SOCKET` is unset.
//!
//! Also owns the watchdog (`WatchdogSec=`, [`Watchdog`]): the daemon's main loop says it is
//! alive each time round, so systemd restarts a daemon whose loop is wedged. The ping belongs in
//! the loop whose progress it vouches for, never in a timer thread of its own, which would go
//! on pinging while the loop hangs.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

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

/// The service manager's watchdog, where the unit set `WatchdogSec=`: [`Watchdog::alive`],
/// called once per turn of the main loop, sends `WATCHDOG=1` at most every half period
/// (sd_watchdog_enabled(3)'s advice), so a loop that stops turning is restarted by systemd
/// within one period.
#[derive(Debug)]
pub struct Watchdog {
    socket: String,
    every: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd asked this process for, if any: `NOTIFY_SOCKET` and
    /// `WATCHDOG_USEC` set, and `WATCHDOG_PID` (when set) naming this process, not a parent
    /// that passed its environment on.
    pub fn from_env() -> Option<Watchdog> {
        let var = |name: &str| std::env::var(name).ok();
        Watchdog::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    fn from_vars(
        socket: Option<&str>,
        usec: Option<&str>,
        pid: Option<&str>,
        own_pid: u32,
    ) -> Option<Watchdog> {
        let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
        if let Some(pid) = pid {
            if pid.trim().parse::<u32>().ok() != Some(own_pid) {
                return None;
            }
        }
        Some(Watchdog {
            socket: socket?.to_string(),
            every: Duration::from_micros(usec) / 2,
            last: None,
        })
    }

    /// The loop made a turn at `now`: pings when half a period passed since the last ping
    /// (or none was sent yet). True when a ping went out.
    pub fn alive(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        // A lost ping is not retried early: systemd's restart then says more than a log line.
        let _ = send(&self.socket, "WATCHDOG=1");
        true
    }
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

    /// The watchdog pings on the first turn, not again within half its period, and again once
    /// half the period passed; turns of the loop are what drive it (no thread of its own).
    #[test]
    fn the_watchdog_pings_from_turns_of_the_loop_at_half_its_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let pid = std::process::id();
        let mut dog =
            Watchdog::from_vars(path.to_str(), Some("10000000"), Some(&pid.to_string()), pid)
                .unwrap();
        assert_eq!(dog.every, Duration::from_secs(5));
        let start = Instant::now();
        let mut buf = [0u8; 64];
        assert!(dog.alive(start));
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(!dog.alive(start + Duration::from_secs(4)));
        assert!(
            listener.recv(&mut buf).is_err(),
            "pinged within half a period"
        );
        // No turn of the loop, no ping, however long it has been: nothing else sends one.
        std::thread::sleep(Duration::from_millis(50));
        assert!(listener.recv(&mut buf).is_err(), "pinged without a turn");
        assert!(dog.alive(start + Duration::from_secs(5)));
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    /// No watchdog without WATCHDOG_USEC, with a period of 0 or nonsense, without a socket, or
    /// when WATCHDOG_PID names another process (a parent's environment passed on).
    #[test]
    fn the_watchdog_is_only_for_the_process_systemd_asked() {
        let s = Some("/run/notify");
        assert!(Watchdog::from_vars(s, None, None, 7).is_none());
        assert!(Watchdog::from_vars(s, Some("0"), None, 7).is_none());
        assert!(Watchdog::from_vars(s, Some("x"), None, 7).is_none());
        assert!(Watchdog::from_vars(None, Some("1000"), None, 7).is_none());
        assert!(Watchdog::from_vars(s, Some("1000"), Some("8"), 7).is_none());
        assert!(Watchdog::from_vars(s, Some("1000"), Some("7"), 7).is_some());
        assert!(Watchdog::from_vars(s, Some("1000"), None, 7).is_some());
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
