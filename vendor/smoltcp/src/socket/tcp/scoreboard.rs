//! zt patch: the sender's scoreboard — every segment sent and not yet cumulatively
//! acknowledged, with what is known of it (in flight, selectively acknowledged, lost), when it
//! was last sent and whether it was ever retransmitted.
//!
//! It is what loss recovery works from: selective acknowledgements (RFC 2018) mark segments
//! delivered, RACK (RFC 8985) marks segments lost by time, and the sender retransmits the lost
//! ones first (RFC 6675). `in_flight` is RFC 6675's "pipe": bytes sent that are neither
//! delivered nor known lost (a retransmitted segment counts again once it is resent).
//!
//! Segments are kept in sequence order and cover the sequence space from SND.UNA to SND.NXT
//! without gaps. Neighbouring segments that are both selectively acknowledged are merged, so
//! the list stays short: about two entries per hole plus the segments in flight.

use alloc::collections::VecDeque;

use super::rate::{Newest, Snapshot};
use crate::wire::TcpSeqNumber;

/// What is known of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SegState {
    /// Sent (or resent) and not known delivered or lost.
    InFlight,
    /// Known lost and not resent since.
    Lost,
    /// Selectively acknowledged.
    Sacked,
}

/// One segment sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seg {
    /// Its first sequence number.
    pub start: TcpSeqNumber,
    /// The sequence space it occupies (data, plus one for a FIN).
    pub len: u32,
    /// Whether it carries the FIN (its last sequence number).
    pub fin: bool,
    /// When it was last (re)transmitted (µs).
    pub xmit_us: i64,
    /// When it was first transmitted (µs).
    pub first_xmit_us: i64,
    pub state: SegState,
    /// Whether it was ever retransmitted (its acknowledgement may be for any copy).
    pub retransmitted: bool,
    /// The connection's delivery state when it was last sent (delivery rate estimation).
    pub rate: Snapshot,
}

impl Seg {
    pub fn end(&self) -> TcpSeqNumber {
        self.start + self.len as usize
    }

    /// Data bytes (the FIN takes a sequence number, not a byte of the buffer).
    pub fn data_len(&self) -> usize {
        self.len as usize - usize::from(self.fin)
    }
}

/// RFC 8985's "sent after": whether a transmission at (`t1`, ending at `end1`) happened after
/// one at (`t2`, `end2`); the sequence number breaks ties between segments sent in one tick.
pub(super) fn sent_after(t1: i64, end1: TcpSeqNumber, t2: i64, end2: TcpSeqNumber) -> bool {
    t1 > t2 || (t1 == t2 && end1 > end2)
}

/// What an acknowledgement newly delivered.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Delivery {
    /// Bytes (sequence space) newly acknowledged, cumulatively or selectively, that were not
    /// selectively acknowledged before (RFC 6937's DeliveredData).
    pub delivered: usize,
    /// Segments among them.
    pub delivered_segs: u32,
    /// The most recently sent of the newly delivered segments whose acknowledgement is not
    /// ambiguous (see `Scoreboard::ack`): (sent at, end), for RACK.
    pub newest: Option<(i64, TcpSeqNumber)>,
    /// Send times of the oldest and newest newly delivered segments that were never
    /// retransmitted (round-trip samples).
    pub oldest_clean_us: Option<i64>,
    pub newest_clean_us: Option<i64>,
    /// A never-retransmitted segment was delivered below the highest sequence number delivered
    /// before it: the path reordered (RFC 8985 6.2).
    pub reordered: bool,
    /// The highest end of a delivered segment (RACK.fack), updated.
    pub fack: TcpSeqNumber,
    /// A segment marked lost turned out delivered (its original, or an earlier copy, arrived).
    pub lost_delivered: bool,
    /// The earliest first transmission among segments that filled a hole late: marked lost
    /// and cumulatively acknowledged before being resent, or resent and cumulatively
    /// acknowledged for an earlier copy (the timestamp echo is older than the resending).
    /// The acknowledgement that fills a hole is sent at once, so how late it comes tells how
    /// far the path reorders. (A segment newly reported by a SACK block, or acknowledged
    /// below `fack` without having been marked, proves nothing of the sort: receivers report
    /// three blocks at a time, and report old ones late.)
    pub late_first_xmit_us: Option<i64>,
    /// zt patch: the latest (re)transmission among the retransmitted segments cumulatively
    /// acknowledged. The segments sent before it may have arrived long before the
    /// acknowledgement (held back by the hole it filled), so none of them gives a round-trip
    /// sample (Karn's rule; Linux's `FLAG_RETRANS_DATA_ACKED`); those sent after it do.
    pub retrans_acked_xmit_us: Option<i64>,
    /// zt patch: a retransmitted segment was cumulatively acknowledged for an earlier copy
    /// (`valid` says no: the timestamp echo predates the last transmission). The echo then
    /// measures the time since that copy, back-offs included: no round-trip sample from it.
    pub stale_echo: bool,
    /// zt patch: the most recently sent of the newly delivered segments, for a delivery rate
    /// sample (whatever its copy: the estimator takes the latest transmission).
    pub rate_newest: Option<Newest>,
}

impl Delivery {
    fn note(&mut self, seg: &Seg, len: usize, cumulative: bool, valid: &dyn Fn(&Seg) -> bool) {
        self.delivered += len;
        self.delivered_segs += 1;
        Newest::keep(&mut self.rate_newest, seg.rate, seg.xmit_us);
        if seg.state == SegState::Lost {
            self.lost_delivered = true;
        }
        if cumulative && seg.retransmitted {
            self.retrans_acked_xmit_us = Some(
                self.retrans_acked_xmit_us
                    .map_or(seg.xmit_us, |t| t.max(seg.xmit_us)),
            );
            if !valid(seg) {
                self.stale_echo = true;
            }
        }
        let late = cumulative
            && if seg.retransmitted {
                !valid(seg)
            } else {
                seg.state == SegState::Lost
            };
        if late {
            self.late_first_xmit_us = Some(
                self.late_first_xmit_us
                    .map_or(seg.first_xmit_us, |t| t.min(seg.first_xmit_us)),
            );
        }
        if !seg.retransmitted {
            if seg.end() < self.fack {
                self.reordered = true;
            }
            self.oldest_clean_us = Some(match self.oldest_clean_us {
                Some(t) => t.min(seg.xmit_us),
                None => seg.xmit_us,
            });
            self.newest_clean_us = Some(match self.newest_clean_us {
                Some(t) => t.max(seg.xmit_us),
                None => seg.xmit_us,
            });
        }
        if seg.end() > self.fack {
            self.fack = seg.end();
        }
        if (!seg.retransmitted || valid(seg))
            && self
                .newest
                .is_none_or(|(t, e)| sent_after(seg.xmit_us, seg.end(), t, e))
        {
            self.newest = Some((seg.xmit_us, seg.end()));
        }
    }
}

/// The scoreboard.
#[derive(Debug, Default)]
pub(super) struct Scoreboard {
    segs: VecDeque<Seg>,
    in_flight: usize,
    sacked: usize,
    lost: usize,
    /// Segments whose state is Lost.
    lost_segs: u32,
    /// Segments whose state is Sacked (merged entries count as one per original segment is
    /// not tracked; this counts entries).
    sacked_entries: u32,
    /// A sequence number at or before the first Lost segment (where `first_lost` starts
    /// looking: with thousands of segments in flight, a scan from the front on every
    /// transmission of a recovery was quadratic).
    lost_hint: Option<TcpSeqNumber>,
}

impl Scoreboard {
    pub fn clear(&mut self) {
        self.segs.clear();
        self.in_flight = 0;
        self.sacked = 0;
        self.lost = 0;
        self.lost_segs = 0;
        self.sacked_entries = 0;
        self.lost_hint = None;
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// RFC 6675's pipe: bytes in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes selectively acknowledged.
    pub fn sacked(&self) -> usize {
        self.sacked
    }

    /// Bytes known lost and not yet resent.
    pub fn lost(&self) -> usize {
        self.lost
    }

    /// Whether any segment is selectively acknowledged.
    pub fn has_sacked(&self) -> bool {
        self.sacked_entries > 0
    }

    /// Segments in flight (for the tail loss probe's timeout).
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    pub fn front(&self) -> Option<&Seg> {
        self.segs.front()
    }

    pub fn back(&self) -> Option<&Seg> {
        self.segs.back()
    }

    pub fn get(&self, i: usize) -> Option<&Seg> {
        self.segs.get(i)
    }

    /// The end of the last segment (SND.NXT as far as the scoreboard knows).
    pub fn end(&self) -> Option<TcpSeqNumber> {
        self.segs.back().map(Seg::end)
    }

    fn add(&mut self, seg: &Seg, len: usize) {
        match seg.state {
            SegState::InFlight => self.in_flight += len,
            SegState::Lost => {
                self.lost += len;
                self.lost_segs += 1;
            }
            SegState::Sacked => {
                self.sacked += len;
                self.sacked_entries += 1;
            }
        }
    }

    fn remove(&mut self, seg: &Seg, len: usize) {
        match seg.state {
            SegState::InFlight => self.in_flight -= len,
            SegState::Lost => {
                self.lost -= len;
                self.lost_segs -= 1;
            }
            SegState::Sacked => {
                self.sacked -= len;
                self.sacked_entries -= 1;
            }
        }
    }

    fn set_state(&mut self, i: usize, state: SegState) {
        let seg = self.segs[i];
        if seg.state == state {
            return;
        }
        if state == SegState::Lost {
            self.lost_hint = Some(match self.lost_hint {
                Some(h) if h <= seg.start => h,
                _ => seg.start,
            });
        }
        self.remove(&seg, seg.len as usize);
        self.segs[i].state = state;
        let seg = self.segs[i];
        self.add(&seg, seg.len as usize);
    }

    /// Records a segment of new data (and/or the FIN) sent at `now_us`. It must start where
    /// the last one ended.
    pub fn push(
        &mut self,
        start: TcpSeqNumber,
        len: usize,
        fin: bool,
        now_us: i64,
        rate: Snapshot,
    ) {
        debug_assert!(self.end().is_none_or(|e| e == start));
        if len == 0 {
            return;
        }
        let seg = Seg {
            start,
            len: len as u32,
            fin,
            xmit_us: now_us,
            first_xmit_us: now_us,
            state: SegState::InFlight,
            retransmitted: false,
            rate,
        };
        self.add(&seg, len);
        self.segs.push_back(seg);
    }

    /// The index of the segment holding `seq`, if any.
    pub fn find(&self, seq: TcpSeqNumber) -> Option<usize> {
        let front = self.segs.front()?;
        if seq < front.start || seq >= self.end()? {
            return None;
        }
        // Segments are sorted and contiguous: binary search on their starts.
        let i = self.segs.partition_point(|s| s.start <= seq);
        Some(i - 1)
    }

    /// Splits segment `i` so that a new entry starts at `at` (strictly inside it).
    fn split(&mut self, i: usize, at: TcpSeqNumber) {
        let seg = self.segs[i];
        debug_assert!(seg.start < at && at < seg.end());
        let head_len = (at - seg.start) as u32;
        let mut tail = seg;
        tail.start = at;
        tail.len = seg.len - head_len;
        let mut head = seg;
        head.len = head_len;
        head.fin = false;
        // Counters are per byte and per entry: the bytes stay, one entry more.
        match seg.state {
            SegState::Lost => self.lost_segs += 1,
            SegState::Sacked => self.sacked_entries += 1,
            SegState::InFlight => {}
        }
        self.segs[i] = head;
        self.segs.insert(i + 1, tail);
    }

    /// Merges neighbouring Sacked entries from index `from` on, up to the first entry that
    /// starts at or after `until`.
    fn merge_sacked(&mut self, from: usize, until: TcpSeqNumber) {
        let mut j = from;
        while j + 1 < self.segs.len() && self.segs[j].start < until {
            if self.segs[j].state == SegState::Sacked && self.segs[j + 1].state == SegState::Sacked
            {
                let Some(next) = self.segs.remove(j + 1) else {
                    break;
                };
                let seg = &mut self.segs[j];
                seg.len += next.len;
                seg.fin = next.fin;
                seg.retransmitted |= next.retransmitted;
                self.sacked_entries -= 1;
            } else {
                j += 1;
            }
        }
    }

    /// Processes a cumulative acknowledgement up to `ack` (everything before it delivered).
    /// `valid` says whether the acknowledgement of a retransmitted segment can be credited
    /// to its last transmission (RFC 8985's checks with timestamps and the minimum RTT).
    pub fn ack(&mut self, ack: TcpSeqNumber, d: &mut Delivery, valid: &dyn Fn(&Seg) -> bool) {
        while let Some(&seg) = self.segs.front() {
            if seg.start >= ack {
                break;
            }
            if seg.end() <= ack {
                self.segs.pop_front();
                self.remove(&seg, seg.len as usize);
                if seg.state != SegState::Sacked {
                    d.note(&seg, seg.len as usize, true, valid);
                }
            } else {
                // Partly acknowledged (the peer acknowledged part of a segment): the entry
                // stays, shorter.
                let done = ack - seg.start;
                match seg.state {
                    SegState::InFlight => self.in_flight -= done,
                    SegState::Lost => self.lost -= done,
                    SegState::Sacked => self.sacked -= done,
                }
                let front = &mut self.segs[0];
                front.start = ack;
                front.len -= done as u32;
                if seg.state != SegState::Sacked {
                    let mut head = seg;
                    head.len = done as u32;
                    head.fin = false;
                    d.note(&head, done, true, valid);
                }
                break;
            }
        }
    }

    /// Processes a SACK block [`left`, `right`) (clipped to the scoreboard).
    pub fn sack(
        &mut self,
        left: TcpSeqNumber,
        right: TcpSeqNumber,
        d: &mut Delivery,
        valid: &dyn Fn(&Seg) -> bool,
    ) {
        let (Some(front), Some(end)) = (self.segs.front(), self.end()) else {
            return;
        };
        let left = left.max(front.start);
        let right = right.min(end);
        if left >= right {
            return;
        }
        let Some(mut i) = self.find(left) else { return };
        if self.segs[i].start < left {
            // The block starts inside a segment: only whole segments are marked, so split.
            if self.segs[i].state == SegState::Sacked {
                i += 1;
            } else {
                self.split(i, left);
                i += 1;
            }
        }
        while i < self.segs.len() {
            let seg = self.segs[i];
            if seg.start >= right {
                break;
            }
            if seg.end() > right {
                if seg.state == SegState::Sacked {
                    break;
                }
                self.split(i, right);
                continue;
            }
            if seg.state != SegState::Sacked {
                d.note(&seg, seg.len as usize, false, valid);
                self.set_state(i, SegState::Sacked);
            }
            i += 1;
        }
        // Merge what the block made Sacked into runs (with the entry before it, too).
        if let Some(first) = self.find(left) {
            self.merge_sacked(first.saturating_sub(1), right);
        }
    }

    /// The first segment marked lost (and not resent since).
    pub fn first_lost(&self) -> Option<usize> {
        if self.lost_segs == 0 {
            return None;
        }
        let from = self.lost_hint.and_then(|h| self.find(h)).unwrap_or(0);
        (from..self.segs.len())
            .find(|&i| self.segs[i].state == SegState::Lost)
            .or_else(|| (0..from).find(|&i| self.segs[i].state == SegState::Lost))
    }

    /// Marks segment `i` lost (if it was in flight).
    pub fn mark_lost(&mut self, i: usize) {
        if self.segs[i].state == SegState::InFlight {
            self.set_state(i, SegState::Lost);
        }
    }

    /// Marks every segment that is not selectively acknowledged lost (a retransmission timeout);
    /// with `forget_sacks`, the selectively acknowledged ones too (the receiver reneged).
    pub fn mark_all_lost(&mut self, forget_sacks: bool) {
        for i in 0..self.segs.len() {
            if forget_sacks || self.segs[i].state != SegState::Sacked {
                self.set_state(i, SegState::Lost);
            }
        }
    }

    /// Puts segments marked lost back in flight (a retransmission proved spurious).
    pub fn unmark_lost(&mut self) {
        self.lost_hint = None;
        if self.lost_segs == 0 {
            return;
        }
        for i in 0..self.segs.len() {
            if self.segs[i].state == SegState::Lost {
                self.set_state(i, SegState::InFlight);
            }
        }
    }

    /// Records that (the first `len` of) segment `i` was retransmitted at `now_us`: it is in
    /// flight again. A segment longer than `len` is split first. Returns the segment as resent.
    pub fn retransmitted(&mut self, i: usize, len: usize, now_us: i64, rate: Snapshot) -> Seg {
        let was_first = self.first_lost() == Some(i);
        let seg = self.segs[i];
        if len > 0 && len < seg.len as usize {
            self.split(i, seg.start + len);
        }
        self.set_state(i, SegState::InFlight);
        let seg = &mut self.segs[i];
        seg.xmit_us = now_us;
        seg.retransmitted = true;
        seg.rate = rate;
        let seg = *seg;
        if was_first {
            // Nothing before it is lost: the next search starts after it.
            self.lost_hint = Some(seg.end());
        }
        seg
    }

    /// RACK's loss detection (RFC 8985 6.2, `RACK_detect_loss`): every segment not delivered
    /// that was sent before the most recently sent delivered one (`rack_xmit_us`,
    /// `rack_end`) and has been outstanding for longer than `rtt_us + reo_wnd_us` is lost.
    /// Returns how many bytes it marked, and when the next one would be due (µs from now), if
    /// any is waiting (the reordering timer).
    pub fn rack_detect_loss(
        &mut self,
        now_us: i64,
        rack_xmit_us: i64,
        rack_end: TcpSeqNumber,
        rtt_us: i64,
        reo_wnd_us: i64,
    ) -> (usize, Option<i64>) {
        let mut marked = 0;
        let mut wait: Option<i64> = None;
        for i in 0..self.segs.len() {
            let seg = self.segs[i];
            if seg.state != SegState::InFlight {
                continue;
            }
            if !sent_after(rack_xmit_us, rack_end, seg.xmit_us, seg.end()) {
                // Never-retransmitted segments are in send order: none further on was sent
                // before the reference. A retransmitted one may have been, so go on.
                if seg.retransmitted {
                    continue;
                }
                break;
            }
            let remaining = seg.xmit_us + rtt_us + reo_wnd_us - now_us;
            if remaining <= 0 {
                self.set_state(i, SegState::Lost);
                marked += seg.len as usize;
            } else {
                wait = Some(wait.map_or(remaining, |w| w.max(remaining)));
                // Every segment further on was sent later (never-retransmitted ones in order,
                // retransmitted ones later still): none is due either. The timer fires for
                // this one, and the next pass goes on from there. (Without this break each ACK
                // of a recovery scanned the whole window: quadratic with many segments.)
                if !seg.retransmitted {
                    break;
                }
            }
        }
        (marked, wait)
    }

    /// Checks the counters against the segments (tests).
    #[cfg(test)]
    pub fn check(&self) {
        let (mut f, mut s, mut l, mut ls, mut se) = (0, 0, 0, 0, 0);
        let mut prev: Option<TcpSeqNumber> = None;
        for seg in &self.segs {
            assert!(seg.len > 0);
            if let Some(p) = prev {
                assert_eq!(p, seg.start, "contiguous");
            }
            prev = Some(seg.end());
            match seg.state {
                SegState::InFlight => f += seg.len as usize,
                SegState::Lost => {
                    l += seg.len as usize;
                    ls += 1;
                }
                SegState::Sacked => {
                    s += seg.len as usize;
                    se += 1;
                }
            }
        }
        if let Some(first) = self.segs.iter().find(|s| s.state == SegState::Lost) {
            assert!(
                self.lost_hint
                    .is_none_or(|h| h <= first.start || self.find(h).is_none()),
                "the lost hint is past the first lost segment"
            );
        }
        assert_eq!(
            (f, s, l, ls, se),
            (
                self.in_flight,
                self.sacked,
                self.lost,
                self.lost_segs,
                self.sacked_entries
            )
        );
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn seq(n: i32) -> TcpSeqNumber {
        TcpSeqNumber(n)
    }

    fn always(_: &Seg) -> bool {
        true
    }

    fn board(n: usize, len: usize) -> Scoreboard {
        let mut b = Scoreboard::default();
        for i in 0..n {
            b.push(seq((i * len) as i32), len, false, i as i64 * 10, Snapshot::default());
        }
        b.check();
        b
    }

    #[test]
    fn cumulative_ack_pops_and_trims() {
        let mut b = board(4, 100);
        let mut d = Delivery::default();
        b.ack(seq(150), &mut d, &always);
        b.check();
        assert_eq!(d.delivered, 150);
        assert_eq!(d.delivered_segs, 2);
        assert_eq!(b.front().unwrap().start, seq(150));
        assert_eq!(b.in_flight(), 250);
        assert_eq!(d.oldest_clean_us, Some(0));
        assert_eq!(d.newest_clean_us, Some(10));
    }

    #[test]
    fn sack_marks_splits_and_merges() {
        let mut b = board(6, 100);
        let mut d = Delivery::default();
        b.sack(seq(200), seq(400), &mut d, &always);
        b.check();
        assert_eq!(d.delivered, 200);
        assert_eq!(b.sacked(), 200);
        assert_eq!(b.in_flight(), 400);
        // Merged into one entry: 0,100,[200..400],400,500.
        assert_eq!(b.len(), 5);
        // A block starting inside a segment splits it.
        let mut d = Delivery::default();
        b.sack(seq(450), seq(600), &mut d, &always);
        b.check();
        assert_eq!(d.delivered, 150);
        assert_eq!(b.sacked(), 350);
        // Cumulative ACK of everything.
        let mut d = Delivery::default();
        b.ack(seq(600), &mut d, &always);
        b.check();
        assert!(b.is_empty());
        assert_eq!(d.delivered, 250, "only what was not sacked before");
        assert!(
            !d.reordered,
            "the first segments arrived last, but were never sent after"
        );
    }

    #[test]
    fn reordering_is_a_late_delivery_below_fack() {
        let mut b = board(4, 100);
        let mut d = Delivery::default();
        b.sack(seq(200), seq(300), &mut d, &always);
        assert!(!d.reordered);
        let fack = d.fack;
        let mut d = Delivery {
            fack,
            ..Delivery::default()
        };
        // Segment 100..200 arrives after 200..300 without having been retransmitted.
        b.sack(seq(100), seq(200), &mut d, &always);
        assert!(d.reordered);
    }

    #[test]
    fn rack_marks_older_segments_lost_after_rtt_plus_window() {
        let mut b = board(5, 100); // sent at 0, 10, 20, 30, 40
        let mut d = Delivery::default();
        b.sack(seq(300), seq(400), &mut d, &always); // seg sent at 30 delivered
        let (t, e) = d.newest.unwrap();
        assert_eq!(t, 30);
        // now = 130, rtt = 100, reo_wnd = 5: segments sent at 0, 10, 20 are due at 105, 115,
        // 125: all lost; the one sent at 40 is after the reference.
        let (marked, wait) = b.rack_detect_loss(130, t, e, 100, 5);
        b.check();
        assert_eq!(marked, 300);
        assert_eq!(wait, None);
        assert_eq!(b.first_lost(), Some(0));
        // Retransmit the first: in flight again, marked retransmitted.
        let s = b.retransmitted(0, 100, 140, Snapshot::default());
        assert!(s.retransmitted);
        assert_eq!(b.first_lost(), Some(1));
        b.check();
        // With a later reference, a retransmission sent before it is lost again, and so is the
        // last segment (sent at 40, before the reference too).
        let (marked, wait) = b.rack_detect_loss(160, 150, seq(500), 10, 0);
        assert_eq!(marked, 200);
        assert_eq!(wait, None);
        b.check();
    }

    #[test]
    fn rack_waits_for_segments_not_yet_due() {
        let mut b = board(3, 100); // 0, 10, 20
        let (marked, wait) = b.rack_detect_loss(100, 20, seq(300), 90, 5);
        assert_eq!(marked, 100, "sent at 0: due at 95");
        assert_eq!(wait, Some(5), "sent at 10: due at 105");
    }

    #[test]
    fn rto_marks_all_but_sacked_and_can_be_undone() {
        let mut b = board(4, 100);
        let mut d = Delivery::default();
        b.sack(seq(100), seq(200), &mut d, &always);
        b.mark_all_lost(false);
        b.check();
        assert_eq!(b.lost(), 300);
        assert_eq!(b.in_flight(), 0);
        b.unmark_lost();
        b.check();
        assert_eq!(b.in_flight(), 300);
        b.mark_all_lost(true);
        b.check();
        assert_eq!(b.lost(), 400);
    }

    #[test]
    fn fin_counts_one_sequence_number() {
        let mut b = Scoreboard::default();
        b.push(seq(0), 100, false, 0, Snapshot::default());
        b.push(seq(100), 51, true, 0, Snapshot::default());
        assert_eq!(b.back().unwrap().data_len(), 50);
        let mut d = Delivery::default();
        b.ack(seq(151), &mut d, &always);
        assert!(b.is_empty());
        b.check();
    }

    #[test]
    fn partial_retransmission_splits() {
        let mut b = board(2, 100);
        b.mark_lost(0);
        let s = b.retransmitted(0, 60, 5, Snapshot::default());
        assert_eq!(s.len, 60);
        assert_eq!(b.len(), 3);
        assert_eq!(b.lost(), 40);
        b.check();
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut b = Scoreboard::default();
        let base = TcpSeqNumber(i32::MAX - 150);
        for i in 0..4 {
            b.push(base + i * 100, 100, false, i as i64, Snapshot::default());
        }
        let mut d = Delivery::default();
        b.sack(base + 200, base + 300, &mut d, &always);
        b.check();
        assert_eq!(b.sacked(), 100);
        assert_eq!(b.find(base + 250), Some(2));
        let mut d = Delivery::default();
        b.ack(base + 400, &mut d, &always);
        assert!(b.is_empty());
    }
}
