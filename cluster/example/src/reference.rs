//! Sequential references for the example jobs, written from their specifications and not from
//! the engine's code: each reads the input splits one after another and computes, with plain
//! collections, what the job must commit.
//!
//! The rules they share with the engine are the job's *specification*: per split, the
//! watermark before a record is the largest event time read before it minus the
//! out-of-orderness; a record earlier than that watermark is late; every key's records are
//! handled in event-time order, ties broken by the record's encoding; an event-time timer
//! fires once every record at or before its time has been handled.

use std::collections::BTreeMap;

use weir_core::time::EventTime;

use crate::dedup::Payment;
use crate::enrichment::{Click, EnrichedClick, Profile};
use crate::fraud::{Alert, Transaction, LARGE_CENTS, SMALL_CENTS, WINDOW_MS};
use crate::sessions::Session;

/// Splits each record into on-time and late by its split's watermark. `time` is the record's
/// event time.
pub fn split_lateness<T: Clone>(
    splits: &[Vec<T>],
    out_of_orderness_ms: i64,
    time: impl Fn(&T) -> EventTime,
) -> (Vec<T>, Vec<T>) {
    let (mut on_time, mut late) = (Vec::new(), Vec::new());
    for split in splits {
        let mut max_seen: Option<EventTime> = None;
        for record in split {
            let watermark = max_seen.map_or(EventTime::MIN, |max| max.saturating_sub(out_of_orderness_ms));
            if time(record) < watermark {
                late.push(record.clone());
            } else {
                on_time.push(record.clone());
            }
            max_seen = Some(max_seen.map_or(time(record), |max| max.max(time(record))));
        }
    }
    (on_time, late)
}

fn encoding<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("records serialize")
}

/// The small transactions `fraud` must commit to its side output (the on-time ones).
pub fn fraud_small(splits: &[Vec<Transaction>], out_of_orderness_ms: i64) -> Vec<Transaction> {
    let (on_time, _) = split_lateness(splits, out_of_orderness_ms, |t| t.time);
    let mut small: Vec<Transaction> = on_time.into_iter().filter(|t| t.amount_cents < SMALL_CENTS).collect();
    small.sort();
    small
}

/// What `fraud` must commit: its alerts and its late transactions.
pub fn fraud(splits: &[Vec<Transaction>], out_of_orderness_ms: i64) -> (Vec<Alert>, Vec<Transaction>) {
    let (on_time, late) = split_lateness(splits, out_of_orderness_ms, |t| t.time);
    let mut accounts: BTreeMap<i64, Vec<Transaction>> = BTreeMap::new();
    for transaction in on_time {
        accounts.entry(transaction.account).or_default().push(transaction);
    }
    let mut alerts = Vec::new();
    for transactions in accounts.values_mut() {
        transactions.sort_by_key(|t| (t.time, encoding(t)));
        let mut small: Option<&Transaction> = None;
        for transaction in transactions.iter() {
            // The small transaction is forgotten once a minute of event time has passed it.
            if let Some(previous) = small.take() {
                let within = transaction.time <= previous.time + WINDOW_MS;
                if within && transaction.amount_cents > LARGE_CENTS {
                    alerts.push(Alert {
                        account: transaction.account,
                        small_cents: previous.amount_cents,
                        small_time: previous.time,
                        large_cents: transaction.amount_cents,
                        large_time: transaction.time,
                    });
                }
            }
            if transaction.amount_cents < SMALL_CENTS {
                small = Some(transaction);
            }
        }
    }
    alerts.sort();
    let mut late = late;
    late.sort();
    (alerts, late)
}

/// What `dedup` must commit: each on-time payment whose id was not let through within the
/// time to live before it (an id's payments taken in event-time order, ties by encoding), and
/// the late payments. Sorted, as the tests read the output back.
pub fn dedup(splits: &[Vec<Payment>], out_of_orderness_ms: i64, ttl_ms: i64) -> (Vec<Payment>, Vec<Payment>) {
    let (mut on_time, mut late) = split_lateness(splits, out_of_orderness_ms, |p| p.time);
    // Sorted by id and then time; encodings only for ties (tens of millions of payments).
    on_time.sort_by(|a, b| (a.id, a.time).cmp(&(b.id, b.time)).then_with(|| encoding(a).cmp(&encoding(b))));
    let mut let_through: Option<(i64, EventTime)> = None;
    on_time.retain(|payment| {
        let remembered = matches!(let_through, Some((id, at)) if id == payment.id && payment.time < at + ttl_ms);
        if !remembered {
            let_through = Some((payment.id, payment.time));
        }
        !remembered
    });
    on_time.sort();
    late.sort();
    (on_time, late)
}

/// A record of the enrichment's two inputs, profiles first at equal times.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// A profile update.
    Left(Profile),
    /// A click.
    Right(Click),
}

/// What `enrichment` must commit: enriched clicks and late records.
pub fn enrichment(
    profiles: &[Vec<Profile>],
    clicks: &[Vec<Click>],
    out_of_orderness_ms: i64,
    ttl_ms: i64,
) -> (Vec<EnrichedClick>, Vec<Input>) {
    let (on_time_profiles, late_profiles) = split_lateness(profiles, out_of_orderness_ms, |p| p.time);
    let (on_time_clicks, late_clicks) = split_lateness(clicks, out_of_orderness_ms, |c| c.time);
    let mut users: BTreeMap<i64, Vec<(EventTime, Input)>> = BTreeMap::new();
    for profile in on_time_profiles {
        users.entry(profile.user).or_default().push((profile.time, Input::Left(profile)));
    }
    for click in on_time_clicks {
        users.entry(click.user).or_default().push((click.time, Input::Right(click)));
    }
    let mut enriched = Vec::new();
    for inputs in users.values_mut() {
        inputs.sort_by_key(|(time, input)| (*time, encoding(input)));
        let mut latest: Option<(String, EventTime)> = None;
        for (_, input) in inputs.iter() {
            match input {
                Input::Left(profile) => latest = Some((profile.country.clone(), profile.time)),
                Input::Right(click) => {
                    let country = match &latest {
                        Some((country, since)) if click.time < since + ttl_ms => country.clone(),
                        _ => "unknown".to_string(),
                    };
                    enriched.push(EnrichedClick {
                        user: click.user,
                        url: click.url.clone(),
                        country,
                        time: click.time,
                    });
                }
            }
        }
    }
    enriched.sort();
    let mut late: Vec<Input> =
        late_profiles.into_iter().map(Input::Left).chain(late_clicks.into_iter().map(Input::Right)).collect();
    late.sort();
    (enriched, late)
}

/// What `sessions` must commit: the sessions and the late clicks. A click is late when it is
/// behind its split's watermark; sessions are the connected runs of a user's on-time clicks
/// whose windows `[time, time + gap]` touch.
pub fn sessions(splits: &[Vec<Click>], out_of_orderness_ms: i64, gap_ms: i64) -> (Vec<Session>, Vec<Click>) {
    let (on_time, late) = split_lateness(splits, out_of_orderness_ms, |c| c.time);
    let mut users: BTreeMap<i64, Vec<Click>> = BTreeMap::new();
    for click in on_time {
        users.entry(click.user).or_default().push(click);
    }
    let mut sessions = Vec::new();
    for (user, mut clicks) in users {
        clicks.sort_by_key(|c| c.time);
        let mut current: Option<(EventTime, EventTime, u64, std::collections::BTreeSet<String>)> = None;
        for click in clicks {
            match &mut current {
                Some((_, end, count, pages)) if click.time <= *end => {
                    *end = (*end).max(click.time + gap_ms);
                    *count += 1;
                    pages.insert(click.url);
                }
                _ => {
                    if let Some((start, end, count, pages)) = current.take() {
                        sessions.push(Session { user, start, end, clicks: count, pages: pages.len() as u64 });
                    }
                    current = Some((click.time, click.time + gap_ms, 1, std::collections::BTreeSet::from([click.url])));
                }
            }
        }
        if let Some((start, end, count, pages)) = current {
            sessions.push(Session { user, start, end, clicks: count, pages: pages.len() as u64 });
        }
    }
    sessions.sort();
    let mut late = late;
    late.sort();
    (sessions, late)
}

/// A record of the mix job's joins' two inputs, alarms first at equal times.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// An alarm.
    Left(crate::mix::Alarm),
    /// A reading.
    Right(crate::mix::Reading),
}

/// A record of the broadcast operator's inputs: a reading (keyed) or an alarm (broadcast).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Either2 {
    /// A reading.
    Left(crate::mix::Reading),
    /// An alarm.
    Right(crate::mix::Alarm),
}

/// What `mix` must commit, output by output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MixOutput {
    /// Sliding maxima.
    pub sliding: Vec<crate::mix::WindowFigure>,
    /// Readings late for every sliding window they belong to.
    pub sliding_late: Vec<crate::mix::Reading>,
    /// Cumulating counts.
    pub cumulate: Vec<crate::mix::WindowFigure>,
    /// Readings late for every cumulating window they belong to.
    pub cumulate_late: Vec<crate::mix::Reading>,
    /// Counts in tumbling windows with allowed lateness: the on-time count of every window
    /// with on-time readings, and the full count of every window with late readings within
    /// the lateness.
    pub lenient: Vec<crate::mix::WindowFigure>,
    /// Readings later than their window's allowed lateness.
    pub lenient_late: Vec<crate::mix::Reading>,
    /// `(sensor, sum)` of every `COUNT_WINDOW` on-time readings of a sensor, in event-time order.
    pub count_window: Vec<(i64, i64)>,
    /// `(sensor, sum)` of a sensor's on-time readings up to and including each spike.
    pub spikes: Vec<(i64, i64)>,
    /// Readings behind their watermark (late for both global windows and the batcher).
    pub global_late: Vec<crate::mix::Reading>,
    /// Every on-time reading, once (the batcher's output).
    pub batched: Vec<crate::mix::Reading>,
    /// Readings above the threshold of their sensor's latest alarm (broadcast state).
    pub flagged: Vec<crate::mix::Pair>,
    /// Records behind their watermark, for the broadcast operator.
    pub flagged_late: Vec<Either2>,
    /// Interval-join pairs.
    pub interval: Vec<crate::mix::Pair>,
    /// Records behind their watermark, for the interval join.
    pub interval_late: Vec<Side>,
    /// Window-join pairs.
    pub window_join: Vec<crate::mix::Pair>,
    /// Records late for their join window.
    pub window_join_late: Vec<Side>,
}

/// The windows `[start, end)` containing `time`, for windows of `size` starting every `slide`.
fn sliding_windows(time: EventTime, size: i64, slide: i64) -> Vec<(EventTime, EventTime)> {
    let mut windows = Vec::new();
    let mut start = time - time.rem_euclid(slide);
    while start > time - size {
        windows.push((start, start + size));
        start -= slide;
    }
    windows
}

/// The cumulating windows containing `time`.
fn cumulating_windows(time: EventTime, step: i64, size: i64) -> Vec<(EventTime, EventTime)> {
    let start = time - time.rem_euclid(size);
    (1..=size / step).map(|i| (start, start + i * step)).filter(|(_, end)| *end > time).collect()
}

/// Each record with the watermark of its split before it.
fn with_watermarks<T: Clone>(
    splits: &[Vec<T>],
    out_of_orderness_ms: i64,
    time: impl Fn(&T) -> EventTime,
) -> Vec<(T, EventTime)> {
    let mut records = Vec::new();
    for split in splits {
        let mut max_seen: Option<EventTime> = None;
        for record in split {
            let watermark = max_seen.map_or(EventTime::MIN, |max| max - out_of_orderness_ms);
            records.push((record.clone(), watermark));
            max_seen = Some(max_seen.map_or(time(record), |max| max.max(time(record))));
        }
    }
    records
}

/// What `mix` must commit.
pub fn mix(
    readings: &[Vec<crate::mix::Reading>],
    alarms: &[Vec<crate::mix::Alarm>],
    out_of_orderness_ms: i64,
) -> MixOutput {
    use crate::mix::{Pair, WindowFigure, CUMULATE, INTERVAL, JOIN_WINDOW, SLIDING};
    let readings = with_watermarks(readings, out_of_orderness_ms, |r| r.time);
    let alarms = with_watermarks(alarms, out_of_orderness_ms, |a| a.time);
    let mut output = MixOutput::default();

    // Windows over readings: a reading counts in each window ending after its watermark, and is
    // late if there is none.
    let windowed = |windows: &dyn Fn(EventTime) -> Vec<(EventTime, EventTime)>,
                    fold: &dyn Fn(i64, i64) -> i64,
                    figure: &dyn Fn(&crate::mix::Reading) -> i64| {
        let mut figures: BTreeMap<(i64, EventTime, EventTime), i64> = BTreeMap::new();
        let mut late = Vec::new();
        for (reading, watermark) in &readings {
            let on_time: Vec<_> = windows(reading.time).into_iter().filter(|(_, end)| *end > *watermark).collect();
            if on_time.is_empty() {
                late.push(reading.clone());
            }
            for (start, end) in on_time {
                let value = figure(reading);
                figures.entry((reading.sensor, start, end)).and_modify(|f| *f = fold(*f, value)).or_insert(value);
            }
        }
        let mut figures: Vec<WindowFigure> = figures
            .into_iter()
            .map(|((sensor, start, end), figure)| WindowFigure { sensor, start, end, figure })
            .collect();
        figures.sort();
        late.sort();
        (figures, late)
    };
    (output.sliding, output.sliding_late) =
        windowed(&|t| sliding_windows(t, SLIDING.0, SLIDING.1), &|a, b| a.max(b), &|r| r.value);
    (output.cumulate, output.cumulate_late) =
        windowed(&|t| cumulating_windows(t, CUMULATE.0, CUMULATE.1), &|a, b| a + b, &|_| 1);

    // Global windows: each sensor's on-time readings in event-time order (ties by encoding).
    let mut per_sensor: BTreeMap<i64, Vec<&crate::mix::Reading>> = BTreeMap::new();
    for (reading, watermark) in &readings {
        if reading.time < *watermark {
            output.global_late.push(reading.clone());
        } else {
            per_sensor.entry(reading.sensor).or_default().push(reading);
            output.batched.push(reading.clone());
        }
    }
    for (sensor, sorted) in &mut per_sensor {
        sorted.sort_by_key(|r| (r.time, encoding(*r)));
        for chunk in sorted.chunks(crate::mix::COUNT_WINDOW as usize) {
            if chunk.len() == crate::mix::COUNT_WINDOW as usize {
                output.count_window.push((*sensor, chunk.iter().map(|r| r.value).sum()));
            }
        }
        let mut sum = 0;
        for reading in sorted.iter() {
            sum += reading.value;
            if reading.value >= crate::mix::SPIKE {
                output.spikes.push((*sensor, sum));
                sum = 0;
            }
        }
    }
    output.count_window.sort();
    output.spikes.sort();
    output.global_late.sort();
    output.batched.sort();

    // Broadcast state: alarms (broadcast, first at equal times) set each sensor's level;
    // readings, in event-time order, are flagged above their sensor's threshold.
    let mut inputs: Vec<(EventTime, u8, Vec<u8>, Either2)> = Vec::new();
    for (alarm, watermark) in &alarms {
        let input = Either2::Right(alarm.clone());
        if alarm.time < *watermark {
            output.flagged_late.push(input);
        } else {
            inputs.push((alarm.time, 0, encoding(&input), input));
        }
    }
    for (reading, watermark) in &readings {
        let input = Either2::Left(reading.clone());
        if reading.time < *watermark {
            output.flagged_late.push(input);
        } else {
            inputs.push((reading.time, 1, encoding(&input), input));
        }
    }
    inputs.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    let mut levels: BTreeMap<i64, (i64, EventTime)> = BTreeMap::new();
    let mut last_flagged: BTreeMap<i64, EventTime> = BTreeMap::new();
    for (_, _, _, input) in inputs {
        match input {
            Either2::Right(alarm) => {
                levels.insert(alarm.sensor, (alarm.level, alarm.time));
            }
            Either2::Left(reading) => {
                if let Some(&(level, alarm_time)) = levels.get(&reading.sensor) {
                    let recent = last_flagged
                        .get(&reading.sensor)
                        .is_some_and(|last| reading.time - last < crate::mix::DEBOUNCE_MS);
                    if reading.value > crate::mix::threshold(level) && !recent {
                        last_flagged.insert(reading.sensor, reading.time);
                        output.flagged.push(Pair {
                            sensor: reading.sensor,
                            alarm_time,
                            level,
                            reading_time: reading.time,
                            value: reading.value,
                        });
                    }
                }
            }
        }
    }
    output.flagged.sort();
    output.flagged_late.sort();

    // Allowed lateness: on-time counts, then full counts where late readings came.
    let (size, lateness) = crate::mix::LATE_WINDOW;
    let mut on_time: BTreeMap<(i64, EventTime), i64> = BTreeMap::new();
    let mut late: BTreeMap<(i64, EventTime), i64> = BTreeMap::new();
    for (reading, watermark) in &readings {
        let start = reading.time - reading.time.rem_euclid(size);
        let end = start + size;
        if end > *watermark {
            *on_time.entry((reading.sensor, start)).or_default() += 1;
        } else if end + lateness > *watermark {
            *late.entry((reading.sensor, start)).or_default() += 1;
        } else {
            output.lenient_late.push(reading.clone());
        }
    }
    for (&(sensor, start), &count) in &on_time {
        output.lenient.push(WindowFigure { sensor, start, end: start + size, figure: count });
    }
    for (&(sensor, start), &count) in &late {
        let total = count + on_time.get(&(sensor, start)).copied().unwrap_or(0);
        output.lenient.push(WindowFigure { sensor, start, end: start + size, figure: total });
    }
    output.lenient.sort();
    output.lenient_late.sort();

    let pair = |a: &crate::mix::Alarm, r: &crate::mix::Reading| Pair {
        sensor: a.sensor,
        alarm_time: a.time,
        level: a.level,
        reading_time: r.time,
        value: r.value,
    };
    // Interval join: records behind their watermark are late; the rest pair up by the bounds.
    let on_time_alarms: Vec<_> = alarms.iter().filter(|(a, w)| a.time >= *w).map(|(a, _)| a).collect();
    let on_time_readings: Vec<_> = readings.iter().filter(|(r, w)| r.time >= *w).map(|(r, _)| r).collect();
    for a in &on_time_alarms {
        for r in &on_time_readings {
            if a.sensor == r.sensor && a.time + INTERVAL.0 <= r.time && r.time <= a.time + INTERVAL.1 {
                output.interval.push(pair(a, r));
            }
        }
    }
    output.interval.sort();
    output.interval_late = alarms
        .iter()
        .filter(|(a, w)| a.time < *w)
        .map(|(a, _)| Side::Left(a.clone()))
        .chain(readings.iter().filter(|(r, w)| r.time < *w).map(|(r, _)| Side::Right(r.clone())))
        .collect();
    output.interval_late.sort();

    // Window join: tumbling windows; a record is late if its window ended at its watermark.
    let end_of = |t: EventTime| t - t.rem_euclid(JOIN_WINDOW) + JOIN_WINDOW;
    type WindowSides<'a> = (Vec<&'a crate::mix::Alarm>, Vec<&'a crate::mix::Reading>);
    let mut by_window: BTreeMap<(i64, EventTime), WindowSides<'_>> = BTreeMap::new();
    for (a, w) in &alarms {
        if end_of(a.time) > *w {
            by_window.entry((a.sensor, end_of(a.time))).or_default().0.push(a);
        } else {
            output.window_join_late.push(Side::Left(a.clone()));
        }
    }
    for (r, w) in &readings {
        if end_of(r.time) > *w {
            by_window.entry((r.sensor, end_of(r.time))).or_default().1.push(r);
        } else {
            output.window_join_late.push(Side::Right(r.clone()));
        }
    }
    for (alarms, readings) in by_window.values() {
        for a in alarms {
            for r in readings {
                output.window_join.push(pair(a, r));
            }
        }
    }
    output.window_join.sort();
    output.window_join_late.sort();
    output
}
