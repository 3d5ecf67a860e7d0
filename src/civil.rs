//! Calendar time for people: UTC dates for what p2pu prints, and the local weekday and time
//! of day that maintenance windows are written in. Seconds since the epoch everywhere else.

/// `2026-11-30 03:04:05` for seconds since the epoch (proleptic Gregorian, UTC).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `2026-11-30T03:04:05Z`: RFC 3339 in UTC for seconds since the epoch (the JSON for scripts).
pub fn rfc3339(secs: u64) -> String {
    utc(secs).replacen(' ', "T", 1) + "Z"
}

/// [`rfc3339`] with milliseconds, for times kept in milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    format!("{}.{:03}Z", utc(ms / 1000).replacen(' ', "T", 1), ms % 1000)
}

/// A time an operator gives (`--since`, `--until`): RFC 3339 (`2026-11-30T03:04:05Z`,
/// `2026-11-30T05:04:05+02:00`, fractions of a second dropped), a UTC date (`2026-11-30`), or an
/// age before `now` (`90s`, `30m`, `2h`, `7d`, `2w`). Seconds since the epoch; the error says
/// what is accepted.
pub fn parse_when(text: &str, now: u64) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a time: give RFC 3339 (2026-11-30T03:04:05Z), a UTC date \
             (2026-11-30) or an age such as 90s, 30m, 2h, 7d, 2w"
        )
    };
    let t = text.trim();
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        let digits = &t[..t.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let per = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 7 * 86_400,
            };
            return Ok(now.saturating_sub(n.saturating_mul(per)));
        }
    }
    let b = t.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = t.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let date = (|| {
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
    })()
    .ok_or_else(bad)?;
    if b.len() == 10 {
        return u64::try_from(date * 86_400).map_err(|_| bad());
    }
    let time = (|| {
        if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let mut rest = &t[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            rest = &frac[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let r = rest.as_bytes();
                if r.len() != 6 || r[3] != b':' {
                    return None;
                }
                let oh = i64::from(rest.get(1..3)?.parse::<u8>().ok()?);
                let om = i64::from(rest.get(4..6)?.parse::<u8>().ok()?);
                sign * (oh * 3600 + om * 60)
            }
        };
        Some(h * 3600 + mi * 60 + s - offset)
    })()
    .ok_or_else(bad)?;
    u64::try_from(date * 86_400 + time).map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's civil_from_days: (year, month, day) of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The local time zone's offset from UTC at `secs`, in seconds (east positive), from the C
/// library (`TZ`, `/etc/localtime`); 0 where it cannot say.
pub fn local_offset(secs: u64) -> i64 {
    let t = nix::libc::time_t::try_from(secs).unwrap_or(nix::libc::time_t::MAX);
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    let filled = unsafe { !nix::libc::localtime_r(&t, &mut tm).is_null() };
    if filled {
        tm.tm_gmtoff
    } else {
        0
    }
}

/// Seconds since the epoch shifted into local wall-clock seconds (what `utc` of it prints
/// is the local date and time).
pub fn local_secs(secs: u64) -> u64 {
    secs.saturating_add_signed(local_offset(secs))
}

/// The weekday (0 = Monday) and minute of the day of wall-clock seconds.
pub fn weekday_minute(wall_secs: u64) -> (u8, u16) {
    let days = wall_secs / 86_400;
    // 1970-01-01 was a Thursday (3 days after a Monday).
    let weekday = ((days + 3) % 7) as u8;
    let minute = ((wall_secs % 86_400) / 60) as u16;
    (weekday, minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--since`/`--until` take RFC 3339, a date or an age; anything else is refused saying
    /// what is accepted.
    #[test]
    fn times_an_operator_gives_are_rfc3339_dates_or_ages() {
        let now = 1_800_000_000;
        assert_eq!(rfc3339(now), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339_ms(now * 1000 + 7), "2027-01-15T08:00:00.007Z");
        for (text, want) in [
            ("2027-01-15T08:00:00Z", now),
            ("2027-01-15t08:00:00.123z", now),
            ("2027-01-15T10:00:00+02:00", now),
            ("2027-01-15T03:30:00-04:30", now),
            ("2027-01-15", now - 8 * 3600),
            ("1970-01-01T00:00:00Z", 0),
            ("90s", now - 90),
            ("30m", now - 1800),
            ("2h", now - 7200),
            ("7d", now - 7 * 86_400),
            ("2w", now - 14 * 86_400),
            ("99999999999w", 0),
        ] {
            assert_eq!(parse_when(text, now), Ok(want), "{text}");
        }
        for bad in [
            "",
            "h",
            "2x",
            "-2h",
            "2027-13-01",
            "2027-01-15T25:00:00Z",
            "2027-01-15T08:00:00",
            "2027-01-15T08:00:00+0200",
            "yesterday",
            "2027-01-15T08:00:00.Z",
        ] {
            let err = parse_when(bad, now).unwrap_err();
            assert!(err.contains("is not a time: give RFC 3339"), "{bad}: {err}");
        }
        for secs in [0, 86_399, 951_782_400, now] {
            assert_eq!(parse_when(&rfc3339(secs), now), Ok(secs));
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_800_000_105), "2027-01-15 08:01:45");
    }

    #[test]
    fn weekdays_count_from_monday() {
        assert_eq!(weekday_minute(0), (3, 0), "1970-01-01 was a Thursday");
        // 2026-12-07 00:30 UTC is a Monday.
        assert_eq!(weekday_minute(1_796_603_400), (0, 30));
    }
}
