//! Harnesses for what sits around the core: the local HTTP API (request parser and router),
//! the controller's JSON records, and a node's stored state.

use std::sync::Arc;

use serde_json::Value;
use zt_controller::rule_json::{parse_rule_checked, render_rule};
use zt_controller::{self as ctl, Decision};
use zt_proto::{CoreOptions, Dictionary, LocalSocket, NetworkConfig, Node, Timestamp};
use zt_runtime::controller::ControllerHost;
use zt_runtime::controller_db::ControllerDb;
use zt_runtime::http::{self, Api};
use zt_runtime::runtime::{NodeRuntime, RuntimeOptions};
use zt_runtime::state::{self, LoadOptions};
use zt_runtime::{MemoryStore, Store};
use zt_sim::SimRng;

use crate::fixtures::{self, START, fixtures};
use crate::input::Input;
use crate::node::{Role, check_store_op, scenario};

/// The API token of the harness's API (fuzz inputs that present it pass authentication).
pub const API_TOKEN: &str = "fuzz";

thread_local! {
    /// An API over a node that is never started: every route that needs the node answers 503,
    /// so the harness stays deterministic and fast; parsing, authentication and routing run.
    static API: (NodeRuntime, Api) = {
        let rt = NodeRuntime::new(Arc::new(MemoryStore::new()), RuntimeOptions::default());
        let api = Api::new(rt.handle(), API_TOKEN.to_owned(), None);
        (rt, api)
    };
}

/// The local API: one request read from the bytes as from a socket, then authenticated and
/// routed; the path, method and body also go through the in-process entry.
pub fn http(data: &[u8]) {
    let Ok(req) = http::read_request(&mut &data[..]) else {
        return;
    };
    API.with(|(_, api)| {
        let r = api.handle(&req);
        assert!((100..600).contains(&r.status), "status {}", r.status);
        let _ = api.handle_trusted(&req.method, &req.path, &req.body);
    });
}

/// The controller's JSON: pieces separated by `\n--\n` are a network POST body, a member POST
/// body, a request metadata dictionary and a rule object. The bodies go through the runtime's
/// controller host (records merged and coerced, stored in SQLite); the stored records then
/// decide a member's request, and an authorized member's config is issued, written and parsed
/// again as the member would (it must come back equal). The rule goes to JSON and back.
///
/// # Panics
/// If the in-memory database cannot be opened.
#[allow(clippy::expect_used)]
pub fn controller_json(data: &[u8]) {
    let mut input = Input::new(data);
    let pieces = input.split(b"\n--\n", 4);
    let json = |i: usize| {
        pieces
            .get(i)
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
    };
    if let Some(rule) = json(3)
        && let Ok(Some(r)) = parse_rule_checked(&rule)
    {
        let back = parse_rule_checked(&render_rule(&r));
        assert_eq!(back, Ok(Some(r)), "rule JSON round trip");
    }
    let f = fixtures();
    let (ctl_id, member) = (&f.ids[0], &f.ids[1]);
    let nwid = fixtures::network_id(ctl_id);
    let mut node = scenario(Role::Root).new_node();
    let mut host = ControllerHost::new(
        ControllerDb::in_memory().expect("a database"),
        ctl_id.clone(),
    );
    let now = START;
    if host
        .post_network(&mut node, now, Some(nwid), &json(0).unwrap_or(Value::Null))
        .is_err()
    {
        return;
    }
    let body = json(1).unwrap_or(Value::Null);
    let _ = host.post_member(&mut node, now, nwid, member.address(), &body);
    let metadata = Dictionary::parse(pieces.get(2).copied().unwrap_or(&[]));
    let (Ok(network), Ok(members)) = (host.network(nwid), host.members(nwid)) else {
        return;
    };
    let mine = members
        .iter()
        .find(|(a, _)| *a == member.address())
        .map(|(_, v)| v);
    let later = Timestamp(now.0 + 1000);
    let records = members.iter().map(|(_, v)| v);
    let out = fixtures::decide(
        nwid,
        Some(&network),
        records,
        mine,
        member,
        &metadata,
        later,
    );
    if let Decision::Authorized(plan) = out.decision {
        let config = ctl::issue::issue(&plan, ctl_id, member).expect("the controller signs");
        let bytes = config.to_bytes();
        match NetworkConfig::from_bytes(&bytes) {
            Ok(back) => assert_eq!(back, config, "issued config does not survive the wire"),
            Err(e) => panic!("an issued config does not parse: {e}"),
        }
    }
    // The same request through the host, as the runtime answers it.
    let req = zt_proto::ControllerRequest {
        network: nwid,
        requester: member.to_public(),
        metadata,
        request_id: 0x1234,
        from: None,
    };
    host.handle_request(&mut node, Timestamp(now.0 + 2000), &req);
    let _ = host.delete_member(&mut node, now, nwid, member.address());
    let _ = host.delete_network(&mut node, now, nwid);
}

/// A node's stored state: pieces separated by `\n--\n` are stored as the planet, a moon, two
/// peer cache entries and a network config; the state is loaded as the runtime does, a node
/// made from it runs a minute of timers, and what it writes back must load again.
pub fn stored_state(data: &[u8]) {
    let f = fixtures();
    let store = MemoryStore::new();
    let mut input = Input::new(data);
    let pieces = input.split(b"\n--\n", 5);
    let nwid = fixtures::network_id(&f.ids[1]);
    let keys = [
        "planet".to_owned(),
        "moons.d/0000000000007777.moon".to_owned(),
        format!("peers.d/{}.peer", f.ids[2].address()),
        format!("peers.d/{}.peer", f.ids[3].address()),
        format!("networks.d/{nwid}.conf"),
    ];
    for (k, v) in keys.iter().zip(&pieces) {
        let _ = store.put(k, v, false);
    }
    let options = LoadOptions {
        identity: Some(f.ids[0].clone()),
        planet: Some(fixtures::planet(
            &f.ids[1],
            fixtures::endpoint(1),
            1,
            &f.planet_key,
        )),
        keygen_threads: 1,
        core: CoreOptions::default(),
    };
    let Ok(loaded) = state::load(&store, &options) else {
        return;
    };
    let Ok(mut node) = Node::new(loaded.config, Box::new(SimRng(2)), START) else {
        return;
    };
    node.set_local_sockets(vec![(
        LocalSocket(0),
        "0.0.0.0:9993"
            .parse()
            .unwrap_or_else(|_| fixtures::endpoint(0)),
    )]);
    let mut now = START;
    for _ in 0..8 {
        node.handle_timeout(now);
        now = node.poll_timeout().max(Timestamp(now.0 + 1));
    }
    node.persist_peers();
    while node.poll_transmit().is_some() || node.poll_event().is_some() {}
    while let Some(op) = node.poll_store() {
        check_store_op(&op);
    }
}
