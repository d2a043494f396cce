//! The audit entries of successful reads, committed in batches.
//!
//! A write's entries are committed in the write's own transaction. A read
//! has no transaction of its own, and committing one entry per read before
//! answering costs more than the read itself: on SQLite every commit also
//! empties the page cache of every reader connection (WAL readers start
//! afresh after any change), which with SQLCipher means decrypting and
//! checking each page again. So the entries of successful reads are queued
//! here and committed together at most `window` after the first of them
//! (one transaction per batch, in order, through the same chain).
//!
//! What this gives up and what it keeps:
//! - a read is answered before its entry is stored; a crash of the process
//!   can lose the entries of the last window (the 50 ms fsync window of the
//!   SQLite writer already bounded what a power cut can lose; the default
//!   window is as long);
//! - it fails closed: when a batch cannot be written its entries go back to
//!   the front of the queue, retried every window, and every read is refused
//!   (`Unavailable`) until the trail accepts them again;
//! - refusals, errors, operations and everything written are still
//!   committed before the answer;
//! - whoever reads the trail through the Service (`AuditEvent`), and the
//!   server at shutdown, first flushes the queue, so the trail they see
//!   includes every read answered before;
//! - a full queue ([`MAX_QUEUED`]) makes readers wait for the flush, so
//!   memory stays bounded when the store falls behind.

use crate::audit::AuditRecord;
use crate::error::{Error, ErrorKind};
use crate::store::{Commit, Store};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// Entries queued beyond this make readers wait for the flush.
pub(crate) const MAX_QUEUED: usize = 20_000;

/// The default longest wait of a read's entry before its batch is committed:
/// as long as the SQLite writer lets read entries wait for their fsync, so
/// that under a steady read load the readers' page caches are emptied 20
/// times a second rather than 100 (measured in docs/benchmarks.md: +60% on
/// a patient's observations by code at 200,000 resources).
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(50);

pub(crate) struct ReadAuditQueue {
    state: Mutex<State>,
    /// Held while a batch is committed, so batches reach the trail in order.
    flushing: tokio::sync::Mutex<()>,
    window: Duration,
}

#[derive(Default)]
struct State {
    queued: Vec<AuditRecord>,
    /// A flush is scheduled (a task sleeps until the window ends).
    scheduled: bool,
    /// The last batch could not be written: reads are refused.
    failing: bool,
}

fn unavailable() -> Error {
    Error::new(ErrorKind::Unavailable, "the audit trail could not be written")
}

impl ReadAuditQueue {
    pub(crate) fn new(window: Duration) -> ReadAuditQueue {
        ReadAuditQueue { state: Mutex::new(State::default()), flushing: tokio::sync::Mutex::new(()), window }
    }

    /// Queues the entries of an answered read. Refused while the trail is
    /// failing; waits for a flush when the queue is full. A zero window
    /// commits before returning, as writes do.
    pub(crate) async fn push(self: &Arc<Self>, store: &Arc<dyn Store>, records: Vec<AuditRecord>) -> Result<(), Error> {
        if self.window.is_zero() {
            return commit(store, records).await;
        }
        let full = {
            let mut state = self.state.lock();
            if state.failing {
                return Err(unavailable());
            }
            state.queued.extend(records);
            self.schedule(&mut state, store);
            state.queued.len() >= MAX_QUEUED
        };
        if full { self.flush(store).await } else { Ok(()) }
    }

    /// Makes sure a flush runs within the window.
    fn schedule(self: &Arc<Self>, state: &mut State, store: &Arc<dyn Store>) {
        if !state.scheduled {
            state.scheduled = true;
            let queue = Arc::clone(self);
            let store = Arc::clone(store);
            tokio::spawn(async move { queue.flush_later(store).await });
        }
    }

    /// Waits for the window, then commits what is queued (a failed flush
    /// schedules its own retry).
    async fn flush_later(self: Arc<Self>, store: Arc<dyn Store>) {
        tokio::time::sleep(self.window).await;
        // Entries queued from now on schedule the next flush.
        self.state.lock().scheduled = false;
        let _ = self.flush(&store).await;
    }

    /// Commits every queued entry now (one transaction). On failure the
    /// entries go back to the front of the queue and reads are refused
    /// until a flush succeeds.
    pub(crate) async fn flush(self: &Arc<Self>, store: &Arc<dyn Store>) -> Result<(), Error> {
        let _order = self.flushing.lock().await;
        let batch = std::mem::take(&mut self.state.lock().queued);
        if batch.is_empty() {
            return if self.state.lock().failing { Err(unavailable()) } else { Ok(()) };
        }
        match store.commit(Commit { audit: batch.clone(), ..Commit::default() }).await {
            Ok(()) => {
                self.state.lock().failing = false;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "the audit trail could not be written; reads are refused until it can");
                let mut state = self.state.lock();
                let newer = std::mem::replace(&mut state.queued, batch);
                state.queued.extend(newer);
                state.failing = true;
                self.schedule(&mut state, store);
                Err(unavailable())
            }
        }
    }
}

/// Commits audit records on their own before returning.
pub(crate) async fn commit(store: &Arc<dyn Store>, records: Vec<AuditRecord>) -> Result<(), Error> {
    store.commit(Commit { audit: records, ..Commit::default() }).await.map_err(|e| {
        tracing::error!(error = %e, "the audit trail could not be written; the access is refused");
        unavailable()
    })
}
