//! A timestamptz read as PostgreSQL holds it. Decoding into `OffsetDateTime`
//! fails on `infinity`, `-infinity` and years the time library (and RFC
//! 3339) cannot hold, and `row.get` then panics; this type reads every value
//! PostgreSQL can store. Used where such a value is legitimate
//! (`next_attempt_at = 'infinity'`: never due) or only compared (a cache key);
//! the daemon's other times are kept in range by checks (sql/0004).

use std::fmt;
use std::io::Write as _;

use time::OffsetDateTime;
use tokio_postgres::types::{FromSql, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    /// A time RFC 3339 can write (years 1 to 9999).
    At(OffsetDateTime),
    Infinity,
    NegInfinity,
    /// Any other finite time (PostgreSQL holds 4713 BC to 294276 AD), as
    /// microseconds since 2000-01-01 UTC, PostgreSQL's own representation.
    OutOfRange(i64),
}

/// 2000-01-01 in days since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

impl Timestamp {
    /// The time, when it is one the daemon can compute with.
    pub fn finite(self) -> Option<OffsetDateTime> {
        match self {
            Timestamp::At(t) => Some(t),
            _ => None,
        }
    }

    fn from_micros(us: i64) -> Timestamp {
        match us {
            i64::MAX => Timestamp::Infinity,
            i64::MIN => Timestamp::NegInfinity,
            _ => OffsetDateTime::from_unix_timestamp_nanos(
                (i128::from(us) + i128::from(PG_EPOCH_DAYS) * 86_400_000_000) * 1000,
            )
            .ok()
            .filter(|t| (1..=9999).contains(&t.year()))
            .map_or(Timestamp::OutOfRange(us), Timestamp::At),
        }
    }
}

impl<'a> FromSql<'a> for Timestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| "a timestamp is 8 bytes on the wire")?;
        Ok(Timestamp::from_micros(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP)
    }
}

/// RFC 3339 for times it can write (`2026-11-23T10:00:00.5Z`, as the API
/// writes every time); `infinity` and `-infinity` as PostgreSQL writes them;
/// other years with as many digits as they need and a sign
/// (`+20000-01-01T00:00:00Z`, ISO 8601's expanded form).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamp::At(t) => {
                let s = t
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|_| fmt::Error)?;
                f.write_str(&s)
            }
            Timestamp::Infinity => f.write_str("infinity"),
            Timestamp::NegInfinity => f.write_str("-infinity"),
            Timestamp::OutOfRange(us) => {
                let secs = us.div_euclid(1_000_000);
                let (y, m, d) = civil_from_days(secs.div_euclid(86_400) + PG_EPOCH_DAYS);
                let s = secs.rem_euclid(86_400);
                let sign = if y < 0 { '-' } else { '+' };
                write!(
                    f,
                    "{sign}{:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                    y.unsigned_abs(),
                    s / 3600,
                    s / 60 % 60,
                    s % 60
                )
            }
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `2026-02-25T12:00:00Z` (UTC, whole seconds): the envelope's
/// `timestamp`, and the times in payloads and CLI output.
pub fn rfc3339_seconds(at: OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(20);
    write_rfc3339_seconds(&mut out, at);
    String::from_utf8(out).expect("digits and ASCII")
}

/// [`rfc3339_seconds`] appended to `out`, allocating nothing of its own:
/// the envelope writes it into the body's buffer.
pub fn write_rfc3339_seconds(out: &mut Vec<u8>, at: OffsetDateTime) {
    let t = at.to_offset(time::UtcOffset::UTC);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

/// (year, month, day) of a day count since 1970-01-01, for any count
/// (Howard Hinnant's `civil_from_days`; year 0 is 1 BC, as in ISO 8601).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_seconds_is_utc_cut_to_the_second() {
        let at = time::macros::datetime!(2026-02-25 13:00:00.789 +01:00);
        assert_eq!(rfc3339_seconds(at), "2026-02-25T12:00:00Z");
        let mut buf = b"at ".to_vec();
        write_rfc3339_seconds(&mut buf, at);
        assert_eq!(buf, b"at 2026-02-25T12:00:00Z");
    }

    #[test]
    fn every_value_postgres_holds_reads_and_prints() {
        assert_eq!(Timestamp::from_micros(i64::MAX).to_string(), "infinity");
        assert_eq!(Timestamp::from_micros(i64::MIN).to_string(), "-infinity");
        assert_eq!(
            Timestamp::from_micros(0).to_string(),
            "2000-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_micros(-1).finite().unwrap().to_string(),
            "1999-12-31 23:59:59.999999 +00:00:00"
        );
        // 18,000 Gregorian years are 45 cycles of 146,097 days.
        let y20000 = 45 * 146_097 * 86_400_000_000;
        assert_eq!(
            Timestamp::from_micros(y20000).to_string(),
            "+20000-01-01T00:00:00Z"
        );
        // '10000-01-01Z' is the first value out of range; a microsecond before is in.
        let y10000 = 20 * 146_097 * 86_400_000_000;
        assert_eq!(
            Timestamp::from_micros(y10000),
            Timestamp::OutOfRange(y10000)
        );
        assert!(Timestamp::from_micros(y10000 - 1).finite().is_some());
        // Julian day 0 (noon, 24 November 4714 BC) is year -4713 in ISO 8601.
        let bc = -2_451_545 * 86_400_000_000 + 43_200_000_000;
        assert_eq!(
            Timestamp::from_micros(bc).to_string(),
            "-4713-11-24T12:00:00Z"
        );
    }
}
