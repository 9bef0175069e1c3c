//! Runs files through a harness on stable Rust, for looking at a crash without libFuzzer:
//! `cargo run -p zt-fuzz --example replay -- <target> <file>...` (a panic shows its message
//! and, with `RUST_BACKTRACE=1`, where).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(harness) = args.first().and_then(|t| zt_fuzz::harness(t)) else {
        let names: Vec<&str> = zt_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "usage: replay <target> <file>...; targets: {}",
            names.join(" ")
        );
        return ExitCode::from(2);
    };
    for file in &args[1..] {
        match std::fs::read(file) {
            Ok(data) => {
                harness(&data);
                eprintln!("{file}: ok");
            }
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
