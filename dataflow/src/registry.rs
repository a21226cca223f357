//! The job registry: job names mapped to their builders and typed parameters.
//!
//! Every process of a cluster runs the same binary and so holds the same registry: the
//! coordinator plans a submitted job from it, workers build their slots from it, the simulator
//! runs jobs from it. A user's own binary registers its jobs and hands the registry to the
//! one entry point that provides the whole CLI.

use std::collections::BTreeMap;

use weir_core::job::{BadRecordPolicy, JobSpec, ParamDef, Params, StateBackendKind};

use crate::api::{BuildError, JobBuilder};

/// A job's builder: wires the job's dataflow from its parameters.
pub type BuildFn = fn(&mut JobBuilder<'_>, &Params) -> Result<(), BuildError>;

/// Engine settings a job's own parameters ask for (a SQL script's `SET` statements): defaults for
/// the engine's flags, which flags given on the command line override.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineDefaults {
    /// `--parallelism`.
    pub parallelism: Option<usize>,
    /// `--checkpoint-interval`.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// `--state-backend`.
    pub state_backend: Option<StateBackendKind>,
}

/// Reads a job's [`EngineDefaults`] from its parameters; the error says what is wrong where.
pub type EngineDefaultsFn = fn(&Params) -> Result<EngineDefaults, String>;

/// A registered job.
#[derive(Clone)]
pub struct JobDef {
    /// The name it is run by.
    pub name: String,
    /// One line for `weir jobs`.
    pub about: String,
    /// Its parameters.
    pub params: Vec<ParamDef>,
    /// Its builder.
    pub build: BuildFn,
    /// Engine settings its parameters ask for, if it has any.
    pub engine_defaults: Option<EngineDefaultsFn>,
}

impl std::fmt::Debug for JobDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDef").field("name", &self.name).field("params", &self.params).finish()
    }
}

impl JobDef {
    /// A job named `name` that takes `params` and is built by `build`.
    pub fn new(name: &str, about: &str, params: Vec<ParamDef>, build: BuildFn) -> Self {
        let mut seen = std::collections::BTreeSet::new();
        for param in &params {
            assert!(seen.insert(param.name), "job {name} declares --{} twice", param.name);
            assert!(
                !ENGINE_FLAGS.contains(&param.name),
                "job {name} declares --{}, which is an engine flag every job has",
                param.name
            );
        }
        JobDef { name: name.to_owned(), about: about.to_owned(), params, build, engine_defaults: None }
    }

    /// The same job, whose parameters may ask for engine settings (read by `defaults`).
    pub fn with_engine_defaults(mut self, defaults: EngineDefaultsFn) -> Self {
        self.engine_defaults = Some(defaults);
        self
    }

    /// The engine settings the parameters `given` ask for (none for most jobs).
    pub fn engine_defaults(&self, given: &BTreeMap<String, String>) -> Result<EngineDefaults, String> {
        match self.engine_defaults {
            Some(read) => read(&Params::parse(&self.params, given)?),
            None => Ok(EngineDefaults::default()),
        }
    }

    /// A spec of this job from flag values given as text.
    pub fn spec(
        &self,
        given: &BTreeMap<String, String>,
        parallelism: usize,
        on_bad_record: BadRecordPolicy,
    ) -> Result<JobSpec, String> {
        let params = Params::parse(&self.params, given)?;
        let spec = JobSpec {
            job: self.name.clone(),
            params,
            parallelism,
            on_bad_record,
            state_backend: StateBackendKind::default(),
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

/// Flags every job has (the engine's, not the job's): a job cannot declare them.
pub const ENGINE_FLAGS: &[&str] = &[
    "parallelism",
    "on-bad-record",
    "checkpoint-dir",
    "checkpoint-interval",
    "checkpoint-timeout",
    "retained-checkpoints",
    "state-backend",
    "local-state-dir",
    "rate",
    "progress",
    "coordinator",
    "certs",
    "help",
];

/// The jobs a binary can run, by name.
#[derive(Clone, Debug, Default)]
pub struct JobRegistry {
    jobs: BTreeMap<String, JobDef>,
}

impl JobRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        JobRegistry::default()
    }

    /// Adds a job. Panics if the name is taken (two jobs of one binary cannot share a name).
    pub fn register(&mut self, job: JobDef) -> &mut Self {
        assert!(!self.jobs.contains_key(&job.name), "job {} registered twice", job.name);
        self.jobs.insert(job.name.clone(), job);
        self
    }

    /// The job called `name`; the error lists the registered ones.
    pub fn get(&self, name: &str) -> Result<&JobDef, String> {
        self.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            format!("no job named {name:?}; this binary has: {} (see `weir jobs`)", known.join(", "))
        })
    }

    /// Checks a spec received from elsewhere (a submission, a job record) against the job's
    /// declarations.
    pub fn check(&self, spec: &JobSpec) -> Result<&JobDef, String> {
        spec.validate().map_err(|e| e.to_string())?;
        let job = self.get(&spec.job)?;
        spec.params.check(&job.params).map_err(|e| format!("job {}: {e}", spec.job))?;
        Ok(job)
    }

    /// The registered jobs, by name.
    pub fn jobs(&self) -> impl Iterator<Item = &JobDef> {
        self.jobs.values()
    }
}
