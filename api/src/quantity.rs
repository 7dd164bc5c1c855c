//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`, `1e3`), read into
//! numbers: CPU in millicores, everything else in plain units (bytes for memory).

/// Parses a quantity into its value in base units (`"128Mi"` → 134217728.0,
/// `"500m"` → 0.5). `None` when it is not a quantity.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number == "+" || number == "-" || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let v = value * factor;
    v.is_finite().then_some(v)
}

/// CPU in millicores (`"250m"` → 250, `"2"` → 2000), rounded up like Kubernetes.
pub fn cpu_millis(text: &str) -> Option<i64> {
    parse(text).map(|v| (v * 1000.0).ceil() as i64)
}

/// Memory (or any integer quantity) in bytes, rounded up.
pub fn bytes(text: &str) -> Option<i64> {
    parse(text).map(|v| v.ceil() as i64)
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
        assert_eq!(cpu_millis("0.1"), Some(100));
        assert_eq!(cpu_millis("1500m"), Some(1500));
    }

    #[test]
    fn garbage_is_not_a_quantity() {
        for bad in ["", "abc", "12XB", "1.2.3", "-", "Mi"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
