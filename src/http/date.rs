//! HTTP dates (RFC 9110 §5.6.7) and the Common Log Format timestamp.
//!
//! Civil-date arithmetic after Howard Hinnant's `days_from_civil`, on
//! whole seconds since the Unix epoch, always in GMT.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32, // 1..=12
    day: u32,   // 1..=31
    hour: u32,
    min: u32,
    sec: u32,
    weekday: usize, // 0 = Thursday, as 1970-01-01 was
}

fn civil_from_secs(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        min: rem / 60 % 60,
        sec: rem % 60,
        weekday: days.rem_euclid(7) as usize,
    }
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate).
pub fn fmt_http_date(t: SystemTime) -> String {
    // unwrap-free: the bytes are ASCII by construction.
    String::from_utf8_lossy(&http_date_bytes(unix_secs(t))).into_owned()
}

/// IMF-fixdate as 29 bytes, written digit by digit: this runs for every
/// response, and `format!` costs several times more.
pub fn http_date_bytes(secs: i64) -> [u8; 29] {
    let c = civil_from_secs(secs);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[c.weekday].as_bytes());
    two(&mut out[5..7], c.day);
    out[8..11].copy_from_slice(MONTHS[c.month as usize - 1].as_bytes());
    four(&mut out[12..16], c.year);
    two(&mut out[17..19], c.hour);
    two(&mut out[20..22], c.min);
    two(&mut out[23..25], c.sec);
    out
}

/// `06/Nov/1994:08:49:37 +0000`, the Common Log Format's `%t` without brackets.
pub fn fmt_clf_date(t: SystemTime) -> String {
    String::from_utf8_lossy(&clf_date_bytes(unix_secs(t))).into_owned()
}

/// The CLF timestamp as 26 bytes.
pub fn clf_date_bytes(secs: i64) -> [u8; 26] {
    let c = civil_from_secs(secs);
    let mut out = *b"01/Jan/1970:00:00:00 +0000";
    two(&mut out[0..2], c.day);
    out[3..6].copy_from_slice(MONTHS[c.month as usize - 1].as_bytes());
    four(&mut out[7..11], c.year);
    two(&mut out[12..14], c.hour);
    two(&mut out[15..17], c.min);
    two(&mut out[18..20], c.sec);
    out
}

/// Whole seconds since the epoch (negative before it).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn two(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

fn four(out: &mut [u8], year: i64) {
    let y = year.clamp(0, 9999) as u32;
    two(&mut out[0..2], y / 100);
    two(&mut out[2..4], y % 100);
}

/// Parse any of the three HTTP-date forms a recipient must accept:
/// IMF-fixdate, RFC 850 and asctime. `None` for anything else, which
/// makes a conditional header be ignored, as RFC 9110 §13.1.3 asks.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') => (*d, *m, parse_num(y, 4)?, *t),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut f = dmy.split('-');
            let (d, m, y) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() {
                return None;
            }
            // RFC 9110: a two-digit year more than 50 years ahead is in the past.
            let yy = parse_num(y, 2)?;
            let now = civil_from_secs(unix_secs(SystemTime::now())).year;
            let mut year = now - now % 100 + yy;
            if year > now + 50 {
                year -= 100;
            }
            (d, m, year, *t)
        }
        // Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (*d, *m, parse_num(y, 4)?, *t),
        _ => return None,
    };
    let month = MONTHS.iter().position(|&m| m == month)? as u32 + 1;
    let day = u32::try_from(parse_num(day, 0)?).ok()?;
    let mut hms = time.split(':');
    let (h, mi, se) = (
        parse_num(hms.next()?, 2)?,
        parse_num(hms.next()?, 2)?,
        parse_num(hms.next()?, 2)?,
    );
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Digits only, of exactly `width` characters (any width 1..=2 when 0).
fn parse_num(s: &str, width: usize) -> Option<i64> {
    let ok_width = if width == 0 {
        (1..=2).contains(&s.len())
    } else {
        s.len() == width
    };
    if !ok_width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_known_instants() {
        let cases: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ];
        for (secs, want) in cases {
            assert_eq!(fmt_http_date(at(*secs)), *want);
        }
        assert_eq!(fmt_clf_date(at(784_111_777)), "06/Nov/1994:08:49:37 +0000");
    }

    #[test]
    fn parses_the_three_forms() {
        let want = Some(at(784_111_777));
        let cases: &[(&str, Option<SystemTime>)] = &[
            ("Sun, 06 Nov 1994 08:49:37 GMT", want),
            ("Sunday, 06-Nov-94 08:49:37 GMT", want),
            ("Sun Nov  6 08:49:37 1994", want),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sun, 06 Foo 1994 08:49:37 GMT", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 24:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08:49 GMT", None),
            ("yesterday", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_http_date(s), *want, "{s}");
        }
    }

    #[test]
    fn round_trips_every_day_for_years() {
        for day in (0..40_000u64).step_by(7) {
            let t = at(day * 86_400 + 3661);
            assert_eq!(parse_http_date(&fmt_http_date(t)), Some(t));
        }
    }
}
