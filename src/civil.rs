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
