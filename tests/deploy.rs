//! The cluster deployment in `deploy/cluster/`, checked without a cluster: nats-server accepts
//! its configuration for each node, every unit's command line parses with the real CLI of the
//! program it starts, and every variable the environment files set is one that program reads.

use clap::{CommandFactory, Parser};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster")
}

/// KEY=VALUE lines of an example environment file.
fn env_file(name: &str) -> BTreeMap<String, String> {
    let path = cluster_dir()
        .join("env")
        .join(format!("{name}.env.example"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{name}: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The `[Section]` → key → value of a systemd unit.
fn unit(name: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let path = cluster_dir().join("systemd").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(section.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: {line}"));
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("{name}: {line} before a section"));
        sections
            .entry(section)
            .or_default()
            .insert(key.to_owned(), value.to_owned());
    }
    for section in ["Unit", "Service", "Install"] {
        assert!(sections.contains_key(section), "{name} has no [{section}]");
    }
    sections
}

/// A unit's `ExecStart`, as systemd would run it: specifiers filled in (`%i` = 0, `%H` = a host
/// name) and `$VARIABLES` from its environment file split into words.
fn exec_start(name: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let unit = unit(name);
    let service = &unit["Service"];
    let file = service["EnvironmentFile"].clone();
    let example = Path::new(&file).file_stem().unwrap().to_str().unwrap();
    assert_eq!(env, &env_file(example), "{name} reads {file}");
    service["ExecStart"]
        .split_whitespace()
        .flat_map(|word| match word.strip_prefix('$') {
            Some(var) => env
                .get(var)
                .unwrap_or_else(|| panic!("{name}: ${var} is not in {file}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            None => vec![word.replace("%i", "0").replace("%H", "gpu-node-1")],
        })
        .collect()
}

#[test]
fn nats_server_accepts_the_configuration_of_every_node() {
    let env = env_file("nats");
    let args = exec_start("nats-server.service", &env);
    assert_eq!(args[..2], ["/usr/sbin/nats-server", "-c"]);
    assert_eq!(args[2], "/etc/prl/nats.conf");
    for node in ["nats-1", "nats-2", "nats-3"] {
        let out = Command::new("nats-server")
            .args(["-t", "-c"])
            .arg(cluster_dir().join("nats.conf"))
            .envs(&env)
            .env("PRL_NATS_NODE", node)
            .output()
            .expect("nats-server runs");
        assert!(
            out.status.success(),
            "{node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The secrets come from the environment: without them the configuration is refused.
    let out = Command::new("nats-server")
        .args(["-t", "-c"])
        .arg(cluster_dir().join("nats.conf"))
        .env("PRL_NATS_NODE", "nats-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Each route names one of the three nodes, with the route user's password.
    let password = &env["PRL_NATS_ROUTE_PASSWORD"];
    for n in 1..=3 {
        assert_eq!(
            env[&format!("PRL_NATS_ROUTE_{n}")],
            format!("nats-route://route:{password}@nats-{n}:6222")
        );
    }
}

#[test]
fn the_api_unit_starts_prl_serve_with_settings_it_knows() {
    let env = env_file("api");
    let args = exec_start("prl-api.service", &env);
    if let Err(e) = prl_cli::Cli::try_parse_from(&args) {
        panic!("{args:?}: {e}");
    }
    assert_eq!(args[1..], ["serve"]);
    // Every PRL_A__B variable is a setting (a path in the settings' schema); AWS_* are read by
    // the store's S3 client.
    let schema = serde_json::to_value(schemars::schema_for!(prl_api::settings::Settings)).unwrap();
    for key in env.keys().filter(|key| !key.starts_with("AWS_")) {
        let path: Vec<String> = key
            .strip_prefix("PRL_")
            .unwrap_or_else(|| panic!("{key} is not a prl setting"))
            .split("__")
            .map(str::to_lowercase)
            .collect();
        let mut node = &schema;
        for part in &path {
            node = resolve(&schema, node);
            node = node["properties"]
                .get(part)
                .unwrap_or_else(|| panic!("{key}: no setting {part} in {}", path.join(".")));
        }
    }
    assert_eq!(env["PRL_NATS__REPLICAS"], "3");
    assert_eq!(
        env["PRL_NATS__URL"].split(',').count(),
        3,
        "seeds of all three nodes"
    );
    // Uploads go to the store the daemons read.
    let trainer = env_file("trainer");
    for key in ["PRL_STORE__URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"] {
        assert_eq!(env[key], trainer[key], "{key}");
    }
}

/// `node`, or what its `$ref` points to.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &schema["$defs"][name]
        }
        None => node,
    }
}

#[test]
fn the_trainer_unit_starts_one_daemon_per_gpu_with_flags_it_knows() {
    let env = env_file("trainer");
    let args = exec_start("prl-trainer@.service", &env);
    let parsed =
        prl_trainer::cli::Args::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(parsed.device, tch::Device::Cuda(0));
    assert_eq!(parsed.worker_id.as_deref(), Some("gpu-node-1-gpu0"));
    assert_eq!(parsed.data_dir, Path::new("/var/lib/prl/trainer-0"));
    assert_eq!(
        parsed.labels,
        [("gpu".into(), "h100".into()), ("zone".into(), "a".into())]
    );
    // Every variable is one the daemon, its store's S3 client or the unit itself reads.
    let command = prl_trainer::cli::Args::command();
    let read: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    for key in env.keys() {
        let known = read.contains(key) || key.starts_with("AWS_") || key == "PRL_NODE_LABELS";
        assert!(known, "{key} is read by nothing");
    }
    assert!(env["PRL_STORE__URL"].starts_with("s3://"));
    prl_artifacts::ArtifactStore::open(&env["PRL_STORE__URL"], &Default::default()).unwrap();
}

#[test]
fn the_verl_bridge_unit_starts_a_bridge_to_the_local_ray_head() {
    let env = env_file("trainer");
    let args = exec_start("prl-verl-bridge.service", &env);
    let parsed =
        prl_trainer::cli::Args::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(parsed.ray_address.as_deref(), Some("http://127.0.0.1:8265"));
    assert_eq!(parsed.worker_id.as_deref(), Some("gpu-node-1-verl"));
    assert_eq!(
        parsed.verl_run_dir.as_deref(),
        Some(Path::new("/var/lib/prl/verl-runs"))
    );
    assert_eq!(parsed.verl_command, "python3 -m verl.trainer.main_ppo");
}
