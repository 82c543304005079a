//! Membership and failures timed: joins, leaves, crashes, failovers, lost
//! hosts and stalls, on a cluster whose nodes each run on a thread of their
//! own ([`Cluster::own_threads`]), so that a crash is a crash (the node's
//! runtime stops and every socket of it closes, as the kernel closes a killed
//! process's) and a pause is a pause (its thread blocks while the kernel keeps
//! its sockets open, as for a stopped process).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use super::cluster::{Cluster, Member, stop};
use super::footprint::millis;
use super::report::Row;
use crate::event::Event;
use crate::protocol::ids::ProcessId;
use crate::protocol::lock::LockName;
use crate::runtime::client::TicketNews;

/// How long a member is stopped to time the verdict on a host that is gone:
/// longer than any verdict may take, so the figure is the detector's.
const HOST_LOSS_PAUSE: Duration = Duration::from_secs(6);
/// How long a stall that must never be taken for a failure lasts.
pub const STALL: Duration = Duration::from_secs(1);
/// Watched after each stall for a verdict on it: SWIM's suspicion would have
/// run out by then.
const AFTER_STALL: Duration = Duration::from_secs(2);
/// One stall and the watch after it: `--stall-seconds` counts these.
pub const STALL_ROUND: Duration = STALL.saturating_add(AFTER_STALL);

impl Cluster {
    /// A newcomer joins and leaves; another joins and crashes. Each is timed until
    /// every other member has reported it.
    pub async fn membership_round(&mut self, row: &mut Row) -> Result<()> {
        let newcomer = self.timed_join(row).await?;
        self.settle(Duration::from_secs(20)).await?;

        self.drain();
        let index = self.index_of(newcomer)?;
        let addr = self.members[index].addr;
        let others: Vec<ProcessId> = self
            .processes()
            .into_iter()
            .filter(|p| *p != newcomer)
            .collect();
        let asked = Instant::now();
        self.members[index].handle.clients.leave()?;
        // A member may log the leave as a failure (the departure is noticed all the
        // same, but by the wrong name): counted, and reported with the figure.
        let (done, logged) = self
            .all_logged(
                &others,
                "every member to log the leave",
                Duration::from_secs(15),
                |e| {
                    matches!(e, Event::MemberLeft { member } | Event::MemberFailed { member, .. }
                        if member.addr == addr)
                },
            )
            .await?;
        row.leave.push(millis(done - asked));
        row.leaves_logged_as_failures += logged
            .iter()
            .filter(|e| matches!(e, Event::MemberFailed { .. }))
            .count();
        let member = self.members.remove(index);
        stop(member, Duration::from_secs(5)).await;
        self.settle(Duration::from_secs(20)).await?;

        let victim = self.timed_join(row).await?;
        self.settle(Duration::from_secs(20)).await?;
        self.drain();
        let index = self.index_of(victim)?;
        let member = self.members.remove(index);
        let addr = member.addr;
        let survivors = self.processes();
        let killed = Instant::now();
        crash(member);
        let (done, _) = self
            .all_logged(
                &survivors,
                "every survivor to declare the crashed member failed",
                Duration::from_secs(20),
                |e| matches!(e, Event::MemberFailed { member, .. } if member.addr == addr),
            )
            .await?;
        row.crash.push(millis(done - killed));
        self.settle(Duration::from_secs(20)).await?;
        Ok(())
    }

    /// Start a node joining through the founder; timed until every member has
    /// reported it joined.
    pub async fn timed_join(&mut self, row: &mut Row) -> Result<ProcessId> {
        self.drain();
        let seed = self
            .members
            .first()
            .context("no member to join through")?
            .addr;
        let watchers = self.processes();
        let started = Instant::now();
        let member = self.spawn(&[seed]).await?;
        let addr = member.addr;
        let me = member.handle.me;
        self.members.push(member);
        let (done, _) = self
            .all_logged(
                &watchers,
                "every member to log the newcomer",
                Duration::from_secs(15),
                |e| matches!(e, Event::MemberJoined { member } if member.addr == addr),
            )
            .await?;
        row.join.push(millis(done - started));
        Ok(me)
    }

    pub fn index_of(&self, process: ProcessId) -> Result<usize> {
        self.processes()
            .iter()
            .position(|p| *p == process)
            .context("the node is gone")
    }

    /// A member holds a lock while another waits for it; the holder is
    /// killed. From the kill to the waiter's entry.
    pub async fn failover(&mut self, row: &mut Row) -> Result<()> {
        let active = self.settle(Duration::from_secs(20)).await?;
        let (Some(&waiter), Some(&holder)) = (active.first(), active.get(1)) else {
            bail!("a failover needs two members in the active set");
        };
        let lock = LockName::new("failover")?;
        let waiter_id = self.members[waiter].handle.me;
        let mut held = self.members[holder].handle.clients.acquire(lock.clone())?;
        match tokio::time::timeout(Duration::from_secs(10), held.next()).await {
            Ok(Some(TicketNews::Granted(_))) => {}
            Ok(other) => bail!("the holder's acquire ended with {other:?}"),
            Err(_) => bail!("gave up waiting for the holder's grant"),
        }
        self.drain();
        let mut waiting = self.members[waiter].handle.clients.acquire(lock.clone())?;
        self.one_logged(
            waiter_id,
            "the waiter's request",
            Duration::from_secs(5),
            |e| matches!(e, Event::RequestIssued { lock: l, .. } if *l == lock),
        )
        .await?;
        // Let the request reach the holder, which defers it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let victim = self.members.remove(holder);
        let killed = Instant::now();
        crash(victim);
        let entered = self
            .one_logged(
                waiter_id,
                "the waiter's entry after the holder was killed",
                Duration::from_secs(10),
                |e| matches!(e, Event::Enter { lock: l, .. } if *l == lock),
            )
            .await?;
        row.failover.push(millis(entered - killed));
        match waiting.next().await {
            Some(TicketNews::Granted(_)) => waiting.release(),
            other => bail!("the waiter's ticket ended with {other:?}"),
        }
        drop(held);
        self.replace_lost().await
    }

    /// A member is stopped (its host lost, to the others): from the stop to
    /// every survivor's verdict. It is then killed while still stopped, and
    /// replaced.
    pub async fn host_loss(&mut self, row: &mut Row) -> Result<()> {
        let active = self.settle(Duration::from_secs(20)).await?;
        let victim = *active
            .last()
            .context("no member in the active set to stop")?;
        let (addr, others) = self.everyone_but(victim);
        self.drain();
        let stopped = Instant::now();
        self.members[victim].pause(HOST_LOSS_PAUSE)?;
        let (done, _) = self
            .all_logged(
                &others,
                "every survivor to declare the stopped member failed",
                HOST_LOSS_PAUSE - Duration::from_millis(500),
                |e| matches!(e, Event::MemberFailed { member, .. } if member.addr == addr),
            )
            .await?;
        row.host_loss.push(millis(done - stopped));
        let member = self.members.remove(victim);
        crash(member);
        self.replace_lost().await
    }

    /// Each member in turn is stopped for [`STALL`], then watched for
    /// [`AFTER_STALL`] more, `rounds` times: every verdict on a stalled member
    /// is a false down.
    pub async fn stalls(&mut self, row: &mut Row, rounds: usize) -> Result<()> {
        self.settle(Duration::from_secs(20)).await?;
        for round in 0..rounds {
            let victim = round % self.members.len().max(1);
            let (addr, others) = self.everyone_but(victim);
            self.drain();
            self.members[victim].pause(STALL)?;
            let deadline = Instant::now() + STALL_ROUND;
            while Instant::now() < deadline {
                let Ok((_, who, event)) = self.next(deadline, "a verdict on a stall").await else {
                    break;
                };
                if others.contains(&who)
                    && matches!(&event, Event::MemberFailed { member, .. } if member.addr == addr)
                {
                    row.false_downs += 1;
                }
            }
            row.stalls += 1;
            if row.false_downs > 0 {
                // The cluster reseats the stalled member: wait for it.
                self.settle(Duration::from_secs(30)).await?;
            }
        }
        Ok(())
    }

    /// The address of the `index`-th node and every other node's process.
    fn everyone_but(&self, index: usize) -> (std::net::SocketAddr, Vec<ProcessId>) {
        let addr = self.members[index].addr;
        let others = self
            .processes()
            .into_iter()
            .filter(|p| p.addr != addr)
            .collect();
        (addr, others)
    }

    /// A new node in place of one that was killed, once the cluster settles.
    async fn replace_lost(&mut self) -> Result<()> {
        let seed = self
            .members
            .first()
            .context("no member left to join through")?
            .addr;
        let member = self.spawn(&[seed]).await?;
        self.members.push(member);
        self.settle(Duration::from_secs(30)).await?;
        Ok(())
    }
}

/// Kill a node as SIGKILL would: its tasks stop and, with its own thread, its
/// runtime, so every socket of it closes.
pub fn crash(member: Member) {
    member.handle.kill();
    drop(member);
}
