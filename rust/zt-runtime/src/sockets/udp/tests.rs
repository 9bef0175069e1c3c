use super::multicast::{broadcast_of, source_for};
use super::*;

#[test]
fn broadcast_and_multicast_destinations_are_recognised_and_permitted() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]));
    assert_eq!(
        broadcast_of(Ipv4Addr::new(198, 18, 0, 5), 15),
        Some(Ipv4Addr::new(198, 19, 255, 255))
    );
    assert_eq!(
        broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 0),
        Some(Ipv4Addr::BROADCAST)
    );
    assert_eq!(broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 31), None);
    assert_eq!(broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 32), None);
    let net = |id: u64, v4: &[(Ipv4Addr, u8)], broadcast: bool, multicast: bool| NetView {
        id: NetworkId(id),
        v4: v4.to_vec(),
        policy: Policy {
            broadcast,
            multicast,
        },
        mtu: 2800,
    };
    let mut st = UdpState {
        rx: VecDeque::new(),
        rx_bytes: 0,
        rx_cap: 0,
        tx: VecDeque::new(),
        tx_bytes: 0,
        tx_cap: 0,
        local: Some(SocketAddr::new(ip("::"), 9)),
        released: false,
        dropped: 0,
        error: None,
        opts: UdpOptions::default(),
        nets: vec![
            net(1, &[(Ipv4Addr::new(198, 18, 0, 5), 15)], true, true),
            net(2, &[(Ipv4Addr::new(10, 0, 0, 5), 24)], false, false),
            net(3, &[], true, true),
        ],
        spare: Vec::new(),
    };
    for (to, kind) in [
        ("198.18.0.9", Dest::Unicast),
        ("198.19.255.255", Dest::Broadcast),
        ("10.0.0.255", Dest::Broadcast),
        ("10.0.1.255", Dest::Unicast),
        ("255.255.255.255", Dest::Broadcast),
        ("239.1.2.3", Dest::Multicast),
        ("ff02::1", Dest::Multicast),
        ("fd00::ff", Dest::Unicast),
    ] {
        assert_eq!(st.kind(ip(to)), kind, "{to}");
    }
    let targets = |st: &UdpState, to: &str| -> Vec<u64> {
        let kind = st.kind(ip(to));
        st.targets(ip(to), kind).map(|n| n.id.0).collect()
    };
    assert_eq!(targets(&st, "255.255.255.255"), [1, 2]);
    assert_eq!(targets(&st, "10.0.0.255"), [2]);
    assert_eq!(targets(&st, "239.1.2.3"), [1, 2]);
    assert_eq!(targets(&st, "ff05::1"), [1, 2, 3]);
    assert_eq!(targets(&st, "198.18.0.9"), Vec::<u64>::new());
    // The payload a datagram may carry: its subnet's network's MTU, else the smallest.
    st.nets[1].mtu = 1400;
    assert_eq!(st.max_payload(ip("198.18.0.9")), Some(2800 - 28));
    assert_eq!(st.max_payload(ip("10.0.0.9")), Some(1400 - 28));
    assert_eq!(st.max_payload(ip("172.16.0.1")), Some(1400 - 28));
    assert_eq!(st.max_payload(ip("fd00::ff")), Some(1400 - 48));
    st.nets[1].mtu = 2800;
    assert_eq!(st.max_payload(ip("fd00::ff")), Some(2800 - 48));
    assert_eq!(st.permit(ip("255.255.255.255")), Err(SockError::Access));
    assert_eq!(st.permit(ip("198.18.0.9")), Ok(()));
    st.opts.broadcast = true;
    assert_eq!(st.permit(ip("255.255.255.255")), Ok(()));
    assert_eq!(st.permit(ip("10.0.0.255")), Err(SockError::NotPermitted));
    st.opts.multicast_if = Some(NetworkId(2));
    assert_eq!(targets(&st, "239.1.2.3"), [2]);
    assert_eq!(st.permit(ip("239.1.2.3")), Err(SockError::NotPermitted));
    assert_eq!(
        st.permit(ip("ff05::1")),
        Ok(()),
        "IP_MULTICAST_IF is IPv4's"
    );
    st.nets.truncate(1);
    st.nets[0].v4.clear();
    assert_eq!(
        st.permit(ip("255.255.255.255")),
        Err(SockError::NetUnreachable)
    );
    st.local = Some(SocketAddr::new(ip("fd00::1"), 9));
    assert_eq!(st.permit(ip("198.18.0.9")), Err(SockError::NetUnreachable));
    assert_eq!(st.permit(ip("fd00::2")), Ok(()));
}

#[test]
fn looped_back_datagrams_carry_the_source_smoltcp_would_pick() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]));
    let addrs = [
        (ip("fe80::1"), 64),
        (ip("198.18.0.5"), 15),
        (ip("fd00::5"), 88),
    ];
    assert_eq!(source_for(&addrs, ip("239.1.1.1")), Some(ip("198.18.0.5")));
    assert_eq!(source_for(&addrs, ip("ff02::1")), Some(ip("fe80::1")));
    assert_eq!(source_for(&addrs, ip("ff05::1")), Some(ip("fd00::5")));
    assert_eq!(source_for(&addrs[..1], ip("ff05::1")), Some(ip("fe80::1")));
    assert_eq!(source_for(&addrs[..1], ip("239.1.1.1")), None);
}
