//! A node's events (`EventSubscription`) and a tap on a network's frames (`FrameTap`).

use std::sync::Arc;

use pyo3::exceptions::PyEOFError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use zt_runtime::events::{NodeEvent, RecvError, Subscription};

use crate::blocking::{deadline, duration, left, wait_interruptibly};
use crate::convert::bytes_of;

/// A node's event queue (one per consumer).
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct EventSubscription(pub(crate) Arc<Subscription>);

fn payload<'py>(py: Python<'py>, ev: &NodeEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match ev {
        NodeEvent::Up { address } => d.set_item("address", address.to_string())?,
        NodeEvent::FatalError { message } => d.set_item("message", message)?,
        NodeEvent::Stored { key } => d.set_item("key", key.path())?,
        NodeEvent::PlanetChanged { id, timestamp } | NodeEvent::MoonChanged { id, timestamp } => {
            d.set_item("id", *id)?;
            d.set_item("timestamp", *timestamp)?;
        }
        NodeEvent::PathDiscovered { address, remote } | NodeEvent::PathDead { address, remote } => {
            d.set_item("address", address.to_string())?;
            d.set_item("remote", remote.to_string())?;
        }
        NodeEvent::UserMessage {
            from,
            type_id,
            data,
        } => {
            d.set_item("address", from.to_string())?;
            d.set_item("type_id", *type_id)?;
            d.set_item("data", PyBytes::new(py, data))?;
        }
        NodeEvent::Network { network, .. } => d.set_item("network", network.to_string())?,
        NodeEvent::Address {
            network, address, ..
        } => {
            d.set_item("network", network.to_string())?;
            d.set_item("address", address.to_string())?;
        }
        _ => {}
    }
    Ok(d)
}

/// Frames of one network delivered to this process (a tap on the virtual Ethernet).
#[pyclass(module = "zt._native", frozen)]
pub(crate) struct FrameTap(pub(crate) Arc<zt_runtime::frames::FrameTap>);

#[pymethods]
impl FrameTap {
    /// The next Ethernet frame (14-byte header + payload); None on timeout or once closed.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let deadline = deadline(duration(timeout)?);
        let tap = &*self.0;
        // `None` from the tap: a timeout unless it was closed.
        let f = wait_interruptibly(
            py,
            deadline,
            |()| !tap.is_closed(),
            |d| tap.recv(left(d)).ok_or(()),
        )?
        .ok();
        f.map(|f| {
            let mut header = [0u8; 14];
            header[..6].copy_from_slice(&f.dst.to_bytes());
            header[6..12].copy_from_slice(&f.src.to_bytes());
            header[12..].copy_from_slice(&f.ethertype.to_be_bytes());
            bytes_of(py, &header, &f.payload)
        })
        .transpose()
    }

    /// Frames lost because this consumer was too slow.
    #[getter]
    fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Whether it was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Stops receiving.
    fn close(&self) {
        self.0.close();
    }
}

#[pymethods]
impl EventSubscription {
    /// The next `(code, payload)`; None on timeout; EOFError once closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(i32, Bound<'py, PyDict>)>> {
        let t = duration(timeout)?;
        let sub = &*self.0;
        let r = match t {
            Some(d) if d.is_zero() => sub.try_recv(),
            _ => wait_interruptibly(
                py,
                deadline(t),
                |e| matches!(e, RecvError::Timeout),
                |d| sub.recv(left(d)),
            )?,
        };
        match r {
            Ok(ev) => Ok(Some((ev.code() as i32, payload(py, &ev)?))),
            Err(RecvError::Timeout) => Ok(None),
            Err(RecvError::Closed) => Err(PyEOFError::new_err("the event subscription is closed")),
        }
    }

    /// Readable while an event is queued or the subscription is closed (for select/asyncio).
    fn fileno(&self) -> zt_runtime::readiness::RawDescriptor {
        self.0.readiness_fd()
    }

    /// Events dropped because this consumer fell behind.
    #[getter]
    fn dropped(&self) -> u64 {
        self.0.dropped()
    }

    /// Whether closed.
    #[getter]
    fn closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Closes this subscription.
    fn close(&self) {
        self.0.close();
    }
}
