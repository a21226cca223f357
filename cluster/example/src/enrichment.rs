//! `enrichment`: clicks joined with each user's latest profile — a regular keyed join through
//! `connect`, with the profile kept in keyed state under a time to live.
//!
//! A click at event time `t` is enriched with its user's profile of the latest time `<= t`
//! (a profile is valid from its own time on; at equal times the profile applies first), if
//! that profile is younger than the time to live; otherwise the country is `unknown`. Both
//! streams reach the function in event-time order, so the result is the same in every run.

use serde::{Deserialize, Serialize};

use weir_core::generator::{strided_split_len, GeneratorConfig};
use weir_core::keygroup::mix64;
use weir_core::time::EventTime;
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{CsvLines, Generator, GeneratorSource};
use weir_dataflow::{
    Context, FileSource, JobBuilder, JobDef, KeyedCoProcessFunction, ParamDef, ParamKind, Params, ValueState,
    WatermarkStrategy,
};

/// A user's profile, as of `time`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Profile {
    /// The user.
    pub user: i64,
    /// Their country.
    pub country: String,
    /// Event time (ms) from which it holds.
    pub time: EventTime,
}

/// The CSV header of profile files.
pub const PROFILE_HEADER: &str = "user,country,time";

/// A click on a page.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Click {
    /// The user.
    pub user: i64,
    /// The page.
    pub url: String,
    /// Event time (ms).
    pub time: EventTime,
}

/// The CSV header of click files.
pub const CLICK_HEADER: &str = "user,url,time";

/// A click with its user's country.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EnrichedClick {
    /// The user.
    pub user: i64,
    /// The page.
    pub url: String,
    /// The user's country at the time of the click, or `unknown`.
    pub country: String,
    /// Event time (ms).
    pub time: EventTime,
}

/// The CSV header of enriched clicks.
pub const ENRICHED_HEADER: &str = "user,url,country,time";

/// The job's definition.
pub fn job() -> JobDef {
    JobDef::new(
        "enrichment",
        "clicks enriched with each user's latest profile (a keyed join through connect, profiles kept with a time \
         to live): OUTPUT/clicks/; late records to OUTPUT/late/, malformed lines to OUTPUT/errors-*/",
        vec![
            ParamDef::optional("clicks", ParamKind::Files { extension: "csv" }, "click CSV files (`user,url,time`)"),
            ParamDef::optional(
                "profiles",
                ParamKind::Files { extension: "csv" },
                "profile CSV files (`user,country,time`); without --clicks and --profiles, generated streams",
            ),
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::new("profile-ttl", ParamKind::Duration, "1h", "a profile older than this no longer enriches"),
            ParamDef::new("out-of-orderness", ParamKind::Duration, "1s", "bounded out-of-orderness of event time"),
            ParamDef::new(
                "events",
                ParamKind::UInt,
                "100000",
                "generator only: number of clicks (and a tenth as many profile updates)",
            ),
            ParamDef::new("users", ParamKind::UInt, "500", "generator only: number of users"),
            ParamDef::new("seed", ParamKind::UInt, "0", "generator only: seed"),
        ],
        build,
    )
}

fn build(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
    let output = params.path("output")?;
    let out_of_orderness = params.duration_ms("out-of-orderness")?;
    let ttl = params.duration_ms("profile-ttl")?;
    if ttl <= 0 {
        return Err(BuildError::Job("--profile-ttl must be positive".into()));
    }
    let profile_time = WatermarkStrategy::bounded_out_of_orderness(out_of_orderness, |p: &Profile| p.time);
    let click_time = WatermarkStrategy::bounded_out_of_orderness(out_of_orderness, |c: &Click| c.time);
    let (profiles, clicks) = match (params.has("profiles"), params.has("clicks")) {
        (true, true) => (
            job.source(
                "profiles",
                FileSource::new(params.files("profiles")?, CsvLines::<Profile>::new(PROFILE_HEADER)),
                profile_time,
            ),
            job.source(
                "clicks",
                FileSource::new(params.files("clicks")?, CsvLines::<Click>::new(CLICK_HEADER)),
                click_time,
            ),
        ),
        (false, false) => {
            let streams = Streams::new(params.u64("events")?, params.u64("users")?, params.u64("seed")?)?;
            (
                job.source("profiles", GeneratorSource::new(ProfileGenerator(streams.clone())), profile_time),
                job.source("clicks", GeneratorSource::new(ClickGenerator(streams)), click_time),
            )
        }
        _ => return Err(BuildError::Job("give both --clicks and --profiles, or neither (generated input)".into())),
    };
    let enriched = profiles
        .records
        .key_by(|p: &Profile| p.user)
        .connect(clicks.records.key_by(|c: &Click| c.user))
        .process("enrich-clicks", Enrich::new(ttl));
    enriched.results.sink_serde_csv("clicks", output.join("clicks"), ENRICHED_HEADER);
    enriched.late.sink_json("late", output.join("late"));
    profiles.errors.sink_csv("profile-errors", output.join("errors-profiles"));
    clicks.errors.sink_csv("click-errors", output.join("errors-clicks"));
    Ok(())
}

/// Keeps each user's latest profile; enriches their clicks with it.
pub struct Enrich {
    country: ValueState<String>,
}

impl Enrich {
    /// Profiles expire `ttl_ms` of event time after they were written.
    pub fn new(ttl_ms: i64) -> Self {
        Enrich { country: ValueState::new("country").with_ttl(ttl_ms) }
    }
}

impl KeyedCoProcessFunction<i64, Profile, Click, EnrichedClick> for Enrich {
    fn process_element1(&mut self, profile: Profile, ctx: &mut Context<'_, i64, EnrichedClick>) {
        self.country.set(ctx.state(), profile.country);
    }

    fn process_element2(&mut self, click: Click, ctx: &mut Context<'_, i64, EnrichedClick>) {
        let country = self.country.get(ctx.state()).unwrap_or_else(|| "unknown".to_string());
        ctx.collect(EnrichedClick { user: click.user, url: click.url, country, time: click.time });
    }
}

const COUNTRIES: [&str; 6] = ["NL", "DE", "FR", "JP", "BR", "US"];

/// The generated streams: clicks every 10 ms of event time over `users` users, profile
/// updates ten times rarer; both with a little jitter.
#[derive(Clone)]
pub struct Streams {
    events: u64,
    users: u64,
    seed: u64,
}

impl Streams {
    /// `events` clicks over `users` users.
    pub fn new(events: u64, users: u64, seed: u64) -> Result<Self, BuildError> {
        if users == 0 {
            return Err(BuildError::Job("--users must be at least 1".into()));
        }
        Ok(Streams { events, users, seed })
    }

    /// Click `index`.
    pub fn click(&self, index: u64) -> Click {
        let random = mix64(self.seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        Click {
            user: (random % self.users) as i64,
            url: format!("/page/{}", (random >> 20) % 50),
            time: 1_700_000_000_000 + index as i64 * 10 - ((random >> 40) % 300) as i64,
        }
    }

    /// Profile update `index`.
    pub fn profile(&self, index: u64) -> Profile {
        let random = mix64(self.seed.rotate_left(17) ^ index.wrapping_mul(0xE703_7ED1_A0B4_28DB));
        Profile {
            user: (random % self.users) as i64,
            country: COUNTRIES[((random >> 24) % COUNTRIES.len() as u64) as usize].to_string(),
            time: 1_700_000_000_000 + index as i64 * 100 - ((random >> 40) % 300) as i64,
        }
    }
}

/// Generated clicks.
pub struct ClickGenerator(pub Streams);
/// Generated profile updates.
pub struct ProfileGenerator(pub Streams);

impl Generator for ClickGenerator {
    type Record = Click;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        strided_split_len(self.0.events, split, splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Click {
        self.0.click(GeneratorConfig::global_index(split, splits, position))
    }
}

impl Generator for ProfileGenerator {
    type Record = Profile;
    fn split_len(&self, split: usize, splits: usize) -> u64 {
        strided_split_len(self.0.events / 10, split, splits)
    }
    fn generate(&self, split: usize, splits: usize, position: u64) -> Profile {
        self.0.profile(GeneratorConfig::global_index(split, splits, position))
    }
}
