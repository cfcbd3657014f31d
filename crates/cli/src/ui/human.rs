//! Human sizes and times the way the Docker CLI prints them (go-units), plus the few RFC 3339
//! conversions the commands need.

/// Decimal units, as go-units' `HumanSize` uses them.
const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// A size with `precision` significant digits in decimal units, exactly as go-units'
/// `HumanSizeWithPrecision` prints it (Go's `%.*g`): `docker images` and `docker history`
/// use 3 (`2.17MB`), `docker system df` uses 4 (`2.175MB`). Like Docker, a value that
/// rounds up to 1000 of a unit prints in exponent form (`1e+03kB`).
pub fn size_with_precision(bytes: u64, precision: usize) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", go_g(value, precision.max(1)), UNITS[unit])
}

/// `docker images`/`docker history` sizes (3 significant digits).
pub fn size(bytes: u64) -> String {
    size_with_precision(bytes, 3)
}

/// `docker system df` sizes (4 significant digits, go-units' `HumanSize`).
pub fn size4(bytes: u64) -> String {
    size_with_precision(bytes, 4)
}

/// A size as Docker's `--keep-storage` reads it (go-units' `RAMInBytes`): a number, an
/// optional space, then an optional `k`, `m`, `g`, `t` or `p` (any case, powers of 1024)
/// with an optional `i` and `b`: `512`, `100MB`, `1.5g`, `2 GiB`.
pub fn parse_ram_size(text: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size {text:?} (expected a number with an optional unit: 512MB, 2GB)");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(bad()),
    };
    let bytes = value * 1024f64.powi(power);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Go's `%.*g` for a finite, non-negative value.
fn go_g(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return "0".into();
    }
    // Round to `precision` significant digits first: the exponent is the rounded one.
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (precision as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// go-units' `HumanDuration` of a number of seconds (`About a minute`, `2 hours`).
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let seconds = secs;
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = secs / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go rounds the hours here (`int(d.Hours() + 0.5)`) and truncates everywhere else.
    let hours = (secs + 1800) / 3600;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", secs / 3600 / 24 / 365)
}

/// Docker's `CREATED` column: `2 minutes ago`, or `N/A` when the time is unknown.
pub fn since(created: Option<i64>, now: i64) -> String {
    match created {
        Some(t) => format!("{} ago", duration(now - t)),
        None => "N/A".into(),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`2024-01-02T03:04:05.678Z`,
/// offsets allowed); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) && &r[3..4] == ":" => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (num_at(r, 1..3)? * 3600 + num_at(r, 4..6)? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn num_at(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(r)?;
    part.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| part.parse().ok())?
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split(unix: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let rem = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `2024-01-02T03:04:05Z` (Go's `time.RFC3339` in UTC).
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d, h, mi, s) = split(unix);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2024-01-02 03:04:05 +0000 UTC` (Go's `time.Time.String()` in UTC), as `docker images
/// --format json` prints `CreatedAt`.
pub fn go_time(unix: i64) -> String {
    let (y, m, d, h, mi, s) = split(unix);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000 UTC")
}

/// Cut `s` to `max` characters, the last one replaced by `…` (Docker's `Ellipsis`).
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The 12 hex digits Docker shows for an ID (`sha256:` dropped).
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes_parse_as_docker_reads_keep_storage() {
        assert_eq!(parse_ram_size("512"), Ok(512));
        assert_eq!(parse_ram_size("10k"), Ok(10 * 1024));
        assert_eq!(parse_ram_size("100MB"), Ok(100 << 20));
        assert_eq!(parse_ram_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_ram_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_ram_size("0"), Ok(0));
        for bad in ["", "MB", "10XB", "1..2", "-1", "1e9"] {
            assert!(parse_ram_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_match_go_units() {
        // Expected values are what go-units prints (Go's %.3g / %.4g).
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1000), "1kB");
        assert_eq!(size(1234), "1.23kB");
        assert_eq!(size(1235), "1.24kB");
        assert_eq!(size(2_170_000), "2.17MB");
        assert_eq!(size(2_175_123), "2.18MB");
        assert_eq!(size(12_345_678), "12.3MB");
        assert_eq!(size(123_456_789), "123MB");
        assert_eq!(size(999_500), "1e+03kB");
        assert_eq!(size4(2_175_123), "2.175MB");
        assert_eq!(size4(4_261_550), "4.262MB");
        assert_eq!(size4(36), "36B");
        assert_eq!(size(1_500_000_000_000), "1.5TB");
    }

    #[test]
    fn durations_match_go_units() {
        assert_eq!(duration(0), "Less than a second");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(59), "59 seconds");
        assert_eq!(duration(60), "About a minute");
        assert_eq!(duration(119), "About a minute");
        assert_eq!(duration(120), "2 minutes");
        assert_eq!(duration(3599), "59 minutes");
        assert_eq!(duration(3600), "About an hour");
        assert_eq!(duration(5399), "About an hour");
        assert_eq!(duration(5400), "2 hours");
        assert_eq!(duration(47 * 3600), "47 hours");
        assert_eq!(duration(48 * 3600), "2 days");
        assert_eq!(duration(14 * 86_400), "2 weeks");
        assert_eq!(duration(60 * 86_400), "2 months");
        assert_eq!(duration(2 * 365 * 86_400), "2 years");
        assert_eq!(since(Some(0), 7200), "2 hours ago");
        assert_eq!(since(None, 5), "N/A");
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-01-01T00:00:00.123456789Z"),
            Some(1_704_067_200)
        );
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200)
        );
        for bad in [
            "junk",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00+1:00"), None);
        for t in [0, 1_704_067_200, 951_782_400, 4_102_444_799, -86_400] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(go_time(1_704_067_200), "2024-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn ellipsis_and_short_ids() {
        assert_eq!(ellipsis("abc", 3), "abc");
        assert_eq!(ellipsis("abcd", 3), "ab…");
        assert_eq!(ellipsis("ééééé", 4), "ééé…");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("<missing>"), "<missing>");
    }
}
