//! Real processes for the cluster's tests: the `weir` binary started as a coordinator and
//! workers on loopback (or each in its own network namespace), a client to talk to them, and
//! the faults a test can apply from outside (SIGKILL, partitions, connection resets).
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary under test: this build's `weir`, or `WEIR_BIN` (to run the tests against another
/// build, e.g. to show that a test fails without a fix).
pub fn weir_binary() -> String {
    std::env::var("WEIR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weir").to_string())
}

/// Child processes killed when the test ends, however it ends.
pub struct Processes(pub Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn weir(args: &[&str]) -> Output {
    Command::new(weir_binary()).args(args).output().expect("weir runs")
}

pub fn spawn(args: &[&str], log: &Path) -> Child {
    spawn_in(None, args, log)
}

/// `weir args` inside network namespace `namespace` (if any), its stderr to `log`.
pub fn spawn_in(namespace: Option<&str>, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    weir_command(namespace, args).stdout(Stdio::null()).stderr(log).spawn().expect("weir starts")
}

pub fn weir_command(namespace: Option<&str>, args: &[&str]) -> Command {
    match namespace {
        // `ip netns exec` enters the namespace and execs weir: the child's pid is weir's.
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, &weir_binary()]).args(args);
            command
        }
        None => {
            let mut command = Command::new(weir_binary());
            command.args(args);
            command
        }
    }
}

/// A network of namespaces: a switch namespace holding a bridge (and the client, at `.254`),
/// the coordinator's namespace (`.1`) and one per worker (`.10 + index`), each joined to the
/// bridge by a veth pair whose switch end the test can take down (a partition) or make drop
/// what it sends (a one-way partition: the process hears nothing).
pub struct Namespaces {
    prefix: String,
    members: Vec<String>,
}

pub const SUBNET: &str = "10.213.0";

impl Namespaces {
    /// Builds the network, or says why this machine cannot (not root, no iproute2).
    pub fn create(workers: usize) -> Result<Self, String> {
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

    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
        if !output.status.success() {
            return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(())
    }

    /// Namespaces left behind by test processes that died before cleaning up.
    pub fn remove_stale() {
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
    pub fn reset_connections(&self, role: &str) {
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
    pub fn partition(&self, host: usize, cut: bool) {
        let switch = self.name("switch");
        let link = format!("v{host}");
        self.ip(&["-n", &switch, "link", "set", &link, if cut { "down" } else { "up" }]).unwrap();
    }

    /// Drops every packet the bridge sends to `host` (it still sends), or stops dropping.
    pub fn deafen(&self, host: usize, deaf: bool) {
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

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub address: String,
    pub certs: PathBuf,
    pub processes: Processes,
    /// Each process in its own network namespace, when the cluster runs in them. Declared after
    /// `processes`, so that processes die before their namespaces go.
    pub namespaces: Option<Namespaces>,
    /// Extra flags of every coordinator started.
    pub coordinator_flags: Vec<String>,
}

impl Cluster {
    pub fn start(workers: usize) -> Self {
        Self::start_with(workers, None, &[])
    }

    /// A cluster whose coordinator runs with `coordinator_flags` besides the usual ones.
    pub fn start_with(workers: usize, namespaces: Option<Namespaces>, coordinator_flags: &[&str]) -> Self {
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
        let coordinator_flags = coordinator_flags.iter().map(|flag| flag.to_string()).collect();
        let mut cluster =
            Cluster { address, certs, processes: Processes(Vec::new()), root, namespaces, coordinator_flags };
        let coordinator = cluster.start_coordinator("coordinator.log");
        cluster.processes.0.push(coordinator);
        for index in 0..workers {
            cluster.add_worker(index);
        }
        cluster
    }

    /// The namespace of `role` (`coordinator`, `worker-N`, `switch`), if the cluster runs in them.
    pub fn namespace(&self, role: &str) -> Option<String> {
        self.namespaces.as_ref().map(|namespaces| namespaces.name(role))
    }

    pub fn start_coordinator(&mut self, log_name: &str) -> Child {
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
            ]
            .into_iter()
            .chain(self.coordinator_flags.iter().map(String::as_str))
            .collect::<Vec<_>>(),
            &self.root.path().join(log_name),
        )
    }

    pub fn add_worker(&mut self, index: usize) {
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

    pub fn client(&self, args: &[&str]) -> Output {
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

    pub fn wait_for_state(&self, job_id: &str, states: &[&str], timeout: Duration) -> String {
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

    pub fn logs(&self) -> String {
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

pub fn submit(cluster: &Cluster, output: &Path, events: u64, rate: Option<u64>) -> String {
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
