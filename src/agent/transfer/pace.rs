//! How long a download may take: the one place that decides when a source is too slow (a floor
//! on its rate, averaged over a window, and a longest silence) and when a whole fetch has run
//! out of time (a deadline derived from the signed length at that floor, plus slack). The
//! metainfo fetch, the direct and chained payload fetch and the wait on Transmission all use
//! it, so a member that serves the right metainfo and then trickles bytes (TUF's slow
//! retrieval attack) costs a bounded time, and the failure names the source, the rate it
//! reached and the deadline it missed.

use std::fmt;
use std::io::{self, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The least a source must deliver per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes: u64,
    pub per: Duration,
}

impl MinRate {
    /// `bytes_per_sec`, averaged over `window`.
    pub fn per_second(bytes_per_sec: u64, window: Duration) -> MinRate {
        MinRate {
            bytes: bytes_per_sec.saturating_mul(window.as_millis() as u64) / 1000,
            per: window,
        }
    }

    /// How long `len` bytes take at exactly this rate.
    pub fn time_for(&self, len: u64) -> Duration {
        let periods = len as f64 / self.bytes.max(1) as f64;
        self.per.mul_f64(periods.min(1e9))
    }
}

impl fmt::Display for MinRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes per {:?}", self.bytes, self.per)
    }
}

/// The site's pace for downloads: every source is held to `floor`, and a fetch of `len` bytes
/// gets `floor.time_for(len) + slack`. Deriving the deadline from the signed length keeps it
/// fair for a GiB payload on a Raspberry Pi link and short for a 72-byte manifest; the slack
/// covers what does not scale with size (finding peers, a restarting daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub floor: MinRate,
    pub slack: Duration,
}

impl Pace {
    /// The deadline for fetching `len` bytes, starting now.
    pub fn deadline(&self, len: u64) -> Deadline {
        let budget = self.floor.time_for(len).saturating_add(self.slack);
        // Whole milliseconds read better in a failure's reason.
        let budget = Duration::from_millis(budget.as_millis().min(u64::MAX as u128) as u64);
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }
}

/// When a fetch must be over, and how long it was given (for the failure's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        self.left().is_zero()
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PaceError {
    #[error("{addr} sent {got} bytes in {per:?}, under the floor of {floor}")]
    Slow {
        addr: SocketAddr,
        got: u64,
        per: Duration,
        floor: MinRate,
    },
    #[error("{addr} sent nothing for {silence:?}")]
    Silent { addr: SocketAddr, silence: Duration },
    #[error(
        "the fetch's deadline of {budget:?} passed while {addr} had sent {got} of {want} bytes"
    )]
    Deadline {
        addr: SocketAddr,
        budget: Duration,
        got: u64,
        want: u64,
    },
    #[error("the agent is stopping")]
    Stopping,
    #[error("reading from {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// One source's transfer, held to a floor, a longest silence and the fetch's deadline.
pub struct RateGuard {
    addr: SocketAddr,
    floor: MinRate,
    silence: Duration,
    deadline: Deadline,
    want: u64,
    window_start: Instant,
    window_from: u64,
    last_data: Instant,
}

impl RateGuard {
    /// A transfer from `addr` that has `got` of `want` bytes so far (a resumed one starts
    /// past 0).
    pub fn new(
        addr: SocketAddr,
        floor: MinRate,
        silence: Duration,
        deadline: Deadline,
        got: u64,
        want: u64,
    ) -> RateGuard {
        let now = Instant::now();
        RateGuard {
            addr,
            floor,
            silence,
            deadline,
            want,
            window_start: now,
            window_from: got,
            last_data: now,
        }
    }

    /// Whether the source, at `got` bytes, is still worth waiting for.
    pub fn check(&mut self, got: u64) -> Result<(), PaceError> {
        let addr = self.addr;
        if self.deadline.passed() {
            return Err(PaceError::Deadline {
                addr,
                budget: self.deadline.budget(),
                got,
                want: self.want,
            });
        }
        if self.last_data.elapsed() >= self.silence {
            return Err(PaceError::Silent {
                addr,
                silence: self.silence,
            });
        }
        let per = self.window_start.elapsed();
        if per >= self.floor.per {
            let sent = got.saturating_sub(self.window_from);
            if sent < self.floor.bytes {
                return Err(PaceError::Slow {
                    addr,
                    got: sent,
                    per,
                    floor: self.floor,
                });
            }
            (self.window_start, self.window_from) = (Instant::now(), got);
        }
        Ok(())
    }

    /// How long the next read may block before `check` is due again.
    fn read_limit(&self) -> Duration {
        let window_end = self.floor.per.saturating_sub(self.window_start.elapsed());
        let silent_end = self.silence.saturating_sub(self.last_data.elapsed());
        window_end
            .min(silent_end)
            .min(self.deadline.left())
            // Also wake now and then to see whether the agent is stopping.
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(1))
    }

    /// Reads the next bytes of a response body (at `got` bytes so far), waking to check the
    /// floor, the silence and the deadline however slowly the bytes come: a source that
    /// sends one byte just before each read timeout is still caught at the window's end.
    pub fn read(
        &mut self,
        body: &mut io::Take<BufReader<TcpStream>>,
        got: u64,
        buf: &mut [u8],
        stop: &AtomicBool,
    ) -> Result<usize, PaceError> {
        let addr = self.addr;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(PaceError::Stopping);
            }
            self.check(got)?;
            body.get_ref()
                .get_ref()
                .set_read_timeout(Some(self.read_limit()))
                .map_err(|source| PaceError::Io { addr, source })?;
            match body.read(buf) {
                Ok(n) => {
                    if n > 0 {
                        self.last_data = Instant::now();
                    }
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(PaceError::Io { addr, source }),
            }
        }
    }

    /// Reads the whole body (at most `limit` bytes) under the guard.
    pub fn read_to_end(
        &mut self,
        body: &mut io::Take<BufReader<TcpStream>>,
        limit: usize,
        stop: &AtomicBool,
    ) -> Result<Vec<u8>, PaceError> {
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while bytes.len() < limit {
            let room = buf.len().min(limit - bytes.len());
            let n = self.read(body, bytes.len() as u64, &mut buf[..room], stop)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_grows_with_the_signed_length_at_the_floor() {
        let pace = Pace {
            floor: MinRate::per_second(64 << 10, Duration::from_secs(30)),
            slack: Duration::from_secs(900),
        };
        assert_eq!(pace.floor.bytes, 30 * (64 << 10));
        assert_eq!(pace.deadline(72).budget().as_secs(), 900);
        // 1 GiB at 64 KiB/s: 16384 s, plus the slack.
        assert_eq!(pace.deadline(1 << 30).budget().as_secs(), 16384 + 900);
    }

    /// A body whose bytes each arrive well inside any per-read timeout, but far too few of
    /// them: caught at the end of the first window, not after the whole trickle.
    #[test]
    fn a_trickle_is_caught_at_the_window_end_however_its_bytes_are_spaced() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            for _ in 0..100 {
                if stream.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let stream = TcpStream::connect(addr).unwrap();
        let mut body = BufReader::new(stream).take(100);
        let floor = MinRate {
            bytes: 1024,
            per: Duration::from_millis(300),
        };
        let pace = Pace {
            floor,
            slack: Duration::from_secs(60),
        };
        let started = Instant::now();
        let mut guard = RateGuard::new(
            addr,
            floor,
            Duration::from_secs(2),
            pace.deadline(100),
            0,
            100,
        );
        let err = guard
            .read_to_end(&mut body, 100, &AtomicBool::new(false))
            .unwrap_err();
        assert!(
            matches!(err, PaceError::Slow { floor: f, .. } if f == floor),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(body);
        server.join().unwrap();
    }

    #[test]
    fn a_source_is_left_at_the_deadline_even_at_a_good_rate() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let floor = MinRate {
            bytes: 1,
            per: Duration::from_secs(60),
        };
        let deadline = Pace {
            floor,
            slack: Duration::ZERO,
        }
        .deadline(0);
        let mut guard = RateGuard::new(addr, floor, Duration::from_secs(60), deadline, 0, 10);
        let err = guard.check(5).unwrap_err();
        assert!(
            matches!(
                err,
                PaceError::Deadline {
                    got: 5,
                    want: 10,
                    ..
                }
            ),
            "{err}"
        );
    }
}
