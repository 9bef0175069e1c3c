use super::*;
use crate::lead::Kick;

#[test]
fn listener_scopes_overlap_as_on_linux() {
    let v4: IpAddr = "198.18.0.1".parse().unwrap_or(IpAddr::from([0; 4]));
    let v6: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::from([0; 16]));
    let all = [
        Scope::Any,
        Scope::AnyV4,
        Scope::AnyV6Only,
        Scope::Addr(v4),
        Scope::Addr(v6),
    ];
    for a in all {
        for b in all {
            assert_eq!(a.overlaps(b), b.overlaps(a), "{a:?} {b:?} symmetric");
        }
        assert!(a.overlaps(a) && a.overlaps(Scope::Any));
    }
    assert!(!Scope::AnyV4.overlaps(Scope::AnyV6Only));
    assert!(Scope::AnyV4.overlaps(Scope::Addr(v4)) && !Scope::AnyV4.overlaps(Scope::Addr(v6)));
    assert!(Scope::AnyV6Only.overlaps(Scope::Addr(v6)));
    assert!(!Scope::Addr(v4).overlaps(Scope::Addr(v6)));
}

#[test]
fn listener_scopes_pick_the_addresses_to_listen_on() {
    let v4: IpAddr = IpAddr::from([198, 18, 0, 1]);
    let ll: IpAddr = "fe80::1".parse().unwrap_or(IpAddr::from([0; 16]));
    let v6: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::from([0; 16]));
    let addrs = [(ll, 64), (v4, 15), (v6, 88)];
    assert_eq!(Scope::Any.endpoints(&addrs), vec![None]);
    assert_eq!(Scope::AnyV4.endpoints(&addrs), vec![Some(v4)]);
    assert_eq!(Scope::AnyV6Only.endpoints(&addrs), vec![Some(ll), Some(v6)]);
    assert_eq!(Scope::Addr(v6).endpoints(&addrs), vec![Some(v6)]);
    assert_eq!(Scope::Addr(v4).endpoints(&addrs[..1]), vec![]);
    assert_eq!(Scope::AnyV4.endpoints(&addrs[..1]), vec![]);
}

#[test]
fn options_validate_their_ranges() {
    let Ok(s) = TcpShared::new(4096, 4096, Kick::none()) else {
        panic!("no socket pair");
    };
    assert_eq!(s.option(TcpOption::NoDelay), 1);
    assert_eq!(s.option(TcpOption::KeepAlive), 0);
    assert_eq!(s.set_option(TcpOption::KeepAlive, 5), Ok(()));
    assert_eq!(s.option(TcpOption::KeepAlive), 1);
    for (opt, bad, good) in [
        (TcpOption::KeepIdle, 0, 32_767),
        (TcpOption::KeepInterval, 32_768, 1),
        (TcpOption::KeepCount, 128, 127),
        (TcpOption::UserTimeout, -1, 0),
        (TcpOption::UserTimeout, i64::from(i32::MAX) + 1, 5),
    ] {
        assert_eq!(
            s.set_option(opt, bad),
            Err(SockError::Invalid),
            "{opt:?} {bad}"
        );
        assert_eq!(s.set_option(opt, good), Ok(()));
        assert_eq!(s.option(opt), good);
    }
    let o = s.core.lock().options;
    assert_eq!(o.user_timeout_ms(), 5);
    assert_eq!(o.keepalive_limit_ms(), (32_767 + 127) * 1000);
    assert_eq!(
        TcpOptions::default().user_timeout_ms(),
        DEFAULT_USER_TIMEOUT.as_millis() as i64
    );
}
