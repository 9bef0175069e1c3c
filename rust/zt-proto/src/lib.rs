//! Sans-IO core of `zt`, a ZeroTier 1.x implementation.
//!
//! This crate holds the protocol: cryptography, identities, worlds, and the [`Node`] state
//! machine. It performs no I/O: it reads no clock, opens no socket or file and starts no thread.
//!
//! # Public surface
//!
//! What other crates use is re-exported at the crate root ([`Node`] and its inputs and outputs,
//! [`Identity`], [`World`], [`NetworkConfig`], …); the modules are private. Four namespaces stay
//! where a flat root would be confusing: [`crypto`], [`packet`] (the wire format, for tests,
//! benchmarks and fuzzers), [`rules`] and [`credentials`]. The hidden `fuzzing` module lends
//! the fuzz targets internals (decoders, the rule engine) that are not API.
//!
//! # The run-loop contract
//!
//! The caller (the `zt-runtime` crate, or a simulator) owns time, randomness and I/O:
//!
//! 1. Feed inputs with `handle_*` methods (`handle_datagram`, `handle_timeout`, …), each given
//!    `now` (a [`Timestamp`]).
//! 2. After **any** input, drain every output queue — [`Node::poll_transmit`],
//!    [`Node::poll_event`], [`Node::poll_store`], [`Node::poll_frame`] — until each returns
//!    `None`.
//! 3. Sleep until [`Node::poll_timeout`] (or until the next input), then call
//!    [`Node::handle_timeout`] with the current time.
//!
//! ```text
//!   runtime ── handle_datagram / handle_timeout(now) ──▶ Node ──▶ poll_transmit / poll_event /
//!                                                                 poll_store / poll_frame
//!           ◀──────── poll_timeout() ──┘
//! ```
//!
//! Malformed input never panics: decoders return typed errors and the node counts drops.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
pub mod crypto;
mod cursor;
mod dictionary;
mod identity;
mod inet;
mod network;
mod node;
pub mod packet;
mod planet;
mod splitmix;
mod time;
mod world;

pub use address::{Address, AddressError};
pub use cursor::WireError;
pub use dictionary::Dictionary;
pub use identity::{Identity, IdentityError};
pub use inet::{
    InetAddress, InetAddressParseError, IpScope, ipv4_prefix_contains, ipv6_prefix_contains,
};
pub use network::config::{
    ConfigError, Dns, IpPrefix, NetworkConfig, NetworkType, Route, make_chunks, request_metadata,
};
pub use network::{AdHoc, Mac, MulticastGroup, NetworkId, NetworkIdParseError};
pub use node::budget::VALIDATIONS_PENDING;
pub use node::membership::{ERROR_NETWORK_ACCESS_DENIED, ERROR_OBJ_NOT_FOUND};
pub use node::{
    CachedPeer, ControllerRequest, CoreOptions, DropReason, Event, Frame, FrameError, JoinError,
    LOCAL_REQUEST, LocalSocket, NetworkInfo, NetworkStatus, Node, NodeConfig, NodeError, NodeStats,
    Path, Peer, RemoteVersion, SendError, StoreKey, StoreOp, Transmit, hello_packet,
};
pub use planet::default_planet;
pub use splitmix::splitmix64;
pub use time::Timestamp;
pub use world::{Root, World, WorldError, WorldType, WorldUpdateRejected};

pub mod rules {
    //! Flow rules: the entries of a network's rule table ([`NetworkConfig::rules`]) and of
    //! capabilities, and the frame characteristics that [`RuleKind::Characteristics`] matches.
    //!
    //! [`NetworkConfig::rules`]: crate::NetworkConfig::rules
    pub use crate::network::rules::{
        CHAR_BROADCAST, CHAR_INBOUND, CHAR_MULTICAST, CHAR_SENDER_IP_AUTHENTICATED,
        CHAR_SENDER_MAC_AUTHENTICATED, CHAR_TCP_ACK, CHAR_TCP_CWR, CHAR_TCP_ECE, CHAR_TCP_FIN,
        CHAR_TCP_NS, CHAR_TCP_PSH, CHAR_TCP_RST, CHAR_TCP_SYN, CHAR_TCP_URG, Forward,
        MAX_CAPABILITY_RULES, MAX_RULES, Rule, RuleKind, TagOp,
    };
}

pub mod credentials {
    //! Membership credentials a controller issues and members present: certificates of
    //! membership and of ownership, capabilities, tags and revocations.
    pub use crate::network::credentials::{
        Capability, Com, Coo, CredentialError, CredentialType, Revocation, Tag, Thing,
    };
}

#[doc(hidden)]
pub mod fuzzing {
    //! Internals that the fuzz targets (`zt-fuzz`) drive directly: decoders, the flow-rule
    //! engine and config reassembly. Not API: no stability, not for other crates.
    pub use crate::cursor::Reader;
    pub use crate::network::config::{
        CHUNK_FLAG_FAST_PROPAGATE, ChunkOutcome, ConfigAssembler, ConfigChunk,
    };
    pub use crate::network::credentials::Credentials;
    pub use crate::network::filter::{
        Evaluation, FilterContext, FrameInfo, InboundDecision, OutboundDecision, OwnershipSource,
        adhoc_port_rules, characteristics, evaluate_table, filter_inbound, filter_outbound,
        ownership_source,
    };
    pub use crate::network::rules::{parse_rules, read_rules, write_rules};
}
