//! Runs TCP transfers on the simulator's labs and prints their reports: for measuring a sender
//! on the named paths and for diagnosing one run (segment and datagram traces).
//!
//! ```text
//! cargo run -p zt-sim --example tcp_lab -- [options]
//!   --direct            the direct lab (frames over the link model) instead of the overlay
//!   --preset N|NAME     one path (index into Preset::ALL, or its name); default: every path
//!   --seed S            the lab's seed (default 1)
//!   --seeds N           seeds S..S+N, one summary line each (a sweep)
//!   --bytes B           bytes to move (default 20000000)
//!   --limit SECONDS     virtual time limit (default 120)
//!   --both-ways         both ends send at once
//!   --cc NAME           the congestion control: cubic (default), bbr or reno
//!   --trace FROM TO     print the TCP segments (and, on the overlay, the UDP datagrams)
//!                       between FROM and TO seconds after the transfer started
//! ```
//!
//! Use `--release` for long sweeps.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use zt_sim::link::Preset;
use zt_sim::tcp::{DirectLab, OverlayLab, Report, Segment, Transfer};
use zt_stack::smoltcp::socket::tcp::CongestionControl;

struct Options {
    direct: bool,
    presets: Vec<Preset>,
    seed: u64,
    seeds: Option<u64>,
    bytes: u64,
    limit_s: f64,
    both_ways: bool,
    trace: Option<(f64, f64)>,
    cc: Option<CongestionControl>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        direct: false,
        presets: Preset::ALL.to_vec(),
        seed: 1,
        seeds: None,
        bytes: 20_000_000,
        limit_s: 120.0,
        both_ways: false,
        trace: None,
        cc: None,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<f64, String> {
        v.and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--direct" => o.direct = true,
            "--both-ways" => o.both_ways = true,
            "--cc" => {
                o.cc = Some(match args.next().as_deref() {
                    Some("cubic") => CongestionControl::Cubic,
                    Some("bbr") => CongestionControl::Bbr,
                    Some("reno") => CongestionControl::Reno,
                    _ => return Err("--cc needs cubic, bbr or reno".into()),
                });
            }
            "--preset" => {
                let v = args.next().ok_or("--preset needs a value")?;
                let p = match v.parse::<usize>() {
                    Ok(i) => Preset::ALL.get(i).copied(),
                    Err(_) => Preset::ALL.iter().copied().find(|p| p.name() == v),
                };
                o.presets = vec![p.ok_or_else(|| format!("no preset {v}"))?];
            }
            "--seed" => o.seed = num(args.next(), "--seed")? as u64,
            "--seeds" => o.seeds = Some(num(args.next(), "--seeds")? as u64),
            "--bytes" => o.bytes = num(args.next(), "--bytes")? as u64,
            "--limit" => o.limit_s = num(args.next(), "--limit")?,
            "--trace" => {
                let from = num(args.next(), "--trace")?;
                let to = num(args.next(), "--trace")?;
                o.trace = Some((from, to));
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    Ok(o)
}

/// One run; with a trace window, the lines to print (µs since the transfer started, text).
fn run(o: &Options, p: Preset, seed: u64) -> Result<(Report, Vec<(i64, String)>), String> {
    let mut spec = Transfer::new(o.bytes).within_s(o.limit_s);
    spec.both_ways = o.both_ways;
    spec.congestion = o.cc;
    spec.give_up_after_us = None;
    let mut lines = Vec::new();
    let seg = |s: &Segment| (s.at_us, s.to_string());
    if o.direct {
        let mut lab = DirectLab::new(&p.path(), seed);
        lab.trace = o.trace.map(|_| Vec::new());
        let r = lab.transfer(&spec);
        lines.extend(lab.trace.iter().flatten().map(seg));
        Ok((r, lines))
    } else {
        let mut lab = OverlayLab::new(&p.path(), seed).map_err(|e| e.to_string())?;
        lab.trace = o.trace.map(|_| Vec::new());
        lab.net.sim.trace = o.trace.map(|_| Vec::new());
        let r = lab.transfer(&spec);
        lines.extend(lab.trace.iter().flatten().map(seg));
        lines.extend(lab.net.sim.trace.iter().flatten().map(|d| {
            (
                d.at_us,
                format!(
                    "{:12.6}     {:?} {} -> {} {} B",
                    d.at_us as f64 / 1e6,
                    d.event,
                    d.from,
                    d.to,
                    d.len
                ),
            )
        }));
        Ok((r, lines))
    }
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for &p in &o.presets {
        let seeds = o.seed..o.seed + o.seeds.unwrap_or(1);
        for seed in seeds {
            let (r, mut lines) = match run(&o, p, seed) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("{} seed {seed}: {e}", p.name());
                    continue;
                }
            };
            if o.seeds.is_some() {
                println!("{}", r.summary());
            } else {
                println!("{r}");
            }
            if let (Some((from, to)), Some(start)) = (o.trace, r.flow().started_us) {
                // Trace times are the lab's clock; the window is relative to the transfer's
                // start (the connection being established), as stalls are.
                let t0 = r.start_us + start;
                lines.sort_by_key(|l| l.0);
                for (at, line) in lines {
                    let rel = (at - t0) as f64 / 1e6;
                    if rel >= from && rel <= to {
                        println!("{line}");
                    }
                }
            }
        }
    }
    ExitCode::SUCCESS
}
