//! Request decisions end to end: records made through the POST functions, then [`decide`].

use super::records::{member_update_from_post, network_update_from_post};
use super::*;
use zt_proto::crypto::test_rng::TestRng;

const NWID: NetworkId = NetworkId(0x8056_c2e2_1c00_0001);
const T0: Timestamp = Timestamp(1_700_000_000_000);

fn node() -> Address {
    "1a2b3c4d5e".parse().unwrap()
}

fn identity(key_byte: u8) -> Identity {
    Identity::from_public_key(node(), [key_byte; 64])
}

/// Metadata as ZeroTier 1.14.1 sends it (optionally with extra entries).
fn metadata(extra: &[(&str, &str)]) -> Dictionary {
    let mut d = zt_proto::request_metadata((1, 14, 1));
    for (k, v) in extra {
        d.add(k, v.as_bytes());
    }
    d
}

fn network(body: Value) -> Value {
    let mut n = Value::Null;
    network_update_from_post(&mut n, NWID, &body, T0).unwrap();
    n
}

struct Run {
    id: Identity,
    md: Dictionary,
    genuine: bool,
    now: Timestamp,
    allocated: HashSet<IpAddr>,
    bridges: Vec<Address>,
}

impl Run {
    fn new() -> Self {
        Self {
            id: identity(7),
            md: metadata(&[]),
            genuine: true,
            now: T0 + 1000,
            allocated: HashSet::new(),
            bridges: Vec::new(),
        }
    }

    fn decide(&self, network: Option<&Value>, member: Option<&Value>) -> Outcome {
        let req = Request {
            network_id: NWID,
            identity: &self.id,
            metadata: &self.md,
            genuine: self.genuine,
            now: self.now,
        };
        let summary = NetworkSummary {
            allocated_ips: &self.allocated,
            active_bridges: &self.bridges,
        };
        decide(&req, network, member, &summary, &mut TestRng(42))
    }
}

fn plan(o: &Outcome) -> &ConfigPlan {
    match &o.decision {
        Decision::Authorized(p) => p,
        other => panic!("not authorized: {other:?}"),
    }
}

#[test]
fn unknown_network_is_not_found() {
    let r = Run::new();
    assert_eq!(r.decide(None, None).decision, Decision::NotFound);
    assert_eq!(r.decide(None, None).save, None);
    assert_eq!(
        r.decide(Some(&json!({})), None).decision,
        Decision::NotFound
    );
    assert_eq!(
        r.decide(Some(&json!([1])), None).decision,
        Decision::NotFound
    );
}

#[test]
fn pending_then_authorized_through_the_api() {
    let r = Run::new();
    let n = network(json!({"name": "lab"}));
    // First request: denied, saved as a pending member with the identity learned.
    let o = r.decide(Some(&n), None);
    assert_eq!(o.decision, Decision::AccessDenied);
    let mut stored = o.save.expect("a pending member is saved");
    assert_eq!(stored["identity"], r.id.to_public_string());
    assert_eq!(stored["authorized"], false);
    assert_eq!(stored["revision"], 1);
    assert_eq!(
        stored["vMajor"], -1,
        "versions are only recorded once authorized"
    );
    assert_eq!(stored["id"], "1a2b3c4d5e");
    assert_eq!(stored["nwid"], "8056c2e21c000001");
    // Retry: nothing changes, nothing to save.
    let o = r.decide(Some(&n), Some(&stored));
    assert_eq!(
        o,
        Outcome {
            decision: Decision::AccessDenied,
            save: None
        }
    );

    // Authorized through the API; the next request gets a config.
    let c = member_update_from_post(&mut stored, NWID, node(), &json!({"authorized": true}), T0)
        .unwrap();
    assert!(c.changed);
    let o = r.decide(Some(&n), Some(&stored));
    let p = plan(&o);
    assert_eq!(p.network_id, NWID);
    assert_eq!(p.issued_to, node());
    assert!(p.private);
    assert_eq!(p.name, "lab");
    assert_eq!(p.revision, n["revision"].as_u64().unwrap());
    assert_eq!(p.mtu, 2800);
    assert_eq!(p.multicast_limit, 32);
    assert_eq!(p.flags, FLAG_ENABLE_BROADCAST);
    assert_eq!(p.credential_max_delta, 1_800_000);
    assert_eq!(p.rules, vec![Rule::new(RuleKind::Accept)]);
    assert!(p.capabilities.is_empty() && p.tags.is_empty() && p.routes.is_empty());
    assert!(p.static_ips.is_empty() && p.specialists.is_empty());
    assert_eq!(p.dns, Dns::default());
    assert_eq!(p.remote_trace_target, None);
    assert_eq!(p.timestamp, r.now);
    let saved = o.save.expect("versions recorded");
    assert_eq!(
        (
            &saved["vMajor"],
            &saved["vMinor"],
            &saved["vRev"],
            &saved["vProto"]
        ),
        (&json!(1), &json!(14), &json!(1), &json!(12))
    );
    assert_eq!(saved["revision"], 3);
    assert_eq!(saved["lastAuthorizedCredentialType"], "api");
    // Steady state: nothing to save.
    assert_eq!(r.decide(Some(&n), Some(&saved)).save, None);
    // A push re-run (not genuine) leaves the versions alone.
    let mut push = Run::new();
    push.genuine = false;
    push.md = metadata(&[("majv", "2")]);
    assert_eq!(push.decide(Some(&n), Some(&saved)).save, None);
}

#[test]
fn public_networks_authorize_automatically() {
    let r = Run::new();
    let n = network(json!({"private": false}));
    let o = r.decide(Some(&n), None);
    let p = plan(&o);
    assert!(!p.private);
    let m = o.save.unwrap();
    assert_eq!(m["authorized"], true);
    assert_eq!(m["lastAuthorizedTime"], r.now.0);
    assert_eq!(m["lastAuthorizedCredentialType"], "public");
    assert_eq!(m["lastAuthorizedCredential"], Value::Null);
    assert_eq!(m["revision"], 1);
}

#[test]
fn identity_mismatch_is_denied_and_not_saved() {
    let r = Run::new();
    let n = network(json!({"private": false}));
    let stored = r.decide(Some(&n), None).save.unwrap();
    let mut other = Run::new();
    other.id = identity(8);
    assert_eq!(
        other.decide(Some(&n), Some(&stored)),
        Outcome {
            decision: Decision::AccessDenied,
            save: None
        }
    );
    let mut broken = stored.clone();
    broken["identity"] = json!("not an identity");
    assert_eq!(
        r.decide(Some(&n), Some(&broken)).decision,
        Decision::AccessDenied
    );
    broken["identity"] = json!(12);
    assert_eq!(
        r.decide(Some(&n), Some(&broken)).decision,
        Decision::AccessDenied
    );
}

#[test]
fn token_authorization() {
    let mut r = Run::new();
    r.md = metadata(&[("a", "token:s3cret")]);
    let n = network(json!({"authTokens": {"s3cret": 0, "old": 5, "later": 1_800_000_000_000u64}}));
    let o = r.decide(Some(&n), None);
    plan(&o);
    let m = o.save.unwrap();
    assert_eq!(m["lastAuthorizedCredentialType"], "token");
    assert_eq!(m["lastAuthorizedCredential"], "s3cret");

    r.md = metadata(&[("a", "token:later")]);
    plan(&r.decide(Some(&n), None));
    r.md = metadata(&[("a", "token:old")]);
    assert_eq!(
        r.decide(Some(&n), None).decision,
        Decision::AccessDenied,
        "expired"
    );
    r.md = metadata(&[("a", "token:nope")]);
    assert_eq!(r.decide(Some(&n), None).decision, Decision::AccessDenied);
    r.md = metadata(&[("a", "token:")]);
    assert_eq!(r.decide(Some(&n), None).decision, Decision::AccessDenied);
    r.md = metadata(&[("a", "s3cret")]);
    assert_eq!(r.decide(Some(&n), None).decision, Decision::AccessDenied);

    // With the default `[null]` the stock controller throws: no answer, nothing saved.
    r.md = metadata(&[("a", "token:s3cret")]);
    let default = network(json!({}));
    assert_eq!(
        r.decide(Some(&default), None),
        Outcome {
            decision: Decision::NoAnswer,
            save: None
        }
    );
    // `null` (all tokens dropped by a POST) just denies.
    let none = network(json!({"authTokens": {"x": -1}}));
    assert_eq!(r.decide(Some(&none), None).decision, Decision::AccessDenied);
}

#[test]
fn old_clients_get_accept_all() {
    let mut r = Run::new();
    let mut d = Dictionary::new();
    d.add_u64("v", 7);
    r.md = d;
    let n = network(json!({
        "private": false,
        "rules": [{"type": "ACTION_DROP"}],
        "capabilities": [{"id": 1, "default": true, "rules": [{"type": "ACTION_ACCEPT"}]}],
        "tags": [{"id": 3, "default": 9}]
    }));
    let o = r.decide(Some(&n), None);
    let p = plan(&o);
    assert_eq!(p.rules, vec![Rule::new(RuleKind::Accept)]);
    assert!(p.capabilities.is_empty() && p.tags.is_empty());
    let m = o.save.unwrap();
    assert_eq!(m["capabilities"], json!([]));
    assert_eq!(m["tags"], json!([]));
    assert_eq!(m["vMajor"], 0, "missing metadata reads as 0");
}

#[test]
fn rules_capabilities_and_tags() {
    let r = Run::new();
    let n = network(json!({
        "private": false,
        "rules": [
            {"type": "MATCH_ETHERTYPE", "etherType": 2048, "not": true},
            {"type": "ACTION_DROP"},
            {"type": "ACTION_ACCEPT"}
        ],
        "capabilities": [
            {"id": 1, "default": true, "rules": [{"type": "ACTION_ACCEPT"}]},
            {"id": 2, "default": false, "rules": [{"type": "ACTION_DROP"}]}
        ],
        "tags": [{"id": 3, "default": 9}, {"id": 4}, {"id": 5, "default": 1}]
    }));
    let o = r.decide(Some(&n), None);
    let p = plan(&o);
    assert_eq!(
        p.rules,
        vec![
            Rule::not(RuleKind::EtherType(0x0800)),
            Rule::new(RuleKind::Drop),
            Rule::new(RuleKind::Accept)
        ]
    );
    assert_eq!(p.capabilities, vec![(1, vec![Rule::new(RuleKind::Accept)])]);
    assert_eq!(p.tags, vec![(3, 9), (5, 1)]);
    let m = o.save.unwrap();
    assert_eq!(
        m["capabilities"],
        json!([1]),
        "default capability for a new member"
    );
    assert_eq!(m["tags"], json!([[3, 9], [5, 1]]), "default tags persisted");

    // A member created through the API first is not new: no default capability, but default
    // tags still fill in; its own tags win.
    let mut pre = Value::Null;
    member_update_from_post(
        &mut pre,
        NWID,
        node(),
        &json!({"capabilities": [2, 7], "tags": [[5, 4]]}),
        T0,
    )
    .unwrap();
    let o = r.decide(Some(&n), Some(&pre));
    let p = plan(&o);
    assert_eq!(p.capabilities, vec![(2, vec![Rule::new(RuleKind::Drop)])]);
    assert_eq!(p.tags, vec![(3, 9), (5, 4)]);
    let m = o.save.unwrap();
    assert_eq!(m["capabilities"], json!([2, 7]));
    assert_eq!(m["tags"], json!([[5, 4], [3, 9]]));
}

#[test]
fn addresses_routes_and_assignment() {
    let mut r = Run::new();
    r.allocated = [IpAddr::from([10, 147, 17, 3])].into();
    let n = network(json!({
        "private": false,
        "v4AssignMode": {"zt": true},
        "v6AssignMode": {"rfc4193": true, "6plane": false, "zt": false},
        "routes": [{"target": "10.147.17.0/24"}, {"target": "192.168.0.0/16", "via": "10.147.17.1"}],
        "ipAssignmentPools": [{"ipRangeStart": "10.147.17.1", "ipRangeEnd": "10.147.17.254"}]
    }));
    let o = r.decide(Some(&n), None);
    let p = plan(&o);
    assert_eq!(
        p.flags,
        FLAG_ENABLE_BROADCAST | FLAG_ENABLE_IPV6_NDP_EMULATION
    );
    assert_eq!(
        p.routes,
        vec![
            Route {
                target: IpAddr::from([10, 147, 17, 0]),
                prefix: 24,
                via: None,
                flags: 0,
                metric: 0
            },
            Route {
                target: IpAddr::from([192, 168, 0, 0]),
                prefix: 16,
                via: Some(IpAddr::from([10, 147, 17, 1])),
                flags: 0,
                metric: 0
            }
        ]
    );
    assert_eq!(
        p.static_ips,
        vec![
            ("fd80:56c2:e21c:0:199:931a:2b3c:4d5e".parse().unwrap(), 88),
            (IpAddr::from([10, 147, 17, 4]), 24)
        ]
    );
    let m = o.save.unwrap();
    assert_eq!(m["ipAssignments"], json!(["10.147.17.4"]));
    // Sticky on the next request; nothing more to save.
    let o = r.decide(Some(&n), Some(&m));
    assert_eq!(plan(&o).static_ips[1], (IpAddr::from([10, 147, 17, 4]), 24));
    assert_eq!(o.save, None);
}

#[test]
fn config_fields() {
    let mut r = Run::new();
    r.bridges = vec![
        "2222222222".parse().unwrap(),
        "1111111111".parse().unwrap(),
        "2222222222".parse().unwrap(),
    ];
    let mut n = network(json!({
        "private": false,
        "name": "n".repeat(200),
        "enableBroadcast": false,
        "multicastLimit": 5,
        "remoteTraceTarget": "89e92ceee5",
        "remoteTraceLevel": 20,
        "dns": {"domain": "zt.example", "servers": ["10.0.0.53", "bad", "fd00::53/53", "1.1.1.1", "8.8.8.8"]}
    }));
    n["certificateTimeoutWindowSize"] = json!(60_000);
    n["mtu"] = json!(65536);
    let o = r.decide(Some(&n), None);
    let p = plan(&o);
    assert_eq!(p.name.len(), 127);
    assert_eq!(p.flags, 0);
    assert_eq!(p.multicast_limit, 5);
    assert_eq!(p.mtu, 10000);
    assert_eq!(p.credential_max_delta, 300_000);
    assert_eq!(p.specialists, vec![0x0211_1111_1111, 0x0222_2222_2222]);
    assert_eq!(p.remote_trace_target, Some("89e92ceee5".parse().unwrap()));
    assert_eq!(p.remote_trace_level, 20);
    assert_eq!(p.dns.domain, "zt.example");
    assert_eq!(
        p.dns.servers,
        vec![
            InetAddress(Some("10.0.0.53:0".parse().unwrap())),
            InetAddress(None),
            InetAddress(Some("[fd00::53]:53".parse().unwrap())),
            InetAddress(Some("1.1.1.1:0".parse().unwrap())),
        ]
    );

    // The member's own trace target wins; its level is always 0 by then (stock quirk).
    let mut m = o.save.unwrap();
    member_update_from_post(
        &mut m,
        NWID,
        node(),
        &json!({"remoteTraceTarget": "0123456789", "remoteTraceLevel": 30}),
        T0,
    )
    .unwrap();
    let p2 = r.decide(Some(&n), Some(&m));
    assert_eq!(
        plan(&p2).remote_trace_target,
        Some("0123456789".parse().unwrap())
    );
    assert_eq!(plan(&p2).remote_trace_level, 0);

    n["certificateTimeoutWindowSize"] = json!(1e12);
    assert_eq!(
        plan(&r.decide(Some(&n), None)).credential_max_delta,
        7_200_000
    );
    n["certificateTimeoutWindowSize"] = json!("600000");
    assert_eq!(r.decide(Some(&n), None).decision, Decision::NoAnswer);
}

#[test]
fn helpers_over_member_records() {
    let members = [
        json!({"id": "2222222222", "activeBridge": true, "ipAssignments": ["10.0.0.1", "fd00::1", 5]}),
        json!({"id": "1111111111", "activeBridge": "true", "ipAssignments": ["junk"]}),
        json!({"id": "3333333333", "activeBridge": false}),
    ];
    assert_eq!(
        active_bridges(&members),
        vec![
            "1111111111".parse().unwrap(),
            "2222222222".parse::<Address>().unwrap()
        ]
    );
    let ips = allocated_ips(&members);
    assert_eq!(
        ips,
        [IpAddr::from([10, 0, 0, 1]), "fd00::1".parse().unwrap()].into()
    );
}
