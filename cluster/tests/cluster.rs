//! Multi-process cluster tests: a coordinator and workers as real processes on loopback, all
//! traffic over mutual TLS.
//!
//! Method: `weir certs init` makes the TLS material; `weir coordinator` and two `weir worker`
//! processes start; `weir job submit bids` runs the main job at 4 slots spread over both
//! workers (so the exchange crosses processes). The committed output is compared with the
//! sequential reference. One test kills a worker with SIGKILL mid-run and starts a
//! replacement: the job must restart from its latest checkpoint and commit exactly the
//! reference output. Another presents certificates from a foreign CA and must be refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// Child processes killed when the test ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn weir(args: &[&str]) -> Output {
    Command::new(WEIR).args(args).output().expect("weir runs")
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(WEIR).args(args).stdout(Stdio::null()).stderr(log).spawn().expect("weir starts")
}

struct Cluster {
    root: tempfile::TempDir,
    address: String,
    certs: PathBuf,
    processes: Processes,
}

impl Cluster {
    fn start(workers: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let certs = root.path().join("certs");
        assert!(weir(&["certs", "init", certs.to_str().unwrap()]).status.success());
        let address = format!("127.0.0.1:{}", free_port());
        let mut cluster = Cluster { address, certs, processes: Processes(Vec::new()), root };
        let coordinator = cluster.start_coordinator("coordinator.log");
        cluster.processes.0.push(coordinator);
        for index in 0..workers {
            cluster.add_worker(index);
        }
        cluster
    }

    fn start_coordinator(&mut self, log_name: &str) -> Child {
        let checkpoints = self.root.path().join("checkpoints");
        spawn(
            &[
                "coordinator",
                "--listen",
                &self.address,
                "--certs",
                self.certs.to_str().unwrap(),
                "--checkpoint-dir",
                checkpoints.to_str().unwrap(),
                "--restart-backoff",
                "200ms",
            ],
            &self.root.path().join(log_name),
        )
    }

    fn add_worker(&mut self, index: usize) {
        let log = self.root.path().join(format!("worker-{index}.log"));
        let log = if log.exists() {
            self.root.path().join(format!("worker-{index}-{}.log", self.processes.0.len()))
        } else {
            log
        };
        let child = spawn(
            &["worker", "--coordinator", &self.address, "--slots", "2", "--certs", self.certs.to_str().unwrap()],
            &log,
        );
        self.processes.0.push(child);
    }

    fn client(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--coordinator", &self.address, "--certs", self.certs.to_str().unwrap()]);
        // The coordinator may still be starting.
        for _ in 0..50 {
            let output = weir(&all);
            if output.status.success() || !String::from_utf8_lossy(&output.stderr).contains("cannot reach") {
                return output;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        weir(&all)
    }

    fn wait_for_state(&self, job_id: &str, states: &[&str], timeout: Duration) -> String {
        // Polls every 100 ms, up to `timeout` (counted, not clocked: tests take no clock).
        let mut polls_left = timeout.as_millis() / 100;
        loop {
            let status = String::from_utf8_lossy(&self.client(&["job", "status", job_id]).stdout).into_owned();
            if states.iter().any(|state| status.contains(&format!("state:           {state}"))) {
                return status;
            }
            polls_left = polls_left.saturating_sub(1);
            assert!(polls_left > 0, "job did not reach {states:?} in {timeout:?}:\n{status}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let mut logs = String::new();
        for entry in std::fs::read_dir(self.root.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                logs.push_str(&format!(
                    "--- {}\n{}",
                    entry.path().display(),
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                ));
            }
        }
        logs
    }
}

fn submit(cluster: &Cluster, output: &Path, events: u64, rate: Option<u64>) -> String {
    let events = events.to_string();
    let mut args = vec![
        "job",
        "submit",
        "bids",
        "--output",
        output.to_str().unwrap(),
        "--events",
        &events,
        "--seed",
        "9",
        "--parallelism",
        "4",
        "--checkpoint-interval",
        "50ms",
    ];
    let rate = rate.map(|r| r.to_string());
    if let Some(rate) = &rate {
        args.extend(["--rate", rate]);
    }
    let result = cluster.client(&args);
    assert!(result.status.success(), "submit failed: {}\n{}", String::from_utf8_lossy(&result.stderr), cluster.logs());
    String::from_utf8_lossy(&result.stdout).trim().to_string()
}

#[test]
fn job_across_two_workers_commits_exactly_the_reference() {
    let cluster = Cluster::start(2);
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, 1_000_000, None);
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(120));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    assert_exactly_once(&generated_job(1_000_000, 9, &output, 4));
    let list = String::from_utf8_lossy(&cluster.client(&["job", "list"]).stdout).into_owned();
    assert!(list.contains(&job_id) && list.contains("Finished"), "{list}");
}

#[test]
fn killed_worker_is_replaced_and_output_is_exactly_once() {
    let mut cluster = Cluster::start(2);
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, 3_000_000, Some(1_000_000));
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    // Let some checkpoints complete, then kill the second worker dead.
    std::thread::sleep(Duration::from_millis(1200));
    let victim = &mut cluster.processes.0[2];
    victim.kill().unwrap();
    victim.wait().unwrap();
    cluster.wait_for_state(&job_id, &["Restarting", "Scheduled"], Duration::from_secs(30));
    cluster.add_worker(2);
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(180));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    assert!(status.contains("restarts:        1") || status.contains("restarts:        2"), "{status}");
    assert_exactly_once(&generated_job(3_000_000, 9, &output, 4));
}

#[test]
fn killed_coordinator_is_restarted_and_resumes_the_job() {
    let mut cluster = Cluster::start(2);
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, 3_000_000, Some(1_000_000));
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1200));
    let coordinator = &mut cluster.processes.0[0];
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    // A new coordinator on the same address and checkpoint store finds the job and resumes it
    // once the workers (which keep trying) register again.
    let replacement = cluster.start_coordinator("coordinator-2.log");
    cluster.processes.0.push(replacement);
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(180));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    let log = std::fs::read_to_string(cluster.root.path().join("coordinator-2.log")).unwrap();
    assert!(log.contains(&format!("resuming job {job_id}")), "{log}");
    assert_exactly_once(&generated_job(3_000_000, 9, &output, 4));
}

/// The soak: SIGKILLs workers and the coordinator again and again during one long run of the
/// main job, starting a replacement after each kill, then checks exactly-once. Short by default
/// (CI); `chaos/soak.sh` runs it long (`WEIR_SOAK_KILLS`, `WEIR_SOAK_EVENTS`).
#[test]
fn soak_repeated_sigkills_of_workers_and_coordinator() {
    let kills: usize = std::env::var("WEIR_SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let events: u64 = std::env::var("WEIR_SOAK_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000_000);
    let rate = 1_000_000;
    let mut cluster = Cluster::start(3);
    // Which process plays which part: index 0 is the coordinator, 1..=3 the workers.
    let mut coordinator_at = 0;
    let mut worker_at: Vec<usize> = vec![1, 2, 3];
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, events, Some(rate));
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    for kill in 0..kills {
        // Kills land 400–1100 ms apart, at varying points of the checkpoint cycle.
        std::thread::sleep(Duration::from_millis(400 + (kill as u64 * 373) % 700));
        let status = String::from_utf8_lossy(&cluster.client(&["job", "status", &job_id]).stdout).into_owned();
        if status.contains("Finished") {
            eprintln!("soak: the job finished after {kill} kills; raise WEIR_SOAK_EVENTS for more");
            break;
        }
        if kill % 3 == 2 {
            eprintln!("soak: kill {kill}: SIGKILL the coordinator");
            let victim = &mut cluster.processes.0[coordinator_at];
            victim.kill().unwrap();
            victim.wait().unwrap();
            let replacement = cluster.start_coordinator(&format!("coordinator-{kill}.log"));
            cluster.processes.0.push(replacement);
            coordinator_at = cluster.processes.0.len() - 1;
        } else {
            let which = kill % worker_at.len();
            eprintln!("soak: kill {kill}: SIGKILL worker {which}");
            let victim = &mut cluster.processes.0[worker_at[which]];
            victim.kill().unwrap();
            victim.wait().unwrap();
            cluster.add_worker(which);
            worker_at[which] = cluster.processes.0.len() - 1;
        }
    }
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(600));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    assert_exactly_once(&generated_job(events, 9, &output, 4));
}

#[test]
fn peers_without_a_cluster_certificate_are_refused() {
    let cluster = Cluster::start(0);
    // Make sure the coordinator is up (a client with the right certificate gets an answer).
    assert!(cluster.client(&["job", "list"]).status.success(), "{}", cluster.logs());
    let foreign = cluster.root.path().join("foreign");
    assert!(weir(&["certs", "init", foreign.to_str().unwrap()]).status.success());
    let result = weir(&["job", "list", "--coordinator", &cluster.address, "--certs", foreign.to_str().unwrap()]);
    assert!(!result.status.success(), "a client with a foreign certificate must be refused");
    let worker = spawn(
        &["worker", "--coordinator", &cluster.address, "--certs", foreign.to_str().unwrap(), "--slots", "1"],
        &cluster.root.path().join("foreign-worker.log"),
    );
    let _worker = Processes(vec![worker]);
    std::thread::sleep(Duration::from_millis(1500));
    let log = std::fs::read_to_string(cluster.root.path().join("coordinator.log")).unwrap();
    assert!(log.contains("refused connection"), "the refusal must be logged:\n{log}");
    assert!(!log.contains("registered"), "a worker with a foreign certificate must not register:\n{log}");
}
