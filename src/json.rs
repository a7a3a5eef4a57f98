//! JSON shared by every layer: string escaping for the JSON we write by hand (frames, REST bodies, rosters; RFC 8259
//! §7), and the one door through which JSON from clients, publishers and files reaches sonic-rs.
//!
//! sonic-rs recurses once per nesting level while it skips a value it does not keep (a `LazyValue`, an unknown
//! key), and serde's depth limit does not cover that path: 20,000 `[` overflow a core's stack and abort the
//! process. So every parse of untrusted JSON goes through [`parse`] / [`parse_str`], which measure the nesting
//! depth in one flat pass first and refuse anything deeper than [`MAX_JSON_DEPTH`] before the parser sees it.

use serde::Deserialize;

/// Deepest nesting of arrays and objects accepted anywhere: far beyond any Pusher message or event payload, far
/// below what a core's stack can recurse through (see `config::CORE_STACK_BYTES`).
pub const MAX_JSON_DEPTH: usize = 64;

/// Why untrusted JSON was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Nested deeper than [`MAX_JSON_DEPTH`]; refused before parsing.
    TooDeep,
    /// Not JSON, or not the shape asked for.
    Invalid,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::TooDeep => write!(f, "JSON nested deeper than {MAX_JSON_DEPTH} levels"),
            JsonError::Invalid => f.write_str("invalid JSON"),
        }
    }
}

/// Parses untrusted JSON into `T` after checking its nesting depth and that it is UTF-8: sonic-rs hands out
/// string slices of the input (`LazyValue::as_raw_str`) without validating them, so bytes that are not UTF-8 must
/// never reach it.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Invalid)?;
    parse_str(text)
}

/// [`parse`] for text (already UTF-8).
pub fn parse_str<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, JsonError> {
    scan(text.as_bytes(), MAX_JSON_DEPTH, true)?;
    sonic_rs::from_str(text).map_err(|_| JsonError::Invalid)
}

/// [`parse`] keeping the parser's own message, which names the offending field (for configuration files).
pub fn parse_explained<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    scan(text.as_bytes(), MAX_JSON_DEPTH, true).map_err(|e| match e {
        JsonError::TooDeep => e.to_string(),
        JsonError::Invalid => "a string has a raw control character or a bad escape".into(),
    })?;
    let mut de = sonic_rs::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Why a JSON array was refused by [`array_items`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayError {
    /// Not an array, or malformed.
    Invalid,
    /// More than the allowed number of items; counting stopped there.
    TooMany,
}

/// The items of the JSON array `text`, lazily: reading stops at item `max + 1`, so an oversized array costs no
/// more than the allowed one. `text` must come from a document already checked by [`parse`].
pub fn array_items(text: &str, max: usize) -> Result<Vec<sonic_rs::LazyValue<'_>>, ArrayError> {
    if text.trim_ascii_start().as_bytes().first() != Some(&b'[') {
        return Err(ArrayError::Invalid);
    }
    let mut items = Vec::new();
    for item in sonic_rs::to_array_iter(text) {
        if items.len() == max {
            return Err(ArrayError::TooMany);
        }
        items.push(item.map_err(|_| ArrayError::Invalid)?);
    }
    Ok(items)
}

/// Fails if arrays and objects nest deeper than `max` anywhere in `bytes`. One pass, no recursion, no allocation;
/// brackets inside strings (escapes included) do not count. Malformed input that passes is left to the parser.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), JsonError> {
    scan(bytes, max, false)
}

/// The door's one pass over untrusted JSON: [`check_depth`], and with `strings` also refuses (`Invalid`) a string
/// holding a raw control character or an escape other than `\" \\ \/ \b \f \n \r \t` and `\uXXXX` (RFC 8259
/// §7; lone surrogate escapes are grammatical and pass). sonic-rs checks neither in a string it skips or hands
/// out raw (`LazyValue::as_raw_str`), and those tokens are relayed byte for byte into frames, webhooks and
/// rosters that others parse. No recursion, no allocation; an unterminated string is left to the parser.
fn scan(bytes: &[u8], max_depth: usize, strings: bool) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'"' => break,
                        b'\\' if strings => {
                            match bytes.get(i + 1) {
                                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                                Some(b'u') => {
                                    let hex = bytes.get(i + 2..i + 6).ok_or(JsonError::Invalid)?;
                                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                                        return Err(JsonError::Invalid);
                                    }
                                    i += 4;
                                }
                                _ => return Err(JsonError::Invalid),
                            }
                            i += 2;
                        }
                        b'\\' => i += 2,
                        0..=0x1f if strings => return Err(JsonError::Invalid),
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Appends `s` as the inside of a JSON string (no quotes).
pub fn escape_json_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `s` as a complete JSON string token.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_json_into(out, s);
    out.push(b'"');
}

/// [`push_json_string`] for text being built as a `String`.
pub fn push_json_string_into(out: &mut String, s: &str) {
    // SAFETY: only UTF-8 is appended: the bytes of `s` (a `str`) in whole-character runs, and ASCII escapes
    // (`escape_json_into` splits only before ASCII bytes, which are never inside a multi-byte character).
    push_json_string(unsafe { out.as_mut_vec() }, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_with_bad_escapes_or_raw_controls_are_refused() {
        for bad in [
            r#""\u00zz""#,
            r#"{"a":"\uzzzz"}"#,
            r#"["\x"]"#,
            r#""\u12""#,
            "\"tab\there\"",
            "{\"a\":\"\u{1}\"}",
        ] {
            assert_eq!(
                scan(bad.as_bytes(), MAX_JSON_DEPTH, true),
                Err(JsonError::Invalid),
                "{bad}"
            );
            assert_eq!(
                parse::<sonic_rs::Value>(bad.as_bytes()).err(),
                Some(JsonError::Invalid),
                "{bad}"
            );
        }
        for good in [
            r#""\u00e9 \" \\ \/ \b \f \n \r \t""#,
            r#"{"lone":"\ud800"}"#,
            r#"["\\", "\\\"", 1, true, null]"#,
            "\"tab\\there\" ",
        ] {
            assert_eq!(
                scan(good.as_bytes(), MAX_JSON_DEPTH, true),
                Ok(()),
                "{good}"
            );
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert_eq!(check_depth(b"[[1]]", 2), Ok(()));
        assert_eq!(check_depth(b"[[1]]", 1), Err(JsonError::TooDeep));
        assert_eq!(check_depth(br#"{"a":{"b":[]}}"#, 3), Ok(()));
        assert_eq!(
            check_depth(br#"{"a":{"b":[{}]}}"#, 3),
            Err(JsonError::TooDeep)
        );
        // Brackets and escaped quotes inside strings are text.
        assert_eq!(check_depth(br#"["[[[[\"[[[[", "{{{{"]"#, 1), Ok(()));
        assert_eq!(check_depth(br#"["\\", [[]]]"#, 2), Err(JsonError::TooDeep));
        // Unterminated strings and stray closers end the scan without panicking.
        assert_eq!(check_depth(br#"["abc\"#, 1), Ok(()));
        assert_eq!(check_depth(b"]]]]}}[", 1), Ok(()));
    }

    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        #[serde(borrow, default)]
        #[allow(dead_code)]
        data: Option<sonic_rs::LazyValue<'a>>,
    }

    /// `{"data":[[...]]}` with arrays nested `depth - 1` deep inside the object.
    fn nested(depth: usize) -> Vec<u8> {
        let mut doc = br#"{"data":"#.to_vec();
        doc.extend(std::iter::repeat_n(b'[', depth - 1));
        doc.extend(std::iter::repeat_n(b']', depth - 1));
        doc.push(b'}');
        doc
    }

    #[test]
    fn deep_documents_are_refused_before_the_parser_sees_them() {
        let mut deep = br#"{"event":"x","data":"#.to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        assert_eq!(parse::<Msg<'_>>(&deep).err(), Some(JsonError::TooDeep));
        assert_eq!(
            parse::<Msg<'_>>(&nested(MAX_JSON_DEPTH + 1)).err(),
            Some(JsonError::TooDeep)
        );
    }

    #[test]
    fn array_items_stop_after_the_limit() {
        let items = array_items(r#"[1, "a", {"b":[2]}]"#, 3).unwrap();
        let raw: Vec<&str> = items.iter().map(|i| i.as_raw_str()).collect();
        assert_eq!(raw, ["1", r#""a""#, r#"{"b":[2]}"#]);
        assert_eq!(array_items("[1,2,3,4]", 3).err(), Some(ArrayError::TooMany));
        // Stops before reaching the garbage that follows the limit.
        assert_eq!(array_items("[1,2,3,4,", 3).err(), Some(ArrayError::TooMany));
        assert_eq!(array_items("[]", 0).unwrap().len(), 0);
        assert_eq!(array_items("{}", 3).err(), Some(ArrayError::Invalid));
        assert_eq!(array_items("[1,", 3).err(), Some(ArrayError::Invalid));
    }

    #[test]
    fn string_tokens_append_to_strings() {
        let mut out = String::from("x:");
        push_json_string_into(&mut out, "é\"\u{1}");
        assert_eq!(out, "x:\"é\\\"\\u0001\"");
    }

    #[test]
    fn escaping_handles_controls_and_quotes() {
        let mut o = Vec::new();
        push_json_string(&mut o, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(o).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
