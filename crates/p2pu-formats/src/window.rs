//! Maintenance windows: when a node may apply an update it already downloaded. A window is
//! written `DAYS HH:MM-HH:MM` in the node's local time: `Mon-Fri 02:00-04:00`, `Sat,Sun
//! 00:00-06:00`, `daily 22:30-01:00` (an end before the start runs past midnight into the next
//! day; the days name the day it opens). A node may have several (`agent.apply_window`), and a
//! rollout plan may carry its own, signed (`submit --window`), which replaces the node's for
//! that update. Pure: the caller says which weekday and minute it is.

/// At most this many windows in one list (a plan's or a node's).
pub const MAX_WINDOWS: usize = 8;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MINUTES_A_DAY: u32 = 24 * 60;
const MINUTES_A_WEEK: u32 = 7 * MINUTES_A_DAY;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("window {text:?}: {why} (want e.g. `Mon-Fri 02:00-04:00`, `Sat,Sun 00:00-06:00` or `daily 22:30-01:00`)")]
    Bad { text: String, why: String },
    #[error("{count} windows: at most {MAX_WINDOWS}")]
    TooMany { count: usize },
}

/// One weekly window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` set: it opens on weekday `d` (0 = Monday).
    days: u8,
    /// Minutes after midnight.
    start: u16,
    end: u16,
}

/// Where a list of windows stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    Open,
    /// Closed; it opens in this many minutes, on `weekday` at `minute` (local time).
    Closed {
        in_minutes: u32,
        weekday: u8,
        minute: u16,
    },
}

impl Now {
    /// `Mon 02:00`, for `Closed`.
    pub fn opens(&self) -> Option<String> {
        match self {
            Now::Open => None,
            Now::Closed {
                weekday, minute, ..
            } => Some(format!(
                "{} {:02}:{:02}",
                DAY_NAMES[usize::from(*weekday % 7)],
                minute / 60,
                minute % 60
            )),
        }
    }
}

impl Window {
    /// Parses one window.
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        let bad = |why: &str| WindowError::Bad {
            text: text.to_string(),
            why: why.to_string(),
        };
        let mut words = text.split_whitespace();
        let (Some(days), Some(times), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("want the days, a space, and the times"));
        };
        let days = parse_days(days).map_err(|why| bad(&why))?;
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| bad("the times are START-END"))?;
        let start = parse_time(start).map_err(|why| bad(&why))?;
        let end = parse_time(end).map_err(|why| bad(&why))?;
        if start == end {
            return Err(bad("it opens and closes at the same minute"));
        }
        Ok(Window { days, start, end })
    }

    /// The canonical text (what a plan carries): days as ranges of day names.
    pub fn to_text(&self) -> String {
        let days = if self.days == 0x7f {
            "daily".to_string()
        } else {
            let mut parts = Vec::new();
            let mut d = 0;
            while d < 7 {
                if self.days & (1 << d) == 0 {
                    d += 1;
                    continue;
                }
                let first = d;
                while d + 1 < 7 && self.days & (1 << (d + 1)) != 0 {
                    d += 1;
                }
                parts.push(if d == first {
                    DAY_NAMES[first].to_string()
                } else {
                    format!("{}-{}", DAY_NAMES[first], DAY_NAMES[d])
                });
                d += 1;
            }
            parts.join(",")
        };
        format!(
            "{days} {:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }

    /// Minutes of the window's length (past midnight when the end is before the start).
    fn length(&self) -> u32 {
        (u32::from(self.end) + MINUTES_A_DAY - u32::from(self.start)) % MINUTES_A_DAY
    }

    /// Whether it is open `at` minutes into the week (0 = Monday 00:00).
    fn open_at(&self, at: u32) -> bool {
        (0..7).any(|d| {
            if self.days & (1 << d) == 0 {
                return false;
            }
            let opens = d * MINUTES_A_DAY + u32::from(self.start);
            let since = (at + MINUTES_A_WEEK - opens) % MINUTES_A_WEEK;
            since < self.length()
        })
    }

    /// Minutes from `at` until it next opens (0 never: it is closed at `at`).
    fn until_open(&self, at: u32) -> u32 {
        (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| {
                let opens = d * MINUTES_A_DAY + u32::from(self.start);
                (opens + MINUTES_A_WEEK - at) % MINUTES_A_WEEK
            })
            .filter(|m| *m > 0)
            .min()
            .unwrap_or(MINUTES_A_WEEK)
    }
}

/// `Mon-Fri`, `Sat,Sun`, `Mon,Wed-Fri`, `daily`; day names in English, any case.
fn parse_days(text: &str) -> Result<u8, String> {
    if text.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let day = |name: &str| {
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("{name:?} is not a day (Mon, Tue, ... Sun, or daily)"))
    };
    let mut days = 0u8;
    for part in text.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                if to < from {
                    return Err(format!("{part:?} runs backwards (write Sat,Sun-Mon?)"));
                }
                for d in from..=to {
                    days |= 1 << d;
                }
            }
            None => days |= 1 << day(part)?,
        }
    }
    Ok(days)
}

/// `HH:MM`, 00:00 to 23:59 (24:00 also, for the end of a day).
fn parse_time(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) => Ok(0),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// Parses a list of windows (at most [`MAX_WINDOWS`]).
pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Window>, WindowError> {
    if texts.len() > MAX_WINDOWS {
        return Err(WindowError::TooMany { count: texts.len() });
    }
    texts.iter().map(|t| Window::parse(t.as_ref())).collect()
}

/// Where `windows` stand on `weekday` (0 = Monday) at `minute` after local midnight; no
/// windows at all is always open.
pub fn now(windows: &[Window], weekday: u8, minute: u16) -> Now {
    let at = u32::from(weekday % 7) * MINUTES_A_DAY + u32::from(minute) % MINUTES_A_DAY;
    if windows.is_empty() || windows.iter().any(|w| w.open_at(at)) {
        return Now::Open;
    }
    let in_minutes = windows
        .iter()
        .map(|w| w.until_open(at))
        .min()
        .unwrap_or(MINUTES_A_WEEK);
    let opens = (at + in_minutes) % MINUTES_A_WEEK;
    Now::Closed {
        in_minutes,
        weekday: (opens / MINUTES_A_DAY) as u8,
        minute: (opens % MINUTES_A_DAY) as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_to_one_canonical_text() {
        for (text, canonical) in [
            ("Mon-Fri 02:00-04:00", "Mon-Fri 02:00-04:00"),
            ("sat,SUN 0:00-6:00", "Sat-Sun 00:00-06:00"),
            ("daily 22:30-01:00", "daily 22:30-01:00"),
            ("Mon,Wed-Fri 12:00-24:00", "Mon,Wed-Fri 12:00-00:00"),
            ("Mon-Sun 01:00-02:00", "daily 01:00-02:00"),
        ] {
            let w = Window::parse(text).unwrap();
            assert_eq!(w.to_text(), canonical, "{text}");
            assert_eq!(Window::parse(canonical).unwrap(), w);
        }
        for bad in [
            "",
            "Mon-Fri",
            "Mon-Fri 02:00",
            "Funday 02:00-04:00",
            "Fri-Mon 02:00-04:00",
            "Mon 25:00-26:00",
            "Mon 02:60-03:00",
            "Mon 02:00-02:00",
            "Mon 2-4",
            "Mon 02:00-04:00 extra",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} parsed");
        }
        let many = vec!["daily 01:00-02:00"; MAX_WINDOWS + 1];
        assert!(parse_all(&many).is_err());
    }

    #[test]
    fn a_window_is_open_inside_and_says_when_it_next_opens_outside() {
        let w = parse_all(&["Mon-Fri 02:00-04:00"]).unwrap();
        assert_eq!(now(&w, 0, 2 * 60), Now::Open, "Mon 02:00");
        assert_eq!(now(&w, 4, 3 * 60 + 59), Now::Open, "Fri 03:59");
        let closed = now(&w, 0, 4 * 60);
        assert_eq!(
            closed,
            Now::Closed {
                in_minutes: 22 * 60,
                weekday: 1,
                minute: 120
            },
            "Mon 04:00 closes; Tue 02:00 next"
        );
        assert_eq!(closed.opens().unwrap(), "Tue 02:00");
        // Friday after the window: next Monday.
        assert_eq!(now(&w, 4, 5 * 60).opens().unwrap(), "Mon 02:00");
        // Past midnight: a Sunday-night window is open early on Monday.
        let night = parse_all(&["Sun 23:00-01:00"]).unwrap();
        assert_eq!(now(&night, 0, 30), Now::Open, "Mon 00:30");
        assert!(matches!(now(&night, 0, 61), Now::Closed { .. }));
        // Several: the earliest opening wins; none at all is always open.
        let two = parse_all(&["Mon 10:00-11:00", "Mon 08:00-09:00"]).unwrap();
        assert_eq!(now(&two, 0, 7 * 60).opens().unwrap(), "Mon 08:00");
        assert_eq!(now(&[], 3, 123), Now::Open);
    }
}
