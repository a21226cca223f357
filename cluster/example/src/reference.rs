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
