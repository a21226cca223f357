//! Exchange-layer tests: frontier propagation and credits under adversarial interleavings.
//!
//! Method: two to four single-threaded timely workers run in one test thread, each with an
//! input, an `ExchangeSend` routing records by value to every worker, and an
//! `ExchangeReceive`. Proptest draws an arbitrary schedule of actions — send a record,
//! advance an input's `(epoch, event time)`, step one worker — over channels with as little
//! as one credit. After every action the test checks the property everything else rests on:
//! no receiver's frontier has passed the time of a record that was sent to it but has not
//! yet arrived (wherever that record is: in the sender's input, its outbox, or the channel).
//! It also checks that records arrive exactly once at the time they were sent, that credits
//! are never exceeded, and that after the inputs close every frontier empties (liveness).

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use proptest::prelude::*;
use timely::communication::allocator::Thread;
use timely::communication::Allocator;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Probe;
use timely::scheduling::Activator;
use timely::worker::{Config, Worker};

use weir_core::time::Time;
use weir_dataflow::exchange::{Doorbell, ExchangeReceive, ExchangeRx, ExchangeSend, ExchangeTx, LocalChannel};
use weir_dataflow::Activity;

/// Remembers that it rang, like a slot driver's doorbell; the harness wakes the worker's
/// exchange operators when it did, as the driver does.
#[derive(Default)]
struct FlagBell(std::sync::atomic::AtomicBool);
impl Doorbell for FlagBell {
    fn ring(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
impl FlagBell {
    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Clone, Debug)]
enum Action {
    Send { worker: usize, value: u64 },
    Advance { worker: usize, epochs: u64, millis: i64 },
    Step { worker: usize },
}

fn action(workers: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..workers, any::<u64>()).prop_map(|(worker, value)| Action::Send { worker, value }),
        2 => (0..workers, 0u64..2, 0i64..50).prop_map(|(worker, epochs, millis)| Action::Advance { worker, epochs, millis }),
        4 => (0..workers).prop_map(|worker| Action::Step { worker }),
    ]
}

/// The test's input to one worker: records to emit at the current time, the time, closed.
#[derive(Default)]
struct TestInput {
    time: Time,
    pending: Vec<u64>,
    closed: bool,
}

/// Records sent to each worker and not yet received there: (time, value) -> count.
type InFlight = Rc<RefCell<Vec<BTreeMap<(Time, u64), usize>>>>;

struct Harness {
    workers: Vec<Worker>,
    inputs: Vec<Rc<RefCell<TestInput>>>,
    activators: Vec<Activator>,
    probes: Vec<ProbeHandle<Time>>,
    in_flight: InFlight,
    channels: Vec<Arc<LocalChannel<Vec<u64>>>>,
    capacity: usize,
    bells: Vec<Arc<FlagBell>>,
    exchange_activators: Vec<Vec<Activator>>,
}

impl Harness {
    fn new(count: usize, capacity: usize) -> Self {
        let bells: Vec<Arc<FlagBell>> = (0..count).map(|_| Arc::new(FlagBell::default())).collect();
        // channels[from * count + to]
        let channels: Vec<Arc<LocalChannel<Vec<u64>>>> = (0..count * count)
            .map(|i| {
                let (from, to) = (i / count, i % count);
                LocalChannel::new(
                    capacity,
                    bells[to].clone() as Arc<dyn Doorbell>,
                    bells[from].clone() as Arc<dyn Doorbell>,
                )
            })
            .collect();
        let mut exchange_activators = Vec::new();
        let in_flight: InFlight = Rc::new(RefCell::new(vec![BTreeMap::new(); count]));
        let mut workers = Vec::new();
        let mut inputs = Vec::new();
        let mut activators = Vec::new();
        let mut probes = Vec::new();
        for index in 0..count {
            let mut worker = Worker::new(Config::default(), Allocator::Thread(Thread::default()), None);
            let input = Rc::new(RefCell::new(TestInput { time: Time::new(1, 0), ..Default::default() }));
            let probe = ProbeHandle::new();
            let senders: Vec<Box<dyn ExchangeTx<Vec<u64>>>> = (0..count)
                .map(|to| Box::new(channels[index * count + to].clone()) as Box<dyn ExchangeTx<Vec<u64>>>)
                .collect();
            let receivers: Vec<Box<dyn ExchangeRx<Vec<u64>>>> = (0..count)
                .map(|from| Box::new(channels[from * count + index].clone()) as Box<dyn ExchangeRx<Vec<u64>>>)
                .collect();
            let arrived = in_flight.clone();
            worker.dataflow::<Time, _, _>(|scope| {
                let state = input.clone();
                let stream = source::<_, timely::container::CapacityContainerBuilder<Vec<u64>>, _, _>(scope, "TestInput", |capability, info| {
                    activators.push(scope.activator_for(info.address));
                    let mut capability = Some(capability.delayed(&Time::new(1, 0)));
                    move |output| {
                        let mut state = state.borrow_mut();
                        let Some(cap) = capability.as_mut() else { return };
                        cap.downgrade(&state.time);
                        if !state.pending.is_empty() {
                            let mut batch = std::mem::take(&mut state.pending);
                            output.session(&*cap).give_container(&mut batch);
                        }
                        if state.closed {
                            capability = None;
                        }
                    }
                });
                let send = stream.exchange_send(senders, move |value: &u64| (*value % count as u64) as usize, Rc::new(Cell::new(0)), Activity::default());
                let (received, receive) = ExchangeReceive::build(scope, receivers, Activity::default());
                exchange_activators.push(vec![send, receive]);
                received
                    .unary(Pipeline, "Check", move |_, _| {
                        move |input, _output: &mut timely::dataflow::operators::generic::OutputBuilderSession<'_, Time, timely::container::CapacityContainerBuilder<Vec<u64>>>| {
                            input.for_each(|stamp, data| {
                                let time = stamp.stamp().elements()[0];
                                for value in data.drain(..) {
                                    let mut flights = arrived.borrow_mut();
                                    let count = flights[index].get_mut(&(time, value)).unwrap_or_else(|| {
                                        panic!("worker {index} received ({time:?}, {value}) which was not sent at that time, or twice")
                                    });
                                    *count -= 1;
                                    if *count == 0 {
                                        flights[index].remove(&(time, value));
                                    }
                                }
                            });
                        }
                    })
                    .probe_with(&probe);
            });
            workers.push(worker);
            inputs.push(input);
            probes.push(probe);
        }
        Harness { workers, inputs, activators, probes, in_flight, channels, capacity, bells, exchange_activators }
    }

    fn apply(&mut self, action: &Action) {
        let count = self.workers.len();
        match *action {
            Action::Send { worker, value } => {
                let time = self.inputs[worker].borrow().time;
                self.inputs[worker].borrow_mut().pending.push(value);
                self.activators[worker].activate();
                *self.in_flight.borrow_mut()[(value % count as u64) as usize].entry((time, value)).or_default() += 1;
            }
            Action::Advance { worker, epochs, millis } => {
                let mut input = self.inputs[worker].borrow_mut();
                if input.pending.is_empty() {
                    let now = input.time;
                    input.time = Time::new(now.epoch + epochs, now.event_time.saturating_add(millis));
                    self.activators[worker].activate();
                }
            }
            Action::Step { worker } => self.step(worker),
        }
        self.check_safety();
    }

    fn step(&mut self, worker: usize) {
        if self.bells[worker].take() {
            self.exchange_activators[worker].iter().for_each(|a| a.activate());
        }
        self.workers[worker].step();
    }

    /// No receiver's frontier has passed a record still on its way to it; no channel over credit.
    fn check_safety(&self) {
        for (worker, flights) in self.in_flight.borrow().iter().enumerate() {
            for (time, value) in flights.keys() {
                self.probes[worker].with_frontier(|frontier| {
                    assert!(
                        frontier.less_equal(time),
                        "worker {worker}'s frontier {frontier:?} passed ({time:?}, {value}) before it arrived"
                    );
                });
            }
        }
        for channel in &self.channels {
            assert!(channel.data_in_flight() <= self.capacity);
        }
    }

    /// Closes every input and steps all workers until everything arrived and every frontier is empty.
    fn finish(mut self) {
        for (input, activator) in self.inputs.iter().zip(&self.activators) {
            input.borrow_mut().closed = true;
            activator.activate();
        }
        for _round in 0..10_000 {
            for worker in 0..self.workers.len() {
                self.step(worker);
            }
            self.check_safety();
            let done = self.probes.iter().all(|probe| probe.with_frontier(|f| f.is_empty()));
            if done {
                assert!(self.in_flight.borrow().iter().all(|f| f.is_empty()), "frontiers emptied with records missing");
                return;
            }
        }
        panic!("the exchange did not drain: liveness violated");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn frontiers_never_pass_records_in_flight(
        workers in 2usize..5,
        capacity in 1usize..4,
        actions in proptest::collection::vec(action(4), 0..300),
    ) {
        let mut harness = Harness::new(workers, capacity);
        for action in actions.iter().map(|a| match a.clone() {
            Action::Send { worker, value } => Action::Send { worker: worker % workers, value },
            Action::Advance { worker, epochs, millis } => Action::Advance { worker: worker % workers, epochs, millis },
            Action::Step { worker } => Action::Step { worker: worker % workers },
        }) {
            harness.apply(&action);
        }
        harness.finish();
    }
}

/// With one credit and a receiver that is never stepped, the sender keeps at most one batch
/// in the channel and reports the rest as back-pressure; stepping the receiver drains it.
#[test]
fn credits_bound_the_channel_and_back_pressure_is_reported() {
    let bell: Arc<dyn Doorbell> = Arc::new(FlagBell::default());
    let channel = LocalChannel::<Vec<u64>>::new(1, bell.clone(), bell.clone());
    assert!(channel.try_send(weir_dataflow::exchange::ExchangeMessage::Data(Time::new(1, 0), vec![1])).is_ok());
    let refused = channel.try_send(weir_dataflow::exchange::ExchangeMessage::Data(Time::new(1, 0), vec![2]));
    assert!(refused.is_err(), "a second batch must wait for credit");
    // Progress needs no credit, and stays behind the data (FIFO).
    assert!(channel.try_send(weir_dataflow::exchange::ExchangeMessage::Progress(vec![Time::new(2, 0)])).is_ok());
    assert!(matches!(channel.try_recv(), Some(weir_dataflow::exchange::ExchangeMessage::Data(..))));
    assert!(matches!(channel.try_recv(), Some(weir_dataflow::exchange::ExchangeMessage::Progress(..))));
    assert_eq!(channel.data_in_flight(), 0);

    let mut harness = Harness::new(2, 1);
    for value in 0..100u64 {
        harness.apply(&Action::Send { worker: 0, value: value * 2 + 1 }); // all to worker 1
        harness.apply(&Action::Step { worker: 0 });
    }
    assert_eq!(harness.channels[1].data_in_flight(), 1, "exactly one batch of credit is in use");
    harness.finish();
}
