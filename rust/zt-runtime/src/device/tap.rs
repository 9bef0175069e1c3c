//! A Linux TAP device: Ethernet frames between the kernel and the node.
//!
//! Opened through tun-rs: `/dev/net/tun` with `O_CLOEXEC`, `TUNSETIFF` with
//! `IFF_TAP | IFF_NO_PI` (no packet-information header, no virtio-net header, no multi-queue),
//! never persistent, so the interface, its addresses and its routes are gone when the [`Tap`]
//! is dropped, or when the process dies however it dies. The MAC and MTU are set before the
//! interface goes up; the descriptor is non-blocking, for the caller's poll loop.
//!
//! Frames are read and written whole, one per system call, from buffers the caller owns: the
//! kernel hands over checksummed frames of at most MTU bytes after the 14-byte Ethernet header
//! and takes the same back.
//!
//! Two behaviours of the layers below worth knowing: if `/dev/net/tun` is missing, tun-rs
//! tries to create the node (10, 200) before opening it; and opening a name that is an existing
//! persistent TAP attaches to it instead of creating one, as with any `TUNSETIFF`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use super::DeviceError;

/// An open TAP device.
pub struct Tap {
    device: SyncDevice,
    name: String,
    ifindex: u32,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("fd", &self.device.as_raw_fd())
            .finish()
    }
}

impl Tap {
    /// Creates the TAP device `name` (at most 15 bytes) with `mac` and `mtu`, up and
    /// non-blocking.
    ///
    /// # Errors
    /// [`DeviceError::NotPermitted`] without root or `CAP_NET_ADMIN`, [`DeviceError::NoTun`]
    /// when the kernel has no TUN/TAP driver here, [`DeviceError::Io`] otherwise (a name that
    /// is too long or taken by another kind of interface, an MTU the kernel refuses).
    pub fn open(name: &str, mac: [u8; 6], mtu: u16) -> Result<Self, DeviceError> {
        let what = || format!("opening TAP device {name}");
        let device = DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .mac_addr(mac)
            .mtu(mtu)
            .enable(true)
            .with(|b| {
                b.packet_information(false)
                    .offload(false)
                    .multi_queue(false);
            })
            .build_sync()
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => DeviceError::NoTun {
                    what: what(),
                    source: e,
                },
                _ => DeviceError::io(what(), e),
            })?;
        device
            .set_nonblocking(true)
            .map_err(|e| DeviceError::io(what(), e))?;
        let name = device.name().map_err(|e| DeviceError::io(what(), e))?;
        let ifindex = device.if_index().map_err(|e| DeviceError::io(what(), e))?;
        Ok(Self {
            device,
            name,
            ifindex,
        })
    }

    /// The interface's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index (as when it was opened).
    #[must_use]
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's MTU, as the kernel has it now.
    ///
    /// # Errors
    /// [`DeviceError::Io`] if the kernel does not say.
    pub fn mtu(&self) -> Result<u16, DeviceError> {
        self.device
            .mtu()
            .map_err(|e| DeviceError::io(format!("reading the MTU of {}", self.name), e))
    }

    /// Sets the interface's MTU.
    ///
    /// # Errors
    /// [`DeviceError::NotPermitted`] without the privilege, [`DeviceError::Io`] when the kernel
    /// refuses the value.
    pub fn set_mtu(&self, mtu: u16) -> Result<(), DeviceError> {
        self.device
            .set_mtu(mtu)
            .map_err(|e| DeviceError::io(format!("setting the MTU of {} to {mtu}", self.name), e))
    }

    /// The interface's MAC address, as the kernel has it now.
    ///
    /// # Errors
    /// [`DeviceError::Io`] if the kernel does not say.
    pub fn mac(&self) -> Result<[u8; 6], DeviceError> {
        self.device
            .mac_address()
            .map_err(|e| DeviceError::io(format!("reading the MAC of {}", self.name), e))
    }

    /// Reads one frame into `buf`: `Some(length)`, or `None` when none is waiting. A frame
    /// longer than `buf` is cut to its length (give at least MTU + 14 bytes).
    ///
    /// # Errors
    /// The system's error (the device went away, ...).
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.device.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes one frame: `true` when the kernel took it, `false` when its queue is full (the
    /// frame is dropped; the caller counts it).
    ///
    /// # Errors
    /// The system's error (a malformed frame, the device went away, ...).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<bool> {
        loop {
            match self.device.send(frame) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }
}
