//! The main job's specification: what to read, how to window, where to write and checkpoint.
//!
//! A [`BidsJobSpec`] is fully validated before anything is written: a missing input, a file
//! with the wrong header or an impossible parameter is reported with what, where and how to
//! fix it. The spec's [`fingerprint`](BidsJobSpec::fingerprint) names the job, so running the
//! same command again finds the same checkpoints and resumes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use thiserror::Error;

use crate::bid::BID_HEADER;
use crate::fs;
use crate::generator::GeneratorConfig;
use crate::keygroup::{mix64, MAX_PARALLELISM};

/// Where the bids come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputSpec {
    /// CSV files, one split per file, in this order.
    Files(Vec<PathBuf>),
    /// The deterministic generator, one split per slot.
    Generator(GeneratorConfig),
}

/// What to do with a malformed input line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadRecordPolicy {
    /// Write it to the error output, count it, and go on.
    Skip,
    /// Stop the job with the record's error.
    Fail,
}

/// One source split: a file, or a strided share of the generated sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitSpec {
    /// Read this CSV file from start to end.
    File(PathBuf),
    /// Generate split `split` of `splits`.
    Generated {
        /// The generator's parameters.
        config: GeneratorConfig,
        /// This split's index.
        split: usize,
        /// The number of generated splits.
        splits: usize,
    },
}

impl fmt::Display for SplitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitSpec::File(path) => write!(f, "{}", path.display()),
            SplitSpec::Generated { split, splits, .. } => {
                write!(f, "generator split {split}/{splits}")
            }
        }
    }
}

/// The main job: windowed bid statistics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidsJobSpec {
    /// The input.
    pub input: InputSpec,
    /// The output directory (committed part files directly in it; `late/` and `errors/` below).
    pub output_dir: PathBuf,
    /// Number of slots.
    pub parallelism: usize,
    /// Tumbling window size.
    pub window_ms: i64,
    /// Bounded out-of-orderness subtracted from the max event time to form the watermark.
    pub out_of_orderness_ms: i64,
    /// What to do with malformed lines.
    pub on_bad_record: BadRecordPolicy,
}

/// A job spec that cannot run.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The input path does not exist or cannot be read.
    #[error("input {path}: {reason}")]
    Input {
        /// The offending path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A parameter is out of range.
    #[error("{0}")]
    Parameter(String),
}

impl BidsJobSpec {
    /// Checks parameters that need no I/O.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(SpecError::Parameter(format!(
                "--parallelism {} is out of range: use 1..={MAX_PARALLELISM}",
                self.parallelism
            )));
        }
        if self.window_ms <= 0 {
            return Err(SpecError::Parameter(format!("--window must be positive, got {} ms", self.window_ms)));
        }
        if self.out_of_orderness_ms < 0 {
            return Err(SpecError::Parameter("--out-of-orderness must not be negative".into()));
        }
        if let InputSpec::Generator(config) = &self.input {
            if config.auctions == 0 || config.events_per_second == 0 {
                return Err(SpecError::Parameter(
                    "generator needs at least one auction and one event per second".into(),
                ));
            }
        }
        Ok(())
    }

    /// The source splits, in a fixed order. Split `i` runs on slot `i % parallelism`.
    pub fn splits(&self) -> Vec<SplitSpec> {
        match &self.input {
            InputSpec::Files(files) => files.iter().cloned().map(SplitSpec::File).collect(),
            InputSpec::Generator(config) => (0..self.parallelism)
                .map(|split| SplitSpec::Generated { config: *config, split, splits: self.parallelism })
                .collect(),
        }
    }

    /// A stable name for this job, derived from everything that determines its output, so that
    /// re-running the same command resumes the same job.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a job spec always serializes");
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for chunk in canonical.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = mix64(hash ^ u64::from_le_bytes(word));
        }
        format!("bids-{hash:016x}")
    }
}

/// Resolves `--input PATH` into its split files: the file itself, or the non-hidden `*.csv`
/// files of a directory sorted by name. Each file's header is checked.
pub fn resolve_input_files(path: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let input_error = |reason: String| SpecError::Input { path: path.to_path_buf(), reason };
    let metadata = fs::metadata(path).map_err(|e| {
        input_error(format!("cannot read it ({e}); pass an existing CSV file or a directory of CSV files"))
    })?;
    let mut files = Vec::new();
    if metadata.is_dir {
        let entries = fs::read_dir(path).map_err(|e| input_error(format!("cannot list directory: {e}")))?;
        for entry in entries {
            let name = &entry.name;
            if !entry.is_dir && !name.starts_with('.') && !name.starts_with('_') && name.ends_with(".csv") {
                files.push(entry.path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(input_error("directory has no *.csv files; put the input files there or pass a file".into()));
        }
    } else {
        files.push(path.to_path_buf());
    }
    for file in &files {
        check_header(file)?;
    }
    Ok(files)
}

fn check_header(file: &Path) -> Result<(), SpecError> {
    let input_error = |reason: String| SpecError::Input { path: file.to_path_buf(), reason };
    let handle = fs::File::open(file).map_err(|e| input_error(format!("cannot open: {e}")))?;
    let mut first = Vec::new();
    BufReader::new(handle).read_until(b'\n', &mut first).map_err(|e| input_error(format!("cannot read: {e}")))?;
    let header = String::from_utf8_lossy(&first);
    let header = header.trim_end_matches(['\n', '\r']).trim_start_matches('\u{feff}');
    if header.replace(' ', "") != BID_HEADER {
        return Err(input_error(format!(
            "line 1: expected the header `{BID_HEADER}`, found `{}`; add the header line",
            header.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}
