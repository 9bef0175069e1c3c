// Heads up! Before working on this file you should read, at least, RFC 793 and
// the parts of RFC 1122 that discuss TCP, as well as RFC 7323 for some of the TCP options.
// Consult RFC 7414 when implementing a new feature.

use core::fmt::Display;
#[cfg(feature = "async")]
use core::task::Waker;
use core::{fmt, mem};

use crate::phy::PacketMeta;
#[cfg(feature = "async")]
use crate::socket::WakerRegistration;
use crate::socket::{Context, PollAt};
use crate::storage::{Assembler, RingBuffer};
use crate::time::{Duration, Instant};
use crate::wire::{
    IpAddress, IpEndpoint, IpListenEndpoint, IpProtocol, IpRepr, TCP_HEADER_LEN, TcpControl,
    TcpRepr, TcpSeqNumber, TcpTimestampGenerator, TcpTimestampRepr,
};

mod congestion;
mod recovery;
mod rate;
mod scoreboard;

use recovery::{CaState, Plan, Recovery};
use scoreboard::{Delivery, Scoreboard, Seg, SegState, sent_after};

macro_rules! tcp_trace {
    ($($arg:expr),*) => (net_log!(trace, $($arg),*));
}

/// Error returned by [`Socket::listen`]
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ListenError {
    InvalidState,
    Unaddressable,
}

impl Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            ListenError::InvalidState => write!(f, "invalid state"),
            ListenError::Unaddressable => write!(f, "unaddressable destination"),
        }
    }
}

impl core::error::Error for ListenError {}

/// Error returned by [`Socket::connect`]
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectError {
    InvalidState,
    Unaddressable,
}

impl Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            ConnectError::InvalidState => write!(f, "invalid state"),
            ConnectError::Unaddressable => write!(f, "unaddressable destination"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// Error returned by [`Socket::send`]
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    InvalidState,
}

impl Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            SendError::InvalidState => write!(f, "invalid state"),
        }
    }
}

impl core::error::Error for SendError {}

/// Error returned by [`Socket::recv`]
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecvError {
    InvalidState,
    Finished,
}

impl Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            RecvError::InvalidState => write!(f, "invalid state"),
            RecvError::Finished => write!(f, "operation finished"),
        }
    }
}

impl core::error::Error for RecvError {}

/// A TCP socket ring buffer.
pub type SocketBuffer<'a> = RingBuffer<'a, u8>;

/// The state of a TCP socket, according to [RFC 793].
///
/// [RFC 793]: https://tools.ietf.org/html/rfc793
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            State::Closed => write!(f, "CLOSED"),
            State::Listen => write!(f, "LISTEN"),
            State::SynSent => write!(f, "SYN-SENT"),
            State::SynReceived => write!(f, "SYN-RECEIVED"),
            State::Established => write!(f, "ESTABLISHED"),
            State::FinWait1 => write!(f, "FIN-WAIT-1"),
            State::FinWait2 => write!(f, "FIN-WAIT-2"),
            State::CloseWait => write!(f, "CLOSE-WAIT"),
            State::Closing => write!(f, "CLOSING"),
            State::LastAck => write!(f, "LAST-ACK"),
            State::TimeWait => write!(f, "TIME-WAIT"),
        }
    }
}

/// RFC 6298: (2.1) Until a round-trip time (RTT) measurement has been made for a
/// segment sent between the sender and receiver, the sender SHOULD
/// set RTO <- 1 second,
const RTTE_INITIAL_RTO_US: i64 = 1_000_000;

/// zt patch: the floor of RTO's variance term, as Linux (`TCP_RTO_MIN`, which bounds its
/// `mdev`): RTO >= SRTT + 200 ms. RFC 6298 (2.4) puts a one-second floor on the whole RTO;
/// overlay paths have RTTs from a tenth of a millisecond to hundreds, a one-second floor
/// turns every tail loss into a one-second stall, and a floor on the RTO alone (200 ms)
/// fires spuriously on a path whose RTT jitters by tens of milliseconds. Tail losses are
/// repaired by loss probes long before this (RFC 8985).
const RTTE_MIN_VAR_US: i64 = 200_000;

// RFC 6298 (2.5) A maximum value MAY be placed on RTO provided it is at least 60
// seconds
const RTTE_MAX_RTO_US: i64 = 60_000_000;

/// zt patch: timeouts in a row that a thin flow (fewer than `THIN_FLOW_SEGMENTS` segments
/// outstanding, its round trip measured) takes without backing off, as Linux's
/// `tcp_thin_linear_timeouts` (`TCP_THIN_LINEAR_RETRIES`); the backoff starts after them.
const THIN_LINEAR_RETRIES: u32 = 6;
/// zt patch: below this many segments outstanding a flow is thin (Linux's
/// `tcp_stream_is_thin`): too few for fast retransmit or RACK to see a loss, and too few to
/// load a path.
const THIN_FLOW_SEGMENTS: usize = 4;

/// zt patch: how long the minimum RTT (RACK's reordering window, the check of retransmitted
/// segments' acknowledgements) keeps a sample before a larger one replaces it.
const MIN_RTT_WINDOW_US: i64 = 30_000_000;

/// zt patch: round-trip estimation in microseconds (RFC 6298), from the send times the
/// scoreboard keeps and from timestamps (RFC 7323), with exponential back-off that ends with
/// the next sample.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct RttEstimator {
    /// Smoothed RTT (0 before the first sample).
    srtt_us: i64,
    /// RTT variation.
    rttvar_us: i64,
    /// The smallest recent RTT (0 before the first sample) and when it was taken.
    min_rtt_us: i64,
    min_rtt_at_us: i64,
    /// Retransmission timeout, before back-off.
    rto_us: i64,
    /// Timeouts in a row (the RTO doubles with each).
    backoff: u32,
    /// zt patch: timeouts in a row taken without a backoff (a thin flow's).
    linear: u32,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self {
            srtt_us: 0,
            rttvar_us: 0,
            min_rtt_us: 0,
            min_rtt_at_us: 0,
            rto_us: RTTE_INITIAL_RTO_US,
            backoff: 0,
            linear: 0,
        }
    }
}

impl RttEstimator {
    fn retransmission_timeout(&self) -> Duration {
        let rto = self
            .rto_us
            .checked_shl(self.backoff)
            .unwrap_or(RTTE_MAX_RTO_US)
            .clamp(0, RTTE_MAX_RTO_US);
        Duration::from_micros(rto as u64)
    }

    /// The smoothed RTT (µs; 0 before the first sample).
    pub(crate) fn srtt_us(&self) -> i64 {
        self.srtt_us
    }

    fn have_measurement(&self) -> bool {
        self.srtt_us > 0
    }

    /// A round-trip sample (RFC 6298 2.2, 2.3). It ends any back-off.
    fn sample(&mut self, rtt_us: i64) {
        let rtt = rtt_us.max(1);
        if self.srtt_us > 0 {
            let diff = (self.srtt_us - rtt).abs();
            self.rttvar_us = (self.rttvar_us * 3 + diff) / 4;
            self.srtt_us = ((self.srtt_us * 7 + rtt) / 8).max(1);
        } else {
            self.srtt_us = rtt;
            self.rttvar_us = rtt / 2;
        }
        self.rto_us =
            (self.srtt_us + (4 * self.rttvar_us).max(RTTE_MIN_VAR_US)).min(RTTE_MAX_RTO_US);
        self.backoff = 0;
        self.linear = 0;
        tcp_trace!(
            "rtte: sample={}us srtt={}us rttvar={}us rto={}us",
            rtt,
            self.srtt_us,
            self.rttvar_us,
            self.rto_us
        );
    }

    /// A sample for the minimum RTT (the most recently sent segment's round trip).
    fn min_rtt_sample(&mut self, rtt_us: i64, now_us: i64) {
        let rtt = rtt_us.max(1);
        if self.min_rtt_us == 0
            || rtt <= self.min_rtt_us
            || now_us - self.min_rtt_at_us > MIN_RTT_WINDOW_US
        {
            self.min_rtt_us = rtt;
            self.min_rtt_at_us = now_us;
        }
    }

    /// RFC 6298 (5.5): back off the timer.
    fn on_rto(&mut self) {
        self.on_rto_of(false);
    }

    /// zt patch: back off the timer, unless the flow is thin and has not yet had
    /// `THIN_LINEAR_RETRIES` timeouts in a row (Linux's thin-stream linear timeouts: with
    /// three segments or fewer in flight, a lost retransmission is no sign of a loaded path,
    /// and doubling the wait is what turned two losses at 5 % into a 1.4 s stall).
    fn on_rto_of(&mut self, thin: bool) {
        if thin && self.backoff == 0 && self.linear < THIN_LINEAR_RETRIES {
            self.linear += 1;
            tcp_trace!(
                "rtte: thin flow, rto stays {}",
                self.retransmission_timeout()
            );
            return;
        }
        if (self.rto_us << self.backoff) < RTTE_MAX_RTO_US {
            self.backoff += 1;
        }
        tcp_trace!("rtte: backing off rto to {}", self.retransmission_timeout());
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Timer {
    Idle {
        keep_alive_at: Option<Instant>,
    },
    Retransmit {
        expires_at: Instant,
    },
    ZeroWindowProbe {
        expires_at: Instant,
        delay: Duration,
    },
    Close {
        expires_at: Instant,
    },
}

const ACK_DELAY_DEFAULT: Duration = Duration::from_millis(10);
const CLOSE_DELAY: Duration = Duration::from_millis(10_000);

impl Timer {
    fn new() -> Timer {
        Timer::Idle {
            keep_alive_at: None,
        }
    }

    fn should_keep_alive(&self, timestamp: Instant) -> bool {
        match *self {
            Timer::Idle {
                keep_alive_at: Some(keep_alive_at),
            } if timestamp >= keep_alive_at => true,
            _ => false,
        }
    }

    fn should_retransmit(&self, timestamp: Instant) -> bool {
        match *self {
            Timer::Retransmit { expires_at } if timestamp >= expires_at => true,
            _ => false,
        }
    }

    fn should_close(&self, timestamp: Instant) -> bool {
        match *self {
            Timer::Close { expires_at } if timestamp >= expires_at => true,
            _ => false,
        }
    }

    fn should_zero_window_probe(&self, timestamp: Instant) -> bool {
        match *self {
            Timer::ZeroWindowProbe { expires_at, .. } if timestamp >= expires_at => true,
            _ => false,
        }
    }

    fn poll_at(&self) -> PollAt {
        match *self {
            Timer::Idle {
                keep_alive_at: Some(keep_alive_at),
            } => PollAt::Time(keep_alive_at),
            Timer::Idle {
                keep_alive_at: None,
            } => PollAt::Ingress,
            Timer::ZeroWindowProbe { expires_at, .. } => PollAt::Time(expires_at),
            Timer::Retransmit { expires_at, .. } => PollAt::Time(expires_at),
            Timer::Close { expires_at } => PollAt::Time(expires_at),
        }
    }

    fn set_for_idle(&mut self, timestamp: Instant, interval: Option<Duration>) {
        *self = Timer::Idle {
            keep_alive_at: interval.map(|interval| timestamp + interval),
        }
    }

    fn set_keep_alive(&mut self) {
        if let Timer::Idle { keep_alive_at } = self
            && keep_alive_at.is_none()
        {
            *keep_alive_at = Some(Instant::from_millis(0))
        }
    }

    fn rewind_keep_alive(&mut self, timestamp: Instant, interval: Option<Duration>) {
        if let Timer::Idle { keep_alive_at } = self {
            *keep_alive_at = interval.map(|interval| timestamp + interval)
        }
    }

    fn set_for_retransmit(&mut self, timestamp: Instant, delay: Duration) {
        match *self {
            Timer::Idle { .. } | Timer::Retransmit { .. } | Timer::ZeroWindowProbe { .. } => {
                *self = Timer::Retransmit {
                    expires_at: timestamp + delay,
                }
            }
            Timer::Close { .. } => (),
        }
    }

    fn set_for_close(&mut self, timestamp: Instant) {
        *self = Timer::Close {
            expires_at: timestamp + CLOSE_DELAY,
        }
    }

    fn set_for_zero_window_probe(&mut self, timestamp: Instant, delay: Duration) {
        *self = Timer::ZeroWindowProbe {
            expires_at: timestamp + delay,
            delay,
        }
    }

    fn rewind_zero_window_probe(&mut self, timestamp: Instant) {
        if let Timer::ZeroWindowProbe { mut delay, .. } = *self {
            delay = (delay * 2).min(Duration::from_micros(RTTE_MAX_RTO_US as u64));
            *self = Timer::ZeroWindowProbe {
                expires_at: timestamp + delay,
                delay,
            }
        }
    }

    fn is_idle(&self) -> bool {
        matches!(self, Timer::Idle { .. })
    }

    fn is_zero_window_probe(&self) -> bool {
        matches!(self, Timer::ZeroWindowProbe { .. })
    }

    fn is_retransmit(&self) -> bool {
        matches!(self, Timer::Retransmit { .. })
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum AckDelayTimer {
    Idle,
    Waiting(Instant),
    Immediate,
}

#[derive(Debug, Copy, Clone, Eq, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Tuple {
    local: IpEndpoint,
    remote: IpEndpoint,
}

impl Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.local, self.remote)
    }
}

/// A congestion control algorithm.
#[derive(Debug, Copy, Clone, Eq, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CongestionControl {
    None,

    #[cfg(feature = "socket-tcp-reno")]
    Reno,

    #[cfg(feature = "socket-tcp-cubic")]
    Cubic,

    /// zt patch: BBR (model-based: paces at the measured bottleneck bandwidth, does not take
    /// random loss for congestion). Built with the `socket-tcp-cubic` feature.
    #[cfg(feature = "socket-tcp-cubic")]
    Bbr,
}

/// zt patch: what a connection's sender knows and did, as Linux's `TCP_INFO` reports it.
/// Counters start at zero when the socket connects or accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpInfo {
    /// Smoothed round-trip time (µs; 0 before the first sample).
    pub srtt_us: u32,
    /// Round-trip time variation (µs).
    pub rttvar_us: u32,
    /// The smallest round-trip time seen recently (µs; 0 before the first sample).
    pub min_rtt_us: u32,
    /// The retransmission timeout in force, back-off included (µs).
    pub rto_us: u32,
    /// Congestion window (bytes).
    pub cwnd: usize,
    /// Slow-start threshold (bytes; `usize::MAX` before the first congestion event).
    pub ssthresh: usize,
    /// Bytes sent but neither acknowledged nor known lost or selectively acknowledged.
    pub in_flight: usize,
    /// Data bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Data bytes retransmitted.
    pub bytes_retrans: u64,
    /// Segments retransmitted.
    pub segs_retrans: u64,
    /// Retransmission timeouts that fired.
    pub timeouts: u64,
    /// Tail loss probes sent.
    pub loss_probes: u64,
    /// Loss recovery episodes entered (fast recovery).
    pub recoveries: u64,
    /// Congestion window reductions undone because the retransmissions proved spurious.
    pub undos: u64,
    /// D-SACK blocks received (the peer got a segment twice).
    pub dsacks_received: u64,
    /// Whether the path has been seen to reorder segments.
    pub reordering_seen: bool,
    /// The pacing rate (bytes per second; 0 when not paced).
    pub pacing_rate: u64,
    /// Segments received out of order (a hole before them).
    pub rx_out_of_order: u64,
    /// Segments received that were already received (D-SACKed to the peer).
    pub rx_duplicates: u64,
    /// Segments dropped because the receive reassembly had too many holes.
    pub rx_too_many_holes: u64,
    /// The receive buffer's size now (it may grow: `set_buffer_limits`).
    pub rx_buffer: usize,
    /// The send buffer's size now.
    pub tx_buffer: usize,
}

/// A Transmission Control Protocol socket.
///
/// A TCP socket may passively listen for connections or actively connect to another endpoint.
/// Note that, for listening sockets, there is no "backlog"; to be able to simultaneously
/// accept several connections, as many sockets must be allocated, or any new connection
/// attempts will be reset.
#[derive(Debug)]
pub struct Socket<'a> {
    state: State,
    timer: Timer,
    rtte: RttEstimator,
    assembler: Assembler,
    rx_buffer: SocketBuffer<'a>,
    rx_fin_received: bool,
    /// zt patch: the sequence number of a FIN that arrived ahead of missing data.
    rx_fin_held: Option<TcpSeqNumber>,
    tx_buffer: SocketBuffer<'a>,
    /// Interval after which, if no inbound packets are received, the connection is aborted.
    timeout: Option<Duration>,
    /// Interval at which keep-alive packets will be sent.
    keep_alive: Option<Duration>,
    /// The time-to-live (IPv4) or hop limit (IPv6) value used in outgoing packets.
    hop_limit: Option<u8>,
    /// Address passed to listen(). Listen address is set when listen() is called and
    /// used every time the socket is reset back to the LISTEN state.
    listen_endpoint: IpListenEndpoint,
    /// Current 4-tuple (local and remote endpoints).
    tuple: Option<Tuple>,
    /// The sequence number corresponding to the beginning of the transmit buffer.
    /// I.e. an ACK(local_seq_no+n) packet removes n bytes from the transmit buffer.
    local_seq_no: TcpSeqNumber,
    /// The sequence number corresponding to the beginning of the receive buffer.
    /// I.e. userspace reading n bytes adds n to remote_seq_no.
    remote_seq_no: TcpSeqNumber,
    /// The last sequence number sent.
    /// I.e. in an idle socket, local_seq_no+tx_buffer.len().
    remote_last_seq: TcpSeqNumber,
    /// zt patch: the highest sequence number sent (SND.MAX). A retransmission timeout puts
    /// `remote_last_seq` back to `local_seq_no`; this stays, for the segments that occupy no
    /// sequence space (see `ack_seq_number`).
    remote_max_seq: TcpSeqNumber,
    /// The last acknowledgement number sent.
    /// I.e. in an idle socket, remote_seq_no+rx_buffer.len().
    remote_last_ack: Option<TcpSeqNumber>,
    /// The last window length sent.
    remote_last_win: u16,
    /// The sending window scaling factor advertised to remotes which support RFC 1323.
    /// It is zero if the window <= 64KiB and/or the remote does not support it.
    remote_win_shift: u8,
    /// The remote window size, relative to local_seq_no
    /// I.e. we're allowed to send octets until local_seq_no+remote_win_len
    remote_win_len: usize,
    /// The receive window scaling factor for remotes which support RFC 1323, None if unsupported.
    remote_win_scale: Option<u8>,
    /// Whether or not the remote supports selective ACK as described in RFC 2018.
    remote_has_sack: bool,
    /// The maximum number of data octets that the remote side may receive.
    remote_mss: usize,
    /// The timestamp of the last packet received.
    remote_last_ts: Option<Instant>,
    /// The sequence number of the last packet received, used for sACK
    local_rx_last_seq: Option<TcpSeqNumber>,
    /// The ACK number of the last packet received.
    local_rx_last_ack: Option<TcpSeqNumber>,
    /// The number of packets received directly after
    /// each other which have the same ACK number.
    local_rx_dup_acks: u8,

    /// zt patch: the sender's scoreboard (what was sent, delivered, lost).
    sb: Scoreboard,
    /// zt patch: loss recovery (RACK-TLP, PRR, undo), pacing and its timers.
    rec: Recovery,
    /// zt patch: delivery rate estimation (for a model-based controller).
    rate: rate::RateEstimator,
    /// zt patch: timestamps (RFC 7323) from the socket's own millisecond clock.
    ts_enabled: bool,
    ts_offset: u32,
    /// zt patch: the largest the receive and send buffers may grow to (0 or their capacity:
    /// they stay as they are). See `set_buffer_limits`.
    rx_max: usize,
    tx_max: usize,
    /// zt patch: receive-buffer right-sizing: in-order bytes received since
    /// `rcv_space_since_us`, and the receiver's round-trip estimate (from timestamp echoes).
    rcv_space: usize,
    rcv_space_since_us: i64,
    rcv_rtt_us: i64,
    /// The smallest receiver round trip seen (µs) and when.
    rcv_min_rtt_us: i64,
    rcv_min_rtt_at_us: i64,
    /// zt patch: a D-SACK block (RFC 2883) to report in the next ACK: a duplicate arrived.
    rx_dsack: Option<(TcpSeqNumber, TcpSeqNumber)>,
    /// zt patch: a sequence number inside each SACK block reported lately, most recent first
    /// (RFC 2018: repeat the most recently reported blocks).
    rx_sack_recent: [Option<TcpSeqNumber>; 3],

    /// Duration for Delayed ACK. If None no ACKs will be delayed.
    ack_delay: Option<Duration>,
    /// Delayed ack timer. If set, packets containing exclusively
    /// ACK or window updates (ie, no data) won't be sent until expiry.
    ack_delay_timer: AckDelayTimer,

    /// Used for rate-limiting: No more challenge ACKs will be sent until this instant.
    challenge_ack_timer: Instant,

    /// Nagle's Algorithm enabled.
    nagle: bool,
    /// zt patch: thin flows' timeouts do not back off at first (see `on_rto_of`).
    thin_linear_timeouts: bool,

    /// The congestion control algorithm.
    congestion_controller: congestion::AnyController,

    /// tsval generator - if some, tcp timestamp is enabled
    tsval_generator: Option<TcpTimestampGenerator>,

    /// zt patch: counters for `info()`.
    info: TcpInfo,

    /// 0 if not seen or timestamp not enabled
    last_remote_tsval: u32,

    #[cfg(feature = "async")]
    rx_waker: WakerRegistration,
    #[cfg(feature = "async")]
    tx_waker: WakerRegistration,

    /// If this is set, we will not send a SYN|ACK until this is unset.
    #[cfg(feature = "socket-tcp-pause-synack")]
    synack_paused: bool,
}

const DEFAULT_MSS: usize = 536;

/// Minimum MSS we accept from the remote, same value as Linux's `TCP_MIN_SND_MSS`.
/// Without it, a peer advertising a tiny MSS could force segments to carry little
/// or no payload once the TCP options length is subtracted from the effective MSS,
/// stalling the connection in an endless stream of empty segments.
///
/// Must exceed the maximum possible length of the TCP options (currently 12, for
/// timestamps) so that every segment carries some payload.
const MIN_REMOTE_MSS: usize = 48;

impl<'a> Socket<'a> {
    #[allow(unused_comparisons)] // small usize platforms always pass rx_capacity check
    /// Create a socket using the given buffers.
    pub fn new<T>(rx_buffer: T, tx_buffer: T) -> Socket<'a>
    where
        T: Into<SocketBuffer<'a>>,
    {
        let (rx_buffer, tx_buffer) = (rx_buffer.into(), tx_buffer.into());
        let rx_capacity = rx_buffer.capacity();

        // From RFC 1323:
        // [...] the above constraints imply that 2 * the max window size must be less
        // than 2**31 [...] Thus, the shift count must be limited to 14 (which allows
        // windows of 2**30 = 1 Gbyte).
        #[cfg(not(target_pointer_width = "16"))] // Prevent overflow
        if rx_capacity > (1 << 30) {
            panic!("receiving buffer too large, cannot exceed 1 GiB")
        }
        let rx_cap_log2 = mem::size_of::<usize>() * 8 - rx_capacity.leading_zeros() as usize;

        Socket {
            state: State::Closed,
            timer: Timer::new(),
            rtte: RttEstimator::default(),
            assembler: Assembler::new(),
            tx_buffer,
            rx_buffer,
            rx_fin_received: false,
            rx_fin_held: None,
            timeout: None,
            keep_alive: None,
            hop_limit: None,
            listen_endpoint: IpListenEndpoint::default(),
            tuple: None,
            local_seq_no: TcpSeqNumber::default(),
            remote_seq_no: TcpSeqNumber::default(),
            remote_last_seq: TcpSeqNumber::default(),
            remote_max_seq: TcpSeqNumber::default(),
            remote_last_ack: None,
            remote_last_win: 0,
            remote_win_len: 0,
            remote_win_shift: rx_cap_log2.saturating_sub(16) as u8,
            remote_win_scale: None,
            remote_has_sack: false,
            remote_mss: DEFAULT_MSS,
            remote_last_ts: None,
            local_rx_last_ack: None,
            local_rx_last_seq: None,
            local_rx_dup_acks: 0,
            sb: Scoreboard::default(),
            rec: Recovery::default(),
            rate: rate::RateEstimator::default(),
            ts_enabled: false,
            ts_offset: 0,
            rx_max: 0,
            tx_max: 0,
            rcv_space: 0,
            rcv_space_since_us: 0,
            rcv_rtt_us: 0,
            rcv_min_rtt_us: 0,
            rcv_min_rtt_at_us: 0,
            rx_dsack: None,
            rx_sack_recent: [None; 3],
            ack_delay: Some(ACK_DELAY_DEFAULT),
            ack_delay_timer: AckDelayTimer::Idle,
            challenge_ack_timer: Instant::from_secs(0),
            nagle: true,
            thin_linear_timeouts: true,
            tsval_generator: None,
            info: TcpInfo::default(),
            last_remote_tsval: 0,
            congestion_controller: congestion::AnyController::new(),

            #[cfg(feature = "async")]
            rx_waker: WakerRegistration::new(),
            #[cfg(feature = "async")]
            tx_waker: WakerRegistration::new(),

            #[cfg(feature = "socket-tcp-pause-synack")]
            synack_paused: false,
        }
    }

    /// Enable or disable TCP Timestamp.
    pub fn set_tsval_generator(&mut self, generator: Option<TcpTimestampGenerator>) {
        self.tsval_generator = generator;
    }

    /// zt patch: what the sender knows and did (round-trip estimates, windows, retransmission
    /// counters).
    pub fn info(&self) -> TcpInfo {
        let mut info = self.info;
        let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        info.srtt_us = clamp(self.rtte.srtt_us);
        info.rttvar_us = clamp(self.rtte.rttvar_us);
        info.min_rtt_us = clamp(self.rtte.min_rtt_us);
        info.rto_us = clamp(self.rtte.retransmission_timeout().total_micros() as i64);
        info.cwnd = self.congestion_controller.inner().window();
        info.ssthresh = self.congestion_controller.inner().ssthresh();
        info.in_flight = self.sb.in_flight();
        info.reordering_seen = self.rec.reordering_seen;
        info.pacing_rate = self.rec.pacing_rate;
        info.rx_buffer = self.rx_buffer.capacity();
        info.tx_buffer = self.tx_buffer.capacity();
        info
    }

    #[doc(hidden)]
    pub fn debug_sender(&self) -> alloc::string::String {
        alloc::format!(
            "state={} una={} nxt={} max={} txlen={} timer={:?} rwnd={} sb.len={} front={:?} back={:?} lost={} sacked={} rec.state={:?} rto_at={:?} tlp_at={:?} reo_at={:?} probe={} next_send={} pacing={}",
            self.state,
            self.local_seq_no,
            self.remote_last_seq,
            self.remote_max_seq,
            self.tx_buffer.len(),
            self.timer,
            self.remote_win_len,
            self.sb.len(),
            self.sb.front(),
            self.sb.back(),
            self.sb.lost(),
            self.sb.sacked(),
            self.rec.state,
            self.rec.rto_at,
            self.rec.tlp_at,
            self.rec.reo_at,
            self.rec.probe_pending,
            self.rec.next_send_us,
            self.rec.pacing_rate
        )
    }

    /// zt patch: lets the receive and send buffers grow, up to `rx_max` and `tx_max` bytes,
    /// when the path needs them (buffers of owned storage only; a limit at or below the
    /// current capacity keeps that buffer as it is). The receive buffer grows to four times
    /// what arrives in a round trip (the window then never limits a sender that could go
    /// faster: Linux's receive-buffer auto-tuning), the send buffer to twice the congestion
    /// window (within the peer's window). The window scale advertised in the handshake
    /// allows for `rx_max`, so set this before `connect` or `listen`.
    pub fn set_buffer_limits(&mut self, rx_max: usize, tx_max: usize) {
        self.rx_max = rx_max.min(1 << 30);
        self.tx_max = tx_max.min(1 << 30);
        if matches!(self.state, State::Closed | State::Listen) {
            let own = Self::win_shift(self.rx_buffer.capacity());
            self.remote_win_shift = own.max(Self::win_shift(self.rx_max));
        }
    }

    /// The window scale for a receive buffer of `capacity` bytes (RFC 7323: at most 14).
    fn win_shift(capacity: usize) -> u8 {
        let log2 = mem::size_of::<usize>() * 8 - capacity.leading_zeros() as usize;
        log2.saturating_sub(16).min(14) as u8
    }

    /// zt patch: receive-buffer right-sizing (after Linux's `tcp_rcv_space_adjust`): once a
    /// round trip has passed, the path's bandwidth-delay product is estimated as the rate
    /// data arrived at times the minimum round trip, and the buffer grows to four times that
    /// (a power of two, up to `rx_max`), so that the window stays ahead of a sender in slow
    /// start. The minimum, not the current, round trip: time spent in queues does not add to
    /// what the path holds, and a window sized by it would only deepen the queue (a LAN with a
    /// deep queue: 0.1 ms of path, 12 ms of queue).
    fn rcv_space_adjust(&mut self, now_us: i64) {
        let cap = self.rx_buffer.capacity();
        if self.rx_max <= cap {
            return;
        }
        let rtt = if self.rcv_rtt_us > 0 {
            self.rcv_rtt_us
        } else {
            self.rtte.srtt_us
        };
        if rtt <= 0 {
            return;
        }
        if self.rcv_space_since_us == 0 {
            self.rcv_space_since_us = now_us;
            return;
        }
        if now_us - self.rcv_space_since_us < rtt {
            return;
        }
        let elapsed = now_us - self.rcv_space_since_us;
        let bytes = self.rcv_space;
        self.rcv_space = 0;
        self.rcv_space_since_us = now_us;
        let min_rtt = if self.rcv_min_rtt_us > 0 {
            self.rcv_min_rtt_us
        } else {
            self.rtte.min_rtt_us.max(rtt.min(elapsed))
        };
        let bdp = (bytes as u128 * min_rtt.max(0) as u128 / elapsed.max(1) as u128) as usize;
        if bdp.saturating_mul(4) > cap {
            let want = bdp
                .saturating_mul(4)
                .checked_next_power_of_two()
                .unwrap_or(usize::MAX)
                .min(self.rx_max);
            if self.rx_buffer.grow(want) {
                tcp_trace!("rx buffer: grown to {} octets", want);
            }
        }
    }

    /// zt patch: send-buffer growth: twice the congestion window (within the peer's window),
    /// a power of two, up to `tx_max`.
    fn snd_buf_adjust(&mut self) {
        let cap = self.tx_buffer.capacity();
        if self.tx_max <= cap {
            return;
        }
        let cwnd = self.congestion_controller.inner().window();
        let want = cwnd
            .min(self.remote_win_len)
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .min(self.tx_max);
        if want > cap && self.tx_buffer.grow(want) {
            tcp_trace!("tx buffer: grown to {} octets", want);
        }
    }

    /// zt patch: enable or disable TCP timestamps (RFC 7323) from the socket's own clock
    /// (milliseconds plus a random offset per connection). They give the sender a round-trip
    /// sample from every acknowledgement, retransmissions included, and tell a spurious
    /// retransmission from a needed one. Negotiated in the handshake: a peer that does not
    /// offer them turns them off. Takes effect for the next connection.
    pub fn set_timestamps(&mut self, enabled: bool) {
        self.ts_enabled = enabled;
    }

    /// The TSval to send now, if timestamps are on.
    fn tsval(&self, now: Instant) -> Option<u32> {
        match self.tsval_generator {
            Some(generate) => Some(generate()),
            None if self.ts_enabled => Some(self.tsval_at_us(now.total_micros())),
            None => None,
        }
    }

    /// The TSval the socket's own clock gives at `us`.
    fn tsval_at_us(&self, us: i64) -> u32 {
        ((us / 1000) as u32).wrapping_add(self.ts_offset)
    }

    /// Whether TSvals come from the socket's clock (so that echoes can be read as times).
    fn own_timestamps(&self) -> bool {
        self.ts_enabled && self.tsval_generator.is_none()
    }

    /// The timestamp option for a segment sent now (echoing TS.Recent).
    fn timestamp_option(&self, now: Instant) -> Option<TcpTimestampRepr> {
        self.tsval(now)
            .map(|tsval| TcpTimestampRepr::new(tsval, self.last_remote_tsval))
    }

    /// Return whether TCP Timestamp is enabled.
    pub fn timestamp_enabled(&self) -> bool {
        self.tsval_generator.is_some()
    }

    /// Set an algorithm for congestion control.
    ///
    /// `CongestionControl::None` indicates that no congestion control is applied.
    /// Options `CongestionControl::Cubic` and `CongestionControl::Reno` are also available.
    /// To use Reno and Cubic, please enable the `socket-tcp-reno` and `socket-tcp-cubic` features
    /// in the `smoltcp` crate, respectively.
    ///
    /// `CongestionControl::Reno` is a classic congestion control algorithm valued for its simplicity.
    /// Despite having a lower algorithmic complexity than `Cubic`,
    /// it is less efficient in terms of bandwidth usage.
    ///
    /// `CongestionControl::Cubic` represents a modern congestion control algorithm designed to
    /// be more efficient and fair compared to `CongestionControl::Reno`.
    /// It is the default choice for Linux, Windows, and macOS.
    /// `CongestionControl::Cubic` relies on double precision (`f64`) floating point operations, which may cause issues in some contexts:
    /// * Small embedded processors (such as Cortex-M0, Cortex-M1, and Cortex-M3) do not have an FPU, and floating point operations consume significant amounts of CPU time and Flash space.
    /// * Interrupt handlers should almost always avoid floating-point operations.
    /// * Kernel-mode code on desktop processors usually avoids FPU operations to reduce the penalty of saving and restoring FPU registers.
    ///
    /// In all these cases, `CongestionControl::Reno` is a better choice of congestion control algorithm.
    pub fn set_congestion_control(&mut self, congestion_control: CongestionControl) {
        use congestion::*;

        self.congestion_controller = match congestion_control {
            CongestionControl::None => AnyController::None(no_control::NoControl),

            #[cfg(feature = "socket-tcp-reno")]
            CongestionControl::Reno => AnyController::Reno(reno::Reno::new()),

            #[cfg(feature = "socket-tcp-cubic")]
            CongestionControl::Cubic => AnyController::Cubic(cubic::Cubic::new()),

            #[cfg(feature = "socket-tcp-cubic")]
            CongestionControl::Bbr => AnyController::Bbr(bbr::Bbr::new()),
        };
        // zt patch: a controller set on a connection starts from its MSS.
        self.congestion_controller
            .inner_mut()
            .set_mss(self.remote_mss);
    }

    /// Return the current congestion control algorithm.
    pub fn congestion_control(&self) -> CongestionControl {
        use congestion::*;

        match self.congestion_controller {
            AnyController::None(_) => CongestionControl::None,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(_) => CongestionControl::Reno,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(_) => CongestionControl::Cubic,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Bbr(_) => CongestionControl::Bbr,
        }
    }

    /// Register a waker for receive operations.
    ///
    /// The waker is woken on state changes that might affect the return value
    /// of `recv` method calls, such as receiving data, or the socket closing.
    ///
    /// Notes:
    ///
    /// - Only one waker can be registered at a time. If another waker was previously registered,
    ///   it is overwritten and will no longer be woken.
    /// - The Waker is woken only once. Once woken, you must register it again to receive more wakes.
    /// - "Spurious wakes" are allowed: a wake doesn't guarantee the result of `recv` has
    ///   necessarily changed.
    #[cfg(feature = "async")]
    pub fn register_recv_waker(&mut self, waker: &Waker) {
        self.rx_waker.register(waker)
    }

    /// Register a waker for send operations.
    ///
    /// The waker is woken on state changes that might affect the return value
    /// of `send` method calls, such as space becoming available in the transmit
    /// buffer, or the socket closing.
    ///
    /// Notes:
    ///
    /// - Only one waker can be registered at a time. If another waker was previously registered,
    ///   it is overwritten and will no longer be woken.
    /// - The Waker is woken only once. Once woken, you must register it again to receive more wakes.
    /// - "Spurious wakes" are allowed: a wake doesn't guarantee the result of `send` has
    ///   necessarily changed.
    #[cfg(feature = "async")]
    pub fn register_send_waker(&mut self, waker: &Waker) {
        self.tx_waker.register(waker)
    }

    /// Return the timeout duration.
    ///
    /// See also the [set_timeout](#method.set_timeout) method.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Return the ACK delay duration.
    ///
    /// See also the [set_ack_delay](#method.set_ack_delay) method.
    pub fn ack_delay(&self) -> Option<Duration> {
        self.ack_delay
    }

    /// Return whether Nagle's Algorithm is enabled.
    ///
    /// See also the [set_nagle_enabled](#method.set_nagle_enabled) method.
    pub fn nagle_enabled(&self) -> bool {
        self.nagle
    }

    /// Pause sending of SYN|ACK packets.
    ///
    /// When this flag is set, the socket will get stuck in `SynReceived` state without sending
    /// any SYN|ACK packets back, until this flag is unset. This is useful for certain niche TCP
    /// proxy usecases.
    #[cfg(feature = "socket-tcp-pause-synack")]
    pub fn pause_synack(&mut self, pause: bool) {
        self.synack_paused = pause;
    }

    /// Return the current window field value, including scaling according to RFC 1323.
    ///
    /// Used in internal calculations as well as packet generation.
    #[inline]
    fn scaled_window(&self) -> u16 {
        u16::try_from(self.rx_buffer.window() >> self.remote_win_shift).unwrap_or(u16::MAX)
    }

    /// Return the last window field value, including scaling according to RFC 1323.
    ///
    /// Used in internal calculations as well as packet generation.
    ///
    /// Unlike `remote_last_win`, we take into account new packets received (but not acknowledged)
    /// since the last window update and adjust the window length accordingly. This ensures a fair
    /// comparison between the last window length and the new window length we're going to
    /// advertise.
    #[inline]
    fn last_scaled_window(&self) -> Option<u16> {
        let last_ack = self.remote_last_ack?;
        let next_ack = self.remote_seq_no + self.rx_buffer.len();

        let last_win = (self.remote_last_win as usize) << self.remote_win_shift;
        let last_win_adjusted = last_ack + last_win - next_ack;

        Some(u16::try_from(last_win_adjusted >> self.remote_win_shift).unwrap_or(u16::MAX))
    }

    /// Set the timeout duration.
    ///
    /// A socket with a timeout duration set will abort the connection if either of the following
    /// occurs:
    ///
    ///   * After a [connect](#method.connect) call, the remote endpoint does not respond within
    ///     the specified duration;
    ///   * After establishing a connection, there is data in the transmit buffer and the remote
    ///     endpoint exceeds the specified duration between any two packets it sends;
    ///   * After enabling [keep-alive](#method.set_keep_alive), the remote endpoint exceeds
    ///     the specified duration between any two packets it sends.
    pub fn set_timeout(&mut self, duration: Option<Duration>) {
        self.timeout = duration
    }

    /// Set the ACK delay duration.
    ///
    /// By default, the ACK delay is set to 10ms.
    pub fn set_ack_delay(&mut self, duration: Option<Duration>) {
        self.ack_delay = duration
    }

    /// Enable or disable Nagle's Algorithm.
    ///
    /// Also known as "tinygram prevention". By default, it is enabled.
    /// Disabling it is equivalent to Linux's TCP_NODELAY flag.
    ///
    /// When enabled, Nagle's Algorithm prevents sending segments smaller than MSS if
    /// there is data in flight (sent but not acknowledged). In other words, it ensures
    /// at most only one segment smaller than MSS is in flight at a time.
    ///
    /// It ensures better network utilization by preventing sending many very small packets,
    /// at the cost of increased latency in some situations, particularly when the remote peer
    /// has ACK delay enabled.
    pub fn set_nagle_enabled(&mut self, enabled: bool) {
        self.nagle = enabled
    }

    /// zt patch: whether a thin flow (fewer than four segments outstanding, its round trip
    /// measured) takes its first six timeouts in a row without backing off (Linux's
    /// `tcp_thin_linear_timeouts`; on by default here, off in Linux). Off, every timeout
    /// doubles the next (RFC 6298 5.5).
    pub fn set_thin_linear_timeouts(&mut self, enabled: bool) {
        self.thin_linear_timeouts = enabled
    }

    /// Return the keep-alive interval.
    ///
    /// See also the [set_keep_alive](#method.set_keep_alive) method.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// Set the keep-alive interval.
    ///
    /// An idle socket with a keep-alive interval set will transmit a "keep-alive ACK" packet
    /// every time it receives no communication during that interval. As a result, three things
    /// may happen:
    ///
    ///   * The remote endpoint is fine and answers with an ACK packet.
    ///   * The remote endpoint has rebooted and answers with an RST packet.
    ///   * The remote endpoint has crashed and does not answer.
    ///
    /// The keep-alive functionality together with the timeout functionality allows to react
    /// to these error conditions.
    pub fn set_keep_alive(&mut self, interval: Option<Duration>) {
        self.keep_alive = interval;
        if self.keep_alive.is_some() {
            // If the connection is idle and we've just set the option, it would not take effect
            // until the next packet, unless we wind up the timer explicitly.
            self.timer.set_keep_alive();
        }
    }

    /// Return the time-to-live (IPv4) or hop limit (IPv6) value used in outgoing packets.
    ///
    /// See also the [set_hop_limit](#method.set_hop_limit) method
    pub fn hop_limit(&self) -> Option<u8> {
        self.hop_limit
    }

    /// Set the time-to-live (IPv4) or hop limit (IPv6) value used in outgoing packets.
    ///
    /// A socket without an explicitly set hop limit value uses the default [IANA recommended]
    /// value (64).
    ///
    /// # Panics
    ///
    /// This function panics if a hop limit value of 0 is given. See [RFC 1122 § 3.2.1.7].
    ///
    /// [IANA recommended]: https://www.iana.org/assignments/ip-parameters/ip-parameters.xhtml
    /// [RFC 1122 § 3.2.1.7]: https://tools.ietf.org/html/rfc1122#section-3.2.1.7
    pub fn set_hop_limit(&mut self, hop_limit: Option<u8>) {
        // A host MUST NOT send a datagram with a hop limit value of 0
        if let Some(0) = hop_limit {
            panic!("the time-to-live value of a packet must not be zero")
        }

        self.hop_limit = hop_limit
    }

    /// Return the listen endpoint
    #[inline]
    pub fn listen_endpoint(&self) -> IpListenEndpoint {
        self.listen_endpoint
    }

    /// Return the local endpoint, or None if not connected.
    #[inline]
    pub fn local_endpoint(&self) -> Option<IpEndpoint> {
        Some(self.tuple?.local)
    }

    /// Return the remote endpoint, or None if not connected.
    #[inline]
    pub fn remote_endpoint(&self) -> Option<IpEndpoint> {
        Some(self.tuple?.remote)
    }

    /// Return the connection state, in terms of the TCP state machine.
    #[inline]
    pub fn state(&self) -> State {
        self.state
    }

    fn reset(&mut self) {
        let rx_cap_log2 =
            mem::size_of::<usize>() * 8 - self.rx_buffer.capacity().leading_zeros() as usize;

        self.state = State::Closed;
        self.timer = Timer::new();
        self.rtte = RttEstimator::default();
        self.info = TcpInfo::default();
        self.assembler = Assembler::new();
        self.tx_buffer.clear();
        self.rx_buffer.clear();
        self.rx_fin_received = false;
        self.rx_fin_held = None;
        self.listen_endpoint = IpListenEndpoint::default();
        self.tuple = None;
        self.local_seq_no = TcpSeqNumber::default();
        self.remote_seq_no = TcpSeqNumber::default();
        self.remote_last_seq = TcpSeqNumber::default();
        self.remote_max_seq = TcpSeqNumber::default();
        self.remote_last_ack = None;
        self.remote_last_win = 0;
        self.remote_win_len = 0;
        self.remote_win_scale = None;
        self.remote_win_shift = rx_cap_log2.saturating_sub(16) as u8;
        // zt patch: a receive buffer that may grow advertises the scale of its largest size.
        self.remote_win_shift = self.remote_win_shift.max(Self::win_shift(self.rx_max));
        self.remote_mss = DEFAULT_MSS;
        self.remote_last_ts = None;
        self.ack_delay_timer = AckDelayTimer::Idle;
        self.challenge_ack_timer = Instant::from_secs(0);
        self.local_rx_last_ack = None;
        self.local_rx_last_seq = None;
        self.local_rx_dup_acks = 0;
        self.sb.clear();
        self.rec = Recovery::default();
        self.rate = rate::RateEstimator::default();
        self.rx_dsack = None;
        self.rx_sack_recent = [None; 3];
        self.last_remote_tsval = 0;
        self.rcv_space = 0;
        self.rcv_space_since_us = 0;
        self.rcv_rtt_us = 0;
        self.rcv_min_rtt_us = 0;
        self.rcv_min_rtt_at_us = 0;

        #[cfg(feature = "async")]
        {
            self.rx_waker.wake();
            self.tx_waker.wake();
        }
    }

    /// Start listening on the given endpoint.
    ///
    /// This function returns `Err(Error::InvalidState)` if the socket was already open
    /// (see [is_open](#method.is_open)), and `Err(Error::Unaddressable)`
    /// if the port in the given endpoint is zero.
    pub fn listen<T>(&mut self, local_endpoint: T) -> Result<(), ListenError>
    where
        T: Into<IpListenEndpoint>,
    {
        let local_endpoint = local_endpoint.into();
        if local_endpoint.port == 0 {
            return Err(ListenError::Unaddressable);
        }

        if self.is_open() {
            // If we were already listening to same endpoint there is nothing to do; exit early.
            //
            // In the past listening on an socket that was already listening was an error,
            // however this makes writing an acceptor loop with multiple sockets impossible.
            // Without this early exit, if you tried to listen on a socket that's already listening you'll
            // immediately get an error. The only way around this is to abort the socket first
            // before listening again, but this means that incoming connections can actually
            // get aborted between the abort() and the next listen().
            if matches!(self.state, State::Listen) && self.listen_endpoint == local_endpoint {
                return Ok(());
            } else {
                return Err(ListenError::InvalidState);
            }
        }

        self.reset();
        self.listen_endpoint = local_endpoint;
        self.tuple = None;
        self.set_state(State::Listen);
        Ok(())
    }

    /// Connect to a given endpoint.
    ///
    /// The local port must be provided explicitly. Assuming `fn get_ephemeral_port() -> u16`
    /// allocates a port between 49152 and 65535, a connection may be established as follows:
    ///
    /// ```no_run
    /// # #[cfg(all(
    /// #     feature = "medium-ethernet",
    /// #     feature = "proto-ipv4",
    /// # ))]
    /// # {
    /// # use smoltcp::socket::tcp::{Socket, SocketBuffer};
    /// # use smoltcp::iface::Interface;
    /// # use smoltcp::wire::IpAddress;
    /// #
    /// # fn get_ephemeral_port() -> u16 {
    /// #     49152
    /// # }
    /// #
    /// # let mut socket = Socket::new(
    /// #     SocketBuffer::new(vec![0; 1200]),
    /// #     SocketBuffer::new(vec![0; 1200])
    /// # );
    /// #
    /// # let mut iface: Interface = todo!();
    /// #
    /// socket.connect(
    ///     iface.context(),
    ///     (IpAddress::v4(10, 0, 0, 1), 80),
    ///     get_ephemeral_port()
    /// ).unwrap();
    /// # }
    /// ```
    ///
    /// The local address may optionally be provided.
    ///
    /// This function returns an error if the socket was open; see [is_open](#method.is_open).
    /// It also returns an error if the local or remote port is zero, or if the remote address
    /// is unspecified.
    pub fn connect<T, U>(
        &mut self,
        cx: &mut Context,
        remote_endpoint: T,
        local_endpoint: U,
    ) -> Result<(), ConnectError>
    where
        T: Into<IpEndpoint>,
        U: Into<IpListenEndpoint>,
    {
        let remote_endpoint: IpEndpoint = remote_endpoint.into();
        let local_endpoint: IpListenEndpoint = local_endpoint.into();

        if self.is_open() {
            return Err(ConnectError::InvalidState);
        }
        if remote_endpoint.port == 0 || remote_endpoint.addr.is_unspecified() {
            return Err(ConnectError::Unaddressable);
        }
        if local_endpoint.port == 0 {
            return Err(ConnectError::Unaddressable);
        }

        // If local address is not provided, choose it automatically.
        let local_endpoint = IpEndpoint {
            addr: match local_endpoint.addr {
                Some(addr) => {
                    if addr.is_unspecified() {
                        return Err(ConnectError::Unaddressable);
                    }
                    addr
                }
                None => cx
                    .get_source_address(&remote_endpoint.addr)
                    .ok_or(ConnectError::Unaddressable)?,
            },
            port: local_endpoint.port,
        };

        if local_endpoint.addr.version() != remote_endpoint.addr.version() {
            return Err(ConnectError::Unaddressable);
        }

        self.reset();
        self.tuple = Some(Tuple {
            local: local_endpoint,
            remote: remote_endpoint,
        });
        self.set_state(State::SynSent);

        let seq = Self::random_seq_no(cx);
        self.local_seq_no = seq;
        self.remote_last_seq = seq;
        self.remote_max_seq = seq;
        self.start_sender(cx, seq);
        Ok(())
    }

    /// zt patch: a new connection's sender state, its first data byte at `iss` + 1.
    fn start_sender(&mut self, cx: &mut Context, iss: TcpSeqNumber) {
        self.sb.clear();
        self.rec.start(iss + 1);
        self.rate = rate::RateEstimator::default();
        self.ts_offset = Self::random_ts_offset(cx);
    }

    #[cfg(test)]
    fn random_ts_offset(_cx: &mut Context) -> u32 {
        0
    }

    #[cfg(not(test))]
    fn random_ts_offset(cx: &mut Context) -> u32 {
        cx.rand().rand_u32()
    }

    #[cfg(test)]
    fn random_seq_no(_cx: &mut Context) -> TcpSeqNumber {
        TcpSeqNumber(10000)
    }

    #[cfg(not(test))]
    fn random_seq_no(cx: &mut Context) -> TcpSeqNumber {
        TcpSeqNumber(cx.rand().rand_u32() as i32)
    }

    /// Close the transmit half of the full-duplex connection.
    ///
    /// Note that there is no corresponding function for the receive half of the full-duplex
    /// connection; only the remote end can close it. If you no longer wish to receive any
    /// data and would like to reuse the socket right away, use [abort](#method.abort).
    pub fn close(&mut self) {
        match self.state {
            // In the LISTEN state there is no established connection.
            State::Listen => self.set_state(State::Closed),
            // In the SYN-SENT state the remote endpoint is not yet synchronized and, upon
            // receiving an RST, will abort the connection.
            State::SynSent => self.set_state(State::Closed),
            // In the SYN-RECEIVED, ESTABLISHED and CLOSE-WAIT states the transmit half
            // of the connection is open, and needs to be explicitly closed with a FIN.
            State::SynReceived | State::Established => self.set_state(State::FinWait1),
            State::CloseWait => self.set_state(State::LastAck),
            // In the FIN-WAIT-1, FIN-WAIT-2, CLOSING, LAST-ACK, TIME-WAIT and CLOSED states,
            // the transmit half of the connection is already closed, and no further
            // action is needed.
            State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::TimeWait
            | State::LastAck
            | State::Closed => (),
        }
    }

    /// Aborts the connection, if any.
    ///
    /// This function instantly closes the socket. One reset packet will be sent to the remote
    /// endpoint.
    ///
    /// In terms of the TCP state machine, the socket may be in any state and is moved to
    /// the `CLOSED` state.
    pub fn abort(&mut self) {
        self.set_state(State::Closed);
    }

    /// Return whether the socket is passively listening for incoming connections.
    ///
    /// In terms of the TCP state machine, the socket must be in the `LISTEN` state.
    #[inline]
    pub fn is_listening(&self) -> bool {
        match self.state {
            State::Listen => true,
            _ => false,
        }
    }

    /// Return whether the socket is open.
    ///
    /// This function returns true if the socket will process incoming or dispatch outgoing
    /// packets. Note that this does not mean that it is possible to send or receive data through
    /// the socket; for that, use [can_send](#method.can_send) or [can_recv](#method.can_recv).
    ///
    /// In terms of the TCP state machine, the socket must not be in the `CLOSED`
    /// or `TIME-WAIT` states.
    #[inline]
    pub fn is_open(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::TimeWait => false,
            _ => true,
        }
    }

    /// Return whether a connection is active.
    ///
    /// This function returns true if the socket is actively exchanging packets with
    /// a remote endpoint. Note that this does not mean that it is possible to send or receive
    /// data through the socket; for that, use [can_send](#method.can_send) or
    /// [can_recv](#method.can_recv).
    ///
    /// If a connection is established, [abort](#method.close) will send a reset to
    /// the remote endpoint.
    ///
    /// In terms of the TCP state machine, the socket must not be in the `CLOSED`, `TIME-WAIT`,
    /// or `LISTEN` state.
    #[inline]
    pub fn is_active(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::TimeWait => false,
            State::Listen => false,
            _ => true,
        }
    }

    /// Return whether the transmit half of the full-duplex connection is open.
    ///
    /// This function returns true if it's possible to send data and have it arrive
    /// to the remote endpoint. However, it does not make any guarantees about the state
    /// of the transmit buffer, and even if it returns true, [send](#method.send) may
    /// not be able to enqueue any octets.
    ///
    /// In terms of the TCP state machine, the socket must be in the `ESTABLISHED` or
    /// `CLOSE-WAIT` state.
    #[inline]
    pub fn may_send(&self) -> bool {
        match self.state {
            State::Established => true,
            // In CLOSE-WAIT, the remote endpoint has closed our receive half of the connection
            // but we still can transmit indefinitely.
            State::CloseWait => true,
            _ => false,
        }
    }

    /// Return whether the receive half of the full-duplex connection is open.
    ///
    /// This function returns true if it's possible to receive data from the remote endpoint.
    /// It will return true while there is data in the receive buffer, and if there isn't,
    /// as long as the remote endpoint has not closed the connection.
    ///
    /// In terms of the TCP state machine, the socket must be in the `ESTABLISHED`,
    /// `FIN-WAIT-1`, or `FIN-WAIT-2` state, or have data in the receive buffer instead.
    #[inline]
    pub fn may_recv(&self) -> bool {
        match self.state {
            State::Established => true,
            // In FIN-WAIT-1/2, we have closed our transmit half of the connection but
            // we still can receive indefinitely.
            State::FinWait1 | State::FinWait2 => true,
            // If we have something in the receive buffer, we can receive that.
            _ if self.can_recv() => true,
            _ => false,
        }
    }

    /// Check whether the transmit half of the full-duplex connection is open
    /// (see [may_send](#method.may_send)), and the transmit buffer is not full.
    #[inline]
    pub fn can_send(&self) -> bool {
        if !self.may_send() {
            return false;
        }

        !self.tx_buffer.is_full()
    }

    /// Return the maximum number of bytes inside the recv buffer.
    #[inline]
    pub fn recv_capacity(&self) -> usize {
        self.rx_buffer.capacity()
    }

    /// Return the maximum number of bytes inside the transmit buffer.
    #[inline]
    pub fn send_capacity(&self) -> usize {
        self.tx_buffer.capacity()
    }

    /// Check whether the receive buffer is not empty.
    #[inline]
    pub fn can_recv(&self) -> bool {
        !self.rx_buffer.is_empty()
    }

    fn send_impl<'b, F, R>(&'b mut self, f: F) -> Result<R, SendError>
    where
        F: FnOnce(&'b mut SocketBuffer<'a>) -> (usize, R),
    {
        if !self.may_send() {
            return Err(SendError::InvalidState);
        }

        let old_length = self.tx_buffer.len();
        let (size, result) = f(&mut self.tx_buffer);
        if size > 0 {
            // The connection might have been idle for a long time, and so remote_last_ts
            // would be far in the past. Unless we clear it here, we'll abort the connection
            // down over in dispatch() by erroneously detecting it as timed out.
            if old_length == 0 {
                self.remote_last_ts = None
            }

            // if remote win is zero and we go from having no data to some data pending to
            // send, start the zero window probe timer.
            if self.remote_win_len == 0 && self.timer.is_idle() {
                let delay = self.rtte.retransmission_timeout();
                tcp_trace!("starting zero-window-probe timer for t+{}", delay);

                // We don't have access to the current time here, so use Instant::ZERO instead.
                // this will cause the first ZWP to be sent immediately, but that's okay.
                self.timer.set_for_zero_window_probe(Instant::ZERO, delay);
            }

            #[cfg(any(test, feature = "verbose"))]
            tcp_trace!(
                "tx buffer: enqueueing {} octets (now {})",
                size,
                old_length + size
            );
        }
        Ok(result)
    }

    /// Call `f` with the largest contiguous slice of octets in the transmit buffer,
    /// and enqueue the amount of elements returned by `f`.
    ///
    /// This function returns `Err(Error::Illegal)` if the transmit half of
    /// the connection is not open; see [may_send](#method.may_send).
    pub fn send<'b, F, R>(&'b mut self, f: F) -> Result<R, SendError>
    where
        F: FnOnce(&'b mut [u8]) -> (usize, R),
    {
        self.send_impl(|tx_buffer| tx_buffer.enqueue_many_with(f))
    }

    /// Enqueue a sequence of octets to be sent, and fill it from a slice.
    ///
    /// This function returns the amount of octets actually enqueued, which is limited
    /// by the amount of free space in the transmit buffer; down to zero.
    ///
    /// See also [send](#method.send).
    pub fn send_slice(&mut self, data: &[u8]) -> Result<usize, SendError> {
        self.send_impl(|tx_buffer| {
            let size = tx_buffer.enqueue_slice(data);
            (size, size)
        })
    }

    fn recv_error_check(&mut self) -> Result<(), RecvError> {
        // We may have received some data inside the initial SYN, but until the connection
        // is fully open we must not dequeue any data, as it may be overwritten by e.g.
        // another (stale) SYN. (We do not support TCP Fast Open.)
        if !self.may_recv() {
            if self.rx_fin_received {
                return Err(RecvError::Finished);
            }
            return Err(RecvError::InvalidState);
        }

        Ok(())
    }

    fn recv_impl<'b, F, R>(&'b mut self, f: F) -> Result<R, RecvError>
    where
        F: FnOnce(&'b mut SocketBuffer<'a>) -> (usize, R),
    {
        self.recv_error_check()?;

        let _old_length = self.rx_buffer.len();
        let (size, result) = f(&mut self.rx_buffer);
        self.remote_seq_no += size;
        if size > 0 {
            #[cfg(any(test, feature = "verbose"))]
            tcp_trace!(
                "rx buffer: dequeueing {} octets (now {})",
                size,
                _old_length - size
            );
        }
        Ok(result)
    }

    /// Call `f` with the largest contiguous slice of octets in the receive buffer,
    /// and dequeue the amount of elements returned by `f`.
    ///
    /// This function errors if the receive half of the connection is not open.
    ///
    /// If the receive half has been gracefully closed (with a FIN packet), `Err(Error::Finished)`
    /// is returned. In this case, the previously received data is guaranteed to be complete.
    ///
    /// In all other cases, `Err(Error::Illegal)` is returned and previously received data (if any)
    /// may be incomplete (truncated).
    pub fn recv<'b, F, R>(&'b mut self, f: F) -> Result<R, RecvError>
    where
        F: FnOnce(&'b mut [u8]) -> (usize, R),
    {
        self.recv_impl(|rx_buffer| rx_buffer.dequeue_many_with(f))
    }

    /// Dequeue a sequence of received octets, and fill a slice from it.
    ///
    /// This function returns the amount of octets actually dequeued, which is limited
    /// by the amount of occupied space in the receive buffer; down to zero.
    ///
    /// See also [recv](#method.recv).
    pub fn recv_slice(&mut self, data: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_impl(|rx_buffer| {
            let size = rx_buffer.dequeue_slice(data);
            (size, size)
        })
    }

    /// Peek at a sequence of received octets without removing them from
    /// the receive buffer, and return a pointer to it.
    ///
    /// This function otherwise behaves identically to [recv](#method.recv).
    pub fn peek(&mut self, size: usize) -> Result<&[u8], RecvError> {
        self.recv_error_check()?;

        let buffer = self.rx_buffer.get_allocated(0, size);
        if !buffer.is_empty() {
            #[cfg(any(test, feature = "verbose"))]
            tcp_trace!("rx buffer: peeking at {} octets", buffer.len());
        }
        Ok(buffer)
    }

    /// Peek at a sequence of received octets without removing them from
    /// the receive buffer, and fill a slice from it.
    ///
    /// This function otherwise behaves identically to [recv_slice](#method.recv_slice).
    pub fn peek_slice(&mut self, data: &mut [u8]) -> Result<usize, RecvError> {
        Ok(self.rx_buffer.read_allocated(0, data))
    }

    /// Return the amount of octets queued in the transmit buffer.
    ///
    /// Note that the Berkeley sockets interface does not have an equivalent of this API.
    pub fn send_queue(&self) -> usize {
        self.tx_buffer.len()
    }

    /// zt patch: the sequence number of a segment that occupies no sequence space (an ACK, a
    /// window update, a RST): SND.MAX, the highest sequence number sent.
    ///
    /// After a retransmission timeout `remote_last_seq` is back at `local_seq_no`
    /// (go-back-N), and with a congestion controller it climbs again one congestion window at
    /// a time (one segment at first). The peer may have received far more than that already
    /// (only its ACKs were lost), and a zero-length segment whose sequence number lies before
    /// the peer's RCV.NXT is unacceptable to it (RFC 9293 3.10.7.4): it is dropped, its ACK
    /// field ignored. When both ends carry data and both time out this way, each drops the
    /// other's ACKs: each retransmits its first unacknowledged segment (old data to the peer),
    /// the peer answers with an ACK that is dropped in turn, and the connection stalls for
    /// good, retransmitting at the maximum RTO. SND.MAX is never behind the peer's RCV.NXT.
    fn ack_seq_number(&self) -> TcpSeqNumber {
        self.remote_max_seq.max(self.remote_last_seq)
    }

    /// Number of octets transmitted but not yet ACKed (SND.NXT - SND.UNA: where new data
    /// starts in the transmit buffer).
    fn flight_size(&self) -> usize {
        self.remote_last_seq - self.local_seq_no
    }

    /// zt patch: how many bytes the congestion window lets go now: nothing once the bytes in
    /// flight (RFC 6675's pipe: sent, not delivered, not known lost) reach it, else what is
    /// left of it but at least a full segment (windows count whole segments, as Linux's do,
    /// so that a window a few bytes short does not send a runt).
    fn cwnd_remaining(&self) -> usize {
        let cwnd = self.congestion_controller.inner().window();
        let pipe = self.sb.in_flight();
        if pipe >= cwnd {
            0
        } else {
            (cwnd - pipe).max(self.remote_mss)
        }
    }

    /// Return the amount of octets queued in the receive buffer. This value can be larger than
    /// the slice read by the next `recv` or `peek` call because it includes all queued octets,
    /// and not only the octets that may be returned as a contiguous slice.
    ///
    /// Note that the Berkeley sockets interface does not have an equivalent of this API.
    pub fn recv_queue(&self) -> usize {
        self.rx_buffer.len()
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            tcp_trace!("state={}=>{}", self.state, state);
        }

        self.state = state;

        #[cfg(feature = "async")]
        {
            // Wake all tasks waiting. Even if we haven't received/sent data, this
            // is needed because return values of functions may change depending on the state.
            // For example, a pending read has to fail with an error if the socket is closed.
            self.rx_waker.wake();
            self.tx_waker.wake();
        }
    }

    pub(crate) fn reply(ip_repr: &IpRepr, repr: &TcpRepr) -> (IpRepr, TcpRepr<'static>) {
        let reply_repr = TcpRepr {
            src_port: repr.dst_port,
            dst_port: repr.src_port,
            control: TcpControl::None,
            seq_number: TcpSeqNumber(0),
            ack_number: None,
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let ip_reply_repr = IpRepr::new(
            ip_repr.dst_addr(),
            ip_repr.src_addr(),
            IpProtocol::Tcp,
            reply_repr.buffer_len(),
            64,
        );
        (ip_reply_repr, reply_repr)
    }

    pub(crate) fn rst_reply(ip_repr: &IpRepr, repr: &TcpRepr) -> (IpRepr, TcpRepr<'static>) {
        debug_assert!(repr.control != TcpControl::Rst);

        let (ip_reply_repr, mut reply_repr) = Self::reply(ip_repr, repr);

        // See https://www.snellman.net/blog/archive/2016-02-01-tcp-rst/ for explanation
        // of why we sometimes send an RST and sometimes an RST|ACK
        reply_repr.control = TcpControl::Rst;
        reply_repr.seq_number = repr.ack_number.unwrap_or_default();
        if repr.control == TcpControl::Syn && repr.ack_number.is_none() {
            reply_repr.ack_number = Some(repr.seq_number + repr.segment_len());
        }

        (ip_reply_repr, reply_repr)
    }

    /// zt patch: the SACK blocks (RFC 2018) for an ACK of `ack`: a D-SACK block first if a
    /// duplicate arrived (RFC 2883), then the block holding the segment received last, then
    /// the blocks reported most recently, then the lowest ones. At most three (with the
    /// timestamp option, no more fit).
    fn sack_ranges(&mut self, ack: TcpSeqNumber) -> [Option<(u32, u32)>; 3] {
        let mut out: [Option<(u32, u32)>; 3] = [None; 3];
        if !self.remote_has_sack {
            self.rx_dsack = None;
            return out;
        }
        let mut n = 0;
        if let Some((l, r)) = self.rx_dsack.take() {
            out[0] = Some((l.0 as u32, r.0 as u32));
            n = 1;
        }
        if self.assembler.is_empty() {
            self.rx_sack_recent = [None; 3];
            return out;
        }
        let block_of = |seq: TcpSeqNumber, asm: &Assembler| {
            asm.iter_data()
                .map(|(left, right)| (ack + left, ack + right))
                .find(|&(left, right)| left <= seq && seq < right)
        };
        let mut chosen: [Option<(TcpSeqNumber, TcpSeqNumber)>; 3] = [None; 3];
        let mut c = 0;
        let last = self.local_rx_last_seq;
        let recent = self.rx_sack_recent;
        for seq in core::iter::once(last)
            .chain(recent.iter().copied())
            .flatten()
        {
            if c == 3 {
                break;
            }
            if let Some(b) = block_of(seq, &self.assembler)
                && !chosen.contains(&Some(b))
            {
                chosen[c] = Some(b);
                c += 1;
            }
        }
        for (left, right) in self.assembler.iter_data() {
            if c == 3 {
                break;
            }
            let b = (ack + left, ack + right);
            if !chosen.contains(&Some(b)) {
                chosen[c] = Some(b);
                c += 1;
            }
        }
        self.rx_sack_recent = [None; 3];
        for (k, b) in chosen.iter().flatten().enumerate() {
            self.rx_sack_recent[k] = Some(b.0);
            if n < 3 {
                out[n] = Some((b.0.0 as u32, b.1.0 as u32));
                n += 1;
            }
        }
        out
    }

    fn ack_reply(
        &mut self,
        now: Instant,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> (IpRepr, TcpRepr<'static>) {
        let (mut ip_reply_repr, mut reply_repr) = Self::reply(ip_repr, repr);
        // zt patch: echo TS.Recent (RFC 7323 4.3), not the segment's own TSval, and only to a
        // peer that sends timestamps.
        reply_repr.timestamp = repr.timestamp.and(self.timestamp_option(now));

        // From RFC 793:
        // [...] an empty acknowledgment segment containing the current send-sequence number
        // and an acknowledgment indicating the next sequence number expected
        // to be received.
        //
        // zt patch: the highest sequence number sent, not `remote_last_seq` (see
        // `ack_seq_number`).
        reply_repr.seq_number = self.ack_seq_number();
        reply_repr.ack_number = Some(self.remote_seq_no + self.rx_buffer.len());
        self.remote_last_ack = reply_repr.ack_number;

        // From RFC 1323:
        // The window field [...] of every outgoing segment, with the exception of SYN
        // segments, is right-shifted by [advertised scale value] bits[...]
        reply_repr.window_len = self.scaled_window();
        self.remote_last_win = reply_repr.window_len;

        // zt patch: SACK and D-SACK blocks (see `sack_ranges`).
        let ack = reply_repr.ack_number.unwrap_or(TcpSeqNumber(0));
        reply_repr.sack_ranges = self.sack_ranges(ack);

        // Since the sACK option may have changed the length of the payload, update that.
        ip_reply_repr.set_payload_len(reply_repr.buffer_len());
        (ip_reply_repr, reply_repr)
    }

    fn challenge_ack_reply(
        &mut self,
        cx: &mut Context,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> Option<(IpRepr, TcpRepr<'static>)> {
        if cx.now() < self.challenge_ack_timer {
            return None;
        }

        // Rate-limit to 1 per second max.
        self.challenge_ack_timer = cx.now() + Duration::from_secs(1);

        Some(self.ack_reply(cx.now(), ip_repr, repr))
    }

    pub(crate) fn accepts(&self, _cx: &mut Context, ip_repr: &IpRepr, repr: &TcpRepr) -> bool {
        if self.state == State::Closed {
            return false;
        }

        // If we're still listening for SYNs and the packet has an ACK or a RST,
        // it cannot be destined to this socket, but another one may well listen
        // on the same local endpoint.
        if self.state == State::Listen
            && (repr.ack_number.is_some() || repr.control == TcpControl::Rst)
        {
            return false;
        }

        if let Some(tuple) = &self.tuple {
            // Reject packets not matching the 4-tuple
            ip_repr.dst_addr() == tuple.local.addr
                && repr.dst_port == tuple.local.port
                && ip_repr.src_addr() == tuple.remote.addr
                && repr.src_port == tuple.remote.port
        } else {
            // We're listening, reject packets not matching the listen endpoint.
            let addr_ok = match self.listen_endpoint.addr {
                Some(addr) => ip_repr.dst_addr() == addr,
                None => true,
            };
            addr_ok && repr.dst_port != 0 && repr.dst_port == self.listen_endpoint.port
        }
    }

    pub(crate) fn process(
        &mut self,
        cx: &mut Context,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> Option<(IpRepr, TcpRepr<'static>)> {
        debug_assert!(self.accepts(cx, ip_repr, repr));

        // Consider how much the sequence number space differs from the transmit buffer space.
        let (sent_syn, sent_fin) = match self.state {
            // In SYN-SENT or SYN-RECEIVED, we've just sent a SYN.
            State::SynSent | State::SynReceived => (true, false),
            // In FIN-WAIT-1, LAST-ACK, or CLOSING, we've just sent a FIN.
            State::FinWait1 | State::LastAck | State::Closing => (false, true),
            // In all other states we've already got acknowledgements for
            // all of the control flags we sent.
            _ => (false, false),
        };
        let control_len = (sent_syn as usize) + (sent_fin as usize);

        // zt patch: an acknowledgement older than SND.UNA (reordered, or the peer's data
        // crossing our retransmission) is ignored, but not the data and FIN the segment
        // carries (RFC 9293 3.10.7.4: "If the ACK is a duplicate (SEG.ACK =< SND.UNA), it can
        // be ignored"); dropping the whole segment stalls a peer whose data segments all carry
        // such an ACK.
        let mut old_ack = false;

        // Reject unacceptable acknowledgements.
        match (self.state, repr.control, repr.ack_number) {
            // An RST received in response to initial SYN is acceptable if it acknowledges
            // the initial SYN.
            (State::SynSent, TcpControl::Rst, None) => {
                net_debug!("unacceptable RST (expecting RST|ACK) in response to initial SYN");
                return None;
            }
            (State::SynSent, TcpControl::Rst, Some(ack_number)) => {
                if ack_number != self.local_seq_no + 1 {
                    net_debug!("unacceptable RST|ACK in response to initial SYN");
                    return None;
                }
            }
            // Any other RST need only have a valid sequence number.
            (_, TcpControl::Rst, _) => (),
            // The initial SYN cannot contain an acknowledgement.
            (State::Listen, _, None) => (),
            // This case is handled in `accepts()`.
            (State::Listen, _, Some(_)) => unreachable!(),
            // SYN|ACK in the SYN-SENT state must have the exact ACK number.
            (State::SynSent, TcpControl::Syn, Some(ack_number)) => {
                if ack_number != self.local_seq_no + 1 {
                    net_debug!("unacceptable SYN|ACK in response to initial SYN");
                    return Some(Self::rst_reply(ip_repr, repr));
                }
            }
            // TCP simultaneous open.
            // This is required by RFC 9293, which states "A TCP implementation MUST support
            // simultaneous open attempts (MUST-10)."
            (State::SynSent, TcpControl::Syn, None) => (),
            // ACKs in the SYN-SENT state are invalid.
            (State::SynSent, TcpControl::None, Some(ack_number)) => {
                // If the sequence number matches, ignore it instead of RSTing.
                // I'm not sure why, I think it may be a workaround for broken TCP
                // servers, or a defense against reordering. Either way, if Linux
                // does it, we do too.
                if ack_number == self.local_seq_no + 1 {
                    net_debug!(
                        "expecting a SYN|ACK, received an ACK with the right ack_number, ignoring."
                    );
                    return None;
                }

                net_debug!(
                    "expecting a SYN|ACK, received an ACK with the wrong ack_number, sending RST."
                );
                return Some(Self::rst_reply(ip_repr, repr));
            }
            // Anything else in the SYN-SENT state is invalid.
            (State::SynSent, _, _) => {
                net_debug!("expecting a SYN|ACK");
                return None;
            }
            // Every packet after the initial SYN must be an acknowledgement.
            (_, _, None) => {
                net_debug!("expecting an ACK");
                return None;
            }
            // ACK in the SYN-RECEIVED state must have the exact ACK number, or we RST it.
            (State::SynReceived, _, Some(ack_number)) => {
                if ack_number != self.local_seq_no + 1 {
                    net_debug!("unacceptable ACK in response to SYN|ACK");
                    return Some(Self::rst_reply(ip_repr, repr));
                }
            }
            // Every acknowledgement must be for transmitted but unacknowledged data.
            (_, _, Some(ack_number)) => {
                let unacknowledged = self.tx_buffer.len() + control_len;

                // Acceptable ACK range (both inclusive)
                let mut ack_min = self.local_seq_no;
                let ack_max = self.local_seq_no + unacknowledged;

                // If we have sent a SYN, it MUST be acknowledged.
                if sent_syn {
                    ack_min += 1;
                }

                if ack_number < ack_min {
                    net_debug!(
                        "duplicate ACK ({} not in {}...{})",
                        ack_number,
                        ack_min,
                        ack_max
                    );
                    // zt patch: its SACK and D-SACK blocks still count (an ACK overtaken by a
                    // later one on a reordering path may carry the only report of a duplicate).
                    if sent_syn {
                        return None;
                    }
                    old_ack = true;
                }

                if ack_number > ack_max {
                    net_debug!(
                        "unacceptable ACK ({} not in {}...{})",
                        ack_number,
                        ack_min,
                        ack_max
                    );
                    return self.challenge_ack_reply(cx, ip_repr, repr);
                }
            }
        }

        let window_start = self.remote_seq_no + self.rx_buffer.len();
        let window_end = if let Some(last_ack) = self.remote_last_ack {
            last_ack + ((self.remote_last_win as usize) << self.remote_win_shift)
        } else {
            window_start
        };
        let segment_start = repr.seq_number;
        let segment_end = repr.seq_number + repr.payload.len();

        let (payload, payload_offset) = match self.state {
            // In LISTEN and SYN-SENT states, we have not yet synchronized with the remote end.
            State::Listen | State::SynSent => (&[][..], 0),
            _ => {
                // https://www.rfc-editor.org/rfc/rfc9293.html#name-segment-acceptability-tests
                let segment_in_window = match (
                    segment_start == segment_end,
                    window_start == window_end,
                ) {
                    (true, _) if segment_end == window_start - 1 => {
                        net_debug!(
                            "received a keep-alive or window probe packet, will send an ACK"
                        );
                        false
                    }
                    (true, true) => {
                        if window_start == segment_start {
                            true
                        } else {
                            net_debug!(
                                "zero-length segment not inside zero-length window, will send an ACK."
                            );
                            false
                        }
                    }
                    (true, false) => {
                        if window_start <= segment_start && segment_start < window_end {
                            true
                        } else {
                            net_debug!("zero-length segment not inside window, will send an ACK.");
                            false
                        }
                    }
                    (false, true) => {
                        net_debug!(
                            "non-zero-length segment with zero receive window, will only send an ACK"
                        );
                        false
                    }
                    (false, false) => {
                        if (window_start <= segment_start && segment_start < window_end)
                            || (window_start < segment_end && segment_end <= window_end)
                        {
                            true
                        } else {
                            net_debug!(
                                "segment not in receive window ({}..{} not intersecting {}..{}), will send challenge ACK",
                                segment_start,
                                segment_end,
                                window_start,
                                window_end
                            );
                            false
                        }
                    }
                };

                if segment_in_window {
                    let overlap_start = window_start.max(segment_start);
                    let overlap_end = window_end.min(segment_end);

                    // the checks done above imply this.
                    debug_assert!(overlap_start <= overlap_end);

                    self.local_rx_last_seq = Some(repr.seq_number);

                    // zt patch: the part before RCV.NXT arrived before: report it (D-SACK).
                    if segment_start < window_start && !repr.payload.is_empty() {
                        if self.remote_has_sack {
                            self.rx_dsack = Some((segment_start, window_start.min(segment_end)));
                        }
                        self.info.rx_duplicates += 1;
                    }

                    (
                        &repr.payload[overlap_start - segment_start..overlap_end - segment_start],
                        overlap_start - window_start,
                    )
                } else {
                    // Out-of-window RSTs are silently dropped, per RFC 9293
                    // (3.10.7.4) and RFC 5961 (3.2): no reply is sent, and the
                    // TIME-WAIT timer below is not refreshed. RST senders don't
                    // need a reply to make progress.
                    if repr.control == TcpControl::Rst {
                        net_debug!("dropping out-of-window RST");
                        return None;
                    }

                    // If we're in the TIME-WAIT state, restart the TIME-WAIT timeout, since
                    // the remote end may not have realized we've closed the connection.
                    if self.state == State::TimeWait {
                        self.timer.set_for_close(cx.now());
                    }

                    // Segments carrying data are exempt from challenge ACK rate
                    // limiting: an out-of-window data segment is a retransmission
                    // whose ACK was lost, or a window probe, and per RFC 9293
                    // (3.10.7.4, 3.8.6.1) it should elicit an ACK so the remote
                    // can make progress. Withholding these ACKs strands the
                    // remote in retransmission backoff or persist state. The
                    // rate limit exists to break ACK loops between desynced
                    // peers, and exempting data segments cannot sustain such a
                    // loop: the remote paces them with its retransmission and
                    // persist timers, and the data it may send in response to a
                    // duplicate ACK of ours (fast recovery) is bounded by its
                    // send window, which never advances during a desync.
                    //
                    // The exemption covers FIN (a retransmitted final segment is
                    // the same lost-ACK situation) but not SYN: a SYN in a
                    // synchronized state is a challenge ACK situation (RFC 5961
                    // 4.2), and challenge ACKs should be throttled (RFC 5961 7).
                    // One per second is ample for a restarted peer to complete
                    // the challenge exchange, since it retransmits its SYN on
                    // its own timer.
                    if !repr.payload.is_empty()
                        && matches!(
                            repr.control,
                            TcpControl::None | TcpControl::Psh | TcpControl::Fin
                        )
                    {
                        // zt patch: data already received: tell the sender (D-SACK, RFC 2883),
                        // which undoes a needless window reduction and learns of reordering.
                        if segment_end <= window_start {
                            if self.remote_has_sack {
                                self.rx_dsack = Some((segment_start, segment_end));
                            }
                            self.info.rx_duplicates += 1;
                            // zt patch: a duplicate's TSval becomes TS.Recent (it starts at or
                            // before the last ACK sent, RFC 7323 4.3; Linux and FreeBSD take
                            // it too): the sender resent it because our ACK was lost, and an
                            // echo of the original's TSval would give it a round trip that
                            // includes its timeout.
                            if let Some(ts) = repr.timestamp
                                && ts.tsval.wrapping_sub(self.last_remote_tsval) as i32 > 0
                            {
                                self.last_remote_tsval = ts.tsval;
                            }
                        }
                        return Some(self.ack_reply(cx.now(), ip_repr, repr));
                    }

                    return self.challenge_ack_reply(cx, ip_repr, repr);
                }
            }
        };

        // Compute the amount of acknowledged octets, removing the SYN and FIN bits
        // from the sequence space.
        let mut ack_len = 0;
        let mut ack_of_fin = false;
        let mut ack_all = false;
        if repr.control != TcpControl::Rst
            && !old_ack
            && let Some(ack_number) = repr.ack_number
        {
            // Sequence number corresponding to the first byte in `tx_buffer`.
            // This normally equals `local_seq_no`, but is 1 higher if we have sent a SYN,
            // as the SYN occupies 1 sequence number "before" the data.
            let tx_buffer_start_seq = self.local_seq_no + (sent_syn as usize);

            if ack_number >= tx_buffer_start_seq {
                ack_len = ack_number - tx_buffer_start_seq;

                // We could've sent data before the FIN, so only remove FIN from the sequence
                // space if all of that data is acknowledged.
                if sent_fin && self.tx_buffer.len() + 1 == ack_len {
                    ack_len -= 1;
                    tcp_trace!("received ACK of FIN");
                    ack_of_fin = true;
                }

                ack_all = self.remote_last_seq <= ack_number;
            }
        }

        // Disregard control flags we don't care about or shouldn't act on yet.
        let mut control = repr.control;
        control = control.quash_psh();

        // If a FIN is received at the end of the current segment, but
        // we have a hole in the assembler before the current segment, disregard this FIN.
        //
        // zt patch: also when the segment's data runs past the receive window: only what fits
        // is taken, so the FIN (after the rest) has not arrived yet. Taken, it was acknowledged
        // at the window's edge: the sender read that as one more data byte acknowledged, and
        // the rest of the stream was lost without a trace.
        if control == TcpControl::Fin
            && (window_start < segment_start
                || (!matches!(self.state, State::Listen | State::SynSent)
                    && segment_end > window_end))
        {
            tcp_trace!(
                "ignoring FIN because we don't have full data yet. window_start={} segment_start={}",
                window_start,
                segment_start
            );
            // zt patch: a FIN that arrived ahead of data still missing (reordered on the
            // path), with all of its segment inside the window, is held and takes effect once
            // the data before it is in (as Linux keeps it in its out-of-order queue). Dropped,
            // it had to wait for the sender's retransmission timeout.
            if window_start < segment_start
                && segment_end <= window_end
                && matches!(
                    self.state,
                    State::Established | State::FinWait1 | State::FinWait2
                )
            {
                self.rx_fin_held = Some(segment_end);
            }
            control = TcpControl::None;
        }
        // zt patch: the segment that completes the data before a held FIN brings the FIN.
        if control == TcpControl::None
            && let Some(fin_seq) = self.rx_fin_held
            && segment_start <= window_start
            && window_start < segment_end
            && segment_end <= fin_seq
            && window_start + self.contiguous_after(segment_end - window_start) == fin_seq
        {
            tcp_trace!("taking the FIN held at {}", fin_seq);
            control = TcpControl::Fin;
        }
        if control == TcpControl::Fin {
            self.rx_fin_held = None;
        }

        // Validate and update the state.
        match (self.state, control) {
            // RSTs are not accepted in the LISTEN state.
            (State::Listen, TcpControl::Rst) => return None,

            // RSTs in SYN-RECEIVED flip the socket back to the LISTEN state.
            // Here we need to additionally check `listen_endpoint`, because we want to make sure
            // that SYN-RECEIVED was actually converted from the LISTEN state (another possible
            // reason is TCP simultaneous open).
            (State::SynReceived, TcpControl::Rst) if self.listen_endpoint.port != 0 => {
                tcp_trace!("received RST");
                self.tuple = None;
                self.set_state(State::Listen);
                return None;
            }

            // RSTs in any other state close the socket.
            (_, TcpControl::Rst) => {
                tcp_trace!("received RST");
                self.set_state(State::Closed);
                self.tuple = None;
                return None;
            }

            // SYN packets in the LISTEN state change it to SYN-RECEIVED.
            (State::Listen, TcpControl::Syn) => {
                tcp_trace!("received SYN");
                if let Some(max_seg_size) = repr.max_seg_size {
                    // Treat a zero MSS as if the option were absent, like Linux does.
                    if max_seg_size != 0 {
                        self.remote_mss = (max_seg_size as usize).max(MIN_REMOTE_MSS);
                        self.congestion_controller
                            .inner_mut()
                            .set_mss(self.remote_mss);
                    }
                }

                self.tuple = Some(Tuple {
                    local: IpEndpoint::new(ip_repr.dst_addr(), repr.dst_port),
                    remote: IpEndpoint::new(ip_repr.src_addr(), repr.src_port),
                });
                self.local_seq_no = Self::random_seq_no(cx);
                self.remote_seq_no = repr.seq_number + 1;
                self.remote_last_seq = self.local_seq_no;
                self.remote_max_seq = self.local_seq_no;
                self.start_sender(cx, self.local_seq_no);
                self.remote_has_sack = repr.sack_permitted;
                self.remote_win_scale = repr.window_scale;
                // Remote doesn't support window scaling, don't do it.
                if self.remote_win_scale.is_none() {
                    self.remote_win_shift = 0;
                }
                // Remote doesn't support timestamping, don't do it.
                if repr.timestamp.is_none() {
                    self.tsval_generator = None;
                    self.ts_enabled = false;
                }
                self.set_state(State::SynReceived);
                self.timer.set_for_idle(cx.now(), self.keep_alive);
            }

            // ACK packets in the SYN-RECEIVED state change it to ESTABLISHED.
            (State::SynReceived, TcpControl::None) => {
                self.set_state(State::Established);
            }

            // FIN packets in the SYN-RECEIVED state change it to CLOSE-WAIT.
            // It's not obvious from RFC 793 that this is permitted, but
            // 7th and 8th steps in the "SEGMENT ARRIVES" event describe this behavior.
            (State::SynReceived, TcpControl::Fin) => {
                self.remote_seq_no += 1;
                self.rx_fin_received = true;
                self.set_state(State::CloseWait);
            }

            // SYN|ACK packets in the SYN-SENT state change it to ESTABLISHED.
            // SYN packets in the SYN-SENT state change it to SYN-RECEIVED.
            (State::SynSent, TcpControl::Syn) => {
                if repr.ack_number.is_some() {
                    tcp_trace!("received SYN|ACK");
                } else {
                    tcp_trace!("received SYN");
                }
                if let Some(max_seg_size) = repr.max_seg_size {
                    // Treat a zero MSS as if the option were absent, like Linux does.
                    if max_seg_size != 0 {
                        self.remote_mss = (max_seg_size as usize).max(MIN_REMOTE_MSS);
                        self.congestion_controller
                            .inner_mut()
                            .set_mss(self.remote_mss);
                    }
                }

                self.remote_seq_no = repr.seq_number + 1;
                self.remote_last_seq = self.local_seq_no + 1;
                self.remote_max_seq = self.remote_last_seq;
                self.remote_last_ack = Some(repr.seq_number);
                self.remote_has_sack = repr.sack_permitted;
                self.remote_win_scale = repr.window_scale;
                // Remote doesn't support window scaling, don't do it.
                if self.remote_win_scale.is_none() {
                    self.remote_win_shift = 0;
                }
                // Remote doesn't support timestamping, don't do it.
                if repr.timestamp.is_none() {
                    self.tsval_generator = None;
                    self.ts_enabled = false;
                }

                if repr.ack_number.is_some() {
                    self.set_state(State::Established);
                } else {
                    self.set_state(State::SynReceived);
                }
            }

            (State::Established, TcpControl::None) => {}

            // FIN packets in ESTABLISHED state indicate the remote side has closed.
            (State::Established, TcpControl::Fin) => {
                self.remote_seq_no += 1;
                self.rx_fin_received = true;
                self.set_state(State::CloseWait);
            }

            // ACK packets in FIN-WAIT-1 state change it to FIN-WAIT-2, if we've already
            // sent everything in the transmit buffer. If not, they reset the retransmit timer.
            (State::FinWait1, TcpControl::None) => {
                if ack_of_fin {
                    self.set_state(State::FinWait2);
                }
            }

            // FIN packets in FIN-WAIT-1 state change it to CLOSING, or to TIME-WAIT
            // if they also acknowledge our FIN.
            (State::FinWait1, TcpControl::Fin) => {
                self.remote_seq_no += 1;
                self.rx_fin_received = true;
                if ack_of_fin {
                    self.set_state(State::TimeWait);
                    self.timer.set_for_close(cx.now());
                } else {
                    self.set_state(State::Closing);
                }
            }

            (State::FinWait2, TcpControl::None) => {}

            // FIN packets in FIN-WAIT-2 state change it to TIME-WAIT.
            (State::FinWait2, TcpControl::Fin) => {
                self.remote_seq_no += 1;
                self.rx_fin_received = true;
                self.set_state(State::TimeWait);
                self.timer.set_for_close(cx.now());
            }

            // ACK packets in CLOSING state change it to TIME-WAIT.
            (State::Closing, TcpControl::None) => {
                if ack_of_fin {
                    self.set_state(State::TimeWait);
                    self.timer.set_for_close(cx.now());
                }
            }

            (State::CloseWait, TcpControl::None) => {}

            // ACK packets in LAST-ACK state change it to CLOSED.
            (State::LastAck, TcpControl::None) => {
                if ack_of_fin {
                    // Clear the remote endpoint, or we'll send an RST there.
                    self.set_state(State::Closed);
                    self.tuple = None;
                } else if ack_len == 0 && self.tx_buffer.is_empty() {
                    // Duplicate ACK; our FIN has not been acknowledged.
                    // Per RFC 9293 (3.10.7.4), send a challenge ACK.
                    //
                    // zt patch: only when the FIN is all that is outstanding (what RFC 9293
                    // assumes of LAST-ACK). With data outstanding, a duplicate ACK carries SACK
                    // blocks and window updates as in the other states: dropped, there was
                    // no loss recovery in LAST-ACK and an opened window stayed closed.
                    return self.challenge_ack_reply(cx, ip_repr, repr);
                }
                // Partial ACK: fall through to advance SND.UNA normally.
            }

            _ => {
                net_debug!("unexpected packet {}", repr);
                return None;
            }
        }

        // Update remote state.
        self.remote_last_ts = Some(cx.now());

        // RFC 1323: The window field (SEG.WND) in the header of every incoming segment, with the
        // exception of SYN segments, is left-shifted by Snd.Wind.Scale bits before updating SND.WND.
        let scale = match repr.control {
            TcpControl::Syn => 0,
            _ => self.remote_win_scale.unwrap_or(0),
        };
        let new_remote_win_len = (repr.window_len as usize) << (scale as usize);
        let is_window_update = new_remote_win_len != self.remote_win_len;
        if !old_ack {
            self.remote_win_len = new_remote_win_len;
            self.congestion_controller
                .inner_mut()
                .set_remote_window(new_remote_win_len);
        }

        if ack_len > 0 {
            // Dequeue acknowledged octets.
            debug_assert!(self.tx_buffer.len() >= ack_len);
            tcp_trace!(
                "tx buffer: dequeueing {} octets (now {})",
                ack_len,
                self.tx_buffer.len() - ack_len
            );
            self.tx_buffer.dequeue_allocated(ack_len);

            // There's new room available in tx_buffer, wake the waiting task if any.
            #[cfg(feature = "async")]
            self.tx_waker.wake();
        }

        if old_ack && self.remote_has_sack && repr.control != TcpControl::Rst {
            // zt patch: an old acknowledgement's SACK blocks, taken as of SND.UNA.
            let una = self.local_seq_no;
            self.on_ack(cx, repr, una, false, false);
            self.rearm_timers(cx.now());
        }
        if let Some(ack_number) = repr.ack_number
            && !old_ack
        {
            // zt patch: the sender's loss detection and recovery (see `on_ack`).
            self.on_ack(cx, repr, ack_number, is_window_update, sent_syn);

            // We've processed everything in the incoming segment, so advance the local
            // sequence number past it.
            self.local_seq_no = ack_number;

            // During retransmission, if an earlier segment got lost but later was
            // successfully received, self.local_seq_no can move past self.remote_last_seq.
            // Do not attempt to retransmit the latter segments; not only this is pointless
            // in theory but also impossible in practice, since they have been already
            // deallocated from the buffer.
            if self.remote_last_seq < self.local_seq_no {
                self.remote_last_seq = self.local_seq_no
            }
            self.remote_max_seq = self.remote_max_seq.max(self.remote_last_seq);
            self.rearm_timers(cx.now());
        }

        // zt patch: the receiver's round trip, from the echo of our timestamp in the peer's
        // data (a minimum-leaning average: delayed ACKs only lengthen it).
        if let Some(timestamp) = repr.timestamp
            && self.own_timestamps()
            && timestamp.tsecr != 0
            && !repr.payload.is_empty()
        {
            let ms = self
                .tsval_at_us(cx.now().total_micros())
                .wrapping_sub(timestamp.tsecr) as i32;
            if (0..60_000).contains(&ms) {
                let now_us = cx.now().total_micros();
                let sample = (i64::from(ms) * 1000).max(500);
                self.rcv_rtt_us = if self.rcv_rtt_us == 0 {
                    sample
                } else {
                    sample.min((self.rcv_rtt_us * 7 + sample) / 8)
                };
                if self.rcv_min_rtt_us == 0
                    || sample <= self.rcv_min_rtt_us
                    || now_us - self.rcv_min_rtt_at_us > MIN_RTT_WINDOW_US
                {
                    self.rcv_min_rtt_us = sample;
                    self.rcv_min_rtt_at_us = now_us;
                }
            }
        }

        // zt patch: TS.Recent (RFC 7323 4.3): the TSval to echo is the one of the segment
        // that the next ACK acknowledges first, so that the peer's RTT samples include the
        // time segments waited for a hole to fill, and never a later segment's.
        if let Some(timestamp) = repr.timestamp
            && (self
                .remote_last_ack
                .is_none_or(|last| segment_start <= last)
                || self.last_remote_tsval == 0)
            && (timestamp.tsval.wrapping_sub(self.last_remote_tsval) as i32 >= 0
                || self.last_remote_tsval == 0)
        {
            self.last_remote_tsval = timestamp.tsval;
        }

        if self.timer.is_idle() {
            // any packet on idle refresh the keepalive timer.
            self.timer.set_for_idle(cx.now(), self.keep_alive);
        }

        // start/stop the Zero Window Probe timer.
        if self.remote_win_len == 0
            && !self.tx_buffer.is_empty()
            && (self.timer.is_idle() || ack_len > 0)
            && self.sb.is_empty()
        {
            let delay = self.rtte.retransmission_timeout();
            tcp_trace!("starting zero-window-probe timer for t+{}", delay);
            self.timer.set_for_zero_window_probe(cx.now(), delay);
        }
        if self.remote_win_len != 0 && self.timer.is_zero_window_probe() {
            tcp_trace!("stopping zero-window-probe timer");
            self.timer.set_for_idle(cx.now(), self.keep_alive);
            self.rearm_timers(cx.now());
        }

        let payload_len = payload.len();
        if payload_len == 0 {
            return None;
        }

        let assembler_was_empty = self.assembler.is_empty();

        if payload_offset > 0 {
            self.info.rx_out_of_order += 1;
            // zt patch: out-of-order data received before: report it (D-SACK).
            if self.assembler.contains(payload_offset, payload_len) {
                let start = window_start + payload_offset;
                if self.remote_has_sack {
                    self.rx_dsack = Some((start, start + payload_len));
                }
                self.info.rx_duplicates += 1;
            }
        }

        // Try adding payload octets to the assembler.
        let Ok(contig_len) = self
            .assembler
            .add_then_remove_front(payload_offset, payload_len)
        else {
            net_debug!(
                "assembler: too many holes to add {} octets at offset {}",
                payload_len,
                payload_offset
            );
            self.info.rx_too_many_holes += 1;
            // zt patch: still acknowledge (with the SACK blocks held), so that the sender
            // learns what did arrive.
            return Some(self.ack_reply(cx.now(), ip_repr, repr));
        };

        // Place payload octets into the buffer.
        tcp_trace!(
            "rx buffer: receiving {} octets at offset {}",
            payload_len,
            payload_offset
        );
        let len_written = self.rx_buffer.write_unallocated(payload_offset, payload);
        debug_assert!(len_written == payload_len);

        if contig_len != 0 {
            // Enqueue the contiguous data octets in front of the buffer.
            tcp_trace!(
                "rx buffer: enqueueing {} octets (now {})",
                contig_len,
                self.rx_buffer.len() + contig_len
            );
            self.rx_buffer.enqueue_unallocated(contig_len);
            self.rcv_space += contig_len;

            // There's new data in rx_buffer, notify waiting task if any.
            #[cfg(feature = "async")]
            self.rx_waker.wake();
        }

        if !self.assembler.is_empty() {
            // Print the ranges recorded in the assembler.
            tcp_trace!("assembler: {}", self.assembler);
        }

        // zt patch: the receive buffer follows the path (see `rcv_space_adjust`).
        if contig_len != 0 {
            self.rcv_space_adjust(cx.now().total_micros());
        }

        // Handle delayed acks
        if let Some(ack_delay) = self.ack_delay
            && self.ack_to_transmit()
        {
            self.ack_delay_timer = match self.ack_delay_timer {
                AckDelayTimer::Idle => {
                    tcp_trace!("starting delayed ack timer");
                    AckDelayTimer::Waiting(cx.now() + ack_delay)
                }
                AckDelayTimer::Waiting(_) if self.immediate_ack_to_transmit() => {
                    tcp_trace!("delayed ack timer already started, forcing expiry");
                    AckDelayTimer::Immediate
                }
                timer @ AckDelayTimer::Waiting(_) => {
                    tcp_trace!("waiting until delayed ack timer expires");
                    timer
                }
                AckDelayTimer::Immediate => {
                    tcp_trace!("delayed ack timer already force-expired");
                    AckDelayTimer::Immediate
                }
            };
        }

        // Per RFC 5681, we should send an immediate ACK when either:
        //  1) an out-of-order segment is received, or
        //  2) a segment arrives that fills in all or part of a gap in sequence space.
        if !self.assembler.is_empty() || !assembler_was_empty || self.rx_dsack.is_some() {
            // Note that we change the transmitter state here.
            // This is fine because smoltcp assumes that it can always transmit zero or one
            // packets for every packet it receives.
            tcp_trace!("ACKing incoming segment");
            Some(self.ack_reply(cx.now(), ip_repr, repr))
        } else {
            None
        }
    }

    /// zt patch: how many octets past the receive window's start would be contiguous if the
    /// first `front` of them arrived now (the assembler's runs joining them counted).
    fn contiguous_after(&self, front: usize) -> usize {
        let mut end = front;
        for (left, right) in self.assembler.iter_data() {
            if left > end {
                break;
            }
            end = end.max(right);
        }
        end
    }

    /// zt patch: the effective MSS for data segments (what the peer accepts and our MTU
    /// allows, less the timestamp option).
    fn sender_mss(&self, cx: &mut Context) -> usize {
        let ip_header_len = match self.tuple.map(|t| t.local.addr) {
            #[cfg(feature = "proto-ipv4")]
            Some(IpAddress::Ipv4(_)) => crate::wire::IPV4_HEADER_LEN,
            #[cfg(feature = "proto-ipv6")]
            Some(IpAddress::Ipv6(_)) => crate::wire::IPV6_HEADER_LEN,
            #[allow(unreachable_patterns)]
            _ => 40,
        };
        let options_len = if self.tsval_generator.is_some() || self.ts_enabled {
            12
        } else {
            0
        };
        let local_mss = cx.ip_mtu().saturating_sub(ip_header_len + TCP_HEADER_LEN);
        local_mss
            .min(self.remote_mss)
            .saturating_sub(options_len)
            .max(1)
    }

    /// zt patch: an acknowledgement (cumulative `ack_number` and SACK blocks) reached the
    /// sender, before SND.UNA moves: update the scoreboard, round-trip estimates and RACK
    /// (RFC 8985); detect losses; run the congestion state machine (fast recovery with
    /// proportional rate reduction, RFC 6937; recovery after a timeout; undo of spurious
    /// reductions, RFC 2883/3522); grow the window; set the pacing rate.
    fn on_ack(
        &mut self,
        cx: &mut Context,
        repr: &TcpRepr,
        ack_number: TcpSeqNumber,
        is_window_update: bool,
        syn_acked: bool,
    ) {
        let now = cx.now();
        let now_us = now.total_micros();
        let prior_una = self.local_seq_no;
        let advanced = ack_number > prior_una;
        let snd_nxt = self.remote_last_seq;
        let mss = self.sender_mss(cx);
        let tsecr = if self.own_timestamps() {
            repr.timestamp.map(|t| t.tsecr)
        } else {
            None
        };

        // SACK blocks (RFC 2018); a first block below the cumulative ACK or inside the second
        // reports a duplicate (D-SACK, RFC 2883). Blocks outside what was sent are ignored.
        let mut blocks: [Option<(TcpSeqNumber, TcpSeqNumber)>; 3] = [None; 3];
        let mut dsack = None;
        if self.remote_has_sack {
            for (k, range) in repr.sack_ranges.iter().enumerate() {
                if let Some((l, r)) = *range {
                    let (l, r) = (TcpSeqNumber(l as i32), TcpSeqNumber(r as i32));
                    if l < r {
                        blocks[k] = Some((l, r));
                    }
                }
            }
            if let Some((l, r)) = blocks[0] {
                let inside_second = blocks[1].is_some_and(|(l2, r2)| l2 <= l && r <= r2);
                // Below the acknowledgement number the segment carries (for an old ACK, taken
                // as of SND.UNA, a block below SND.UNA may be an ordinary one, then overtaken).
                let own_ack = repr.ack_number.unwrap_or(ack_number);
                if r <= own_ack || inside_second {
                    dsack = Some((l, r));
                    blocks[0] = None;
                }
            }
            for b in blocks.iter_mut() {
                if let Some((l, r)) = *b
                    && !(ack_number <= l && r <= self.remote_max_seq)
                {
                    *b = None;
                }
            }
            // In sequence order, so that a lower block is not taken for reordering.
            blocks.sort_by(|a, b| match (a, b) {
                (Some(a), Some(b)) => a.0.partial_cmp(&b.0).unwrap_or(core::cmp::Ordering::Equal),
                (Some(_), None) => core::cmp::Ordering::Less,
                (None, Some(_)) => core::cmp::Ordering::Greater,
                (None, None) => core::cmp::Ordering::Equal,
            });
        }

        // RFC 8985 6.2: the acknowledgement of a retransmitted segment counts for its last
        // transmission only if the timestamp echo is not older than it and the round trip is
        // not shorter than the path's minimum.
        let offset = self.ts_offset;
        let min_rtt = self.rtte.min_rtt_us;
        let valid = move |seg: &Seg| -> bool {
            if let Some(ecr) = tsecr {
                let sent = ((seg.xmit_us / 1000) as u32).wrapping_add(offset);
                if (ecr.wrapping_sub(sent) as i32) < 0 {
                    return false;
                }
            }
            now_us - seg.xmit_us >= min_rtt
        };
        let mut d = Delivery {
            fack: self.rec.fack,
            ..Delivery::default()
        };
        let prior_in_flight = self.sb.in_flight();
        if advanced {
            self.sb.ack(ack_number, &mut d, &valid);
        }
        for (l, r) in blocks.into_iter().flatten() {
            self.sb.sack(l, r, &mut d, &valid);
        }
        self.rec.fack = d.fack;
        if d.reordered {
            self.rec.reordering_seen = true;
        }
        // zt patch: how much later than the reference round trip a late segment came. Not
        // after a timeout: it marks every segment lost at once, and those that had arrived
        // (all but the hole) were never late.
        if let Some(first) = d.late_first_xmit_us
            && self.rec.state != CaState::Loss
        {
            let extent = now_us - first - self.rec.rack_rtt_us;
            if extent > 0 {
                self.rec.on_late_delivery(extent);
            }
        }

        // Peers without SACK: NewReno (RFC 6582) counts duplicate ACKs.
        // RFC 5681's duplicate ACK: no data, no window change, the same acknowledgement
        // number as the last, data outstanding.
        let dup_ack = self.local_rx_last_ack == Some(ack_number)
            && repr.payload.is_empty()
            && matches!(repr.control, TcpControl::None | TcpControl::Psh)
            && !is_window_update
            && !self.sb.is_empty();
        // zt patch: what the duplicate ACK stands for, apart (see the window's growth below).
        let mut dup_delivered = 0;
        if dup_ack {
            self.rec.dupacks = self.rec.dupacks.saturating_add(1);
            self.local_rx_dup_acks = self.local_rx_dup_acks.saturating_add(1);
            if !self.remote_has_sack {
                // Each duplicate ACK stands for a segment that left the network.
                d.delivered += mss;
                dup_delivered = mss;
            }
        } else {
            self.rec.dupacks = 0;
            self.local_rx_dup_acks = 0;
        }
        self.local_rx_last_ack = Some(ack_number);

        // zt patch: a delivery rate sample (for a model-based controller), from what was
        // acknowledged, not from what duplicate ACKs stand for.
        let acked = d.delivered - dup_delivered;
        let sample = self
            .rate
            .on_ack(now_us, acked, d.rate_newest, self.rtte.min_rtt_us);

        // Rounds (for HyStart++ and for whether the window limited sending).
        if advanced && ack_number >= self.rec.round_end {
            self.rec.round_end = snd_nxt;
            self.rec.cwnd_limited_last = self.rec.cwnd_limited_now;
            self.rec.cwnd_limited_now = false;
            self.rec.max_pipe_round = self.sb.in_flight();
            self.congestion_controller.inner_mut().on_round_start();
        }

        // Round trips: the oldest segment newly delivered that was sent once (RFC 6298, as
        // Linux: it includes the peer's ACK delay); failing that, the timestamp echo (RFC
        // 7323) of an ACK of new data. The newest such segment gives the minimum RTT.
        //
        // zt patch: when the ACK also covers a retransmission, only from a segment sent after
        // it (or with it: the hole held it back no longer than its own trip; see
        // `Delivery::retrans_acked_xmit_us`): the others would measure how long the hole took
        // to fill.
        let clean = match d.retrans_acked_xmit_us {
            None => (d.oldest_clean_us, d.newest_clean_us),
            Some(r) => match d.newest_clean_us {
                Some(t) if t >= r => (Some(t), Some(t)),
                _ => (None, None),
            },
        };
        if let Some(t) = clean.0 {
            self.rtte.sample(now_us - t);
        } else if advanced
            // zt patch: not from the echo of an earlier copy of what was resent (see
            // `Delivery::stale_echo`).
            && !d.stale_echo
            && let Some(ecr) = tsecr
            // Not for a SYN that was sent again: the echo may be of the first one, which the
            // peer answered once (that answer lost), not of the one that got through.
            && !(syn_acked && self.info.timeouts > 0)
        {
            let ms = self.tsval_at_us(now_us).wrapping_sub(ecr) as i32;
            if (0..60_000).contains(&ms) {
                // A millisecond tick: the middle of it.
                self.rtte.sample(i64::from(ms) * 1000);
            }
        } else if syn_acked
            && tsecr.is_none()
            && self.info.timeouts == 0
            && let Some(t) = self.rec.syn_xmit_us
        {
            // zt patch: the handshake's round trip, when the SYN went once (Karn) and no
            // timestamp tells it (as smoltcp's estimator did before the scoreboard): without
            // it the RTO stays at its initial second until an ACK covers only data never
            // resent, which a reordering path without SACK may never give.
            self.rtte.sample(now_us - t);
        }
        if let Some(t) = clean.1 {
            let rtt = now_us - t;
            self.rtte.min_rtt_sample(rtt, now_us);
            self.congestion_controller.inner_mut().on_rtt_sample(rtt);
        }

        // RACK (RFC 8985 6.2): the most recently sent segment delivered.
        if let Some((t, e)) = d.newest {
            self.rec.rack_rtt_us = now_us - t;
            if !self.rec.rack_valid || sent_after(t, e, self.rec.rack_xmit_us, self.rec.rack_end) {
                self.rec.rack_xmit_us = t;
                self.rec.rack_end = e;
                self.rec.rack_valid = true;
            }
        }

        // D-SACK: the peer got a segment twice.
        if let Some((_, r)) = dsack {
            self.info.dsacks_received += 1;
            self.rec.on_dsack(ack_number.max(prior_una), snd_nxt);
            if let Some(marker) = self.rec.undo_marker
                && r > marker
                && self.rec.undo_retrans > 0
            {
                self.rec.undo_retrans -= 1;
            }
        }

        // Spurious retransmissions undo the reduction they caused: every retransmission of
        // the episode came back as a duplicate (D-SACK), or (timestamps) the acknowledgement
        // echoes a segment sent before the first retransmission, so the originals arrived.
        // A fast recovery that ends without having resent anything (everything marked lost
        // arrived after all: reordering) is undone too, as Linux does.
        if self.rec.undo_marker.is_some() {
            let resent = self.rec.retrans_stamp.is_some();
            let all_duplicates = self.rec.undo_retrans <= 0;
            let delayed = advanced
                && tsecr
                    .zip(self.rec.retrans_stamp)
                    .is_some_and(|(ecr, stamp)| (ecr.wrapping_sub(stamp) as i32) < 0);
            let ends = advanced && ack_number >= self.rec.high_seq;
            let undo = match self.rec.state {
                // A timeout's retransmissions.
                CaState::Loss => resent && (all_duplicates || delayed),
                // Fast recovery's, as D-SACKs report them, or at its end.
                CaState::Recovery => {
                    (resent && all_duplicates && dsack.is_some())
                        || (ends && (all_duplicates || delayed))
                }
                // D-SACKs may come after the episode ended.
                CaState::Open => resent && all_duplicates && dsack.is_some(),
            };
            if undo {
                self.undo_reduction();
            }
        }

        // Tail loss probe episodes (RFC 8985 7.4.2, as Linux).
        if let Some(end) = self.rec.tlp_end
            && ack_number >= end
        {
            if !self.rec.tlp_is_retrans || dsack.is_some_and(|(_, r)| r == end) {
                self.rec.tlp_end = None;
            } else if ack_number > end {
                // The probe repaired a loss: respond as to one.
                self.rec.tlp_end = None;
                if self.rec.state == CaState::Open {
                    let cc = self.congestion_controller.inner_mut();
                    cc.on_congestion_event(now);
                    let ssthresh = cc.ssthresh();
                    if ssthresh < cc.window() {
                        cc.set_window(ssthresh);
                    }
                    // zt patch: an episode of one ACK (no recovery follows to end it).
                    cc.on_recovery_end();
                }
            } else if !advanced && blocks.iter().all(Option::is_none) {
                self.rec.tlp_end = None;
            }
        }

        // Loss detection: RACK with SACK; the third duplicate ACK (and partial ACKs during
        // recovery) without.
        let lost_before = self.sb.lost();
        if self.remote_has_sack {
            self.detect_losses(now_us, mss);
        } else if !self.sb.is_empty() {
            let front_seq = self.sb.front().map(|s| s.start);
            let partial =
                self.rec.state == CaState::Recovery && advanced && ack_number < self.rec.high_seq;
            if (dup_ack
                && self.rec.dupacks == recovery::DUP_THRESH
                && self.rec.state == CaState::Open)
                || partial
            {
                if let Some(i) = front_seq.and_then(|s| self.sb.find(s)) {
                    self.sb.mark_lost(i);
                }
            }
        }
        let newly_lost = self.sb.lost() > lost_before;

        // zt patch: what the ACK did, for a model-based controller (after the round-trip
        // sample and the loss detection it caused, before the congestion state machine).
        let lost_now = self.sb.lost().saturating_sub(lost_before);
        if acked > 0 || lost_now > 0 {
            let in_flight = self.sb.in_flight();
            let cc = self.congestion_controller.inner_mut();
            // The sender had nothing more to send with the window open (or the controller
            // holds it back on purpose, as BBR's ProbeRTT): until what is in flight is
            // delivered, rate samples may understate the path.
            let outstanding = if snd_nxt > prior_una {
                snd_nxt - prior_una
            } else {
                0
            };
            if (self.tx_buffer.len() <= outstanding
                && in_flight < cc.window()
                && self.sb.lost() == 0)
                || cc.app_limited()
            {
                self.rate.on_app_limited(in_flight);
            }
            let ev = congestion::AckEvent {
                acked,
                lost: lost_now,
                prior_in_flight,
                in_flight,
                prior_delivered: d.rate_newest.map(|n| n.snap.delivered),
                delivered: self.rate.delivered(),
            };
            cc.on_delivered(now, &ev, sample.as_ref());
        }

        // The congestion state machine.
        let mut exited = false;
        if matches!(self.rec.state, CaState::Recovery | CaState::Loss)
            && advanced
            && ack_number >= self.rec.high_seq
        {
            exited = self.rec.state == CaState::Recovery;
            if self.rec.state == CaState::Recovery {
                let cc = self.congestion_controller.inner_mut();
                let ssthresh = cc.ssthresh();
                if ssthresh != usize::MAX {
                    cc.set_window(ssthresh);
                }
            }
            self.rec.state = CaState::Open;
            self.rec.on_recovery_exit();
            self.congestion_controller.inner_mut().on_recovery_end();
        }
        if self.rec.state == CaState::Open && self.sb.lost() > 0 {
            self.enter_recovery(now);
        }
        let pipe = self.sb.in_flight();
        if self.rec.state == CaState::Recovery {
            let cc = self.congestion_controller.inner_mut();
            let ssthresh = cc.ssthresh();
            if cc.window() != usize::MAX {
                let sndcnt = self
                    .rec
                    .prr_sndcnt(pipe, d.delivered, ssthresh, mss, newly_lost);
                cc.set_window(pipe + sndcnt);
            }
        } else if d.delivered > dup_delivered && !exited {
            // (RFC 6937: the window is the threshold when recovery ends, not more.)
            //
            // zt patch: by what was acknowledged, not by duplicate ACKs (RFC 5681 3.1: ACKs
            // "that cumulatively acknowledge new data"); the bytes a duplicate ACK stands for
            // are acknowledged again when the hole fills.
            let cc = self.congestion_controller.inner_mut();
            let cwnd = cc.window();
            let limited = self.rec.is_cwnd_limited(cwnd, cwnd < cc.ssthresh());
            cc.on_ack(now, d.delivered - dup_delivered, &self.rtte, limited);
        }

        // The send buffer follows the window.
        self.snd_buf_adjust();

        // Pacing, from the window and the smoothed RTT.
        let cc = self.congestion_controller.inner();
        self.rec
            .update_pacing(now_us, cc.window(), pipe, cc.ssthresh(), self.rtte.srtt_us);
        if let Some(rate) = cc.pacing_rate() {
            // zt patch: a model-based controller sets the rate itself.
            self.rec.pacing_rate = rate.max(1);
        }

        if advanced {
            // RFC 6298 (5.3): an ACK of new data restarts the retransmission timer.
            self.rec.rto_at = None;
            if self.sb.is_empty() {
                self.rec.idle_since_us = Some(now_us);
            }
        }
    }

    /// zt patch: RACK's loss detection (RFC 8985 6.2) over the scoreboard; arms the
    /// reordering timer for segments not yet due.
    fn detect_losses(&mut self, now_us: i64, mss: usize) {
        if !self.rec.rack_valid || self.sb.is_empty() {
            self.rec.reo_at = None;
            return;
        }
        let sacked_segs = u32::try_from(self.sb.sacked() / mss.max(1)).unwrap_or(u32::MAX);
        let reo_wnd = self
            .rec
            .reo_wnd_us(self.rtte.min_rtt_us, self.rtte.srtt_us, sacked_segs);
        let (_, wait) = self.sb.rack_detect_loss(
            now_us,
            self.rec.rack_xmit_us,
            self.rec.rack_end,
            self.rec.rack_rtt_us,
            reo_wnd,
        );
        self.rec.reo_at = wait.map(|w| now_us + w);
    }

    /// zt patch: fast recovery begins (RFC 6675 with RFC 6937).
    fn enter_recovery(&mut self, now: Instant) {
        self.rec.state = CaState::Recovery;
        self.rec.high_seq = self.remote_last_seq;
        self.rec.prr_delivered = 0;
        self.rec.prr_out = 0;
        self.rec.recover_fs = self
            .remote_last_seq
            .max(self.local_seq_no)
            .0
            .wrapping_sub(self.local_seq_no.0)
            .max(1) as usize;
        self.start_undo_episode();
        self.congestion_controller
            .inner_mut()
            .on_congestion_event(now);
        self.info.recoveries += 1;
        self.rec.tlp_end = None;
        self.rec.probe_pending = false;
    }

    /// zt patch: a window reduction begins that may later prove needless.
    fn start_undo_episode(&mut self) {
        self.rec.undo_marker = Some(self.local_seq_no);
        self.rec.undo_retrans = 0;
        self.rec.retrans_stamp = None;
    }

    /// zt patch: the reduction was needless (its retransmissions were spurious): restore the
    /// window and threshold, and put segments marked lost back in flight.
    fn undo_reduction(&mut self) {
        self.congestion_controller.inner_mut().undo();
        self.sb.unmark_lost();
        self.rec.undo_marker = None;
        self.rec.retrans_stamp = None;
        self.rec.undo_retrans = 0;
        if self.rec.state != CaState::Open {
            self.rec.state = CaState::Open;
            self.rec.on_recovery_exit();
        }
        self.rec.reordering_seen = true;
        self.info.undos += 1;
    }

    /// zt patch: the retransmission timer expired with data outstanding (RFC 6298 5.4-5.7):
    /// everything not selectively acknowledged is taken as lost and resent, in slow start
    /// from one segment; the timer backs off.
    fn on_retransmission_timeout(&mut self, now: Instant) {
        self.info.timeouts += 1;
        let new_episode = self.rec.state == CaState::Open;
        if new_episode {
            self.start_undo_episode();
        }
        self.congestion_controller
            .inner_mut()
            .on_rto(now, new_episode);
        self.rec.state = CaState::Loss;
        self.rec.high_seq = self.remote_last_seq;
        // A selectively acknowledged segment at the front means the receiver dropped what it
        // had reported (reneging): forget all its reports.
        let reneged = self.sb.front().is_some_and(|s| s.state == SegState::Sacked);
        let thin = self.thin_linear_timeouts
            && self.sb.len() < THIN_FLOW_SEGMENTS
            && self.rtte.have_measurement();
        self.sb.mark_all_lost(reneged);
        self.rtte.on_rto_of(thin);
        self.rec.tlp_end = None;
        self.rec.probe_pending = false;
        self.rec.reo_at = None;
        self.rec.rto_at = None;
        self.rec.tlp_at = None;
        self.rec.next_send_us = now.total_micros();
        self.rec.dupacks = 0;
    }

    /// zt patch: the reordering timer or the probe timer expired (or the RTO): act on it.
    fn on_sender_timer(&mut self, cx: &mut Context) {
        let now = cx.now();
        let now_us = now.total_micros();
        let mss = self.sender_mss(cx);
        if self.rec.reo_at.is_some_and(|t| now_us >= t) {
            self.rec.reo_at = None;
            let lost_before = self.sb.lost();
            self.detect_losses(now_us, mss);
            if self.sb.lost() > lost_before {
                if self.rec.state == CaState::Open {
                    self.enter_recovery(now);
                }
                if self.rec.state == CaState::Recovery {
                    let pipe = self.sb.in_flight();
                    let cc = self.congestion_controller.inner_mut();
                    let ssthresh = cc.ssthresh();
                    if cc.window() != usize::MAX {
                        let sndcnt = self.rec.prr_sndcnt(pipe, 0, ssthresh, mss, true);
                        cc.set_window(pipe + sndcnt);
                    }
                }
            }
        } else if self.rec.tlp_at.is_some_and(|t| now_us >= t) {
            self.rec.tlp_at = None;
            if self.probe_state_ok() && self.probe_target().is_some() {
                self.rec.probe_pending = true;
            } else if self.rec.rto_at.is_some_and(|t| now_us >= t) {
                // zt patch: nothing to probe (every segment selectively acknowledged: a
                // reneging or lying receiver) and the RTO is due too: it goes now. The probe
                // timer is clamped to the RTO; without this it was re-armed at the RTO's
                // past instant and fired in its place on every call, forever.
                net_debug!("retransmitting after rto");
                self.on_retransmission_timeout(now);
            }
        } else if self.rec.rto_at.is_some_and(|t| now_us >= t) {
            net_debug!("retransmitting after rto");
            self.on_retransmission_timeout(now);
        }
        self.rearm_timers(now);
    }

    /// zt patch: what a tail loss probe would send (RFC 8985 7.3): new data if the peer's
    /// window takes some (`Some(None)`), else the highest segment not selectively
    /// acknowledged (`Some(Some(i))`); None if there is nothing to probe with.
    fn probe_target(&self) -> Option<Option<usize>> {
        let unsent = self.tx_buffer.len() > self.flight_size()
            && self.local_seq_no + self.remote_win_len > self.remote_last_seq;
        if unsent {
            return Some(None);
        }
        (0..self.sb.len())
            .rev()
            .find(|&i| self.sb.get(i).is_some_and(|s| s.state != SegState::Sacked))
            .map(Some)
    }

    /// zt patch: the restart window (RFC 5681 4.1, as Linux's `tcp_cwnd_restart`): a sender
    /// idle for longer than its retransmission timeout no longer knows the path, and its old
    /// window would go out as one burst; the window halves for each timeout's worth of idle
    /// time, down to the initial window.
    fn restart_after_idle(&mut self, idle_us: i64) {
        let rto = self.rtte.retransmission_timeout().total_micros() as i64;
        if rto <= 0 || idle_us <= rto {
            return;
        }
        let halvings = u32::try_from(idle_us / rto).unwrap_or(u32::MAX).min(30);
        let iw = congestion::INITIAL_WINDOW_SEGMENTS * self.remote_mss;
        let cc = self.congestion_controller.inner_mut();
        let cwnd = cc.window();
        if cwnd == usize::MAX {
            return;
        }
        let restart = (cwnd >> halvings).max(iw);
        if restart < cwnd {
            cc.set_window(restart);
        }
    }

    /// zt patch: whether a tail loss probe may be scheduled (RFC 8985 7.2), or a probe in fast
    /// recovery: once every segment marked lost has been resent, nothing but new information
    /// can move the recovery on, and when the last retransmission and what was sent after it
    /// are lost too (likely with a window of a few segments on a lossy path) none comes until
    /// the retransmission timeout, a thousand round trips away on a LAN. One probe per
    /// episode (RFC 8985 keeps TLP out of recovery; this is the same probe, with its timeout,
    /// at the point where recovery has nothing else to send).
    fn tlp_eligible(&self) -> bool {
        self.remote_has_sack
            && self.probe_state_ok()
            && self.rec.tlp_end.is_none()
            && !self.rec.probe_pending
            && !self.sb.is_empty()
    }

    /// zt patch: the congestion states in which a probe may go (see `tlp_eligible`).
    fn probe_state_ok(&self) -> bool {
        match self.rec.state {
            CaState::Open => true,
            CaState::Recovery => self.sb.lost() == 0,
            CaState::Loss => false,
        }
    }

    /// zt patch: sets the retransmission timer to the earliest of the retransmission timeout,
    /// the probe timeout and RACK's reordering timer, or idles it when nothing is
    /// outstanding. The handshake keeps smoltcp's own timer.
    fn rearm_timers(&mut self, now: Instant) {
        if matches!(
            self.timer,
            Timer::Close { .. } | Timer::ZeroWindowProbe { .. }
        ) || matches!(self.state, State::SynSent | State::SynReceived)
        {
            return;
        }
        let now_us = now.total_micros();
        if self.sb.is_empty() {
            self.rec.rto_at = None;
            self.rec.tlp_at = None;
            self.rec.reo_at = None;
            if self.timer.is_retransmit() {
                self.timer.set_for_idle(now, self.keep_alive);
            }
            return;
        }
        let rto = self.rtte.retransmission_timeout().total_micros() as i64;
        let rto_at = *self.rec.rto_at.get_or_insert(now_us + rto);
        self.rec.tlp_at = if self.tlp_eligible() {
            let one = self.sb.len() == 1;
            Some((now_us + Recovery::pto_us(self.rtte.srtt_us, one)).min(rto_at))
        } else {
            None
        };
        let deadline = [Some(rto_at), self.rec.tlp_at, self.rec.reo_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rto_at);
        self.timer = Timer::Retransmit {
            expires_at: Instant::from_micros(deadline),
        };
    }

    /// zt patch: what the sender should send next, if the congestion window and pacing let
    /// it: a tail loss probe, a segment marked lost, or new data (`Plan::New`; whether there
    /// is new data to send is for the caller to decide).
    fn plan(&self, cx: &mut Context, paced: bool) -> Option<Plan> {
        if !matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::Closing
                | State::CloseWait
                | State::LastAck
        ) {
            return Some(Plan::New);
        }
        if self.rec.probe_pending && self.probe_target().is_some() {
            return Some(Plan::Probe);
        }
        if paced && !self.rec.pacing_allows(cx.now().total_micros()) {
            return None;
        }
        if let Some(i) = self.sb.first_lost()
            && self.cwnd_remaining() > 0
            && let Some(seg) = self.sb.get(i)
            && (seg.start == self.local_seq_no
                || seg.start < self.local_seq_no + self.remote_win_len)
        {
            return Some(Plan::Retransmit(i));
        }
        Some(Plan::New)
    }

    fn timed_out(&self, timestamp: Instant) -> bool {
        match (self.remote_last_ts, self.timeout) {
            (Some(remote_last_ts), Some(timeout)) => timestamp >= remote_last_ts + timeout,
            (_, _) => false,
        }
    }

    fn seq_to_transmit(&self, cx: &mut Context) -> bool {
        self.seq_to_transmit_paced(cx, true)
    }

    /// zt patch: `seq_to_transmit`, with or without pacing's say.
    fn seq_to_transmit_paced(&self, cx: &mut Context, paced: bool) -> bool {
        let ip_header_len = match self.tuple.unwrap().local.addr {
            #[cfg(feature = "proto-ipv4")]
            IpAddress::Ipv4(_) => crate::wire::IPV4_HEADER_LEN,
            #[cfg(feature = "proto-ipv6")]
            IpAddress::Ipv6(_) => crate::wire::IPV6_HEADER_LEN,
        };

        // The effective max segment size, taking into account the options and the local and remote limits.
        let options_len = if self.tsval_generator.is_some() || self.ts_enabled {
            12
        } else {
            0
        };

        let local_mss = cx.ip_mtu() - ip_header_len - TCP_HEADER_LEN;
        let effective_mss = local_mss.min(self.remote_mss).saturating_sub(options_len);

        // Have we sent data that hasn't been ACKed yet?
        let data_in_flight = self.remote_last_seq != self.local_seq_no;

        // If we want to send a SYN and we haven't done so, do it!
        if matches!(self.state, State::SynSent | State::SynReceived) && !data_in_flight {
            return true;
        }

        // zt patch: a tail loss probe, or a retransmission of a segment marked lost, goes
        // before new data; pacing holds all of them back until their time.
        match self.plan(cx, paced) {
            Some(Plan::Probe | Plan::Retransmit(_)) => return true,
            None => return false,
            Some(Plan::New) => {}
        }

        // max sequence number we can send.
        let max_send_seq =
            self.local_seq_no + core::cmp::min(self.remote_win_len, self.tx_buffer.len());

        // Max amount of octets we can send.
        let capped_send_seq = if max_send_seq >= self.remote_last_seq {
            max_send_seq - self.remote_last_seq
        } else {
            0
        };

        // compare max bytes allowed by cwnd with max bytes allowed by remote
        let max_send = capped_send_seq.min(self.cwnd_remaining());

        // Can we send at least 1 octet?
        let mut can_send = max_send != 0;
        // Can we send at least 1 full segment?
        let can_send_full = max_send >= effective_mss;

        // Do we have to send a FIN?
        let want_fin = match self.state {
            State::FinWait1 => true,
            State::Closing => true,
            State::LastAck => true,
            _ => false,
        };

        // If we're applying the Nagle algorithm we don't want to send more
        // until one of:
        // * There's no data in flight
        // * We can send a full packet
        // * We have all the data we'll ever send (we're closing send)
        if self.nagle && data_in_flight && !can_send_full && !want_fin {
            can_send = false;
        }

        // Can we actually send the FIN? We can send it if:
        // 1. We have unsent data that fits in the remote window.
        // 2. We have no unsent data.
        // This condition matches only if #2, because #1 is already covered by can_data and we're ORing them.
        let can_fin = want_fin && self.remote_last_seq == self.local_seq_no + self.tx_buffer.len();

        can_send || can_fin
    }

    fn delayed_ack_expired(&self, timestamp: Instant) -> bool {
        match self.ack_delay_timer {
            AckDelayTimer::Idle => true,
            AckDelayTimer::Waiting(t) => t <= timestamp,
            AckDelayTimer::Immediate => true,
        }
    }

    fn ack_to_transmit(&self) -> bool {
        if let Some(remote_last_ack) = self.remote_last_ack {
            remote_last_ack < self.remote_seq_no + self.rx_buffer.len()
        } else {
            false
        }
    }

    /// Return whether to send ACK immediately due to the amount of unacknowledged data.
    ///
    /// RFC 9293 states "An ACK SHOULD be generated for at least every second full-sized segment or
    /// 2*RMSS bytes of new data (where RMSS is the MSS specified by the TCP endpoint receiving the
    /// segments to be acknowledged, or the default value if not specified) (SHLD-19)."
    ///
    /// Note that the RFC above only says "at least 2*RMSS bytes", which is not a hard requirement.
    /// In practice, we follow the Linux kernel's empirical value of sending an ACK for every RMSS
    /// byte of new data. For details, see
    /// <https://elixir.bootlin.com/linux/v6.11.4/source/net/ipv4/tcp_input.c#L5747>.
    fn immediate_ack_to_transmit(&self) -> bool {
        if let Some(remote_last_ack) = self.remote_last_ack {
            remote_last_ack + self.remote_mss < self.remote_seq_no + self.rx_buffer.len()
        } else {
            false
        }
    }

    /// Return whether we should send ACK immediately due to significant window updates.
    ///
    /// ACKs with significant window updates should be sent immediately to let the sender know that
    /// more data can be sent. According to the Linux kernel implementation, "significant" means
    /// doubling the receive window. The Linux kernel implementation can be found at
    /// <https://elixir.bootlin.com/linux/v6.9.9/source/net/ipv4/tcp.c#L1472>.
    fn window_to_update(&self) -> bool {
        match self.state {
            State::SynSent
            | State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2 => {
                let new_win = self.scaled_window();
                if let Some(last_win) = self.last_scaled_window() {
                    new_win > 0 && new_win / 2 >= last_win
                } else {
                    false
                }
            }
            _ => false,
        }
    }

    pub(crate) fn dispatch<F, E>(&mut self, cx: &mut Context, emit: F) -> Result<(), E>
    where
        F: FnOnce(&mut Context, PacketMeta, (IpRepr, TcpRepr)) -> Result<(), E>,
    {
        if self.tuple.is_none() {
            return Ok(());
        }

        // NOTE(unwrap): we check tuple is not None above.
        let tuple = self.tuple.unwrap();

        // Check if the interface still has our source IP address.
        // If not (e.g. the interface's IP changed), reset the socket.
        // We use reset() instead of set_state(Closed) to avoid sending
        // an RST packet with the now-invalid source IP.
        if !cx.has_ip_addr(tuple.local.addr) {
            net_debug!("source IP address no longer available, closing socket");
            self.reset();
            return Ok(());
        }

        if self.remote_last_ts.is_none() {
            // We get here in exactly two cases:
            //  1) This socket just transitioned into SYN-SENT.
            //  2) This socket had an empty transmit buffer and some data was added there.
            // Both are similar in that the socket has been quiet for an indefinite
            // period of time, it isn't anymore, and the local endpoint is talking.
            // So, we start counting the timeout not from the last received packet
            // but from the first transmitted one.
            self.remote_last_ts = Some(cx.now());
        }

        // Check if any state needs to be changed because of a timer.
        if self.timed_out(cx.now()) {
            // If a timeout expires, we should abort the connection.
            net_debug!("timeout exceeded");
            self.set_state(State::Closed);
        } else if self.timer.should_retransmit(cx.now()) {
            if matches!(self.state, State::SynSent | State::SynReceived) || self.sb.is_empty() {
                // The handshake: resend the SYN (go-back-N, as smoltcp always did).
                net_debug!("retransmitting after rto");
                self.info.timeouts += 1;
                self.remote_last_seq = self.local_seq_no;
                self.rtte.on_rto();
                // Clear the `should_retransmit` state. If we can't retransmit right
                // now for whatever reason (like zero window), this avoids an
                // infinite polling loop where `poll_at` returns `Now` but `dispatch`
                // can't actually do anything.
                self.timer.set_for_idle(cx.now(), self.keep_alive);
            } else {
                // zt patch: the reordering timer, a tail loss probe or the retransmission
                // timeout (see `on_sender_timer`).
                self.on_sender_timer(cx);
            }
        }

        #[cfg(feature = "socket-tcp-pause-synack")]
        if matches!(self.state, State::SynReceived) && self.synack_paused {
            return Ok(());
        }

        // Decide whether we're sending a packet.
        if self.seq_to_transmit(cx) {
            // If we have data to transmit and it fits into partner's window, do it.
            tcp_trace!("outgoing segment will send data or flags");
        } else if self.ack_to_transmit() && self.delayed_ack_expired(cx.now()) {
            // If we have data to acknowledge, do it.
            tcp_trace!("outgoing segment will acknowledge");
        } else if self.window_to_update() {
            // If we have window length increase to advertise, do it.
            tcp_trace!("outgoing segment will update window");
        } else if self.state == State::Closed {
            // If we need to abort the connection, do it.
            tcp_trace!("outgoing segment will abort connection");
        } else if self.timer.should_keep_alive(cx.now()) {
            // If we need to transmit a keep-alive packet, do it.
            tcp_trace!("keep-alive timer expired");
        } else if self.timer.should_zero_window_probe(cx.now()) {
            tcp_trace!("sending zero-window probe");
        } else if self.timer.should_close(cx.now()) {
            // If we have spent enough time in the TIME-WAIT state, close the socket.
            tcp_trace!("TIME-WAIT timer expired");
            self.reset();
            return Ok(());
        } else {
            return Ok(());
        }

        // Construct the lowered IP representation.
        // We might need this to calculate the MSS, so do it early.
        let mut ip_repr = IpRepr::new(
            tuple.local.addr,
            tuple.remote.addr,
            IpProtocol::Tcp,
            0,
            self.hop_limit.unwrap_or(64),
        );

        // Construct the basic TCP representation, an empty ACK packet.
        // We'll adjust this to be more specific as needed.
        let mut repr = TcpRepr {
            src_port: tuple.local.port,
            dst_port: tuple.remote.port,
            control: TcpControl::None,
            seq_number: self.remote_last_seq,
            ack_number: Some(self.remote_seq_no + self.rx_buffer.len()),
            window_len: self.scaled_window(),
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: self.timestamp_option(cx.now()),
            payload: &[],
        };
        // zt patch: every ACK carries the SACK blocks while data waits out of order (RFC 2018:
        // all ACKs while holes exist), not only the immediate ones.
        if !matches!(self.state, State::SynSent | State::SynReceived) {
            let ack = self.remote_seq_no + self.rx_buffer.len();
            repr.sack_ranges = self.sack_ranges(ack);
        }

        let mut is_zero_window_probe = false;
        // zt patch: the scoreboard entry resent, and whether this is a tail loss probe (of
        // an old segment: true).
        let mut resent: Option<usize> = None;
        let mut probe: Option<bool> = None;

        #[cfg_attr(
            not(feature = "segmentation-offload"),
            expect(
                unused_mut,
                reason = "The default is not mutated if the segmentation offload feature is not enabled."
            )
        )]
        let mut packet_meta = PacketMeta::default();

        match self.state {
            // We transmit an RST in the CLOSED state. If we ended up in the CLOSED state
            // with a specified endpoint, it means that the socket was aborted.
            State::Closed => {
                repr.control = TcpControl::Rst;
            }

            // We never transmit anything in the LISTEN state.
            State::Listen => return Ok(()),

            // We transmit a SYN in the SYN-SENT state.
            // We transmit a SYN|ACK in the SYN-RECEIVED state.
            State::SynSent | State::SynReceived => {
                repr.control = TcpControl::Syn;
                repr.seq_number = self.local_seq_no;
                // window len must NOT be scaled in SYNs.
                repr.window_len = u16::try_from(self.rx_buffer.window()).unwrap_or(u16::MAX);
                if self.state == State::SynSent {
                    repr.ack_number = None;
                    repr.window_scale = Some(self.remote_win_shift);
                    repr.sack_permitted = true;
                } else {
                    repr.sack_permitted = self.remote_has_sack;
                    repr.window_scale = self.remote_win_scale.map(|_| self.remote_win_shift);
                }
            }

            // We transmit data in all states where we may have data in the buffer,
            // or the transmit half of the connection is still open.
            State::Established
            | State::FinWait1
            | State::Closing
            | State::CloseWait
            | State::LastAck => {
                // Extract as much data as the remote side can receive in this packet
                // from the transmit buffer.

                // Maximum size we're allowed to send. This can be limited by 4 factors:
                // 1. remote window
                // 2. MSS the remote is willing to accept, probably determined by their MTU
                // 3. MSS we can send, determined by our MTU.
                // 4. Our congestion window
                let options_len = repr.header_len() - TCP_HEADER_LEN;
                let local_mss = cx.ip_mtu() - ip_repr.header_len() - TCP_HEADER_LEN;
                let effective_mss = local_mss.min(self.remote_mss).saturating_sub(options_len);

                // zt patch: a segment marked lost (or the last one, for a tail loss probe)
                // goes again before any new data (see `plan`).
                // zt patch: pacing holds data back even when something else (an ACK, a window
                // update) has the socket send now: no data rides along before its time.
                let planned = self.plan(cx, true);
                let paced_out = planned.is_none();
                let plan = planned.unwrap_or(Plan::New);
                let again = match plan {
                    Plan::Retransmit(i) => Some(i),
                    Plan::Probe => self.probe_target().flatten(),
                    Plan::New => None,
                };
                if plan == Plan::Probe {
                    probe = Some(again.is_some());
                }
                let offset = if let Some(i) = again
                    && let Some(seg) = self.sb.get(i).copied()
                {
                    let offset = seg.start - self.local_seq_no;
                    let mut size = seg.data_len().min(effective_mss);
                    // zt patch: no further than the peer's window (as Linux's
                    // `__tcp_retransmit_skb`), which may have shrunk since the segment was
                    // first sent; a segment at SND.UNA with no room at all goes whole, as a
                    // window probe (`plan` picks no other).
                    let win_right_edge = self.local_seq_no + self.remote_win_len;
                    if win_right_edge > seg.start {
                        size = size.min(win_right_edge - seg.start);
                    }
                    repr.seq_number = seg.start;
                    repr.payload = self.tx_buffer.get_allocated(offset, size);
                    if seg.fin && repr.payload.len() == seg.data_len() {
                        repr.control = TcpControl::Fin;
                    } else if offset + repr.payload.len() == self.tx_buffer.len()
                        && !repr.payload.is_empty()
                        && matches!(self.state, State::Established | State::CloseWait)
                    {
                        repr.control = TcpControl::Psh;
                    }
                    resent = Some(i);
                    offset
                } else {
                    // Right edge of window, ie the max sequence number we're allowed to send.
                    let win_right_edge = self.local_seq_no + self.remote_win_len;

                    // Max amount of octets we're allowed to send according to the remote window.
                    let mut win_limit = if win_right_edge >= self.remote_last_seq {
                        win_right_edge - self.remote_last_seq
                    } else {
                        // This can happen if we've sent some data and later the remote side
                        // has shrunk its window so that data is no longer inside the window.
                        // This should be very rare and is strongly discouraged by the RFCs,
                        // but it does happen in practice.
                        // http://www.tcpipguide.com/free/t_TCPWindowManagementIssues.htm
                        0
                    };

                    // To send a zero-window-probe, force the window limit to at least 1 byte.
                    if win_limit == 0 && self.timer.should_zero_window_probe(cx.now()) {
                        win_limit = 1;
                        is_zero_window_probe = true;
                    }

                    // Maximum size we're allowed to send. This can be limited by 4 factors:
                    // 1. remote window
                    // 2. congestion window
                    // 3. MSS the remote is willing to accept, probably determined by their MTU
                    // 4. MSS we can send, determined by our MTU.
                    //
                    // If the device supports its offload, segmentation that is needed
                    // to comply with the latter two will be handled by the device based on the
                    // metadata we provide.

                    #[cfg(not(feature = "segmentation-offload"))]
                    let device_limit = effective_mss;

                    #[cfg(feature = "segmentation-offload")]
                    let device_limit = {
                        let segmentation_caps = cx.segmentation_caps();
                        match ip_repr.version() {
                            #[cfg(feature = "proto-ipv4")]
                            crate::wire::IpVersion::Ipv4 => segmentation_caps.tcpv4,
                            #[cfg(feature = "proto-ipv6")]
                            crate::wire::IpVersion::Ipv6 => segmentation_caps.tcpv6,
                        }
                        .map(|buf_size| {
                            let pre_ip_header_len = cx.max_transmission_unit() - cx.ip_mtu();
                            buf_size.get()
                                - pre_ip_header_len
                                - ip_repr.header_len()
                                - TCP_HEADER_LEN
                                - options_len
                        })
                        .unwrap_or(effective_mss)
                    };

                    let size = if paced_out && !is_zero_window_probe {
                        0
                    } else if is_zero_window_probe || plan == Plan::Probe {
                        // Zero-window probes are exempt from the congestion window: they
                        // are sent precisely when normal transmission is impossible, and
                        // an empty segment elicits no reply, so capping the probe to a
                        // zero length would stall the connection if a window update from
                        // the remote got lost.
                        win_limit.min(device_limit)
                    } else {
                        win_limit.min(device_limit).min(self.cwnd_remaining())
                    };

                    let offset = self.flight_size();
                    repr.payload = self.tx_buffer.get_allocated(offset, size);

                    #[cfg(feature = "segmentation-offload")]
                    if repr.payload.len() > effective_mss {
                        packet_meta.segmentation_offload_size =
                            core::num::NonZeroU16::try_from(u16::try_from(effective_mss).unwrap())
                                .unwrap()
                                .into();
                    }

                    offset
                };

                // If we've sent everything we had in the buffer, follow it with the PSH or FIN
                // flags, depending on whether the transmit half of the connection is open.
                if resent.is_none() && offset + repr.payload.len() == self.tx_buffer.len() {
                    match self.state {
                        State::FinWait1 | State::LastAck | State::Closing => {
                            repr.control = TcpControl::Fin
                        }
                        State::Established | State::CloseWait if !repr.payload.is_empty() => {
                            repr.control = TcpControl::Psh
                        }
                        _ => (),
                    }
                }
            }

            // In FIN-WAIT-2 and TIME-WAIT states we may only transmit ACKs for incoming data or FIN
            State::FinWait2 | State::TimeWait => {}
        }

        // There might be more than one reason to send a packet. E.g. the keep-alive timer
        // has expired, and we also have data in transmit buffer. Since any packet that occupies
        // sequence space will elicit an ACK, we only need to send an explicit packet if we
        // couldn't fill the sequence space with anything.
        let is_keep_alive;
        if self.timer.should_keep_alive(cx.now()) && repr.is_empty() {
            repr.seq_number = repr.seq_number - 1;
            repr.payload = b"\x00"; // RFC 1122 says we should do this
            is_keep_alive = true;
        } else {
            is_keep_alive = false;
            // zt patch: a segment that occupies no sequence space carries SND.MAX, which the
            // peer accepts even when a retransmission timeout has put `remote_last_seq` behind
            // what the peer received (see `ack_seq_number`).
            if repr.segment_len() == 0 {
                repr.seq_number = self.ack_seq_number();
            }
        }

        // Trace a summary of what will be sent.
        if is_keep_alive {
            tcp_trace!("sending a keep-alive");
        } else if !repr.payload.is_empty() {
            tcp_trace!(
                "tx buffer: sending {} octets at offset {}",
                repr.payload.len(),
                self.flight_size()
            );
        }
        if repr.control != TcpControl::None || repr.payload.is_empty() {
            let flags = match (repr.control, repr.ack_number) {
                (TcpControl::Syn, None) => "SYN",
                (TcpControl::Syn, Some(_)) => "SYN|ACK",
                (TcpControl::Fin, Some(_)) => "FIN|ACK",
                (TcpControl::Rst, Some(_)) => "RST|ACK",
                (TcpControl::Psh, Some(_)) => "PSH|ACK",
                (TcpControl::None, Some(_)) => "ACK",
                _ => "<unreachable>",
            };
            tcp_trace!("sending {}", flags);
        }

        if repr.control == TcpControl::Syn {
            // Fill the MSS option. See RFC 6691 for an explanation of this calculation.
            let max_segment_size = cx.ip_mtu() - ip_repr.header_len() - TCP_HEADER_LEN;
            repr.max_seg_size = Some(max_segment_size as u16);
        }

        // Actually send the packet. If this succeeds, it means the packet is in
        // the device buffer, and its transmission is imminent. If not, we might have
        // a number of problems, e.g. we need neighbor discovery.
        //
        // Bailing out if the packet isn't placed in the device buffer allows us
        // to not waste time waiting for the retransmit timer on packets that we know
        // for sure will not be successfully transmitted.
        ip_repr.set_payload_len(repr.buffer_len());
        emit(cx, packet_meta, (ip_repr, repr))?;

        // We've sent something, whether useful data or a keep-alive packet, so rewind
        // the keep-alive timer.
        self.timer.rewind_keep_alive(cx.now(), self.keep_alive);

        // Reset delayed-ack timer
        match self.ack_delay_timer {
            AckDelayTimer::Idle => {}
            AckDelayTimer::Waiting(_) => {
                tcp_trace!("stop delayed ack timer")
            }
            AckDelayTimer::Immediate => {
                tcp_trace!("stop delayed ack timer (was force-expired)")
            }
        }
        self.ack_delay_timer = AckDelayTimer::Idle;

        // Leave the rest of the state intact if sending a zero-window probe.
        if is_zero_window_probe {
            self.timer.rewind_zero_window_probe(cx.now());
            return Ok(());
        }

        // Leave the rest of the state intact if sending a keep-alive packet, since those
        // carry a fake segment.
        if is_keep_alive {
            return Ok(());
        }

        // We've sent a packet successfully, so we can update the internal state now.
        // Use max() so a fast-retransmit segment (whose seq_number is local_seq_no, well
        // behind the current frontier) doesn't rewind the tracked "highest sent" sequence.
        //
        let now = cx.now();
        let now_us = now.total_micros();
        let seg_len = repr.segment_len();
        if repr.control == TcpControl::Syn {
            self.rec.syn_xmit_us.get_or_insert(now_us);
        }
        let in_data_state = matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::Closing
                | State::CloseWait
                | State::LastAck
        );
        if !repr.payload.is_empty() {
            self.info.bytes_sent += repr.payload.len() as u64;
        }
        // zt patch: the scoreboard learns of every data or FIN segment; retransmissions count
        // towards an undo, and everything sent towards pacing and proportional rate reduction.
        let mut idle_for = None;
        if probe.is_some() && seg_len == 0 {
            // Nothing went out for the probe after all: do not try again and again.
            self.rec.probe_pending = false;
        }
        if seg_len > 0 && in_data_state {
            let snap = self.rate.on_send(now_us, self.sb.is_empty());
            if let Some(i) = resent {
                self.sb.retransmitted(i, seg_len, now_us, snap);
                self.info.bytes_retrans += repr.payload.len() as u64;
                self.info.segs_retrans += 1;
                if self.rec.undo_marker.is_some() {
                    self.rec.undo_retrans += 1;
                    if self.rec.retrans_stamp.is_none() {
                        self.rec.retrans_stamp = Some(self.tsval_at_us(now_us));
                    }
                }
            } else if repr.seq_number == self.remote_last_seq {
                if self.sb.is_empty()
                    && let Some(idle) = self.rec.idle_since_us.take()
                {
                    self.congestion_controller
                        .inner_mut()
                        .on_idle_restart(now, Instant::from_micros(idle));
                    idle_for = Some(now_us - idle);
                }
                self.sb.push(
                    repr.seq_number,
                    seg_len,
                    repr.control == TcpControl::Fin,
                    now_us,
                    snap,
                );
            }
            if let Some(old) = probe {
                // RFC 8985 7.3: after the probe, the retransmission timer runs afresh.
                self.rec.rto_at = None;
                self.rec.probe_pending = false;
                self.rec.tlp_is_retrans = old;
                self.rec.tlp_end = Some(self.remote_last_seq.max(repr.seq_number + seg_len));
                self.info.loss_probes += 1;
            }
            if self.rec.state == CaState::Recovery {
                self.rec.prr_out += seg_len;
            }
            self.rec.on_paced_send(now_us, seg_len);
            let pipe = self.sb.in_flight();
            self.rec.max_pipe_round = self.rec.max_pipe_round.max(pipe);
            let cwnd = self.congestion_controller.inner().window();
            if pipe.saturating_add(self.remote_mss) >= cwnd {
                self.rec.cwnd_limited_now = true;
            }
        }

        // zt patch: only for segments that occupy sequence space; an empty one carries SND.MAX
        // (see `ack_seq_number`), which must not move `remote_last_seq` past unsent data.
        if seg_len > 0 {
            self.remote_last_seq = self.remote_last_seq.max(repr.seq_number + seg_len);
            self.remote_max_seq = self.remote_max_seq.max(self.remote_last_seq);
        }
        self.remote_last_ack = repr.ack_number;
        self.remote_last_win = repr.window_len;

        if seg_len > 0 {
            if in_data_state {
                // zt patch: the retransmission timer (RFC 6298 5.1), the probe timer.
                self.rearm_timers(now);
            } else if !self.timer.is_retransmit() {
                // RFC 6298 (5.1) Every time a packet containing data is sent (including a
                // retransmission), if the timer is not running, start it running
                // so that it will expire after RTO seconds.
                let rto = self.rtte.retransmission_timeout();
                self.timer.set_for_retransmit(now, rto);
            }
        }

        if let Some(idle) = idle_for {
            self.restart_after_idle(idle);
        }

        if self.state == State::Closed {
            // When aborting a connection, forget about it after sending a single RST packet.
            self.tuple = None;
            #[cfg(feature = "async")]
            {
                // Wake tx now so that async users can wait for the RST to be sent
                self.tx_waker.wake();
            }
        }

        Ok(())
    }

    #[allow(clippy::if_same_then_else)]
    pub(crate) fn poll_at(&self, cx: &mut Context) -> PollAt {
        // The logic here mirrors the beginning of dispatch() closely.
        if self.tuple.is_none() {
            // No one to talk to, nothing to transmit.
            PollAt::Ingress
        } else if self.remote_last_ts.is_none() {
            // Socket stopped being quiet recently, we need to acquire a timestamp.
            PollAt::Now
        } else if self.state == State::Closed {
            // Socket was aborted, we have an RST packet to transmit.
            PollAt::Now
        } else if self.seq_to_transmit(cx) {
            // We have a data or flag packet to transmit.
            PollAt::Now
        } else if self.window_to_update() {
            // The receive window has been raised significantly.
            PollAt::Now
        } else {
            let want_ack = self.ack_to_transmit();

            let delayed_ack_poll_at = match (want_ack, self.ack_delay_timer) {
                (false, _) => PollAt::Ingress,
                (true, AckDelayTimer::Idle) => PollAt::Now,
                (true, AckDelayTimer::Waiting(t)) => PollAt::Time(t),
                (true, AckDelayTimer::Immediate) => PollAt::Now,
            };

            let timeout_poll_at = match (self.remote_last_ts, self.timeout) {
                // If we're transmitting or retransmitting data, we need to poll at the moment
                // when the timeout would expire.
                (Some(remote_last_ts), Some(timeout)) => PollAt::Time(remote_last_ts + timeout),
                // Otherwise we have no timeout.
                (_, _) => PollAt::Ingress,
            };

            // zt patch: a segment held back by pacing goes at its time.
            let pacing_poll_at = if !self.rec.pacing_allows(cx.now().total_micros())
                && self.seq_to_transmit_paced(cx, false)
            {
                PollAt::Time(Instant::from_micros(self.rec.next_send_us))
            } else {
                PollAt::Ingress
            };

            // We wait for the earliest of our timers to fire.
            *[
                self.timer.poll_at(),
                timeout_poll_at,
                delayed_ack_poll_at,
                pacing_poll_at,
            ]
            .iter()
            .min()
            .unwrap_or(&PollAt::Ingress)
        }
    }
}

impl<'a> fmt::Write for Socket<'a> {
    fn write_str(&mut self, slice: &str) -> fmt::Result {
        let slice = slice.as_bytes();
        if self.send_slice(slice) == Ok(slice.len()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

// TODO: TCP should work for all features. For now, we only test with the IP feature. We could do
// it for other features as well with rstest, however, this means we have to modify a lot of the
// tests in here, which I didn't had the time for at the moment.
#[cfg(all(test, feature = "medium-ip"))]
mod test {
    use super::*;
    use crate::config::IFACE_MAX_ADDR_COUNT;
    use crate::wire::{IpCidr, IpRepr};
    use std::ops::{Deref, DerefMut};
    use std::vec::Vec;

    // =========================================================================================//
    // Constants
    // =========================================================================================//

    const LOCAL_PORT: u16 = 80;
    const REMOTE_PORT: u16 = 49500;
    const LISTEN_END: IpListenEndpoint = IpListenEndpoint {
        addr: None,
        port: LOCAL_PORT,
    };
    const TUPLE: Tuple = Tuple {
        local: LOCAL_END,
        remote: REMOTE_END,
    };
    const LOCAL_SEQ: TcpSeqNumber = TcpSeqNumber(10000);
    const REMOTE_SEQ: TcpSeqNumber = TcpSeqNumber(-10001);

    cfg_if::cfg_if! {
        if #[cfg(feature = "proto-ipv4")] {
            use crate::wire::Ipv4Address as IpvXAddress;
            use crate::wire::Ipv4Repr as IpvXRepr;
            use IpRepr::Ipv4 as IpReprIpvX;

            const LOCAL_ADDR: IpvXAddress = IpvXAddress::new(192, 168, 1, 1);
            const REMOTE_ADDR: IpvXAddress = IpvXAddress::new(192, 168, 1, 2);
            const OTHER_ADDR: IpvXAddress = IpvXAddress::new(192, 168, 1, 3);

            const BASE_MSS: u16 = 1460;

            const LOCAL_END: IpEndpoint = IpEndpoint {
                addr: IpAddress::Ipv4(LOCAL_ADDR),
                port: LOCAL_PORT,
            };
            const REMOTE_END: IpEndpoint = IpEndpoint {
                addr: IpAddress::Ipv4(REMOTE_ADDR),
                port: REMOTE_PORT,
            };
        } else {
            use crate::wire::Ipv6Address as IpvXAddress;
            use crate::wire::Ipv6Repr as IpvXRepr;
            use IpRepr::Ipv6 as IpReprIpvX;

            const LOCAL_ADDR: IpvXAddress = IpvXAddress::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
            const REMOTE_ADDR: IpvXAddress = IpvXAddress::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
            const OTHER_ADDR: IpvXAddress = IpvXAddress::new(0xfe80, 0, 0, 0, 0, 0, 0, 3);

            const BASE_MSS: u16 = 1440;

            const LOCAL_END: IpEndpoint = IpEndpoint {
                addr: IpAddress::Ipv6(LOCAL_ADDR),
                port: LOCAL_PORT,
            };
            const REMOTE_END: IpEndpoint = IpEndpoint {
                addr: IpAddress::Ipv6(REMOTE_ADDR),
                port: REMOTE_PORT,
            };
        }
    }

    const SEND_IP_TEMPL: IpRepr = IpReprIpvX(IpvXRepr {
        src_addr: LOCAL_ADDR,
        dst_addr: REMOTE_ADDR,
        next_header: IpProtocol::Tcp,
        payload_len: 20,
        hop_limit: 64,
    });
    const SEND_TEMPL: TcpRepr<'static> = TcpRepr {
        src_port: REMOTE_PORT,
        dst_port: LOCAL_PORT,
        control: TcpControl::None,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(TcpSeqNumber(0)),
        window_len: 256,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    const _RECV_IP_TEMPL: IpRepr = IpReprIpvX(IpvXRepr {
        src_addr: LOCAL_ADDR,
        dst_addr: REMOTE_ADDR,
        next_header: IpProtocol::Tcp,
        payload_len: 20,
        hop_limit: 64,
    });
    const RECV_TEMPL: TcpRepr<'static> = TcpRepr {
        src_port: LOCAL_PORT,
        dst_port: REMOTE_PORT,
        control: TcpControl::None,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(TcpSeqNumber(0)),
        window_len: 64,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };

    // =========================================================================================//
    // Helper functions
    // =========================================================================================//

    struct TestSocket {
        socket: Socket<'static>,
        cx: Context,
    }

    impl Deref for TestSocket {
        type Target = Socket<'static>;
        fn deref(&self) -> &Self::Target {
            &self.socket
        }
    }

    impl DerefMut for TestSocket {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.socket
        }
    }

    #[track_caller]
    fn send(
        socket: &mut TestSocket,
        timestamp: Instant,
        repr: &TcpRepr,
    ) -> Option<TcpRepr<'static>> {
        socket.cx.set_now(timestamp);

        let ip_repr = IpReprIpvX(IpvXRepr {
            src_addr: REMOTE_ADDR,
            dst_addr: LOCAL_ADDR,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        });
        net_trace!("send: {}", repr);

        assert!(socket.socket.accepts(&mut socket.cx, &ip_repr, repr));

        match socket.socket.process(&mut socket.cx, &ip_repr, repr) {
            Some((_ip_repr, repr)) => {
                net_trace!("recv: {}", repr);
                Some(repr)
            }
            None => None,
        }
    }

    #[track_caller]
    fn recv<F>(socket: &mut TestSocket, timestamp: Instant, mut f: F)
    where
        F: FnMut(Result<TcpRepr, ()>),
    {
        socket.cx.set_now(timestamp);

        let mut sent = 0;
        let result = socket
            .socket
            .dispatch(&mut socket.cx, |_, _, (ip_repr, tcp_repr)| {
                assert_eq!(ip_repr.next_header(), IpProtocol::Tcp);
                assert_eq!(ip_repr.src_addr(), LOCAL_ADDR.into());
                assert_eq!(ip_repr.dst_addr(), REMOTE_ADDR.into());
                assert_eq!(ip_repr.payload_len(), tcp_repr.buffer_len());

                net_trace!("recv: {}", tcp_repr);
                sent += 1;
                Ok(f(Ok(tcp_repr)))
            });
        match result {
            Ok(()) => assert_eq!(sent, 1, "Exactly one packet should be sent"),
            Err(e) => f(Err(e)),
        }
    }

    #[track_caller]
    fn recv_nothing(socket: &mut TestSocket, timestamp: Instant) {
        socket.cx.set_now(timestamp);

        let mut fail = false;
        let result: Result<(), ()> = socket.socket.dispatch(&mut socket.cx, |_, _, _| {
            fail = true;
            Ok(())
        });
        if fail {
            panic!("Should not send a packet")
        }

        assert_eq!(result, Ok(()))
    }

    #[collapse_debuginfo(yes)]
    macro_rules! send {
        ($socket:ident, $repr:expr) =>
            (send!($socket, time 0, $repr));
        ($socket:ident, $repr:expr, $result:expr) =>
            (send!($socket, time 0, $repr, $result));
        ($socket:ident, time $time:expr, $repr:expr) =>
            (send!($socket, time $time, $repr, None));
        ($socket:ident, time $time:expr, $repr:expr, $result:expr) =>
            (assert_eq!(send(&mut $socket, Instant::from_millis($time), &$repr), $result));
    }

    #[collapse_debuginfo(yes)]
    macro_rules! recv {
        ($socket:ident, [$( $repr:expr ),*]) => ({
            $( recv!($socket, Ok($repr)); )*
            recv_nothing!($socket)
        });
        ($socket:ident, time $time:expr, [$( $repr:expr ),*]) => ({
            $( recv!($socket, time $time, Ok($repr)); )*
            recv_nothing!($socket, time $time)
        });
        ($socket:ident, $result:expr) =>
            (recv!($socket, time 0, $result));
        ($socket:ident, time $time:expr, $result:expr) =>
            (recv(&mut $socket, Instant::from_millis($time), |result| {
                // Most of the time we don't care about the PSH flag.
                let result = result.map(|mut repr| {
                    repr.control = repr.control.quash_psh();
                    repr
                });
                assert_eq!(result, $result)
            }));
        ($socket:ident, time $time:expr, $result:expr, exact) =>
            (recv(&mut $socket, Instant::from_millis($time), |repr| assert_eq!(repr, $result)));
    }

    #[collapse_debuginfo(yes)]
    macro_rules! recv_nothing {
        ($socket:ident) => (recv_nothing!($socket, time 0));
        ($socket:ident, time $time:expr) => (recv_nothing(&mut $socket, Instant::from_millis($time)));
    }

    #[collapse_debuginfo(yes)]
    macro_rules! sanity {
        ($socket1:expr, $socket2:expr) => {{
            let (s1, s2) = ($socket1, $socket2);
            assert_eq!(s1.state, s2.state, "state");
            assert_eq!(s1.tuple, s2.tuple, "tuple");
            assert_eq!(s1.local_seq_no, s2.local_seq_no, "local_seq_no");
            assert_eq!(s1.remote_seq_no, s2.remote_seq_no, "remote_seq_no");
            assert_eq!(s1.remote_last_seq, s2.remote_last_seq, "remote_last_seq");
            assert_eq!(s1.remote_last_ack, s2.remote_last_ack, "remote_last_ack");
            assert_eq!(s1.remote_last_win, s2.remote_last_win, "remote_last_win");
            assert_eq!(s1.remote_win_len, s2.remote_win_len, "remote_win_len");
            assert_eq!(s1.timer, s2.timer, "timer");
        }};
    }

    fn socket() -> TestSocket {
        socket_with_buffer_sizes(64, 64)
    }

    fn socket_with_buffer_sizes(tx_len: usize, rx_len: usize) -> TestSocket {
        let (iface, _, _) = crate::tests::setup(crate::phy::Medium::Ip);

        let rx_buffer = SocketBuffer::new(vec![0; rx_len]);
        let tx_buffer = SocketBuffer::new(vec![0; tx_len]);
        let mut socket = Socket::new(rx_buffer, tx_buffer);
        socket.set_ack_delay(None);
        TestSocket {
            socket,
            cx: iface.inner,
        }
    }

    fn socket_syn_received_with_buffer_sizes(tx_len: usize, rx_len: usize) -> TestSocket {
        let mut s = socket_with_buffer_sizes(tx_len, rx_len);
        s.state = State::SynReceived;
        s.tuple = Some(TUPLE);
        s.local_seq_no = LOCAL_SEQ;
        s.remote_seq_no = REMOTE_SEQ + 1;
        s.remote_last_seq = LOCAL_SEQ;
        s.remote_max_seq = LOCAL_SEQ;
        s.rec.start(LOCAL_SEQ + 1);
        s.remote_win_len = 256;
        s
    }

    fn socket_syn_received() -> TestSocket {
        socket_syn_received_with_buffer_sizes(64, 64)
    }

    fn socket_syn_sent_with_buffer_sizes(tx_len: usize, rx_len: usize) -> TestSocket {
        let mut s = socket_with_buffer_sizes(tx_len, rx_len);
        s.state = State::SynSent;
        s.tuple = Some(TUPLE);
        s.local_seq_no = LOCAL_SEQ;
        s.remote_last_seq = LOCAL_SEQ;
        s
    }

    fn socket_syn_sent() -> TestSocket {
        socket_syn_sent_with_buffer_sizes(64, 64)
    }

    fn socket_established_with_buffer_sizes(tx_len: usize, rx_len: usize) -> TestSocket {
        let mut s = socket_syn_received_with_buffer_sizes(tx_len, rx_len);
        s.state = State::Established;
        s.local_seq_no = LOCAL_SEQ + 1;
        s.remote_last_seq = LOCAL_SEQ + 1;
        s.remote_last_ack = Some(REMOTE_SEQ + 1);
        s.remote_last_win = s.scaled_window();
        s
    }

    fn socket_established() -> TestSocket {
        socket_established_with_buffer_sizes(64, 64)
    }

    fn socket_fin_wait_1() -> TestSocket {
        let mut s = socket_established();
        s.state = State::FinWait1;
        s
    }

    fn socket_fin_wait_2() -> TestSocket {
        let mut s = socket_fin_wait_1();
        s.state = State::FinWait2;
        s.local_seq_no = LOCAL_SEQ + 1 + 1;
        s.remote_last_seq = LOCAL_SEQ + 1 + 1;
        s
    }

    fn socket_closing() -> TestSocket {
        let mut s = socket_fin_wait_1();
        s.state = State::Closing;
        s.remote_last_seq = LOCAL_SEQ + 1 + 1;
        s.remote_seq_no = REMOTE_SEQ + 1 + 1;
        s.timer = Timer::Retransmit {
            expires_at: Instant::from_millis_const(1000),
        };
        s
    }

    fn socket_time_wait(from_closing: bool) -> TestSocket {
        let mut s = socket_fin_wait_2();
        s.state = State::TimeWait;
        s.remote_seq_no = REMOTE_SEQ + 1 + 1;
        if from_closing {
            s.remote_last_ack = Some(REMOTE_SEQ + 1 + 1);
        }
        s.timer = Timer::Close {
            expires_at: Instant::from_secs(1) + CLOSE_DELAY,
        };
        s
    }

    fn socket_close_wait() -> TestSocket {
        let mut s = socket_established();
        s.state = State::CloseWait;
        s.remote_seq_no = REMOTE_SEQ + 1 + 1;
        s.remote_last_ack = Some(REMOTE_SEQ + 1 + 1);
        s
    }

    fn socket_last_ack() -> TestSocket {
        let mut s = socket_close_wait();
        s.state = State::LastAck;
        s
    }

    fn socket_recved() -> TestSocket {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            }]
        );
        s
    }

    // =========================================================================================//
    // Tests for the CLOSED state.
    // =========================================================================================//
    #[test]
    fn test_closed_reject() {
        let mut s = socket();
        assert_eq!(s.state, State::Closed);

        let tcp_repr = TcpRepr {
            control: TcpControl::Syn,
            ..SEND_TEMPL
        };
        assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &tcp_repr));
    }

    #[test]
    fn test_closed_reject_after_listen() {
        let mut s = socket();
        s.listen(LOCAL_END).unwrap();
        s.close();

        let tcp_repr = TcpRepr {
            control: TcpControl::Syn,
            ..SEND_TEMPL
        };
        assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &tcp_repr));
    }

    #[test]
    fn test_closed_close() {
        let mut s = socket();
        s.close();
        assert_eq!(s.state, State::Closed);
    }

    // =========================================================================================//
    // Tests for the LISTEN state.
    // =========================================================================================//
    fn socket_listen() -> TestSocket {
        let mut s = socket();
        s.state = State::Listen;
        s.listen_endpoint = LISTEN_END;
        s
    }

    #[test]
    fn test_listen_sack_option() {
        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                sack_permitted: false,
                ..SEND_TEMPL
            }
        );
        assert!(!s.remote_has_sack);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );

        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                sack_permitted: true,
                ..SEND_TEMPL
            }
        );
        assert!(s.remote_has_sack);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_listen_syn_win_scale_buffers() {
        for (buffer_size, shift_amt) in &[
            (64, 0),
            (128, 0),
            (1024, 0),
            (65535, 0),
            (65536, 1),
            (65537, 1),
            (131071, 1),
            (131072, 2),
            (524287, 3),
            (524288, 4),
            (655350, 4),
            (1048576, 5),
        ] {
            let mut s = socket_with_buffer_sizes(64, *buffer_size);
            s.state = State::Listen;
            s.listen_endpoint = LISTEN_END;
            assert_eq!(s.remote_win_shift, *shift_amt);
            send!(
                s,
                TcpRepr {
                    control: TcpControl::Syn,
                    seq_number: REMOTE_SEQ,
                    ack_number: None,
                    window_scale: Some(0),
                    ..SEND_TEMPL
                }
            );
            assert_eq!(s.remote_win_shift, *shift_amt);
            recv!(
                s,
                [TcpRepr {
                    control: TcpControl::Syn,
                    seq_number: LOCAL_SEQ,
                    ack_number: Some(REMOTE_SEQ + 1),
                    max_seg_size: Some(BASE_MSS),
                    window_scale: Some(*shift_amt),
                    window_len: u16::try_from(*buffer_size).unwrap_or(u16::MAX),
                    ..RECV_TEMPL
                }]
            );
        }
    }

    #[test]
    fn test_listen_syn_tiny_mss_is_clamped() {
        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                max_seg_size: Some(10),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::SynReceived);
        assert_eq!(s.remote_mss, MIN_REMOTE_MSS);
    }

    #[test]
    fn test_listen_syn_zero_mss_is_ignored() {
        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                max_seg_size: Some(0),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::SynReceived);
        assert_eq!(s.remote_mss, DEFAULT_MSS);
    }

    #[test]
    fn test_listen_sanity() {
        let mut s = socket();
        s.listen(LOCAL_PORT).unwrap();
        sanity!(s, socket_listen());
    }

    #[test]
    fn test_listen_validation() {
        let mut s = socket();
        assert_eq!(s.listen(0), Err(ListenError::Unaddressable));
    }

    #[test]
    fn test_listen_twice() {
        let mut s = socket();
        assert_eq!(s.listen(80), Ok(()));
        // multiple calls to listen are okay if its the same local endpoint and the state is still in listening
        assert_eq!(s.listen(80), Ok(()));
        s.set_state(State::SynReceived); // state change, simulate incoming connection
        assert_eq!(s.listen(80), Err(ListenError::InvalidState));
    }

    #[test]
    fn test_listen_syn() {
        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
        sanity!(s, socket_syn_received());
    }

    #[test]
    fn test_listen_syn_reject_ack() {
        let mut s = socket_listen();

        let tcp_repr = TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: Some(LOCAL_SEQ),
            ..SEND_TEMPL
        };
        assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &tcp_repr));

        assert_eq!(s.state, State::Listen);
    }

    #[test]
    fn test_listen_rst() {
        let mut s = socket_listen();
        let tcp_repr = TcpRepr {
            control: TcpControl::Rst,
            seq_number: REMOTE_SEQ,
            ack_number: None,
            ..SEND_TEMPL
        };
        assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &tcp_repr));
        assert_eq!(s.state, State::Listen);
    }

    #[test]
    fn test_listen_close() {
        let mut s = socket_listen();
        s.close();
        assert_eq!(s.state, State::Closed);
    }

    // =========================================================================================//
    // Tests for the SYN-RECEIVED state.
    // =========================================================================================//

    #[test]
    fn test_syn_received_ack() {
        let mut s = socket_syn_received();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        sanity!(s, socket_established());
    }

    #[cfg(feature = "socket-tcp-pause-synack")]
    #[test]
    fn test_syn_paused_ack() {
        let mut s = socket_syn_received();

        s.pause_synack(true);
        recv_nothing!(s);
        assert_eq!(s.state, State::SynReceived);

        s.pause_synack(false);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
    }

    #[test]
    fn test_syn_received_ack_too_low() {
        let mut s = socket_syn_received();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ), // wrong
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                control: TcpControl::Rst,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                window_len: 0,
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.state, State::SynReceived);
    }

    #[test]
    fn test_syn_received_ack_too_high() {
        let mut s = socket_syn_received();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 2), // wrong
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                control: TcpControl::Rst,
                seq_number: LOCAL_SEQ + 2,
                ack_number: None,
                window_len: 0,
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.state, State::SynReceived);
    }

    #[test]
    fn test_syn_received_fin() {
        let mut s = socket_syn_received();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6 + 1),
                window_len: 58,
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::CloseWait);

        let mut s2 = socket_close_wait();
        s2.remote_last_ack = Some(REMOTE_SEQ + 1 + 6 + 1);
        s2.remote_last_win = 58;
        sanity!(s, s2);
    }

    #[test]
    fn test_syn_received_rst() {
        let mut s = socket_syn_received();
        s.listen_endpoint = LISTEN_END;
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Listen);
        assert_eq!(s.listen_endpoint, LISTEN_END);
        assert_eq!(s.tuple, None);
    }

    #[test]
    fn test_syn_received_no_window_scaling() {
        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::SynReceived);
        assert_eq!(s.tuple, Some(TUPLE));
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                window_scale: None,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_scale: None,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.remote_win_shift, 0);
        assert_eq!(s.remote_win_scale, None);
    }

    #[test]
    fn test_syn_received_window_scaling() {
        for scale in 0..14 {
            let mut s = socket_listen();
            send!(
                s,
                TcpRepr {
                    control: TcpControl::Syn,
                    seq_number: REMOTE_SEQ,
                    ack_number: None,
                    window_scale: Some(scale),
                    ..SEND_TEMPL
                }
            );
            assert_eq!(s.state(), State::SynReceived);
            assert_eq!(s.tuple, Some(TUPLE));
            recv!(
                s,
                [TcpRepr {
                    control: TcpControl::Syn,
                    seq_number: LOCAL_SEQ,
                    ack_number: Some(REMOTE_SEQ + 1),
                    max_seg_size: Some(BASE_MSS),
                    window_scale: Some(0),
                    ..RECV_TEMPL
                }]
            );
            send!(
                s,
                TcpRepr {
                    seq_number: REMOTE_SEQ + 1,
                    ack_number: Some(LOCAL_SEQ + 1),
                    window_scale: None,
                    ..SEND_TEMPL
                }
            );
            assert_eq!(s.remote_win_scale, Some(scale));
        }
    }

    #[test]
    fn test_syn_received_close() {
        let mut s = socket_syn_received();
        s.close();
        assert_eq!(s.state, State::FinWait1);
    }

    // =========================================================================================//
    // Tests for the SYN-SENT state.
    // =========================================================================================//

    #[test]
    fn test_connect_validation() {
        let mut s = socket();
        assert_eq!(
            s.socket
                .connect(&mut s.cx, REMOTE_END, (IpvXAddress::UNSPECIFIED, 0)),
            Err(ConnectError::Unaddressable)
        );
        assert_eq!(
            s.socket
                .connect(&mut s.cx, REMOTE_END, (IpvXAddress::UNSPECIFIED, 1024)),
            Err(ConnectError::Unaddressable)
        );
        assert_eq!(
            s.socket
                .connect(&mut s.cx, (IpvXAddress::UNSPECIFIED, 0), LOCAL_END),
            Err(ConnectError::Unaddressable)
        );
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END)
            .expect("Connect failed with valid parameters");
        assert_eq!(s.tuple, Some(TUPLE));
    }

    #[test]
    fn test_connect() {
        let mut s = socket();
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        assert_eq!(s.tuple, Some(TUPLE));
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.tuple, Some(TUPLE));
    }

    #[test]
    fn test_connect_synack_tiny_mss_is_clamped() {
        let mut s = socket();
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(10),
                window_scale: Some(0),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.remote_mss, MIN_REMOTE_MSS);
    }

    #[test]
    fn test_connect_synack_zero_mss_is_ignored() {
        let mut s = socket();
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(0),
                window_scale: Some(0),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.remote_mss, DEFAULT_MSS);
    }

    #[test]
    fn test_connect_unspecified_local() {
        let mut s = socket();
        assert_eq!(s.socket.connect(&mut s.cx, REMOTE_END, 80), Ok(()));
    }

    #[test]
    fn test_connect_specified_local() {
        let mut s = socket();
        assert_eq!(
            s.socket.connect(&mut s.cx, REMOTE_END, (REMOTE_ADDR, 80)),
            Ok(())
        );
    }

    #[test]
    fn test_connect_twice() {
        let mut s = socket();
        assert_eq!(s.socket.connect(&mut s.cx, REMOTE_END, 80), Ok(()));
        assert_eq!(
            s.socket.connect(&mut s.cx, REMOTE_END, 80),
            Err(ConnectError::InvalidState)
        );
    }

    #[test]
    fn test_syn_sent_sanity() {
        let mut s = socket();
        s.local_seq_no = LOCAL_SEQ;
        s.socket.connect(&mut s.cx, REMOTE_END, LOCAL_END).unwrap();
        sanity!(s, socket_syn_sent());
    }

    #[test]
    fn test_syn_sent_syn_ack() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        recv_nothing!(s, time 1000);
        assert_eq!(s.state, State::Established);
        sanity!(s, socket_established());
    }

    #[test]
    fn test_syn_sent_syn_received_ack() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );

        // A SYN packet changes the SYN-SENT state to SYN-RECEIVED.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::SynReceived);

        // The socket will then send a SYN|ACK packet.
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                ..RECV_TEMPL
            }]
        );
        recv_nothing!(s);

        // The socket may retransmit the SYN|ACK packet.
        recv!(
            s,
            time 1001,
            Ok(TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                ..RECV_TEMPL
            })
        );

        // An ACK packet changes the SYN-RECEIVED state to ESTABLISHED.
        send!(
            s,
            TcpRepr {
                control: TcpControl::None,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        sanity!(s, socket_established());
    }

    #[test]
    fn test_syn_sent_syn_ack_not_incremented() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ), // WRONG
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                control: TcpControl::Rst,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                window_len: 0,
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.state, State::SynSent);
    }

    #[test]
    fn test_syn_sent_syn_received_rst() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );

        // A SYN packet changes the SYN-SENT state to SYN-RECEIVED.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::SynReceived);

        // A RST packet changes the SYN-RECEIVED state to CLOSED.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_syn_sent_rst() {
        let mut s = socket_syn_sent();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_syn_sent_rst_no_ack() {
        let mut s = socket_syn_sent();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::SynSent);
    }

    #[test]
    fn test_syn_sent_rst_bad_ack() {
        let mut s = socket_syn_sent();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ,
                ack_number: Some(TcpSeqNumber(1234)),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::SynSent);
    }

    #[test]
    fn test_syn_sent_bad_ack() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::None, // Unexpected
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1), // Correct
                ..SEND_TEMPL
            }
        );

        // It should trigger no response and change no state
        recv!(s, []);
        assert_eq!(s.state, State::SynSent);
    }

    #[test]
    fn test_syn_sent_bad_ack_seq_1() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::None,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ), // WRONG
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                control: TcpControl::Rst,
                seq_number: LOCAL_SEQ, // matching the ack_number of the unexpected ack
                ack_number: None,
                window_len: 0,
                ..RECV_TEMPL
            })
        );

        // It should trigger a RST, and change no state
        assert_eq!(s.state, State::SynSent);
    }

    #[test]
    fn test_syn_sent_bad_ack_seq_2() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::None,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 123456), // WRONG
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                control: TcpControl::Rst,
                seq_number: LOCAL_SEQ + 123456, // matching the ack_number of the unexpected ack
                ack_number: None,
                window_len: 0,
                ..RECV_TEMPL
            })
        );

        // It should trigger a RST, and change no state
        assert_eq!(s.state, State::SynSent);
    }

    #[test]
    fn test_syn_sent_close() {
        let mut s = socket();
        s.close();
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_syn_sent_sack_option() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                sack_permitted: true,
                ..SEND_TEMPL
            }
        );
        assert!(s.remote_has_sack);

        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                sack_permitted: false,
                ..SEND_TEMPL
            }
        );
        assert!(!s.remote_has_sack);
    }

    #[test]
    fn test_syn_sent_win_scale_buffers() {
        for (buffer_size, shift_amt) in &[
            (64, 0),
            (128, 0),
            (1024, 0),
            (65535, 0),
            (65536, 1),
            (65537, 1),
            (131071, 1),
            (131072, 2),
            (524287, 3),
            (524288, 4),
            (655350, 4),
            (1048576, 5),
        ] {
            let mut s = socket_with_buffer_sizes(64, *buffer_size);
            s.local_seq_no = LOCAL_SEQ;
            assert_eq!(s.remote_win_shift, *shift_amt);
            s.socket.connect(&mut s.cx, REMOTE_END, LOCAL_END).unwrap();
            recv!(
                s,
                [TcpRepr {
                    control: TcpControl::Syn,
                    seq_number: LOCAL_SEQ,
                    ack_number: None,
                    max_seg_size: Some(BASE_MSS),
                    window_scale: Some(*shift_amt),
                    window_len: u16::try_from(*buffer_size).unwrap_or(u16::MAX),
                    sack_permitted: true,
                    ..RECV_TEMPL
                }]
            );
        }
    }

    #[test]
    fn test_syn_sent_syn_ack_no_window_scaling() {
        let mut s = socket_syn_sent_with_buffer_sizes(1048576, 1048576);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                // scaling does NOT apply to the window value in SYN packets
                window_len: 65535,
                window_scale: Some(5),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.remote_win_shift, 5);
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: None,
                window_len: 42,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.remote_win_shift, 0);
        assert_eq!(s.remote_win_scale, None);
        assert_eq!(s.remote_win_len, 42);
    }

    #[test]
    fn test_syn_sent_syn_ack_window_scaling() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(7),
                window_len: 42,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.remote_win_scale, Some(7));
        // scaling does NOT apply to the window value in SYN packets
        assert_eq!(s.remote_win_len, 42);
    }

    // =========================================================================================//
    // Tests for the ESTABLISHED state.
    // =========================================================================================//

    #[test]
    fn test_established_recv() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.rx_buffer.dequeue_many(6), &b"abcdef"[..]);
    }

    #[test]
    fn test_peek_slice() {
        const BUF_SIZE: usize = 10;

        let send_buf = b"0123456";

        let mut s = socket_established_with_buffer_sizes(BUF_SIZE, BUF_SIZE);

        // Populate the recv buffer
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &send_buf[..],
                ..SEND_TEMPL
            }
        );

        // Peek into the recv buffer
        let mut peeked_buf = [0u8; BUF_SIZE];
        let actually_peeked = s.peek_slice(&mut peeked_buf[..]).unwrap();
        let mut recv_buf = [0u8; BUF_SIZE];
        let actually_recvd = s.recv_slice(&mut recv_buf[..]).unwrap();
        assert_eq!(
            &mut peeked_buf[..actually_peeked],
            &mut recv_buf[..actually_recvd]
        );
    }

    #[test]
    fn test_peek_slice_buffer_wrap() {
        const BUF_SIZE: usize = 10;

        let send_buf = b"0123456789";

        let mut s = socket_established_with_buffer_sizes(BUF_SIZE, BUF_SIZE);

        let _ = s.rx_buffer.enqueue_slice(&send_buf[..8]);
        let _ = s.rx_buffer.dequeue_many(6);
        let _ = s.rx_buffer.enqueue_slice(&send_buf[..5]);

        let mut peeked_buf = [0u8; BUF_SIZE];
        let actually_peeked = s.peek_slice(&mut peeked_buf[..]).unwrap();
        let mut recv_buf = [0u8; BUF_SIZE];
        let actually_recvd = s.recv_slice(&mut recv_buf[..]).unwrap();
        assert_eq!(
            &mut peeked_buf[..actually_peeked],
            &mut recv_buf[..actually_recvd]
        );
    }

    fn setup_rfc2018_cases() -> (TestSocket, Vec<u8>) {
        // This is a utility function used by the tests for RFC 2018 cases. It configures a socket
        // in a particular way suitable for those cases.
        //
        // RFC 2018: Assume the left window edge is 5000 and that the data transmitter sends [...]
        // segments, each containing 500 data bytes.
        let mut s = socket_established_with_buffer_sizes(4000, 4000);
        s.remote_has_sack = true;

        // create a segment that is 500 bytes long
        let mut segment: Vec<u8> = Vec::with_capacity(500);

        // move the last ack to 5000 by sending ten of them
        for _ in 0..50 {
            segment.extend_from_slice(b"abcdefghij")
        }
        for offset in (0..5000).step_by(500) {
            send!(
                s,
                TcpRepr {
                    seq_number: REMOTE_SEQ + 1 + offset,
                    ack_number: Some(LOCAL_SEQ + 1),
                    payload: &segment,
                    ..SEND_TEMPL
                }
            );
            recv!(
                s,
                [TcpRepr {
                    seq_number: LOCAL_SEQ + 1,
                    ack_number: Some(REMOTE_SEQ + 1 + offset + 500),
                    window_len: 3500,
                    ..RECV_TEMPL
                }]
            );
            s.recv(|data| {
                assert_eq!(data.len(), 500);
                assert_eq!(data, segment.as_slice());
                (500, ())
            })
            .unwrap();
        }
        assert_eq!(s.remote_last_win, 3500);
        (s, segment)
    }

    #[test]
    fn test_established_rfc2018_cases() {
        // This test case verifies the exact scenarios described on pages 8-9 of RFC 2018. Please
        // ensure its behavior does not deviate from those scenarios.

        let (mut s, segment) = setup_rfc2018_cases();
        // RFC 2018:
        //
        // Case 2: The first segment is dropped but the remaining 7 are received.
        //
        // Upon receiving each of the last seven packets, the data receiver will return a TCP ACK
        // segment that acknowledges sequence number 5000 and contains a SACK option specifying one
        // block of queued data:
        //
        //   Triggering   ACK      Left Edge  Right Edge
        //   Segment
        //
        //   5000         (lost)
        //   5500         5000     5500       6000
        //   6000         5000     5500       6500
        //   6500         5000     5500       7000
        //   7000         5000     5500       7500
        //   7500         5000     5500       8000
        //   8000         5000     5500       8500
        //   8500         5000     5500       9000
        //
        for offset in (500..3500).step_by(500) {
            send!(
                s,
                TcpRepr {
                    seq_number: REMOTE_SEQ + 1 + offset + 5000,
                    ack_number: Some(LOCAL_SEQ + 1),
                    payload: &segment,
                    ..SEND_TEMPL
                },
                Some(TcpRepr {
                    seq_number: LOCAL_SEQ + 1,
                    ack_number: Some(REMOTE_SEQ + 1 + 5000),
                    window_len: 4000,
                    sack_ranges: [
                        Some((
                            REMOTE_SEQ.0 as u32 + 1 + 5500,
                            REMOTE_SEQ.0 as u32 + 1 + 5500 + offset as u32
                        )),
                        None,
                        None
                    ],
                    ..RECV_TEMPL
                })
            );
        }
    }

    #[test]
    fn test_established_sack_no_overflow_on_near_max_seqnumber() {
        let mut s = socket_established();
        s.remote_has_sack = true;
        s.remote_seq_no = TcpSeqNumber(-4);
        s.remote_last_ack = Some(TcpSeqNumber(-4));

        // Send an out-of-order segment 10 bytes past the expected sequence,
        // creating a 10-byte hole at the front of the assembler.
        send!(
            s,
            TcpRepr {
                seq_number: TcpSeqNumber(-4 + 10),
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"AAAAAAAAAA"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(TcpSeqNumber(-4)),
                window_len: 64,
                sack_ranges: [
                    Some(((-4_i32 + 10) as u32, (-4_i32 + 20) as u32,)),
                    None,
                    None,
                ],
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_established_sliding_window_recv() {
        let mut s = socket_established();
        // Update our scaling parameters for a TCP with a scaled buffer.
        assert_eq!(s.rx_buffer.len(), 0);
        s.rx_buffer = SocketBuffer::new(vec![0; 262143]);
        s.assembler = Assembler::new();
        s.remote_win_scale = Some(0);
        s.remote_last_win = 65535;
        s.remote_win_shift = 2;

        // Create a TCP segment that will mostly fill an IP frame.
        let mut segment: Vec<u8> = Vec::with_capacity(1400);
        for _ in 0..100 {
            segment.extend_from_slice(b"abcdefghijklmn")
        }
        assert_eq!(segment.len(), 1400);

        // Send the frame
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &segment,
                ..SEND_TEMPL
            }
        );

        // Ensure that the received window size is shifted right by 2.
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1400),
                window_len: 65185,
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_send() {
        let mut s = socket_established();
        // First roundtrip after establishing.
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.tx_buffer.len(), 6);
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.tx_buffer.len(), 0);
        // Second roundtrip.
        s.send_slice(b"foobar").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"foobar"[..],
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 6),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.tx_buffer.len(), 0);
    }

    #[test]
    fn test_established_send_no_ack_send() {
        let mut s = socket_established();
        s.set_nagle_enabled(false);
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        s.send_slice(b"foobar").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"foobar"[..],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_send_buf_gt_win() {
        let mut data = [0; 32];
        for (i, elem) in data.iter_mut().enumerate() {
            *elem = i as u8
        }

        let mut s = socket_established();
        s.remote_win_len = 16;
        s.send_slice(&data[..]).unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &data[0..16],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_send_window_shrink() {
        let mut s = socket_established();

        // 6 octets fit on the remote side's window, so we send them.
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.tx_buffer.len(), 6);

        println!(
            "local_seq_no={} remote_win_len={} remote_last_seq={}",
            s.local_seq_no, s.remote_win_len, s.remote_last_seq
        );

        // - Peer doesn't ack them yet
        // - Sends data so we need to reply with an ACK
        // - ...AND and sends a window announcement that SHRINKS the window, so data we've
        //   previously sent is now outside the window. Yes, this is allowed by TCP.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 3,
                payload: &b"xyzxyz"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.tx_buffer.len(), 6);

        println!(
            "local_seq_no={} remote_win_len={} remote_last_seq={}",
            s.local_seq_no, s.remote_win_len, s.remote_last_seq
        );

        // More data should not get sent since it doesn't fit in the window
        s.send_slice(b"foobar").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 64 - 6,
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_receive_partially_outside_window() {
        let mut s = socket_established();

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );

        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();

        // Peer decides to retransmit (perhaps because the ACK was lost)
        // and also pushed data.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );

        s.recv(|data| {
            assert_eq!(data, b"def");
            (3, ())
        })
        .unwrap();
    }

    #[test]
    fn test_established_receive_partially_outside_window_fin() {
        let mut s = socket_established();

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );

        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();

        // Peer decides to retransmit (perhaps because the ACK was lost)
        // and also pushed data, and sent a FIN.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                control: TcpControl::Fin,
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );

        s.recv(|data| {
            assert_eq!(data, b"def");
            (3, ())
        })
        .unwrap();

        // We should accept the FIN, because even though the last packet was partially
        // outside the receive window, there is no hole after adding its data to the assembler.
        assert_eq!(s.state, State::CloseWait);
    }

    #[test]
    fn test_established_send_wrap() {
        let mut s = socket_established();
        let local_seq_start = TcpSeqNumber(i32::MAX - 1);
        s.local_seq_no = local_seq_start + 1;
        s.remote_last_seq = local_seq_start + 1;
        s.send_slice(b"abc").unwrap();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: local_seq_start + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_established_no_ack() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
    }

    #[test]
    fn test_established_bad_ack() {
        let mut s = socket_established();
        // Already acknowledged data.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(TcpSeqNumber(LOCAL_SEQ.0 - 1)),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.local_seq_no, LOCAL_SEQ + 1);
        // Data not yet transmitted.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 10),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.local_seq_no, LOCAL_SEQ + 1);
    }

    #[test]
    fn test_established_bad_seq() {
        let mut s = socket_established();
        // Data outside of receive window.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.remote_seq_no, REMOTE_SEQ + 1);

        // Challenge ACKs are rate-limited, we don't get a second one immediately.
        send!(
            s,
            time 100,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );

        // If we wait a bit, we do get a new one.
        send!(
            s,
            time 2000,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.remote_seq_no, REMOTE_SEQ + 1);
    }

    #[test]
    fn test_old_data_ack_not_rate_limited() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            }]
        );
        s.recv(|data| {
            assert_eq!(data, b"abcdef");
            (6, ())
        })
        .unwrap();
        // The remote retransmits data we already acknowledged, e.g. because
        // the ACK above was lost. Each retransmission must elicit a duplicate
        // ACK, even within the challenge ACK rate limit window: withholding it
        // strands the remote in retransmission backoff.
        send!(
            s,
            time 100,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                ..RECV_TEMPL
            })
        );
        send!(
            s,
            time 200,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_bad_seq_rst_dropped_silently() {
        let mut s = socket_established();
        // Out-of-window RSTs are silently dropped, per RFC 9293 (3.10.7.4)
        // and RFC 5961 (3.2): no challenge ACK, no state change.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);

        // A payload doesn't make it eligible for the data segment exemption
        // from challenge ACK rate limiting either: still no reply.
        send!(
            s,
            time 100,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
    }

    #[test]
    fn test_bad_seq_syn_with_data_rate_limited() {
        let mut s = socket_established();
        // An out-of-window SYN carrying data must not be exempt from challenge
        // ACK rate limiting: RFC 5961 (4.2) says challenge ACKs sent in
        // response to SYNs should be throttled.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );

        // The second one within the rate limit window gets no reply.
        send!(
            s,
            time 100,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ + 1 + 256,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
    }

    #[test]
    fn test_established_options_reduce_payload_when_local_mss_limited() {
        const EFFECTIVE_MSS: usize = 64;

        // construct socket where remote MSS is less than local MSS
        let mut s = socket_established();
        s.set_tsval_generator(Some(|| 1));
        s.remote_mss = EFFECTIVE_MSS;

        // Payload should contain 12 bytes less due to timestamp
        s.send_slice(&[0; EFFECTIVE_MSS]).unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &[0; EFFECTIVE_MSS - 12],
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_options_reduce_payload_when_remote_mss_limited() {
        const EFFECTIVE_MSS: usize = BASE_MSS as usize;

        // construct socket where remote MSS is more than local MSS
        let mut s = socket_established_with_buffer_sizes(EFFECTIVE_MSS, 64);
        s.set_tsval_generator(Some(|| 1));
        s.remote_mss = 9999;
        s.remote_win_len = 9999;

        // Payload should contain 12 bytes less due to timestamp
        s.send_slice(&[0; EFFECTIVE_MSS]).unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &[0; EFFECTIVE_MSS - 12],
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_tiny_mss_with_options_makes_progress() {
        // Connect with timestamps enabled to a remote advertising an absurdly
        // small MSS. Without the MIN_SND_MSS clamp, an MSS smaller than the
        // options length would result in an effective MSS of zero, sending
        // empty segments in a loop without ever making progress.
        let mut s = socket();
        s.set_tsval_generator(Some(|| 1));
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(10),
                window_scale: Some(0),
                timestamp: Some(TcpTimestampRepr::new(500, 1)),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.remote_mss, MIN_REMOTE_MSS);

        s.send_slice(&[0; 64]).unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &[0; MIN_REMOTE_MSS - 12],
                timestamp: Some(TcpTimestampRepr::new(1, 500)),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_fin() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::CloseWait);
        sanity!(s, socket_close_wait());
    }

    #[test]
    fn test_established_fin_after_missing() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"123456"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.state, State::Established);
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6 + 6 + 1),
                window_len: 52,
                ..RECV_TEMPL
            })
        );
        // zt patch: the FIN that came ahead of the missing data was held, and takes effect
        // with the data (upstream forgot it and stayed in ESTABLISHED until the sender's
        // retransmission timeout).
        assert_eq!(s.state, State::CloseWait);
    }

    #[test]
    fn test_established_fin_held_until_every_hole_fills() {
        let mut s = socket_established();
        // "abc" missing, "def" here, "ghi" missing, "jkl" with the FIN here.
        for (off, data, fin) in [(3, &b"def"[..], false), (9, &b"jkl"[..], true)] {
            let _ = send(
                &mut s,
                Instant::from_millis(0),
                &TcpRepr {
                    control: if fin {
                        TcpControl::Fin
                    } else {
                        TcpControl::None
                    },
                    seq_number: REMOTE_SEQ + 1 + off,
                    ack_number: Some(LOCAL_SEQ + 1),
                    payload: data,
                    ..SEND_TEMPL
                },
            );
        }
        let _ = send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.state, State::Established, "a hole is left before the FIN");
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"ghi"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 12 + 1),
                window_len: 52,
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.state, State::CloseWait);
        s.recv(|data| {
            assert_eq!(data, b"abcdefghijkl");
            (12, ())
        })
        .unwrap();
        assert!(!s.may_recv());
    }

    #[test]
    fn test_established_bare_fin_held() {
        let mut s = socket_established();
        // A FIN without data, ahead of the last three octets.
        let _ = send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1 + 3,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.state, State::Established);
        let _ = send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            },
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3 + 1),
                window_len: 61,
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::CloseWait);
    }

    #[test]
    fn test_fin_wait_1_held_fin() {
        let mut s = socket_fin_wait_1();
        let _ = send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1 + 3,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"def"[..],
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.state, State::FinWait1);
        let _ = send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.state, State::Closing);
    }

    #[test]
    fn test_established_send_fin() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::CloseWait);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_rst() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_established_rst_no_ack() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_established_close() {
        let mut s = socket_established();
        s.close();
        assert_eq!(s.state, State::FinWait1);
        sanity!(s, socket_fin_wait_1());
    }

    #[test]
    fn test_established_abort() {
        let mut s = socket_established();
        s.abort();
        assert_eq!(s.state, State::Closed);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Rst,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_established_rst_bad_seq() {
        let mut s = socket_established();
        // Out-of-window RSTs are dropped silently, per RFC 9293 (3.10.7.4)
        // and RFC 5961 (3.2).
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ, // Wrong seq
                ack_number: None,
                ..SEND_TEMPL
            }
        );

        assert_eq!(s.state, State::Established);

        // An in-window RST still resets the connection.
        send!(
            s,
            time 2000,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1, // Correct seq
                ack_number: None,
                ..SEND_TEMPL
            }
        );

        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_established_bad_seq_challenge_ack_updated() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ, // Wrong seq
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );

        assert_eq!(s.state, State::Established);

        // Send something to advance seq by 1
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1, // correct seq
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"a"[..],
                ..SEND_TEMPL
            }
        );

        // Send the wrong seq again, check that the challenge ack is correctly updated
        // The ack number must be updated even if we don't call dispatch on the socket
        // See https://github.com/smoltcp-rs/smoltcp/issues/338
        send!(
            s,
            time 2000,
            TcpRepr {
                seq_number: REMOTE_SEQ, // Wrong seq
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 2), // this has changed
                window_len: 63,
                ..RECV_TEMPL
            })
        );
    }

    // =========================================================================================//
    // Tests for the FIN-WAIT-1 state.
    // =========================================================================================//

    #[test]
    fn test_fin_wait_1_fin_ack() {
        let mut s = socket_fin_wait_1();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::FinWait2);
        sanity!(s, socket_fin_wait_2());
    }

    #[test]
    fn test_fin_wait_1_fin_fin() {
        let mut s = socket_fin_wait_1();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closing);
        sanity!(s, socket_closing());
    }

    #[test]
    fn test_fin_wait_1_fin_with_data_queued() {
        let mut s = socket_established();
        s.remote_win_len = 6;
        s.send_slice(b"abcdef123456").unwrap();
        s.close();
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            })
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::FinWait1);
    }

    #[test]
    fn test_fin_wait_1_recv() {
        let mut s = socket_fin_wait_1();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::FinWait1);
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
    }

    #[test]
    fn test_fin_wait_1_close() {
        let mut s = socket_fin_wait_1();
        s.close();
        assert_eq!(s.state, State::FinWait1);
    }

    // =========================================================================================//
    // Tests for the FIN-WAIT-2 state.
    // =========================================================================================//

    #[test]
    fn test_fin_wait_2_fin() {
        let mut s = socket_fin_wait_2();
        send!(s, time 1_000, TcpRepr {
            control: TcpControl::Fin,
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 1),
            ..SEND_TEMPL
        });
        assert_eq!(s.state, State::TimeWait);
        sanity!(s, socket_time_wait(false));
    }

    #[test]
    fn test_fin_wait_2_recv() {
        let mut s = socket_fin_wait_2();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::FinWait2);
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_fin_wait_2_close() {
        let mut s = socket_fin_wait_2();
        s.close();
        assert_eq!(s.state, State::FinWait2);
    }

    // =========================================================================================//
    // Tests for the CLOSING state.
    // =========================================================================================//

    #[test]
    fn test_closing_ack_fin() {
        let mut s = socket_closing();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        send!(s, time 1_000, TcpRepr {
            seq_number: REMOTE_SEQ + 1 + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 1),
            ..SEND_TEMPL
        });
        assert_eq!(s.state, State::TimeWait);
        sanity!(s, socket_time_wait(true));
    }

    #[test]
    fn test_closing_close() {
        let mut s = socket_closing();
        s.close();
        assert_eq!(s.state, State::Closing);
    }

    // =========================================================================================//
    // Tests for the TIME-WAIT state.
    // =========================================================================================//

    #[test]
    fn test_time_wait_from_fin_wait_2_ack() {
        let mut s = socket_time_wait(false);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_time_wait_from_closing_no_ack() {
        let mut s = socket_time_wait(true);
        recv!(s, []);
    }

    #[test]
    fn test_time_wait_close() {
        let mut s = socket_time_wait(false);
        s.close();
        assert_eq!(s.state, State::TimeWait);
    }

    #[test]
    fn test_time_wait_retransmit() {
        let mut s = socket_time_wait(false);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        send!(s, time 5_000, TcpRepr {
            control: TcpControl::Fin,
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 1),
            ..SEND_TEMPL
        }, Some(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 1),
            ..RECV_TEMPL
        }));
        assert_eq!(
            s.timer,
            Timer::Close {
                expires_at: Instant::from_secs(5) + CLOSE_DELAY
            }
        );
    }

    #[test]
    fn test_time_wait_timeout() {
        let mut s = socket_time_wait(false);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::TimeWait);
        recv_nothing!(s, time 60_000);
        assert_eq!(s.state, State::Closed);
    }

    // =========================================================================================//
    // Tests for the CLOSE-WAIT state.
    // =========================================================================================//

    #[test]
    fn test_close_wait_ack() {
        let mut s = socket_close_wait();
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6),
                ..SEND_TEMPL
            }
        );
    }

    #[test]
    fn test_close_wait_close() {
        let mut s = socket_close_wait();
        s.close();
        assert_eq!(s.state, State::LastAck);
        sanity!(s, socket_last_ack());
    }

    // =========================================================================================//
    // Tests for the LAST-ACK state.
    // =========================================================================================//
    #[test]
    fn test_last_ack_fin_ack() {
        let mut s = socket_last_ack();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::LastAck);
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_last_ack_ack_not_of_fin() {
        let mut s = socket_last_ack();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::LastAck);

        // A duplicate ACK (ack_number == SND.UNA, not the FIN ACK) must elicit a
        // challenge ACK per RFC 9293 §3.10.7.4 and must keep the state in LAST-ACK.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.state, State::LastAck);

        // ACK received of fin: socket should change to Closed.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    // RFC 9293 §3.10.7.4: duplicate ACK in LAST-ACK must elicit a challenge ACK,
    // not be silently dropped.
    #[test]
    fn test_last_ack_duplicate_ack_challenge_ack() {
        let mut s = socket_last_ack();
        // Trigger dispatch so our FIN is sent and remote_last_seq advances.
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::LastAck);

        // Remote re-sends an ACK for SND.UNA (not the FIN).  RFC 9293 requires a
        // challenge ACK in response so the remote can learn the current state.
        let challenge = send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
        );
        assert_eq!(
            challenge,
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }),
            "expected challenge ACK in response to duplicate ACK in LAST-ACK"
        );
        // State must remain LAST-ACK: we have not received the FIN ACK.
        assert_eq!(s.state, State::LastAck);

        // A second duplicate in the same second is rate-limited; the FIN ACK
        // must still be correctly accepted regardless.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    // A partial ACK in LAST-ACK (ack_len > 0 but not FIN ACK) advances SND.UNA
    // without a challenge ACK; the FIN will be retransmitted by the timer.
    #[test]
    fn test_last_ack_partial_ack_no_challenge_ack() {
        // Build a LAST-ACK socket that has one byte of data still unacknowledged
        // before the FIN.  We manually wire the state so we can send a partial ACK.
        let mut s = socket_last_ack();
        // Push one byte into the tx buffer to simulate data that preceded the FIN.
        let _ = s.tx_buffer.enqueue_slice(b"x");
        // Mark it as already sent (remote_last_seq is past the data byte and the FIN).
        s.remote_last_seq = LOCAL_SEQ + 1 + 1 + 1; // data(1) + FIN(1)

        // Remote ACKs just the data byte, not the FIN (partial ACK).
        // ack_number = local_seq_no + 1  =>  ack_len = 1, ack_of_fin = false.
        // Per RFC 9293, a valid partial ACK should advance SND.UNA normally;
        // no challenge ACK should be emitted.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1), // acks the data byte, not FIN
                ..SEND_TEMPL
            }
        );
        // State remains LAST-ACK; FIN retransmission is handled by the timer.
        assert_eq!(s.state, State::LastAck);
        // SND.UNA has advanced to the partial ACK number.
        assert_eq!(s.local_seq_no, LOCAL_SEQ + 1 + 1);
    }

    #[test]
    fn test_last_ack_close() {
        let mut s = socket_last_ack();
        s.close();
        assert_eq!(s.state, State::LastAck);
    }

    // =========================================================================================//
    // Tests for transitioning through multiple states.
    // =========================================================================================//

    #[test]
    fn test_listen() {
        let mut s = socket();
        s.listen(LISTEN_END).unwrap();
        assert_eq!(s.state, State::Listen);
    }

    #[test]
    fn test_three_way_handshake() {
        let mut s = socket_listen();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::SynReceived);
        assert_eq!(s.tuple, Some(TUPLE));
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::Established);
        assert_eq!(s.local_seq_no, LOCAL_SEQ + 1);
        assert_eq!(s.remote_seq_no, REMOTE_SEQ + 1);
    }

    #[test]
    fn test_remote_close() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::CloseWait);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        s.close();
        assert_eq!(s.state, State::LastAck);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_local_close() {
        let mut s = socket_established();
        s.close();
        assert_eq!(s.state, State::FinWait1);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::FinWait2);
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_simultaneous_close() {
        let mut s = socket_established();
        s.close();
        assert_eq!(s.state, State::FinWait1);
        recv!(
            s,
            [TcpRepr {
                // due to reordering, this is logically located...
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closing);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        // ... at this point
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);
        recv!(s, []);
    }

    #[test]
    fn test_simultaneous_close_combined_fin_ack() {
        let mut s = socket_established();
        s.close();
        assert_eq!(s.state, State::FinWait1);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_simultaneous_close_raced() {
        let mut s = socket_established();
        s.close();
        assert_eq!(s.state, State::FinWait1);

        // Socket receives FIN before it has a chance to send its own FIN
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closing);

        // FIN + ack-of-FIN
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::Closing);

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);
        recv!(s, []);
    }

    #[test]
    fn test_simultaneous_close_raced_with_data() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        s.close();
        assert_eq!(s.state, State::FinWait1);

        // Socket receives FIN before it has a chance to send its own data+FIN
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closing);

        // data + FIN + ack-of-FIN
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::Closing);

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);
        recv!(s, []);
    }

    #[test]
    fn test_fin_with_data() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        s.close();
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        )
    }

    #[test]
    fn test_mutual_close_with_data_1() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        s.close();
        assert_eq!(s.state, State::FinWait1);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 1),
                ..SEND_TEMPL
            }
        );
    }

    #[test]
    fn test_mutual_close_with_data_2() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        s.close();
        assert_eq!(s.state, State::FinWait1);
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::FinWait2);
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 1),
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6 + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 1),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.state, State::TimeWait);
    }

    // =========================================================================================//
    // Tests for retransmission on packet loss.
    // =========================================================================================//

    #[test]
    fn test_duplicate_seq_ack() {
        let mut s = socket_recved();
        // remote retransmission
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_data_retransmit() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
        recv_nothing!(s, time 1050);
        recv!(s, time 2000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    #[cfg(feature = "socket-tcp-reno")]
    fn test_congestion_window_limits_data_in_flight() {
        let mut s = socket_established_with_buffer_sizes(16384, 64);
        s.set_congestion_control(CongestionControl::Reno);
        s.remote_win_len = 65535;
        s.remote_mss = 1024;
        s.congestion_controller.inner_mut().set_mss(1024);

        let data = [b'x'; 16384];
        s.send_slice(&data[..]).unwrap();

        // zt patch: the initial congestion window is ten segments (RFC 6928, as Linux):
        // ten 1024-byte segments may be in flight, the rest must wait for ACKs.
        for i in 0..10 {
            recv!(s, time 0, Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + i * 1024,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &data[..1024],
                ..RECV_TEMPL
            }));
        }
        recv_nothing!(s, time 0);

        // ACKing one segment frees congestion window space and grows
        // cwnd (slow start), allowing two further segments out.
        send!(s, time 10, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 1024),
            window_len: 65535,
            ..SEND_TEMPL
        });
        for i in 10..12 {
            recv!(s, time 10, Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + i * 1024,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &data[..1024],
                ..RECV_TEMPL
            }));
        }
        recv_nothing!(s, time 10);
    }

    #[test]
    #[cfg(feature = "socket-tcp-reno")]
    fn test_congestion_window_doesnt_limit_fast_retransmit() {
        let mut s = socket_established_with_buffer_sizes(16384, 64);
        s.set_congestion_control(CongestionControl::Reno);
        s.remote_win_len = 65535;
        s.remote_mss = 1024;
        s.congestion_controller.inner_mut().set_mss(1024);

        // Normal ACK of previously received segment
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 65535,
            ..SEND_TEMPL
        });

        let data = [b'x'; 16384];
        s.send_slice(&data[..]).unwrap();

        // zt patch: the initial congestion window is ten segments
        for i in 0..10 {
            recv!(s, time 0, Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + i * 1024,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &data[..1024],
                ..RECV_TEMPL
            }));
        }
        recv_nothing!(s, time 0);

        // Send three duplicate ACKS, treating the first segment as lost
        send!(s, time 10, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 65535,
            ..SEND_TEMPL
        });
        send!(s, time 10, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 65535,
            ..SEND_TEMPL
        });
        send!(s, time 10, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 65535,
            ..SEND_TEMPL
        });

        // A fast retrnasmit should be sent and not be blocked by congestion control
        recv!(s, time 20, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &data[..1024],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_data_retransmit_bursts() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef012345").unwrap();

        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);
        recv_nothing!(s, time 0);

        recv_nothing!(s, time 50);

        recv!(s, time 1000, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 1500, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);
        recv_nothing!(s, time 1550);
    }

    #[test]
    fn test_data_retransmit_bursts_half_ack() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef012345").unwrap();

        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);
        // Acknowledge the first packet
        send!(s, time 5, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        // The second packet should be re-sent.
        recv!(s, time 1500, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);

        recv_nothing!(s, time 1550);
    }

    #[test]
    fn test_retransmit_timer_restart_on_partial_ack() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef012345").unwrap();

        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);
        // Acknowledge the first packet
        send!(s, time 600, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        // The ACK of the first packet should restart the retransmit timer and delay a retransmission.
        recv_nothing!(s, time 2399);
        // The second packet should be re-sent.
        recv!(s, time 2400, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);
    }

    #[test]
    fn test_data_retransmit_bursts_half_ack_close() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef012345").unwrap();
        s.close();

        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);
        // Acknowledge the first packet
        send!(s, time 5, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        // The second packet should be re-sent.
        recv!(s, time 1500, Ok(TcpRepr {
            control:    TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"012345"[..],
            ..RECV_TEMPL
        }), exact);

        recv_nothing!(s, time 1550);
    }

    #[test]
    fn test_send_data_after_syn_ack_retransmit() {
        let mut s = socket_syn_received();
        recv!(s, time 50, Ok(TcpRepr {
            control:    TcpControl::Syn,
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            max_seg_size: Some(BASE_MSS),
            ..RECV_TEMPL
        }));
        recv!(s, time 1050, Ok(TcpRepr { // retransmit
            control:    TcpControl::Syn,
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            max_seg_size: Some(BASE_MSS),
            ..RECV_TEMPL
        }));
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::Established);
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        )
    }

    #[test]
    fn test_established_retransmit_for_dup_ack() {
        let mut s = socket_established();
        // Duplicate ACKs do not replace the retransmission timer
        s.send_slice(b"abc").unwrap();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));
        // Retransmit timer is on because all data was sent
        assert_eq!(s.tx_buffer.len(), 3);
        // ACK nothing new
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // Retransmit
        recv!(s, time 4000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_established_retransmit_reset_after_ack() {
        let mut s = socket_established();
        s.remote_win_len = 6;
        s.send_slice(b"abcdef").unwrap();
        s.send_slice(b"123456").unwrap();
        s.send_slice(b"ABCDEF").unwrap();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
        send!(s, time 1005, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        recv!(s, time 1010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"123456"[..],
            ..RECV_TEMPL
        }));
        send!(s, time 1015, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        recv!(s, time 1020, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"ABCDEF"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_established_queue_during_retransmission() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef123456ABCDEF").unwrap();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        })); // this one is dropped
        recv!(s, time 1005, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"123456"[..],
            ..RECV_TEMPL
        })); // this one is received
        recv!(s, time 1010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"ABCDEF"[..],
            ..RECV_TEMPL
        })); // also dropped
        recv!(s, time 3000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        })); // retransmission
        send!(s, time 3005, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6 + 6),
            ..SEND_TEMPL
        }); // acknowledgement of both segments
        recv!(s, time 3010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"ABCDEF"[..],
            ..RECV_TEMPL
        })); // retransmission of only unacknowledged data
    }

    #[test]
    fn test_close_wait_retransmit_reset_after_ack() {
        let mut s = socket_close_wait();
        s.remote_win_len = 6;
        s.send_slice(b"abcdef").unwrap();
        s.send_slice(b"123456").unwrap();
        s.send_slice(b"ABCDEF").unwrap();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
        send!(s, time 1005, TcpRepr {
            seq_number: REMOTE_SEQ + 1 + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        recv!(s, time 1010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1 + 1),
            payload:    &b"123456"[..],
            ..RECV_TEMPL
        }));
        send!(s, time 1015, TcpRepr {
            seq_number: REMOTE_SEQ + 1 + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        recv!(s, time 1020, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6 + 6,
            ack_number: Some(REMOTE_SEQ + 1 + 1),
            payload:    &b"ABCDEF"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_fin_wait_1_retransmit_reset_after_ack() {
        let mut s = socket_established();
        s.remote_win_len = 6;
        s.send_slice(b"abcdef").unwrap();
        s.send_slice(b"123456").unwrap();
        s.send_slice(b"ABCDEF").unwrap();
        s.close();
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
        send!(s, time 1005, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        recv!(s, time 1010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"123456"[..],
            ..RECV_TEMPL
        }));
        send!(s, time 1015, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6 + 6),
            window_len: 6,
            ..SEND_TEMPL
        });
        recv!(s, time 1020, Ok(TcpRepr {
            control:    TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1 + 6 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"ABCDEF"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_fast_retransmit_after_triple_duplicate_ack() {
        let mut s = socket_established();
        s.remote_mss = 3;

        // Normal ACK of previously received segment
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });

        // Send a long string of text divided into several packets
        // because of previously received "window_len"
        s.send_slice(b"aaaBBBcccDDDeeeFFF").unwrap();

        // This packet is lost
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"aaa"[..],
            ..RECV_TEMPL
        }));

        // These packets arrive
        recv!(s, time 1005, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 3,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"BBB"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + (3 * 2),
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"ccc"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1015, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + (3 * 3),
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"DDD"[..],
            ..RECV_TEMPL
        }));

        // Duplicate ACKs trigger fast rentramsit after 3rd successive one
        send!(s, time 1050, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        send!(s, time 1055, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        send!(s, time 1060, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });

        // Fast retransmit should have triggered
        recv!(s, time 1100, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"aaa"[..],
            ..RECV_TEMPL
        }));

        // Transmission should continue as normal after re-transitting the first segment
        recv!(s, time 1105, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + (3 * 4),
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"eee"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1110, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + (3 * 5),
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"FFF"[..],
            ..RECV_TEMPL
        }));

        // ACK all received segments
        send!(s, time 1120, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + (3 * 5)),
            ..SEND_TEMPL
        });
    }

    #[test]
    fn test_fast_retransmit_duplicate_detection_with_data() {
        let mut s = socket_established();

        s.send_slice(b"abc").unwrap(); // This is lost
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));

        // Normal ACK of previously received segment
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // First duplicate
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // Second duplicate
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );

        assert_eq!(s.local_rx_dup_acks, 2, "duplicate ACK counter is not set");

        // This packet has content, hence should not be detected
        // as a duplicate ACK and should reset the duplicate ACK count
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"xxxxxx"[..],
                ..SEND_TEMPL
            }
        );

        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 3,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            }]
        );

        assert_eq!(
            s.local_rx_dup_acks, 0,
            "duplicate ACK counter is not reset when receiving data"
        );
    }

    #[test]
    fn test_fast_retransmit_duplicate_detection_with_window_update() {
        let mut s = socket_established();

        s.send_slice(b"abc").unwrap(); // This is lost
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));

        // Normal ACK of previously received segment
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // First duplicate
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // Second duplicate
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );

        assert_eq!(s.local_rx_dup_acks, 2, "duplicate ACK counter is not set");

        // This packet has a window update, hence should not be detected
        // as a duplicate ACK and should reset the duplicate ACK count
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 400,
                ..SEND_TEMPL
            }
        );

        assert_eq!(
            s.local_rx_dup_acks, 0,
            "duplicate ACK counter is not reset when receiving a window update"
        );
    }

    #[test]
    fn test_fast_retransmit_duplicate_detection() {
        let mut s = socket_established();
        s.remote_mss = 6;

        // Normal ACK of previously received segment
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });

        // First duplicate, should not be counted as there is nothing to resend
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });

        assert_eq!(
            s.local_rx_dup_acks, 0,
            "duplicate ACK counter is set but wound not transmit data"
        );

        // Send a long string of text divided into several packets
        // because of small remote_mss
        s.send_slice(b"xxxxxxyyyyyywwwwwwzzzzzz").unwrap();

        // This packet is reordered in network
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"xxxxxx"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1005, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"yyyyyy"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1010, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + (6 * 2),
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"wwwwww"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1015, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + (6 * 3),
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"zzzzzz"[..],
            ..RECV_TEMPL
        }));

        // First duplicate ACK
        send!(s, time 1050, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        // Second duplicate ACK
        send!(s, time 1055, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        // Reordered packet arrives which should reset duplicate ACK count
        send!(s, time 1060, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + (6 * 3)),
            ..SEND_TEMPL
        });

        assert_eq!(
            s.local_rx_dup_acks, 0,
            "duplicate ACK counter is not reset when receiving ACK which updates send window"
        );

        // ACK all received segments
        send!(s, time 1120, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + (6 * 4)),
            ..SEND_TEMPL
        });
    }

    #[test]
    fn test_fast_retransmit_dup_acks_counter() {
        let mut s = socket_established();

        s.send_slice(b"abc").unwrap(); // This is lost
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));

        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });

        // A lot of retransmits happen here
        s.local_rx_dup_acks = u8::MAX - 1;

        // Send 3 more ACKs, which could overflow local_rx_dup_acks,
        // but intended behaviour is that we saturate the bounds
        // of local_rx_dup_acks
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        send!(s, time 0, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        assert_eq!(
            s.local_rx_dup_acks,
            u8::MAX,
            "duplicate ACK count should not overflow but saturate"
        );
    }

    #[test]
    fn test_fast_retransmit_zero_window() {
        let mut s = socket_established();

        send!(s, time 1000, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });

        s.send_slice(b"abc").unwrap();

        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abc"[..],
            ..RECV_TEMPL
        }));

        // 3 dup acks
        send!(s, time 1050, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        send!(s, time 1050, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        send!(s, time 1050, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 0, // boom
            ..SEND_TEMPL
        });

        // even though we're in "fast retransmit", we shouldn't
        // force-send anything because the remote's window is full.
        recv_nothing!(s);
    }

    #[test]
    fn test_retransmit_exponential_backoff() {
        let mut s = socket_established();
        s.send_slice(b"abcdef").unwrap();
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));

        let expected_retransmission_instant = s.rtte.retransmission_timeout().total_millis() as i64;
        recv_nothing!(s, time expected_retransmission_instant - 1);
        recv!(s, time expected_retransmission_instant, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));

        // "current time" is expected_retransmission_instant, and we want to wait 2 * retransmission timeout
        let expected_retransmission_instant = 3 * expected_retransmission_instant;

        recv_nothing!(s, time expected_retransmission_instant - 1);
        recv!(s, time expected_retransmission_instant, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_thin_flow_timeouts_back_off_only_after_six() {
        for thin in [true, false] {
            let mut s = socket_established();
            s.set_thin_linear_timeouts(thin);
            s.rtte.sample(10_000);
            s.send_slice(b"abcdef").unwrap();
            let seg = TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            };
            recv!(s, time 0, Ok(seg.clone()));
            let rto = s.rtte.retransmission_timeout().total_millis() as i64;
            assert_eq!(rto, 210);
            // Thin (one segment out): the first timeout and six more at the same interval,
            // then the doubling; not thin: doubling from the first.
            let waits: Vec<i64> = if thin {
                [1, 1, 1, 1, 1, 1, 1, 2, 4]
                    .iter()
                    .map(|m| m * rto)
                    .collect()
            } else {
                [1, 2, 4, 8].iter().map(|m| m * rto).collect()
            };
            let mut t = 0;
            for wait in waits {
                t += wait;
                recv_nothing!(s, time t - 1);
                recv!(s, time t, Ok(seg.clone()));
            }
        }
    }

    #[test]
    fn test_flow_of_four_segments_is_not_thin() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.rtte.sample(10_000);
        s.send_slice(b"aaaaaabbbbbbccccccdddddd").unwrap();
        for (i, data) in [b"aaaaaa", b"bbbbbb", b"cccccc", b"dddddd"]
            .iter()
            .enumerate()
        {
            recv!(s, time 0, Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6 * i,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &data[..],
                ..RECV_TEMPL
            }));
        }
        let rto = s.rtte.retransmission_timeout().total_millis() as i64;
        let first = TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"aaaaaa"[..],
            ..RECV_TEMPL
        };
        recv!(s, time rto, Ok(first));
        // Four segments were out when the timer fired: it backs off.
        assert_eq!(
            s.rtte.retransmission_timeout().total_millis() as i64,
            2 * rto
        );
    }

    #[test]
    fn test_data_retransmit_ack_more_than_expected() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"aaaaaabbbbbbcccccc").unwrap();

        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"aaaaaa"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"bbbbbb"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 12,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"cccccc"[..],
            ..RECV_TEMPL
        }));
        recv_nothing!(s, time 0);

        recv_nothing!(s, time 50);

        // retransmit timer expires, we want to retransmit all 3 packets
        // but we only manage to retransmit 2 (due to e.g. lack of device buffer space)
        assert!(s.timer.is_retransmit());
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"aaaaaa"[..],
            ..RECV_TEMPL
        }));
        recv!(s, time 1000, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"bbbbbb"[..],
            ..RECV_TEMPL
        }));

        // ack first packet.
        send!(
            s,
            time 3000,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6),
                ..SEND_TEMPL
            }
        );

        // this should keep retransmit timer on, because there's
        // still unacked data.
        assert!(s.timer.is_retransmit());

        // ack all three packets.
        // This might confuse the TCP stack because after the retransmit
        // it "thinks" the 3rd packet hasn't been transmitted yet, but it is getting acked.
        send!(
            s,
            time 3000,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 18),
                ..SEND_TEMPL
            }
        );

        // this should exit retransmit mode.
        assert!(!s.timer.is_retransmit());
        // and consider all data ACKed.
        assert!(s.tx_buffer.is_empty());
        recv_nothing!(s, time 5000);
    }

    #[test]
    fn test_retransmit_fin() {
        let mut s = socket_established();
        s.close();
        recv!(s, time 0, Ok(TcpRepr {
            control: TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));

        recv_nothing!(s, time 999);
        recv!(s, time 1000, Ok(TcpRepr {
            control: TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_retransmit_fin_wait() {
        let mut s = socket_fin_wait_1();
        // we send FIN
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            }]
        );
        // remote also sends FIN, does NOT ack ours.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // we ack it
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::None,
                seq_number: LOCAL_SEQ + 2,
                ack_number: Some(REMOTE_SEQ + 2),
                ..RECV_TEMPL
            }]
        );

        // we haven't got an ACK for our FIN, we should retransmit.
        recv_nothing!(s, time 999);
        recv!(
            s,
            time 1000,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 2),
                ..RECV_TEMPL
            }]
        );
        recv_nothing!(s, time 2999);
        recv!(
            s,
            time 3000,
            [TcpRepr {
                control: TcpControl::Fin,
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 2),
                ..RECV_TEMPL
            }]
        );
    }

    // =========================================================================================//
    // Tests for window management.
    // =========================================================================================//

    #[test]
    fn test_maximum_segment_size() {
        let mut s = socket_listen();
        s.tx_buffer = SocketBuffer::new(vec![0; 32767]);
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                max_seg_size: Some(1000),
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 32767,
                ..SEND_TEMPL
            }
        );
        s.send_slice(&[0; 1200][..]).unwrap();
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &[0; 1000][..],
                ..RECV_TEMPL
            })
        );
    }

    #[cfg(feature = "segmentation-offload")]
    #[test]
    fn test_segmentation_offload() {
        use crate::tests::segmentation_offload::MAX_SEGMENTABLE_SIZE;
        use crate::wire;

        let (interface, _, _) =
            crate::tests::segmentation_offload::setup_segmenting(crate::phy::Medium::Ip);
        let mut s = TestSocket {
            cx: interface.inner,
            ..socket_listen()
        };
        s.tx_buffer = SocketBuffer::new(vec![0; 2 * MAX_SEGMENTABLE_SIZE]);

        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                window_scale: Some(2),
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: u16::MAX,
                ..SEND_TEMPL
            }
        );

        s.send_slice(&[0; 2 * MAX_SEGMENTABLE_SIZE][..]).unwrap();

        // We want to ensure that the size of the unsegmented packets exceed the
        // maximum allowed by the length field in the IP headers to check if the
        // relevant code incorrectly assumes that the length fits into the
        // field.
        let ip_header_len = match s.local_endpoint().unwrap().addr {
            #[cfg(feature = "proto-ipv4")]
            IpAddress::Ipv4(_) => {
                assert!(MAX_SEGMENTABLE_SIZE > usize::from(u16::MAX));
                wire::IPV4_HEADER_LEN
            }
            #[cfg(feature = "proto-ipv6")]
            IpAddress::Ipv6(_) => {
                assert!(MAX_SEGMENTABLE_SIZE - wire::IPV6_HEADER_LEN > usize::from(u16::MAX));
                wire::IPV6_HEADER_LEN
            }
        };
        let payload = vec![0; MAX_SEGMENTABLE_SIZE - ip_header_len - TCP_HEADER_LEN];
        assert!(
            payload.len() > usize::from(BASE_MSS),
            "the payload is not large enough to require segmentation!"
        );

        recv!(
            s,
            [
                TcpRepr {
                    seq_number: LOCAL_SEQ + 1,
                    ack_number: Some(REMOTE_SEQ + 1),
                    payload: payload.as_slice(),
                    ..RECV_TEMPL
                },
                TcpRepr {
                    seq_number: LOCAL_SEQ + payload.len() + 1,
                    ack_number: Some(REMOTE_SEQ + 1),
                    payload: payload.as_slice(),
                    ..RECV_TEMPL
                }
            ]
        );
    }

    #[test]
    fn test_recv_out_of_recv_win() {
        let mut s = socket_established();
        s.set_ack_delay(Some(ACK_DELAY_DEFAULT));
        s.remote_mss = 32;

        // No ACKs are sent due to the ACK delay.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Psh,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[0; 32],
                ..SEND_TEMPL
            }
        );
        recv_nothing!(s);

        // RMSS+1 bytes of data has been received, so ACK is sent without delay.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Psh,
                seq_number: REMOTE_SEQ + 33,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[0; 1],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 34),
                window_len: 31,
                ..RECV_TEMPL
            })
        );

        // This frees up a byte in the receive buffer. However, the remote shouldn't be aware of
        // this since no ACKs are sent.
        s.recv_slice(&mut [0; 1]).unwrap();
        recv_nothing!(s);

        // Now, if the remote wants to send one byte outside of the receive window that we
        // previously advertised, it should not succeed.
        send!(
            s,
            TcpRepr {
                control: TcpControl::Psh,
                seq_number: REMOTE_SEQ + 34,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[0; 32],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 65),
                window_len: 1, // The last byte isn't accepted.
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_close_wait_no_window_update() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[1, 2, 3, 4],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::CloseWait);

        // we ack the FIN, with the reduced window size.
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 6),
                window_len: 60,
                ..RECV_TEMPL
            })
        );

        let rx_buf = &mut [0; 32];
        assert_eq!(s.recv_slice(rx_buf), Ok(4));

        // check that we do NOT send a window update even if it has changed.
        recv_nothing!(s);
    }

    #[test]
    fn test_time_wait_no_window_update() {
        let mut s = socket_fin_wait_2();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 2),
                payload: &[1, 2, 3, 4],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);

        // we ack the FIN, with the reduced window size.
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 2,
                ack_number: Some(REMOTE_SEQ + 6),
                window_len: 60,
                ..RECV_TEMPL
            })
        );

        let rx_buf = &mut [0; 32];
        assert_eq!(s.recv_slice(rx_buf), Ok(4));

        // check that we do NOT send a window update even if it has changed.
        recv_nothing!(s);
    }

    // =========================================================================================//
    // Tests for flow control.
    // =========================================================================================//

    #[test]
    fn test_psh_transmit() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef").unwrap();
        s.send_slice(b"123456").unwrap();
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::Psh,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"123456"[..],
            ..RECV_TEMPL
        }), exact);
    }

    #[test]
    fn test_psh_receive() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Psh,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_zero_window_ack() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"123456"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_zero_window_ack_not_rate_limited() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"123456"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            })
        );
        // The remote retransmits into the zero window again within a second,
        // e.g. because the ACK above was lost. The ACK must not be withheld by
        // challenge ACK rate limiting: it is the remote's only way to learn
        // the window state, and a data segment cannot cause an ACK loop.
        send!(
            s,
            time 100,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"123456"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_zero_window_fin() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();
        s.ack_delay = None;

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            }]
        );

        // Even though the sequence space for the FIN itself is outside the window,
        // it is not data, so FIN must be accepted when window full.
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[],
                control: TcpControl::Fin,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::CloseWait);

        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 7),
                window_len: 0,
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_zero_window_ack_on_window_growth() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 0,
                ..RECV_TEMPL
            }]
        );
        recv_nothing!(s, time 0);
        s.recv(|buffer| {
            assert_eq!(&buffer[..3], b"abc");
            (3, ())
        })
        .unwrap();
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 6),
            window_len: 3,
            ..RECV_TEMPL
        }));
        recv_nothing!(s, time 0);
        s.recv(|buffer| {
            assert_eq!(buffer, b"def");
            (buffer.len(), ())
        })
        .unwrap();
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 6),
            window_len: 6,
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_window_update_with_delay_ack() {
        let mut s = socket_established_with_buffer_sizes(6, 6);
        s.ack_delay = Some(Duration::from_millis(10));

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            }
        );

        recv_nothing!(s, time 5);

        s.recv(|buffer| {
            assert_eq!(&buffer[..2], b"ab");
            (2, ())
        })
        .unwrap();
        recv!(
            s,
            time 5,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 2,
                ..RECV_TEMPL
            })
        );

        s.recv(|buffer| {
            assert_eq!(&buffer[..1], b"c");
            (1, ())
        })
        .unwrap();
        recv_nothing!(s, time 5);

        s.recv(|buffer| {
            assert_eq!(&buffer[..1], b"d");
            (1, ())
        })
        .unwrap();
        recv!(
            s,
            time 5,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 4,
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_fill_peer_window() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef123456!@#$%^").unwrap();
        recv!(
            s,
            [
                TcpRepr {
                    seq_number: LOCAL_SEQ + 1,
                    ack_number: Some(REMOTE_SEQ + 1),
                    payload: &b"abcdef"[..],
                    ..RECV_TEMPL
                },
                TcpRepr {
                    seq_number: LOCAL_SEQ + 1 + 6,
                    ack_number: Some(REMOTE_SEQ + 1),
                    payload: &b"123456"[..],
                    ..RECV_TEMPL
                },
                TcpRepr {
                    seq_number: LOCAL_SEQ + 1 + 6 + 6,
                    ack_number: Some(REMOTE_SEQ + 1),
                    payload: &b"!@#$%^"[..],
                    ..RECV_TEMPL
                }
            ]
        );
    }

    #[test]
    fn test_announce_window_after_read() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                window_len: 3,
                ..RECV_TEMPL
            }]
        );
        // Test that `dispatch` updates `remote_last_win`
        assert_eq!(s.remote_last_win, s.rx_buffer.window() as u16);
        s.recv(|buffer| (buffer.len(), ())).unwrap();
        assert!(s.window_to_update());
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                window_len: 6,
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.remote_last_win, s.rx_buffer.window() as u16);
        // Provoke immediate ACK to test that `process` updates `remote_last_win`
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"def"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                window_len: 6,
                ..RECV_TEMPL
            })
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 3,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 9),
                window_len: 0,
                ..RECV_TEMPL
            })
        );
        assert_eq!(s.remote_last_win, s.rx_buffer.window() as u16);
        s.recv(|buffer| (buffer.len(), ())).unwrap();
        assert!(s.window_to_update());
    }

    // =========================================================================================//
    // Tests for zero-window probes.
    // =========================================================================================//

    #[test]
    fn test_zero_window_probe_enter_on_win_update() {
        let mut s = socket_established();

        assert!(!s.timer.is_zero_window_probe());

        s.send_slice(b"abcdef123456!@#$%^").unwrap();

        assert!(!s.timer.is_zero_window_probe());

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        assert!(s.timer.is_zero_window_probe());
    }

    #[test]
    fn test_zero_window_probe_enter_on_send() {
        let mut s = socket_established();

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        assert!(!s.timer.is_zero_window_probe());

        s.send_slice(b"abcdef123456!@#$%^").unwrap();

        assert!(s.timer.is_zero_window_probe());
    }

    #[test]
    fn test_zero_window_probe_exit() {
        let mut s = socket_established();

        s.send_slice(b"abcdef123456!@#$%^").unwrap();

        assert!(!s.timer.is_zero_window_probe());

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        assert!(s.timer.is_zero_window_probe());

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 6,
                ..SEND_TEMPL
            }
        );

        assert!(!s.timer.is_zero_window_probe());
    }

    #[test]
    fn test_zero_window_probe_exit_ack() {
        let mut s = socket_established();

        s.send_slice(b"abcdef123456!@#$%^").unwrap();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        recv!(
            s,
            time 1000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );

        send!(
            s,
            time 1010,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 2),
                window_len: 6,
                ..SEND_TEMPL
            }
        );

        recv!(
            s,
            time 1010,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 2,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"bcdef1"[..],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    #[cfg(feature = "socket-tcp-reno")]
    fn test_zero_window_probe_not_capped_by_cwnd() {
        let mut s = socket_established_with_buffer_sizes(16384, 64);
        s.set_congestion_control(CongestionControl::Reno);
        s.remote_win_len = 65535;
        s.remote_mss = 1024;
        s.congestion_controller.inner_mut().set_mss(1024);

        let data = [b'x'; 12288];
        s.send_slice(&data[..]).unwrap();

        // zt patch: the initial cwnd is ten segments: they fill the congestion window
        // exactly, leaving cwnd_remaining() == 0.
        for i in 0..10 {
            recv!(s, time 0, Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + i * 1024,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &data[..1024],
                ..RECV_TEMPL
            }));
        }
        recv_nothing!(s, time 0);

        // The remote closes its window without acknowledging anything new, so
        // no congestion window space is freed either.
        send!(s, time 10, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            window_len: 0,
            ..SEND_TEMPL
        });

        // Arm the probe timer. (Set directly because the ACK above carries no
        // new data; in real traffic this state is reached e.g. when the
        // controller shrinks cwnd below the flight size while probing.)
        s.timer
            .set_for_zero_window_probe(Instant::from_millis(10), Duration::from_millis(100));

        // The probe must carry 1 byte of data past the window edge even though
        // the congestion window is exhausted: an empty probe occupies no
        // sequence space and elicits no reply, so the connection would stall
        // if the remote's window update got lost.
        recv!(s, time 110, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 10240,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &data[..1],
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_zero_window_probe_backoff_nack_reply() {
        let mut s = socket_established();
        s.send_slice(b"abcdef123456!@#$%^").unwrap();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        recv_nothing!(s, time 999);
        recv!(
            s,
            time 1000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            time 1100,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        recv_nothing!(s, time 2999);
        recv!(
            s,
            time 3000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            time 3100,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        recv_nothing!(s, time 6999);
        recv!(
            s,
            time 7000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_zero_window_probe_backoff_no_reply() {
        let mut s = socket_established();
        s.send_slice(b"abcdef123456!@#$%^").unwrap();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        recv_nothing!(s, time 999);
        recv!(
            s,
            time 1000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );

        recv_nothing!(s, time 2999);
        recv!(
            s,
            time 3000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_zero_window_probe_shift() {
        let mut s = socket_established();

        s.send_slice(b"abcdef123456!@#$%^").unwrap();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        recv_nothing!(s, time 999);
        recv!(
            s,
            time 1000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );

        recv_nothing!(s, time 2999);
        recv!(
            s,
            time 3000,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"a"[..],
                ..RECV_TEMPL
            }]
        );

        // ack the ZWP byte, but still advertise zero window.
        // this should restart the ZWP timer.
        send!(
            s,
            time 3100,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 2),
                window_len: 0,
                ..SEND_TEMPL
            }
        );

        // ZWP should be sent at 3100+1000 = 4100
        recv_nothing!(s, time 4099);
        recv!(
            s,
            time 4100,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 2,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"b"[..],
                ..RECV_TEMPL
            }]
        );
    }

    // =========================================================================================//
    // Tests for timeouts.
    // =========================================================================================//

    #[test]
    fn test_listen_timeout() {
        let mut s = socket_listen();
        s.set_timeout(Some(Duration::from_millis(100)));
        assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Ingress);
    }

    #[test]
    fn test_connect_timeout() {
        let mut s = socket();
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        s.set_timeout(Some(Duration::from_millis(100)));
        recv!(s, time 150, Ok(TcpRepr {
            control:    TcpControl::Syn,
            seq_number: LOCAL_SEQ,
            ack_number: None,
            max_seg_size: Some(BASE_MSS),
            window_scale: Some(0),
            sack_permitted: true,
            ..RECV_TEMPL
        }));
        assert_eq!(s.state, State::SynSent);
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(250))
        );
        recv!(s, time 250, Ok(TcpRepr {
            control:    TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(TcpSeqNumber(0)),
            window_scale: None,
            ..RECV_TEMPL
        }));
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_established_timeout() {
        let mut s = socket_established();
        s.set_timeout(Some(Duration::from_millis(2000)));
        recv_nothing!(s, time 250);
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(2250))
        );
        s.send_slice(b"abcdef").unwrap();
        assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Now);
        recv!(s, time 255, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(1255))
        );
        recv!(s, time 1255, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }));
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(2255))
        );
        recv!(s, time 2255, Ok(TcpRepr {
            control:    TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_established_keep_alive_timeout() {
        let mut s = socket_established();
        s.set_keep_alive(Some(Duration::from_millis(50)));
        s.set_timeout(Some(Duration::from_millis(100)));
        recv!(s, time 100, Ok(TcpRepr {
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &[0],
            ..RECV_TEMPL
        }));
        recv_nothing!(s, time 100);
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(150))
        );
        send!(s, time 105, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(155))
        );
        recv!(s, time 155, Ok(TcpRepr {
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &[0],
            ..RECV_TEMPL
        }));
        recv_nothing!(s, time 155);
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(205))
        );
        recv_nothing!(s, time 200);
        recv!(s, time 205, Ok(TcpRepr {
            control:    TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));
        recv_nothing!(s, time 205);
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_fin_wait_1_timeout() {
        let mut s = socket_fin_wait_1();
        s.set_timeout(Some(Duration::from_millis(1000)));
        recv!(s, time 100, Ok(TcpRepr {
            control:    TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));
        recv!(s, time 1100, Ok(TcpRepr {
            control:    TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1 + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_last_ack_timeout() {
        let mut s = socket_last_ack();
        s.set_timeout(Some(Duration::from_millis(1000)));
        recv!(s, time 100, Ok(TcpRepr {
            control:    TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 1),
            ..RECV_TEMPL
        }));
        recv!(s, time 1100, Ok(TcpRepr {
            control:    TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1 + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 1),
            ..RECV_TEMPL
        }));
        assert_eq!(s.state, State::Closed);
    }

    #[test]
    fn test_closed_timeout() {
        let mut s = socket_established();
        s.set_timeout(Some(Duration::from_millis(200)));
        s.remote_last_ts = Some(Instant::from_millis(100));
        s.abort();
        assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Now);
        recv!(s, time 100, Ok(TcpRepr {
            control:    TcpControl::Rst,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            ..RECV_TEMPL
        }));
        assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Ingress);
    }

    // =========================================================================================//
    // Tests for keep-alive.
    // =========================================================================================//

    #[test]
    fn test_responds_to_keep_alive() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_sends_keep_alive() {
        let mut s = socket_established();
        s.set_keep_alive(Some(Duration::from_millis(100)));

        // drain the forced keep-alive packet
        assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Now);
        recv!(s, time 0, Ok(TcpRepr {
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &[0],
            ..RECV_TEMPL
        }));

        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(100))
        );
        recv_nothing!(s, time 95);
        recv!(s, time 100, Ok(TcpRepr {
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &[0],
            ..RECV_TEMPL
        }));

        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(200))
        );
        recv_nothing!(s, time 195);
        recv!(s, time 200, Ok(TcpRepr {
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &[0],
            ..RECV_TEMPL
        }));

        send!(s, time 250, TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            ..SEND_TEMPL
        });
        assert_eq!(
            s.socket.poll_at(&mut s.cx),
            PollAt::Time(Instant::from_millis(350))
        );
        recv_nothing!(s, time 345);
        recv!(s, time 350, Ok(TcpRepr {
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"\x00"[..],
            ..RECV_TEMPL
        }));
    }

    // =========================================================================================//
    // Tests for time-to-live configuration.
    // =========================================================================================//

    #[test]
    fn test_set_hop_limit() {
        let mut s = socket_syn_received();

        s.set_hop_limit(Some(0x2a));
        assert_eq!(
            s.socket.dispatch(&mut s.cx, |_, _, (ip_repr, _)| {
                assert_eq!(ip_repr.hop_limit(), 0x2a);
                Ok::<_, ()>(())
            }),
            Ok(())
        );

        // assert that user-configurable settings are kept,
        // see https://github.com/smoltcp-rs/smoltcp/issues/601.
        s.reset();
        assert_eq!(s.hop_limit(), Some(0x2a));
    }

    #[test]
    #[should_panic(expected = "the time-to-live value of a packet must not be zero")]
    fn test_set_hop_limit_zero() {
        let mut s = socket_syn_received();
        s.set_hop_limit(Some(0));
    }

    // =========================================================================================//
    // Tests for reassembly.
    // =========================================================================================//

    #[test]
    fn test_out_of_order() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 3,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"def"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                ..RECV_TEMPL
            })
        );
        s.recv(|buffer| {
            assert_eq!(buffer, b"");
            (buffer.len(), ())
        })
        .unwrap();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abcdef"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 6),
                window_len: 58,
                ..RECV_TEMPL
            })
        );
        s.recv(|buffer| {
            assert_eq!(buffer, b"abcdef");
            (buffer.len(), ())
        })
        .unwrap();
    }

    #[test]
    fn test_buffer_wraparound_rx() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        s.recv(|buffer| {
            assert_eq!(buffer, b"abc");
            (buffer.len(), ())
        })
        .unwrap();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 3,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"defghi"[..],
                ..SEND_TEMPL
            }
        );
        let mut data = [0; 6];
        assert_eq!(s.recv_slice(&mut data[..]), Ok(6));
        assert_eq!(data, &b"defghi"[..]);
    }

    #[test]
    fn test_buffer_wraparound_tx() {
        let mut s = socket_established();
        s.set_nagle_enabled(false);

        s.tx_buffer = SocketBuffer::new(vec![b'.'; 9]);
        assert_eq!(s.send_slice(b"xxxyyy"), Ok(6));
        assert_eq!(s.tx_buffer.dequeue_many(3), &b"xxx"[..]);
        assert_eq!(s.tx_buffer.len(), 3);

        // "abcdef" not contiguous in tx buffer
        assert_eq!(s.send_slice(b"abcdef"), Ok(6));
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"yyyabc"[..],
                ..RECV_TEMPL
            })
        );
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"def"[..],
                ..RECV_TEMPL
            })
        );
    }

    // =========================================================================================//
    // Tests for graceful vs ungraceful rx close
    // =========================================================================================//

    #[test]
    fn test_rx_close_fin() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        assert_eq!(s.recv(|_| (0, ())), Err(RecvError::Finished));
    }

    #[test]
    fn test_rx_close_fin_in_fin_wait_1() {
        let mut s = socket_fin_wait_1();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Closing);
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        assert_eq!(s.recv(|_| (0, ())), Err(RecvError::Finished));
    }

    #[test]
    fn test_rx_close_fin_in_fin_wait_2() {
        let mut s = socket_fin_wait_2();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::TimeWait);
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        assert_eq!(s.recv(|_| (0, ())), Err(RecvError::Finished));
    }

    #[test]
    fn test_rx_close_fin_with_hole() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"ghi"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                window_len: 61,
                ..RECV_TEMPL
            })
        );
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        s.recv(|data| {
            assert_eq!(data, b"");
            (0, ())
        })
        .unwrap();
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1 + 9,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        // Error must be `Illegal` even if we've received a FIN,
        // because we are missing data.
        assert_eq!(s.recv(|_| (0, ())), Err(RecvError::InvalidState));
    }

    #[test]
    fn test_rx_close_rst() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1 + 3,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        assert_eq!(s.recv(|_| (0, ())), Err(RecvError::InvalidState));
    }

    #[test]
    fn test_rx_close_rst_with_hole() {
        let mut s = socket_established();
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + 6,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"ghi"[..],
                ..SEND_TEMPL
            },
            Some(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                window_len: 61,
                ..RECV_TEMPL
            })
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Rst,
                seq_number: REMOTE_SEQ + 1 + 9,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();
        assert_eq!(s.recv(|_| (0, ())), Err(RecvError::InvalidState));
    }

    // =========================================================================================//
    // Tests for delayed ACK
    // =========================================================================================//

    #[test]
    fn test_delayed_ack() {
        let mut s = socket_established();
        s.set_ack_delay(Some(ACK_DELAY_DEFAULT));
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );

        // No ACK is immediately sent.
        recv_nothing!(s);

        // After 10ms, it is sent.
        recv!(s, time 11, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 3),
            window_len: 61,
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_delayed_ack_win() {
        let mut s = socket_established();
        s.set_ack_delay(Some(ACK_DELAY_DEFAULT));
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );

        // Reading the data off the buffer should cause a window update.
        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();

        // However, no ACK or window update is immediately sent.
        recv_nothing!(s);

        // After 10ms, it is sent.
        recv!(s, time 11, Ok(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 3),
            ..RECV_TEMPL
        }));
    }

    #[test]
    fn test_delayed_ack_reply() {
        let mut s = socket_established();
        s.set_ack_delay(Some(ACK_DELAY_DEFAULT));
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"abc"[..],
                ..SEND_TEMPL
            }
        );

        s.recv(|data| {
            assert_eq!(data, b"abc");
            (3, ())
        })
        .unwrap();

        s.send_slice(&b"xyz"[..]).unwrap();

        // Writing data to the socket causes ACK to not be delayed,
        // because it is immediately sent with the data.
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 3),
                payload: &b"xyz"[..],
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_delayed_ack_every_rmss() {
        let mut s = socket_established_with_buffer_sizes(DEFAULT_MSS * 2, DEFAULT_MSS * 2);
        s.set_ack_delay(Some(ACK_DELAY_DEFAULT));
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[0; DEFAULT_MSS - 1],
                ..SEND_TEMPL
            }
        );

        // No ACK is immediately sent.
        recv_nothing!(s);

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + (DEFAULT_MSS - 1),
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"a"[..],
                ..SEND_TEMPL
            }
        );

        // No ACK is immediately sent.
        recv_nothing!(s);

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + DEFAULT_MSS,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"a"[..],
                ..SEND_TEMPL
            }
        );

        // RMSS+1 bytes of data has been received, so ACK is sent without delay.
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + (DEFAULT_MSS + 1)),
                window_len: (DEFAULT_MSS - 1) as u16,
                ..RECV_TEMPL
            })
        );
    }

    #[test]
    fn test_delayed_ack_every_rmss_or_more() {
        let mut s = socket_established_with_buffer_sizes(DEFAULT_MSS * 2, DEFAULT_MSS * 2);
        s.set_ack_delay(Some(ACK_DELAY_DEFAULT));
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &[0; DEFAULT_MSS],
                ..SEND_TEMPL
            }
        );

        // No ACK is immediately sent.
        recv_nothing!(s);

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + DEFAULT_MSS,
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"a"[..],
                ..SEND_TEMPL
            }
        );

        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1 + (DEFAULT_MSS + 1),
                ack_number: Some(LOCAL_SEQ + 1),
                payload: &b"b"[..],
                ..SEND_TEMPL
            }
        );

        // RMSS+2 bytes of data has been received, so ACK is sent without delay.
        recv!(
            s,
            Ok(TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + (DEFAULT_MSS + 2)),
                window_len: (DEFAULT_MSS - 2) as u16,
                ..RECV_TEMPL
            })
        );
    }

    // =========================================================================================//
    // Tests for Nagle's Algorithm
    // =========================================================================================//

    #[test]
    fn test_nagle() {
        let mut s = socket_established();
        s.remote_mss = 6;

        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                ..RECV_TEMPL
            }]
        );

        // If there's data in flight, full segments get sent.
        s.send_slice(b"foobar").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"foobar"[..],
                ..RECV_TEMPL
            }]
        );

        s.send_slice(b"aaabbbccc").unwrap();
        // If there's data in flight, not-full segments don't get sent.
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"aaabbb"[..],
                ..RECV_TEMPL
            }]
        );

        // Data gets ACKd, so there's no longer data in flight
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 6 + 6),
                ..SEND_TEMPL
            }
        );

        // Now non-full segment gets sent.
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6 + 6 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"ccc"[..],
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_nagle_works_with_reduced_payload_from_options() {
        const EFFECTIVE_MSS: usize = 64;

        let mut s = socket_established_with_buffer_sizes(256, 64);
        s.set_nagle_enabled(true);
        s.set_tsval_generator(Some(|| 1));
        s.remote_mss = EFFECTIVE_MSS;

        // Send small segment to "arm" Nagle's
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );

        // A full segment (once options are accounted for) should not be delayed and contain 12 bytes less due to timestamp
        s.send_slice(&[0; EFFECTIVE_MSS - 12]).unwrap();
        recv!(
            s,
            time 0,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &[0; EFFECTIVE_MSS - 12],
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_final_packet_in_stream_doesnt_wait_for_nagle() {
        let mut s = socket_established();
        s.remote_mss = 6;
        s.send_slice(b"abcdef0").unwrap();
        s.socket.close();

        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::None,
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"abcdef"[..],
            ..RECV_TEMPL
        }), exact);
        recv!(s, time 0, Ok(TcpRepr {
            control:    TcpControl::Fin,
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload:    &b"0"[..],
            ..RECV_TEMPL
        }), exact);
    }

    // =========================================================================================//
    // Tests for packet filtering.
    // =========================================================================================//

    #[test]
    fn test_doesnt_accept_wrong_port() {
        let mut s = socket_established();
        s.rx_buffer = SocketBuffer::new(vec![0; 6]);
        s.assembler = Assembler::new();

        let tcp_repr = TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            dst_port: LOCAL_PORT + 1,
            ..SEND_TEMPL
        };
        assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &tcp_repr));

        let tcp_repr = TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            src_port: REMOTE_PORT + 1,
            ..SEND_TEMPL
        };
        assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &tcp_repr));
    }

    #[test]
    fn test_doesnt_accept_wrong_ip() {
        let mut s = socket_established();

        let tcp_repr = TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: &b"abcdef"[..],
            ..SEND_TEMPL
        };

        let ip_repr = IpReprIpvX(IpvXRepr {
            src_addr: REMOTE_ADDR,
            dst_addr: LOCAL_ADDR,
            next_header: IpProtocol::Tcp,
            payload_len: tcp_repr.buffer_len(),
            hop_limit: 64,
        });
        assert!(s.socket.accepts(&mut s.cx, &ip_repr, &tcp_repr));

        let ip_repr_wrong_src = IpReprIpvX(IpvXRepr {
            src_addr: OTHER_ADDR,
            dst_addr: LOCAL_ADDR,
            next_header: IpProtocol::Tcp,
            payload_len: tcp_repr.buffer_len(),
            hop_limit: 64,
        });
        assert!(!s.socket.accepts(&mut s.cx, &ip_repr_wrong_src, &tcp_repr));

        let ip_repr_wrong_dst = IpReprIpvX(IpvXRepr {
            src_addr: REMOTE_ADDR,
            dst_addr: OTHER_ADDR,
            next_header: IpProtocol::Tcp,
            payload_len: tcp_repr.buffer_len(),
            hop_limit: 64,
        });
        assert!(!s.socket.accepts(&mut s.cx, &ip_repr_wrong_dst, &tcp_repr));
    }

    // =========================================================================================//
    // Timer tests
    // =========================================================================================//

    #[test]
    fn test_timer_retransmit() {
        const RTO: Duration = Duration::from_millis(100);
        let mut r = Timer::new();
        assert!(!r.should_retransmit(Instant::from_secs(1)));
        r.set_for_retransmit(Instant::from_millis(1000), RTO);
        assert!(!r.should_retransmit(Instant::from_millis(1000)));
        assert!(!r.should_retransmit(Instant::from_millis(1050)));
        assert!(r.should_retransmit(Instant::from_millis(1101)));
        r.set_for_retransmit(Instant::from_millis(1101), RTO);
        assert!(!r.should_retransmit(Instant::from_millis(1101)));
        assert!(!r.should_retransmit(Instant::from_millis(1150)));
        assert!(!r.should_retransmit(Instant::from_millis(1200)));
        assert!(r.should_retransmit(Instant::from_millis(1301)));
        r.set_for_idle(Instant::from_millis(1301), None);
        assert!(!r.should_retransmit(Instant::from_millis(1350)));
    }

    #[test]
    fn test_rtt_estimator() {
        let mut r = RttEstimator::default();
        assert_eq!(r.retransmission_timeout(), Duration::from_secs(1));

        // zt patch: RTO = SRTT + max(4 RTTVAR, 200 ms). A steady 2 s: RTTVAR decays from 1 s.
        let rtos_ms = &[
            6000, 5000, 4250, 3687, 3265, 2949, 2712, 2534, 2400, 2300, 2225,
        ];
        for &rto in rtos_ms {
            r.sample(2_000_000);
            let got = r.retransmission_timeout().total_millis();
            assert!(got.abs_diff(rto) <= 1, "{got} vs {rto}");
        }
        for _ in 0..40 {
            r.sample(2_000_000);
        }
        assert_eq!(r.retransmission_timeout(), Duration::from_millis(2200));

        // A tenth of a millisecond: the variance term's floor.
        let mut r = RttEstimator::default();
        for _ in 0..50 {
            r.sample(100);
        }
        assert_eq!(r.retransmission_timeout(), Duration::from_micros(200_100));

        // Back-off doubles and ends with the next sample.
        r.on_rto();
        r.on_rto();
        assert_eq!(r.retransmission_timeout(), Duration::from_micros(800_400));
        r.sample(100);
        assert_eq!(r.retransmission_timeout(), Duration::from_micros(200_100));
        for _ in 0..40 {
            r.on_rto();
        }
        assert_eq!(
            r.retransmission_timeout(),
            Duration::from_secs(60),
            "at most 60 s"
        );
    }

    #[test]
    fn test_set_get_congestion_control() {
        let mut s = socket_established();

        #[cfg(feature = "socket-tcp-reno")]
        {
            s.set_congestion_control(CongestionControl::Reno);
            assert_eq!(s.congestion_control(), CongestionControl::Reno);
        }

        #[cfg(feature = "socket-tcp-cubic")]
        {
            s.set_congestion_control(CongestionControl::Cubic);
            assert_eq!(s.congestion_control(), CongestionControl::Cubic);
        }

        s.set_congestion_control(CongestionControl::None);
        assert_eq!(s.congestion_control(), CongestionControl::None);
    }

    // =========================================================================================//
    // Timestamp tests
    // =========================================================================================//

    #[test]
    fn test_tsval_established_connection() {
        let mut s = socket_established();
        s.set_tsval_generator(Some(|| 1));

        assert!(s.timestamp_enabled());

        // First roundtrip after establishing.
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );
        assert_eq!(s.tx_buffer.len(), 6);
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6),
                timestamp: Some(TcpTimestampRepr::new(500, 1)),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.tx_buffer.len(), 0);
        // Second roundtrip.
        s.send_slice(b"foobar").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1 + 6,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"foobar"[..],
                timestamp: Some(TcpTimestampRepr::new(1, 500)),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 6 + 6),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.tx_buffer.len(), 0);
    }

    #[test]
    fn test_tsval_disabled_in_remote_client() {
        let mut s = socket_listen();
        s.set_tsval_generator(Some(|| 1));
        assert!(s.timestamp_enabled());
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::SynReceived);
        assert_eq!(s.tuple, Some(TUPLE));
        assert!(!s.timestamp_enabled());
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::Established);
        assert_eq!(s.local_seq_no, LOCAL_SEQ + 1);
        assert_eq!(s.remote_seq_no, REMOTE_SEQ + 1);
    }

    #[test]
    fn test_tsval_disabled_in_local_server() {
        let mut s = socket_listen();
        // s.set_timestamp(false); // commented to alert if the default state changes
        assert!(!s.timestamp_enabled());
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: None,
                timestamp: Some(TcpTimestampRepr::new(500, 0)),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::SynReceived);
        assert_eq!(s.tuple, Some(TUPLE));
        assert!(!s.timestamp_enabled());
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state(), State::Established);
        assert_eq!(s.local_seq_no, LOCAL_SEQ + 1);
        assert_eq!(s.remote_seq_no, REMOTE_SEQ + 1);
    }

    #[test]
    fn test_tsval_disabled_in_remote_server() {
        let mut s = socket();
        s.set_tsval_generator(Some(|| 1));
        assert!(s.timestamp_enabled());
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        assert_eq!(s.tuple, Some(TUPLE));
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                timestamp: Some(TcpTimestampRepr::new(1, 0)),
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                timestamp: None,
                ..SEND_TEMPL
            }
        );
        assert!(!s.timestamp_enabled());
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                timestamp: None,
                ..RECV_TEMPL
            }]
        );
    }

    #[test]
    fn test_tsval_disabled_in_local_client() {
        let mut s = socket();
        // s.set_timestamp(false); // commented to alert if the default state changes
        assert!(!s.timestamp_enabled());
        s.local_seq_no = LOCAL_SEQ;
        s.socket
            .connect(&mut s.cx, REMOTE_END, LOCAL_END.port)
            .unwrap();
        assert_eq!(s.tuple, Some(TUPLE));
        recv!(
            s,
            [TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            }]
        );
        send!(
            s,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                max_seg_size: Some(BASE_MSS - 80),
                window_scale: Some(0),
                timestamp: Some(TcpTimestampRepr::new(500, 0)),
                ..SEND_TEMPL
            }
        );
        assert!(!s.timestamp_enabled());
        s.send_slice(b"abcdef").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abcdef"[..],
                timestamp: None,
                ..RECV_TEMPL
            }]
        );
    }

    // =========================================================================================//
    // Tests for source IP address change.
    // =========================================================================================//

    #[test]
    fn test_established_close_on_src_ip_change() {
        let mut s = socket_established();

        // Verify socket is working normally
        s.send_slice(b"abc").unwrap();
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1),
                payload: &b"abc"[..],
                ..RECV_TEMPL
            }]
        );

        // Simulate interface IP change - remove the socket's source IP
        // and add a different one.
        let mut new_addrs = heapless::Vec::<IpCidr, IFACE_MAX_ADDR_COUNT>::new();
        new_addrs.push(IpCidr::new(OTHER_ADDR.into(), 24)).unwrap();
        s.cx.set_ip_addrs(new_addrs);

        // The socket's source IP is no longer on the interface.
        // When dispatch() runs, it should detect this and reset the socket
        // silently (no RST sent, since that would use the invalid source IP).
        s.send_slice(b"def").unwrap();
        recv_nothing!(s);
        assert_eq!(s.state, State::Closed);
    }

    // =========================================================================================//
    // zt patch: loss recovery (SACK scoreboard, RACK-TLP, PRR, undo), timestamps, pacing
    // =========================================================================================//

    /// An established socket whose peer offered SACK, with 100-byte segments, a large window
    /// and Reno (its numbers are easy to follow).
    fn sack_socket() -> TestSocket {
        let mut s = socket_established_with_buffer_sizes(8192, 64);
        s.set_congestion_control(CongestionControl::Reno);
        s.remote_has_sack = true;
        s.remote_win_len = 65535;
        s.remote_mss = 100;
        s.congestion_controller.inner_mut().set_mss(100);
        s
    }

    /// The data segments the socket sends at `t_ms`: (offset from the first byte, length).
    fn drain(s: &mut TestSocket, t_ms: i64) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            s.cx.set_now(Instant::from_millis(t_ms));
            let mut got = None;
            let _ = s.socket.dispatch(&mut s.cx, |_, _, (_, tcp)| {
                got = Some((tcp.seq_number, tcp.payload.len(), tcp.segment_len()));
                Ok::<(), ()>(())
            });
            match got {
                Some((seq, len, seg_len)) if seg_len > 0 => {
                    out.push((seq - (LOCAL_SEQ + 1), len));
                }
                Some(_) => {}
                None => break,
            }
        }
        out
    }

    /// The peer acknowledges `ack` bytes cumulatively and reports `blocks` (offsets).
    fn ack_sack(s: &mut TestSocket, t_ms: i64, ack: usize, blocks: &[(usize, usize)]) {
        let base = LOCAL_SEQ + 1;
        let mut ranges = [None; 3];
        for (i, (l, r)) in blocks.iter().enumerate() {
            ranges[i] = Some(((base + *l).0 as u32, (base + *r).0 as u32));
        }
        send(
            s,
            Instant::from_millis(t_ms),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(base + ack),
                window_len: 65535,
                sack_ranges: ranges,
                ..SEND_TEMPL
            },
        );
    }

    #[test]
    fn test_sack_recovery_repairs_several_losses_in_one_round_trip() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        let first = drain(&mut s, 0);
        assert_eq!(first.len(), 10, "the initial window: ten segments");
        // Segments at 0, 300 and 600 are lost; the peer reports the others as they come.
        let mut resent = Vec::new();
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        for off in [100, 200, 400, 500, 700, 800, 900] {
            match blocks.iter_mut().find(|b| b.1 == off) {
                Some(b) => b.1 += 100,
                None => blocks.insert(0, (off, off + 100)),
            }
            // Most recent block first.
            let i = blocks.iter().position(|b| b.0 <= off && off < b.1).unwrap();
            let b = blocks.remove(i);
            blocks.insert(0, b);
            ack_sack(&mut s, 50, 0, &blocks[..blocks.len().min(3)]);
            resent.extend(drain(&mut s, 50));
        }
        assert_eq!(resent.first(), Some(&(0, 100)), "the first at once");
        // The others as pacing lets them go, before the retransmission's ACK is back.
        for t in 51..100 {
            resent.extend(drain(&mut s, t));
        }
        let offsets: Vec<usize> = resent.iter().map(|r| r.0).collect();
        assert!(
            offsets.contains(&0) && offsets.contains(&300) && offsets.contains(&600),
            "{offsets:?}"
        );
        // The retransmission of 0 fills the first hole; the rest follows within the round.
        ack_sack(&mut s, 100, 300, &[(400, 600), (700, 1000)]);
        resent.extend(drain(&mut s, 100));
        let offsets: Vec<usize> = resent.iter().map(|r| r.0).collect();
        assert!(
            offsets.contains(&0) && offsets.contains(&300) && offsets.contains(&600),
            "{offsets:?}"
        );
        assert_eq!(
            offsets.len(),
            3,
            "only the lost segments are resent: {offsets:?}"
        );
        ack_sack(&mut s, 150, 1000, &[]);
        let info = s.info();
        assert_eq!(info.timeouts, 0);
        assert_eq!(info.recoveries, 1);
        assert_eq!(info.segs_retrans, 3);
        assert_eq!(s.rec.state, CaState::Open);
        // Reno: half the window (1000 bytes, grown to 1200 by the first SACKs) at the end.
        assert_eq!(info.ssthresh, 600);
        assert_eq!(info.cwnd, 600);
        s.sb.check();
        assert!(s.sb.is_empty());
    }

    #[test]
    fn test_rack_detects_a_lost_retransmission_before_the_timeout() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // Segment 0 lost; the others arrive.
        let mut resent = Vec::new();
        for r in [200, 300, 400] {
            ack_sack(&mut s, 50, 0, &[(100, r)]);
            resent.extend(drain(&mut s, 50));
        }
        assert_eq!(resent, vec![(0, 100)], "fast retransmit");
        // Its retransmission is lost too. New data sent after it arrives and is reported.
        s.send_slice(&[b'y'; 300]).unwrap();
        let mut sent = Vec::new();
        for r in [500, 600, 700, 800, 900, 1000] {
            ack_sack(&mut s, 55, 0, &[(100, r)]);
            sent.extend(drain(&mut s, 55));
        }
        assert!(sent.iter().any(|&(o, _)| o >= 1000), "new data: {sent:?}");
        ack_sack(&mut s, 105, 0, &[(100, 1100)]);
        let mut again = drain(&mut s, 105);
        for t in 106..200 {
            if again.iter().any(|&(o, _)| o == 0) {
                break;
            }
            again.extend(drain(&mut s, t));
        }
        assert!(
            again.iter().any(|&(o, _)| o == 0),
            "the lost retransmission goes again within a round trip: {again:?}"
        );
        assert_eq!(s.info().timeouts, 0);
    }

    #[test]
    fn test_tail_loss_probe_instead_of_a_timeout() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // The last two segments are lost: nothing reports them.
        ack_sack(&mut s, 50, 800, &[]);
        assert_eq!(drain(&mut s, 50), vec![]);
        // The probe timeout is 2 SRTT (100 ms): the last segment goes again.
        let mut probe = Vec::new();
        let mut at = 0;
        for t in 51..400 {
            probe = drain(&mut s, t);
            if !probe.is_empty() {
                at = t;
                break;
            }
        }
        assert_eq!(probe, vec![(900, 100)], "probe at {at} ms");
        assert!(at <= 160, "probe at {at} ms");
        assert_eq!(s.info().loss_probes, 1);
        // The probe is reported: the segment before it is lost, and recovered at once.
        ack_sack(&mut s, at + 50, 800, &[(900, 1000)]);
        let resent = drain(&mut s, at + 50);
        let mut all = resent.clone();
        for t in at + 51..at + 100 {
            if all.iter().any(|&(o, _)| o == 800) {
                break;
            }
            all.extend(drain(&mut s, t));
        }
        assert!(all.iter().any(|&(o, _)| o == 800), "{all:?}");
        assert_eq!(s.info().timeouts, 0);
    }

    #[test]
    fn test_dsack_undoes_a_spurious_fast_retransmit() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        let cwnd = s.info().cwnd;
        // Segment 0 is only late: three later ones are reported first.
        for r in [200, 300, 400] {
            ack_sack(&mut s, 50, 0, &[(100, r)]);
        }
        assert_eq!(drain(&mut s, 50), vec![(0, 100)]);
        assert_eq!(s.info().recoveries, 1);
        // Then it arrives, everything is acknowledged...
        ack_sack(&mut s, 51, 1000, &[]);
        assert!(s.info().cwnd < cwnd);
        // ... and the retransmission arrives as a duplicate (D-SACK below the ACK).
        ack_sack(&mut s, 100, 1000, &[(0, 100)]);
        let info = s.info();
        assert_eq!(info.dsacks_received, 1);
        assert_eq!(info.undos, 1);
        assert!(info.cwnd >= cwnd, "{} < {cwnd}", info.cwnd);
        assert!(info.reordering_seen);
        // The reordering window has grown: the next reordering by a little is tolerated.
        assert!(s.rec.reo_wnd_mult > 1);
    }

    #[test]
    fn test_timestamps_undo_a_spurious_timeout() {
        let mut s = sack_socket();
        s.set_timestamps(true);
        // 100 bytes of data after the 12 of the timestamp option.
        s.remote_mss = 112;
        let tsecr = |tsval: u32| {
            Some(TcpTimestampRepr {
                tsval: 1,
                tsecr: tsval,
            })
        };
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 1000), vec![(0, 100)]);
        send(
            &mut s,
            Instant::from_millis(1050),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 100),
                window_len: 65535,
                timestamp: tsecr(1000),
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.info().srtt_us, 50_000);
        s.send_slice(&[b'x'; 500]).unwrap();
        let mut sent = 0;
        for t in 1100..1115 {
            sent += drain(&mut s, t).len();
        }
        assert_eq!(sent, 5, "paced over a few ms");
        let cwnd = s.info().cwnd;
        // No ACK for half a second (a delay spike): a tail loss probe first (2 SRTT), then the
        // retransmission timeout fires.
        let mut resent = Vec::new();
        let mut at = 0;
        for t in 1115..2000 {
            resent = drain(&mut s, t);
            if s.info().timeouts == 1 {
                at = t;
                break;
            }
        }
        assert_eq!(s.info().loss_probes, 1);
        assert_eq!(resent, vec![(100, 100)], "at {at}");
        assert_eq!(s.info().cwnd, 100);
        // The ACK of the originals comes: it echoes their timestamp, older than the
        // retransmission's, so the timeout was spurious.
        send(
            &mut s,
            Instant::from_millis(at + 10),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 600),
                window_len: 65535,
                timestamp: tsecr(1100),
                ..SEND_TEMPL
            },
        );
        let info = s.info();
        assert_eq!(info.undos, 1);
        assert!(info.cwnd >= cwnd, "{} < {cwnd}", info.cwnd);
        assert_eq!(s.rec.state, CaState::Open);
    }

    #[test]
    fn test_timestamps_are_sent_and_echo_ts_recent() {
        let mut s = sack_socket();
        s.set_timestamps(true);
        s.last_remote_tsval = 7;
        s.send_slice(b"abc").unwrap();
        s.cx.set_now(Instant::from_millis(1234));
        let mut ts = None;
        let _ = s.socket.dispatch(&mut s.cx, |_, _, (_, tcp)| {
            ts = tcp.timestamp;
            Ok::<(), ()>(())
        });
        assert_eq!(ts, Some(TcpTimestampRepr::new(1234, 7)));
        // An out-of-order segment's TSval is not adopted (RFC 7323 4.3); an in-order one's is.
        let mut seg = TcpRepr {
            seq_number: REMOTE_SEQ + 1 + 10,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: &b"zz"[..],
            timestamp: Some(TcpTimestampRepr::new(50, 1234)),
            ..SEND_TEMPL
        };
        send(&mut s, Instant::from_millis(1240), &seg);
        assert_eq!(s.last_remote_tsval, 7);
        seg.seq_number = REMOTE_SEQ + 1;
        seg.timestamp = Some(TcpTimestampRepr::new(49, 1234));
        send(&mut s, Instant::from_millis(1241), &seg);
        assert_eq!(s.last_remote_tsval, 49);
    }

    #[test]
    fn test_receiver_reports_sack_blocks_most_recent_first_and_dsack() {
        let mut s = sack_socket();
        let seg = |off: usize, data: &'static [u8]| TcpRepr {
            seq_number: REMOTE_SEQ + 1 + off,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: data,
            ..SEND_TEMPL
        };
        let base = (REMOTE_SEQ + 1).0 as u32;
        let r = |l: u32, h: u32| Some((base.wrapping_add(l), base.wrapping_add(h)));
        let reply = send(&mut s, Instant::from_millis(0), &seg(6, b"ghi")).unwrap();
        assert_eq!(reply.sack_ranges, [r(6, 9), None, None]);
        let reply = send(&mut s, Instant::from_millis(1), &seg(12, b"mno")).unwrap();
        assert_eq!(reply.sack_ranges, [r(12, 15), r(6, 9), None]);
        let reply = send(&mut s, Instant::from_millis(2), &seg(20, b"uv")).unwrap();
        assert_eq!(reply.sack_ranges, [r(20, 22), r(12, 15), r(6, 9)]);
        // A duplicate out of order: D-SACK first.
        let reply = send(&mut s, Instant::from_millis(3), &seg(12, b"mno")).unwrap();
        assert_eq!(reply.sack_ranges[0], r(12, 15));
        assert_eq!(reply.sack_ranges[1], r(12, 15));
        // A duplicate below the cumulative ACK.
        send(&mut s, Instant::from_millis(4), &seg(0, b"abcdef"));
        let reply = send(&mut s, Instant::from_millis(5), &seg(0, b"abcdef")).unwrap();
        assert_eq!(reply.ack_number, Some(REMOTE_SEQ + 1 + 9));
        assert_eq!(reply.sack_ranges[0], r(0, 6));
        assert_eq!(s.info().rx_duplicates, 2);
    }

    #[test]
    fn test_data_with_an_old_ack_is_accepted() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 200]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 2);
        ack_sack(&mut s, 10, 200, &[]);
        // The peer's data segment carries an older ACK (it crossed ours on the way).
        send(
            &mut s,
            Instant::from_millis(11),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 100),
                payload: &b"hello"[..],
                ..SEND_TEMPL
            },
        );
        let mut buf = [0; 8];
        assert_eq!(s.recv_slice(&mut buf), Ok(5));
        assert_eq!(
            s.local_seq_no,
            LOCAL_SEQ + 1 + 200,
            "the old ACK changes nothing"
        );
    }

    #[test]
    fn test_pacing_spreads_a_window_over_the_round_trip() {
        let mut s = sack_socket();
        s.set_congestion_control(CongestionControl::Cubic);
        s.congestion_controller.inner_mut().set_mss(100);
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 1);
        ack_sack(&mut s, 100, 100, &[]);
        // 10 segments' window per 100 ms (it did not grow: one segment did not fill it),
        // twice that in slow start: 20 kB/s, a segment every 5 ms (after a millisecond's
        // worth at once).
        assert_eq!(s.info().pacing_rate, 20_000);
        s.send_slice(&[b'x'; 1000]).unwrap();
        let burst = drain(&mut s, 100);
        assert!(burst.len() < 3, "{burst:?}");
        s.cx.set_now(Instant::from_millis(100));
        let at = match s.socket.poll_at(&mut s.cx) {
            PollAt::Time(t) => t.total_millis(),
            other => panic!("{other:?}"),
        };
        assert!((101..=110).contains(&at), "{at}");
        let mut n = burst.len();
        for t in 101..200 {
            n += drain(&mut s, t).len();
        }
        assert_eq!(n, 10, "the rest within the round trip");
    }

    #[test]
    fn test_newreno_partial_ack_resends_the_next_hole_without_sack() {
        let mut s = sack_socket();
        s.remote_has_sack = false;
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // 0 and 500 lost: every other segment draws a duplicate ACK.
        ack_sack(&mut s, 50, 0, &[]);
        let mut resent = Vec::new();
        for _ in 0..8 {
            ack_sack(&mut s, 50, 0, &[]);
            resent.extend(drain(&mut s, 50));
        }
        assert_eq!(resent.first(), Some(&(0, 100)), "{resent:?}");
        // The retransmission fills the first hole: a partial ACK, the next hole goes at once.
        ack_sack(&mut s, 100, 500, &[]);
        let next = drain(&mut s, 100);
        assert_eq!(next.first(), Some(&(500, 100)), "{next:?}");
        assert_eq!(s.info().timeouts, 0);
    }

    #[test]
    fn test_after_a_timeout_the_lost_segments_go_in_slow_start() {
        let mut s = sack_socket();
        s.set_congestion_control(CongestionControl::Cubic);
        s.set_timestamps(true);
        s.remote_mss = 112;
        s.congestion_controller.inner_mut().set_mss(112);
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 1000), vec![(0, 100)]);
        ack_sack(&mut s, 1001, 100, &[]);
        s.send_slice(&[b'x'; 1000]).unwrap();
        let mut sent = 0;
        for t in 1001..1010 {
            sent += drain(&mut s, t).len();
        }
        assert_eq!(sent, 10);
        // Everything is lost; the timeout fires (after a probe).
        let mut t = 1010;
        while s.info().timeouts == 0 && t < 3000 {
            drain(&mut s, t);
            t += 1;
        }
        assert_eq!(s.info().timeouts, 1, "{}", s.debug_sender());
        // The first goes at once; the next as soon as the first is acknowledged.
        let first_ack = t + 1;
        ack_sack(&mut s, first_ack, 200, &[]);
        let mut resent = Vec::new();
        for t in first_ack..first_ack + 5 {
            resent.extend(drain(&mut s, t));
        }
        assert!(
            resent.iter().any(|&(o, _)| o == 200),
            "{resent:?} {}",
            s.debug_sender()
        );
        s.cx.set_now(Instant::from_millis(first_ack + 5));
        let pa = s.socket.poll_at(&mut s.cx);
        assert!(
            !matches!(pa, PollAt::Ingress),
            "{pa:?} {}",
            s.debug_sender()
        );
    }

    #[test]
    fn test_after_an_idle_spell_the_window_restarts() {
        let mut s = sack_socket();
        s.set_congestion_control(CongestionControl::Cubic);
        s.congestion_controller.inner_mut().set_mss(100);
        // Grow the window well past the initial one, then go idle.
        let mut t = 0;
        let mut acked = 0;
        for _ in 0..6 {
            s.send_slice(&[b'x'; 2000]).unwrap();
            let mut sent = 0;
            for _ in 0..20 {
                sent += drain(&mut s, t).iter().map(|&(_, l)| l).sum::<usize>();
                t += 1;
            }
            acked += sent;
            t += 10;
            ack_sack(&mut s, t, acked, &[]);
        }
        let grown = s.info().cwnd;
        assert!(grown > 2000, "{grown}");
        // Five seconds idle (many RTOs): the window is back to the initial ten segments.
        t += 5_000;
        s.send_slice(&[b'y'; 3000]).unwrap();
        let mut burst = 0;
        for _ in 0..30 {
            burst += drain(&mut s, t).len();
            t += 1;
        }
        assert!(burst <= 11, "{burst} segments after idling");
        assert!(s.info().cwnd <= 1000);
    }

    #[test]
    fn test_an_ack_carries_no_data_before_pacing_allows() {
        let mut s = sack_socket();
        s.set_congestion_control(CongestionControl::Cubic);
        s.congestion_controller.inner_mut().set_mss(100);
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 1);
        ack_sack(&mut s, 100, 100, &[]);
        s.send_slice(&[b'x'; 1000]).unwrap();
        // The first segment goes; pacing holds the next for ~5 ms.
        assert_eq!(drain(&mut s, 100).len(), 1);
        // The peer sends data: our ACK for it must not carry a paced segment along.
        send(
            &mut s,
            Instant::from_millis(101),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1 + 200),
                window_len: 65535,
                payload: &b"zz"[..],
                ..SEND_TEMPL
            },
        );
        s.cx.set_now(Instant::from_millis(101));
        let mut out = Vec::new();
        let _ = s.socket.dispatch(&mut s.cx, |_, _, (_, tcp)| {
            out.push((tcp.payload.len(), tcp.ack_number));
            Ok::<(), ()>(())
        });
        assert_eq!(out, vec![(0, Some(REMOTE_SEQ + 1 + 2))]);
    }

    #[test]
    fn test_a_duplicate_segment_sets_ts_recent() {
        let mut s = sack_socket();
        s.set_timestamps(true);
        let seg = |tsval: u32| TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: &b"abc"[..],
            timestamp: Some(TcpTimestampRepr::new(tsval, 0)),
            ..SEND_TEMPL
        };
        send(&mut s, Instant::from_millis(1000), &seg(10));
        assert_eq!(s.last_remote_tsval, 10);
        // Our ACK was lost; the peer resends: the answer echoes the resent segment's TSval.
        let reply = send(&mut s, Instant::from_millis(1300), &seg(310)).unwrap();
        assert_eq!(reply.timestamp.map(|t| t.tsecr), Some(310));
    }

    // =========================================================================================//
    // zt review: bugs found in the new sender, each with the test that showed it
    // =========================================================================================//

    /// Karn's rule (RFC 6298 3): an ACK that covers a retransmitted segment gives no round-trip
    /// sample from the segments it acknowledges, not even from the never-retransmitted ones
    /// behind the hole: they arrived long ago, and the ACK was held back by the hole. (Linux:
    /// no `seq_rtt` with `FLAG_RETRANS_DATA_ACKED`.) Before the fix, SRTT took the whole
    /// recovery time as one round trip (seen at 14 s in a random-loss run), and the RTO and
    /// the pacing rate with it.
    #[test]
    fn test_no_rtt_sample_from_segments_behind_a_retransmitted_hole() {
        let mut s = sack_socket();
        s.remote_has_sack = false;
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 0), vec![(0, 100)]);
        ack_sack(&mut s, 50, 100, &[]);
        assert_eq!(s.info().srtt_us, 50_000);
        // Ten segments; the first is lost, the others arrive (their duplicate ACKs are lost).
        s.send_slice(&[b'x'; 1000]).unwrap();
        let mut sent = Vec::new();
        for t in 50..100 {
            sent.extend(drain(&mut s, t));
        }
        assert_eq!(sent.len(), 10);
        // The retransmission timeout resends the first.
        let mut t = 100;
        let mut resent = Vec::new();
        while resent.is_empty() && t < 5000 {
            t += 1;
            resent = drain(&mut s, t);
        }
        assert_eq!(resent, vec![(100, 100)]);
        assert!(t >= 250, "{t}");
        // Its ACK covers everything: 50 ms after the retransmission, hundreds after the
        // others were sent.
        ack_sack(&mut s, t + 50, 1100, &[]);
        let srtt = s.info().srtt_us;
        assert!(
            srtt <= 60_000,
            "SRTT {srtt} µs after a retransmission's ACK"
        );
    }

    /// A peer that selectively acknowledges everything from SND.UNA on (buggy, hostile, or
    /// reneging: a receiver that drops out-of-order data it had reported) leaves the sender
    /// in the open state with every segment marked Sacked: nothing for a tail loss probe to
    /// send. The probe timer, clamped to the retransmission timeout, fired first forever
    /// (`on_sender_timer` checks it before the RTO), found nothing to probe and was re-armed
    /// at the same past instant: `poll_at` said "now" on every call (a busy loop) and the RTO,
    /// which forgets the reneged reports and resends, never ran.
    #[test]
    fn test_reneged_sacks_reach_the_retransmission_timeout() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        ack_sack(&mut s, 50, 0, &[(0, 1000)]);
        assert_eq!(s.rec.state, CaState::Open);
        let mut resent = Vec::new();
        for t in 50..3000 {
            resent.extend(drain(&mut s, t));
            s.cx.set_now(Instant::from_millis(t));
            let at = s.socket.poll_at(&mut s.cx);
            assert!(
                at > PollAt::Time(Instant::from_millis(t)),
                "busy loop at {t} ms: {at:?} {}",
                s.debug_sender()
            );
        }
        assert!(s.info().timeouts >= 1, "{}", s.debug_sender());
        assert_eq!(resent.first(), Some(&(0, 100)), "{resent:?}");
    }

    /// An ACK that covers a retransmission but echoes the TSval of an earlier copy (the
    /// original arrived, only its ACK was lost; an RFC 7323 receiver does not take TS.Recent
    /// from a duplicate, ours included) measures the time since that copy: every back-off in
    /// between. Taken as a round trip, it inflated SRTT by the whole retransmission delay
    /// (samples of 23 s to 57 s on a 0.2 ms path in a random-loss run with a one-segment
    /// window), and the RTO and pacing rate with it.
    #[test]
    fn test_no_rtt_sample_from_an_echo_older_than_the_retransmission() {
        let mut s = sack_socket();
        s.set_timestamps(true);
        s.remote_mss = 112;
        let ts = |tsecr: u32| Some(TcpTimestampRepr { tsval: 1, tsecr });
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 1000), vec![(0, 100)]);
        let ack = |s: &mut TestSocket, t: i64, n: usize, tsecr: u32| {
            send(
                s,
                Instant::from_millis(t),
                &TcpRepr {
                    seq_number: REMOTE_SEQ + 1,
                    ack_number: Some(LOCAL_SEQ + 1 + n),
                    window_len: 65535,
                    timestamp: ts(tsecr),
                    ..SEND_TEMPL
                },
            );
        };
        ack(&mut s, 1050, 100, 1000);
        assert_eq!(s.info().srtt_us, 50_000);
        // The next segment arrives, its ACK is lost; the sender resends it (a loss probe).
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 1100), vec![(100, 100)]);
        let mut t = 1100;
        let mut resent = Vec::new();
        while resent.is_empty() && t < 3000 {
            t += 1;
            resent = drain(&mut s, t);
        }
        assert_eq!(resent, vec![(100, 100)]);
        assert!(t >= 1300, "{t}");
        // The duplicate's ACK echoes the original's TSval.
        ack(&mut s, t + 50, 200, 1100);
        let srtt = s.info().srtt_us;
        assert!(srtt <= 55_000, "SRTT {srtt} µs");
    }

    /// A FIN on a segment whose data runs past the receive window: the data is cut at the
    /// window's edge (only what fits is taken), so the FIN, after the rest, has not arrived.
    /// It was taken anyway: the socket went to CLOSE-WAIT having received only part of the
    /// data and acknowledged the FIN one past what it took, which the sender reads as the
    /// acknowledgement of one more data byte; the rest of the stream was silently lost (found
    /// by the random-loss harness: a retransmission larger than a shrunken window).
    #[test]
    fn test_fin_after_data_beyond_the_window_is_not_taken() {
        let mut s = socket_established();
        let data = [b'z'; 70];
        send(
            &mut s,
            Instant::from_millis(0),
            &TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                control: TcpControl::Fin,
                payload: &data[..],
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.recv_queue(), 64, "what fits in the window");
        assert_eq!(s.state, State::Established, "the FIN is beyond the window");
        recv!(
            s,
            [TcpRepr {
                seq_number: LOCAL_SEQ + 1,
                ack_number: Some(REMOTE_SEQ + 1 + 64),
                window_len: 0,
                ..RECV_TEMPL
            }]
        );
    }

    /// A segment resent after the peer's window shrank is cut to the window (as Linux's
    /// `__tcp_retransmit_skb`): only what fits, or the first segment whole if nothing does
    /// (it probes the window). It went whole, past the window; a receiver drops the excess,
    /// and with the FIN on it the receiver's FIN handling lost data (see
    /// `test_fin_after_data_beyond_the_window_is_not_taken`).
    #[test]
    fn test_retransmission_is_cut_to_the_peer_window() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // The first segment is lost; the receiver's buffer fills with the others, and its
        // window shrinks to 50 bytes.
        let base = LOCAL_SEQ + 1;
        for r in [200, 300, 400] {
            send(
                &mut s,
                Instant::from_millis(50),
                &TcpRepr {
                    seq_number: REMOTE_SEQ + 1,
                    ack_number: Some(base),
                    window_len: 50,
                    sack_ranges: [
                        Some(((base + 100).0 as u32, (base + r).0 as u32)),
                        None,
                        None,
                    ],
                    ..SEND_TEMPL
                },
            );
        }
        let resent = drain(&mut s, 50);
        assert_eq!(resent, vec![(0, 50)], "the lost segment, cut to the window");
        s.sb.check();
    }

    /// Without timestamps, the handshake gave no round-trip sample (smoltcp's estimator used
    /// to time the SYN; the scoreboard only holds data). The RTO stayed at its initial second
    /// until an ACK covered only never-retransmitted data, which on a reordering path without
    /// SACK (every reordering a spurious fast retransmit) may never happen: in a random run
    /// with 5 % loss and 2 ms of jitter, no sample at all in half an hour, the RTO backed off
    /// to 60 s and stayed there.
    #[test]
    fn test_handshake_gives_a_round_trip_sample_without_timestamps() {
        let mut s = socket_syn_sent();
        recv!(
            s,
            time 0,
            Ok(TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: None,
                max_seg_size: Some(BASE_MSS),
                window_scale: Some(0),
                sack_permitted: true,
                ..RECV_TEMPL
            })
        );
        send!(
            s,
            time 30,
            TcpRepr {
                control: TcpControl::Syn,
                seq_number: REMOTE_SEQ,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.info().srtt_us, 30_000, "active open");

        let mut s = socket_syn_received();
        recv!(
            s,
            time 100,
            Ok(TcpRepr {
                control: TcpControl::Syn,
                seq_number: LOCAL_SEQ,
                ack_number: Some(REMOTE_SEQ + 1),
                max_seg_size: Some(BASE_MSS),
                ..RECV_TEMPL
            })
        );
        send!(
            s,
            time 140,
            TcpRepr {
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(LOCAL_SEQ + 1),
                ..SEND_TEMPL
            }
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.info().srtt_us, 40_000, "passive open");
    }

    /// The other side of Karn's rule: segments first sent after the retransmission that an
    /// ACK covers were not held back by the hole it filled, and give a true round trip. Without
    /// them a path that reorders, with neither SACK nor timestamps (every reordering a
    /// spurious fast retransmit, every cumulative ACK covering one), gave no sample at all.
    #[test]
    fn test_rtt_sample_from_segments_sent_after_the_retransmission() {
        let mut s = sack_socket();
        s.remote_has_sack = false;
        s.send_slice(&[b'x'; 2000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // The first segment is late: three duplicate ACKs, a fast retransmit, and new data
        // as proportional rate reduction lets it go.
        let mut sent = Vec::new();
        for _ in 0..6 {
            ack_sack(&mut s, 50, 0, &[]);
            sent.extend(drain(&mut s, 50));
        }
        let retx = sent.iter().position(|&s| s == (0, 100)).unwrap();
        assert!(
            sent[retx..].iter().any(|&(o, _)| o >= 1000),
            "new data: {sent:?}"
        );
        assert_eq!(s.info().srtt_us, 0);
        // One ACK covers it all, 10 ms later.
        let end = sent.iter().map(|&(o, l)| o + l).max().unwrap();
        ack_sack(&mut s, 60, end, &[]);
        assert_eq!(s.info().srtt_us, 10_000);
    }

    /// In LAST-ACK with data still outstanding (the application closed after the peer's FIN,
    /// with a response in flight), a duplicate ACK is the usual carrier of SACK blocks and
    /// window updates. It got a challenge ACK and was dropped (smoltcp-rs/smoltcp#1126, for
    /// the case where only the FIN is outstanding): no fast recovery, no RACK, and a window
    /// that opened stayed closed until a zero-window probe (a random run crawled at 70
    /// bytes/s through a 1 kB receive window).
    #[test]
    fn test_last_ack_with_data_outstanding_processes_duplicate_acks() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        let base = LOCAL_SEQ + 1;
        send(
            &mut s,
            Instant::from_millis(10),
            &TcpRepr {
                control: TcpControl::Fin,
                seq_number: REMOTE_SEQ + 1,
                ack_number: Some(base),
                window_len: 65535,
                ..SEND_TEMPL
            },
        );
        assert_eq!(s.state, State::CloseWait);
        s.close();
        assert_eq!(s.state, State::LastAck);
        let fin = drain(&mut s, 10);
        assert_eq!(fin, vec![(1000, 0)], "the FIN");
        // The first segment is lost; the peer reports the others.
        let mut resent = Vec::new();
        for r in [200, 300, 400] {
            send(
                &mut s,
                Instant::from_millis(50),
                &TcpRepr {
                    seq_number: REMOTE_SEQ + 2,
                    ack_number: Some(base),
                    window_len: 65535,
                    sack_ranges: [
                        Some(((base + 100).0 as u32, (base + r).0 as u32)),
                        None,
                        None,
                    ],
                    ..SEND_TEMPL
                },
            );
            resent.extend(drain(&mut s, 50));
        }
        assert_eq!(resent, vec![(0, 100)], "fast retransmit in LAST-ACK");
    }

    /// Without SACK, a duplicate ACK counts as a segment delivered for proportional rate
    /// reduction (RFC 6937), but it acknowledges no new data: the window must not grow on it
    /// (RFC 5681 3.1: by ACKs "that cumulatively acknowledge new data"). It grew by a segment
    /// per duplicate ACK in the open state (each reordering below the threshold, every
    /// pure-ACK the peer repeats), and the same bytes counted again when the cumulative ACK
    /// came.
    #[test]
    fn test_duplicate_acks_do_not_grow_the_window() {
        let mut s = sack_socket();
        s.remote_has_sack = false;
        s.send_slice(&[b'x'; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        ack_sack(&mut s, 50, 100, &[]);
        let cwnd = s.info().cwnd;
        ack_sack(&mut s, 51, 100, &[]);
        ack_sack(&mut s, 52, 100, &[]);
        assert_eq!(s.info().cwnd, cwnd, "two duplicate ACKs");
        assert_eq!(s.rec.state, CaState::Open);
    }

    /// A retransmission timeout marks every segment lost at once; those behind the first
    /// that did arrive are then cumulatively acknowledged "before being resent", which the
    /// reordering measure (`Delivery::late_first_xmit_us`) took for a hole filled late by
    /// the original: after any timeout whose first segment was really lost, the path counted
    /// as reordering by about the RTO, and RACK's window went to SRTT for sixteen recoveries.
    #[test]
    fn test_a_timeout_is_not_taken_for_reordering() {
        let mut s = sack_socket();
        s.send_slice(&[b'x'; 100]).unwrap();
        assert_eq!(drain(&mut s, 0), vec![(0, 100)]);
        ack_sack(&mut s, 50, 100, &[]);
        // Ten segments; the first is lost, and so are the ACKs of the others.
        s.send_slice(&[b'x'; 1000]).unwrap();
        let mut sent = 0;
        for t in 50..100 {
            sent += drain(&mut s, t).len();
        }
        assert_eq!(sent, 10);
        let mut t = 100;
        while s.info().timeouts == 0 && t < 5000 {
            t += 1;
            drain(&mut s, t);
        }
        assert_eq!(s.info().timeouts, 1);
        // The first segment's retransmission arrives: everything is acknowledged.
        ack_sack(&mut s, t + 50, 1100, &[]);
        assert!(s.sb.is_empty());
        assert!(
            !s.rec.reordering_seen && s.rec.reo_extent_us == 0,
            "reordering of {} µs",
            s.rec.reo_extent_us
        );
    }

    // =========================================================================================//
    // zt review: two sockets back to back over a random lossy, reordering, duplicating path
    // =========================================================================================//

    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % n }
        }
        fn chance(&mut self, p: f64) -> bool {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct NetCfg {
        seed: u64,
        loss: f64,
        dup: f64,
        delay_us: i64,
        jitter_us: i64,
        /// Probability that an ACK towards A gets random (hostile) SACK blocks.
        hostile_sack: f64,
        /// Probability that an ACK towards A gets a random TSecr.
        hostile_tsecr: f64,
        a_bytes: usize,
        b_bytes: usize,
        sack: bool,
        ts: bool,
        iss_a: i32,
        iss_b: i32,
        tx_buf: usize,
        rx_buf: usize,
        /// Readers read at most this many bytes every `read_every_us` (0: everything, always).
        read_chunk: usize,
        read_every_us: i64,
        max_time_us: i64,
        reno: bool,
        /// BBR (wins over `reno`).
        bbr: bool,
        /// No congestion control at all.
        no_cc: bool,
        /// MSS option put in both SYNs (None: as sent).
        syn_mss: Option<u16>,
        nagle: bool,
        ack_delay: bool,
        keep_alive: bool,
        /// Probability that an ACK towards A gets a random window (often zero).
        hostile_window: f64,
        /// Probability that an ACK towards A acknowledges data not received (beyond the
        /// peer's RCV.NXT; the transfer is then not checked, only the sender's sanity).
        hostile_ack: f64,
    }

    impl Default for NetCfg {
        fn default() -> Self {
            NetCfg {
                seed: 1,
                loss: 0.05,
                dup: 0.01,
                delay_us: 10_000,
                jitter_us: 5_000,
                hostile_sack: 0.0,
                hostile_tsecr: 0.0,
                a_bytes: 100_000,
                b_bytes: 20_000,
                sack: true,
                ts: true,
                iss_a: 10000,
                iss_b: -10001,
                tx_buf: 16384,
                rx_buf: 16384,
                read_chunk: 0,
                read_every_us: 0,
                max_time_us: 600_000_000,
                reno: false,
                bbr: false,
                no_cc: false,
                syn_mss: None,
                nagle: true,
                ack_delay: true,
                keep_alive: false,
                hostile_window: 0.0,
                hostile_ack: 0.0,
            }
        }
    }

    struct Pkt {
        at: i64,
        to_b: bool,
        repr: TcpRepr<'static>,
        payload: Vec<u8>,
    }

    fn owned(r: &TcpRepr) -> (TcpRepr<'static>, Vec<u8>) {
        (
            TcpRepr {
                src_port: r.src_port,
                dst_port: r.dst_port,
                control: r.control,
                seq_number: r.seq_number,
                ack_number: r.ack_number,
                window_len: r.window_len,
                window_scale: r.window_scale,
                max_seg_size: r.max_seg_size,
                sack_permitted: r.sack_permitted,
                sack_ranges: r.sack_ranges,
                timestamp: r.timestamp,
                payload: &[],
            },
            r.payload.to_vec(),
        )
    }

    fn stream_byte(seed: u64, i: usize) -> u8 {
        ((i as u64).wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8
    }

    fn set_iss(s: &mut Socket, iss: i32) {
        let iss = TcpSeqNumber(iss);
        s.local_seq_no = iss;
        s.remote_last_seq = iss;
        s.remote_max_seq = iss;
        s.rec.start(iss + 1);
    }

    fn in_data_state(s: &Socket) -> bool {
        matches!(
            s.state,
            State::Established
                | State::FinWait1
                | State::Closing
                | State::CloseWait
                | State::LastAck
        )
    }

    #[track_caller]
    fn check_invariants(s: &Socket, who: &str) {
        s.sb.check();
        if in_data_state(s) {
            assert!(
                s.remote_last_seq >= s.local_seq_no,
                "{who}: nxt behind una: {}",
                s.debug_sender()
            );
            assert!(
                s.remote_max_seq >= s.remote_last_seq,
                "{who}: max behind nxt: {}",
                s.debug_sender()
            );
            if let Some(front) = s.sb.front() {
                assert_eq!(front.start, s.local_seq_no, "{who}: {}", s.debug_sender());
                assert_eq!(
                    s.sb.end(),
                    Some(s.remote_last_seq),
                    "{who}: {}",
                    s.debug_sender()
                );
            }
            let fin = usize::from(matches!(
                s.state,
                State::FinWait1 | State::Closing | State::LastAck
            ));
            assert!(
                s.remote_last_seq - s.local_seq_no <= s.tx_buffer.len() + fin,
                "{who}: nxt beyond the buffer: {}",
                s.debug_sender()
            );
        }
    }

    struct Sim {
        cfg: NetCfg,
        rng: Xorshift,
        a: TestSocket,
        b: TestSocket,
        net: Vec<Pkt>,
        now: i64,
        a_written: usize,
        b_written: usize,
        a_read: usize,
        b_read: usize,
        next_read_at: i64,
        packets: u64,
        trace: bool,
        /// The peer acknowledged data it did not receive: the transfer cannot complete.
        chaos: bool,
    }

    impl Sim {
        fn new(cfg: NetCfg) -> Sim {
            let mut a = socket_with_buffer_sizes(cfg.tx_buf, cfg.rx_buf);
            let mut b = socket_with_buffer_sizes(cfg.tx_buf, cfg.rx_buf);
            let mut addrs = heapless::Vec::<IpCidr, IFACE_MAX_ADDR_COUNT>::new();
            addrs.push(IpCidr::new(REMOTE_ADDR.into(), 24)).unwrap();
            b.cx.set_ip_addrs(addrs);
            for s in [&mut a, &mut b] {
                s.set_ack_delay(cfg.ack_delay.then_some(ACK_DELAY_DEFAULT));
                s.set_timestamps(true);
                s.set_nagle_enabled(cfg.nagle);
                if cfg.keep_alive {
                    s.set_keep_alive(Some(Duration::from_millis(500)));
                }
                s.set_congestion_control(if cfg.no_cc {
                    CongestionControl::None
                } else if cfg.bbr {
                    CongestionControl::Bbr
                } else if cfg.reno {
                    CongestionControl::Reno
                } else {
                    CongestionControl::Cubic
                });
            }
            b.listen(REMOTE_PORT).unwrap();
            a.cx.set_now(Instant::ZERO);
            a.socket.connect(&mut a.cx, REMOTE_END, LOCAL_PORT).unwrap();
            set_iss(&mut a, cfg.iss_a);
            Sim {
                rng: Xorshift(cfg.seed.wrapping_mul(0x9e3779b97f4a7c15) | 1),
                cfg,
                a,
                b,
                net: Vec::new(),
                now: 0,
                a_written: 0,
                b_written: 0,
                a_read: 0,
                b_read: 0,
                next_read_at: 0,
                packets: 0,
                trace: std::env::var("ZT_SIM_TRACE").is_ok(),
                chaos: false,
            }
        }

        fn transmit(&mut self, to_b: bool, repr: TcpRepr<'static>, payload: Vec<u8>) {
            self.packets += 1;
            if self.trace {
                let s = if to_b { &self.a } else { &self.b };
                std::println!(
                    "{:>12} {} {:?} seq={} ack={:?} len={} win={} sack={:?} ts={:?} | srtt={} rto={} cwnd={} {}",
                    self.now,
                    if to_b { "A>B" } else { "B>A" },
                    repr.control,
                    repr.seq_number,
                    repr.ack_number,
                    payload.len(),
                    repr.window_len,
                    repr.sack_ranges,
                    repr.timestamp,
                    s.rtte.srtt_us,
                    s.rtte.retransmission_timeout().total_micros(),
                    s.congestion_controller.inner().window(),
                    s.debug_sender()
                );
            }
            let mut repr = repr;
            if repr.control == TcpControl::Syn {
                if let Some(mss) = self.cfg.syn_mss {
                    repr.max_seg_size = Some(mss);
                }
                if !self.cfg.sack {
                    repr.sack_permitted = false;
                }
                if !self.cfg.ts {
                    repr.timestamp = None;
                }
            }
            if !self.cfg.ts {
                repr.timestamp = None;
            }
            if !to_b && repr.ack_number.is_some() {
                if self.rng.chance(self.cfg.hostile_sack) {
                    let ack = repr.ack_number.unwrap();
                    for k in 0..3 {
                        if self.rng.chance(0.6) {
                            let base = match self.rng.below(4) {
                                0 => ack + self.rng.below(70_000) as usize,
                                1 => ack - self.rng.below(70_000) as usize,
                                2 => TcpSeqNumber(self.rng.next() as i32),
                                _ => ack,
                            };
                            let len = match self.rng.below(3) {
                                0 => self.rng.below(3000) as usize,
                                1 => self.rng.below(1 << 31) as usize,
                                _ => 0,
                            };
                            let (l, r) = if self.rng.chance(0.2) {
                                (base + len, base)
                            } else {
                                (base, base + len)
                            };
                            repr.sack_ranges[k] = Some((l.0 as u32, r.0 as u32));
                        }
                    }
                }
                if repr.control != TcpControl::Syn && self.rng.chance(self.cfg.hostile_window) {
                    repr.window_len = match self.rng.below(3) {
                        0 => 0,
                        1 => self.rng.below(64) as u16,
                        _ => self.rng.next() as u16,
                    };
                }
                if repr.control != TcpControl::Syn && self.rng.chance(self.cfg.hostile_ack) {
                    let ack = repr.ack_number.unwrap();
                    repr.ack_number = Some(ack + self.rng.below(5000) as usize);
                    self.chaos = true;
                }
                if self.rng.chance(self.cfg.hostile_tsecr) {
                    if let Some(ts) = repr.timestamp.as_mut() {
                        ts.tsecr = self.rng.next() as u32;
                    }
                }
            }
            if self.rng.chance(self.cfg.loss) {
                if self.trace {
                    std::println!("             (lost)");
                }
                return;
            }
            let copies = if self.rng.chance(self.cfg.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now
                    + self.cfg.delay_us
                    + self.rng.below(self.cfg.jitter_us.max(0) as u64 + 1) as i64;
                self.net.push(Pkt {
                    at,
                    to_b,
                    repr,
                    payload: payload.clone(),
                });
            }
        }

        fn deliver(&mut self, p: Pkt) {
            let repr = TcpRepr {
                payload: &p.payload,
                ..p.repr
            };
            let (s, src, dst) = if p.to_b {
                (&mut self.b, LOCAL_ADDR, REMOTE_ADDR)
            } else {
                (&mut self.a, REMOTE_ADDR, LOCAL_ADDR)
            };
            s.cx.set_now(Instant::from_micros(self.now));
            let ip_repr = IpReprIpvX(IpvXRepr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Tcp,
                payload_len: repr.buffer_len(),
                hop_limit: 64,
            });
            if !s.socket.accepts(&mut s.cx, &ip_repr, &repr) {
                // The interface answers for a closed port (a socket that is gone).
                if repr.control != TcpControl::Rst {
                    let (_, rst) = Socket::rst_reply(&ip_repr, &repr);
                    let (r, pl) = owned(&rst);
                    self.transmit(!p.to_b, r, pl);
                }
                return;
            }
            let was_listen = s.state == State::Listen;
            let reply = s
                .socket
                .process(&mut s.cx, &ip_repr, &repr)
                .map(|(_, r)| owned(&r));
            if was_listen && s.state == State::SynReceived {
                set_iss(&mut s.socket, self.cfg.iss_b);
            }
            check_invariants(
                s,
                if p.to_b {
                    "B after process"
                } else {
                    "A after process"
                },
            );
            if let Some((r, pl)) = reply {
                self.transmit(!p.to_b, r, pl);
            }
        }

        fn app(&mut self) {
            let cfg = self.cfg;
            let read_now = cfg.read_chunk == 0 || self.now >= self.next_read_at;
            if read_now && cfg.read_chunk != 0 {
                self.next_read_at = self.now + cfg.read_every_us;
            }
            for side in [true, false] {
                let (s, written, read, total, peer_total, seed_tx, seed_rx) = if side {
                    (
                        &mut self.a,
                        &mut self.a_written,
                        &mut self.a_read,
                        cfg.a_bytes,
                        cfg.b_bytes,
                        1,
                        2,
                    )
                } else {
                    (
                        &mut self.b,
                        &mut self.b_written,
                        &mut self.b_read,
                        cfg.b_bytes,
                        cfg.a_bytes,
                        2,
                        1,
                    )
                };
                if s.may_send() && *written < total {
                    let mut chunk = Vec::new();
                    let n = s.send_capacity() - s.send_queue();
                    for i in *written..(*written + n).min(total) {
                        chunk.push(stream_byte(seed_tx, i));
                    }
                    let sent = s.send_slice(&chunk).unwrap();
                    *written += sent;
                }
                if *written == total && matches!(s.state, State::Established | State::CloseWait) {
                    s.close();
                }
                // A slow reader, until the peer has closed (TIME-WAIT discards what is unread).
                let limit = if cfg.read_chunk == 0 || s.rx_fin_received {
                    usize::MAX
                } else {
                    cfg.read_chunk
                };
                if read_now || s.rx_fin_received {
                    let mut budget = limit;
                    while budget > 0 && s.can_recv() {
                        let base = *read;
                        let got = s
                            .recv(|buf| {
                                let n = buf.len().min(budget);
                                for (k, &b) in buf[..n].iter().enumerate() {
                                    assert_eq!(
                                        b,
                                        stream_byte(seed_rx, base + k),
                                        "corrupt byte at {}",
                                        base + k
                                    );
                                }
                                (n, n)
                            })
                            .unwrap();
                        *read += got;
                        budget -= got;
                        assert!(*read <= peer_total);
                        if got == 0 {
                            break;
                        }
                    }
                }
            }
        }

        fn egress(&mut self) {
            for side in [true, false] {
                let mut rounds = 0;
                loop {
                    rounds += 1;
                    let s = if side { &mut self.a } else { &mut self.b };
                    assert!(
                        rounds < 200_000,
                        "livelock at {} µs ({}): {}",
                        self.now,
                        if side { "A" } else { "B" },
                        s.debug_sender()
                    );
                    s.cx.set_now(Instant::from_micros(self.now));
                    let mut out = None;
                    let _ = s.socket.dispatch(&mut s.cx, |_, _, (_, tcp)| {
                        out = Some(owned(&tcp));
                        Ok::<(), ()>(())
                    });
                    check_invariants(
                        s,
                        if side {
                            "A after dispatch"
                        } else {
                            "B after dispatch"
                        },
                    );
                    match out {
                        Some((r, pl)) => self.transmit(side, r, pl),
                        None => {
                            let s = if side { &mut self.a } else { &mut self.b };
                            let now = Instant::from_micros(self.now);
                            match s.socket.poll_at(&mut s.cx) {
                                PollAt::Now => {}
                                PollAt::Time(t) if t <= now => {}
                                _ => break,
                            }
                        }
                    }
                }
            }
        }

        fn done(&self) -> bool {
            let closed = |s: &Socket| matches!(s.state, State::Closed | State::TimeWait);
            self.a_read == self.cfg.b_bytes
                && self.b_read == self.cfg.a_bytes
                && closed(&self.a)
                && closed(&self.b)
        }

        fn next_time(&mut self) -> Option<i64> {
            let mut t: Option<i64> = self.net.iter().map(|p| p.at).min();
            for side in [true, false] {
                let s = if side { &mut self.a } else { &mut self.b };
                s.cx.set_now(Instant::from_micros(self.now));
                let pa = if s.tuple.is_some() || s.state == State::Listen {
                    s.socket.poll_at(&mut s.cx)
                } else {
                    PollAt::Ingress
                };
                let at = match pa {
                    PollAt::Now => Some(self.now),
                    PollAt::Time(i) => Some(i.total_micros().max(self.now)),
                    PollAt::Ingress => None,
                };
                if in_data_state(s) && !s.sb.is_empty() {
                    assert!(
                        at.is_some(),
                        "stall: data outstanding, no timer: {}",
                        s.debug_sender()
                    );
                }
                t = match (t, at) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
            if self.cfg.read_chunk != 0 && (self.a.can_recv() || self.b.can_recv()) {
                let r = self.next_read_at.max(self.now);
                t = Some(t.map_or(r, |x| x.min(r)));
            }
            t
        }

        fn run(&mut self) {
            let mut steps = 0u64;
            loop {
                steps += 1;
                assert!(
                    steps < 2_000_000,
                    "too many steps (at {} µs, {} packets): A {} / B {}",
                    self.now,
                    self.packets,
                    self.a.debug_sender(),
                    self.b.debug_sender()
                );
                self.app();
                self.egress();
                if self.done() {
                    return;
                }
                let next = self.next_time();
                if self.chaos && (next.is_none() || next.unwrap() >= self.cfg.max_time_us) {
                    return;
                }
                let Some(t) = next else {
                    panic!(
                        "stalled at {} µs (nothing scheduled): A {} / B {}; read A {} B {}",
                        self.now,
                        self.a.debug_sender(),
                        self.b.debug_sender(),
                        self.a_read,
                        self.b_read
                    );
                };
                // Time never goes back; a step at the same instant is allowed (app changes).
                self.now = t.max(self.now);
                assert!(
                    self.now < self.cfg.max_time_us,
                    "not done after {} s: A {} / B {}; read A {}/{} B {}/{}",
                    self.now / 1_000_000,
                    self.a.debug_sender(),
                    self.b.debug_sender(),
                    self.a_read,
                    self.cfg.b_bytes,
                    self.b_read,
                    self.cfg.a_bytes
                );
                let mut due = Vec::new();
                let mut k = 0;
                while k < self.net.len() {
                    if self.net[k].at <= self.now {
                        due.push(self.net.swap_remove(k));
                    } else {
                        k += 1;
                    }
                }
                due.sort_by_key(|p| p.at);
                for p in due {
                    self.deliver(p);
                }
            }
        }
    }

    fn sim(cfg: NetCfg) {
        let mut sim = Sim::new(cfg);
        sim.run();
    }

    #[test]
    fn test_zt_review_sim_clean_path() {
        sim(NetCfg {
            loss: 0.0,
            dup: 0.0,
            jitter_us: 0,
            ..NetCfg::default()
        });
    }

    /// zt patch: BBR keeps its rate where random loss holds CUBIC to a few segments: a 2 MB
    /// transfer over 10 ms each way with a tenth of the packets lost (both ways), each
    /// controller over the same five seeds.
    #[test]
    fn test_bbr_keeps_its_rate_under_random_loss() {
        let time = |bbr: bool| -> i64 {
            (1..=5)
                .map(|seed| {
                    let mut sim = Sim::new(NetCfg {
                        seed,
                        loss: 0.1,
                        dup: 0.0,
                        jitter_us: 0,
                        a_bytes: 2_000_000,
                        b_bytes: 0,
                        tx_buf: 262_144,
                        rx_buf: 262_144,
                        bbr,
                        ..NetCfg::default()
                    });
                    sim.run();
                    sim.now
                })
                .sum()
        };
        let (cubic, bbr) = (time(false), time(true));
        std::println!("2 MB at 10 % loss, 5 seeds: CUBIC {cubic} µs, BBR {bbr} µs");
        assert!(bbr * 2 < cubic, "BBR {bbr} µs, CUBIC {cubic} µs");
    }

    fn random_cfg(seed: u64) -> NetCfg {
        let mut cfg = random_cfg_base(seed);
        let mut r = Xorshift(seed.wrapping_mul(0x9e3779b97f4a7c15) ^ 0x5555 | 1);
        for _ in 0..4 {
            r.next();
        }
        cfg.no_cc = r.below(8) == 0;
        cfg.syn_mss = [None, None, None, Some(48), Some(100), Some(536)][r.below(6) as usize];
        cfg.nagle = r.below(3) != 0;
        cfg.ack_delay = r.below(3) != 0;
        cfg.keep_alive = r.below(6) == 0;
        cfg.hostile_window = [0.0, 0.0, 0.0, 0.05][r.below(4) as usize];
        cfg.hostile_ack = [0.0, 0.0, 0.0, 0.0, 0.0, 0.01][r.below(6) as usize];
        // Without SACK a loss costs a round trip or a timeout, and a timeout's back-off ends
        // only with a round-trip sample, which Karn's rule withholds while every ACK covers a
        // retransmission: heavy loss or reordering then backs the RTO off to 60 s for good
        // (classic TCP, as Linux; see the review notes). Not what this sweep is after.
        if !cfg.sack {
            cfg.no_cc = false;
            cfg.loss = cfg.loss.min(0.05);
            if !cfg.ts {
                cfg.jitter_us = cfg.jitter_us.min(cfg.delay_us / 10);
            }
        }
        // Without a controller: no lying windows (tens of kilobytes sent past the real window,
        // all resent after the timeout, no clean sample to end the back-off until they are
        // through), at most 5 % loss (both ends in timeouts, each end's late piggybacked ACKs
        // inflate the other's timestamp samples, and the back-offs feed each other; see the
        // review notes), and no 12-byte segments (thousands in flight: the scoreboard's linear
        // scans make that quadratic, too slow for a sweep).
        if cfg.no_cc {
            cfg.hostile_window = 0.0;
            cfg.loss = cfg.loss.min(0.05);
            if cfg.syn_mss == Some(48) {
                cfg.syn_mss = Some(100);
            }
        }
        cfg
    }

    fn random_cfg_base(seed: u64) -> NetCfg {
        let mut r = Xorshift(seed.wrapping_mul(0x2545f4914f6cdd1d) | 1);
        for _ in 0..4 {
            r.next();
        }
        let delay = [100, 1_000, 10_000, 50_000][r.below(4) as usize];
        let iss = |r: &mut Xorshift| match r.below(3) {
            0 => r.next() as i32,
            1 => i32::MAX - r.below(200_000) as i32,
            _ => -1 - r.below(200_000) as i32,
        };
        NetCfg {
            seed,
            loss: [0.0, 0.01, 0.05, 0.1, 0.2][r.below(5) as usize],
            dup: [0.0, 0.0, 0.02][r.below(3) as usize],
            delay_us: delay,
            jitter_us: [0, delay / 10, delay, 2 * delay][r.below(4) as usize],
            hostile_sack: [0.0, 0.0, 0.1][r.below(3) as usize],
            hostile_tsecr: [0.0, 0.0, 0.0, 0.05][r.below(4) as usize],
            a_bytes: r.below(200_000) as usize,
            b_bytes: r.below(50_000) as usize,
            sack: r.below(4) != 0,
            ts: r.below(3) != 0,
            iss_a: iss(&mut r),
            iss_b: iss(&mut r),
            tx_buf: [2048, 8192, 65536][r.below(3) as usize],
            rx_buf: [1024, 8192, 65536][r.below(3) as usize],
            read_chunk: [0, 0, 500, 4000][r.below(4) as usize],
            read_every_us: [1_000, 20_000, 200_000][r.below(3) as usize],
            max_time_us: 1_800_000_000,
            reno: r.below(2) == 0,
            bbr: r.below(3) == 0,
            ..NetCfg::default()
        }
    }

    /// Seeds from ZT_SIM_FROM (default 0), ZT_SIM_SEEDS of them (default 40: a few seconds;
    /// 10 000 pass, in about 11 minutes); ZT_SIM_SEED runs one (ZT_SIM_TRACE prints its
    /// packets, ZT_SIM_PROGRESS each seed's number).
    #[test]
    fn test_zt_review_sim_sweep() {
        let from: u64 = std::env::var("ZT_SIM_FROM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let n: u64 = std::env::var("ZT_SIM_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        if let Some(seed) = std::env::var("ZT_SIM_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            let cfg = random_cfg(seed);
            std::println!("{cfg:?}");
            let mut sim = Sim::new(cfg);
            sim.run();
            std::println!("A {:?}\nB {:?}", sim.a.info(), sim.b.info());
            return;
        }
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut failures = Vec::new();
        for seed in from..from + n {
            if std::env::var("ZT_SIM_PROGRESS").is_ok() {
                std::eprintln!("seed {seed}");
            }
            let cfg = random_cfg(seed);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim(cfg)));
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(std::format!("seed {seed}: {cfg:?}\n  {msg}"));
            }
        }
        std::panic::set_hook(quiet);
        for f in &failures {
            std::println!("{f}");
        }
        assert!(failures.is_empty(), "{} of {n} failed", failures.len());
    }
}
