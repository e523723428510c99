//! PULL/PUSH across replicas, as pure functions: the credit each replica announced, and where
//! each task of a batch goes. A replica's own workers come first; what they cannot take now goes
//! to the other replicas with credit in proportion to their workers (a replica with two workers
//! takes twice what a replica with one does, so every worker gets an equal share); what nobody
//! can take waits (as a PUSH with no room waits), so work never piles up at a replica without
//! workers while another has idle ones.

/// One other replica's credit as this replica sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The room its own workers had when it last announced (`CREDIT`).
    pub room: u64,
    /// How many of this replica's tasks it had handed to its workers by then.
    pub taken: u64,
    /// How many tasks this replica has sent it over the current connection.
    pub sent: u64,
    /// Its own workers when it last announced.
    pub workers: u64,
}

impl Ledger {
    /// Tasks it can still take: its announced room less what is in flight to it (sent and not
    /// yet handed to its workers when it announced).
    pub fn credit(&self) -> u64 {
        self.room.saturating_sub(self.sent.saturating_sub(self.taken))
    }
}

/// Where one task goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Local,
    /// Index into the ledgers.
    Replica(usize),
    /// Nobody has room now.
    Wait,
}

/// Places `n` tasks in order: the first `local_room` locally, then each to the replica with
/// credit left that has been sent the fewest tasks per worker (ties: more workers, then the
/// first), counted in its ledger as sent; `Wait` for the rest. Free room only bounds what a
/// replica is sent: a busy replica's fuller queues must not cost its workers their share.
/// Tasks keep their order within each destination. Returns `(local, replica, sent)` when the
/// places are one run each (the first `local` here, the next `sent` to `replica`, the rest
/// waiting), so the caller can split the batch in three instead of task by task.
pub fn place(
    n: usize,
    local_room: usize,
    ledgers: &mut [Ledger],
    out: &mut Vec<Place>,
) -> Option<(usize, usize, usize)> {
    out.clear();
    let local = n.min(local_room);
    out.resize(local, Place::Local);
    // sent/workers compared as fractions without division: a/b < c/d  <=>  a*d < c*b.
    let better = |a: &Ledger, b: &Ledger| {
        let (x, y) = (
            u128::from(a.sent) * u128::from(b.workers),
            u128::from(b.sent) * u128::from(a.workers),
        );
        x < y || (x == y && a.workers > b.workers)
    };
    // One replica (or none) with credit, the usual case: every task until its credit runs out
    // goes to it, as the loop below would decide one task at a time.
    let open = |l: &Ledger| l.credit() > 0 && l.workers > 0;
    let mut with_credit = ledgers.iter().enumerate().filter(|(_, l)| open(l)).map(|(i, _)| i);
    if let (first, None) = (with_credit.next(), with_credit.next()) {
        let (to, k) = match first {
            Some(i) => {
                (i, (n - local).min(usize::try_from(ledgers[i].credit()).unwrap_or(usize::MAX)))
            }
            None => (0, 0),
        };
        if k > 0 {
            ledgers[to].sent += k as u64;
        }
        out.resize(local + k, Place::Replica(to));
        out.resize(n, Place::Wait);
        return Some((local, to, k));
    }
    for _ in local..n {
        let mut best: Option<usize> = None;
        for (i, l) in ledgers.iter().enumerate() {
            if l.credit() > 0 && l.workers > 0 && best.is_none_or(|b| better(l, &ledgers[b])) {
                best = Some(i);
            }
        }
        match best {
            Some(i) => {
                ledgers[i].sent += 1;
                out.push(Place::Replica(i));
            }
            None => out.push(Place::Wait),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(room: u64, workers: u64) -> Ledger {
        Ledger { room, taken: 0, sent: 0, workers }
    }

    #[test]
    fn own_workers_first_then_the_replicas_by_credit_then_wait() {
        let mut ls = [ledger(1, 1), ledger(3, 3)];
        let mut out = Vec::new();
        place(7, 2, &mut ls, &mut out);
        use Place::*;
        assert_eq!(out, [Local, Local, Replica(1), Replica(0), Replica(1), Replica(1), Wait]);
        assert_eq!((ls[0].credit(), ls[1].credit()), (0, 0));
        place(1, 0, &mut [], &mut out);
        assert_eq!(out, [Wait], "no replica, no room: the task waits");
    }

    /// A replica's announcement counts what was in flight to it: tasks it had not yet handed to
    /// its workers use up the room it announced, tasks it had are no longer in flight.
    #[test]
    fn credit_is_the_announced_room_less_what_is_in_flight() {
        let mut l = Ledger { room: 10, taken: 0, sent: 4, workers: 1 };
        assert_eq!(l.credit(), 6);
        l.taken = 4;
        assert_eq!(l.credit(), 10, "all four reached its workers before it announced");
        l.sent = 30;
        assert_eq!(l.credit(), 0, "never below zero");
        l.taken = 40;
        assert_eq!(l.credit(), 10, "a count from an earlier connection is no debt");
    }

    /// Two workers against one: two tasks for each one, so each worker gets a third, however
    /// full the busier replica's queues are, as long as its credit lasts.
    #[test]
    fn tasks_spread_in_proportion_to_the_workers_within_the_credit() {
        let mut out = Vec::new();
        for rooms in [(2000, 1000), (500, 1000)] {
            let mut ls = [ledger(rooms.0, 2), ledger(rooms.1, 1)];
            place(300, 0, &mut ls, &mut out);
            let to = |i| out.iter().filter(|p| **p == Place::Replica(i)).count();
            assert_eq!((to(0), to(1)), (200, 100), "rooms {rooms:?}");
        }
        let mut ls = [ledger(50, 2), ledger(1000, 1)];
        place(300, 0, &mut ls, &mut out);
        let to = |i| out.iter().filter(|p| **p == Place::Replica(i)).count();
        assert_eq!((to(0), to(1)), (50, 250), "credit bounds the share");
    }

    #[test]
    fn equal_credit_spreads_tasks_evenly() {
        let mut ls = [ledger(100, 1), ledger(100, 1), ledger(100, 1)];
        let mut out = Vec::new();
        place(90, 0, &mut ls, &mut out);
        let per: Vec<usize> =
            (0..3).map(|i| out.iter().filter(|p| **p == Place::Replica(i)).count()).collect();
        assert_eq!(per, [30, 30, 30]);
    }
}
