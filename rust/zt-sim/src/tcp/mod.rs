//! TCP labs: two `zt-stack` [`NetStack`]s on a virtual clock, connected either
//!
//! - directly ([`DirectLab`]): Ethernet frames cross a [`Link`] each way; no ZeroTier at all,
//!   fast enough for property tests over thousands of seeds; or
//! - through ZeroTier ([`OverlayLab`]): two members of a network on a [`Sim`] (encryption,
//!   fragmentation at the physical MTU, the controller's config and its 2800-byte MTU), whose
//!   UDP datagrams cross the links, as in the real benchmark.
//!
//! [`transfer`] moves bytes over one TCP connection and measures it ([`Report`]): data is a
//! deterministic pattern checked byte for byte, sockets are made by `NetStack::add_tcp` (its
//! congestion control) with `zt-runtime`'s default buffers, the writer writes and the reader
//! reads as fast as the sockets allow (the reader optionally at a limited rate). Time is
//! event-driven: the clock jumps to the next datagram arrival, node timer or stack deadline,
//! so a connection that stops dead costs a handful of steps per back-off and the run ends at
//! its virtual time limit.
//!
//! [`Link`]: crate::link::Link
//! [`Sim`]: crate::Sim

mod direct;
mod overlay;
mod report;
mod segment;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::BTreeMap;
use std::net::IpAddr;

use zt_stack::NetStack;

use crate::link::{LinkStats, PathProfile};

pub use direct::{DirectLab, OVERLAY_MTU};
pub use overlay::{OverlayLab, SetupError};
pub use report::{Ending, FlowReport, Report, Stall};
pub use segment::{Dir, End, Segment, decode_segment};
pub use transfer::{DEFAULT_BUFFER, MAX_BUFFER, STALL_US, Transfer, transfer};

/// Two stacks and what connects them, driven by [`transfer`].
pub trait Lab {
    /// "direct" or "overlay".
    fn kind(&self) -> &'static str;
    /// The path between the ends.
    fn path(&self) -> &PathProfile;
    /// The seed the lab was built with.
    fn seed(&self) -> u64;
    /// Virtual time (µs).
    fn now_us(&self) -> i64;
    /// When the network next does something by itself (a frame or datagram arrives, a timer
    /// fires; µs).
    fn next_event_us(&self) -> Option<i64>;
    /// Runs the network to `t_us` and hands the frames that arrived to the stacks (which the
    /// caller then polls).
    fn advance_to_us(&mut self, t_us: i64);
    /// Sends what the stacks queued, at the current time.
    fn flush(&mut self);
    /// One end's stack.
    fn stack(&mut self, end: End) -> &mut NetStack;
    /// One end's IP address.
    fn addr(&self, end: End) -> IpAddr;
    /// Counters of the path's two directions: A → B, B → A.
    fn link_stats(&self) -> [LinkStats; 2];
    /// Other counters of the lab (name, value), reported as differences over a transfer.
    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}
