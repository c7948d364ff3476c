//! Committing a tick's rows as they come: a connector hands rows over during its
//! tick ([`TickContext::hand_over`](connector_core::TickContext::hand_over)), the
//! store writes them into the bucket's open transaction while the connector builds
//! the rest, and the batch the tick returns ends the transaction. One connector's
//! parse and its commit then run on two cores instead of one after the other.
//!
//! Nothing changes for exactly once: every part goes into the same transaction as
//! the ledger row, and a tick that fails, times out, loses its lease or is cancelled
//! sends [`Part::Abort`] (also when [`PartCommit`] is dropped unfinished), so the
//! store rolls everything back.

use std::sync::{Arc, Mutex};

use connector_core::{Batch, TickContext};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::store::{CommitReport, Lease, Sink, StoreError, StoreErrorKind, Target};

/// What a store receives while a tick runs.
#[derive(Debug)]
pub enum Part {
    /// Rows the connector handed over, in order.
    Rows(Batch),
    /// The batch the tick returned, and the lease as it is now (renewed since the
    /// tick began; its end less the safety margin): write it and commit.
    Last(Batch, Lease),
    /// The tick failed, timed out, lost its lease or was cancelled: write nothing.
    Abort,
}

/// A store's side: the parts of one tick, in order.
#[derive(Debug)]
pub struct Parts(UnboundedReceiver<Part>);

impl Parts {
    /// The next part, waiting for it; [`Part::Abort`] once the runner's side is gone.
    pub async fn next(&mut self) -> Part {
        self.0.recv().await.unwrap_or(Part::Abort)
    }

    /// [`Parts::next`] for a blocking thread (a blocking database driver).
    pub fn next_blocking(&mut self) -> Part {
        self.0.blocking_recv().unwrap_or(Part::Abort)
    }

    /// Every part in one batch with the last lease, for stores that write a bucket
    /// in one piece; [`aborted`] when the tick ended in [`Part::Abort`].
    pub async fn collect(self) -> Result<(Batch, Lease), StoreError> {
        self.collect_after(Vec::new()).await
    }

    /// [`Parts::collect`] after `rows`, the parts already taken, for a store that
    /// gives up writing parts as they come midway.
    pub async fn collect_after(
        mut self,
        mut rows: Vec<Batch>,
    ) -> Result<(Batch, Lease), StoreError> {
        loop {
            match self.next().await {
                Part::Rows(part) => rows.push(part),
                Part::Last(part, lease) => {
                    rows.push(part);
                    return Ok((join_parts(rows)?, lease));
                }
                Part::Abort => return Err(aborted()),
            }
        }
    }
}

/// The rows of `parts` in one batch, in order: for a store that gives up writing
/// parts as they come and commits them whole. [`schema_mismatch`] when a part
/// follows another schema than the first; [`aborted`] when there is none.
pub fn join_parts(parts: Vec<Batch>) -> Result<Batch, StoreError> {
    let mut parts = parts.into_iter();
    let mut whole = parts.next().ok_or_else(aborted)?;
    for part in parts {
        whole.append(part).map_err(|_| schema_mismatch())?;
    }
    Ok(whole)
}

/// The error of a part whose rows follow another schema than the first part's.
pub fn schema_mismatch() -> StoreError {
    StoreError::new(
        StoreErrorKind::Invalid,
        "a part of the tick's rows has another schema than the first; nothing committed",
    )
}

/// The error a store returns for a tick that ended in [`Part::Abort`]; the runner
/// never reads it, the tick has its own outcome.
pub fn aborted() -> StoreError {
    StoreError::new(
        StoreErrorKind::Invalid,
        "the tick ended without rows to commit; nothing written",
    )
}

/// The runner's side of one tick's commit in parts.
///
/// The store's side starts with the first part, as a task of its own: spawned from
/// the tick (a runtime worker's local queue, from which an idle worker takes it), it
/// runs beside the connector, which is busy building rows and does not yield. A
/// task started with the tick and woken by the first part would wait in the tick's
/// own worker until the tick ended.
#[derive(Debug)]
pub struct PartCommit {
    sender: UnboundedSender<Part>,
    start: Arc<Mutex<Start>>,
    finished: bool,
    /// [`Sink::writes_parts`]: whether the tick gets a part taker.
    takes_parts: bool,
}

/// The store's side: what starts it, until it has started, then its task.
#[derive(Debug)]
struct Start {
    pending: Option<Pending>,
    task: Option<JoinHandle<Result<CommitReport, StoreError>>>,
}

/// What the store's side starts with.
#[derive(Debug)]
struct Pending {
    sink: Arc<dyn Sink>,
    target: Target,
    lease: Lease,
    receiver: UnboundedReceiver<Part>,
}

impl Start {
    /// Starts the store's side if it has not started.
    fn start(&mut self) {
        if let Some(Pending {
            sink,
            target,
            lease,
            receiver,
        }) = self.pending.take()
        {
            self.task = Some(tokio::spawn(async move {
                sink.commit_parts(&target, &lease, Parts(receiver)).await
            }));
        }
    }
}

fn lock_start(start: &Mutex<Start>) -> std::sync::MutexGuard<'_, Start> {
    start
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PartCommit {
    /// The commit of (`target`, `lease`'s bucket), whose store side starts with the
    /// first part.
    pub fn start(sink: Arc<dyn Sink>, target: Target, lease: Lease) -> Self {
        let (sender, receiver) = unbounded_channel();
        PartCommit {
            takes_parts: sink.writes_parts(),
            sender,
            start: Arc::new(Mutex::new(Start {
                pending: Some(Pending {
                    sink,
                    target,
                    lease,
                    receiver,
                }),
                task: None,
            })),
            finished: false,
        }
    }

    /// `ctx` for the tick: with a part taker when the store writes parts as they
    /// come ([`Sink::writes_parts`]), as it is otherwise. Call the tick within the
    /// runtime.
    pub fn tick_context(&self, ctx: TickContext) -> TickContext {
        if self.takes_parts {
            ctx.with_part_taker(self.taker())
        } else {
            ctx
        }
    }

    /// What [`TickContext::with_part_taker`] needs: sends each handed-over batch to
    /// the store.
    pub fn taker(&self) -> impl Fn(Batch) + Send + Sync + 'static {
        let (sender, start) = (self.sender.clone(), Arc::clone(&self.start));
        move |rows| {
            // A store that already failed stopped listening; `finish` reports why.
            let _ = sender.send(Part::Rows(rows));
            lock_start(&start).start();
        }
    }

    /// Sends the tick's batch with the lease as it is now, and waits for the commit.
    /// A tick that handed nothing over commits its batch in one piece
    /// ([`Sink::commit`]) without a task of its own.
    pub async fn finish(mut self, last: Batch, lease: Lease) -> Result<CommitReport, StoreError> {
        self.finished = true;
        let (pending, task) = {
            let mut start = lock_start(&self.start);
            (start.pending.take(), start.task.take())
        };
        match (task, pending) {
            (Some(task), _) => {
                let _ = self.sender.send(Part::Last(last, lease));
                task.await
                    .map_err(|e| StoreError::backend("the commit's task failed", e))?
            }
            (None, Some(Pending { sink, target, .. })) => sink.commit(&target, &lease, last).await,
            (None, None) => Err(StoreError::new(
                StoreErrorKind::Invalid,
                "the commit's task never started; nothing committed",
            )),
        }
    }
}

impl Drop for PartCommit {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.sender.send(Part::Abort);
        }
    }
}
