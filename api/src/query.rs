//! Query strings with repeated parameters kept in order (`command=sh&command=-c`),
//! which exec needs and a map of parameters would lose.

/// The decoded `(name, value)` pairs of a raw query string; `+` is a space.
pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_kept_in_order_and_decoded() {
        let p = pairs(Some("command=sh&command=-c&command=echo+a%26b&tty=true&x"));
        let commands: Vec<&str> = p
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(commands, ["sh", "-c", "echo a&b"]);
        assert_eq!(p.last(), Some(&("x".to_string(), String::new())));
        assert!(pairs(None).is_empty());
    }
}
