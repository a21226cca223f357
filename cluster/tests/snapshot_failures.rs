//! A snapshot that cannot be encoded stops the job with an error naming why; it must not leave
//! the job waiting for a checkpoint that never comes. Encoding runs on the slot's snapshot
//! writer, off the slot's thread, so a panic there must still fail the slot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use weir_cluster::coordinator::JobError;
use weir_cluster::run::{run_job, RunError, RunOptions};
use weir_core::job::BadRecordPolicy;
use weir_dataflow::api::BuildError;
use weir_dataflow::source::{Generator, GeneratorSource};
use weir_dataflow::{
    Context, JobBuilder, JobDef, JobRegistry, KeyedProcessFunction, ParamDef, ParamKind, Params, ValueState,
    WatermarkStrategy,
};

/// A state value whose serialization fails (a user type with a broken `Serialize`).
#[derive(Clone, Deserialize)]
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unserializable refuses to serialize"))
    }
}

struct Remember(ValueState<Unserializable>);

impl KeyedProcessFunction<i64, i64, i64> for Remember {
    fn process_element(&mut self, n: i64, ctx: &mut Context<'_, i64, i64>) {
        self.0.set(ctx.state(), Unserializable);
        ctx.collect(n);
    }
}

/// Numbers for as long as the test could wait: the job must fail long before its input ends
/// (at its end the final snapshot is encoded on the slot's own thread).
struct Endless;

impl Generator for Endless {
    type Record = i64;
    fn split_len(&self, _split: usize, _splits: usize) -> u64 {
        1 << 40
    }
    fn generate(&self, _split: usize, _splits: usize, position: u64) -> i64 {
        position as i64
    }
}

fn build(job: &mut JobBuilder<'_>, _params: &Params) -> Result<(), BuildError> {
    let source = job.source(
        "numbers",
        GeneratorSource::new(Endless),
        WatermarkStrategy::bounded_out_of_orderness(0, |n: &i64| *n),
    );
    source.errors.discard();
    let remembered = source.records.key_by(|n: &i64| n % 10).process("remember", Remember(ValueState::new("last")));
    remembered.results.discard();
    remembered.late.discard();
    Ok(())
}

#[test]
fn a_state_that_does_not_serialize_fails_the_job_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let mut registry = JobRegistry::new();
    registry.register(JobDef::new(
        "unserializable",
        "state that cannot be checkpointed",
        vec![ParamDef::new("x", ParamKind::UInt, "0", "unused")],
        build,
    ));
    let spec = registry.get("unserializable").unwrap().spec(&BTreeMap::new(), 1, BadRecordPolicy::Skip).unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_location = Some(root.path().join("checkpoints").display().to_string());
    options.checkpoint_interval = Some(Duration::from_millis(5));
    // Without the failure reported, checkpoints would time out until too many failed in a row.
    options.checkpoint_timeout = Duration::from_millis(500);
    options.rate_limit = Some(100_000);
    match run_job(&registry, options) {
        Err(RunError::Job(JobError::SlotFailed { message, .. })) => {
            assert!(message.contains("internal error (bug)") && message.contains("refuses to serialize"), "{message}");
        }
        other => panic!("expected the slot to fail, got {other:?}"),
    }
}
