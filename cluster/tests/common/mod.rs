//! Helpers shared by the cluster's integration tests: building inputs, running jobs on the
//! embedded cluster, and judging their committed output against the sequential reference.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_chaos::oracle::{committed_output, difference};
use weir_chaos::reference::{expected_output, Expected, ReferenceSplit};
use weir_cluster::jobs::bids::BidsParams;
use weir_cluster::run::RunOptions;
use weir_core::job::{resolve_input_files, BadRecordPolicy};

/// A job over CSV files in `input`, writing to `output`.
pub fn file_job(
    input: &Path,
    output: &Path,
    parallelism: usize,
    window_ms: i64,
    out_of_orderness_ms: i64,
) -> RunOptions {
    let files = resolve_input_files(input, "csv").expect("valid input");
    let spec =
        BidsParams::files(files, output, window_ms, out_of_orderness_ms).spec(parallelism, BadRecordPolicy::Skip);
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(2));
    options
}

/// A job over the generator.
pub fn generated_job(events: u64, seed: u64, output: &Path, parallelism: usize) -> RunOptions {
    let spec = BidsParams::generated(events, seed, output).spec(parallelism, BadRecordPolicy::Skip);
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(2));
    options
}

/// The bids parameters of a job.
pub fn params_of(options: &RunOptions) -> BidsParams {
    BidsParams::from_spec(&options.spec).expect("a bids job")
}

/// The output directory of a job.
pub fn output_of(options: &RunOptions) -> PathBuf {
    params_of(options).output
}

/// The reference result of a job.
pub fn reference_for(options: &RunOptions) -> Expected {
    let params = params_of(options);
    let parallelism = options.spec.parallelism;
    let splits: Vec<ReferenceSplit> = match &params.input {
        Some(files) => files.iter().cloned().map(ReferenceSplit::File).collect(),
        None => (0..parallelism)
            .map(|split| ReferenceSplit::Generated { config: params.generator, split, splits: parallelism })
            .collect(),
    };
    expected_output(&splits, params.window_ms, params.out_of_orderness_ms)
}

/// Runs a job of the built-in registry on the embedded cluster.
pub fn run(options: RunOptions) -> Result<weir_cluster::run::RunSummary, weir_cluster::run::RunError> {
    weir_cluster::run::run_job(&weir_cluster::jobs::builtin(), options)
}

/// Asserts that what `options`' job committed equals the reference.
pub fn assert_exactly_once(options: &RunOptions) {
    let expected = reference_for(options);
    let actual = committed_output(&output_of(options)).expect("committed output readable");
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
