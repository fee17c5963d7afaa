//! The verl command prl generates for the paper's S1 and S2 recipes, against the arguments the
//! reference scripts give `main_ppo` (`tests/fixtures/verl/rl_exp_s{1,2}.args`): every setting of
//! theirs is there with the same value, except the paths and names each run has of its own; what
//! prl adds is listed here with its reason.

use prl_schema::spec::{ExperimentSpec, StageSpec};
use prl_trainer::verl::command::{RunFiles, overrides};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// The paper's RL stage as a prl spec: 256 prompts of 8 samples per step, updates on 128 prompts
/// (1024 samples), responses of 3,000 tokens, paths of 4,096, learning rate 1e-6, validation every
/// 2 steps, a checkpoint every 10.
fn paper_stage(reward: &str, clip_high: f64) -> StageSpec {
    let spec = ExperimentSpec::from_json(
        json!({
            "name": format!("parallel-r1-unseen-{reward}"), "model": "path:/models/parallel-sft-unseen",
            "stages": [{
                "kind": "rl", "name": "rl", "backend": "verl", "attention": "unseen",
                "dataset": "verl:/data/dapo/train.parquet", "reward": reward,
                "learning_rate": 1e-6, "steps": 300, "prompts_per_step": 256, "group_size": 8,
                "mini_batch_size": 1024, "clip_high": clip_high, "dynamic_sampling": false,
                "max_response_tokens": 3000, "max_path_tokens": 4096, "temperature": 1.0,
                "checkpoint_every": 10, "eval_every": 2, "eval_dataset": "verl:/data/apo/test.parquet",
                "verl": {}
            }]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    spec.stages.as_slice()[0].clone()
}

fn reference(name: &str) -> BTreeMap<String, String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/verl/{name}.args"));
    parse(
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned),
    )
}

fn parse(args: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in args {
        let (key, value) = arg.split_once('=').unwrap();
        assert!(
            out.insert(key.to_owned(), value.to_owned()).is_none(),
            "{key} set twice"
        );
    }
    out
}

/// Values verl reads the same: `1.0` and `1`.
fn same(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Set by both, to each run's own paths and names.
const PER_RUN: [&str; 9] = [
    "data.train_files",
    "data.val_files",
    "actor_rollout_ref.model.path",
    "trainer.logger",
    "trainer.project_name",
    "trainer.experiment_name",
    "trainer.validation_data_dir",
    "trainer.rollout_data_dir",
    "trainer.default_local_dir",
];

fn check(recipe: &str, reward: &str, clip_high: f64) {
    let StageSpec::Rl(stage) = paper_stage(reward, clip_high) else {
        unreachable!()
    };
    let files = RunFiles {
        dir: "/runs/job".into(),
    };
    let ours = parse(overrides(
        &stage,
        Path::new("/models/parallel-sft-unseen"),
        &files,
        "run-id",
    ));
    let theirs = reference(recipe);
    for (key, value) in &theirs {
        let Some(mine) = ours.get(key) else {
            panic!("{recipe}: prl does not set {key}={value}");
        };
        if !PER_RUN.contains(&key.as_str()) {
            assert!(
                same(mine, value),
                "{recipe}: {key} is {mine}, the reference's {value}"
            );
        }
    }
    // The per-run settings point at the job's directory and log to the file prl follows.
    assert_eq!(ours["data.train_files"], "['/runs/job/data/train.parquet']");
    assert_eq!(ours["data.val_files"], "['/runs/job/data/val.parquet']");
    assert_eq!(
        ours["actor_rollout_ref.model.path"],
        "/models/parallel-sft-unseen"
    );
    assert_eq!(ours["trainer.logger"], "[console,file]");
    assert_eq!(ours["trainer.rollout_data_dir"], "/runs/job/rollout-log");
    assert_eq!(
        ours["trainer.validation_data_dir"],
        "/runs/job/validation-log"
    );
    assert_eq!(ours["trainer.default_local_dir"], "/runs/job/checkpoints");
    // What prl sets beyond the reference: the stage's length (the reference stops by hand),
    // the Hugging Face weights in each checkpoint (so prl can evaluate them), and settings the
    // reference leaves at verl's defaults, written out with the values those defaults have.
    let added: BTreeMap<&str, &str> = ours
        .iter()
        .filter(|(k, _)| !theirs.contains_key(*k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut expected = BTreeMap::from([
        ("trainer.total_training_steps", "300"),
        (
            "actor_rollout_ref.actor.checkpoint.save_contents",
            "[model,optimizer,extra,hf_model]",
        ),
        ("actor_rollout_ref.rollout.temperature", "1"),
        ("actor_rollout_ref.actor.clip_ratio_low", "0.2"),
        ("actor_rollout_ref.actor.optim.weight_decay", "0.01"),
        ("actor_rollout_ref.actor.grad_clip", "1"),
    ]);
    if !theirs.contains_key("actor_rollout_ref.actor.clip_ratio_high") {
        expected.insert("actor_rollout_ref.actor.clip_ratio_high", "0.2");
    }
    assert_eq!(added, expected, "{recipe}");
}

#[test]
fn the_s1_recipe_is_the_reference_scripts_command() {
    check("rl_exp_s1", "s1", 0.2);
}

#[test]
fn the_s2_recipe_is_the_reference_scripts_command() {
    check("rl_exp_s2", "s2", 0.28);
}

#[test]
fn overrides_come_last_and_sequential_stages_have_no_agent_loop() {
    let StageSpec::Rl(mut stage) = paper_stage("s1", 0.2) else {
        unreachable!()
    };
    stage.mode = prl_schema::spec::RolloutMode::Sequential;
    let verl = stage.verl.as_mut().unwrap();
    verl.overrides = vec!["trainer.save_freq=50".to_owned().try_into().unwrap()];
    let files = RunFiles { dir: "/r".into() };
    let args = overrides(&stage, Path::new("/m"), &files, "x");
    assert_eq!(args.last().unwrap(), "trainer.save_freq=50");
    assert!(args.iter().all(|a| !a.contains(".agent.")), "{args:?}");
}
