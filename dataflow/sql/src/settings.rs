//! `SET 'key' = 'value'`: the engine settings a script asks for, with Flink's keys.
//!
//! A script's settings are defaults for the engine's flags — `weir sql -f job.sql` and
//! `weir job submit sql -f job.sql` read them before the job is planned, and a flag given on the
//! command line overrides them (the operator has the last word). A key Weir does not know, or
//! one whose meaning it does not implement yet, is refused with its place: ignoring it would
//! run a different job than the one written. `table.exec.state.ttl` is the planner's, not the
//! engine's ([`state_ttl`]): a state TTL changes answers, so the planner applies it where it
//! can and refuses the query where it cannot.

use std::time::Duration;

use weir_dataflow::EngineDefaults;

use sqlparser::tokenizer::Location;

use crate::parser::{SqlError, SqlStatement};

/// The keys `SET` takes.
const KEYS: &[&str] = &[
    "parallelism.default",
    "execution.checkpointing.interval",
    "execution.runtime-mode",
    "table.exec.state.ttl",
    "state.backend",
    "state.backend.type",
];

/// The engine settings of `statements`' `SET`s, the last of each key winning (as in Flink).
pub fn settings(statements: &[SqlStatement]) -> Result<EngineDefaults, SqlError> {
    let mut settings = EngineDefaults::default();
    let mut planned = false;
    for statement in statements {
        match statement {
            SqlStatement::Set { at, .. } if planned => {
                // In Flink a SET changes the statements after it; the engine's settings hold for
                // the whole job, so one after an INSERT would change what comes before it.
                return Err(SqlError::at(
                    *at,
                    "a SET after an INSERT or EXPLAIN would apply to the whole job, the statements before it \
                     included: put the SETs first",
                ));
            }
            SqlStatement::Set { key, value, at } => apply(&mut settings, key, value, *at)?,
            SqlStatement::Insert { .. } | SqlStatement::Explain { .. } => planned = true,
            SqlStatement::CreateTable(_) | SqlStatement::CreateView { .. } => {}
        }
    }
    Ok(settings)
}

/// Checks one `SET` and applies it to `settings`.
pub fn apply(settings: &mut EngineDefaults, key: &str, value: &str, at: Location) -> Result<(), SqlError> {
    let trimmed = value.trim();
    match key {
        "parallelism.default" => match trimmed.parse::<usize>() {
            Ok(parallelism) if (1..=weir_core::keygroup::MAX_PARALLELISM).contains(&parallelism) => {
                settings.parallelism = Some(parallelism)
            }
            _ => {
                return Err(SqlError::at(
                    at,
                    format!(
                        "SET '{key}' = '{value}': expected a whole number from 1 to {}",
                        weir_core::keygroup::MAX_PARALLELISM
                    ),
                ))
            }
        },
        "execution.checkpointing.interval" => {
            let interval = duration(trimmed).ok_or_else(|| {
                SqlError::at(
                    at,
                    format!(
                        "SET '{key}' = '{value}': expected a duration such as '10 s', '500 ms' or '1 min' (a number \
                         alone is milliseconds); to take only the final checkpoint, pass --checkpoint-interval off"
                    ),
                )
            })?;
            settings.checkpoint_interval = Some(interval);
        }
        "execution.runtime-mode" if trimmed.eq_ignore_ascii_case("streaming") => {}
        "execution.runtime-mode" => {
            return Err(SqlError::at(
                at,
                format!("SET '{key}' = '{value}': Weir runs streaming only; remove the SET or make it 'streaming'"),
            ))
        }
        // Flink's names: `hashmap` is its memory backend.
        "state.backend" | "state.backend.type" => {
            let backend = trimmed.parse::<weir_core::job::StateBackendKind>().map_err(|error| {
                SqlError::at(at, format!("SET '{key}' = '{value}': {error} ('hashmap' is memory, as in Flink)"))
            })?;
            settings.state_backend = Some(backend);
        }
        // A planner setting: see `state_ttl`.
        "table.exec.state.ttl" => {
            ttl_millis(key, value, at)?;
        }
        _ => {
            return Err(SqlError::at(
                at,
                format!("SET '{key}' is not supported; the keys SET takes: {}", KEYS.join(", ")),
            ))
        }
    }
    Ok(())
}

/// `SET 'table.exec.state.ttl'`, the last one (`0`: none, as in Flink), with where it was set:
/// how long, in event time, a regular join keeps each row, and an aggregate or Top-N over
/// append-only rows each idle group (see docs/sql.md).
pub fn state_ttl(statements: &[SqlStatement]) -> Result<Option<(i64, Location)>, SqlError> {
    let mut ttl = None;
    for statement in statements {
        if let SqlStatement::Set { key, value, at } = statement {
            if key == "table.exec.state.ttl" {
                let millis = ttl_millis(key, value, *at)?;
                ttl = (millis > 0).then_some((millis, *at));
            }
        }
    }
    Ok(ttl)
}

fn ttl_millis(key: &str, value: &str, at: Location) -> Result<i64, SqlError> {
    weir_core::job::parse_flink_duration_ms(value.trim()).map_err(|_| {
        SqlError::at(at, format!("SET '{key}' = '{value}': expected a duration such as '1 h', '30 min' or '0' (none)"))
    })
}

/// A positive duration as Flink writes one (`weir_core::job::parse_flink_duration_ms`).
fn duration(text: &str) -> Option<Duration> {
    let millis = weir_core::job::parse_flink_duration_ms(text).ok()?;
    (millis > 0).then(|| Duration::from_millis(millis as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Result<EngineDefaults, String> {
        let mut settings = EngineDefaults::default();
        apply(&mut settings, key, value, Location { line: 3, column: 1 }).map_err(|e| e.to_string())?;
        Ok(settings)
    }

    #[test]
    fn flinks_keys_set_the_engine_and_the_rest_is_refused_with_its_place() {
        assert_eq!(set("parallelism.default", "4").unwrap().parallelism, Some(4));
        for (text, millis) in
            [("10 s", 10_000), ("10s", 10_000), ("500", 500), ("1 min", 60_000), ("2h", 7_200_000), ("10 S", 10_000)]
        {
            let interval = set("execution.checkpointing.interval", text).unwrap().checkpoint_interval;
            assert_eq!(interval, Some(Duration::from_millis(millis)), "{text}");
        }
        assert!(set("execution.runtime-mode", "streaming").is_ok());
        assert_eq!(
            set("state.backend", "rocksdb").unwrap().state_backend,
            Some(weir_core::job::StateBackendKind::RocksDb)
        );
        assert_eq!(
            set("state.backend.type", "hashmap").unwrap().state_backend,
            Some(weir_core::job::StateBackendKind::Memory)
        );
        for (key, value, expected) in [
            ("parallelism.default", "0", "expected a whole number from 1 to 128"),
            ("parallelism.default", "many", "expected a whole number"),
            ("execution.checkpointing.interval", "0 s", "pass --checkpoint-interval off"),
            ("execution.checkpointing.interval", "10 fortnights", "expected a duration"),
            ("execution.runtime-mode", "batch", "streaming only"),
            ("table.exec.state.ttl", "a while", "expected a duration such as '1 h'"),
            ("state.backend", "filesystem", "is not one of: memory, rocksdb"),
            ("pipeline.name", "x", "the keys SET takes: parallelism.default"),
        ] {
            let error = set(key, value).unwrap_err();
            assert!(error.contains(expected) && error.contains("line 3"), "{key} = {value}: {error}");
        }
    }

    #[test]
    fn a_set_after_an_insert_is_refused_rather_than_applied_to_what_came_before() {
        let script = "CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole');\n\
                      SET 'parallelism.default' = '2';\n\
                      INSERT INTO t SELECT a FROM t;\n\
                      SET 'parallelism.default' = '4';";
        let statements = crate::parser::parse_script(script).unwrap();
        let error = settings(&statements).unwrap_err().to_string();
        assert!(error.starts_with("line 4, column 1: a SET after an INSERT"), "{error}");
        assert_eq!(settings(&statements[..3]).unwrap().parallelism, Some(2));
    }
}
