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
/// Spare frame buffers kept for reuse (each way).
const POOL_LIMIT: usize = 256;

/// In-memory Ethernet: `rx` holds frames for the stack, `tx` the frames it sent. Frame buffers
/// circulate instead of being allocated per frame: `tx_pool` holds buffers for frames the stack
/// sends (given back with [`Self::recycle`] once the node took the bytes), `rx_pool` buffers
/// for frames handed to the stack ([`Self::rx_buffer`]; they come back once smoltcp consumed
/// the frame).
#[derive(Debug)]
pub struct VirtualEthernet {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    tx_pool: Vec<Vec<u8>>,
    rx_pool: Vec<Vec<u8>>,
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
            tx_pool: Vec::new(),
            rx_pool: Vec::new(),
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
        if self.rx.len() >= QUEUE_LIMIT
            && let Some(old) = self.rx.pop_front()
        {
            keep(&mut self.rx_pool, old);
            self.dropped += 1;
        }
        self.rx.push_back(frame);
    }

    /// The next frame the stack sent.
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Gives a sent frame's buffer back for reuse (after its bytes were consumed).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        keep(&mut self.tx_pool, buf);
    }

    /// An empty buffer for an inbound frame ([`Self::push_rx`]), reused if one is spare.
    pub fn rx_buffer(&mut self) -> Vec<u8> {
        self.rx_pool.pop().unwrap_or_default()
    }

    /// Gives back the buffer of an inbound frame that is not handed to the stack.
    pub fn discard_rx(&mut self, frame: Vec<u8>) {
        keep(&mut self.rx_pool, frame);
    }

    /// Frames waiting for the stack.
    #[must_use]
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }
}

/// Puts an emptied buffer in `pool` unless the pool is full.
fn keep(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if pool.len() < POOL_LIMIT && buf.capacity() > 0 {
        buf.clear();
        pool.push(buf);
    }
}

/// Receive token: one frame, whose buffer goes back to the pool once the token is consumed or
/// dropped.
pub struct RxToken<'a> {
    frame: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.frame)
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        keep(self.pool, std::mem::take(&mut self.frame));
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
            keep(self.pool, buf);
        } else {
            self.tx.push_back(buf);
        }
        r
    }
}

impl phy::Device for VirtualEthernet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        if !self.heard.is_empty()
            && let Some(t) = tcp_tuple(&frame).and_then(|k| self.heard.get_mut(&k))
        {
            *t = timestamp.total_millis();
        }
        Some((
            RxToken {
                frame,
                pool: &mut self.rx_pool,
            },
            TxToken {
                tx: &mut self.tx,
                pool: &mut self.tx_pool,
                dropped: &mut self.dropped,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            pool: &mut self.tx_pool,
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

/// The destination port of an inbound Ethernet frame that opens a TCP connection (SYN without
/// ACK); None for anything else.
pub(crate) fn syn_port(frame: &[u8]) -> Option<u16> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let segment = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
                return None;
            }
            ip.payload()
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            ip.payload()
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(segment).ok()?;
    (tcp.syn() && !tcp.ack() && !tcp.rst()).then(|| tcp.dst_port())
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

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    #[test]
    fn frame_buffers_are_recycled_both_ways() {
        let mut dev = VirtualEthernet::new(1500);
        let t = Instant::from_millis(0);
        // Inbound: a frame built in an rx buffer comes back once consumed (or dropped unread).
        let mut frame = dev.rx_buffer();
        assert_eq!(frame.capacity(), 0, "nothing spare yet");
        frame.extend_from_slice(&[7; 60]);
        let at = frame.as_ptr();
        dev.push_rx(frame);
        let Some((rx, _tx)) = dev.receive(t) else {
            panic!("a frame is queued");
        };
        assert_eq!(rx.consume(|f| f.len()), 60);
        let again = dev.rx_buffer();
        assert!(again.is_empty() && again.capacity() >= 60);
        assert_eq!(again.as_ptr(), at, "the same allocation");
        dev.push_rx(again);
        drop(dev.receive(t));
        assert!(
            dev.rx_buffer().capacity() >= 60,
            "a dropped token recycles too"
        );
        // Outbound: a sent frame's buffer, given back, is used for the next one.
        let Some(tx) = dev.transmit(t) else {
            panic!("transmit is always possible");
        };
        tx.consume(42, |b| b.fill(1));
        let Some(sent) = dev.pop_tx() else {
            panic!("a frame was sent");
        };
        assert_eq!(sent, vec![1; 42]);
        let at = sent.as_ptr();
        dev.recycle(sent);
        let Some(tx) = dev.transmit(t) else {
            panic!("transmit is always possible");
        };
        tx.consume(10, |b| b.fill(2));
        let Some(next) = dev.pop_tx() else {
            panic!("a frame was sent");
        };
        assert_eq!((next.as_ptr(), next.len()), (at, 10));
    }
}
