//! Writes the seed inputs of every target to `fuzz/corpus/<target>/seed-<n>` (run from
//! anywhere: `cargo run -p zt-fuzz --example make_corpus`). Files other than `seed-*` (fuzz
//! findings kept as regression inputs) are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, _) in zt_fuzz::TARGETS {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                std::fs::remove_file(p)?;
            }
        }
        for (i, s) in zt_fuzz::seeds::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s)?;
        }
    }
    Ok(())
}
