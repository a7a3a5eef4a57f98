//! URL query-string decoding for the HTTP API.
//!
//! The REST signature (docs/protocol.md#rest-signing) is computed over the *decoded* query parameters, so the decoder
//! has to agree byte-for-byte with what every Pusher SDK signs: split on `&` only, split each pair at the first `=`,
//! and percent-decode with form semantics. Anything lenient here (duplicate keys, `;` separators, tolerated bad
//! escapes) would make two different parameter sets verify against one signature.

use std::collections::HashSet;
use std::fmt;

/// A decoded URL query string, as the REST signature check needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Wire order is kept so error messages and debugging show what the client actually sent.
    pairs: Vec<(String, String)>,
}

#[derive(Debug, PartialEq)]
pub enum QueryError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// The same (decoded) key appeared twice; carries the key.
    DuplicateKey(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::BadEscape => f.write_str("Invalid percent-escape in query string"),
            QueryError::NotUtf8 => f.write_str("Query string is not valid UTF-8 after decoding"),
            QueryError::DuplicateKey(k) => write!(f, "Duplicate query parameter: {k}"),
        }
    }
}

impl std::error::Error for QueryError {}

impl Query {
    /// Splits on '&' only (never ';', a legal channel-name char), each pair at the FIRST '=' (a pair with no '='
    /// has value ""), empty segments skipped, percent-decodes key and value with form semantics ('+' -> space).
    /// Duplicate keys are an error.
    pub fn parse(raw: &str) -> Result<Query, QueryError> {
        let mut pairs = Vec::new();
        let mut seen = HashSet::new();
        for segment in raw.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = segment.split_once('=').unwrap_or((segment, ""));
            let key = form_decode(k)?;
            let value = form_decode(v)?;
            // Rejected rather than "last wins": which copy got signed is ambiguous, so neither can be trusted.
            if !seen.insert(key.clone()) {
                return Err(QueryError::DuplicateKey(key));
            }
            pairs.push((key, value));
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Percent-decodes `s` without treating '+' as a space, since in a path '+' is a literal character.
pub fn percent_decode(s: &str) -> Result<String, QueryError> {
    // Fast path: most requests carry no escapes at all.
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&b| hex_val(b));
            let lo = bytes.get(i + 2).and_then(|&b| hex_val(b));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(QueryError::BadEscape),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::NotUtf8)
}

/// Form decoding: '+' must become a space *before* unescaping so that an encoded `%2B` stays a literal '+'.
fn form_decode(s: &str) -> Result<String, QueryError> {
    if s.contains('+') {
        percent_decode(&s.replace('+', " "))
    } else {
        percent_decode(s)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        Query::parse(raw).expect("valid query").pairs().to_vec()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn parses_in_wire_order() {
        let q = Query::parse("b=2&a=1&c=3").unwrap();
        assert_eq!(q.pairs(), &[p("b", "2"), p("a", "1"), p("c", "3")]);
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("z"), None);
        assert!(!q.is_empty());
    }

    #[test]
    fn empty_and_blank_segments() {
        assert!(Query::parse("").unwrap().is_empty());
        assert!(Query::parse("&&&").unwrap().is_empty());
        assert_eq!(pairs("&a=1&&b=2&"), vec![p("a", "1"), p("b", "2")]);
    }

    #[test]
    fn pair_without_equals_has_empty_value() {
        assert_eq!(pairs("flag&a="), vec![p("flag", ""), p("a", "")]);
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(
            pairs("filter_by_prefix=a=b"),
            vec![p("filter_by_prefix", "a=b")]
        );
        assert_eq!(pairs("x==y="), vec![p("x", "=y=")]);
    }

    #[test]
    fn semicolon_is_not_a_separator() {
        assert_eq!(
            pairs("filter_by_prefix=private-a;b&info=x"),
            vec![p("filter_by_prefix", "private-a;b"), p("info", "x")]
        );
    }

    #[test]
    fn plus_decodes_to_space_but_escaped_plus_stays() {
        assert_eq!(
            pairs("name=Something+else"),
            vec![p("name", "Something else")]
        );
        assert_eq!(pairs("a%2Bb=c%2bd"), vec![p("a+b", "c+d")]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            pairs("info=user_count%2Csubscription_count"),
            vec![p("info", "user_count,subscription_count")]
        );
        assert_eq!(pairs("k=%C3%A9%20x"), vec![p("k", "é x")]);
    }

    #[test]
    fn bad_escape_is_rejected() {
        for raw in ["a=%", "a=%4", "a=%zz", "a=%4g", "%=1", "a=b%"] {
            assert_eq!(Query::parse(raw), Err(QueryError::BadEscape), "{raw}");
        }
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert_eq!(Query::parse("a=%ff"), Err(QueryError::NotUtf8));
        assert_eq!(percent_decode("%C3"), Err(QueryError::NotUtf8));
    }

    #[test]
    fn duplicate_key_is_rejected() {
        assert_eq!(
            Query::parse("auth_key=a&x=1&auth_key=b"),
            Err(QueryError::DuplicateKey("auth_key".into()))
        );
        // Duplicates are detected after decoding, so an escaped spelling cannot sneak a second copy in.
        assert_eq!(
            Query::parse("info=a&%69nfo=b"),
            Err(QueryError::DuplicateKey("info".into()))
        );
    }

    #[test]
    fn path_decoding_keeps_plus() {
        assert_eq!(percent_decode("/a+b/c%3Bd").unwrap(), "/a+b/c;d");
        assert_eq!(percent_decode("/plain").unwrap(), "/plain");
        assert_eq!(percent_decode("/x%"), Err(QueryError::BadEscape));
    }
}
