//! `sessions`: sessionized clicks — per user, clicks closer than a gap form a session; each
//! session's clicks and distinct pages are counted when it closes (merging session windows).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use weir_core::time::EventTime;
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{CsvLines, GeneratorSource};
use weir_dataflow::{
    AggregateFunction, EventTimeSessionWindows, FileSource, JobBuilder, JobDef, ParamDef, ParamKind, Params,
    TimeWindow, WatermarkStrategy,
};

use crate::enrichment::{Click, ClickGenerator, Streams, CLICK_HEADER};

/// One closed session of a user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    pub user: i64,
    /// The first click's time.
    pub start: EventTime,
    /// The last click's time plus the gap.
    pub end: EventTime,
    /// Clicks in the session.
    pub clicks: u64,
    /// Distinct pages visited.
    pub pages: u64,
}

/// The CSV header of session files.
pub const SESSION_HEADER: &str = "user,start,end,clicks,pages";

/// The job's definition.
pub fn job() -> JobDef {
    JobDef::new(
        "sessions",
        "sessionized clicks: per user, clicks closer than --gap form a session; clicks and distinct pages per \
         session to OUTPUT/sessions/; late clicks to OUTPUT/late/, malformed lines to OUTPUT/errors/",
        vec![
            ParamDef::optional(
                "clicks",
                ParamKind::Files { extension: "csv" },
                "click CSV files (`user,url,time`); without it, generated clicks",
            ),
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::new("gap", ParamKind::Duration, "2s", "a session closes after this long without clicks"),
            ParamDef::new("out-of-orderness", ParamKind::Duration, "1s", "bounded out-of-orderness of event time"),
            ParamDef::new("events", ParamKind::UInt, "100000", "generator only: number of clicks"),
            ParamDef::new("users", ParamKind::UInt, "500", "generator only: number of users"),
            ParamDef::new("seed", ParamKind::UInt, "0", "generator only: seed"),
        ],
        build,
    )
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let gap = params.duration_ms("gap")?;
    if gap <= 0 {
        return Err(BuildError::Job("--gap must be positive".into()));
    }
    let strategy =
        WatermarkStrategy::bounded_out_of_orderness(params.duration_ms("out-of-orderness")?, |c: &Click| c.time);
    let clicks = if params.has("clicks") {
        job.source("clicks", FileSource::new(params.files("clicks")?, CsvLines::<Click>::new(CLICK_HEADER)), strategy)
    } else {
        let streams = Streams::new(params.u64("events")?, params.u64("users")?, params.u64("seed")?)?;
        job.source("clicks", GeneratorSource::new(ClickGenerator(streams)), strategy)
    };
    let sessions = clicks
        .records
        .key_by(|c: &Click| c.user)
        .window(EventTimeSessionWindows::with_gap(gap))
        .uid("click-sessions")
        .aggregate(SessionStats, |&user, window: TimeWindow, (clicks, pages): (u64, BTreeSet<String>)| Session {
            user,
            start: window.start,
            end: window.end,
            clicks,
            pages: pages.len() as u64,
        });
    sessions.results.sink_serde_csv("sessions", output.join("sessions"), SESSION_HEADER);
    sessions.late.sink_serde_csv("late", output.join("late"), CLICK_HEADER);
    clicks.errors.sink_csv("errors", output.join("errors"));
    Ok(())
}

/// Counts clicks and collects distinct pages; sessions merge by adding counts and uniting pages.
pub struct SessionStats;

impl AggregateFunction<Click> for SessionStats {
    type Acc = (u64, BTreeSet<String>);
    fn create_accumulator(&self) -> Self::Acc {
        (0, BTreeSet::new())
    }
    fn add(&self, (clicks, pages): &mut Self::Acc, click: &Click) {
        *clicks += 1;
        pages.insert(click.url.clone());
    }
    fn merge(&self, (clicks, pages): &mut Self::Acc, (other_clicks, other_pages): Self::Acc) {
        *clicks += other_clicks;
        pages.extend(other_pages);
    }
}
