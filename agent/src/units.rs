//! Rates and sizes as operators write them ("100/s", "6000/min", "10MB/s",
//! "64KiB") and as tollgate prints them ("1.2k/s", "10 MB/s").
//!
//! Parsing is strict and every error says what would have been accepted.

use std::fmt;

/// The period of a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Second,
    Minute,
    Hour,
}

impl Period {
    pub const fn nanos(self) -> u64 {
        match self {
            Period::Second => 1_000_000_000,
            Period::Minute => 60_000_000_000,
            Period::Hour => 3_600_000_000_000,
        }
    }

    pub const fn seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
        }
    }

    pub const fn suffix(self) -> &'static str {
        match self {
            Period::Second => "s",
            Period::Minute => "min",
            Period::Hour => "h",
        }
    }

    fn parse(s: &str) -> Result<Period, UnitError> {
        match s.trim() {
            "s" => Ok(Period::Second),
            "min" => Ok(Period::Minute),
            "h" => Ok(Period::Hour),
            other => Err(UnitError::UnknownPeriod(other.to_owned())),
        }
    }
}

/// `amount` units (packets, bytes, connections, requests) per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub amount: u64,
    pub period: Period,
}

impl Rate {
    pub const fn per_second(amount: u64) -> Rate {
        Rate {
            amount,
            period: Period::Second,
        }
    }

    /// Units per second (may be fractional, e.g. 30/min = 0.5).
    pub fn per_second_f64(&self) -> f64 {
        self.amount as f64 / self.period.seconds() as f64
    }

    /// How many units arrive in one second at this rate, rounded up, at least 1:
    /// the default burst.
    pub fn one_second_worth(&self) -> u64 {
        self.amount.div_ceil(self.period.seconds()).max(1)
    }
}

/// Why a rate or size did not parse. The messages are shown to operators
/// after the field and value, e.g. `packets = "100/x": unknown period "x" ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty value (write e.g. \"100/s\")")]
    Empty,
    #[error("missing period (write e.g. \"{0}/s\", \"{0}/min\" or \"{0}/h\")")]
    MissingPeriod(String),
    #[error("unknown period \"{0}\" (use /s, /min or /h)")]
    UnknownPeriod(String),
    #[error("\"{0}\" is not a whole number")]
    NotANumber(String),
    #[error("\"{0}\" must not be negative")]
    Negative(String),
    #[error("\"{0}\" is not a number")]
    NotADecimal(String),
    #[error("unknown unit \"{0}\" (use B, KB, MB, GB, KiB, MiB or GiB)")]
    UnknownUnit(String),
    #[error("must be greater than zero (leave the limit out, or use \"unlimited\", for no limit)")]
    Zero,
    #[error("too large")]
    TooLarge,
    #[error("not a whole number of bytes")]
    FractionalBytes,
}

/// Parses a count rate: `"100/s"`, `"6000/min"`, `"10/h"`. Underscores may
/// group digits (`"100_000/s"`).
pub(crate) fn parse_count_rate(s: &str) -> Result<Rate, UnitError> {
    let (amount, period) = split_rate(s)?;
    let amount = parse_whole(amount)?;
    if amount == 0 {
        return Err(UnitError::Zero);
    }
    Ok(Rate { amount, period })
}

/// Parses a byte rate: `"10MB/s"`, `"1.5 GiB/min"`, `"500KB/s"`, `"64000/s"`
/// (plain bytes).
pub(crate) fn parse_byte_rate(s: &str) -> Result<Rate, UnitError> {
    let (amount, period) = split_rate(s)?;
    let amount = parse_size(amount)?;
    Ok(Rate { amount, period })
}

fn split_rate(s: &str) -> Result<(&str, Period), UnitError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UnitError::Empty);
    }
    match s.split_once('/') {
        Some((amount, period)) => Ok((amount.trim(), Period::parse(period)?)),
        None => Err(UnitError::MissingPeriod(s.to_owned())),
    }
}

fn parse_whole(s: &str) -> Result<u64, UnitError> {
    if s.trim_start().starts_with('-') {
        return Err(UnitError::Negative(s.to_owned()));
    }
    let digits: String = s.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::NotANumber(s.to_owned()));
    }
    digits.parse::<u64>().map_err(|_| UnitError::TooLarge)
}

/// Parses a size in bytes: `"1500"`, `"64KiB"`, `"10MB"`, `"1.5 GiB"`.
/// KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024. Zero is rejected.
pub(crate) fn parse_size(s: &str) -> Result<u64, UnitError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UnitError::Empty);
    }
    if s.starts_with('-') {
        return Err(UnitError::Negative(s.to_owned()));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        // "1e30GB", "1,5MB", "2+3": the number did not end where the unit starts.
        other if other.contains(|c: char| c.is_ascii_digit() || "+-.,".contains(c)) => {
            return Err(UnitError::NotADecimal(s.to_owned()));
        }
        other => return Err(UnitError::UnknownUnit(other.to_owned())),
    };
    let number: String = number.chars().filter(|&c| c != '_').collect();
    if number.is_empty() {
        return Err(UnitError::NotADecimal(s.to_owned()));
    }
    let bytes = match number.split_once('.') {
        None => parse_whole(&number)?
            .checked_mul(multiplier)
            .ok_or(UnitError::TooLarge)?,
        Some((int, frac)) => {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UnitError::NotADecimal(number));
            }
            let int = if int.is_empty() {
                0
            } else {
                parse_whole(int).map_err(|_| UnitError::NotADecimal(number.clone()))?
            };
            let scale = 10u128.pow(frac.len() as u32);
            let frac: u128 = frac
                .parse()
                .map_err(|_| UnitError::NotADecimal(number.clone()))?;
            let total = (int as u128 * scale + frac) * multiplier as u128;
            if !total.is_multiple_of(scale) {
                return Err(UnitError::FractionalBytes);
            }
            u64::try_from(total / scale).map_err(|_| UnitError::TooLarge)?
        }
    };
    if bytes == 0 {
        return Err(UnitError::Zero);
    }
    Ok(bytes)
}

/// The canonical spelling of a count rate: `"100/s"`.
pub(crate) fn format_count_rate(rate: &Rate) -> String {
    format!("{}/{}", rate.amount, rate.period.suffix())
}

/// The canonical spelling of a byte rate, in the largest unit that divides it
/// exactly: `"10MB/s"`, `"64KiB/s"`, `"1500B/s"`.
pub(crate) fn format_byte_rate(rate: &Rate) -> String {
    format!(
        "{}/{}",
        format_size_exact(rate.amount),
        rate.period.suffix()
    )
}

/// A byte count in the largest unit that divides it exactly: `"10MB"`, `"64KiB"`.
pub(crate) fn format_size_exact(bytes: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "KB"),
    ];
    for (size, name) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{name}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// A count for humans: `"950"`, `"1.2k"`, `"12.3k"`, `"4.5M"`, `"7.1G"`.
pub(crate) fn human_count(n: f64) -> String {
    scaled(n, 1000.0, &["", "k", "M", "G", "T", "P"], "")
}

/// A byte count for humans (powers of 1000): `"950 B"`, `"1.2 kB"`, `"10 MB"`.
pub(crate) fn human_bytes(n: f64) -> String {
    scaled(n, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB"], " ")
}

/// `"1.2k/s"`.
pub(crate) fn human_rate(per_second: f64) -> String {
    format!("{}/s", human_count(per_second))
}

/// `"10 MB/s"`.
pub(crate) fn human_byte_rate(per_second: f64) -> String {
    format!("{}/s", human_bytes(per_second))
}

fn scaled(n: f64, base: f64, units: &[&str], sep: &str) -> String {
    if !n.is_finite() {
        return "∞".to_owned();
    }
    let mut v = n.max(0.0);
    let mut i = 0;
    while v >= base * 0.9995 && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    let rounded = (v * 10.0).round() / 10.0;
    let number = if rounded >= 100.0 || rounded.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{rounded:.1}")
    };
    format!("{number}{sep}{}", units[i])
}

/// A duration for humans: `"45s"`, `"3m 12s"`, `"2h 5m"`, `"3d 4h"`.
pub(crate) fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Why a duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("missing unit (write e.g. \"250ms\" or \"1s\")")]
    MissingUnit,
    #[error("\"{0}\" is not a number")]
    NotANumber(String),
    #[error("\"{0}\" must not be negative")]
    Negative(String),
}

/// Parses a short duration: `"250ms"`, `"1s"`, `"1.5s"`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(DurationError::MissingUnit);
    };
    let number = number.trim();
    if number.starts_with('-') {
        return Err(DurationError::Negative(number.to_owned()));
    }
    let v: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && !number.starts_with('+'))
        .filter(|v: &f64| (v * scale) < 1e9)
        .ok_or_else(|| DurationError::NotANumber(number.to_owned()))?;
    Ok(std::time::Duration::from_secs_f64(v * scale))
}

/// Parses an age: `"90s"`, `"15m"`, `"2h"`, `"7d"` (whole numbers).
pub(crate) fn parse_age(s: &str) -> Result<std::time::Duration, DurationError> {
    let t = s.trim();
    let (number, scale) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86_400),
        _ => return Err(DurationError::MissingUnit),
    };
    if number.starts_with('-') {
        return Err(DurationError::Negative(number.to_owned()));
    }
    let v: u64 = number
        .parse()
        .ok()
        .filter(|_| !number.starts_with('+'))
        .filter(|v: &u64| v.checked_mul(scale).is_some())
        .ok_or_else(|| DurationError::NotANumber(number.to_owned()))?;
    Ok(std::time::Duration::from_secs(v * scale))
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        use std::time::Duration;
        assert_eq!(parse_age("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age(" 2h ").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_age("10").unwrap_err(), DurationError::MissingUnit);
        assert!(matches!(parse_age("-1h"), Err(DurationError::Negative(_))));
        assert!(matches!(
            parse_age("1.5h"),
            Err(DurationError::NotANumber(_))
        ));
        assert!(matches!(
            parse_age("10ms"),
            Err(DurationError::NotANumber(_))
        ));
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(" 1s ").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        let err = |s| parse_duration(s).unwrap_err().to_string();
        assert!(err("250").contains("missing unit"));
        assert!(err("xms").contains("not a number"));
        assert_eq!(err("-1s"), "\"-1\" must not be negative");
    }

    #[test]
    fn count_rates() {
        assert_eq!(parse_count_rate("100/s").unwrap(), Rate::per_second(100));
        assert_eq!(
            parse_count_rate(" 6000 / min ").unwrap(),
            Rate {
                amount: 6000,
                period: Period::Minute
            }
        );
        assert_eq!(parse_count_rate("10/h").unwrap().period, Period::Hour);
        assert_eq!(parse_count_rate("100_000/s").unwrap().amount, 100_000);
        assert_eq!(
            parse_count_rate("6000/min").unwrap().one_second_worth(),
            100
        );
        assert_eq!(parse_count_rate("1/h").unwrap().one_second_worth(), 1);
        assert_eq!(parse_count_rate("90/min").unwrap().one_second_worth(), 2);
        assert!((parse_count_rate("30/min").unwrap().per_second_f64() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn count_rate_errors() {
        let err = |s| parse_count_rate(s).unwrap_err().to_string();
        assert_eq!(err("100/x"), "unknown period \"x\" (use /s, /min or /h)");
        assert_eq!(
            err("100/sec"),
            "unknown period \"sec\" (use /s, /min or /h)"
        );
        assert!(err("100").starts_with("missing period"), "{}", err("100"));
        assert_eq!(err("abc/s"), "\"abc\" is not a whole number");
        assert_eq!(err("1.5/s"), "\"1.5\" is not a whole number");
        // Negative numbers are named for what they are (issue 12).
        assert_eq!(err("-1/s"), "\"-1\" must not be negative");
        assert_eq!(err("-5/s"), "\"-5\" must not be negative");
        assert!(err("0/s").starts_with("must be greater than zero"));
        assert_eq!(err(""), "empty value (write e.g. \"100/s\")");
        assert_eq!(err("99999999999999999999999/s"), "too large");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1500").unwrap(), 1500);
        assert_eq!(parse_size("1500B").unwrap(), 1500);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("10 MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5MB").unwrap(), 1_500_000);
        assert_eq!(parse_size("0.5KiB").unwrap(), 512);
        assert_eq!(parse_size("2KB").unwrap(), 2000);
    }

    #[test]
    fn size_errors() {
        let err = |s| parse_size(s).unwrap_err().to_string();
        assert_eq!(
            err("10XB"),
            "unknown unit \"XB\" (use B, KB, MB, GB, KiB, MiB or GiB)"
        );
        assert_eq!(
            err("10mb"),
            "unknown unit \"mb\" (use B, KB, MB, GB, KiB, MiB or GiB)"
        );
        assert_eq!(err("1.5B"), "not a whole number of bytes");
        assert_eq!(err("MB"), "\"MB\" is not a number");
        assert_eq!(err("1.2.3MB"), "\"1.2.3\" is not a number");
        assert!(err("0KB").starts_with("must be greater than zero"));
        assert_eq!(err("99999999999GiB"), "too large");
        // Not an unknown unit: not a number (issue 12).
        assert_eq!(err("1e30GB"), "\"1e30GB\" is not a number");
        assert_eq!(err("-5"), "\"-5\" must not be negative");
        assert_eq!(err("-5MB"), "\"-5MB\" must not be negative");
    }

    #[test]
    fn byte_rates() {
        let r = parse_byte_rate("10MB/s").unwrap();
        assert_eq!(r, Rate::per_second(10_000_000));
        assert_eq!(format_byte_rate(&r), "10MB/s");
        let r = parse_byte_rate("64KiB/min").unwrap();
        assert_eq!(r.amount, 65536);
        assert_eq!(format_byte_rate(&r), "64KiB/min");
        assert_eq!(format_byte_rate(&Rate::per_second(1500)), "1500B/s");
        assert_eq!(format_byte_rate(&Rate::per_second(1_500_000)), "1500KB/s");
        assert_eq!(
            parse_byte_rate("10MB/x").unwrap_err().to_string(),
            "unknown period \"x\" (use /s, /min or /h)"
        );
        assert_eq!(
            parse_byte_rate("10QB/s").unwrap_err().to_string(),
            "unknown unit \"QB\" (use B, KB, MB, GB, KiB, MiB or GiB)"
        );
    }

    #[test]
    fn canonical_forms_round_trip() {
        for s in ["100/s", "6000/min", "1/h"] {
            assert_eq!(format_count_rate(&parse_count_rate(s).unwrap()), s);
        }
        for s in ["10MB/s", "1GiB/h", "1500B/s", "64KiB/s"] {
            assert_eq!(format_byte_rate(&parse_byte_rate(s).unwrap()), s);
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_count(0.0), "0");
        assert_eq!(human_count(950.0), "950");
        assert_eq!(human_count(0.5), "0.5");
        assert_eq!(human_count(1234.0), "1.2k");
        assert_eq!(human_count(12_345.0), "12.3k");
        assert_eq!(human_count(1_000_000.0), "1M");
        assert_eq!(human_count(999_999.0), "1M");
        assert_eq!(human_rate(1200.0), "1.2k/s");
        assert_eq!(human_bytes(10_000_000.0), "10 MB");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_byte_rate(10_000_000.0), "10 MB/s");
        assert_eq!(human_byte_rate(1_500.0), "1.5 kB/s");
        assert_eq!(human_count(f64::INFINITY), "∞");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(192), "3m 12s");
        assert_eq!(human_duration(7500), "2h 5m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d 4h");
    }
}
