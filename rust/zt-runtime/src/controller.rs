//! The built-in network controller as the runtime hosts it: records in SQLite
//! ([`crate::controller_db`]), decisions by [`zt_controller`], answers and pushes through
//! the node core.
//!
//! Everything runs on the node's loop thread, so a record change, the config pushes it causes
//! and the revocations of deauthorized members happen in one step.

use std::collections::HashMap;

use serde_json::Value;
use zt_controller::records::{
    clean_member, clean_network, member_update_from_post, network_update_from_post,
};
use zt_controller::{self as ctl, Decision, NetworkSummary, Request};
use zt_proto::{
    Address, ControllerRequest, Dictionary, ERROR_NETWORK_ACCESS_DENIED, ERROR_OBJ_NOT_FOUND,
    Identity, LOCAL_REQUEST, NetworkId, Node, Timestamp,
    credentials::{CredentialType, Revocation},
};

use crate::controller_db::{ControllerDb, DbError};
use crate::rng::OsRng;

/// Minimum gap between two genuine requests of one member for one network.
const MIN_REQUEST_PERIOD_MS: i64 = 1_000;
/// A member that asked within this window is "online" (gets pushes and revocations).
const ONLINE_WINDOW_MS: i64 = 120_000;

/// Why an API call failed (mapped to HTTP statuses by the API server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No such network or member (404).
    #[error("not found")]
    NotFound,
    /// The request cannot be served as asked (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Try again later (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Failure while processing (500), with the description.
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::Internal(e.to_string())
    }
}

#[derive(Debug, Clone)]
struct MemberStatus {
    last_request: Timestamp,
    /// Identity and metadata of the last genuine request: a config can be pushed to the
    /// member as soon as its record changes (stock pushes only to members that were authorized
    /// at their last request; a newly authorized member then waits for its next retry).
    seen: Option<(Identity, Dictionary)>,
    /// Whether it was authorized at its last request (it gets revocations).
    authorized: bool,
}

/// The controller of the networks whose IDs start with this node's address.
#[derive(Debug)]
pub struct ControllerHost {
    db: ControllerDb,
    identity: Identity,
    status: HashMap<(NetworkId, Address), MemberStatus>,
    rng: OsRng,
}

impl ControllerHost {
    /// A controller signing with `identity` (the node's, with its secret).
    #[must_use]
    pub fn new(db: ControllerDb, identity: Identity) -> Self {
        Self {
            db,
            identity,
            status: HashMap::new(),
            rng: OsRng,
        }
    }

    fn owns(&self, id: NetworkId) -> bool {
        id.controller() == self.identity.address()
    }

    /// Answers a member's config request (from the node's [`zt_proto::Event::ControllerRequest`]).
    pub fn handle_request(&mut self, node: &mut Node, now: Timestamp, req: &ControllerRequest) {
        if !self.owns(req.network) {
            return;
        }
        let key = (req.network, req.requester.address());
        let genuine = req.request_id != 0;
        if let Some(s) = self.status.get(&key)
            && genuine
            && req.request_id != LOCAL_REQUEST
            && now.since(s.last_request) <= MIN_REQUEST_PERIOD_MS
        {
            return;
        }
        let entry = self.status.entry(key).or_insert(MemberStatus {
            last_request: now,
            seen: None,
            authorized: false,
        });
        if genuine {
            entry.last_request = now;
            entry.seen = Some((req.requester.clone(), req.metadata.clone()));
        }
        if let Err(e) = self.answer(node, now, req, genuine) {
            log::error!(target: "zt.controller", "request of {} for {}: {e}", key.1, key.0);
        }
    }

    fn answer(
        &mut self,
        node: &mut Node,
        now: Timestamp,
        req: &ControllerRequest,
        genuine: bool,
    ) -> Result<(), DbError> {
        let id = req.network;
        let member_addr = req.requester.address();
        let network = self.db.network(id)?;
        let member = self.db.member(id, member_addr)?;
        let members: Vec<Value> = self.db.members(id)?.into_iter().map(|(_, v)| v).collect();
        let allocated = ctl::allocated_ips(members.iter());
        let bridges = ctl::active_bridges(members.iter());
        let summary = NetworkSummary {
            allocated_ips: &allocated,
            active_bridges: &bridges,
        };
        let request = Request {
            network_id: id,
            identity: &req.requester,
            metadata: &req.metadata,
            genuine,
            now,
        };
        let outcome = ctl::decide(
            &request,
            network.as_ref(),
            member.as_ref(),
            &summary,
            &mut self.rng,
        );
        if let Some(save) = &outcome.save {
            self.db.put_member(id, member_addr, save)?;
        }
        // An ERROR(NETWORK_CONFIG_REQUEST) with this code to the requester.
        let refuse = |node: &mut Node, code: u8| {
            node.controller_send_error(now, id, member_addr, req.request_id, code);
        };
        match outcome.decision {
            Decision::NotFound => refuse(node, ERROR_OBJ_NOT_FOUND),
            Decision::AccessDenied => {
                if let Some(s) = self.status.get_mut(&(id, member_addr)) {
                    s.authorized = false;
                }
                refuse(node, ERROR_NETWORK_ACCESS_DENIED);
            }
            Decision::NoAnswer => {}
            Decision::Authorized(plan) => {
                let config = match ctl::issue::issue(&plan, &self.identity, &req.requester) {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!(target: "zt.controller", "cannot sign config: {e}");
                        refuse(node, ERROR_OBJ_NOT_FOUND);
                        return Ok(());
                    }
                };
                if let Some(s) = self.status.get_mut(&(id, member_addr)) {
                    s.authorized = true;
                }
                // Request ID 0 (a push) sends NETWORK_CONFIG instead of an OK.
                if let Err(e) = node.controller_send_config(now, req.request_id, &config) {
                    log::error!(target: "zt.controller", "cannot send config: {e}");
                }
            }
        }
        Ok(())
    }

    fn online(&self, id: NetworkId, now: Timestamp) -> Vec<Address> {
        let mut v: Vec<Address> = self
            .status
            .iter()
            .filter(|((n, _), s)| *n == id && now.since(s.last_request) < ONLINE_WINDOW_MS)
            .map(|((_, a), _)| *a)
            .collect();
        v.sort_unstable();
        v
    }

    /// Re-sends configs to `who` (online members; those not authorized get nothing).
    fn push(&mut self, node: &mut Node, now: Timestamp, id: NetworkId, who: &[Address]) {
        for a in who {
            let Some((identity, metadata)) = self
                .status
                .get(&(id, *a))
                .filter(|s| now.since(s.last_request) < ONLINE_WINDOW_MS)
                .and_then(|s| s.seen.clone())
            else {
                continue;
            };
            let req = ControllerRequest {
                network: id,
                requester: identity,
                metadata,
                request_id: 0,
                from: None,
            };
            // The metadata is the member's own last request: its version fields are recorded
            // as for that request (an authorization pushed before its next request).
            if let Err(e) = self.answer(node, now, &req, true) {
                log::error!(target: "zt.controller", "push to {a}: {e}");
            }
        }
    }

    /// Revokes `target`'s membership: a signed COM revocation to every online member.
    fn revoke(&mut self, node: &mut Node, now: Timestamp, id: NetworkId, target: Address) {
        let mut b = [0u8; 4];
        zt_proto::crypto::SecureRandom::fill(&mut self.rng, &mut b);
        let mut rev = Revocation::new(
            u32::from_be_bytes(b),
            id,
            0,
            now.as_millis(),
            Revocation::FLAG_FAST_PROPAGATE,
            target,
            CredentialType::Com,
        );
        if let Err(e) = rev.sign(&self.identity) {
            log::error!(target: "zt.controller", "cannot sign revocation: {e}");
            return;
        }
        let mut recipients = self.online(id, now);
        if !recipients.contains(&target) {
            recipients.push(target);
        }
        for a in recipients {
            node.controller_send_revocation(now, a, &rev);
        }
        if let Some(s) = self.status.get_mut(&(id, target)) {
            s.authorized = false;
        }
    }

    // ----- API --------------------------------------------------------------------------------

    /// IDs of all networks in the database.
    ///
    /// # Errors
    /// Database failure.
    pub fn network_ids(&self) -> Result<Vec<NetworkId>, ApiError> {
        Ok(self.db.network_ids()?)
    }

    /// A network's record.
    ///
    /// # Errors
    /// Not found, or database failure.
    pub fn network(&self, id: NetworkId) -> Result<Value, ApiError> {
        self.db.network(id)?.ok_or(ApiError::NotFound)
    }

    /// Creates (`id` None: a random free ID under this controller) or updates a network.
    ///
    /// # Errors
    /// A body the stock controller refuses (500), no free ID, or database failure.
    pub fn post_network(
        &mut self,
        node: &mut Node,
        now: Timestamp,
        id: Option<NetworkId>,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let id = match id {
            Some(id) => id,
            None => self.free_network_id()?,
        };
        let old = self.db.network(id)?;
        let mut record = old.clone().unwrap_or(Value::Null);
        let change = network_update_from_post(&mut record, id, body, now)
            .map_err(|e| ApiError::Internal(e.description))?;
        clean_network(&mut record);
        if change.changed {
            self.db.put_network(id, &record)?;
            let online = self.online(id, now);
            self.push(node, now, id, &online);
        }
        Ok(record)
    }

    fn free_network_id(&mut self) -> Result<NetworkId, ApiError> {
        let prefix = self.identity.address().to_u64() << 24;
        for _ in 0..100_000 {
            let mut b = [0u8; 4];
            zt_proto::crypto::SecureRandom::fill(&mut self.rng, &mut b);
            let mut suffix = u64::from(u32::from_be_bytes(b)) & 0xff_ffff;
            if suffix == 0 {
                suffix = 1;
            }
            let id = NetworkId(prefix | suffix);
            if self.db.network(id)?.is_none() {
                return Ok(id);
            }
        }
        Err(ApiError::Unavailable("no free network ID".into()))
    }

    /// Deletes a network and its members (revoking those online); returns the old record.
    ///
    /// # Errors
    /// Not found, or database failure.
    pub fn delete_network(
        &mut self,
        node: &mut Node,
        now: Timestamp,
        id: NetworkId,
    ) -> Result<Value, ApiError> {
        let old = self.db.network(id)?.ok_or(ApiError::NotFound)?;
        let members = self.db.members(id)?;
        self.db.delete_network(id)?;
        for (a, _) in members {
            if self.status.get(&(id, a)).is_some_and(|s| s.authorized) {
                self.revoke(node, now, id, a);
            }
        }
        self.status.retain(|(n, _), _| *n != id);
        Ok(old)
    }

    /// Members of a network (address, record).
    ///
    /// # Errors
    /// Network not found, or database failure.
    pub fn members(&self, id: NetworkId) -> Result<Vec<(Address, Value)>, ApiError> {
        if self.db.network(id)?.is_none() {
            return Err(ApiError::NotFound);
        }
        Ok(self.db.members(id)?)
    }

    /// A member's record.
    ///
    /// # Errors
    /// Not found, or database failure.
    pub fn member(&self, id: NetworkId, a: Address) -> Result<Value, ApiError> {
        if self.db.network(id)?.is_none() {
            return Err(ApiError::NotFound);
        }
        self.db.member(id, a)?.ok_or(ApiError::NotFound)
    }

    /// Creates or updates a member (authorize, deauthorize, assign IPs...): pushes its new
    /// config if it is online, revokes it if it lost its authorization.
    ///
    /// # Errors
    /// Network not found, a body the stock controller refuses (500), database failure.
    pub fn post_member(
        &mut self,
        node: &mut Node,
        now: Timestamp,
        id: NetworkId,
        a: Address,
        body: &Value,
    ) -> Result<Value, ApiError> {
        if self.db.network(id)?.is_none() {
            return Err(ApiError::NotFound);
        }
        let mut record = self.db.member(id, a)?.unwrap_or(Value::Null);
        let change = member_update_from_post(&mut record, id, a, body, now)
            .map_err(|e| ApiError::Internal(e.description))?;
        clean_member(&mut record);
        if change.changed {
            self.db.put_member(id, a, &record)?;
        }
        if change.deauthorized {
            self.revoke(node, now, id, a);
        } else if change.changed {
            self.push(node, now, id, &[a]);
        }
        Ok(record)
    }

    /// Deletes a member (revoking it if it was authorized); returns the old record.
    ///
    /// # Errors
    /// Not found, or database failure.
    pub fn delete_member(
        &mut self,
        node: &mut Node,
        now: Timestamp,
        id: NetworkId,
        a: Address,
    ) -> Result<Value, ApiError> {
        if self.db.network(id)?.is_none() {
            return Err(ApiError::NotFound);
        }
        let old = self.db.member(id, a)?.ok_or(ApiError::NotFound)?;
        self.db.delete_member(id, a)?;
        if old.get("authorized").and_then(Value::as_bool) == Some(true) {
            self.revoke(node, now, id, a);
        }
        self.status.remove(&(id, a));
        Ok(old)
    }
}
