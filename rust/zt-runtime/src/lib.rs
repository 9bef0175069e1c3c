//! The OS side of `zt`: everything the sans-IO core (`zt-proto`) must not do.
//!
//! - [`clock`] and [`rng`]: the only places that read time and OS randomness.
//! - [`keygen`]: identity generation spread over the machine's cores.
//! - [`store`]: the state store interface, the file store (zerotier-one's layout, atomic writes)
//!   and the memory store; [`state`] loads a node's state from a store before the core starts.
//! - [`events`]: typed node events with libzt's codes, fanned out to subscribers that can be
//!   waited on by blocking call or by a readiness descriptor (for `select` and asyncio).
//! - [`runtime`]: one loop thread per node that drives the core and executes its outputs, over
//!   the node's physical UDP sockets ([`underlay`]).
//! - [`device`]: attaching a network to an OS device (a TAP): its name, which managed
//!   addresses and routes go on it, and on Linux the TAP itself and the netlink requests that
//!   put them on and take them off.
//! - [`sockets`]: the overlay's TCP and UDP sockets on the networks' stacks ([`zt_stack::Stacks`]); a
//!   thread waiting for one may receive for its node (the leader/follower protocol in `lead.rs`,
//!   over the descriptors of [`wake`]).

pub mod clock;
pub mod controller;
pub mod controller_db;
pub mod device;
pub mod events;
pub mod frames;
pub mod http;
pub mod keygen;
mod lead;
mod queue;
pub mod readiness;
pub mod rng;
pub mod runtime;
pub mod sockets;
pub mod state;
pub mod store;
pub mod underlay;
mod validator;
#[cfg(unix)]
pub mod wake;

pub use events::{EventCode, NodeEvent, Subscription};
pub use runtime::{Lifecycle, NodeRuntime, RuntimeOptions};
pub use store::{FileStore, MemoryStore, Store, StoreError};
