//! A job as the engine sees it: a registered job's name, its typed parameters, and how it runs.
//!
//! Rust closures cannot travel between processes, so a job is *a registered builder plus its
//! parameters*: every process runs the same binary, looks the builder up by name and builds the
//! same dataflow. A [`JobSpec`] is therefore all that is submitted, recorded with the job and
//! sent to workers. Parameters are declared by the job ([`ParamDef`]), parsed and validated
//! before anything starts — a wrong type is a one-line error naming the flag — and kept in a
//! canonical form, so that the spec's [`fingerprint`](JobSpec::fingerprint) names the job:
//! running the same command again finds the same checkpoints and resumes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

use crate::fs;
use crate::keygroup::{mix64, MAX_PARALLELISM};

/// What to do with a malformed input record.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadRecordPolicy {
    /// Write it to the error output, count it, and go on.
    Skip,
    /// Stop the job with the record's error.
    Fail,
}

/// Where a job keeps its keyed state (`--state-backend`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateBackendKind {
    /// In memory: fastest, for state that fits (the default).
    #[default]
    Memory,
    /// In RocksDB on each node's local disk: state larger than memory (a build with the
    /// `rocksdb` feature).
    RocksDb,
}

impl StateBackendKind {
    /// The flag's value for this backend.
    pub fn name(self) -> &'static str {
        match self {
            StateBackendKind::Memory => "memory",
            StateBackendKind::RocksDb => "rocksdb",
        }
    }
    fn is_default(&self) -> bool {
        *self == StateBackendKind::default()
    }
}

impl std::str::FromStr for StateBackendKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "memory" | "hashmap" => Ok(StateBackendKind::Memory),
            "rocksdb" => Ok(StateBackendKind::RocksDb),
            other => Err(format!("state backend {other:?} is not one of: memory, rocksdb")),
        }
    }
}

/// A job to run: which registered job, with which parameters, at which parallelism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The registered job's name.
    pub job: String,
    /// Its parameters, parsed and in canonical form.
    pub params: Params,
    /// Number of slots.
    pub parallelism: usize,
    /// What sources do with malformed records.
    pub on_bad_record: BadRecordPolicy,
    /// Where keyed state lives. Part of the job's identity, like its parallelism: a job moves
    /// to another backend through a savepoint (savepoints are the same on both).
    #[serde(default)]
    pub state_backend: StateBackendKind,
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
    /// A parameter is out of range or of the wrong type.
    #[error("{0}")]
    Parameter(String),
}

impl JobSpec {
    /// Checks what needs no I/O and no job definition.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(SpecError::Parameter(format!(
                "--parallelism {} is out of range: use 1..={MAX_PARALLELISM}",
                self.parallelism
            )));
        }
        if self.job.is_empty() || !self.job.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SpecError::Parameter(format!("job name {:?} must be letters, digits, `-` and `_`", self.job)));
        }
        Ok(())
    }

    /// A stable name for this job, derived from everything that determines its output, so that
    /// re-running the same command resumes the same job.
    pub fn fingerprint(&self) -> String {
        /// What names a job: the spec, without the backend when it is the default (so that
        /// jobs spec'd before there was a choice keep their ids and their checkpoints).
        #[derive(Serialize)]
        struct Identity<'a> {
            job: &'a str,
            params: &'a Params,
            parallelism: usize,
            on_bad_record: BadRecordPolicy,
            #[serde(skip_serializing_if = "StateBackendKind::is_default")]
            state_backend: StateBackendKind,
        }
        let JobSpec { job, params, parallelism, on_bad_record, state_backend } = self;
        let identity = Identity {
            job,
            params,
            parallelism: *parallelism,
            on_bad_record: *on_bad_record,
            state_backend: *state_backend,
        };
        let canonical = serde_json::to_vec(&identity).expect("a job spec always serializes");
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for chunk in canonical.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = mix64(hash ^ u64::from_le_bytes(word));
        }
        format!("{}-{hash:016x}", self.job)
    }
}

/// The type of a job parameter, which decides how its flag is parsed and its value kept.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A signed 64-bit integer.
    Int,
    /// An unsigned 64-bit integer.
    UInt,
    /// A duration (`500ms`, `10s`, `2m`, `1h`), kept in milliseconds.
    Duration,
    /// A file system path, kept absolute.
    Path,
    /// Input files: a file, or the non-hidden files of a directory with this extension, sorted
    /// by name; kept as the resolved list, so that every process reads the same splits.
    Files {
        /// The extension of files taken from a directory (without the dot).
        extension: &'static str,
    },
    /// Free text.
    Text,
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

/// A parameter a job declares.
#[derive(Clone, Debug)]
pub struct ParamDef {
    /// The flag's name (`--name`), lowercase with dashes.
    pub name: &'static str,
    /// Its type.
    pub kind: ParamKind,
    /// Its default, in flag syntax; `None` with `required: false` means "may be absent".
    pub default: Option<&'static str>,
    /// Whether it must be given.
    pub required: bool,
    /// One line for `--help` and `weir jobs`.
    pub help: &'static str,
}

impl ParamDef {
    /// A parameter with a default.
    pub fn new(name: &'static str, kind: ParamKind, default: &'static str, help: &'static str) -> Self {
        ParamDef { name, kind, default: Some(default), required: false, help }
    }
    /// A parameter that must be given.
    pub fn required(name: &'static str, kind: ParamKind, help: &'static str) -> Self {
        ParamDef { name, kind, default: None, required: true, help }
    }
    /// A parameter that may be absent.
    pub fn optional(name: &'static str, kind: ParamKind, help: &'static str) -> Self {
        ParamDef { name, kind, default: None, required: false, help }
    }

    /// Parses a value given on the command line into its canonical form. The error is one
    /// line that names the flag and says what is expected.
    pub fn parse(&self, text: &str) -> Result<String, String> {
        let flag = self.name;
        let expected = |what: &str| format!("--{flag} {text:?}: expected {what}");
        match self.kind {
            ParamKind::Int => text.trim().parse::<i64>().map(|v| v.to_string()).map_err(|_| expected("an integer")),
            ParamKind::UInt => {
                text.trim().parse::<u64>().map(|v| v.to_string()).map_err(|_| expected("a non-negative integer"))
            }
            ParamKind::Duration => {
                parse_duration_ms(text).map(|v| format!("{v}ms")).map_err(|e| format!("--{flag}: {e}"))
            }
            ParamKind::Path => Ok(absolute(Path::new(text)).display().to_string()),
            ParamKind::Files { extension } => {
                let files = resolve_input_files(Path::new(text), extension).map_err(|e| format!("--{flag}: {e}"))?;
                let files: Vec<String> = files.iter().map(|f| absolute(f).display().to_string()).collect();
                Ok(serde_json::to_string(&files).expect("strings serialize"))
            }
            ParamKind::Text => Ok(text.to_owned()),
            ParamKind::Bool => match text.trim() {
                "true" | "yes" | "on" | "1" => Ok("true".into()),
                "false" | "no" | "off" | "0" => Ok("false".into()),
                _ => Err(expected("true or false")),
            },
            ParamKind::Choice(choices) => {
                if choices.contains(&text.trim()) {
                    Ok(text.trim().to_owned())
                } else {
                    Err(expected(&format!("one of {}", choices.join(", "))))
                }
            }
        }
    }

    /// The type, described for `weir jobs`.
    pub fn type_name(&self) -> String {
        match self.kind {
            ParamKind::Int => "INT".into(),
            ParamKind::UInt => "N".into(),
            ParamKind::Duration => "DURATION".into(),
            ParamKind::Path => "PATH".into(),
            ParamKind::Files { extension } => format!("FILE|DIR(*.{extension})"),
            ParamKind::Text => "TEXT".into(),
            ParamKind::Bool => "BOOL".into(),
            ParamKind::Choice(choices) => choices.join("|"),
        }
    }
}

/// A job's parameters in canonical form (what [`ParamDef::parse`] returns), by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params(BTreeMap<String, String>);

/// A parameter a job asked for but does not have, or of another type than it asked: a bug
/// in the job (its declarations and its builder disagree), reported when the job is built.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("parameter --{name}: {reason}")]
pub struct ParamError {
    /// The parameter.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

impl Params {
    /// Parameters from canonical values.
    pub fn from_canonical(values: BTreeMap<String, String>) -> Self {
        Params(values)
    }

    /// Parses `given` (flag name → text) against `defs`: defaults filled in, required ones
    /// checked, unknown ones refused.
    pub fn parse(defs: &[ParamDef], given: &BTreeMap<String, String>) -> Result<Params, String> {
        for name in given.keys() {
            if !defs.iter().any(|d| d.name == name) {
                let known: Vec<String> = defs.iter().map(|d| format!("--{}", d.name)).collect();
                return Err(format!("unknown parameter --{name}; this job takes {}", known.join(", ")));
            }
        }
        let mut values = BTreeMap::new();
        for def in defs {
            let text = match (given.get(def.name), def.default) {
                (Some(text), _) => text.as_str(),
                (None, Some(default)) => default,
                (None, None) if def.required => {
                    return Err(format!("--{} is required: {}", def.name, def.help));
                }
                (None, None) => continue,
            };
            values.insert(def.name.to_owned(), def.parse(text)?);
        }
        Ok(Params(values))
    }

    /// Checks canonical values received from elsewhere (a submitted job) against `defs`.
    pub fn check(&self, defs: &[ParamDef]) -> Result<(), String> {
        for (name, value) in &self.0 {
            let Some(def) = defs.iter().find(|d| d.name == name) else {
                return Err(format!("unknown parameter --{name}"));
            };
            let absolute = |path: &str| {
                if Path::new(path).is_absolute() {
                    Ok(())
                } else {
                    Err(format!("--{name}: {path:?} is not an absolute path (every process must find the same file)"))
                }
            };
            let reparsed = match def.kind {
                // Canonical file lists and paths are not re-resolved here (the coordinator may not
                // see the client's files); they must be well-formed and absolute.
                ParamKind::Files { .. } => {
                    let files =
                        serde_json::from_str::<Vec<String>>(value).map_err(|_| format!("--{name}: not a file list"))?;
                    files.iter().try_for_each(|file| absolute(file))?;
                    Ok(value.clone())
                }
                ParamKind::Path => absolute(value).map(|()| value.clone()),
                _ => def.parse(value),
            }?;
            if &reparsed != value {
                return Err(format!("--{name} {value:?} is not in canonical form"));
            }
        }
        for def in defs.iter().filter(|d| d.required || d.default.is_some()) {
            if !self.0.contains_key(def.name) {
                return Err(format!("--{} is missing", def.name));
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<&str, ParamError> {
        self.0.get(name).map(String::as_str).ok_or_else(|| ParamError {
            name: name.to_owned(),
            reason: "not given and without a default (declare a default or use an optional getter)".into(),
        })
    }

    fn typed<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<T, ParamError> {
        self.get(name)?.parse().map_err(|_| ParamError { name: name.to_owned(), reason: format!("is not {what}") })
    }

    /// Whether the parameter has a value.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    /// An integer parameter.
    pub fn i64(&self, name: &str) -> Result<i64, ParamError> {
        self.typed(name, "an integer")
    }
    /// A non-negative integer parameter.
    pub fn u64(&self, name: &str) -> Result<u64, ParamError> {
        self.typed(name, "a non-negative integer")
    }
    /// A duration parameter, in milliseconds.
    pub fn duration_ms(&self, name: &str) -> Result<i64, ParamError> {
        parse_duration_ms(self.get(name)?).map_err(|reason| ParamError { name: name.to_owned(), reason })
    }
    /// A boolean parameter.
    pub fn bool(&self, name: &str) -> Result<bool, ParamError> {
        self.typed(name, "true or false")
    }
    /// A text, choice or path parameter as given (paths absolute).
    pub fn text(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name)
    }
    /// A path parameter.
    pub fn path(&self, name: &str) -> Result<PathBuf, ParamError> {
        self.get(name).map(PathBuf::from)
    }
    /// A files parameter: the resolved list.
    pub fn files(&self, name: &str) -> Result<Vec<PathBuf>, ParamError> {
        let list: Vec<String> = serde_json::from_str(self.get(name)?)
            .map_err(|_| ParamError { name: name.to_owned(), reason: "is not a file list".into() })?;
        Ok(list.into_iter().map(PathBuf::from).collect())
    }
    /// The canonical values, by name.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if text[digits..].trim().is_empty() && text[..digits].parse::<i64>().is_ok_and(|value| value != 0) {
        return Err(format!("`{text}` has no unit; write e.g. {text}s or {text}ms"));
    }
    parse_flink_duration_ms(text)
}

/// A duration as Flink writes one (`'10 s'`, `'500ms'`, `'1 min'`, `'2 hours'`), in
/// milliseconds: a whole number, then a unit — `ms`, `s`, `m`/`min`, `h`, `d` or their long
/// names, in any case, with or without a space; a number alone is milliseconds (Flink's
/// `TimeUtils`). The
/// engine's flags and SQL's `SET` and options all read durations with it.
pub fn parse_flink_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: i64 =
        digits.parse().map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 10s, 2m or 1h"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, min, h or d")),
    };
    value.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// `path` made absolute against the current directory (without touching the file system).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Resolves an input path into its split files: the file itself, or the non-hidden
/// `*.<extension>` files of a directory sorted by name.
pub fn resolve_input_files(path: &Path, extension: &str) -> Result<Vec<PathBuf>, SpecError> {
    let input_error = |reason: String| SpecError::Input { path: path.to_path_buf(), reason };
    let metadata = fs::metadata(path).map_err(|e| {
        input_error(format!("cannot read it ({e}); pass an existing file or a directory of *.{extension} files"))
    })?;
    let mut files = Vec::new();
    if metadata.is_dir {
        let entries = fs::read_dir(path).map_err(|e| input_error(format!("cannot list directory: {e}")))?;
        let suffix = format!(".{extension}");
        for entry in entries {
            let name = &entry.name;
            if !entry.is_dir && !name.starts_with('.') && !name.starts_with('_') && name.ends_with(&suffix) {
                files.push(entry.path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(input_error(format!(
                "directory has no *.{extension} files; put the input files there or pass a file"
            )));
        }
    } else {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<ParamDef> {
        vec![
            ParamDef::new("window", ParamKind::Duration, "10s", "window size"),
            ParamDef::required("output", ParamKind::Path, "output directory"),
            ParamDef::optional("seed", ParamKind::UInt, "seed"),
            ParamDef::new("mode", ParamKind::Choice(&["a", "b"]), "a", "mode"),
        ]
    }

    #[test]
    fn parameters_parse_to_canonical_values_and_wrong_types_are_one_line_errors() {
        let given = BTreeMap::from([("output".to_string(), "/tmp/x".to_string()), ("window".into(), "2m".into())]);
        let params = Params::parse(&defs(), &given).unwrap();
        assert_eq!(params.duration_ms("window"), Ok(120_000));
        assert_eq!(params.path("output").unwrap(), PathBuf::from("/tmp/x"));
        assert!(!params.has("seed"));
        assert_eq!(params.text("mode"), Ok("a"));
        params.check(&defs()).unwrap();

        let bad = BTreeMap::from([("output".to_string(), "/x".to_string()), ("seed".into(), "-3".into())]);
        let error = Params::parse(&defs(), &bad).unwrap_err();
        assert_eq!(error, "--seed \"-3\": expected a non-negative integer");
        assert!(!error.contains('\n'));
        let missing = Params::parse(&defs(), &BTreeMap::new()).unwrap_err();
        assert!(missing.starts_with("--output is required"), "{missing}");
        let unknown = BTreeMap::from([("output".to_string(), "/x".to_string()), ("colour".into(), "red".into())]);
        assert!(Params::parse(&defs(), &unknown).unwrap_err().contains("unknown parameter --colour"));
        let choice = BTreeMap::from([("output".to_string(), "/x".to_string()), ("mode".into(), "c".into())]);
        assert!(Params::parse(&defs(), &choice).unwrap_err().contains("one of a, b"));
    }

    #[test]
    fn the_fingerprint_names_the_job_and_changes_with_any_parameter() {
        let params = Params::parse(&defs(), &BTreeMap::from([("output".to_string(), "/x".to_string())])).unwrap();
        let spec = JobSpec {
            job: "bids".into(),
            params,
            parallelism: 2,
            on_bad_record: BadRecordPolicy::Skip,
            state_backend: StateBackendKind::Memory,
        };
        let mut other = spec.clone();
        other.parallelism = 3;
        assert!(spec.fingerprint().starts_with("bids-"));
        assert_ne!(spec.fingerprint(), other.fingerprint());
        let mut on_rocksdb = spec.clone();
        on_rocksdb.state_backend = StateBackendKind::RocksDb;
        assert_ne!(spec.fingerprint(), on_rocksdb.fingerprint());
        // The default backend keeps the ids of jobs spec'd before there was a choice.
        let params = serde_json::to_string(&spec.params).unwrap();
        let before = format!(r#"{{"job":"bids","params":{params},"parallelism":2,"on_bad_record":"Skip"}}"#);
        let old: JobSpec = serde_json::from_str(&before).unwrap();
        assert_eq!(old, spec, "a spec recorded before the backend was chosen reads as memory");
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for chunk in before.as_bytes().chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = mix64(hash ^ u64::from_le_bytes(word));
        }
        assert_eq!(spec.fingerprint(), format!("bids-{hash:016x}"));
        assert_eq!(spec.fingerprint(), spec.clone().fingerprint());
    }
}
