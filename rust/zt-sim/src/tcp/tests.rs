#![allow(clippy::unwrap_used)]

use super::End;
use super::transfer::Pattern;

#[test]
fn the_pattern_catches_misplaced_and_flipped_bytes() {
    let p = Pattern::of(End::A);
    let mut buf = vec![0u8; 200_000];
    p.fill(12_345, &mut buf);
    assert_eq!(p.check(12_345, &buf), None);
    assert_eq!(p.check(12_345, &buf[1000..]), Some(0), "wrong offset");
    assert_eq!(p.check(13_345, &buf[1000..]), None);
    buf[150_000] ^= 4;
    assert_eq!(p.check(12_345, &buf), Some(150_000));
    let q = Pattern::of(End::B);
    let mut other = vec![0u8; 100];
    q.fill(12_345, &mut other);
    assert_ne!(other, buf[..100], "each direction has its own pattern");
}
