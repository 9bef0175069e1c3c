//! Segment decoding: the TCP segment in an Ethernet frame, and the optional trace the labs keep
//! of every segment their stacks send or are given.

use std::fmt;

/// One end of a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// The connecting end (its path's `ab` direction leads away from it).
    A,
    /// The listening end.
    B,
}

impl End {
    pub(super) fn other(self) -> End {
        match self {
            End::A => End::B,
            End::B => End::A,
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            End::A => 0,
            End::B => 1,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::A => "A",
            End::B => "B",
        })
    }
}

/// Which way a traced segment went, as seen at a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The stack sent it (onto the network).
    Sent,
    /// The stack was given it (it crossed the network).
    Received,
}

/// A TCP segment seen at a stack's boundary (see [`DirectLab::trace`](super::DirectLab::trace)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// When (µs, the lab's clock).
    pub at_us: i64,
    /// The stack that sent or received it.
    pub end: End,
    /// Sent or received.
    pub dir: Dir,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (if ACK is set).
    pub ack: Option<u32>,
    /// Payload bytes.
    pub len: u16,
    /// SYN, FIN, RST, PSH as "SFRP" letters (others: '.').
    pub flags: [u8; 4],
    /// Advertised window (unscaled).
    pub window: u16,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:12.6} {} {} seq {:10} ack {:>10} len {:4} {} win {}",
            self.at_us as f64 / 1e6,
            self.end,
            match self.dir {
                Dir::Sent => "->",
                Dir::Received => "<-",
            },
            self.seq,
            self.ack.map(|a| a.to_string()).unwrap_or_default(),
            self.len,
            String::from_utf8_lossy(&self.flags),
            self.window
        )
    }
}

/// The TCP segment in an Ethernet frame (IPv4 or IPv6), if it holds one.
#[must_use]
pub fn decode_segment(frame: &[u8], at_us: i64, end: End, dir: Dir) -> Option<Segment> {
    use zt_stack::smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    };
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let payload = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let hl = usize::from(ip.header_len());
            let total = usize::from(ip.total_len()).min(eth.payload().len());
            eth.payload().get(hl..total)?
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            eth.payload().get(40..)?
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    let flag = |on: bool, c: u8| if on { c } else { b'.' };
    Some(Segment {
        at_us,
        end,
        dir,
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack().then(|| tcp.ack_number().0 as u32),
        len: u16::try_from(tcp.payload().len()).unwrap_or(u16::MAX),
        flags: [
            flag(tcp.syn(), b'S'),
            flag(tcp.fin(), b'F'),
            flag(tcp.rst(), b'R'),
            flag(tcp.psh(), b'P'),
        ],
        window: tcp.window_len(),
    })
}

pub(super) fn trace(
    trace: &mut Option<Vec<Segment>>,
    frame: &[u8],
    at_us: i64,
    end: End,
    dir: Dir,
) {
    if let Some(t) = trace
        && let Some(s) = decode_segment(frame, at_us, end, dir)
    {
        t.push(s);
    }
}
