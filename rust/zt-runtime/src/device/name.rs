//! Device names: zerotier-one's scheme on Linux, and its `devicemap` file.
//!
//! A network's device is named `zt` and eight base32 letters of a 40-bit fold of the network ID
//! (`8056c2e21c000001` → `ztmjfmfyq5`); when that name is taken the fold is incremented. A
//! `devicemap` file in the node's home (`<16 hex digits>=<name>` lines) names a network's
//! device instead while that name is free. zerotier-one only reads the file on Linux; so does
//! `zt`.

use std::collections::BTreeMap;

/// RFC 4648's base32 alphabet, lower case (no padding: 40 bits are exactly 8 letters).
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The longest interface name Linux takes (`IFNAMSIZ` less its NUL).
pub const MAX_NAME_LEN: usize = 15;

/// How many successors of the derived name [`choose`] tries before giving up.
pub const MAX_TRIALS: u64 = 1_000;

/// The name of network `nwid`'s device at attempt `trial` (0 first, the next when the name is
/// taken): `zt` and the low 40 bits of `(nwid ^ nwid >> 24) + trial` in base32, most
/// significant first.
#[must_use]
pub fn derived(nwid: u64, trial: u64) -> String {
    let folded = (nwid ^ (nwid >> 24)).wrapping_add(trial) & ((1 << 40) - 1);
    let mut name = String::with_capacity(10);
    name.push_str("zt");
    for i in (0..8).rev() {
        name.push(char::from(BASE32[((folded >> (i * 5)) & 31) as usize]));
    }
    name
}

/// Whether Linux takes `name` for an interface: 1–15 bytes, none of them `/`, `:`, white
/// space or control characters, and not `.` or `..`.
#[must_use]
pub fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The entries of a `devicemap` file: network ID → device name. Lines that are not
/// `<hex network ID>=<valid name>` are skipped (the file is the user's; a bad line must not stop
/// a network from coming up).
#[must_use]
pub fn parse_devicemap(text: &str) -> BTreeMap<u64, String> {
    text.lines()
        .filter_map(|line| {
            let (id, name) = line.trim_end_matches('\r').split_once('=')?;
            let id = u64::from_str_radix(id.trim(), 16).ok()?;
            let name = name.trim();
            valid(name).then(|| (id, name.to_owned()))
        })
        .collect()
}

/// The name network `nwid`'s device gets: its `devicemap` entry if it has one that is not
/// `taken`, else the first derived name that is not; `None` after [`MAX_TRIALS`] taken names.
pub fn choose(
    nwid: u64,
    devicemap: &BTreeMap<u64, String>,
    taken: impl Fn(&str) -> bool,
) -> Option<String> {
    if let Some(name) = devicemap.get(&nwid).filter(|n| !taken(n)) {
        return Some(name.clone());
    }
    (0..MAX_TRIALS)
        .map(|trial| derived(nwid, trial))
        .find(|n| !taken(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zerotier_ones() {
        // The device of Earth (8056c2e21c000001) in stock `listnetworks` output.
        assert_eq!(derived(0x8056_c2e2_1c00_0001, 0), "ztmjfmfyq5");
        // The fold keeps 40 bits: a trial past the top wraps within them.
        assert_eq!(derived(0, 0), "ztaaaaaaaa");
        assert_eq!(derived(0, 1), "ztaaaaaaab");
        assert_eq!(derived(0, (1 << 40) - 1), "zt77777777");
        assert_eq!(derived(0, 1 << 40), "ztaaaaaaaa");
        for id in [1u64, 0xffff_ffff_ffff_ffff, 0x1234_5678_9abc_def0] {
            let name = derived(id, 0);
            assert!(valid(&name), "{name}");
            assert_eq!(name.len(), 10);
        }
    }

    #[test]
    fn a_taken_name_moves_to_the_next() {
        let first = derived(0x8056_c2e2_1c00_0001, 0);
        let none = BTreeMap::new();
        assert_eq!(
            choose(0x8056_c2e2_1c00_0001, &none, |_| false),
            Some(first.clone())
        );
        assert_eq!(
            choose(0x8056_c2e2_1c00_0001, &none, |n| n == first),
            Some(derived(0x8056_c2e2_1c00_0001, 1))
        );
        assert_eq!(choose(1, &none, |_| true), None);
    }

    #[test]
    fn the_devicemap_names_a_device_while_its_name_is_free() {
        let map = parse_devicemap(
            "8056c2e21c000001=ztearth\r\n\
             not hex=zz\n\
             1234=\n\
             abcd=way-too-long-a-name\n\
             00000000000000ff=a/b\n\
             0000000000000002 = zt-two \n",
        );
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            vec![
                (2, "zt-two".to_owned()),
                (0x8056_c2e2_1c00_0001, "ztearth".to_owned())
            ]
        );
        let map = parse_devicemap("8056c2e21c000001=ztearth\n");
        assert_eq!(
            choose(0x8056_c2e2_1c00_0001, &map, |_| false).as_deref(),
            Some("ztearth")
        );
        assert_eq!(
            choose(0x8056_c2e2_1c00_0001, &map, |n| n == "ztearth").as_deref(),
            Some("ztmjfmfyq5")
        );
    }

    #[test]
    fn names_linux_refuses_are_not_valid() {
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "a:b",
            "0123456789abcdef",
            "tab\t",
            "é",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
        for good in ["zt0", "ztmjfmfyq5", "0123456789abcde", "a.b-c_d"] {
            assert!(valid(good), "{good:?}");
        }
    }
}
