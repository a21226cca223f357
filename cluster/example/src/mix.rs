//! `mix`: one job exercising every other operator family under the same input — sliding and
//! cumulating windows, an interval join and a window join — so that the simulator judges
//! them all under faults, each by its own reference.
//!
//! Input: sensor readings, and alarms ten times rarer. Outputs: per sensor the maximum over
//! 4 s windows sliding by 2 s (`OUTPUT/sliding/`), reading counts in windows cumulating by 1 s
//! up to 4 s (`OUTPUT/cumulate/`), each alarm with the readings from 500 ms before it to 500 ms
//! after it (`OUTPUT/interval-join/`), and alarms paired with readings in the same 2 s window
//! (`OUTPUT/window-join/`), and every on-time reading once more, passed through a buffer that
//! processing-time timers flush (`OUTPUT/batched/`). Every operator's late records go to a
//! directory of their own.

use serde::{Deserialize, Serialize};

use weir_core::generator::{strided_split_len, GeneratorConfig};
use weir_core::keygroup::mix64;
use weir_core::time::EventTime;
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{Generator, GeneratorSource};
use weir_dataflow::{
    AggregateFunction, BroadcastKey, Context, CountTrigger, CumulativeEventTimeWindows, JobBuilder, JobDef,
    KeyedBroadcastProcessFunction, KeyedProcessFunction, ListState, ParamDef, ParamKind, Params,
    SlidingEventTimeWindows, TimeDomain, TimeWindow, TriggerResult, TumblingEventTimeWindows, ValueState,
    WatermarkStrategy,
};

/// Sliding windows: size and slide.
pub const SLIDING: (i64, i64) = (4_000, 2_000);
/// Cumulating windows: step and size.
pub const CUMULATE: (i64, i64) = (1_000, 4_000);
/// The interval join's bounds, from the alarm.
pub const INTERVAL: (i64, i64) = (-500, 500);
/// The window join's tumbling window.
pub const JOIN_WINDOW: i64 = 2_000;
/// Tumbling windows with allowed lateness: size and lateness.
pub const LATE_WINDOW: (i64, i64) = (2_000, 8_000);
/// Readings per count window.
pub const COUNT_WINDOW: u64 = 5;
/// A reading at least this high closes a sensor's spike window.
pub const SPIKE: i64 = 990;

/// A sensor reading.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reading {
    /// The sensor.
    pub sensor: i64,
    /// The value read.
    pub value: i64,
    /// Event time (ms).
    pub time: EventTime,
}

/// An alarm raised on a sensor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alarm {
    /// The sensor.
    pub sensor: i64,
    /// Its level.
    pub level: i64,
    /// Event time (ms).
    pub time: EventTime,
}

/// A window's result: a sensor, the window, and a figure (maximum or count).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowFigure {
    /// The sensor.
    pub sensor: i64,
    /// Window start.
    pub start: EventTime,
    /// Window end.
    pub end: EventTime,
    /// The figure.
    pub figure: i64,
}

/// An alarm with a reading.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pair {
    /// The sensor.
    pub sensor: i64,
    /// The alarm's time.
    pub alarm_time: EventTime,
    /// The alarm's level.
    pub level: i64,
    /// The reading's time.
    pub reading_time: EventTime,
    /// The reading's value.
    pub value: i64,
}

const FIGURE_HEADER: &str = "sensor,start,end,figure";
const PAIR_HEADER: &str = "sensor,alarm_time,level,reading_time,value";

/// The job's definition.
pub fn job() -> JobDef {
    JobDef::new(
        "mix",
        "sliding and cumulating windows, an interval join and a window join over generated sensor readings and \
         alarms (see the crate's docs for the outputs)",
        vec![
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::new("out-of-orderness", ParamKind::Duration, "1s", "bounded out-of-orderness of event time"),
            ParamDef::new("events", ParamKind::UInt, "100000", "number of readings (alarms: a tenth)"),
            ParamDef::new("sensors", ParamKind::UInt, "50", "number of sensors"),
            ParamDef::new("seed", ParamKind::UInt, "0", "seed"),
        ],
        build,
    )
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let out_of_orderness = params.duration_ms("out-of-orderness")?;
    let sensors = Sensors::new(params.u64("events")?, params.u64("sensors")?, params.u64("seed")?)?;
    let readings = job.source(
        "readings",
        GeneratorSource::new(ReadingGenerator(sensors.clone())),
        WatermarkStrategy::bounded_out_of_orderness(out_of_orderness, |r: &Reading| r.time),
    );
    let alarms = job.source(
        "alarms",
        GeneratorSource::new(AlarmGenerator(sensors)),
        WatermarkStrategy::bounded_out_of_orderness(out_of_orderness, |a: &Alarm| a.time),
    );
    readings.errors.discard(); // generated: never malformed
    alarms.errors.discard();
    let figure = |sensor: &i64, window: TimeWindow, figure: i64| WindowFigure {
        sensor: *sensor,
        start: window.start,
        end: window.end,
        figure,
    };
    let by_sensor = || readings.records.clone().key_by(|r: &Reading| r.sensor);
    let sliding = by_sensor()
        .window(SlidingEventTimeWindows::of(SLIDING.0, SLIDING.1))
        .uid("sliding-max")
        .reduce(|a: Reading, b: Reading| if b.value > a.value { b } else { a }, move |s, w, r| figure(s, w, r.value));
    sliding.results.sink_serde_csv("sliding", output.join("sliding"), FIGURE_HEADER);
    sliding.late.sink_json("sliding-late", output.join("late-sliding"));
    let cumulate = by_sensor()
        .window(CumulativeEventTimeWindows::of(CUMULATE.0, CUMULATE.1))
        .uid("cumulate-count")
        .aggregate(Count, move |s, w, count| figure(s, w, count));
    cumulate.results.sink_serde_csv("cumulate", output.join("cumulate"), FIGURE_HEADER);
    cumulate.late.sink_json("cumulate-late", output.join("late-cumulate"));
    let lenient = by_sensor()
        .window(TumblingEventTimeWindows::of(LATE_WINDOW.0))
        .allowed_lateness(LATE_WINDOW.1)
        .uid("lenient-count")
        .aggregate(Count, move |s, w, count| figure(s, w, count));
    lenient.results.sink_serde_csv("lenient", output.join("lenient"), FIGURE_HEADER);
    lenient.late.sink_json("lenient-late", output.join("late-lenient"));
    // Global windows: the sum of every COUNT_WINDOW readings of a sensor (a count trigger),
    // and the readings between spikes (a custom trigger).
    let counted =
        by_sensor()
            .global_window(CountTrigger(COUNT_WINDOW))
            .aggregate("count-window", Sum, |&s: &i64, sum: i64| (s, sum));
    counted.results.sink_serde_csv("count-window", output.join("count-window"), "sensor,sum");
    counted.late.sink_json("count-window-late", output.join("late-count-window"));
    let spike = |reading: &Reading, _time: i64, _count: u64, _sum: &i64| {
        if reading.value >= SPIKE {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    };
    let spikes = by_sensor().global_window(spike).aggregate("spikes", Sum, |&s: &i64, sum: i64| (s, sum));
    spikes.results.sink_serde_csv("spikes", output.join("spikes"), "sensor,sum");
    spikes.late.sink_json("spikes-late", output.join("late-spikes"));
    let pair = |a: &Alarm, r: &Reading| Pair {
        sensor: a.sensor,
        alarm_time: a.time,
        level: a.level,
        reading_time: r.time,
        value: r.value,
    };
    let interval = alarms
        .records
        .clone()
        .key_by(|a: &Alarm| a.sensor)
        .interval_join(by_sensor())
        .between(INTERVAL.0, INTERVAL.1)
        .process("interval-join", pair);
    interval.results.sink_serde_csv("interval-join", output.join("interval-join"), PAIR_HEADER);
    interval.late.sink_json("interval-late", output.join("late-interval"));
    let alarms_for_rules = alarms.records.clone();
    let windowed = alarms
        .records
        .key_by(|a: &Alarm| a.sensor)
        .window_join(by_sensor(), TumblingEventTimeWindows::of(JOIN_WINDOW))
        .apply("window-join", pair);
    windowed.results.sink_serde_csv("window-join", output.join("window-join"), PAIR_HEADER);
    windowed.late.sink_json("window-join-late", output.join("late-window-join"));
    // Broadcast state: every slot keeps each sensor's latest alarm level; a reading above its
    // sensor's threshold (500 + 100 × level) is flagged.
    let flagged =
        by_sensor().connect_broadcast(alarms_for_rules.broadcast()).process("thresholds", Thresholds::default());
    flagged.results.sink_serde_csv("flagged", output.join("flagged"), PAIR_HEADER);
    flagged.late.sink_json("flagged-late", output.join("late-flagged"));
    let batched = by_sensor().process("batcher", Batcher::default());
    batched.results.sink_serde_csv("batched", output.join("batched"), "sensor,value,time");
    batched.late.sink_json("batched-late", output.join("late-batched"));
    Ok(())
}

/// How long a sensor's batch waits, in processing time, after its first reading.
pub const BATCH_DELAY_MS: i64 = 5;
/// Event time after its first reading at which a batch is flushed whatever the clock says
/// (processing-time timers do not fire once the input has ended; event-time timers do).
pub const BATCH_HORIZON_MS: i64 = 30_000;

/// Batches flushed by a processing-time timer so far, in this process (the output is the same
/// whichever timer flushes: tests read this to know the processing-time path ran).
pub static PROCESSING_TIME_FLUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Buffers each sensor's readings and emits them in a batch when a processing-time timer
/// fires ([`BATCH_DELAY_MS`] after the batch's first reading, on the node's clock — simulated
/// under the simulator) or, failing that, an event-time timer. Which timer flushes depends on
/// timing; what is emitted does not: every on-time reading exactly once — through crashes,
/// as long as buffers and both kinds of timers are checkpointed and restored exactly.
pub struct Batcher {
    buffer: ListState<Reading>,
    /// The open batch's timers: `(processing time, event time)`.
    deadlines: ValueState<(EventTime, EventTime)>,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher { buffer: ListState::new("buffer"), deadlines: ValueState::new("deadlines") }
    }
}

impl KeyedProcessFunction<i64, Reading, Reading> for Batcher {
    fn process_element(&mut self, reading: Reading, ctx: &mut Context<'_, i64, Reading>) {
        if self.deadlines.get(ctx.state()).is_none() {
            let deadlines = (ctx.current_processing_time() + BATCH_DELAY_MS, reading.time + BATCH_HORIZON_MS);
            ctx.register_processing_time_timer(deadlines.0);
            ctx.register_event_time_timer(deadlines.1);
            self.deadlines.set(ctx.state(), deadlines);
        }
        self.buffer.add(ctx.state(), reading);
    }

    fn on_timer(&mut self, _timestamp: EventTime, domain: TimeDomain, ctx: &mut Context<'_, i64, Reading>) {
        // A timer of a batch flushed already (its other timer could not be deleted) flushes
        // the next one early: harmless, every reading still goes out once.
        let Some((processing, event)) = self.deadlines.get(ctx.state()) else { return };
        match domain {
            TimeDomain::ProcessingTime => {
                PROCESSING_TIME_FLUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.delete_event_time_timer(event);
            }
            TimeDomain::EventTime => ctx.delete_processing_time_timer(processing),
        }
        for reading in self.buffer.get(ctx.state()) {
            ctx.collect(reading);
        }
        self.buffer.clear(ctx.state());
        self.deadlines.clear(ctx.state());
    }
}

/// Flags readings above their sensor's threshold, which broadcast alarms set.
pub struct Thresholds {
    last_flagged: ValueState<EventTime>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { last_flagged: ValueState::new("last-flagged") }
    }
}

/// Readings of one sensor are flagged at least this far apart (keyed state beside the
/// broadcast state).
pub const DEBOUNCE_MS: i64 = 50;

impl KeyedBroadcastProcessFunction<i64, Reading, Alarm, Pair> for Thresholds {
    type State = std::collections::BTreeMap<i64, (i64, EventTime)>;

    fn process_element(
        &mut self,
        reading: Reading,
        levels: &Self::State,
        ctx: &mut Context<'_, BroadcastKey<i64>, Pair>,
    ) {
        if let Some(&(level, alarm_time)) = levels.get(&reading.sensor) {
            let recent = self.last_flagged.get(ctx.state()).is_some_and(|last| reading.time - last < DEBOUNCE_MS);
            if reading.value > threshold(level) && !recent {
                self.last_flagged.set(ctx.state(), reading.time);
                ctx.collect(Pair {
                    sensor: reading.sensor,
                    alarm_time,
                    level,
                    reading_time: reading.time,
                    value: reading.value,
                });
            }
        }
    }

    fn process_broadcast_element(
        &mut self,
        alarm: Alarm,
        levels: &mut Self::State,
        _ctx: &mut Context<'_, BroadcastKey<i64>, Pair>,
    ) {
        levels.insert(alarm.sensor, (alarm.level, alarm.time));
    }
}

/// The value above which a reading is flagged, for an alarm level.
pub fn threshold(level: i64) -> i64 {
    500 + 100 * level
}

/// Sums reading values.
pub struct Sum;

impl AggregateFunction<Reading> for Sum {
    type Acc = i64;
    fn create_accumulator(&self) -> i64 {
        0
    }
    fn add(&self, sum: &mut i64, reading: &Reading) {
        *sum += reading.value;
    }
}

/// Counts records.
pub struct Count;

impl AggregateFunction<Reading> for Count {
    type Acc = i64;
    fn create_accumulator(&self) -> i64 {
        0
    }
    fn add(&self, count: &mut i64, _reading: &Reading) {
        *count += 1;
    }
}

/// The generated sensor streams.
#[derive(Clone)]
pub struct Sensors {
    events: u64,
    sensors: u64,
    seed: u64,
}

impl Sensors {
    /// `events` readings over `sensors` sensors.
    pub fn new(events: u64, sensors: u64, seed: u64) -> Result<Self, BuildError> {
        if sensors == 0 {
            return Err(BuildError::Job("--sensors must be at least 1".into()));
        }
        Ok(Sensors { events, sensors, seed })
    }

    /// Reading `index`: every 5 ms of event time, jittered by up to 400 ms (one in three
    /// hundred delayed 6 s: late).
    pub fn reading(&self, index: u64) -> Reading {
        let random = mix64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let delay = if (random >> 50).is_multiple_of(300) { 6_000 } else { 0 };
        Reading {
            sensor: (random % self.sensors) as i64,
            value: ((random >> 20) % 1_000) as i64,
            time: 1_700_000_000_000 + index as i64 * 5 - ((random >> 40) % 400) as i64 - delay,
        }
    }

    /// Alarm `index`: every 50 ms of event time, jittered.
    pub fn alarm(&self, index: u64) -> Alarm {
        let random = mix64(self.seed.rotate_left(29) ^ index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        Alarm {
            sensor: (random % self.sensors) as i64,
            level: ((random >> 24) % 5) as i64,
            time: 1_700_000_000_000 + index as i64 * 50 - ((random >> 40) % 400) as i64,
        }
    }
}

/// Generated readings.
pub struct ReadingGenerator(pub Sensors);
/// Generated alarms.
pub struct AlarmGenerator(pub Sensors);

impl Generator for ReadingGenerator {
    type Record = Reading;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        strided_split_len(self.0.events, split, splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Reading {
        self.0.reading(GeneratorConfig::global_index(split, splits, position))
    }
}

impl Generator for AlarmGenerator {
    type Record = Alarm;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        strided_split_len(self.0.events / 10, split, splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Alarm {
        self.0.alarm(GeneratorConfig::global_index(split, splits, position))
    }
}
