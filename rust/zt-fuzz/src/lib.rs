//! Fuzz harnesses for `zt`: one `fn(&[u8])` per target, shared by the cargo-fuzz targets in
//! `fuzz/` (libFuzzer, nightly or `RUSTC_BOOTSTRAP=1`) and by this crate's corpus test, which
//! replays every file of `fuzz/corpus/<target>/` through the same function on stable Rust.
//!
//! A harness panics only on a bug: a decoder that panics, an encoder whose output its decoder
//! reads differently, a node that sends what its peer cannot open or stores what it cannot
//! load again. See `fuzz/README.md` for the targets and how to run them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fixtures;
pub mod input;
pub mod node;
pub mod parsers;
pub mod seeds;
pub mod services;

/// A harness.
pub type Harness = fn(&[u8]);

/// Every target: its name (the cargo-fuzz target and corpus directory) and its harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("packet", parsers::packet),
    ("dictionary", parsers::dictionary),
    ("netconfig", parsers::netconfig),
    ("config_chunks", parsers::config_chunks),
    ("credentials", parsers::credentials),
    ("rules", parsers::rules),
    ("world", parsers::world),
    ("identity", parsers::identity),
    ("peer_record", parsers::peer_record),
    ("stored_state", services::stored_state),
    ("http", services::http),
    ("controller_json", services::controller_json),
    ("datagrams", node::datagrams),
    ("node_leaf", node::node_leaf),
    ("node_root", node::node_root),
];

/// The harness of target `name`.
#[must_use]
pub fn harness(name: &str) -> Option<Harness> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}
