//! User-space TCP/IP for `zt`: a smoltcp stack per joined network, on the network's virtual
//! Ethernet. Sans-IO: it takes and produces Ethernet frames and is told the time, so the same
//! code runs inside the node runtime and on the simulated network.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod stack;
pub mod stacks;

pub use device::VirtualEthernet;
pub use smoltcp;
pub use stack::{NetStack, StackError, TCP_BUFFER, TCP_BUFFER_MAX, link_local, solicited_node};
pub use stacks::{Policy, Stacks};

#[cfg(test)]
mod tests;
