//! Durations as operators type them (`500ms`, `5s`, `2m`, `1h`, `1.5s`; no unit
//! means seconds), for every corekv command line and config file.

use std::time::Duration;

/// Parses `text`: a number (decimals allowed, at most nine places) with an
/// optional unit `ms`, `s`, `m` (or `min`) or `h`. Zero is allowed; callers
/// that need a positive bound check it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let not_a_number = || format!("{text:?} is not a duration like 500ms, 5s or 2m");
    if number.is_empty() {
        return Err(not_a_number());
    }
    let unit_nanos: u128 = match unit.trim() {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms, s, m or h")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 9 {
        return Err(not_a_number());
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| not_a_number())? };
    let fraction_nanos = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().map_err(|_| not_a_number())?;
        digits * unit_nanos / 10u128.pow(fraction.len() as u32)
    };
    let nanos = whole.saturating_mul(unit_nanos).saturating_add(fraction_nanos);
    let nanos = u64::try_from(nanos).map_err(|_| format!("{text:?} is out of range"))?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_decimals_and_refusals() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2 min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "1.2.3s", "5d", "-1s", ".s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
