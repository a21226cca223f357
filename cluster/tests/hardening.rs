//! Faults a review found the cluster could not survive, applied to real processes on loopback.
//!
//! Method: each test starts `weir coordinator` and workers as processes (as `cluster.rs` does)
//! and applies one fault from outside: it destroys one worker-to-worker data connection with
//! `ss -K` (a kernel reset of that one socket, both processes alive), starts a worker holding the
//! client's certificate, runs with a heartbeat timeout beyond the workers' former fixed limit,
//! or cancels a job, submits it again and restarts the coordinator. Each then checks what the
//! cluster promises: the job finishes with exactly the sequential reference's output, or the
//! impostor is refused with its certificate's subject in the log. `WEIR_BIN` runs the same tests
//! against another build of `weir` (to show that they fail without the fixes).
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::processes::*;
use common::*;

/// The data-plane port of every worker, from the workers' logs.
fn data_ports(cluster: &Cluster) -> Vec<u16> {
    let mut ports: Vec<u16> = cluster
        .logs()
        .lines()
        .filter_map(|line| line.split("worker: data plane on 127.0.0.1:").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Established TCP connections to `port` (local and peer address of each).
fn connections_to(port: u16) -> Vec<String> {
    let output = Command::new("ss").args(["-Htn", "state", "established", "dport", "=", &format!(":{port}")]).output();
    let output = output.expect("ss (iproute2) runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().skip(2).take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_destroyed_data_connection_restarts_the_job_exactly_once() {
    let cluster = Cluster::start(2);
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, 3_000_000, Some(1_000_000));
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1200));
    let ports = data_ports(&cluster);
    assert_eq!(ports.len(), 2, "two workers' data ports in the logs:\n{}", cluster.logs());
    // Parallelism 4 over two workers: each worker has one data connection to the other.
    let target = ports[0];
    let before = connections_to(target);
    assert_eq!(before.len(), 1, "one data connection into worker port {target}: {before:?}");
    let killed = Command::new("ss").args(["-K", "dst", "127.0.0.1", "dport", "=", &format!(":{target}")]).output();
    assert!(killed.expect("ss runs").status.success());
    let survivors: Vec<String> = connections_to(target).into_iter().filter(|c| before.contains(c)).collect();
    assert!(survivors.is_empty(), "`ss -K` left the connection open (no kernel support?): {survivors:?}");

    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(180));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    assert!(!status.contains("restarts:        0"), "the broken link must restart the job:\n{status}");
    let coordinator = std::fs::read_to_string(cluster.root.path().join("coordinator.log")).unwrap();
    assert!(
        coordinator.contains("data connection from worker"),
        "the restart names the connection and both workers:\n{coordinator}"
    );
    assert_exactly_once(&generated_job(3_000_000, 9, &output, 4));
}

/// A certificate directory whose `role` files are in fact `actual`'s (an impostor's).
fn impostor_certs(cluster: &Cluster, role: &str, actual: &str) -> std::path::PathBuf {
    let dir = cluster.root.path().join(format!("{role}-holding-{actual}-certs"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(cluster.certs.join("ca.pem"), dir.join("ca.pem")).unwrap();
    std::fs::copy(cluster.certs.join(format!("{actual}.pem")), dir.join(format!("{role}.pem"))).unwrap();
    std::fs::copy(cluster.certs.join(format!("{actual}.key")), dir.join(format!("{role}.key"))).unwrap();
    dir
}

#[test]
fn a_worker_holding_the_client_certificate_is_refused() {
    let cluster = Cluster::start(0);
    assert!(cluster.client(&["job", "list"]).status.success(), "the coordinator is up:\n{}", cluster.logs());
    let rogue = impostor_certs(&cluster, "worker", "client");
    let log = cluster.root.path().join("rogue-worker.log");
    let mut worker =
        spawn(&["worker", "--coordinator", &cluster.address, "--certs", rogue.to_str().unwrap(), "--slots", "1"], &log);
    // The refusal is final: the worker stops with the coordinator's reason (polled, not timed).
    let mut exit = None;
    for _ in 0..300 {
        exit = worker.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = worker.kill();
    let worker_log = std::fs::read_to_string(&log).unwrap();
    let exit = exit.unwrap_or_else(|| panic!("a refused worker must stop, not retry forever:\n{worker_log}"));
    assert!(!exit.success());
    assert!(worker_log.contains("refused") && worker_log.contains("role client"), "{worker_log}");
    let coordinator = std::fs::read_to_string(cluster.root.path().join("coordinator.log")).unwrap();
    assert!(
        coordinator.contains("refused connection") && coordinator.contains("CN=weir-client"),
        "the refusal is logged with the peer's certificate subject:\n{coordinator}"
    );
    assert!(!coordinator.contains("registered"), "a client certificate must not register as a worker:\n{coordinator}");

    // And the other way round: a worker's certificate cannot submit, list or cancel jobs.
    let impostor = impostor_certs(&cluster, "client", "worker");
    let listed = weir(&["job", "list", "--coordinator", &cluster.address, "--certs", impostor.to_str().unwrap()]);
    assert!(!listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stderr).contains("role worker"), "{listed:?}");
}

#[test]
fn certificates_carry_roles_and_keys_stay_private() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(weir(&["certs", "init", certs.to_str().unwrap()]).status.success());
    assert!(!certs.join("ca.key").exists(), "the CA's key is kept apart from what nodes load");
    for key in ["ca/ca.key", "coordinator.key", "worker.key", "client.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(certs.join(key)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{key} must be readable by its owner only");
    }
    let again = weir(&["certs", "init", certs.to_str().unwrap()]);
    assert!(!again.status.success(), "existing material is never overwritten");
}

#[test]
fn a_heartbeat_timeout_beyond_the_old_fixed_limit_keeps_workers_registered() {
    // Workers used to give up on a coordinator silent for 4 s while it pinged every quarter of
    // its timeout: with any timeout above 16 s they re-registered forever whenever nothing else
    // was said — an idle cluster, or a job whose checkpoints are further apart than that.
    let cluster = Cluster::start_with(2, None, &["--heartbeat-timeout", "20s"]);
    assert!(cluster.client(&["job", "list"]).status.success(), "the coordinator is up");
    std::thread::sleep(Duration::from_secs(9)); // idle: only keepalives flow
    let output = cluster.root.path().join("out");
    let output_arg = output.to_str().unwrap();
    let submitted = cluster.client(&[
        "job",
        "submit",
        "bids",
        "--output",
        output_arg,
        "--events",
        "1000000",
        "--seed",
        "9",
        "--parallelism",
        "4",
        "--rate",
        "100000",
        "--checkpoint-interval",
        "6s",
    ]);
    assert!(submitted.status.success(), "{submitted:?}\n{}", cluster.logs());
    let job_id = String::from_utf8_lossy(&submitted.stdout).trim().to_string();
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(120));
    assert!(status.contains("Finished") && status.contains("restarts:        0"), "{status}\n{}", cluster.logs());
    let registrations = cluster.logs().matches("registered with").count();
    assert_eq!(registrations, 2, "each worker registers once:\n{}", cluster.logs());
    assert_exactly_once(&generated_job(1_000_000, 9, &output, 4));
}

#[test]
fn a_cancelled_job_submitted_again_resumes_after_a_coordinator_restart() {
    let mut cluster = Cluster::start(2);
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, 3_000_000, Some(1_000_000));
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    assert!(cluster.client(&["job", "cancel", &job_id]).status.success());
    cluster.wait_for_state(&job_id, &["Cancelled"], Duration::from_secs(60));
    assert_eq!(submit(&cluster, &output, 3_000_000, Some(1_000_000)), job_id, "the same job, submitted again");
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let coordinator = &mut cluster.processes.0[0];
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let replacement = cluster.start_coordinator("coordinator-2.log");
    cluster.processes.0.push(replacement);
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed", "Cancelled"], Duration::from_secs(180));
    assert!(
        status.contains("Finished"),
        "a job submitted again after a cancel is resumed:\n{status}\n{}",
        cluster.logs()
    );
    assert_exactly_once(&generated_job(3_000_000, 9, &output, 4));
}

#[test]
fn two_identical_submissions_at_once_make_one_job() {
    let cluster = Cluster::start(2);
    let output = cluster.root.path().join("out");
    let submit_args = |output: &Path| {
        let output = output.to_str().unwrap().to_string();
        let mut args: Vec<String> = ["job", "submit", "bids", "--output", &output, "--events", "600000"]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(["--parallelism", "4", "--coordinator", &cluster.address, "--certs"].map(String::from));
        args.push(cluster.certs.to_str().unwrap().to_string());
        args
    };
    assert!(cluster.client(&["job", "list"]).status.success(), "the coordinator is up");
    let racers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(weir_binary())
                .args(submit_args(&output))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = racers.into_iter().map(|racer| racer.wait_with_output().unwrap()).collect();
    let accepted: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(accepted.len(), 1, "exactly one submission creates the job: {outputs:?}");
    for refused in outputs.iter().filter(|o| !o.status.success()) {
        assert!(String::from_utf8_lossy(&refused.stderr).contains("already running"), "{refused:?}");
    }
    let job_id = String::from_utf8_lossy(&accepted[0].stdout).trim().to_string();
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(120));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    let spec = generated_job(600_000, 0, &output, 4);
    assert_exactly_once(&spec);
}
