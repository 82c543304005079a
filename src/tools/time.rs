//! RFC 3339 timestamps as written by the logs ("2026-11-27T13:29:39.448146Z").

/// Seconds since the Unix epoch, or None if `text` is not an RFC 3339 UTC time.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let (date, time) = text.trim().split_once('T')?;
    let mut ymd = date.split('-');
    let year: i64 = ymd.next()?.parse().ok()?;
    let month: i64 = ymd.next()?.parse().ok()?;
    let day: i64 = ymd.next()?.parse().ok()?;
    let time = time.strip_suffix('Z')?;
    let mut hms = time.split(':');
    let hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let second: f64 = hms.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || !(0.0..61.0).contains(&second) {
        return None;
    }
    Some(days_from_civil(year, month, day) as f64 * 86_400.0 + (hour * 3600 + minute * 60) as f64 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = (month + 9) % 12;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        let t = parse_rfc3339("2026-11-27T13:29:39.448146Z").expect("valid");
        // 2026-11-27 is day 20_419 since the epoch.
        assert!((t - (20_419.0 * 86_400.0 + 13.0 * 3600.0 + 29.0 * 60.0 + 39.448_146)).abs() < 1e-6);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
