//! Attaching a joined network to an OS device (a Linux TAP), so that programs outside the node's
//! process reach the network through the kernel, as with the zerotier-one daemon.
//!
//! The parts that decide, kept free of I/O so they are tested without root:
//! - [`name`]: the device's name, as zerotier-one derives it from the network ID (and its
//!   `devicemap` file), so a network's device keeps its name across both daemons;
//! - [`managed`]: which of the network's managed addresses and routes go onto the device, under
//!   the network's local settings (`allowManaged`, `allowGlobal`, `allowDefault`), and what to
//!   change to get there from what is applied.
//!
//! The parts that act on the OS, Linux only for now (on other targets they are absent and
//! [`supported`] says why):
//! - `tap`: the TAP device itself (through tun-rs): opened with the network's name, MAC and
//!   MTU, up, non-blocking, read and written one Ethernet frame at a time from the caller's
//!   buffers, and gone from the system when it is dropped (it is never persistent);
//! - `netlink`: the managed addresses and routes put on and taken off the device through
//!   synchronous rtnetlink requests, each acknowledged by the kernel, and the device's addresses,
//!   routes and link state read back.
//!
//! These need root or `CAP_NET_ADMIN`; [`DeviceError`] says so when they are missing.

use std::io;

#[cfg(all(test, target_os = "linux"))]
mod kernel_tests;
pub mod managed;
pub mod name;
#[cfg(target_os = "linux")]
pub mod netlink;
#[cfg(target_os = "linux")]
pub mod tap;

use managed::Step;

/// Why a device could not be opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// This platform has no device port yet.
    #[error("device ports are Linux-only for now")]
    Unsupported,
    /// The process lacks the privilege to create or change network devices.
    #[error("{what}: permission denied (needs root or CAP_NET_ADMIN)")]
    NotPermitted {
        /// What was being done.
        what: String,
    },
    /// The kernel offers no TUN/TAP driver here.
    #[error("{what}: /dev/net/tun is absent or has no TUN/TAP driver behind it ({source})")]
    NoTun {
        /// What was being done.
        what: String,
        /// The error from the system.
        source: io::Error,
    },
    /// Anything else from the system.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error from the system.
        source: io::Error,
    },
    /// The kernel refused a change to the device's addresses or routes.
    #[error("{step}: {source}{}", permission_hint(.source))]
    Change {
        /// The change refused.
        step: Step,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// " (needs root or CAP_NET_ADMIN)" after a permission error, else nothing.
fn permission_hint(error: &io::Error) -> &'static str {
    if is_permission(error) {
        " (needs root or CAP_NET_ADMIN)"
    } else {
        ""
    }
}

/// Whether `error` is EPERM or EACCES.
fn is_permission(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
        || matches!(error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

impl DeviceError {
    /// An error from the system while doing `what`, with missing permission told apart.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        if is_permission(&source) {
            Self::NotPermitted { what }
        } else {
            Self::Io { what, source }
        }
    }

    /// Whether the error comes from missing permission (root or `CAP_NET_ADMIN`): the caller
    /// then goes on without a device.
    #[must_use]
    pub fn is_permission(&self) -> bool {
        match self {
            Self::NotPermitted { .. } => true,
            Self::Change { source, .. } => is_permission(source),
            _ => false,
        }
    }
}

/// Whether this platform has a device port: `Ok` on Linux, [`DeviceError::Unsupported`]
/// elsewhere.
///
/// # Errors
/// [`DeviceError::Unsupported`] off Linux.
pub fn supported() -> Result<(), DeviceError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(DeviceError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_when_permission_is_missing() {
        let e = DeviceError::io("opening TAP zt0", io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.is_permission());
        assert_eq!(
            e.to_string(),
            "opening TAP zt0: permission denied (needs root or CAP_NET_ADMIN)"
        );
        let e = DeviceError::Change {
            step: Step::AddAddress(zt_proto::IpPrefix {
                ip: "198.18.0.10".parse().unwrap(),
                bits: 15,
            }),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(e.is_permission());
        assert!(e.to_string().starts_with("adding address 198.18.0.10/15: "));
        assert!(e.to_string().ends_with("(needs root or CAP_NET_ADMIN)"));
        let e = DeviceError::io("x", io::Error::from_raw_os_error(libc::EBUSY));
        assert!(!e.is_permission());
    }
}
