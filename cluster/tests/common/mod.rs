//! Helpers shared by the cluster's integration tests: building inputs, running jobs on the
//! embedded cluster, and judging their committed output against the sequential reference.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_chaos::oracle::{committed_output, difference};
use weir_chaos::reference::{expected_output, Expected, ReferenceSplit};
use weir_cluster::run::{absolute, RunOptions};
use weir_core::generator::GeneratorConfig;
use weir_core::job::{resolve_input_files, BadRecordPolicy, BidsJobSpec, InputSpec};

/// A job over CSV files in `input`, writing to `output`.
pub fn file_job(
    input: &Path,
    output: &Path,
    parallelism: usize,
    window_ms: i64,
    out_of_orderness_ms: i64,
) -> RunOptions {
    let files = resolve_input_files(input).expect("valid input").iter().map(|p| absolute(p)).collect();
    let spec = BidsJobSpec {
        input: InputSpec::Files(files),
        output_dir: absolute(output),
        parallelism,
        window_ms,
        out_of_orderness_ms,
        on_bad_record: BadRecordPolicy::Skip,
    };
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(2));
    options
}

/// A job over the generator.
pub fn generated_job(events: u64, seed: u64, output: &Path, parallelism: usize) -> RunOptions {
    let spec = BidsJobSpec {
        input: InputSpec::Generator(GeneratorConfig::new(events, seed)),
        output_dir: absolute(output),
        parallelism,
        window_ms: 10_000,
        out_of_orderness_ms: 4_000,
        on_bad_record: BadRecordPolicy::Skip,
    };
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(2));
    options
}

/// The reference result of a job.
pub fn reference_for(options: &RunOptions) -> Expected {
    let spec = &options.spec;
    let splits: Vec<ReferenceSplit> = match &spec.input {
        InputSpec::Files(files) => files.iter().cloned().map(ReferenceSplit::File).collect(),
        InputSpec::Generator(config) => (0..spec.parallelism)
            .map(|split| ReferenceSplit::Generated { config: *config, split, splits: spec.parallelism })
            .collect(),
    };
    expected_output(&splits, spec.window_ms, spec.out_of_orderness_ms)
}

/// Asserts that what `options`' job committed equals the reference.
pub fn assert_exactly_once(options: &RunOptions) {
    let expected = reference_for(options);
    let actual = committed_output(&options.spec.output_dir).expect("committed output readable");
    let report = difference(&expected, &actual);
    assert!(report.is_empty(), "committed output differs from the sequential reference:\n{report}");
}

/// Writes CSV files (header added) into a new directory under `root`.
pub fn write_input(root: &Path, files: &[Vec<String>]) -> PathBuf {
    let dir = root.join("input");
    std::fs::create_dir_all(&dir).unwrap();
    for (index, lines) in files.iter().enumerate() {
        let mut content = String::from("auction,bidder,price,date_time\n");
        for line in lines {
            content.push_str(line);
            content.push('\n');
        }
        std::fs::write(dir.join(format!("split-{index:02}.csv")), content).unwrap();
    }
    dir
}
pub mod processes;
