//! Attaching a joined network to an OS device (a Linux TAP), so that programs outside the node's
//! process reach the network through the kernel, as with the zerotier-one daemon.
//!
//! The parts that decide, kept free of I/O so they are tested without root:
//! - [`name`]: the device's name, as zerotier-one derives it from the network ID (and its
//!   `devicemap` file), so a network's device keeps its name across both daemons;
//! - [`managed`]: which of the network's managed addresses and routes go onto the device, under
//!   the network's local settings (`allowManaged`, `allowGlobal`, `allowDefault`), and what to
//!   change to get there from what is applied.

pub mod managed;
pub mod name;
