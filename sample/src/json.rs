//! Hand-written JSON output, which is all this crate needs of JSON: string literals
//! escaped per RFC 8259, and `null` for what is absent.

/// `s` as a JSON string literal, quotes included.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            // The rest of C0 must be escaped; DEL and U+2028/9 are escaped so the text
            // is also safe to paste into JavaScript and terminals.
            c if c < ' ' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON string literal, or `null` for `None`.
pub fn string_or_null(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_only_quoted() {
        assert_eq!(string("web-abc"), r#""web-abc""#);
        assert_eq!(string(""), r#""""#);
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(string(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            string("a\nb\rc\td\u{08}e\u{0c}f\u{0}g\u{1f}h\u{7f}"),
            r#""a\nb\rc\td\be\ff\u0000g\u001fh\u007f""#
        );
    }

    #[test]
    fn unicode_passes_through_except_line_separators() {
        assert_eq!(string("héllo ⛴"), "\"héllo ⛴\"");
        assert_eq!(string("a\u{2028}b"), r#""a\u2028b""#);
    }

    #[test]
    fn absent_is_null() {
        assert_eq!(string_or_null(None), "null");
        assert_eq!(string_or_null(Some("x")), r#""x""#);
    }
}
