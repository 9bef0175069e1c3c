//! Benchmarks for zt (no library code; the benchmarks live in `benches/`).
//!
//! Run them with `cargo bench -p zt-benches` (add `--bench crypto` or `--bench identity` to pick
//! one file, and `-- --quick` for a short run).
