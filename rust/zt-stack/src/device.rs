//! The virtual Ethernet device smoltcp runs on: frames in and out are queues in memory, filled
//! and drained by whoever drives the stack (the node runtime, or a simulator).

use std::collections::{HashMap, VecDeque};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};

/// A TCP connection as seen from this end: local port, remote address and port.
pub type TcpTuple = (u16, IpAddress, u16);

/// Most frames queued in either direction before the oldest inbound / newest outbound ones are
/// dropped (and counted).
pub const QUEUE_LIMIT: usize = 4096;
/// Spare frame buffers kept for reuse.
const POOL_LIMIT: usize = 256;

/// In-memory Ethernet: `rx` holds frames for the stack, `tx` the frames it sent.
#[derive(Debug)]
pub struct VirtualEthernet {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    mtu: usize,
    /// Frames dropped because a queue was full.
    pub dropped: u64,
    /// Watched TCP connections → when the stack last took in a segment from the peer (ms).
    heard: HashMap<TcpTuple, i64>,
}

impl VirtualEthernet {
    /// A device whose IP MTU is `mtu` (Ethernet frames are 14 bytes longer).
    #[must_use]
    pub fn new(mtu: usize) -> Self {
        Self {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            pool: Vec::new(),
            mtu,
            dropped: 0,
            heard: HashMap::new(),
        }
    }

    /// Starts recording when segments of this connection arrive (from `now_ms`).
    pub fn watch(&mut self, tuple: TcpTuple, now_ms: i64) {
        self.heard.insert(tuple, now_ms);
    }

    /// Stops recording for this connection.
    pub fn unwatch(&mut self, tuple: &TcpTuple) {
        self.heard.remove(tuple);
    }

    /// When the stack last took in a segment of a watched connection (ms; the time watching
    /// started if none yet).
    #[must_use]
    pub fn heard(&self, tuple: &TcpTuple) -> Option<i64> {
        self.heard.get(tuple).copied()
    }

    /// The IP MTU.
    #[must_use]
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Changes the IP MTU (a new network config).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    /// Queues a frame for the stack.
    pub fn push_rx(&mut self, frame: Vec<u8>) {
        if self.rx.len() >= QUEUE_LIMIT {
            self.rx.pop_front();
            self.dropped += 1;
        }
        self.rx.push_back(frame);
    }

    /// The next frame the stack sent.
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Gives a frame buffer back for reuse (after its bytes were consumed).
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOL_LIMIT {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Frames waiting for the stack.
    #[must_use]
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }
}

/// Receive token: one frame.
pub struct RxToken {
    frame: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.frame)
    }
}

/// Transmit token: appends one frame to the outbound queue.
pub struct TxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
    dropped: &'a mut u64,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.resize(len, 0);
        let r = f(&mut buf);
        if self.tx.len() >= QUEUE_LIMIT {
            *self.dropped += 1;
        } else {
            self.tx.push_back(buf);
        }
        r
    }
}

impl phy::Device for VirtualEthernet {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        if !self.heard.is_empty()
            && let Some(t) = tcp_tuple(&frame).and_then(|k| self.heard.get_mut(&k))
        {
            *t = timestamp.total_millis();
        }
        Some((
            RxToken { frame },
            TxToken {
                tx: &mut self.tx,
                pool: &mut self.pool,
                dropped: &mut self.dropped,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            pool: &mut self.pool,
            dropped: &mut self.dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// The connection (from the receiver's side) an inbound Ethernet frame carrying a TCP segment
/// belongs to; None for anything else (including non-first IPv4 fragments and IPv6 extension
/// headers, which this stack's peers do not send with TCP).
fn tcp_tuple(frame: &[u8]) -> Option<TcpTuple> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, segment) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
                return None;
            }
            (IpAddress::Ipv4(ip.src_addr()), ip.payload())
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            (IpAddress::Ipv6(ip.src_addr()), ip.payload())
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(segment).ok()?;
    Some((tcp.dst_port(), src, tcp.src_port()))
}
