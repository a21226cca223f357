//! `DataStream::fail_if_any`: a stream that must stay empty stops the job with its error.
//!
//! Method: a job's keyed process function receives a record behind the watermark (its source
//! allows no out-of-orderness, and the collection goes back in time); the function's late
//! output is a stream that must stay empty (as a SQL regular join's is). The run must end with
//! the error naming the record, not succeed without it.

use std::collections::BTreeMap;

use weir_cluster::run::{run_job, RunOptions};
use weir_core::job::{BadRecordPolicy, ParamDef, ParamKind, Params};
use weir_dataflow::api::BuildError;
use weir_dataflow::{
    CollectionSource, Context, JobBuilder, JobDef, JobRegistry, KeyedProcessFunction, WatermarkStrategy,
};

struct Forward;

impl KeyedProcessFunction<i64, i64, i64> for Forward {
    fn process_element(&mut self, value: i64, ctx: &mut Context<'_, i64, i64>) {
        ctx.collect(value);
    }
}

fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
    let source = job.source(
        "times",
        CollectionSource::new(vec![1_000, 2_000, 3_000, 500, 4_000]),
        WatermarkStrategy::bounded_out_of_orderness(0, |n: &i64| *n),
    );
    source.errors.discard();
    let output = source.records.key_by(|n: &i64| n % 2).process("forward", Forward);
    output.results.discard();
    output.late.fail_if_any(|n| format!("record {n} arrived behind the watermark"));
    Ok(())
}

#[test]
fn a_record_on_a_stream_that_must_stay_empty_fails_the_job_with_its_reason() {
    let mut registry = JobRegistry::new();
    registry.register(JobDef::new(
        "late",
        "late records",
        vec![ParamDef::new("x", ParamKind::UInt, "0", "unused")],
        build,
    ));
    let spec = registry.get("late").unwrap().spec(&BTreeMap::new(), 1, BadRecordPolicy::Skip).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_location = Some(root.path().join("checkpoints").display().to_string());
    let error = run_job(&registry, options).expect_err("the late record stops the job").to_string();
    assert!(error.contains("record 500 arrived behind the watermark"), "{error}");
}
