//! Identity validation off the loop thread.
//!
//! A HELLO from a new identity is answered only once the identity's address is shown to derive
//! from its key: a memory-hard hash of ≈ 14 ms (2 MB of scratch). The node asks for it
//! ([`zt_proto::Node::poll_identity_check`]) and this worker does it, so that the loop thread
//! never spends those milliseconds while known peers' packets wait. The node bounds how many
//! checks are asked for and how often (docs/security.md); the channel holds as many as may be
//! pending ([`zt_proto::VALIDATIONS_PENDING`]).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use mio::Waker;
use zt_proto::{Identity, crypto::identity_hash::Scratch};

/// The worker, or (if no thread could be started) the checks done inline.
pub(crate) struct Validator {
    requests: Option<SyncSender<Identity>>,
    results: Receiver<(Identity, bool)>,
    /// Results of checks done inline (no worker).
    inline: Vec<(Identity, bool)>,
    thread: Option<JoinHandle<()>>,
}

impl Validator {
    /// Starts the worker; it wakes the loop through `waker` after each result.
    pub(crate) fn start(waker: Arc<Waker>) -> Self {
        let (req_tx, req_rx) = mpsc::sync_channel::<Identity>(zt_proto::VALIDATIONS_PENDING);
        let (res_tx, results) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("zt-validate".into())
            .spawn(move || {
                let mut scratch = Scratch::default();
                while let Ok(id) = req_rx.recv() {
                    let valid = id.validate_with(&mut scratch).is_ok();
                    if res_tx.send((id, valid)).is_err() {
                        return;
                    }
                    // A failed wake means the loop is gone, and so is whoever reads results.
                    let _ = waker.wake();
                }
            });
        match spawned {
            Ok(thread) => Self {
                requests: Some(req_tx),
                results,
                inline: Vec::new(),
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!(
                    target: "zt.node",
                    "cannot start the identity validation thread ({e}): validating on the loop"
                );
                Self {
                    requests: None,
                    results,
                    inline: Vec::new(),
                    thread: None,
                }
            }
        }
    }

    /// Queues `id` for validation.
    pub(crate) fn submit(&mut self, id: Identity) {
        match &self.requests {
            Some(tx) => match tx.try_send(id) {
                Ok(()) => {}
                // More than the node ever asks for at once; its request expires unanswered.
                Err(TrySendError::Full(_)) => {
                    log::debug!(target: "zt.node", "identity validation queue full");
                }
                Err(TrySendError::Disconnected(id)) => {
                    let valid = id.validate().is_ok();
                    self.inline.push((id, valid));
                }
            },
            None => {
                let valid = id.validate().is_ok();
                self.inline.push((id, valid));
            }
        }
    }

    /// Results ready now.
    pub(crate) fn results(&mut self) -> Vec<(Identity, bool)> {
        let mut done = std::mem::take(&mut self.inline);
        done.extend(self.results.try_iter());
        done
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        // The worker ends when its queue closes (after at most the check under way).
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
