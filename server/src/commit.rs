//! Group commit of chunk records.
//!
//! Every acknowledged chunk needs a durable record, and a durable redb commit costs an `fsync`.
//! With many agents uploading at once, a commit per chunk would serialize every upload on that
//! `fsync`. Instead, requests send their [`ChunkOp`]s over a channel to one committer thread,
//! which takes everything that is pending, applies it in a single write transaction, commits
//! once, and then answers each waiting request. While one commit runs, the next batch gathers;
//! under load a batch holds as many chunks as there are uploads in flight.
//!
//! ```text
//!  PUT chunk ─┐                      ┌─ ack
//!  PUT chunk ─┼─▶ channel ─▶ thread: drain · one txn · commit ─┼─ ack
//!  PUT chunk ─┘                      └─ ack
//! ```

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::store::{ChunkOp, Store};
use crate::Error;

/// Largest number of requests folded into one transaction.
const MAX_BATCH: usize = 4096;

struct Job {
    ops: Vec<ChunkOp>,
    reply: Option<oneshot::Sender<Result<(), Arc<Error>>>>,
}

/// Handle to the committer thread; the thread ends when every handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("ops", &self.ops.len()).finish()
    }
}

impl Committer {
    /// Starts the committer thread.
    pub fn start(store: Arc<Store>) -> Result<(Self, JoinHandle<()>), Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("p2v-commit".into())
            .spawn(move || run(store, rx))
            .map_err(|e| Error::io("starting the commit thread", e))?;
        Ok((Self { tx }, thread))
    }

    /// Applies `ops` durably; returns once they are committed (together with whatever else was
    /// pending).
    pub async fn commit(&self, ops: Vec<ChunkOp>) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                ops,
                reply: Some(reply),
            })
            .map_err(|_| Error::Internal("the commit thread has stopped".into()))?;
        match answer.await {
            Ok(result) => result.map_err(Error::Shared),
            Err(_) => Err(Error::Internal(
                "the commit thread dropped a request".into(),
            )),
        }
    }

    /// Queues `ops` (byte counters) without waiting: they ride along with the next commit.
    pub fn queue(&self, ops: Vec<ChunkOp>) {
        if self.tx.send(Job { ops, reply: None }).is_err() {
            tracing::debug!("commit thread stopped; accounting dropped");
        }
    }
}

fn run(store: Arc<Store>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let ops = jobs.iter().flat_map(|j| j.ops.iter());
        let count = jobs.len();
        let started = std::time::Instant::now();
        let result = store.apply_chunk_ops(ops).map_err(Arc::new);
        match &result {
            Ok(()) => {
                tracing::trace!(requests = count, elapsed = ?started.elapsed(), "group commit")
            }
            Err(e) => tracing::warn!(requests = count, "group commit failed: {}", e.api_message()),
        }
        for job in jobs {
            if let Some(reply) = job.reply {
                let _ = reply.send(result.clone());
            }
        }
    }
    tracing::debug!("commit thread finished");
}
