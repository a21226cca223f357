//! Watermark alignment: a source whose watermark runs ahead of the slowest source its records
//! wait for pauses.
//!
//! Records of a keyed stream wait in the stateful operator that receives them until event
//! time — the least watermark over every slot's sources — passes them. When one slot's
//! source runs ahead (its slot has spare time: nothing it holds is ready yet), its records
//! pile up in every slot, waiting for the slowest source, and the slowest slot falls further
//! behind as it processes both its own records and the leader's. Exchange credits do not
//! stop this: a receiver takes the batches off the channel and they wait in the operator.
//! Measured before alignment: `dedup` at 2 slots read 1.85 M records in its first second with
//! the watermark at 0.7 M, and held a backlog of about a million records (300 MB) throughout.
//!
//! So each slot's sources pause while their watermark is more than [`MAX_DRIFT_MS`] ahead of
//! their *aligned frontier*: the least event time in the frontiers of the slot's exchange
//! receivers fed straight from sources of their group (through stateless steps only, carrying
//! event time), which is the least watermark of the sources feeding them. A source's *group*
//! is every source whose records meet its own in some stream (a union, a join, a connected or
//! broadcast stream, SQL's outer joins and joins of updating results, before or after stateful
//! steps; [`crate::api::SourcePlan::alignment_group`] names each source's): unrelated
//! pipelines of one job never hold each other back, and a source whose group has no aligned
//! receiver never pauses. Receivers after a stateful step are not counted: their frontier is
//! held back by that step's output, which may wait for the very source that would pause. So
//! only sources reaching a receiver through stateless steps set their group's frontier: one
//! whose records meet the group only after another source's stateful step is held to the
//! group's pace but does not hold it back. Flink offers the same as
//! `WatermarkStrategy::withWatermarkAlignment`, opt-in, with named groups; here it is always
//! on, and the groups follow from the job's graph.
//!
//! Alignment cannot stop event time. A paused source waits for its receivers' next report,
//! which needs no source to read: the frontier of a receiver rises to the least watermark of
//! the sources feeding it, so the slowest source (whose watermark that is) reads on as soon as
//! its own last batch has reached the receivers.
//!
//! What it bounds, exactly:
//! - a source checks before each batch it reads, so it may run [`MAX_DRIFT_MS`] plus one
//!   batch ([`crate::source::BATCH_RECORDS`] records) ahead;
//! - only keyed or broadcast streams crossing slots have receivers: at parallelism 1 there is
//!   no exchange and nothing is aligned;
//! - a slot whose every unfinished split is idle holds event time, and so the reading of the
//!   other slots' sources of its group, where it is; nothing they read could be processed
//!   before event time moves on.
//!
//! Pausing only delays reading: which records a source reads, and so the output, is the same.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use timely::scheduling::Activator;

use weir_core::time::EventTime;

/// How far (event time) a source may run ahead of the aligned frontier before it pauses.
pub const MAX_DRIFT_MS: i64 = 2_000;

/// A group of sources (see the module docs), as [`Alignment::new_group`] numbered it; groups
/// merged later keep their numbers.
pub type Group = usize;

/// A slot's alignment: the frontiers of its source-fed receivers, the groups of its sources,
/// and its sources to wake.
#[derive(Default)]
pub struct Alignment {
    /// Each receiver's group and frontier.
    frontiers: RefCell<Vec<(Group, Rc<Cell<EventTime>>)>>,
    /// Union-find over groups: a group's parent, itself at a group's root.
    parents: RefCell<Vec<Group>>,
    sources: RefCell<Vec<Activator>>,
}

impl Alignment {
    /// A new group, of one source.
    pub fn new_group(&self) -> Group {
        let mut parents = self.parents.borrow_mut();
        let group = parents.len();
        parents.push(group);
        group
    }

    /// One group of both (their records meet in one stream).
    pub fn merge(&self, a: Group, b: Group) -> Group {
        let (a, b) = (self.root(a), self.root(b));
        let root = a.min(b);
        self.parents.borrow_mut()[a.max(b)] = root;
        root
    }

    /// [`Self::merge`] where either side may have no group.
    pub fn merge_groups(&self, a: Option<Group>, b: Option<Group>) -> Option<Group> {
        match (a, b) {
            (Some(a), Some(b)) => Some(self.merge(a, b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether `a` and `b` are one group (merged, directly or through others).
    pub fn same_group(&self, a: Group, b: Group) -> bool {
        self.root(a) == self.root(b)
    }

    fn root(&self, mut group: Group) -> Group {
        let parents = self.parents.borrow();
        assert!(group < parents.len(), "group {group} was never made");
        while parents[group] != group {
            group = parents[group];
        }
        group
    }

    /// A receiver fed straight from sources of `group`: it reports its frontier's least event
    /// time ([`EventTime::MAX`] once empty) through the returned cell, then calls
    /// [`Self::advanced`].
    pub fn register_receiver(&self, group: Group) -> Rc<Cell<EventTime>> {
        let frontier = Rc::new(Cell::new(EventTime::MIN));
        self.frontiers.borrow_mut().push((group, frontier.clone()));
        frontier
    }

    /// A source, woken when an aligned frontier advances.
    pub fn register_source(&self, activator: Activator) {
        self.sources.borrow_mut().push(activator);
    }

    /// The watermark a source of `group` may not exceed and go on reading: the aligned
    /// frontier plus the drift, or `None` if no receiver of its group is aligned (nothing to
    /// wait for).
    pub fn bound(&self, group: Group) -> Option<EventTime> {
        Some(self.frontier(group)?.saturating_add(MAX_DRIFT_MS))
    }

    /// `group`'s aligned frontier: the least event time its source-fed receivers in this slot
    /// may still see, or `None` if there are none.
    pub fn frontier(&self, group: Group) -> Option<EventTime> {
        let root = self.root(group);
        let frontiers = self.frontiers.borrow();
        frontiers.iter().filter(|(of, _)| self.root(*of) == root).map(|(_, cell)| cell.get()).min()
    }

    /// How far a source of `group` at `watermark` is ahead of its aligned frontier (ms of
    /// event time), if both are real times (not before the first report, nor after the end).
    pub fn lead(&self, group: Group, watermark: EventTime) -> Option<i64> {
        let frontier = self.frontier(group)?;
        let real = |time: EventTime| time != EventTime::MIN && time != EventTime::MAX;
        (real(frontier) && real(watermark)).then(|| watermark.saturating_sub(frontier))
    }

    /// Whether a source of `group` at `watermark` must pause.
    pub fn must_pause(&self, group: Group, watermark: EventTime) -> bool {
        self.bound(group).is_some_and(|bound| watermark > bound)
    }

    /// A receiver's frontier advanced: paused sources may read again.
    pub fn advanced(&self) {
        for source in self.sources.borrow().iter() {
            source.activate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_pauses_only_beyond_the_drift_and_never_without_aligned_receivers() {
        let alignment = Alignment::default();
        let group = alignment.new_group();
        assert!(!alignment.must_pause(group, EventTime::MAX), "no receivers: nothing to wait for");
        let first = alignment.register_receiver(group);
        let second = alignment.register_receiver(group);
        assert!(!alignment.must_pause(group, EventTime::MIN));
        first.set(10_000);
        second.set(4_000);
        assert!(!alignment.must_pause(group, 4_000 + MAX_DRIFT_MS), "the least frontier counts, drift included");
        assert!(alignment.must_pause(group, 4_001 + MAX_DRIFT_MS));
        assert_eq!(alignment.lead(group, 4_500), Some(500));
        second.set(EventTime::MAX);
        assert!(!alignment.must_pause(group, 10_000 + MAX_DRIFT_MS), "an empty frontier no longer holds sources");
        first.set(EventTime::MAX);
        assert!(!alignment.must_pause(group, EventTime::MAX), "no overflow past the end");
        assert_eq!(alignment.lead(group, 5_000), None, "no lead once every receiver is done");
    }

    #[test]
    fn only_receivers_of_a_sources_group_hold_it_back() {
        let alignment = Alignment::default();
        let (a, b, c) = (alignment.new_group(), alignment.new_group(), alignment.new_group());
        let of_a = alignment.register_receiver(a);
        let of_b = alignment.register_receiver(b);
        of_a.set(100_000);
        of_b.set(1_000);
        assert!(!alignment.must_pause(a, 100_000 + MAX_DRIFT_MS), "a slow unrelated pipeline does not hold it");
        assert!(alignment.must_pause(b, 1_001 + MAX_DRIFT_MS));
        assert!(!alignment.must_pause(c, EventTime::MAX), "no receiver in its group: never paused");
        // c's records meet a's (a join), then b's: one group, held by the slowest receiver.
        alignment.merge(c, a);
        alignment.merge(b, c);
        for group in [a, b, c] {
            assert_eq!(alignment.frontier(group), Some(1_000));
        }
    }
}
