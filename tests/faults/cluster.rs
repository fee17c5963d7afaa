//! A three-node NATS cluster whose nodes are hosts of their own (`network.rs`): killing a node is
//! losing a host. The API, the trainer and the test run in this machine's own namespace.

use crate::network::Network;
use prl_local_stack::die_with_parent;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 3;

pub struct NatsCluster {
    network: Network,
    dir: PathBuf,
    nodes: Vec<Option<Child>>,
}

impl NatsCluster {
    /// Makes the hosts and starts a node on each, storing under `dir`. Call it from a thread
    /// that outlives the nodes (they die with it).
    pub fn start(dir: &Path) -> NatsCluster {
        let mut cluster = NatsCluster {
            network: Network::new(NODES),
            dir: dir.to_owned(),
            nodes: Vec::new(),
        };
        cluster.nodes = (1..=NODES).map(|n| Some(cluster.spawn(n))).collect();
        for n in 1..=NODES {
            cluster.wait_for_port(n);
        }
        cluster
    }

    fn address(&self, n: usize) -> String {
        self.network.address(n)
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
        let mut cmd = self.network.command_on(n, Path::new("nats-server"));
        cmd.arg("-js")
            .arg("-sd")
            .arg(&store)
            .args(["-n", &format!("node{n}"), "-a", &address, "-p", "4222"])
            .args(["--cluster_name", "prl-faults"])
            .args(["--cluster", &format!("nats://{address}:6222")])
            .args(["--routes", &routes.join(",")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
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
    }
}
