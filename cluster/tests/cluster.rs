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
    spawn_in(None, args, log)
}

/// `weir args` inside network namespace `namespace` (if any), its stderr to `log`.
fn spawn_in(namespace: Option<&str>, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    weir_command(namespace, args).stdout(Stdio::null()).stderr(log).spawn().expect("weir starts")
}

fn weir_command(namespace: Option<&str>, args: &[&str]) -> Command {
    match namespace {
        // `ip netns exec` enters the namespace and execs weir: the child's pid is weir's.
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, WEIR]).args(args);
            command
        }
        None => {
            let mut command = Command::new(WEIR);
            command.args(args);
            command
        }
    }
}

/// A network of namespaces: a switch namespace holding a bridge (and the client, at `.254`),
/// the coordinator's namespace (`.1`) and one per worker (`.10 + index`), each joined to the
/// bridge by a veth pair whose switch end the test can take down (a partition) or make drop
/// what it sends (a one-way partition: the process hears nothing).
struct Namespaces {
    prefix: String,
    members: Vec<String>,
}

const SUBNET: &str = "10.213.0";

impl Namespaces {
    /// Builds the network, or says why this machine cannot (not root, no iproute2).
    fn create(workers: usize) -> Result<Self, String> {
        for tool in ["ip", "tc", "ss"] {
            Command::new(tool).arg("-V").output().map_err(|e| format!("{tool} (iproute2): {e}"))?;
        }
        Self::remove_stale();
        let prefix = format!("weir-soak-{}", std::process::id());
        let mut namespaces = Namespaces { prefix, members: Vec::new() };
        let switch = namespaces.name("switch");
        namespaces.ip(&["netns", "add", &switch])?;
        namespaces.members.push(switch.clone());
        namespaces.ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        namespaces.ip(&["-n", &switch, "addr", "add", &format!("{SUBNET}.254/24"), "dev", "br0"])?;
        namespaces.ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        namespaces.ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        let mut hosts = vec![("coordinator".to_string(), 1)];
        hosts.extend((0..workers).map(|index| (format!("worker-{index}"), 10 + index)));
        for (role, host) in hosts {
            let namespace = namespaces.name(&role);
            namespaces.ip(&["netns", "add", &namespace])?;
            namespaces.members.push(namespace.clone());
            let outer = format!("v{host}");
            namespaces.ip(&["-n", &switch, "link", "add", &outer, "type", "veth", "peer", "name", "eth0"])?;
            namespaces.ip(&["-n", &switch, "link", "set", "eth0", "netns", &namespace])?;
            namespaces.ip(&["-n", &switch, "link", "set", &outer, "master", "br0", "up"])?;
            namespaces.ip(&["-n", &namespace, "addr", "add", &format!("{SUBNET}.{host}/24"), "dev", "eth0"])?;
            namespaces.ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            namespaces.ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(namespaces)
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
        if !output.status.success() {
            return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(())
    }

    /// Namespaces left behind by test processes that died before cleaning up.
    fn remove_stale() {
        let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else { return };
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let Some(pid) = name.strip_prefix("weir-soak-").and_then(|rest| rest.split('-').next()) else { continue };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                // Processes of a test that was killed outright may still run in there.
                if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).output();
                    }
                }
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }

    /// Resets every TCP connection in `role`'s namespace (the kernel sends RSTs: `ss -K`), and
    /// checks that they are gone (a kernel without socket destruction ignores `ss -K`).
    fn reset_connections(&self, role: &str) {
        let namespace = self.name(role);
        let ss = |args: &[&str]| {
            let output =
                Command::new("ip").args(["netns", "exec", &namespace, "ss"]).args(args).output().expect("ss runs");
            assert!(output.status.success(), "ss {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            // Local and peer address of each socket (not its queue sizes, which change).
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            stdout
                .lines()
                .map(|line| line.split_whitespace().skip(2).take(2).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        };
        let before = ss(&["-Htn", "state", "established"]);
        ss(&["-K", "state", "established"]);
        let after = ss(&["-Htn", "state", "established"]);
        let survivors: Vec<_> = before.iter().filter(|socket| after.contains(socket)).collect();
        assert!(survivors.is_empty(), "`ss -K` left connections open (no kernel support?): {survivors:?}");
    }

    /// Cuts `host` off the bridge both ways, or reconnects it.
    fn partition(&self, host: usize, cut: bool) {
        let switch = self.name("switch");
        let link = format!("v{host}");
        self.ip(&["-n", &switch, "link", "set", &link, if cut { "down" } else { "up" }]).unwrap();
    }

    /// Drops every packet the bridge sends to `host` (it still sends), or stops dropping.
    fn deafen(&self, host: usize, deaf: bool) {
        let switch = self.name("switch");
        let link = format!("v{host}");
        // A FIFO that holds nothing drops every packet (netem is not always in the kernel).
        let args: Vec<&str> = if deaf {
            vec!["-n", &switch, "qdisc", "add", "dev", &link, "root", "pfifo", "limit", "0"]
        } else {
            vec!["-n", &switch, "qdisc", "del", "dev", &link, "root"]
        };
        let output = Command::new("tc").args(&args).output().expect("tc runs");
        assert!(output.status.success(), "tc {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in self.members.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
    }
}

struct Cluster {
    root: tempfile::TempDir,
    address: String,
    certs: PathBuf,
    processes: Processes,
    /// Each process in its own network namespace, when the cluster runs in them. Declared after
    /// `processes`, so that processes die before their namespaces go.
    namespaces: Option<Namespaces>,
}

impl Cluster {
    fn start(workers: usize) -> Self {
        Self::start_with(workers, None)
    }

    fn start_with(workers: usize, namespaces: Option<Namespaces>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let certs = root.path().join("certs");
        let (address, hosts) = match namespaces {
            Some(_) => {
                let hosts: Vec<String> =
                    std::iter::once(1).chain(10..10 + workers).map(|host| format!("{SUBNET}.{host}")).collect();
                (format!("{SUBNET}.1:7400"), hosts.join(","))
            }
            None => (format!("127.0.0.1:{}", free_port()), "localhost,127.0.0.1".to_string()),
        };
        assert!(weir(&["certs", "init", certs.to_str().unwrap(), "--hosts", &hosts]).status.success());
        let mut cluster = Cluster { address, certs, processes: Processes(Vec::new()), root, namespaces };
        let coordinator = cluster.start_coordinator("coordinator.log");
        cluster.processes.0.push(coordinator);
        for index in 0..workers {
            cluster.add_worker(index);
        }
        cluster
    }

    /// The namespace of `role` (`coordinator`, `worker-N`, `switch`), if the cluster runs in them.
    fn namespace(&self, role: &str) -> Option<String> {
        self.namespaces.as_ref().map(|namespaces| namespaces.name(role))
    }

    fn start_coordinator(&mut self, log_name: &str) -> Child {
        let checkpoints = self.root.path().join("checkpoints");
        spawn_in(
            self.namespace("coordinator").as_deref(),
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
                "--restarts",
                "20",
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
        let role = format!("worker-{index}");
        let listen = match self.namespaces {
            Some(_) => format!("{SUBNET}.{}:7500", 10 + index),
            None => "127.0.0.1:0".to_string(),
        };
        let child = spawn_in(
            self.namespace(&role).as_deref(),
            &[
                "worker",
                "--coordinator",
                &self.address,
                "--slots",
                "2",
                "--listen",
                &listen,
                "--certs",
                self.certs.to_str().unwrap(),
            ],
            &log,
        );
        self.processes.0.push(child);
    }

    fn client(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--coordinator", &self.address, "--certs", self.certs.to_str().unwrap()]);
        let namespace = self.namespace("switch");
        let run = || weir_command(namespace.as_deref(), &all).output().expect("weir runs");
        // The coordinator may still be starting.
        for _ in 0..50 {
            let output = run();
            if output.status.success() || !String::from_utf8_lossy(&output.stderr).contains("cannot reach") {
                return output;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run()
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
    let mut cluster = Cluster::start_with(3, Some(namespaces));
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
