//! The node's clients inside this process: the console's Enter, `--requests`,
//! the API's sessions, `ra bench`. Each holds tickets through a [`Clients`]
//! handle; a ticket given up or dropped is released, so a client that goes away
//! never keeps a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};

use std::time::Duration;

use crate::event::{LossReason, RefusedReason, Ticket};
use crate::node::{Status, TicketProgress};
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::{Fence, LockName};
use crate::protocol::message::HeldLock;

/// What clients ask of the node's task.
#[derive(Debug)]
pub enum Control {
    Acquire {
        lock: LockName,
        ticket: Ticket,
        try_only: bool,
        news: mpsc::UnboundedSender<TicketNews>,
    },
    /// Where a ticket stands (for a client's progress line).
    Progress {
        lock: LockName,
        ticket: Ticket,
        reply: oneshot::Sender<Option<TicketProgress>>,
    },
    Release {
        lock: LockName,
        ticket: Ticket,
    },
    Status(oneshot::Sender<Status>),
    /// Ask the active set which locks their clients hold.
    WhoHolds {
        answers: mpsc::UnboundedSender<(ProcessId, Vec<HeldLock>)>,
    },
    /// Print the status on stdout (the console's `status`).
    PrintStatus,
    Leave,
}

/// What happens to a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketNews {
    Granted(Fence),
    Lost(LossReason),
    Refused(RefusedReason),
}

/// A handle on the node for clients; cheap to clone.
#[derive(Clone, Debug)]
pub struct Clients {
    control: mpsc::UnboundedSender<Control>,
    next_ticket: Arc<AtomicU64>,
}

impl Clients {
    pub fn new(control: mpsc::UnboundedSender<Control>) -> Self {
        Self {
            control,
            next_ticket: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Ask for `lock`; the returned ticket reports its grant, and releases the
    /// lock when given back or dropped.
    pub fn acquire(&self, lock: LockName) -> Result<TicketHandle> {
        self.acquire_with(lock, false)
    }

    /// `acquire`, or with `try_only` give up at once unless the lock is free now.
    pub fn acquire_with(&self, lock: LockName, try_only: bool) -> Result<TicketHandle> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (news_tx, news) = mpsc::unbounded_channel();
        self.control
            .send(Control::Acquire {
                lock: lock.clone(),
                ticket,
                try_only,
                news: news_tx,
            })
            .ok()
            .context("the node has stopped")?;
        Ok(TicketHandle {
            lock,
            ticket,
            news,
            control: self.control.clone(),
            released: false,
        })
    }

    pub async fn progress(
        &self,
        lock: &LockName,
        ticket: Ticket,
    ) -> Result<Option<TicketProgress>> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Progress {
                lock: lock.clone(),
                ticket,
                reply: tx,
            })
            .ok()
            .context("the node has stopped")?;
        rx.await.context("the node has stopped")
    }

    /// Which locks the active set's members hold, as far as each answers
    /// within `within`.
    pub async fn who_holds(&self, within: Duration) -> Result<Vec<(ProcessId, Vec<HeldLock>)>> {
        let (answers, mut rx) = mpsc::unbounded_channel();
        let expected = self
            .status()
            .await?
            .active_set
            .map_or(1, |s| s.members.len());
        self.control
            .send(Control::WhoHolds { answers })
            .ok()
            .context("the node has stopped")?;
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while got.len() < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => got.push(answer),
                _ => break,
            }
        }
        Ok(got)
    }

    pub async fn status(&self) -> Result<Status> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Status(tx))
            .ok()
            .context("the node has stopped")?;
        rx.await.context("the node has stopped")
    }

    pub fn print_status(&self) -> Result<()> {
        self.control
            .send(Control::PrintStatus)
            .ok()
            .context("the node has stopped")
    }

    pub fn leave(&self) -> Result<()> {
        self.control
            .send(Control::Leave)
            .ok()
            .context("the node has stopped")
    }

    pub fn is_stopped(&self) -> bool {
        self.control.is_closed()
    }
}

/// One ticket for one lock.
#[derive(Debug)]
pub struct TicketHandle {
    pub lock: LockName,
    pub ticket: Ticket,
    news: mpsc::UnboundedReceiver<TicketNews>,
    control: mpsc::UnboundedSender<Control>,
    released: bool,
}

impl TicketHandle {
    /// The next thing that happens to the ticket; `None` once the node stopped.
    pub async fn next(&mut self) -> Option<TicketNews> {
        self.news.recv().await
    }

    /// `next` for a hand-written future or stream.
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<TicketNews>> {
        self.news.poll_recv(cx)
    }

    /// Give the ticket back: exits if it holds the lock, leaves the line if not.
    pub fn release(mut self) {
        self.give_back();
    }

    /// `release` for an owner that cannot give the handle away; later news is
    /// of no interest, and dropping the handle sends nothing more.
    pub fn give_back(&mut self) {
        if !self.released {
            self.released = true;
            // The node may have stopped already: then there is nothing to release.
            let _ = self.control.send(Control::Release {
                lock: self.lock.clone(),
                ticket: self.ticket,
            });
        }
    }
}

impl Drop for TicketHandle {
    fn drop(&mut self) {
        self.give_back();
    }
}
