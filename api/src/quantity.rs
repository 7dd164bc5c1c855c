//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`, `1e3`), read exactly
//! and into numbers: CPU in millicores, everything else in plain units (bytes for
//! memory).
//!
//! The grammar is Kubernetes' own (`resource.ParseQuantity`):
//! `[+-]` digits with an optional `.` fraction, then one of the decimal suffixes
//! `n u m "" k M G T P E`, the binary ones `Ki Mi Gi Ti Pi Ei`, or an exponent
//! `e`/`E` followed by a signed integer. As in Kubernetes, a value never exceeds
//! 2^63-1 in magnitude: larger ones are capped there (so `9223372036854775807m`
//! twice is still "more than any node has", never a wrapped negative), and
//! fractions are rounded up (0.1m is 1m).

/// A parsed quantity: `sign × mantissa × 10^exp10 × 1024^bin`, with `inexact`
/// set when non-zero digits were dropped from the mantissa (so rounding up
/// still rounds up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i64,
    bin: u32,
    inexact: bool,
}

/// Significant digits kept exactly; beyond them a digit only sets `inexact`.
const KEPT_DIGITS: usize = 36;

impl Quantity {
    /// Reads `text`, or `None` if it is not a quantity in Kubernetes' grammar.
    pub fn parse(text: &str) -> Option<Quantity> {
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                pos += 1;
                true
            }
            Some(b'+') => {
                pos += 1;
                false
            }
            _ => false,
        };
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &text[frac_start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let suffix = &text[pos..];
        let (mut exp10, bin): (i64, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                // Kubernetes reads the exponent as a 32-bit integer.
                (i64::from(exp.parse::<i32>().ok()?), 0)
            }
            _ => return None,
        };
        let mut mantissa: u128 = 0;
        let mut kept = 0usize;
        let mut inexact = false;
        for (i, d) in int_digits.bytes().chain(frac_digits.bytes()).enumerate() {
            let digit = u128::from(d - b'0');
            let in_fraction = i >= int_digits.len();
            if kept < KEPT_DIGITS {
                if mantissa > 0 || digit > 0 {
                    mantissa = mantissa * 10 + digit;
                    kept += 1;
                } else if in_fraction {
                    // A leading zero of the fraction still shifts the value.
                    exp10 -= 1;
                }
                if in_fraction && (mantissa > 0 || digit > 0) {
                    exp10 -= 1;
                }
            } else {
                inexact |= digit > 0;
                if !in_fraction {
                    exp10 += 1;
                }
            }
        }
        Some(Quantity {
            negative,
            mantissa,
            exp10,
            bin,
            inexact,
        })
    }

    pub fn is_negative(&self) -> bool {
        self.negative && (self.mantissa > 0 || self.inexact)
    }

    /// The value times 10^`scale`, rounded up (away from zero), capped at
    /// ±(2^63-1).
    pub fn scaled(&self, scale: i64) -> i64 {
        const CAP: u128 = i64::MAX as u128;
        let mut m = self.mantissa;
        let mut sticky = self.inexact;
        for _ in 0..self.bin {
            m = m.saturating_mul(1024);
        }
        let exp = self.exp10.saturating_add(scale);
        if exp >= 0 {
            if m > 0 {
                for _ in 0..exp.min(40) {
                    m = m.saturating_mul(10);
                    if m > CAP {
                        break;
                    }
                }
            }
        } else {
            let mut left = exp.unsigned_abs();
            while left > 0 && m > 0 {
                sticky |= !m.is_multiple_of(10);
                m /= 10;
                left -= 1;
            }
            if left > 0 {
                // Divided down to nothing: only the sticky bit remains.
                m = 0;
            }
        }
        if sticky {
            m = m.saturating_add(1);
        }
        let magnitude = i64::try_from(m.min(CAP)).unwrap_or(i64::MAX);
        if self.negative { -magnitude } else { magnitude }
    }

    /// The value as a float (for display and comparisons, not for arithmetic).
    pub fn as_f64(&self) -> f64 {
        let v = self.mantissa as f64
            * 10f64.powi(self.exp10.clamp(-400, 400) as i32)
            * 1024f64.powi(self.bin as i32);
        let v = if v.is_finite() { v } else { f64::MAX };
        if self.negative { -v } else { v }
    }
}

/// Parses a quantity into its value in base units (`"128Mi"` → 134217728.0,
/// `"500m"` → 0.5). `None` when it is not a quantity.
pub fn parse(text: &str) -> Option<f64> {
    Quantity::parse(text).map(|q| q.as_f64())
}

/// CPU in millicores (`"250m"` → 250, `"2"` → 2000), rounded up and capped like
/// Kubernetes' `MilliValue`.
pub fn cpu_millis(text: &str) -> Option<i64> {
    Quantity::parse(text).map(|q| q.scaled(3))
}

/// Memory (or any integer quantity) in bytes, rounded up and capped like
/// Kubernetes' `Value`.
pub fn bytes(text: &str) -> Option<i64> {
    Quantity::parse(text).map(|q| q.scaled(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_scale_as_kubernetes_defines_them() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(bytes("128Mi"), Some(134_217_728));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(cpu_millis("0.1"), Some(100));
        assert_eq!(cpu_millis("1500m"), Some(1500));
        assert_eq!(cpu_millis(".5"), Some(500));
        assert_eq!(cpu_millis("5."), Some(5000));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(cpu_millis("0.0001"), Some(1), "rounded up to 1m");
        assert_eq!(cpu_millis("100n"), Some(1));
        assert_eq!(cpu_millis("0"), Some(0));
        assert_eq!(cpu_millis("0.000"), Some(0));
        assert_eq!(bytes("1e-3"), Some(1));
        assert_eq!(bytes("+7"), Some(7));
        assert_eq!(bytes("-7"), Some(-7));
    }

    #[test]
    fn huge_values_are_capped_instead_of_overflowing() {
        assert_eq!(cpu_millis("9223372036854775807m"), Some(i64::MAX));
        assert_eq!(cpu_millis("9223372036854775807"), Some(i64::MAX));
        assert_eq!(bytes("8Ei"), Some(i64::MAX));
        assert_eq!(bytes("1e2147483647"), Some(i64::MAX));
        assert_eq!(bytes(&"9".repeat(500)), Some(i64::MAX));
        assert_eq!(bytes(&format!("0.{}1", "0".repeat(500))), Some(1));
        assert_eq!(bytes("1e-2147483648"), Some(1));
        assert_eq!(cpu_millis("-9223372036854775807000"), Some(-i64::MAX));
    }

    #[test]
    fn garbage_is_not_a_quantity() {
        for bad in [
            "",
            "abc",
            "12XB",
            "1.2.3",
            "-",
            "Mi",
            "1e",
            "1e+",
            "1 Gi",
            " 1",
            "1Mi1",
            "--1",
            "1ki",
            "inf",
            "NaN",
            "1e99999999999",
            "0x10",
            ".",
            "+.",
            "1e1.5",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
