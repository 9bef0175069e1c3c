//! Sans-IO core of `zt`, a ZeroTier 1.x implementation.
//!
//! This crate holds the protocol: cryptography, identities, worlds, and the [`node::Node`] state
//! machine. It performs no I/O: it reads no clock, opens no socket or file and starts no thread.
//!
//! # The run-loop contract
//!
//! The caller (the `zt-runtime` crate, or a simulator) owns time, randomness and I/O:
//!
//! 1. Feed inputs with `handle_*` methods (`handle_datagram`, `handle_timeout`, …), each given
//!    `now` (a [`time::Timestamp`]).
//! 2. After **any** input, drain every output queue — [`node::Node::poll_transmit`],
//!    [`node::Node::poll_event`], [`node::Node::poll_store`], [`node::Node::poll_frame`] — until
//!    each returns `None`.
//! 3. Sleep until [`node::Node::poll_timeout`] (or until the next input), then call
//!    [`node::Node::handle_timeout`] with the current time.
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

pub mod address;
pub mod crypto;
pub mod cursor;
pub mod dictionary;
pub mod identity;
pub mod inet;
pub mod network;
pub mod node;
pub mod packet;
pub mod planet;
pub mod time;
pub mod world;

pub use address::Address;
pub use identity::Identity;
pub use inet::InetAddress;
pub use node::{Event, Node, NodeConfig, StoreKey, StoreOp};
pub use time::Timestamp;
pub use world::{Root, World, WorldType};
