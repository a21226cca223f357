//! Multi-process cluster tests: a coordinator and workers as real processes on loopback, all
//! traffic over mutual TLS.
//!
//! Method: `weir certs init` makes the TLS material; `weir coordinator` and two `weir worker`
//! processes start; `weir job submit bids` runs the main job at 4 slots spread over both
//! workers (so the exchange crosses processes). The committed output is compared with the
//! sequential reference. One test kills a worker with SIGKILL mid-run and starts a
//! replacement: the job must restart from its latest checkpoint and commit exactly the
//! reference output. Another presents certificates from a foreign CA and must be refused.
//!
//! Where the machine allows (root, `ip` from iproute2), one soak runs each process in its own
//! network namespace, joined by a bridge, so that it can also cut processes off the network.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

mod common;

use std::time::Duration;

use common::processes::*;
use common::*;

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

/// The soak in network namespaces: each process in its own namespace, so that besides SIGKILLs
/// the test can partition a worker (both ways, or one way: it hears nothing), cut the
/// coordinator off and reset a worker's connections (kernel RSTs), while the main job runs;
/// then checks exactly-once. Where the machine has no
/// network namespaces (not root, no iproute2) it says so and runs nothing. Short by default
/// (CI); `chaos/soak.sh --netns` runs it long (`WEIR_SOAK_FAULTS`, `WEIR_SOAK_EVENTS`).
#[test]
fn soak_partitions_and_sigkills_in_network_namespaces() {
    let faults: usize = std::env::var("WEIR_SOAK_FAULTS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let events: u64 = std::env::var("WEIR_SOAK_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(12_000_000);
    let namespaces = match Namespaces::create(3) {
        Ok(namespaces) => namespaces,
        Err(reason) => {
            eprintln!("soak in network namespaces not run: this machine cannot create them ({reason})");
            return;
        }
    };
    let mut cluster = Cluster::start_with(3, Some(namespaces), &[]);
    let mut coordinator_at = 0;
    let mut worker_at: Vec<usize> = vec![1, 2, 3];
    let output = cluster.root.path().join("out");
    let job_id = submit(&cluster, &output, events, Some(1_000_000));
    cluster.wait_for_state(&job_id, &["Running"], Duration::from_secs(60));
    for fault in 0..faults {
        std::thread::sleep(Duration::from_millis(300 + (fault as u64 * 373) % 700));
        let status = String::from_utf8_lossy(&cluster.client(&["job", "status", &job_id]).stdout).into_owned();
        if status.contains("Finished") {
            eprintln!("soak: the job finished after {fault} faults; raise WEIR_SOAK_EVENTS for more");
            break;
        }
        // Six kinds of fault in turn; from one round to the next, each hits another worker and
        // swaps a long cut for a short one.
        let round = fault / 6;
        let worker = (fault + round) % worker_at.len();
        let host = 10 + worker;
        let namespaces = cluster.namespaces.as_ref().expect("namespaces");
        // Longer than the heartbeat timeout (3 s: the worker is lost), or shorter (TCP
        // retransmits across it).
        let cut = Duration::from_millis(if (fault + round) % 2 == 0 { 4_000 } else { 1_500 });
        match fault % 6 {
            0 => {
                eprintln!("soak: fault {fault}: partition worker {worker} for {cut:?}");
                namespaces.partition(host, true);
                std::thread::sleep(cut);
                namespaces.partition(host, false);
            }
            1 => {
                eprintln!("soak: fault {fault}: worker {worker} hears nothing for {cut:?}");
                namespaces.deafen(host, true);
                std::thread::sleep(cut);
                namespaces.deafen(host, false);
            }
            2 => {
                eprintln!("soak: fault {fault}: partition the coordinator for {cut:?}");
                namespaces.partition(1, true);
                std::thread::sleep(cut);
                namespaces.partition(1, false);
            }
            3 => {
                eprintln!("soak: fault {fault}: reset every connection of worker {worker}");
                namespaces.reset_connections(&format!("worker-{worker}"));
            }
            4 => {
                eprintln!("soak: fault {fault}: SIGKILL worker {worker}");
                let victim = &mut cluster.processes.0[worker_at[worker]];
                victim.kill().unwrap();
                victim.wait().unwrap();
                cluster.add_worker(worker);
                worker_at[worker] = cluster.processes.0.len() - 1;
            }
            _ => {
                eprintln!("soak: fault {fault}: SIGKILL the coordinator");
                let victim = &mut cluster.processes.0[coordinator_at];
                victim.kill().unwrap();
                victim.wait().unwrap();
                let replacement = cluster.start_coordinator(&format!("coordinator-{fault}.log"));
                cluster.processes.0.push(replacement);
                coordinator_at = cluster.processes.0.len() - 1;
            }
        }
    }
    let status = cluster.wait_for_state(&job_id, &["Finished", "Failed"], Duration::from_secs(600));
    assert!(status.contains("Finished"), "{status}\n{}", cluster.logs());
    let logs = cluster.logs();
    let (lost, restarts) = (logs.matches(" lost (").count(), logs.matches(" restarting in ").count());
    eprintln!("soak: finished after {lost} worker losses and {restarts} job restarts\n{status}");
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
