//! Turning a [`ConfigPlan`] into the signed network config a member receives: the config
//! dictionary fields plus a certificate of membership, a certificate of ownership of the static
//! IPs, and the member's capabilities and tags, all signed by the controller.

use std::net::{IpAddr, SocketAddr};

use crate::ConfigPlan;
use zt_proto::{
    Dns, Identity, IpPrefix, NetworkConfig, NetworkType, Route,
    credentials::{Capability, Com, Coo, CredentialError, Tag, Thing},
};

/// ID of the certificate of ownership listing the static IPs (as stock controllers issue it).
pub const COO_ID: u32 = 1;

/// Builds and signs the config of `plan` for `member`.
///
/// # Errors
/// The controller identity has no secret key (signing fails).
pub fn issue(
    plan: &ConfigPlan,
    controller: &Identity,
    member: &Identity,
) -> Result<NetworkConfig, CredentialError> {
    let ts = plan.timestamp.as_millis();
    let mut c = NetworkConfig::new(plan.network_id, plan.issued_to);
    c.timestamp = ts;
    c.credential_max_delta = plan.credential_max_delta;
    c.revision = plan.revision;
    c.remote_trace_target = plan.remote_trace_target;
    c.remote_trace_level = plan.remote_trace_level.min(255) as u8;
    c.flags = plan.flags;
    c.multicast_limit = plan.multicast_limit;
    c.network_type = if plan.private {
        NetworkType::Private
    } else {
        NetworkType::Public
    };
    c.name.clone_from(&plan.name);
    c.mtu = plan.mtu;
    c.rules.clone_from(&plan.rules);
    c.specialists.clone_from(&plan.specialists);
    c.routes = plan
        .routes
        .iter()
        .map(|r| Route {
            target: IpPrefix {
                ip: r.target,
                bits: r.prefix.min(255) as u8,
            },
            via: r.via,
            flags: r.flags,
            metric: r.metric,
        })
        .collect();
    c.static_ips = plan
        .static_ips
        .iter()
        .map(|(ip, bits)| IpPrefix {
            ip: *ip,
            bits: (*bits).min(255) as u8,
        })
        .collect();
    c.dns = Dns {
        domain: plan.dns.domain.clone(),
        servers: plan
            .dns
            .servers
            .iter()
            .filter_map(|s| s.0.map(|a: SocketAddr| a.ip()))
            .collect(),
    };
    let mut com = Com::new(plan.network_id, ts, plan.credential_max_delta, member);
    com.sign(controller)?;
    c.com = Some(com);
    if !plan.static_ips.is_empty() {
        let mut coo = Coo::new(plan.network_id, ts, COO_ID, plan.issued_to);
        for (ip, _) in plan.static_ips.iter().take(16) {
            let ip: IpAddr = *ip;
            coo.add_thing(Thing::ip(ip));
        }
        coo.sign(controller)?;
        c.coos.push(coo);
    }
    for (id, rules) in &plan.capabilities {
        let mut cap = Capability::new(plan.network_id, ts, *id, rules.clone());
        cap.sign(controller, plan.issued_to)?;
        c.capabilities.push(cap);
    }
    c.capabilities.sort_by_key(|x| x.id);
    for (id, value) in &plan.tags {
        let mut tag = Tag::new(plan.network_id, ts, *id, *value, plan.issued_to);
        tag.sign(controller)?;
        c.tags.push(tag);
    }
    Ok(c)
}
