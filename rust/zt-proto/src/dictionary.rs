//! ZeroTier's dictionary: `key=value` entries separated by LF, values escaped so they can hold
//! binary data. Used by network-config requests and replies and by controller errors.
//!
//! Writing puts LF before every entry but the first and escapes NUL, CR, LF, `\` and `=` as `\0`,
//! `\r`, `\n`, `\\`, `\e`. Reading splits on CR or LF, stops at NUL, takes the first entry with a
//! key, and unescapes (`\` before any other byte yields that byte). Integers are lowercase hex
//! (written as 16 digits); booleans are `1`/`0` (read as true if the value starts with `1`, `t`
//! or `T`).

/// An ordered dictionary (duplicate keys are kept; lookups return the first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dictionary {
    entries: Vec<(String, Vec<u8>)>,
}

impl Dictionary {
    /// An empty dictionary.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the text form; never fails (malformed lines without `=` are skipped).
    #[must_use]
    pub fn parse(data: &[u8]) -> Self {
        let data = match data.iter().position(|&b| b == 0) {
            Some(n) => &data[..n],
            None => data,
        };
        let mut entries = Vec::new();
        for line in data.split(|&b| b == b'\n' || b == b'\r') {
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            if key.is_empty() {
                continue;
            }
            let mut value = Vec::with_capacity(line.len() - eq);
            let mut it = line[eq + 1..].iter();
            while let Some(&b) = it.next() {
                if b == b'\\' {
                    match it.next() {
                        Some(b'0') => value.push(0),
                        Some(b'r') => value.push(b'\r'),
                        Some(b'n') => value.push(b'\n'),
                        Some(b'e') => value.push(b'='),
                        Some(&other) => value.push(other),
                        None => {}
                    }
                } else {
                    value.push(b);
                }
            }
            entries.push((key, value));
        }
        Self { entries }
    }

    /// The text form.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            for &b in v {
                match b {
                    0 => out.extend_from_slice(b"\\0"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'=' => out.extend_from_slice(b"\\e"),
                    _ => out.push(b),
                }
            }
        }
        out
    }

    /// Appends a raw value (keys must not contain `=`, CR, LF or NUL; such keys are refused).
    pub fn add(&mut self, key: &str, value: &[u8]) -> bool {
        if key.is_empty() || key.bytes().any(|b| matches!(b, b'=' | b'\r' | b'\n' | 0)) {
            return false;
        }
        self.entries.push((key.to_owned(), value.to_vec()));
        true
    }

    /// Appends an unsigned integer as 16 lowercase hex digits.
    pub fn add_u64(&mut self, key: &str, v: u64) -> bool {
        self.add(key, format!("{v:016x}").as_bytes())
    }

    /// Appends a signed integer as 16 lowercase hex digits, negative ones with a leading `-`.
    pub(crate) fn add_i64(&mut self, key: &str, v: i64) -> bool {
        if v < 0 {
            self.add(key, format!("-{:016x}", v.unsigned_abs()).as_bytes())
        } else {
            self.add_u64(key, v as u64)
        }
    }

    /// Appends a boolean as `1`/`0`.
    pub(crate) fn add_bool(&mut self, key: &str, v: bool) -> bool {
        self.add(key, if v { b"1" } else { b"0" })
    }

    /// The first value for `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value for `key` as UTF-8 text (lossy).
    #[must_use]
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first value for `key` as a hex integer (leading hex digits, like `strtoull(…, 16)`).
    #[must_use]
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        let digits: String = v
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .map(|&b| b as char)
            .collect();
        if digits.is_empty() {
            return Some(0);
        }
        u64::from_str_radix(&digits[digits.len().saturating_sub(16)..], 16).ok()
    }

    /// The first value for `key` as a signed hex integer (`-` then hex for negative values).
    #[must_use]
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        let v = self.get(key)?;
        if v.first() == Some(&b'-') {
            let rest = Self::parse_hex(&v[1..]);
            Some((rest as i64).wrapping_neg())
        } else {
            Some(Self::parse_hex(v) as i64)
        }
    }

    fn parse_hex(v: &[u8]) -> u64 {
        v.iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .fold(0u64, |acc, &b| {
                let d = (b as char).to_digit(16).unwrap_or(0);
                acc.wrapping_shl(4) | u64::from(d)
            })
    }

    /// The first value for `key` as a boolean.
    #[must_use]
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)
            .map(|v| matches!(v.first(), Some(b'1' | b't' | b'T')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_binary_values() {
        let mut d = Dictionary::new();
        assert!(d.add("b", &[0, b'\r', b'\n', b'\\', b'=', 0xff, b'x']));
        assert!(d.add_u64("n", 0x1234));
        assert!(d.add_bool("t", true));
        assert!(!d.add("bad=key", b"v"));
        let text = d.to_bytes();
        assert_eq!(text, b"b=\\0\\r\\n\\\\\\e\xffx\nn=0000000000001234\nt=1");
        let back = Dictionary::parse(&text);
        assert_eq!(back, d);
        assert_eq!(back.get_u64("n"), Some(0x1234));
        assert_eq!(back.get_bool("t"), Some(true));
        assert_eq!(back.get("missing"), None);
    }

    #[test]
    fn reader_rules() {
        let d = Dictionary::parse(b"a=1\r\nnoequals\na=2\n=x\nv=\\q\\\x00ignored=1");
        assert_eq!(d.get("a"), Some(&b"1"[..]), "first entry wins");
        assert_eq!(
            d.get_str("v").as_deref(),
            Some("q"),
            "unknown escape yields the byte"
        );
        assert_eq!(d.get("ignored"), None, "NUL ends the dictionary");
        assert_eq!(
            Dictionary::parse(b"x=fffffffffffffffff1").get_u64("x"),
            Some(0xffff_ffff_ffff_fff1)
        );
        assert_eq!(Dictionary::parse(b"b=T").get_bool("b"), Some(true));
        assert_eq!(Dictionary::parse(b"b=0").get_bool("b"), Some(false));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(
            entries in proptest::collection::vec(("[a-zA-Z0-9_.]{1,8}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)), 0..8),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let _ = Dictionary::parse(&garbage);
            let mut d = Dictionary::new();
            for (k, v) in &entries {
                d.add(k, v);
            }
            proptest::prop_assert_eq!(Dictionary::parse(&d.to_bytes()), d);
        }
    }
}
