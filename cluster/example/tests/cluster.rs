//! A user's job on a real multi-process cluster: the example binary started as a coordinator
//! and two workers over mutual TLS on loopback, `fraud` submitted at parallelism 4, one worker
//! killed with SIGKILL mid-run and replaced; the committed alerts must equal the reference.
//!
//! Method: every process is `weir-example` (every process of a cluster runs the same binary,
//! which is how workers build the user's job); the client polls `job status` until the job
//! ends; the output is read back as in `jobs.rs`.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use weir_dataflow::source::Generator;
use weir_example::fraud::{Alert, Transactions};
use weir_example::reference;

const BINARY: &str = env!("CARGO_BIN_EXE_weir-example");

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BINARY).args(args).stdout(Stdio::null()).stderr(log).spawn().expect("starts")
}

fn client(args: &[&str], address: &str, certs: &Path) -> Output {
    let run =
        || Command::new(BINARY).args(args).args(["--coordinator", address, "--certs"]).arg(certs).output().unwrap();
    for _ in 0..50 {
        let output = run();
        if output.status.success() || !String::from_utf8_lossy(&output.stderr).contains("cannot reach") {
            return output;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    run()
}

fn logs(root: &Path) -> String {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| format!("--- {}\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default()))
        .collect()
}

fn wait_for(job: &str, states: &[&str], address: &str, certs: &Path, root: &Path) -> String {
    for _ in 0..1200 {
        let status = String::from_utf8_lossy(&client(&["job", "status", job], address, certs).stdout).into_owned();
        if states.iter().any(|state| status.contains(&format!("state:           {state}"))) {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {job} did not reach {states:?}\n{}", logs(root));
}

#[test]
fn a_users_job_survives_a_killed_worker_on_a_real_cluster() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let certs = root.join("certs");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let init = Command::new(BINARY).args(["certs", "init"]).arg(&certs).output().unwrap();
    assert!(init.status.success());
    let certs_arg = certs.to_str().unwrap();
    let checkpoints = root.join("checkpoints");
    let mut processes = Processes(vec![spawn(
        &[
            "coordinator",
            "--listen",
            &address,
            "--certs",
            certs_arg,
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
            "--restart-backoff",
            "200ms",
        ],
        &root.join("coordinator.log"),
    )]);
    let worker = |index: usize| {
        spawn(
            &["worker", "--coordinator", &address, "--slots", "2", "--listen", "127.0.0.1:0", "--certs", certs_arg],
            &root.join(format!("worker-{index}.log")),
        )
    };
    processes.0.push(worker(0));
    processes.0.push(worker(1));

    let output = root.join("out");
    let submitted = client(
        &[
            "job",
            "submit",
            "fraud",
            "--output",
            output.to_str().unwrap(),
            "--events",
            "400000",
            "--accounts",
            "50",
            "--seed",
            "3",
            "--parallelism",
            "4",
            "--checkpoint-interval",
            "50ms",
            "--rate",
            "200000",
        ],
        &address,
        &certs,
    );
    assert!(submitted.status.success(), "{}\n{}", String::from_utf8_lossy(&submitted.stderr), logs(root));
    let job = String::from_utf8_lossy(&submitted.stdout).trim().to_string();
    wait_for(&job, &["Running"], &address, &certs, root);
    std::thread::sleep(Duration::from_millis(700));
    let victim = &mut processes.0[2];
    victim.kill().unwrap();
    victim.wait().unwrap();
    processes.0.push(worker(2));
    let status = wait_for(&job, &["Finished", "Failed"], &address, &certs, root);
    assert!(status.contains("Finished"), "{status}\n{}", logs(root));
    assert!(!status.contains("restarts:        0"), "the kill restarted the job:\n{status}");

    let generator = Transactions::new(400_000, 50, 3).unwrap();
    let splits: Vec<Vec<_>> =
        (0..4).map(|s| (0..generator.split_len(s, 4)).map(|i| generator.generate(s, 4, i)).collect()).collect();
    let (alerts, _) = reference::fraud(&splits, 2_000);
    let mut committed = Vec::new();
    for entry in std::fs::read_dir(output.join("alerts")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with(['.', '_']) && entry.path().is_file() {
            committed.extend(csv::Reader::from_path(entry.path()).unwrap().deserialize::<Alert>().map(Result::unwrap));
        }
    }
    committed.sort();
    assert!(!alerts.is_empty());
    assert_eq!(committed, alerts, "exactly once through a killed worker");
}
