//! Kubernetes resource quantities (`100m`, `0.5`, `1Gi`, `1e3`, `129e6`, `128974848`), parsed
//! and compared exactly.
//!
//! A quantity is held as a whole number of nano-units in an `i128`, which is exact for every
//! value the API server accepts: like Kubernetes, precision below `1n` rounds up, and a
//! magnitude above 2⁶³−1 is out of range (Kubernetes would cap it; here it is refused, so a
//! capped value is never mistaken for the one the user wrote). Floating point is never
//! involved, so `0.1 + 0.2` problems cannot turn `129e6` into `128999999`.

use std::fmt;

/// Nano-units per unit.
const NANOS: i128 = 1_000_000_000;
/// The largest magnitude Kubernetes represents, in nano-units.
const MAX_NANOS: i128 = (i64::MAX as i128) * NANOS;
/// More significant digits than this cannot be exact within the range above.
const MAX_DIGITS: usize = 38;

/// An exact quantity, in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i128);

/// How a quantity was written, so a computed value reads like its source (`256Mi`, not
/// `268435456`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, …
    BinarySi,
    /// Powers of 1000: `m`, `k`, `M`, …, and plain or exponent notation.
    DecimalSi,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "{0:?} is not a quantity: expected a number with an optional suffix (m, k, Mi, Gi, e3, …)"
    )]
    Syntax(String),
    #[error("{0:?} is out of range: its magnitude exceeds 2^63-1")]
    OutOfRange(String),
}

impl Amount {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// Parses a quantity as the API server does.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        Self::parse_with_format(text).map(|(amount, _)| amount)
    }

    /// Parses a quantity and tells how it was written.
    pub fn parse_with_format(text: &str) -> Result<(Self, Format), QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_string());
        let out_of_range = || QuantityError::OutOfRange(text.to_string());
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return Err(syntax());
        }
        let (mut exp10, binary, format) = match suffix {
            "" => (0, 0, Format::DecimalSi),
            "n" => (-9, 0, Format::DecimalSi),
            "u" => (-6, 0, Format::DecimalSi),
            "m" => (-3, 0, Format::DecimalSi),
            "k" => (3, 0, Format::DecimalSi),
            "M" => (6, 0, Format::DecimalSi),
            "G" => (9, 0, Format::DecimalSi),
            "T" => (12, 0, Format::DecimalSi),
            "P" => (15, 0, Format::DecimalSi),
            "E" => (18, 0, Format::DecimalSi),
            "Ki" => (0, 1, Format::BinarySi),
            "Mi" => (0, 2, Format::BinarySi),
            "Gi" => (0, 3, Format::BinarySi),
            "Ti" => (0, 4, Format::BinarySi),
            "Pi" => (0, 5, Format::BinarySi),
            "Ei" => (0, 6, Format::BinarySi),
            exponent => (
                parse_exponent(exponent).ok_or_else(syntax)?,
                0,
                Format::DecimalSi,
            ),
        };
        // The mantissa's significant digits, without leading or trailing zeros.
        let digits = format!("{int_part}{frac_part}");
        exp10 -= frac_part.len() as i64;
        let digits = digits.trim_start_matches('0');
        let trimmed = digits.trim_end_matches('0');
        exp10 += (digits.len() - trimmed.len()) as i64;
        if trimmed.is_empty() {
            return Ok((Self::ZERO, format));
        }
        if trimmed.len() > MAX_DIGITS {
            return Err(out_of_range());
        }
        let mantissa: i128 = trimmed.parse().map_err(|_| syntax())?;
        let scaled = mantissa
            .checked_mul(1 << (10 * binary))
            .ok_or_else(out_of_range)?;
        // nanos = scaled × 10^(exp10 + 9), rounded up.
        let shift = exp10 + 9;
        let nanos = if shift >= 0 {
            u32::try_from(shift)
                .ok()
                .and_then(|s| 10i128.checked_pow(s))
                .and_then(|p| scaled.checked_mul(p))
                .ok_or_else(out_of_range)?
        } else {
            match u32::try_from(-shift)
                .ok()
                .and_then(|s| 10i128.checked_pow(s))
            {
                Some(divisor) => div_ceil(scaled, divisor),
                // Smaller than any representable fraction of a nano-unit: rounds up to 1n.
                None => 1,
            }
        };
        if nanos > MAX_NANOS {
            return Err(out_of_range());
        }
        Ok((Self(if negative { -nanos } else { nanos }), format))
    }

    /// The amount in nano-units.
    pub fn nanos(self) -> i128 {
        self.0
    }

    /// `self × ratio`, rounded down; `None` when it overflows.
    pub fn times(self, ratio: Amount) -> Option<Amount> {
        Some(Self(self.0.checked_mul(ratio.0)?.div_euclid(NANOS)))
    }

    /// `self ÷ ratio`, rounded up; `None` for a ratio of zero or on overflow.
    pub fn divided_by(self, ratio: Amount) -> Option<Amount> {
        if ratio.0 <= 0 {
            return None;
        }
        Some(Self(div_ceil(self.0.checked_mul(NANOS)?, ratio.0)))
    }

    /// The quantity written the canonical Kubernetes way: the largest suffix that keeps it
    /// exact (`256Mi`, `1500m`, `2`), binary suffixes only for binary sources.
    pub fn to_quantity(self, format: Format) -> String {
        const BINARY: [(&str, u32); 6] = [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ];
        const DECIMAL: [(&str, i128); 10] = [
            ("E", NANOS * 1_000_000_000_000_000_000),
            ("P", NANOS * 1_000_000_000_000_000),
            ("T", NANOS * 1_000_000_000_000),
            ("G", NANOS * 1_000_000_000),
            ("M", NANOS * 1_000_000),
            ("k", NANOS * 1_000),
            ("", NANOS),
            ("m", 1_000_000),
            ("u", 1_000),
            ("n", 1),
        ];
        if self.0 == 0 {
            return "0".to_string();
        }
        if format == Format::BinarySi && self.0 % NANOS == 0 {
            let units = self.0 / NANOS;
            for (suffix, bits) in BINARY {
                if units % (1 << bits) == 0 {
                    return format!("{}{suffix}", units >> bits);
                }
            }
        }
        DECIMAL
            .iter()
            .find(|(_, unit)| self.0 % unit == 0)
            .map(|(suffix, unit)| format!("{}{suffix}", self.0 / unit))
            .expect("every amount is a whole number of nano-units")
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_quantity(Format::DecimalSi))
    }
}

/// The integer after `e` or `E` in `1e3`, `5E-2`.
fn parse_exponent(suffix: &str) -> Option<i64> {
    let digits = suffix.strip_prefix(['e', 'E'])?;
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) || unsigned.len() > 6 {
        return None;
    }
    digits.parse().ok()
}

/// `a ÷ b` rounded towards +∞, for `b > 0`.
fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nanos(text: &str) -> i128 {
        Amount::parse(text)
            .unwrap_or_else(|err| panic!("{err}"))
            .nanos()
    }

    #[test]
    fn the_issues_examples() {
        assert_eq!(nanos("100m"), 100_000_000);
        assert_eq!(nanos("0.5"), 500_000_000);
        assert_eq!(nanos("1Gi"), (1 << 30) * NANOS);
        assert_eq!(nanos("1e3"), 1_000 * NANOS);
        assert_eq!(nanos("129e6"), 129_000_000 * NANOS);
        assert_eq!(nanos("128974848"), 128_974_848 * NANOS);
        // The Kubernetes documentation's example: "roughly the same value", told apart exactly.
        assert_eq!(
            Amount::parse("128974848").unwrap(),
            Amount::parse("123Mi").unwrap()
        );
        assert!(Amount::parse("123Mi").unwrap() < Amount::parse("129e6").unwrap());
        assert_eq!(
            Amount::parse("129M").unwrap(),
            Amount::parse("129e6").unwrap()
        );
    }

    #[test]
    fn every_suffix() {
        let cases = [
            ("1n", 1),
            ("1u", 1_000),
            ("1m", 1_000_000),
            ("1", NANOS),
            ("1k", NANOS * 1_000),
            ("1M", NANOS * 1_000_000),
            ("1G", NANOS * 1_000_000_000),
            ("1T", NANOS * 1_000_000_000_000),
            ("1P", NANOS * 1_000_000_000_000_000),
            ("1E", NANOS * 1_000_000_000_000_000_000),
            ("1Ki", NANOS << 10),
            ("1Mi", NANOS << 20),
            ("1Ti", NANOS << 40),
            ("1Pi", NANOS << 50),
            ("1Ei", NANOS << 60),
            ("1E3", NANOS * 1_000),
            ("1e-3", 1_000_000),
            ("1e+3", NANOS * 1_000),
        ];
        for (text, expected) in cases {
            assert_eq!(nanos(text), expected, "{text}");
        }
    }

    #[test]
    fn decimals_signs_and_zeros() {
        assert_eq!(nanos("1.5Gi"), 3 * (NANOS << 29));
        assert_eq!(nanos(".5"), NANOS / 2);
        assert_eq!(nanos("5."), 5 * NANOS);
        assert_eq!(nanos("0.50"), NANOS / 2);
        assert_eq!(nanos("000100m"), 100_000_000);
        assert_eq!(nanos("-1.5"), -1_500_000_000);
        assert_eq!(nanos("+2"), 2 * NANOS);
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("0Mi"), 0);
        assert_eq!(nanos("0.000e9"), 0);
    }

    #[test]
    fn precision_below_a_nano_rounds_up_like_kubernetes() {
        assert_eq!(nanos("0.1n"), 1);
        assert_eq!(nanos("1.5n"), 2);
        assert_eq!(nanos("1e-30"), 1);
        assert_eq!(nanos("0.0000000011"), 2);
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        for text in [
            "",
            "m",
            "Mi",
            "1.2.3",
            "1MB",
            "1 Gi",
            "1mi",
            "1KI",
            "e3",
            "1e",
            "1e+",
            "1e1.5",
            "--1",
            "0x10",
            "1k5",
            "∞",
            "1e9999999",
        ] {
            assert!(
                matches!(Amount::parse(text), Err(QuantityError::Syntax(_))),
                "{text:?} must not parse: {:?}",
                Amount::parse(text)
            );
        }
    }

    #[test]
    fn beyond_2_pow_63_is_out_of_range() {
        assert_eq!(nanos("9223372036854775807"), MAX_NANOS);
        for text in [
            "9223372036854775808",
            "8Ei",
            "10E",
            "1e19",
            "1e400",
            "1000000000000000000000000000000000000000",
        ] {
            assert!(
                matches!(Amount::parse(text), Err(QuantityError::OutOfRange(_))),
                "{text}: {:?}",
                Amount::parse(text)
            );
        }
    }

    #[test]
    fn canonical_formatting() {
        let show = |text: &str| {
            let (amount, format) = Amount::parse_with_format(text).unwrap();
            amount.to_quantity(format)
        };
        assert_eq!(show("256Mi"), "256Mi");
        assert_eq!(show("1024Mi"), "1Gi");
        assert_eq!(show("1.5Gi"), "1536Mi");
        assert_eq!(show("0.5"), "500m");
        assert_eq!(show("1500m"), "1500m");
        assert_eq!(show("2000m"), "2");
        assert_eq!(show("129e6"), "129M");
        assert_eq!(show("128974848"), "128974848");
        assert_eq!(show("0.1n"), "1n");
        assert_eq!(show("0"), "0");
        assert_eq!(show("-1.5"), "-1500m");
        assert_eq!(
            Amount::parse("1.5Ki")
                .unwrap()
                .to_quantity(Format::BinarySi),
            "1536"
        );
    }

    #[test]
    fn ratios() {
        let two = Amount::parse("2").unwrap();
        let q = |s| Amount::parse(s).unwrap();
        assert_eq!(q("128Mi").times(two), Some(q("256Mi")));
        assert_eq!(q("100m").times(q("1.5")), Some(q("150m")));
        assert_eq!(q("1Gi").divided_by(two), Some(q("512Mi")));
        assert_eq!(q("1n").divided_by(two), Some(q("1n")), "rounds up");
        assert_eq!(q("1").divided_by(Amount::ZERO), None);
    }

    proptest! {
        /// Whatever is printed parses back to the same amount.
        #[test]
        fn formatting_round_trips(nanos in -MAX_NANOS..=MAX_NANOS, binary: bool) {
            let format = if binary { Format::BinarySi } else { Format::DecimalSi };
            let amount = Amount(nanos);
            prop_assert_eq!(Amount::parse(&amount.to_quantity(format)), Ok(amount));
        }

        /// Integers written with different suffixes compare as their values do.
        #[test]
        fn suffixes_scale_exactly(units in 0i64..1_000_000, index in 0usize..9) {
            let (suffix, scale) = [
                ("n", 1), ("u", 1_000), ("m", 1_000_000), ("", NANOS), ("k", NANOS * 1_000),
                ("M", NANOS * 1_000_000), ("Ki", NANOS << 10), ("Mi", NANOS << 20), ("Gi", NANOS << 30),
            ][index];
            prop_assert_eq!(Amount::parse(&format!("{units}{suffix}")).unwrap().nanos(), units as i128 * scale);
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,24}") {
            let _ = Amount::parse(&text);
        }

        /// `a.b` with a decimal exponent means the same as the integer it denotes.
        #[test]
        fn exponent_and_plain_agree(mantissa in 0u32..1_000_000, exponent in 0u32..9) {
            let plain = Amount::parse(&(mantissa as i128 * 10i128.pow(exponent)).to_string()).unwrap();
            prop_assert_eq!(Amount::parse(&format!("{mantissa}e{exponent}")).unwrap(), plain);
        }
    }
}
