//! The value coercions and address text forms the stock controller applies to its JSON records.
//!
//! ZeroTier's controller reads every record field through three lenient converters (to bool, to
//! unsigned integer, to string) and parses IP text with its own `ip/port` reader. Reproducing
//! them exactly is what makes records written by UIs (which often send strings such as `"true"`
//! or `"32"`) come out the same as with the stock controller.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Number, Value};

/// A shared `null`, returned for absent keys (the stock reader sees absent keys as null).
pub static NULL: Value = Value::Null;

/// `v[key]`, or `null` if `v` is not an object or lacks the key.
#[must_use]
pub fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&NULL)
}

/// The text as a C string sees it: everything before the first NUL.
fn c_str(s: &str) -> &str {
    s.split('\0').next().unwrap_or("")
}

/// C `strtoull(s, NULL, radix)` as glibc does it: leading white space, an optional sign (a
/// minus negates modulo 2^64), an optional `0x` for base 16, then digits; overflow gives
/// `u64::MAX`; no digits gives 0.
#[must_use]
pub fn strtoull(s: &str, radix: u32) -> u64 {
    let b = c_str(s).as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        negative = b[i] == b'-';
        i += 1;
    }
    if radix == 16
        && b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(d) = b.get(i).and_then(|&c| char::from(c).to_digit(radix)) {
        match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if overflow {
        u64::MAX
    } else if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

/// Truncating double-to-signed conversion as x86-64 `cvttsd2si` does it (out of range and NaN
/// give `i64::MIN`).
fn cvttsd2si(d: f64) -> i64 {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    if d.is_nan() || !(-TWO63..TWO63).contains(&d) {
        i64::MIN
    } else {
        d as i64
    }
}

/// A JSON number converted to `u64` the way the stock code's C++ cast does (negative integers
/// wrap; fractions truncate).
#[must_use]
pub fn number_to_u64(n: &Number) -> u64 {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    if let Some(u) = n.as_u64() {
        u
    } else if let Some(i) = n.as_i64() {
        i as u64
    } else {
        let d = n.as_f64().unwrap_or(0.0);
        if d < TWO63 {
            cvttsd2si(d) as u64
        } else {
            (cvttsd2si(d - TWO63) as u64) ^ (1 << 63)
        }
    }
}

/// A JSON number converted to `i64` the way the stock code's C++ cast does.
#[must_use]
pub fn number_to_i64(n: &Number) -> i64 {
    if let Some(i) = n.as_i64() {
        i
    } else if let Some(u) = n.as_u64() {
        u as i64
    } else {
        cvttsd2si(n.as_f64().unwrap_or(0.0))
    }
}

/// The stock bool coercion (`jsonBool`): a boolean as is; a number is true if its unsigned
/// value is above 0; a string is true iff it starts with `t`, `T` or `1`; anything else is `dfl`.
#[must_use]
pub fn json_bool(v: &Value, dfl: bool) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => number_to_u64(n) > 0,
        Value::String(s) => matches!(c_str(s).as_bytes().first(), Some(b't' | b'T' | b'1')),
        _ => dfl,
    }
}

/// The stock unsigned-integer coercion (`jsonInt`): a number (cast), a decimal string
/// (`strtoull`), a boolean (1/0); anything else is `dfl`.
#[must_use]
pub fn json_int(v: &Value, dfl: u64) -> u64 {
    match v {
        Value::Number(n) => number_to_u64(n),
        Value::String(s) => strtoull(s, 10),
        Value::Bool(b) => u64::from(*b),
        _ => dfl,
    }
}

/// Like [`json_int`] but strings are hexadecimal (`jsonIntHex`, used for record IDs).
#[must_use]
pub fn json_int_hex(v: &Value, dfl: u64) -> u64 {
    match v {
        Value::String(s) => strtoull(s, 16),
        _ => json_int(v, dfl),
    }
}

/// The stock string coercion (`jsonString`): a string as is, a number printed as unsigned
/// decimal, a boolean as `"1"`/`"0"`; anything else is `dfl`.
#[must_use]
pub fn json_string(v: &Value, dfl: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_to_u64(n).to_string(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        _ => dfl.to_owned(),
    }
}

/// The type name nlohmann::json puts in its error messages.
#[must_use]
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    match (a.is_f64(), b.is_f64()) {
        (false, false) => match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => x == y,
            _ => number_to_i64(a) == number_to_i64(b),
        },
        _ => {
            let x = a.as_f64().unwrap_or(f64::NAN);
            let y = b.as_f64().unwrap_or(f64::NAN);
            x.partial_cmp(&y) == Some(Ordering::Equal)
        }
    }
}

/// Equality as nlohmann::json defines it: numbers compare by value across integer and floating
/// representations; everything else structurally.
#[must_use]
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Numeric comparison of a JSON number with an integer, as nlohmann's `<`/`>` do it.
#[must_use]
pub fn number_cmp_i64(n: &Number, x: i64) -> Option<Ordering> {
    if let Some(i) = n.as_i64() {
        Some(i.cmp(&x))
    } else if n.as_u64().is_some() {
        Some(Ordering::Greater)
    } else {
        n.as_f64().and_then(|f| f.partial_cmp(&(x as f64)))
    }
}

/// An address as ZeroTier's `InetAddress::fromString` reads it: `ip[/port]`, family chosen by
/// the presence of `:` (IPv6) or `.` (IPv4). An address text that fails to parse but has the
/// family character becomes the unspecified address of that family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inet {
    /// Empty, too long (64 bytes or more), or neither `:` nor `.`: no family.
    Nil,
    /// IPv4 address and port (the number after `/`, which ZeroTier uses as a prefix length).
    V4(Ipv4Addr, u16),
    /// IPv6 address and port.
    V6(Ipv6Addr, u16),
}

impl Inet {
    /// The IP, if there is a family.
    #[must_use]
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Inet::Nil => None,
            Inet::V4(ip, _) => Some(IpAddr::V4(ip)),
            Inet::V6(ip, _) => Some(IpAddr::V6(ip)),
        }
    }

    /// The port (prefix length); 0 for [`Inet::Nil`].
    #[must_use]
    pub fn port(self) -> u16 {
        match self {
            Inet::Nil => 0,
            Inet::V4(_, p) | Inet::V6(_, p) => p,
        }
    }
}

/// Parses `ip[/port]` exactly as ZeroTier's `InetAddress::fromString` does (see [`Inet`]).
#[must_use]
pub fn parse_inet(s: &str) -> Inet {
    let s = c_str(s);
    // The stock parser copies into a 64-byte buffer and gives up when the text does not fit.
    if s.is_empty() || s.len() >= 64 {
        return Inet::Nil;
    }
    let (ip, port) = match s.split_once('/') {
        Some((ip, port)) => (ip, (strtoull(port, 10) & 0xffff) as u16),
        None => (s, 0),
    };
    if ip.contains(':') {
        Inet::V6(ip.parse().unwrap_or(Ipv6Addr::UNSPECIFIED), port)
    } else if ip.contains('.') {
        Inet::V4(ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED), port)
    } else {
        Inet::Nil
    }
}

/// An IP address as glibc's `inet_ntop` prints it (the IPv6 form compresses the longest run of
/// two or more zero groups, the first on ties, and prints IPv4-compatible and IPv4-mapped
/// addresses with a dotted tail).
#[must_use]
pub fn ip_to_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => ipv6_to_string(v6),
    }
}

fn ipv6_to_string(ip: Ipv6Addr) -> String {
    let words = ip.segments();
    // Longest run of zero words (length ≥ 2), first one on ties.
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if words[i] == 0 {
            let start = i;
            while i < 8 && words[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_base = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_base = usize::MAX;
    }
    let in_best = |i: usize| best_base != usize::MAX && i >= best_base && i < best_base + best_len;
    let mut out = String::with_capacity(40);
    for i in 0..8 {
        if in_best(i) {
            if i == best_base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            let o = ip.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return out;
        }
        let _ = write!(out, "{:x}", words[i]);
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(':');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercions() {
        assert!(json_bool(&json!(true), false));
        assert!(json_bool(&json!(2), false));
        assert!(!json_bool(&json!(0), true));
        assert!(
            json_bool(&json!(-1), false),
            "negative numbers wrap to a huge unsigned value"
        );
        assert!(!json_bool(&json!(0.5), true), "fractions truncate");
        assert!(json_bool(&json!("true"), false));
        assert!(json_bool(&json!("T"), false));
        assert!(json_bool(&json!("1x"), false));
        assert!(!json_bool(&json!("yes"), true));
        assert!(!json_bool(&json!(""), true));
        assert!(json_bool(&json!(null), true));
        assert!(!json_bool(&json!([]), false));

        assert_eq!(json_int(&json!(42), 0), 42);
        assert_eq!(json_int(&json!("  42abc"), 0), 42);
        assert_eq!(json_int(&json!("x"), 7), 0);
        assert_eq!(json_int(&json!("-1"), 0), u64::MAX);
        assert_eq!(json_int(&json!("99999999999999999999999"), 0), u64::MAX);
        assert_eq!(json_int(&json!(true), 0), 1);
        assert_eq!(json_int(&json!(false), 5), 0);
        assert_eq!(json_int(&json!(null), 5), 5);
        assert_eq!(json_int(&json!({}), 5), 5);
        assert_eq!(json_int(&json!(-2), 0), u64::MAX - 1);
        assert_eq!(json_int(&json!(3.9), 0), 3);
        assert_eq!(json_int_hex(&json!("0x1f"), 0), 0x1f);
        assert_eq!(json_int_hex(&json!("8056c2e21c"), 0), 0x8056c2e21c);

        assert_eq!(json_string(&json!("a"), "d"), "a");
        assert_eq!(json_string(&json!(12), "d"), "12");
        assert_eq!(json_string(&json!(-1), "d"), "18446744073709551615");
        assert_eq!(json_string(&json!(true), "d"), "1");
        assert_eq!(json_string(&json!(null), "d"), "d");
        assert_eq!(json_string(&json!([1]), "d"), "d");
    }

    #[test]
    fn nlohmann_equality() {
        assert!(json_eq(
            &json!({"a": 1, "b": [1.0]}),
            &json!({"b": [1], "a": 1.0})
        ));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(json_eq(&json!(null), &json!(null)));
    }

    #[test]
    fn inet_parsing() {
        assert_eq!(
            parse_inet("10.1.2.3/24"),
            Inet::V4(Ipv4Addr::new(10, 1, 2, 3), 24)
        );
        assert_eq!(
            parse_inet("10.1.2.3"),
            Inet::V4(Ipv4Addr::new(10, 1, 2, 3), 0)
        );
        assert_eq!(parse_inet("10.1.2/8"), Inet::V4(Ipv4Addr::UNSPECIFIED, 8));
        assert_eq!(
            parse_inet("fd00::1/88"),
            Inet::V6("fd00::1".parse().unwrap(), 88)
        );
        assert_eq!(parse_inet("zz:zz"), Inet::V6(Ipv6Addr::UNSPECIFIED, 0));
        assert_eq!(
            parse_inet("1.2.3.4/70000"),
            Inet::V4(Ipv4Addr::new(1, 2, 3, 4), 4464)
        );
        assert_eq!(parse_inet("hello"), Inet::Nil);
        assert_eq!(parse_inet(""), Inet::Nil);
        assert_eq!(
            parse_inet(&format!("10.0.0.1/{}", "0".repeat(60))),
            Inet::Nil
        );
    }

    #[test]
    fn glibc_ntop() {
        let f = |s: &str| ip_to_string(s.parse().unwrap());
        assert_eq!(
            f("fd80:56c2:e21c:0:199:931a:2b3c:4d5e"),
            "fd80:56c2:e21c:0:199:931a:2b3c:4d5e"
        );
        assert_eq!(
            f("fc9c:56c2:e31a:2b3c:4d5e::1"),
            "fc9c:56c2:e31a:2b3c:4d5e::1"
        );
        assert_eq!(f("::"), "::");
        assert_eq!(f("::1"), "::1");
        assert_eq!(f("1::"), "1::");
        assert_eq!(f("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(f("1:0:0:2:0:0:3:4"), "1::2:0:0:3:4");
        assert_eq!(f("::ffff:10.0.0.1"), "::ffff:10.0.0.1");
        assert_eq!(f("::1:0"), "::0.1.0.0");
        assert_eq!(f("::102:304"), "::1.2.3.4");
        assert_eq!(f("10.0.0.1"), "10.0.0.1");
    }
}
