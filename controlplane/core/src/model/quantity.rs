//! Resource quantities: CPU (`100m`, `0.5`, `2`) and memory (`32Mi`, `1G`, `512`).
//!
//! The syntax is the subset of Kubernetes quantities that makes sense for requests: a plain
//! decimal number (no sign, no exponent) with an optional suffix. CPU becomes millicores and
//! memory bytes; both are parsed with exact integer arithmetic, so `0.1` is exactly `100m`.

/// Examples quoted in CPU errors.
const CPU_EXAMPLES: &str = r#"cores like "0.5", "2" or millicores like "100m""#;
/// Examples quoted in memory errors.
const MEMORY_EXAMPLES: &str = r#"bytes like "512", or a suffix: "32Mi", "1.5Gi" (Ki Mi Gi Ti Pi Ei) or "100M", "1G" (k M G T P E)"#;

/// Binary and decimal memory suffixes with their multipliers.
const MEMORY_SUFFIXES: [(&str, u128); 13] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// A non-negative decimal number as `digits / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    digits: u128,
    scale: u32,
}

/// Why a decimal number did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecimalError {
    Negative,
    Malformed,
    TooLarge,
}

/// Parses `123`, `1.5`, `.5` or `2.` (ASCII digits and at most one dot, no sign).
fn parse_decimal(s: &str) -> Result<Decimal, DecimalError> {
    if s.starts_with('-') {
        return Err(DecimalError::Negative);
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return Err(DecimalError::Malformed);
    }
    let mut digits: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(u128::from(b - b'0')))
            .ok_or(DecimalError::TooLarge)?;
    }
    let scale = u32::try_from(frac.len()).map_err(|_| DecimalError::TooLarge)?;
    Ok(Decimal { digits, scale })
}

impl Decimal {
    /// `self * multiplier` as an exact quotient and remainder of `10^scale`.
    ///
    /// A scale too large for `u128` means the divisor exceeds any product that fits, so the
    /// quotient is 0 and the remainder is the product itself.
    fn times(self, multiplier: u128) -> Result<(u128, u128), DecimalError> {
        let product = self
            .digits
            .checked_mul(multiplier)
            .ok_or(DecimalError::TooLarge)?;
        Ok(match 10u128.checked_pow(self.scale) {
            Some(divisor) => (product / divisor, product % divisor),
            None => (0, product),
        })
    }

    /// `self * multiplier` as an integer, or `None` if it is not one.
    fn times_exact(self, multiplier: u128) -> Result<Option<u128>, DecimalError> {
        let (quotient, remainder) = self.times(multiplier)?;
        Ok((remainder == 0).then_some(quotient))
    }

    /// `self * multiplier`, rounded up to an integer (as Kubernetes rounds memory).
    fn times_ceil(self, multiplier: u128) -> Result<u128, DecimalError> {
        let (quotient, remainder) = self.times(multiplier)?;
        Ok(quotient + u128::from(remainder != 0))
    }
}

/// The message for a quantity that is not acceptable, with examples of what is.
fn quantity_error(what: &str, s: &str, why: &str, examples: &str) -> String {
    format!(
        "invalid {what} quantity {}: {why}; expected {examples}",
        super::field::shorten(s)
    )
}

/// Turns a [`DecimalError`] into the user-facing message.
fn decimal_error(what: &str, s: &str, e: DecimalError, examples: &str) -> String {
    let why = match e {
        DecimalError::Negative => "must not be negative",
        DecimalError::Malformed => "not a number",
        DecimalError::TooLarge => "too large",
    };
    quantity_error(what, s, why, examples)
}

/// CPU quantity to millicores: `100m` (millicores), `0.5`, `1`, `2.25` (cores).
///
/// Rejects negative numbers, garbage, values that overflow `u64` and precision finer than one
/// millicore (`0.0001`, `1.5m`).
pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(quantity_error("CPU", s, "empty", CPU_EXAMPLES));
    }
    let (number, multiplier) = match text.strip_suffix('m') {
        Some(millis) => (millis, 1),
        None => (text, 1000),
    };
    let err = |e| decimal_error("CPU", s, e, CPU_EXAMPLES);
    let decimal = parse_decimal(number).map_err(err)?;
    let millis = decimal
        .times_exact(multiplier)
        .map_err(err)?
        .ok_or_else(|| {
            quantity_error("CPU", s, "finer than one millicore (0.001)", CPU_EXAMPLES)
        })?;
    u64::try_from(millis).map_err(|_| err(DecimalError::TooLarge))
}

/// Memory quantity to bytes: plain bytes (`512`), binary suffixes `Ki Mi Gi Ti Pi Ei`, decimal
/// suffixes `k`/`K M G T P E`, with an optional fraction (`1.5Gi`; fractional bytes round up).
///
/// Rejects negative numbers, garbage, unknown suffixes and values that overflow `u64`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(quantity_error("memory", s, "empty", MEMORY_EXAMPLES));
    }
    let (number, multiplier) = MEMORY_SUFFIXES
        .iter()
        .find_map(|&(suffix, mult)| text.strip_suffix(suffix).map(|n| (n, mult)))
        .unwrap_or((text, 1));
    let err = |e| decimal_error("memory", s, e, MEMORY_EXAMPLES);
    let bytes = parse_decimal(number)
        .and_then(|d| d.times_ceil(multiplier))
        .map_err(err)?;
    u64::try_from(bytes).map_err(|_| err(DecimalError::TooLarge))
}

/// Formats millicores the way users write them: whole cores as `2`, the rest as `250m`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with the largest binary suffix that divides them exactly (`32Mi`, `1536Ki`,
/// `1000`).
pub fn format_memory(bytes: u64) -> String {
    const BINARY: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes == 0 {
        return "0".to_string();
    }
    BINARY
        .iter()
        .find(|&&(_, shift)| bytes.trailing_zeros() >= shift)
        .map(|&(suffix, shift)| format!("{}{suffix}", bytes >> shift))
        .unwrap_or_else(|| bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_reads_cores_and_millicores() {
        assert_eq!(parse_cpu("100m"), Ok(100));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("1"), Ok(1000));
        assert_eq!(parse_cpu("2.25"), Ok(2250));
        assert_eq!(parse_cpu(".1"), Ok(100));
        assert_eq!(parse_cpu("0"), Ok(0));
        assert_eq!(parse_cpu(" 250m "), Ok(250));
        assert_eq!(parse_cpu("0.5000"), Ok(500));
    }

    #[test]
    fn cpu_rejects_bad_input_saying_why() {
        let cases = [
            ("", "empty"),
            ("-1", "must not be negative"),
            ("-100m", "must not be negative"),
            ("abc", "not a number"),
            ("1.2.3", "not a number"),
            ("m", "not a number"),
            ("1 core", "not a number"),
            ("1e3", "not a number"),
            ("0.0001", "finer than one millicore"),
            ("1.5m", "finer than one millicore"),
            ("99999999999999999999", "too large"),
            ("99999999999999999999999999999999999999999", "too large"),
            (
                "0.0000000000000000000000000000000000000000001",
                "finer than one millicore",
            ),
        ];
        for (input, why) in cases {
            let e = parse_cpu(input).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(e.contains("100m"), "{input:?} error gives examples: {e}");
        }
    }

    #[test]
    fn memory_reads_suffixes() {
        assert_eq!(parse_memory("512"), Ok(512));
        assert_eq!(parse_memory("32Mi"), Ok(32 << 20));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory("1Ki"), Ok(1024));
        assert_eq!(parse_memory("2Ei"), Ok(2 << 60));
        assert_eq!(parse_memory("1k"), Ok(1000));
        assert_eq!(parse_memory("1K"), Ok(1000));
        assert_eq!(parse_memory("100M"), Ok(100_000_000));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_memory("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_memory("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_memory("0.5"), Ok(1), "fractional bytes round up");
        assert_eq!(
            parse_memory("0.0000000000000000000000000000000000000000001"),
            Ok(1)
        );
    }

    #[test]
    fn memory_rejects_bad_input_saying_why() {
        let cases = [
            ("", "empty"),
            ("-1Mi", "must not be negative"),
            ("lots", "not a number"),
            ("32MB", "not a number"),
            ("32mi", "not a number"),
            ("Mi", "not a number"),
            ("16Ei", "too large"),
            ("18446744073709551616", "too large"),
        ];
        for (input, why) in cases {
            let e = parse_memory(input).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(e.contains("32Mi"), "{input:?} error gives examples: {e}");
        }
    }

    #[test]
    fn formats_like_users_write() {
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(250), "250m");
        assert_eq!(format_memory(32 << 20), "32Mi");
        assert_eq!(format_memory(1536 << 10), "1536Ki");
        assert_eq!(format_memory(1000), "1000");
        assert_eq!(format_memory(0), "0");
    }

    proptest! {
        #[test]
        fn cpu_roundtrips(millis in any::<u64>()) {
            prop_assert_eq!(parse_cpu(&format_cpu(millis)), Ok(millis));
        }

        #[test]
        fn cpu_cores_with_three_decimals_are_exact(whole in 0u64..1_000_000, frac in 0u64..1000) {
            prop_assert_eq!(parse_cpu(&format!("{whole}.{frac:03}")), Ok(whole * 1000 + frac));
        }

        #[test]
        fn memory_roundtrips(bytes in any::<u64>()) {
            prop_assert_eq!(parse_memory(&format_memory(bytes)), Ok(bytes));
        }

        #[test]
        fn memory_suffixes_multiply(n in 0u64..1_000_000, i in 0usize..MEMORY_SUFFIXES.len()) {
            let (suffix, mult) = MEMORY_SUFFIXES[i];
            let expected = u64::try_from(u128::from(n) * mult).ok();
            prop_assert_eq!(parse_memory(&format!("{n}{suffix}")).ok(), expected);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,12}") {
            let _ = parse_cpu(&s);
            let _ = parse_memory(&s);
        }
    }
}
