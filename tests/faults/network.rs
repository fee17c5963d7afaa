//! Hosts of their own on this machine: network namespaces that the test makes, joined by a
//! bridge in a hub namespace, with this machine's own namespace on the bridge too (at `.254`,
//! where the test, the API and whatever it starts directly run). A process started on a host
//! reaches the others only through the bridge; killing it is losing that host's work. Nothing
//! leaves this machine. Needs root (`ip netns`).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Network {
    /// Prefix of the namespaces and interfaces it made (interface names are at most 15 bytes).
    tag: String,
    subnet: String,
    hosts: usize,
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

impl Network {
    /// Makes `hosts` hosts, numbered from 1.
    pub fn new(hosts: usize) -> Network {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("p{}n{made}", pid % 1_000_000);
        let subnet = format!("10.213.{}", (pid + 97 * made) % 250);
        let network = Network {
            tag: tag.clone(),
            subnet: subnet.clone(),
            hosts,
        };
        let hub = format!("{tag}-hub");
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        let own_side = format!("{tag}h");
        ip(&[
            "link", "add", &own_side, "type", "veth", "peer", "name", "up0", "netns", &hub,
        ]);
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &own_side]);
        ip(&["link", "set", &own_side, "up"]);
        ip(&["-n", &hub, "link", "set", "up0", "master", "br0", "up"]);
        for n in 1..=hosts {
            let ns = network.namespace(n);
            let port = format!("{tag}x{n}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &port, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("{}/24", network.address(n));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        network
    }

    pub fn namespace(&self, n: usize) -> String {
        format!("{}-{n}", self.tag)
    }

    /// Host `n`'s address.
    pub fn address(&self, n: usize) -> String {
        format!("{}.{n}", self.subnet)
    }

    /// This machine's own address on the network.
    pub fn own_address(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// `program` to be run on host `n` (`ip netns exec` execs it in place, so a signal sent to
    /// the child reaches the program itself).
    pub fn command_on(&self, n: usize, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(n)])
            .arg(program);
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // The veths go with their namespaces.
        for n in 1..=self.hosts {
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
