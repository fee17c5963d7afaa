//! A three-node NATS cluster whose nodes are hosts of their own: each nats-server runs in a
//! network namespace that the test makes, joined to the others and to this machine's own
//! namespace (where the API, the trainer and the test run) through a bridge in a hub namespace.
//! Killing a node is losing a host; nothing leaves this machine. Needs root (`ip netns`).

use prl_local_stack::die_with_parent;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 3;

pub struct NatsCluster {
    /// Prefix of the namespaces and interfaces this cluster made (interface names are at most
    /// 15 bytes).
    tag: String,
    subnet: String,
    dir: PathBuf,
    nodes: Vec<Option<Child>>,
}

/// Runs `ip` with `args`, failing the test on an error.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NatsCluster {
    /// Makes the namespaces and starts a node in each, storing under `dir`. Call it from a thread
    /// that outlives the nodes (they die with it).
    pub fn start(dir: &Path) -> NatsCluster {
        let pid = std::process::id();
        let tag = format!("prl{}", pid % 10_000_000);
        let subnet = format!("10.213.{}", pid % 250);
        let cluster = NatsCluster {
            tag: tag.clone(),
            subnet: subnet.clone(),
            dir: dir.to_owned(),
            nodes: Vec::new(),
        };
        let hub = format!("{tag}-hub");
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        // This machine's side: an address on the cluster's network.
        let host_side = format!("{tag}h");
        ip(&[
            "link", "add", &host_side, "type", "veth", "peer", "name", "up0", "netns", &hub,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{subnet}.254/24"),
            "dev",
            &host_side,
        ]);
        ip(&["link", "set", &host_side, "up"]);
        ip(&["-n", &hub, "link", "set", "up0", "master", "br0", "up"]);
        for n in 1..=NODES {
            let ns = cluster.namespace(n);
            let port = format!("{tag}x{n}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &port, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{subnet}.{n}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        let mut cluster = cluster;
        cluster.nodes = (1..=NODES).map(|n| Some(cluster.spawn(n))).collect();
        for n in 1..=NODES {
            cluster.wait_for_port(n);
        }
        cluster
    }

    fn namespace(&self, n: usize) -> String {
        format!("{}-n{n}", self.tag)
    }

    fn address(&self, n: usize) -> String {
        format!("{}.{n}", self.subnet)
    }

    /// The client URLs of every node, as a client's seed list.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = (1..=NODES)
            .map(|n| format!("nats://{}:4222", self.address(n)))
            .collect();
        urls.join(",")
    }

    /// The node whose server name is `name` (`node2`: 2).
    pub fn node_named(&self, name: &str) -> usize {
        name.strip_prefix("node")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no node is named {name}"))
    }

    fn spawn(&self, n: usize) -> Child {
        let store = self.dir.join(format!("node{n}"));
        std::fs::create_dir_all(&store).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("node{n}.log"))).unwrap();
        let routes: Vec<String> = (1..=NODES)
            .filter(|&m| m != n)
            .map(|m| format!("nats://{}:6222", self.address(m)))
            .collect();
        let address = self.address(n);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(n), "nats-server", "-js"])
            .arg("-sd")
            .arg(&store)
            .args(["-n", &format!("node{n}"), "-a", &address, "-p", "4222"])
            .args(["--cluster_name", "prl-faults"])
            .args(["--cluster", &format!("nats://{address}:6222")])
            .args(["--routes", &routes.join(",")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // `ip netns exec` execs nats-server in place, so the signal reaches the server itself.
        die_with_parent(&mut cmd, libc::SIGKILL);
        cmd.spawn().expect("starting nats-server in its namespace")
    }

    fn wait_for_port(&mut self, n: usize) {
        let address = format!("{}:4222", self.address(n));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&address).is_err() {
            if let Some(status) = self.nodes[n - 1].as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join(format!("node{n}.log")));
                panic!("node {n} exited ({status}): {}", log.unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "node {n} never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until JetStream answers through the cluster (its meta group has a leader).
    pub async fn wait_until_ready(&self) {
        let client = prl_bus::connect(&self.urls()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        // The account's JetStream information, raw: it answers with an error until the meta
        // group has a leader.
        let ask = || async {
            let answer = client.request("$JS.API.INFO", "".into()).await?;
            let text = String::from_utf8_lossy(&answer.payload).into_owned();
            match text.contains("\"error\"") {
                true => Err(anyhow::anyhow!(text)),
                false => Ok(()),
            }
        };
        while let Err(e) = ask().await {
            if Instant::now() > deadline {
                let logs: Vec<String> = (1..=NODES)
                    .map(|n| {
                        std::fs::read_to_string(self.dir.join(format!("node{n}.log")))
                            .unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "the cluster's JetStream never came up: {e}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGKILL of node `n`'s server: the host is gone, whatever it was doing.
    pub fn kill_9(&mut self, n: usize) {
        let mut child = self.nodes[n - 1].take().expect("the node is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The veths go with their namespaces.
        for n in 1..=NODES {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(n)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}-hub", self.tag)])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}h", self.tag)])
            .stderr(Stdio::null())
            .status();
    }
}
