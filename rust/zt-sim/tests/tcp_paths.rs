//! TCP between two user-space stacks over impaired paths, on the simulator's virtual clock.
//!
//! Each named path ([`Preset`]) gets a 20 MB transfer through ZeroTier (the overlay lab: real
//! zt-proto, encryption, fragmentation at the physical MTU, the network's 2800-byte MTU) that
//! must complete intact, without a stall (no receiver progress) of a second or more, and at no
//! less than a floor stated per path in [`floor`] with where it comes from: the bottleneck (a
//! clean path), the loss-limited throughput of a Reno/CUBIC-friendly sender (Mathis et al.)
//! where that is what limits, and the kernel's TCP on the same impairment between namespaces
//! (`benches/py/bench_paths.py`, docs/benchmarks.md) for comparison. Each floor is also at most
//! about half of what this sender reaches over seeds 1–5 (so that a regression fails), and
//! the figures of the sender before issue 14 are given beside it (most did not finish).
//! Property tests run random paths on the direct lab (frames straight over the link model)
//! and ask for intact completion within a generous time.
//!
//! The failure message is the transfer's report (goodput, stalls, retransmissions, timeouts,
//! link counters, both sockets' `info()`).
//!
//! Run: `cargo test -p zt-sim --test tcp_paths` (a few seconds in a debug build).
//! The heavier sweeps are ignored by default:
//! `cargo test -p zt-sim --test tcp_paths -- --ignored --nocapture` prints the table of every
//! path over several seeds and sweeps thousands of random paths on the direct lab;
//! `cargo run --release -p zt-sim --example tcp_lab -- --seeds 5` prints the same table faster.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use zt_sim::link::{Bottleneck, GilbertElliott, LinkProfile, PathProfile, Preset};
use zt_sim::tcp::{DirectLab, Ending, OverlayLab, Report, Transfer};

const MB: f64 = 1e6;
/// The real benchmark's transfer size.
const BYTES: u64 = 20_000_000;
/// A stall this long fails a path test: a kernel-quality sender recovers a loss within a
/// few round trips, or one retransmission timeout (200 ms minimum) with one back-off.
const MAX_STALL_US: i64 = 1_000_000;

/// Throughput a loss-limited Reno/CUBIC-friendly sender sustains (Mathis et al.):
/// `1.22 × MSS / RTT / √p` bytes per second, for segment loss `p`.
fn mathis(mss: f64, rtt_s: f64, p: f64) -> f64 {
    1.22 * mss / rtt_s / p.sqrt()
}

/// Loss of a full-sized segment over the overlay: a 2800-byte frame is two UDP datagrams at
/// the 1432-byte physical MTU, and losing either loses the segment.
fn segment_loss(datagram_loss: f64) -> f64 {
    1.0 - (1.0 - datagram_loss).powi(2)
}

/// The overlay's TCP payload per segment (2800 − 40 − 12 bytes of timestamp option).
const MSS: f64 = 2748.0;

/// The floor (MB/s) a path's transfer must reach, and why.
fn floor(p: Preset) -> (f64, String) {
    // The bottleneck: 125 MB/s of datagrams, ≈ 118 MB/s of TCP payload after the overlay's
    // and the timestamps' headers.
    const LINE: f64 = 118.0;
    match p {
        Preset::Clean | Preset::Lan => (
            100.0,
            format!("85 % of the bottleneck's {LINE} MB/s of payload (118 reached)"),
        ),
        Preset::Loss1 => (
            80.0,
            "2 % segment loss at a 0.3 ms RTT: Mathis allows far more than the bottleneck; 70 % \
             of it (116.8-117.0 reached; before issue 14: 3.7-4.5, 21-26 stalls; the kernel's \
             CUBIC on this impairment in namespaces: 40 MB/s, CPU-bound)"
                .into(),
        ),
        Preset::Loss5 => {
            let m = mathis(MSS, 0.000_3, segment_loss(0.05)) / MB;
            (
                10.0,
                format!(
                    "9.75 % segment loss at 0.3 ms: Mathis {m:.0} MB/s without timeouts; each \
                     timeout costs 200 ms (18.6-27.1 reached with 1-3 of them; before issue 14 \
                     it never finished; the kernel's CUBIC in namespaces: 2-3.4 MB/s)"
                ),
            )
        }
        Preset::Loss5Reorder25Delay10 => {
            let m = mathis(MSS, 0.020, segment_loss(0.05)) / MB;
            (
                0.35,
                format!(
                    "9.75 % segment loss at a 20 ms RTT: Mathis {m:.2} MB/s (0.51-0.53 \
                     reached; before issue 14 it never finished; the kernel's CUBIC in \
                     namespaces: 0.28 MB/s, its BBR, which ignores random loss: 1.1)"
                ),
            )
        }
        Preset::Dup1Corrupt05 => (
            80.0,
            "1 % duplicated, 0.5 % corrupted (lost at the MAC check) datagrams: as 1 % loss \
             (115.6-115.9 reached; before issue 14: 17-34)"
                .into(),
        ),
        Preset::Delay20Jitter5 => (
            20.0,
            "nothing lost, reordered by up to 10 ms at a 40 ms RTT: a sender that takes no \
             reordering for loss is bound by slow start and its window over 20 MB (37.5-41.7 \
             reached; before issue 14: 0.67-0.88; the kernel's CUBIC in namespaces: 20)"
                .into(),
        ),
        Preset::BurstyLoss1 => (
            30.0,
            "1 % loss in bursts of ~3 datagrams: fewer, longer loss events than 1 % loss; a \
             burst at the tail can cost one timeout (52.6-117.7 reached; before issue 14: \
             4.4-6.3 with a 1.4 s stall)"
                .into(),
        ),
        Preset::Rtt100Loss1 => {
            let m = mathis(MSS, 0.1, segment_loss(0.01)) / MB;
            (
                0.2,
                format!(
                    "2 % segment loss at a 100 ms RTT: Mathis {m:.2} MB/s (0.25-0.28 reached; \
                     before issue 14: 0.16-0.18, not finished in 120 s)"
                ),
            )
        }
        Preset::Asymmetric => {
            let m = mathis(MSS, 0.025, segment_loss(0.02)) / MB;
            (
                0.5,
                format!(
                    "4 % segment loss at a 25 ms RTT: Mathis {m:.2} MB/s (0.67-0.71 reached; \
                     before issue 14: 0.28 with 1.2 s stalls)"
                ),
            )
        }
    }
}

/// Transfers `BYTES` A → B over `path` through ZeroTier and checks the report against the
/// floor `bound` MB/s (intact, no stall of a second or more). The time limit is generous
/// (three times what the floor needs, at least a minute) so that a failing run shows how far
/// it got.
fn check(path: &PathProfile, seed: u64, bound: f64, why: &str) -> Report {
    check_with(path, seed, bound, why, |spec| spec)
}

/// [`check`] with the transfer's spec adjusted by `adjust` (its congestion control, say).
fn check_with(
    path: &PathProfile,
    seed: u64,
    bound: f64,
    why: &str,
    adjust: impl FnOnce(Transfer) -> Transfer,
) -> Report {
    let limit_s = (3.0 * BYTES as f64 / (bound * MB)).max(60.0);
    let mut lab = OverlayLab::new(path, seed).unwrap();
    let r = lab.transfer(&adjust(Transfer::new(BYTES).within_s(limit_s)));
    let f = r.flow();
    assert!(
        r.completed() && f.goodput() >= bound * MB && f.longest_stall_us() < MAX_STALL_US,
        "\"{}\": needs {BYTES} B intact at ≥ {bound:.2} MB/s ({why}) with no stall ≥ 1 s; \
         got:\n{r}",
        path.name
    );
    r
}

fn check_preset(p: Preset) {
    let (bound, why) = floor(p);
    check(&p.path(), 1, bound, &why);
}

/// One test per preset (`test_name => Preset`): its transfer over the overlay meets its [`floor`].
macro_rules! preset_tests {
    ($($name:ident => $preset:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_preset(Preset::$preset);
        }
    )*};
}

preset_tests! {
    overlay_clean => Clean,
    overlay_loss_1 => Loss1,
    overlay_loss_5 => Loss5,
    overlay_loss_5_reorder_25_delay_10 => Loss5Reorder25Delay10,
    overlay_dup_1_corrupt_05 => Dup1Corrupt05,
    overlay_delay_20_jitter_5 => Delay20Jitter5,
    overlay_bursty_loss_1 => BurstyLoss1,
    overlay_rtt_100_loss_1 => Rtt100Loss1,
    overlay_asymmetric_data_on_the_lossy_direction => Asymmetric,
    overlay_lan => Lan,
}

/// BBR on the path where CUBIC is loss-bound: it keeps more of the path's rate through random
/// loss. Floor: half as much again as CUBIC's 0.51-0.54 here, about half of what BBR reached
/// (1.46-1.57 MB/s over seeds 1-3; the kernel's BBR on this impairment in namespaces: 1.1-1.4).
#[test]
fn overlay_loss_5_reorder_25_delay_10_bbr() {
    check_with(
        &Preset::Loss5Reorder25Delay10.path(),
        1,
        0.8,
        "BBR: half as much again as CUBIC's 0.51-0.54 here",
        |spec| spec.with_congestion(zt_stack::smoltcp::socket::tcp::CongestionControl::Bbr),
    );
}

#[test]
fn overlay_asymmetric_acks_on_the_lossy_direction() {
    // Data on the clean direction, only ACKs cross the lossy one: cumulative ACKs make their
    // loss nearly free, so the sender is limited by slow start and its windows over the 25 ms
    // round trip: 1 MiB / 25 ms = 42 MB/s at the default buffers, ≈ 32 MB/s on average over
    // 20 MB after 6 round trips of slow start; 70 % of that. (Seed 1 loses the client's SYN:
    // before issue 14 the handshake's retransmission timeout set CUBIC's ssthresh to 2 × 1024
    // bytes and the connection never slow-started: 4.5 MB/s.)
    let path = Preset::Asymmetric.path().reversed();
    let rtt = 0.025;
    let window_limited = (1u64 << 20) as f64 / rtt;
    let slow_start = 6.0 * rtt;
    let reference = BYTES as f64 / (slow_start + BYTES as f64 / window_limited) / MB;
    check(
        &path,
        1,
        0.7 * reference,
        &format!("70 % of a 1 MiB window / 25 ms RTT after 6 RTTs of slow start = {reference:.1}"),
    );
}

/// The dead stop at 5 % loss (issue 14: both runs stopped dead at 9,699,328 bytes).
///
/// Seed 44 on the overlay at 5 % datagram loss each way (≈ 10 % segment loss): from 48.2 s
/// after the connection was established no byte reaches the reader for 50.8 s, although the
/// path delivers 95 % of the datagrams (in a 60 s run, as the benchmark's, the transfer ends
/// there: 4.2 MB). What the sender does (from the segment trace, `OverlayLab::trace`;
/// `cargo run -p zt-sim --example tcp_lab -- --preset 2 --seed 44 --trace 48 100`):
///
/// 1. A retransmission timeout goes back to SND.UNA (`dispatch` rewinds `remote_last_seq`)
///    with CUBIC's window at one segment (`Cubic::on_rto`) and doubles the RTO
///    (`RttEstimator::on_rto`). The segment or its ACK is lost: after 0.2, 0.4, 0.8, 1.6,
///    3.2, 6.4 and 12.8 s the same segment goes out again (each loss ≈ 15 %: two fragments
///    and an ACK).
/// 2. When an ACK finally comes (here after 25.4 s), the RTO stays at 25.6 s: only
///    `RttEstimator::sample` resets it, and there is nothing to sample. `on_retransmit`
///    dropped the pending measurement, `on_send` times only segments beyond the highest
///    sequence number ever sent (`max_seq_sent`), and TCP timestamps are off, so the
///    acknowledgement of a retransmission carries no round-trip time (Karn's rule). `process`
///    restarts the retransmit timer with the backed-off value on every ACK of new data.
/// 3. The sender is still below its highest sequence number sent (go-back-N after the
///    timeout, one segment more per ACK in slow start), so two segments are in flight: one of
///    them is lost, one duplicate ACK comes back (three are needed for a fast retransmit), and
///    the next timeout is 25.6 s away.
///
/// A kernel-quality sender does not stop here: RACK/TLP or SACK recover the lost segment
/// within a round trip, and TCP timestamps (or Linux's reset of the back-off on the ACK of a
/// retransmission) bring the RTO back to ≈ 200 ms at once.
#[test]
fn the_dead_stop_at_5_percent_loss() {
    let mut lab = OverlayLab::new(&Preset::Loss5.path(), 44).unwrap();
    let r = lab.transfer(&Transfer::new(BYTES).within_s(120.0));
    let f = r.flow();
    assert!(
        r.completed() && f.longest_stall_us() < MAX_STALL_US,
        "the transfer must complete without stopping; got:\n{r}"
    );
}

#[test]
fn both_ways_at_once_on_a_lan() {
    // Full duplex: data and ACKs share each direction; each flow should still get most of
    // its direction's bottleneck (same bound as one flow on the clean path).
    let mut lab = OverlayLab::new(&Preset::Lan.path(), 3).unwrap();
    let mut spec = Transfer::new(BYTES / 2).within_s(60.0);
    spec.both_ways = true;
    let r = lab.transfer(&spec);
    assert!(r.completed(), "{r}");
    for f in &r.flows {
        assert!(
            f.goodput() >= 0.7 * 102.0 * MB && f.longest_stall_us() < MAX_STALL_US,
            "{r}"
        );
    }
}

#[test]
fn a_slow_reader_paces_the_transfer_without_stalls() {
    // The reader takes 5 MB/s on a LAN that could carry 20 times more: the sender must follow
    // it (full receive buffer, zero windows, window updates) without stalling or losing bytes.
    let mut lab = DirectLab::new(&Preset::Lan.path(), 5);
    let mut spec = Transfer::new(5_000_000).within_s(30.0);
    spec.read_rate = Some(5_000_000);
    let r = lab.transfer(&spec);
    let f = r.flow();
    assert!(r.completed(), "{r}");
    assert!(f.goodput() >= 0.9 * 5.0 * MB, "{r}");
    assert!(
        f.goodput() <= 1.05 * 5.0 * MB,
        "the reader's rate holds: {r}"
    );
    assert!(f.stalls.is_empty(), "{r}");
}

#[test]
fn the_labs_are_deterministic() {
    let path = Preset::Loss5Reorder25Delay10.path();
    let run = || {
        let mut lab = DirectLab::new(&path, 9);
        let r = lab.transfer(&Transfer::new(1_000_000).within_s(120.0));
        (r.run_us, r.flow().delivered, r.link_ab, r.link_ba, r.steps)
    };
    assert_eq!(run(), run());
    let run = || {
        let mut lab = OverlayLab::new(&Preset::Loss1.path(), 9).unwrap();
        let r = lab.transfer(&Transfer::new(1_000_000).within_s(120.0));
        (r.run_us, r.flow().delivered, r.link_ab, r.link_ba, r.steps)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_path_that_loses_everything_ends_at_the_limit() {
    // Nothing gets through: the connection is never established, and the run ends at its
    // time limit instead of hanging (event-driven time: the SYN's back-offs only).
    let path = PathProfile::symmetric(
        "black hole",
        LinkProfile {
            loss: 1.0,
            ..LinkProfile::default()
        },
    );
    let mut lab = DirectLab::new(&path, 1);
    let mut spec = Transfer::new(1_000_000).within_s(300.0);
    spec.give_up_after_us = None;
    let r = lab.transfer(&spec);
    assert!(!r.completed());
    assert_eq!(r.ended, Ending::TimeLimit);
    assert_eq!(r.established_us, None);
    assert!(r.steps < 1_000, "{} steps", r.steps);
}

#[test]
fn odd_transfers_end_cleanly() {
    let path = Preset::Lan.path();
    let mut lab = DirectLab::new(&path, 2);
    let mut empty = Transfer::new(0).within_s(10.0);
    empty.buffers = (0, usize::MAX);
    let r = lab.transfer(&empty);
    assert!(r.completed() && r.ended == Ending::Completed, "{r}");
    let mut spec = Transfer::new(10_000).within_s(-1.0);
    spec.port = 7001;
    let r = lab.transfer(&spec);
    assert!(!r.completed() && r.ended == Ending::TimeLimit, "{r}");
    // The lab carries on after odd runs: a normal transfer on another port.
    let mut spec = Transfer::new(100_000);
    spec.port = 7002;
    assert!(lab.transfer(&spec).completed());
}

// ----- property tests on the direct lab ---------------------------------------------------------

fn link_strategy() -> impl Strategy<Value = LinkProfile> {
    (
        (0i64..30_000, 0u32..=100, 0.0..0.3f64, 0.0..0.05f64),
        proptest::option::weighted(
            0.3,
            (0.0..0.01f64, 0.2..0.8f64, 0.3..1.0f64).prop_map(|(gb, bg, lb)| GilbertElliott {
                p_good_to_bad: gb,
                p_bad_to_good: bg,
                loss_good: 0.0,
                loss_bad: lb,
                idle_reset_us: 0,
            }),
        ),
        (0.0..0.02f64, 0.0..0.01f64),
        (1_000_000u64..=125_000_000, 64_000usize..4_000_000),
    )
        .prop_map(
            |((delay, jitter_pct, reorder, loss), burst, (dup, corrupt), (rate, queue))| {
                LinkProfile {
                    delay_us: delay,
                    jitter_us: delay * i64::from(jitter_pct) / 200,
                    reorder,
                    loss,
                    burst,
                    duplicate: dup,
                    corrupt,
                    bottleneck: Some(Bottleneck {
                        rate,
                        queue_limit: queue,
                        overhead: 28,
                    }),
                }
            },
        )
}

fn transfer_strategy() -> impl Strategy<Value = Transfer> {
    (
        16_000u64..1_000_000,
        any::<bool>(),
        prop::sample::select(vec![16 * 1024, 64 * 1024, 256 * 1024, 1 << 20]),
        proptest::option::weighted(0.2, 1_000_000u64..50_000_000),
        any::<bool>(),
    )
        .prop_map(|(bytes, both_ways, buffer, read_rate, nagle)| {
            let mut t = Transfer::new(bytes);
            t.both_ways = both_ways;
            t.buffers = (buffer, buffer);
            t.read_rate = read_rate;
            t.nagle = nagle;
            // Generous: ten virtual minutes, giving up after two without progress.
            t.time_limit_us = 600_000_000;
            t.give_up_after_us = Some(120_000_000);
            t
        })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 64,
        rng_seed: RngSeed::Fixed(0x7a74_7463_7000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn completes(ab: LinkProfile, ba: LinkProfile, spec: &Transfer, seed: u64) -> Result<(), String> {
    let path = PathProfile {
        name: "random".into(),
        ab,
        ba,
    };
    let r = DirectLab::new(&path, seed).transfer(spec);
    if r.completed() {
        Ok(())
    } else {
        Err(format!("{path:?}\n{spec:?}\n{r}"))
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Any path, any buffer sizes, one way or both, a slow reader or not: every byte arrives,
    /// in order, within ten virtual minutes.
    #[test]
    fn random_paths_complete_intact(
        ab in link_strategy(),
        ba in link_strategy(),
        spec in transfer_strategy(),
        seed in any::<u64>(),
    ) {
        completes(ab, ba, &spec, seed).map_err(TestCaseError::fail)?;
    }
}

/// The same over 2000 cases (about 25 s in a debug build).
/// `cargo test -p zt-sim --test tcp_paths -- --ignored random_paths_sweep --nocapture`
#[test]
#[ignore = "sweep: thousands of random paths"]
fn random_paths_sweep() {
    let mut runner = proptest::test_runner::TestRunner::new(config(2000));
    let result = runner.run(
        &(
            link_strategy(),
            link_strategy(),
            transfer_strategy(),
            any::<u64>(),
        ),
        |(ab, ba, spec, seed)| completes(ab, ba, &spec, seed).map_err(TestCaseError::fail),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Today's figures for every path, over the overlay, a few seeds each (the table in the
/// sender work's notes). `cargo test -p zt-sim --test tcp_paths -- --ignored table --nocapture`
#[test]
#[ignore = "report: prints a table"]
fn table() {
    let seeds = [1u64, 2, 3];
    eprintln!(
        "| path | seed | completed | MB/s | of bound | stalls | longest stall (s) | segs retrans | \
         timeouts | recoveries |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    for p in Preset::ALL {
        let (bound, _) = floor(p);
        for &seed in &seeds {
            let mut lab = OverlayLab::new(&p.path(), seed).unwrap();
            let r = lab.transfer(&Transfer::new(BYTES).within_s(120.0));
            let f = r.flow();
            eprintln!(
                "| {} | {} | {} | {:.2} | {:.0} % | {} | {:.2} | {} | {} | {} |",
                p.name(),
                seed,
                if r.completed() {
                    "yes".to_string()
                } else {
                    format!("no ({:.1} MB)", f.delivered as f64 / MB)
                },
                f.goodput() / MB,
                100.0 * f.goodput() / (bound * MB),
                f.stalls.len(),
                f.longest_stall_us() as f64 / 1e6,
                f.sender.segs_retrans,
                f.sender.timeouts,
                f.sender.recoveries
            );
        }
    }
}
