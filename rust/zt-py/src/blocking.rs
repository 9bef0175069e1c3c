//! Blocking calls: Python timeouts, and waits that release the GIL and stay interruptible
//! (Ctrl-C) on Python's main thread.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use zt_runtime::sockets::SockError;

use crate::convert::sock_err;

/// A timeout from Python (seconds; None waits for ever). The Python layer checks what users
/// pass as `socket.settimeout` does; a remaining time computed there may be a little below
/// zero and counts as zero. NaN is refused (it compared as zero before).
pub(crate) fn duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|t| {
            if t.is_nan() {
                return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
            }
            Duration::try_from_secs_f64(t.max(0.0))
                .map_err(|_| PyValueError::new_err(format!("invalid timeout {t}")))
        })
        .transpose()
}

/// Longest a blocking call on Python's main thread waits before it runs pending signal
/// handlers (Ctrl-C interrupts a blocked call as it does the stdlib's).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Whether this is Python's main thread, where it runs signal handlers (asked of Python once per
/// thread: `threading.main_thread()`).
fn on_main_thread(py: Python<'_>) -> bool {
    thread_local! {
        static MAIN: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    MAIN.with(|m| {
        if let Some(known) = m.get() {
            return known;
        }
        let main = (|| -> PyResult<bool> {
            let threading = py.import("threading")?;
            let main = threading.call_method0("main_thread")?;
            Ok(threading.call_method0("current_thread")?.is(&main))
        })()
        .unwrap_or(false);
        m.set(Some(main));
        main
    })
}

/// Runs `wait` (until a deadline) without the GIL until it returns anything but its own
/// timeout (`timed_out`) or `deadline` passes. On Python's main thread the wait is cut into
/// slices of [`SIGNAL_CHECK`]; between them pending signal handlers run, and an exception from
/// one (`KeyboardInterrupt`) ends the call, as it ends the stdlib's blocking socket calls.
pub(crate) fn wait_interruptibly<R: Send, E: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    timed_out: impl Fn(&E) -> bool,
    wait: impl Fn(Option<Instant>) -> Result<R, E> + Sync,
) -> PyResult<Result<R, E>> {
    if !on_main_thread(py) {
        return Ok(py.detach(|| wait(deadline)));
    }
    loop {
        let slice = Instant::now() + SIGNAL_CHECK;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let r = py.detach(|| wait(Some(until)));
        match r {
            Err(e) if timed_out(&e) && deadline.is_none_or(|d| Instant::now() < d) => {
                py.check_signals()?;
            }
            r => return Ok(r),
        }
    }
}

/// The deadline of a timeout that starts now (None: none, and for one too long to represent).
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A timeout from now until `deadline` (None: none), zero once it passed.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Runs `attempt` (with the GIL) until it has a result, waiting with `wait` (without the GIL,
/// until the deadline of `timeout`) whenever it has none: the shape of every blocking socket
/// call. Data moves in `attempt`, straight between Python objects and the socket's buffers,
/// so the socket's lock is only ever taken by a thread that already holds the GIL or that
/// does not want it (the loop thread, `wait`): no lock-order inversion with the GIL.
pub(crate) fn blocking<R>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut() -> PyResult<Option<R>>,
    wait: impl Fn(Option<Instant>) -> Result<(), SockError> + Sync,
) -> PyResult<R> {
    // A timeout too long to represent blocks like None.
    let deadline = deadline(timeout);
    loop {
        if let Some(r) = attempt()? {
            return Ok(r);
        }
        if timeout.is_some_and(|t| t.is_zero()) {
            // Non-blocking: no need to give up the GIL to learn that.
            return Err(sock_err(SockError::WouldBlock, timeout));
        }
        wait_interruptibly(py, deadline, |e| *e == SockError::WouldBlock, &wait)?
            .map_err(|e| sock_err(e, timeout))?;
    }
}

/// Runs a socket call that waits up to a timeout (`WouldBlock` when it ends) as
/// [`wait_interruptibly`] does, with `timeout`'s errors.
pub(crate) fn sock_wait<R: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    call: impl Fn(Option<Duration>) -> Result<R, SockError> + Sync,
) -> PyResult<R> {
    wait_interruptibly(
        py,
        deadline(timeout),
        |e| *e == SockError::WouldBlock,
        |d| call(left(d)),
    )?
    .map_err(|e| sock_err(e, timeout))
}
