//! Rule entries in the controller's JSON form (`{"type": "MATCH_…", …}`), as stored in network
//! records and accepted from the API.
//!
//! Reading is lenient like the stock controller's: fields go through the usual coercions and
//! missing ones read as 0. Writing gives the canonical form: match rules always carry `not` and
//! `or`, action rules only `type` and their fields. `INTEGER_RANGE` objects are understood but, as
//! in ZeroTier 1.14.1, never accepted.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

use crate::error::PostError;
use crate::json::{Inet, field, ip_to_string, json_bool, json_int, json_string, number_to_u64};
use crate::json::{parse_inet, strtoull};
use zt_proto::{
    Address, Mac,
    rules::{Forward, Rule, RuleKind, TagOp},
};

/// The JSON name of a rule type, `None` for types without one (PRIORITY and unknown types).
#[must_use]
pub fn rule_type_name(kind: &RuleKind) -> Option<&'static str> {
    use RuleKind as K;
    Some(match kind {
        K::Drop => "ACTION_DROP",
        K::Accept => "ACTION_ACCEPT",
        K::Tee(_) => "ACTION_TEE",
        K::Watch(_) => "ACTION_WATCH",
        K::Redirect(_) => "ACTION_REDIRECT",
        K::Break => "ACTION_BREAK",
        K::SourceAddress(_) => "MATCH_SOURCE_ZEROTIER_ADDRESS",
        K::DestAddress(_) => "MATCH_DEST_ZEROTIER_ADDRESS",
        K::VlanId(_) => "MATCH_VLAN_ID",
        K::VlanPcp(_) => "MATCH_VLAN_PCP",
        K::VlanDei(_) => "MATCH_VLAN_DEI",
        K::MacSource(_) => "MATCH_MAC_SOURCE",
        K::MacDest(_) => "MATCH_MAC_DEST",
        K::Ipv4Source(..) => "MATCH_IPV4_SOURCE",
        K::Ipv4Dest(..) => "MATCH_IPV4_DEST",
        K::Ipv6Source(..) => "MATCH_IPV6_SOURCE",
        K::Ipv6Dest(..) => "MATCH_IPV6_DEST",
        K::IpTos { .. } => "MATCH_IP_TOS",
        K::IpProtocol(_) => "MATCH_IP_PROTOCOL",
        K::EtherType(_) => "MATCH_ETHERTYPE",
        K::Icmp { .. } => "MATCH_ICMP",
        K::SourcePortRange(..) => "MATCH_IP_SOURCE_PORT_RANGE",
        K::DestPortRange(..) => "MATCH_IP_DEST_PORT_RANGE",
        K::Characteristics(_) => "MATCH_CHARACTERISTICS",
        K::FrameSizeRange(..) => "MATCH_FRAME_SIZE_RANGE",
        K::Random(_) => "MATCH_RANDOM",
        K::Tags { op, .. } => match op {
            TagOp::Difference => "MATCH_TAGS_DIFFERENCE",
            TagOp::BitwiseAnd => "MATCH_TAGS_BITWISE_AND",
            TagOp::BitwiseOr => "MATCH_TAGS_BITWISE_OR",
            TagOp::BitwiseXor => "MATCH_TAGS_BITWISE_XOR",
            TagOp::Equal => "MATCH_TAGS_EQUAL",
            TagOp::Sender => "MATCH_TAG_SENDER",
            TagOp::Receiver => "MATCH_TAG_RECEIVER",
        },
        K::IntegerRange { .. } => "INTEGER_RANGE",
        K::Priority | K::UnknownAction(_) | K::UnknownMatch(_) => return None,
    })
}

/// Reads one rule object; `None` if it is not an object, has an unknown `type`, or is an
/// `INTEGER_RANGE` (always refused by 1.14.1). A `MATCH_CHARACTERISTICS` whose `mask` is neither
/// a number nor a string also gives `None` here (the stock controller throws; see
/// [`parse_rule_checked`]).
#[must_use]
pub fn parse_rule(r: &Value) -> Option<Rule> {
    parse_rule_checked(r).ok().flatten()
}

/// Like [`parse_rule`], but reports the one case where the stock parser throws (a
/// `MATCH_CHARACTERISTICS` `mask` that is neither a number nor a string): the network POST then
/// fails with HTTP 500 and a config request is dropped without an answer.
///
/// # Errors
/// That type error, with nlohmann::json's message.
pub fn parse_rule_checked(r: &Value) -> Result<Option<Rule>, PostError> {
    use RuleKind as K;
    if !r.is_object() {
        return Ok(None);
    }
    let f = |k: &str| field(r, k);
    let int = |k: &str| json_int(f(k), 0);
    let u8f = |k: &str| (int(k) & 0xff) as u8;
    let u16f = |k: &str| (int(k) & 0xffff) as u16;
    let u32f = |k: &str| (int(k) & 0xffff_ffff) as u32;
    let hex_address = |k: &str| Address::from_u64_truncating(strtoull(&json_string(f(k), "0"), 16));
    let fwd = || Forward {
        address: hex_address("address"),
        flags: u32f("flags"),
        length: u16f("length"),
    };
    let range = || {
        let start = u16f("start");
        let end = (json_int(f("end"), u64::from(start)) & 0xffff) as u16;
        (start, end)
    };
    // An address match: the rule's "ip" (address/bits) into the variant `kind`.
    let v4 = |kind: fn(Ipv4Addr, u8) -> RuleKind| {
        let (ip, bits) = rule_ipv4(&json_string(f("ip"), "0.0.0.0"));
        kind(ip, bits)
    };
    let v6 = |kind: fn(Ipv6Addr, u8) -> RuleKind| {
        let (ip, bits) = rule_ipv6(&json_string(f("ip"), "::0"));
        kind(ip, bits)
    };
    let tag = |op: TagOp| K::Tags {
        op,
        id: u32f("id"),
        value: u32f("value"),
    };
    let ty = json_string(f("type"), "");
    let kind = match ty.as_str() {
        "ACTION_DROP" => K::Drop,
        "ACTION_ACCEPT" => K::Accept,
        "ACTION_TEE" => K::Tee(fwd()),
        "ACTION_WATCH" => K::Watch(fwd()),
        "ACTION_REDIRECT" => K::Redirect(Forward { length: 0, ..fwd() }),
        "ACTION_BREAK" => K::Break,
        "MATCH_SOURCE_ZEROTIER_ADDRESS" => K::SourceAddress(hex_address("zt")),
        "MATCH_DEST_ZEROTIER_ADDRESS" => K::DestAddress(hex_address("zt")),
        "MATCH_VLAN_ID" => K::VlanId(u16f("vlanId")),
        "MATCH_VLAN_PCP" => K::VlanPcp(u8f("vlanPcp")),
        "MATCH_VLAN_DEI" => K::VlanDei(u8f("vlanDei")),
        "MATCH_MAC_SOURCE" => K::MacSource(parse_mac(&json_string(f("mac"), "0"))),
        "MATCH_MAC_DEST" => K::MacDest(parse_mac(&json_string(f("mac"), "0"))),
        "MATCH_IPV4_SOURCE" => v4(K::Ipv4Source),
        "MATCH_IPV4_DEST" => v4(K::Ipv4Dest),
        "MATCH_IPV6_SOURCE" => v6(K::Ipv6Source),
        "MATCH_IPV6_DEST" => v6(K::Ipv6Dest),
        "MATCH_IP_TOS" => K::IpTos {
            mask: u8f("mask"),
            start: u8f("start"),
            end: u8f("end"),
        },
        "MATCH_IP_PROTOCOL" => K::IpProtocol(u8f("ipProtocol")),
        "MATCH_ETHERTYPE" => K::EtherType(u16f("etherType")),
        "MATCH_ICMP" => {
            let code = f("icmpCode");
            let (code, flags) = if code.is_null() {
                (0, 0)
            } else {
                ((json_int(code, 0) & 0xff) as u8, 0x01)
            };
            K::Icmp {
                icmp_type: u8f("icmpType"),
                code,
                flags,
            }
        }
        "MATCH_IP_SOURCE_PORT_RANGE" => {
            let (a, b) = range();
            K::SourcePortRange(a, b)
        }
        "MATCH_IP_DEST_PORT_RANGE" => {
            let (a, b) = range();
            K::DestPortRange(a, b)
        }
        "MATCH_CHARACTERISTICS" => K::Characteristics(match r.get("mask") {
            None => 0,
            Some(Value::Number(n)) => number_to_u64(n),
            Some(Value::String(s)) => strtoull(s, 16),
            Some(other) => return Err(PostError::type_must_be_string(other)),
        }),
        "MATCH_FRAME_SIZE_RANGE" => {
            let (a, b) = range();
            K::FrameSizeRange(a, b)
        }
        "MATCH_RANDOM" => K::Random(u32f("probability")),
        "MATCH_TAGS_DIFFERENCE" => tag(TagOp::Difference),
        "MATCH_TAGS_BITWISE_AND" => tag(TagOp::BitwiseAnd),
        "MATCH_TAGS_BITWISE_OR" => tag(TagOp::BitwiseOr),
        "MATCH_TAGS_BITWISE_XOR" => tag(TagOp::BitwiseXor),
        "MATCH_TAGS_EQUAL" => tag(TagOp::Equal),
        "MATCH_TAG_SENDER" => tag(TagOp::Sender),
        "MATCH_TAG_RECEIVER" => tag(TagOp::Receiver),
        // INTEGER_RANGE is read by 1.14.1 but then refused; every other name is unknown.
        _ => return Ok(None),
    };
    Ok(Some(Rule {
        not: json_bool(f("not"), false),
        or: json_bool(f("or"), false),
        kind,
    }))
}

/// A MAC from text: `:` and `-` removed, then hex pairs (a non-hex digit counts as 0, an odd
/// last digit is ignored, missing bytes are 0).
fn parse_mac(s: &str) -> Mac {
    let digits: Vec<u8> = s
        .bytes()
        .take_while(|&c| c != 0)
        .filter(|&c| c != b':' && c != b'-')
        .collect();
    let nibble = |c: u8| char::from(c).to_digit(16).unwrap_or(0) as u8;
    let mut b = [0u8; 6];
    for (i, pair) in digits.chunks_exact(2).take(6).enumerate() {
        b[i] = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Mac::from_bytes(&b)
}

/// An IPv4 rule operand: an IPv6 text reads as 0.0.0.0 (the stock code reinterprets the socket
/// address), the prefix is the port's low byte, at most 32.
fn rule_ipv4(s: &str) -> (Ipv4Addr, u8) {
    let a = parse_inet(s);
    let ip = match a {
        Inet::V4(ip, _) => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    (ip, ((a.port() & 0xff) as u8).min(32))
}

/// An IPv6 rule operand: an IPv4 text reads as `::`, the prefix is the port's low byte, at most
/// 128.
fn rule_ipv6(s: &str) -> (Ipv6Addr, u8) {
    let a = parse_inet(s);
    let ip = match a {
        Inet::V6(ip, _) => ip,
        _ => Ipv6Addr::UNSPECIFIED,
    };
    (ip, ((a.port() & 0xff) as u8).min(128))
}

/// The canonical JSON object of a rule. Types without a JSON name (PRIORITY, unknown types)
/// give an empty object, as the stock renderer does.
#[must_use]
pub fn render_rule(rule: &Rule) -> Value {
    use RuleKind as K;
    let Some(name) = rule_type_name(&rule.kind) else {
        return Value::Object(Map::new());
    };
    let mut o = Map::new();
    o.insert("type".into(), json!(name));
    let mut put = |k: &str, v: Value| {
        o.insert(k.into(), v);
    };
    match rule.kind {
        K::Tee(fw) | K::Watch(fw) => {
            put("address", json!(fw.address.to_string()));
            put("flags", json!(fw.flags));
            put("length", json!(fw.length));
        }
        K::Redirect(fw) => {
            put("address", json!(fw.address.to_string()));
            put("flags", json!(fw.flags));
        }
        K::SourceAddress(a) | K::DestAddress(a) => put("zt", json!(a.to_string())),
        K::VlanId(v) => put("vlanId", json!(v)),
        K::VlanPcp(v) => put("vlanPcp", json!(v)),
        K::VlanDei(v) => put("vlanDei", json!(v)),
        K::MacSource(m) | K::MacDest(m) => put("mac", json!(m.to_string())),
        K::Ipv4Source(ip, bits) | K::Ipv4Dest(ip, bits) => {
            put("ip", json!(format!("{ip}/{bits}")));
        }
        K::Ipv6Source(ip, bits) | K::Ipv6Dest(ip, bits) => {
            put("ip", json!(format!("{}/{bits}", ip_to_string(ip.into()))));
        }
        K::IpTos { mask, start, end } => {
            put("mask", json!(mask));
            put("start", json!(start));
            put("end", json!(end));
        }
        K::IpProtocol(p) => put("ipProtocol", json!(p)),
        K::EtherType(t) => put("etherType", json!(t)),
        K::Icmp {
            icmp_type,
            code,
            flags,
        } => {
            put("icmpType", json!(icmp_type));
            put(
                "icmpCode",
                if flags & 0x01 != 0 {
                    json!(code)
                } else {
                    Value::Null
                },
            );
        }
        K::SourcePortRange(a, b) | K::DestPortRange(a, b) | K::FrameSizeRange(a, b) => {
            put("start", json!(a));
            put("end", json!(b));
        }
        K::Characteristics(m) => put("mask", json!(format!("{m:016x}"))),
        K::Random(p) => put("probability", json!(p)),
        K::Tags { id, value, .. } => {
            put("id", json!(id));
            put("value", json!(value));
        }
        K::IntegerRange {
            start,
            end,
            index,
            format,
        } => {
            put("start", json!(format!("{start:016x}")));
            put(
                "end",
                json!(format!("{:016x}", start.wrapping_add(u64::from(end)))),
            );
            put("idx", json!(index));
            put("little", json!(format & 0x80 != 0));
            put("bits", json!((format & 63) + 1));
        }
        K::Drop | K::Accept | K::Break | K::Priority | K::UnknownAction(_) | K::UnknownMatch(_) => {
        }
    }
    if !rule.is_action() {
        o.insert("not".into(), json!(rule.not));
        o.insert("or".into(), json!(rule.or));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_proto::rules::{CHAR_INBOUND, CHAR_TCP_SYN};

    fn every_type() -> Vec<Rule> {
        let a = Address::new(0x0089_e92c_eee5).unwrap();
        let fw = Forward {
            address: a,
            flags: 7,
            length: 128,
        };
        let tag = |op| RuleKind::Tags {
            op,
            id: 1000,
            value: 0xffff_fffe,
        };
        vec![
            Rule::new(RuleKind::Drop),
            Rule::new(RuleKind::Accept),
            Rule::new(RuleKind::Tee(fw)),
            Rule::new(RuleKind::Watch(fw)),
            Rule::new(RuleKind::Redirect(Forward { length: 0, ..fw })),
            Rule::new(RuleKind::Break),
            Rule::new(RuleKind::SourceAddress(a)),
            Rule::not(RuleKind::DestAddress(a)),
            Rule::or(RuleKind::VlanId(4000)),
            Rule::new(RuleKind::VlanPcp(7)),
            Rule::new(RuleKind::VlanDei(1)),
            Rule::new(RuleKind::MacSource(Mac(0x0289_e930_0c27))),
            Rule::new(RuleKind::MacDest(Mac(0xffff_ffff_ffff))),
            Rule::new(RuleKind::Ipv4Source(Ipv4Addr::new(198, 18, 0, 0), 15)),
            Rule::new(RuleKind::Ipv4Dest(Ipv4Addr::new(10, 0, 0, 1), 32)),
            Rule::new(RuleKind::Ipv6Source("fd00::".parse().unwrap(), 8)),
            Rule::new(RuleKind::Ipv6Dest("fd80:56c2::1".parse().unwrap(), 128)),
            Rule::new(RuleKind::IpTos {
                mask: 0xfc,
                start: 8,
                end: 16,
            }),
            Rule::new(RuleKind::IpProtocol(17)),
            Rule::not(RuleKind::EtherType(0x0800)),
            Rule::new(RuleKind::Icmp {
                icmp_type: 8,
                code: 0,
                flags: 1,
            }),
            Rule::new(RuleKind::Icmp {
                icmp_type: 3,
                code: 0,
                flags: 0,
            }),
            Rule::new(RuleKind::SourcePortRange(1, 1024)),
            Rule::new(RuleKind::DestPortRange(22, 22)),
            Rule::new(RuleKind::Characteristics(CHAR_INBOUND | CHAR_TCP_SYN)),
            Rule::new(RuleKind::FrameSizeRange(0, 1500)),
            Rule::new(RuleKind::Random(0x7fff_ffff)),
            Rule::new(tag(TagOp::Difference)),
            Rule::new(tag(TagOp::BitwiseAnd)),
            Rule::new(tag(TagOp::BitwiseOr)),
            Rule::new(tag(TagOp::BitwiseXor)),
            Rule::new(tag(TagOp::Equal)),
            Rule::new(tag(TagOp::Sender)),
            Rule::or(tag(TagOp::Receiver)),
        ]
    }

    #[test]
    fn every_type_round_trips() {
        for rule in every_type() {
            let j = render_rule(&rule);
            assert_eq!(parse_rule(&j), Some(rule), "{j}");
            // Canonical: rendering the parsed form gives the same text.
            assert_eq!(render_rule(&parse_rule(&j).unwrap()), j);
        }
    }

    #[test]
    fn canonical_texts() {
        let r = |v: Value| render_rule(&parse_rule(&v).unwrap()).to_string();
        assert_eq!(
            r(json!({"type": "ACTION_ACCEPT"})),
            r#"{"type":"ACTION_ACCEPT"}"#
        );
        assert_eq!(
            r(json!({"type": "ACTION_DROP", "not": true, "or": true})),
            r#"{"type":"ACTION_DROP"}"#,
            "action rules drop not/or on output"
        );
        assert_eq!(
            r(json!({"type": "MATCH_ETHERTYPE", "etherType": "2048", "not": "true"})),
            r#"{"etherType":2048,"not":true,"or":false,"type":"MATCH_ETHERTYPE"}"#
        );
        assert_eq!(
            r(json!({"type": "ACTION_TEE", "address": "89E92CEEE5", "flags": 1, "length": 70000})),
            r#"{"address":"89e92ceee5","flags":1,"length":4464,"type":"ACTION_TEE"}"#
        );
        assert_eq!(
            r(json!({"type": "ACTION_REDIRECT", "address": "1", "length": 9})),
            r#"{"address":"0000000001","flags":0,"type":"ACTION_REDIRECT"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_ICMP", "icmpType": 8})),
            r#"{"icmpCode":null,"icmpType":8,"not":false,"or":false,"type":"MATCH_ICMP"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_ICMP", "icmpType": 8, "icmpCode": "x"})),
            r#"{"icmpCode":0,"icmpType":8,"not":false,"or":false,"type":"MATCH_ICMP"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_IP_DEST_PORT_RANGE", "start": 80})),
            r#"{"end":80,"not":false,"or":false,"start":80,"type":"MATCH_IP_DEST_PORT_RANGE"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_CHARACTERISTICS", "mask": 4})),
            r#"{"mask":"0000000000000004","not":false,"or":false,"type":"MATCH_CHARACTERISTICS"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_CHARACTERISTICS", "mask": "8000000000000002"})),
            r#"{"mask":"8000000000000002","not":false,"or":false,"type":"MATCH_CHARACTERISTICS"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_MAC_SOURCE", "mac": "02-89-E9-30-0C-27"})),
            r#"{"mac":"02:89:e9:30:0c:27","not":false,"or":false,"type":"MATCH_MAC_SOURCE"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_IPV4_SOURCE", "ip": "10.1.2.3/40"})),
            r#"{"ip":"10.1.2.3/32","not":false,"or":false,"type":"MATCH_IPV4_SOURCE"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_IPV4_DEST", "ip": "fd00::1/8"})),
            r#"{"ip":"0.0.0.0/8","not":false,"or":false,"type":"MATCH_IPV4_DEST"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_IPV6_DEST", "ip": "FD00:0:0::1/300"})),
            r#"{"ip":"fd00::1/44","not":false,"or":false,"type":"MATCH_IPV6_DEST"}"#
        );
        assert_eq!(
            r(json!({"type": "MATCH_IPV6_SOURCE"})),
            r#"{"ip":"::/0","not":false,"or":false,"type":"MATCH_IPV6_SOURCE"}"#
        );
    }

    #[test]
    fn refused_objects() {
        assert_eq!(parse_rule(&json!("ACTION_ACCEPT")), None);
        assert_eq!(parse_rule(&json!({"type": "ACTION_PRIORITY"})), None);
        assert_eq!(parse_rule(&json!({"type": 1})), None);
        assert_eq!(parse_rule(&json!({})), None);
        assert_eq!(
            parse_rule(&json!({"type": "INTEGER_RANGE", "start": 1, "end": 5, "bits": 8})),
            None
        );
        let err = parse_rule_checked(&json!({"type": "MATCH_CHARACTERISTICS", "mask": null}));
        assert_eq!(
            err.unwrap_err().to_string(),
            "[json.exception.type_error.302] type must be string, but is null"
        );
    }

    #[test]
    fn unrenderable_kinds() {
        assert_eq!(render_rule(&Rule::new(RuleKind::Priority)), json!({}));
        assert_eq!(
            render_rule(&Rule::new(RuleKind::UnknownMatch(60))),
            json!({})
        );
        let ir = Rule::new(RuleKind::IntegerRange {
            start: 10,
            end: 20,
            index: 3,
            format: 0x87,
        });
        assert_eq!(
            render_rule(&ir),
            json!({"type": "INTEGER_RANGE", "start": "000000000000000a", "end": "000000000000001e",
                   "idx": 3, "little": true, "bits": 8, "not": false, "or": false})
        );
    }
}
