//! A job built wrong is refused when it is planned, with an error naming the operator.
//!
//! Method: small jobs over a collection source, each wrong in one way, are planned with
//! `plan_job` (which builds the graph without running it); the error must name the operator
//! and say how to fix it. A correct job plans, and its plan lists its sources, sinks,
//! exchanges and stateful operators.

use std::collections::BTreeMap;

use weir_core::job::{BadRecordPolicy, JobSpec, ParamDef, ParamKind, Params};
use weir_dataflow::api::BuildError;
use weir_dataflow::source::NoTimestamps;
use weir_dataflow::{
    plan_job, AggregateFunction, CollectionSource, JobBuilder, JobDef, JobRegistry, TumblingEventTimeWindows,
    WatermarkStrategy,
};

struct Count;

impl AggregateFunction<(i64, i64)> for Count {
    type Acc = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, count: &mut u64, _value: &(i64, i64)) {
        *count += 1;
    }
    fn merge(&self, count: &mut u64, other: u64) {
        *count += other;
    }
}

fn records() -> CollectionSource<(i64, i64)> {
    CollectionSource::new(vec![(1, 10), (2, 20), (1, 30)])
}

type Pair = (i64, i64);

fn timed() -> WatermarkStrategy<fn(&Pair) -> i64> {
    WatermarkStrategy::bounded_out_of_orderness(0, |r: &(i64, i64)| r.1)
}

fn plan(
    build: weir_dataflow::registry::BuildFn,
    params: Vec<ParamDef>,
    parallelism: usize,
) -> Result<weir_dataflow::JobPlan, BuildError> {
    let job = JobDef::new("test", "a test job", params, build);
    let spec = job.spec(&BTreeMap::new(), parallelism, BadRecordPolicy::Skip).unwrap();
    plan_job(&job, &spec)
}

fn windowed(job: &mut JobBuilder<'_>, source: &str, uid: &str) {
    let source = job.source(source, records(), timed());
    source.errors.discard();
    let out = source
        .records
        .key_by(|r: &(i64, i64)| r.0)
        .window(TumblingEventTimeWindows::of(10))
        .uid(uid)
        .aggregate(Count, |k: &i64, _w, n| (*k, n));
    out.results.discard();
    out.late.discard();
}

#[test]
fn a_correct_job_plans_with_its_parts() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        windowed(job, "s", "counts");
        Ok(())
    }
    let plan = plan(build, vec![], 2).expect("plans");
    assert_eq!(plan.sources.len(), 1);
    assert_eq!(plan.exchanges, 1);
    assert_eq!(plan.operators, vec!["counts".to_string()]);
}

#[test]
fn a_duplicate_operator_id_is_refused() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        windowed(job, "a", "same");
        windowed(job, "b", "same");
        Ok(())
    }
    let error = plan(build, vec![], 1).unwrap_err().to_string();
    assert!(error.contains("operator same") && error.contains("uid is used by another operator"), "{error}");
}

#[test]
fn a_window_over_a_stream_without_event_time_is_refused() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        let source = job.source("untimed", records(), WatermarkStrategy::<NoTimestamps>::none());
        source.errors.discard();
        let out = source
            .records
            .key_by(|r: &(i64, i64)| r.0)
            .window(TumblingEventTimeWindows::of(10))
            .uid("w")
            .aggregate(Count, |k: &i64, _w, n| (*k, n));
        out.results.discard();
        out.late.discard();
        Ok(())
    }
    let error = plan(build, vec![], 1).unwrap_err().to_string();
    assert!(error.contains("operator w") && error.contains("no timestamp assigner"), "{error}");
}

#[test]
fn a_late_output_nobody_reads_is_refused() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        let source = job.source("s", records(), timed());
        source.errors.discard();
        let out = source
            .records
            .key_by(|r: &(i64, i64)| r.0)
            .window(TumblingEventTimeWindows::of(10))
            .uid("w")
            .aggregate(Count, |k: &i64, _w, n| (*k, n));
        out.results.discard();
        Ok(())
    }
    let error = plan(build, vec![], 1).unwrap_err().to_string();
    assert!(error.contains("operator w: its late output is not read"), "{error}");
}

#[test]
fn a_source_error_output_nobody_reads_is_refused() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        let source = job.source("lonely", records(), timed());
        source.records.discard();
        Ok(())
    }
    let error = plan(build, vec![], 1).unwrap_err().to_string();
    assert!(error.contains("source lonely: its errors output is not read"), "{error}");
}

#[test]
fn a_job_without_sources_and_a_parameter_of_another_type_are_refused() {
    fn empty(_job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        Ok(())
    }
    assert!(plan(empty, vec![], 1).unwrap_err().to_string().contains("has no source"));
    fn wrong_type(job: &mut JobBuilder<'_>, params: &Params) -> Result<(), BuildError> {
        let _ = params.duration_ms("name")?;
        windowed(job, "s", "x");
        Ok(())
    }
    let params = vec![ParamDef::new("name", ParamKind::Text, "hello", "a name")];
    let error = plan(wrong_type, params, 1).unwrap_err().to_string();
    assert!(error.starts_with("parameter --name:"), "{error}");
}

#[test]
fn the_registry_names_what_it_has() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        windowed(job, "s", "x");
        Ok(())
    }
    let mut registry = JobRegistry::new();
    registry.register(JobDef::new("counts", "counts", vec![], build));
    let error = registry.get("count").unwrap_err();
    assert!(error.contains("no job named \"count\"") && error.contains("counts"), "{error}");
    let bad = JobSpec {
        job: "counts".into(),
        params: Params::default(),
        parallelism: 0,
        on_bad_record: BadRecordPolicy::Skip,
        state_backend: Default::default(),
    };
    assert!(registry.check(&bad).unwrap_err().contains("--parallelism 0 is out of range"));
    let stray = Params::from_canonical(BTreeMap::from([("colour".to_string(), "red".to_string())]));
    let stray = JobSpec {
        job: "counts".into(),
        params: stray,
        parallelism: 1,
        on_bad_record: BadRecordPolicy::Skip,
        state_backend: Default::default(),
    };
    assert!(registry.check(&stray).unwrap_err().contains("unknown parameter --colour"));
}

#[test]
fn sessions_take_no_allowed_lateness() {
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        let source = job.source("s", records(), timed());
        source.errors.discard();
        let out = source
            .records
            .key_by(|r: &(i64, i64)| r.0)
            .window(weir_dataflow::EventTimeSessionWindows::with_gap(10))
            .allowed_lateness(100)
            .uid("sessions")
            .aggregate(Count, |k: &i64, _w, n| (*k, n));
        out.results.discard();
        out.late.discard();
        Ok(())
    }
    let error = plan(build, vec![], 1).unwrap_err().to_string();
    assert!(error.contains("operator sessions") && error.contains("take no allowed lateness"), "{error}");
}

#[test]
fn a_side_output_read_as_two_types_is_refused() {
    use weir_dataflow::{Context, KeyedProcessFunction, OutputTag};
    struct Echo;
    impl KeyedProcessFunction<i64, (i64, i64), (i64, i64)> for Echo {
        fn process_element(&mut self, value: (i64, i64), ctx: &mut Context<'_, i64, (i64, i64)>) {
            ctx.collect(value);
        }
    }
    fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
        let source = job.source("s", records(), timed());
        source.errors.discard();
        let out = source.records.key_by(|r: &(i64, i64)| r.0).process("echo", Echo);
        out.side_output(&OutputTag::<i64>::new("extra")).discard();
        out.side_output(&OutputTag::<String>::new("extra")).discard();
        out.results.discard();
        out.late.discard();
        Ok(())
    }
    let error = plan(build, vec![], 1).unwrap_err().to_string();
    assert!(error.contains("side output \"extra\" is read as i64 and as alloc::string::String"), "{error}");
}
