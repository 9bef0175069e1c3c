//! Replays every committed corpus file (`fuzz/corpus/<target>/*`) and every seed through its
//! harness on stable Rust, plus a few deterministic mutations of each seed: a fuzz finding
//! that was fixed and added to the corpus stays fixed.

use std::path::{Path, PathBuf};

use zt_fuzz::{TARGETS, harness, seeds::seeds};
use zt_proto::splitmix64;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_corpus_file_replays() {
    let dir = corpus_dir();
    let mut replayed = 0;
    for (name, h) in TARGETS {
        let files: Vec<PathBuf> = std::fs::read_dir(dir.join(name))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
        for f in files {
            let data = std::fs::read(&f).expect("a corpus file");
            h(&data);
            replayed += 1;
        }
    }
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            harness(&name).is_some(),
            "fuzz/corpus/{name} is not a target"
        );
    }
    assert!(replayed >= 3 * TARGETS.len());
}

#[test]
fn every_target_has_seeds_that_run() {
    for (name, h) in TARGETS {
        let s = seeds(name);
        assert!(
            s.len() >= 2 || *name == "peer_record",
            "{name} has too few seeds"
        );
        for input in &s {
            h(input);
        }
    }
}

#[test]
fn mutated_seeds_do_not_crash() {
    let mut state = 15;
    for (name, h) in TARGETS {
        for seed in seeds(name) {
            for _ in 0..64 {
                let mut d = seed.clone();
                for _ in 0..=(splitmix64(&mut state) % 4) {
                    if d.is_empty() {
                        break;
                    }
                    let r = splitmix64(&mut state);
                    let i = (r as usize >> 8) % d.len();
                    match r % 4 {
                        0 => d[i] ^= 1 << ((r >> 4) % 8),
                        1 => d[i] = (r >> 32) as u8,
                        2 => d.truncate(i),
                        _ => d.insert(i, (r >> 40) as u8),
                    }
                }
                h(&d);
            }
        }
    }
}
