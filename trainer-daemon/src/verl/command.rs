//! A verl stage as verl's command line: `python3 -m verl.trainer.main_ppo` with Hydra overrides
//! in the Parallel-R1 reference scripts' order and with their values where prl's spec has no say,
//! plus what prl needs to follow the run (its dump directories and the `file` logger). Pure:
//! `tests/verl_command.rs` checks it against the reference's S1 and S2 scripts.

use prl_schema::spec::{RewardSchedule, RlStage, RolloutMode, VerlSettings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a verl job reads and writes, as the Ray job's driver sees them.
#[derive(Clone, Debug)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn train_file(&self) -> PathBuf {
        self.dir.join("data/train.parquet")
    }
    pub fn val_file(&self) -> PathBuf {
        self.dir.join("data/val.parquet")
    }
    pub fn rollouts(&self) -> PathBuf {
        self.dir.join("rollout-log")
    }
    pub fn validation(&self) -> PathBuf {
        self.dir.join("validation-log")
    }
    /// The `file` logger's JSONL (`VERL_FILE_LOGGER_PATH`).
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// verl's `trainer.default_local_dir`: `global_step_N/` and `latest_checkpointed_iteration.txt`.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
}

/// The reward function the reference's `default_compute_score` routes a row to, by its
/// `extra_info.reward_method`.
pub fn reward_method(schedule: RewardSchedule) -> &'static str {
    match schedule {
        RewardSchedule::Accuracy | RewardSchedule::S1 => "accuracy_reward",
        RewardSchedule::S2 => "accuracy_parallel_interv_reward",
        RewardSchedule::ParallelStrict => "format_times_accuracy_times_parallel_reward",
    }
}

/// The Hydra overrides of `main_ppo` for `stage`, starting from the Hugging Face directory
/// `model_dir`, named `experiment` in verl's logs.
pub fn overrides(
    stage: &RlStage,
    model_dir: &Path,
    files: &RunFiles,
    experiment: &str,
) -> Vec<String> {
    let defaults = VerlSettings::default();
    let verl = stage.verl.as_deref().unwrap_or(&defaults);
    let max_tokens = verl.max_prompt_length.get() + stage.max_response_tokens.get();
    let dynamic = false; // main_ppo has none; the spec refuses dynamic_sampling with verl
    let mut o: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| o.push((key.to_owned(), value));
    let path = |p: &Path| p.display().to_string();
    let list = |p: &Path| format!("['{}']", p.display());
    let py = |b: bool| if b { "True" } else { "False" }.to_owned();
    set("algorithm.adv_estimator", "grpo".into());
    set("algorithm.use_kl_in_reward", py(false));
    set("algorithm.gamma", "1".into());
    set("algorithm.lam", "1".into());
    set("data.train_files", list(&files.train_file()));
    set("data.val_files", list(&files.val_file()));
    set(
        "data.train_batch_size",
        stage.prompts_per_step.get().to_string(),
    );
    set("data.return_raw_chat", py(true));
    set(
        "data.max_prompt_length",
        verl.max_prompt_length.get().to_string(),
    );
    set(
        "data.max_response_length",
        stage.max_response_tokens.get().to_string(),
    );
    set("data.filter_overlong_prompts", py(false));
    set("data.truncation", "left".into());
    set("actor_rollout_ref.actor.use_dynamic_bsz", py(dynamic));
    set(
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz",
        py(dynamic),
    );
    set(
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz",
        py(dynamic),
    );
    set(
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
        max_tokens.to_string(),
    );
    set(
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
        max_tokens.to_string(),
    );
    set(
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
        max_tokens.to_string(),
    );
    set("actor_rollout_ref.model.path", path(model_dir));
    set(
        "actor_rollout_ref.actor.optim.lr",
        number(stage.learning_rate.get()),
    );
    if stage.warmup_steps > 0 {
        set(
            "actor_rollout_ref.actor.optim.lr_warmup_steps",
            stage.warmup_steps.to_string(),
        );
    }
    set(
        "actor_rollout_ref.actor.optim.weight_decay",
        number(stage.weight_decay.get()),
    );
    set(
        "actor_rollout_ref.actor.grad_clip",
        number(stage.grad_clip.get()),
    );
    set(
        "actor_rollout_ref.actor.clip_ratio_low",
        number(stage.clip_low.get()),
    );
    set(
        "actor_rollout_ref.actor.clip_ratio_high",
        number(stage.clip_high.get()),
    );
    set("actor_rollout_ref.model.use_remove_padding", py(false));
    // verl's mini-batches count prompts; prl's count samples (a multiple of the group size).
    let mini_batch = stage.mini_batch_size.get() / u64::from(stage.group_size.get());
    set(
        "actor_rollout_ref.actor.ppo_mini_batch_size",
        mini_batch.to_string(),
    );
    set(
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
        verl.micro_batch_size_per_gpu.get().to_string(),
    );
    set(
        "actor_rollout_ref.actor.fsdp_config.param_offload",
        py(verl.offload),
    );
    set(
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload",
        py(verl.offload),
    );
    let kl = stage.kl_coef.get();
    set("actor_rollout_ref.actor.use_kl_loss", py(kl > 0.0));
    if kl > 0.0 {
        set("actor_rollout_ref.actor.kl_loss_coef", number(kl));
        set("actor_rollout_ref.actor.kl_loss_type", "low_var_kl".into());
    }
    set(
        "actor_rollout_ref.model.enable_gradient_checkpointing",
        py(verl.gradient_checkpointing),
    );
    set(
        "actor_rollout_ref.rollout.n",
        stage.group_size.get().to_string(),
    );
    set(
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        verl.log_prob_micro_batch_size_per_gpu.get().to_string(),
    );
    set(
        "actor_rollout_ref.rollout.tensor_model_parallel_size",
        verl.tensor_parallel_size.get().to_string(),
    );
    // The parallel-thinking agent loop of the reference's verl: it opens at most
    // `max_blocks` blocks of `paths` paths, each of at most `max_path_tokens`.
    if stage.mode == RolloutMode::Parallel {
        set(
            "actor_rollout_ref.rollout.agent.max_path_response_length",
            stage.max_path_tokens.get().to_string(),
        );
        set(
            "actor_rollout_ref.rollout.agent.num_workers",
            verl.agent_workers.get().to_string(),
        );
        set(
            "actor_rollout_ref.rollout.agent.max_iterations_for_parallel_thinking",
            stage.max_blocks.to_string(),
        );
        set(
            "actor_rollout_ref.rollout.agent.num_paths",
            stage.paths.get().to_string(),
        );
    }
    set(
        "actor_rollout_ref.rollout.name",
        verl.rollout_engine.as_str().into(),
    );
    set("actor_rollout_ref.rollout.mode", "async".into());
    set(
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        number(verl.gpu_memory_utilization.get()),
    );
    set(
        "actor_rollout_ref.rollout.temperature",
        number(stage.temperature.get()),
    );
    set("actor_rollout_ref.rollout.top_p", number(stage.top_p.get()));
    set("actor_rollout_ref.rollout.top_k", "-1".into());
    set(
        "actor_rollout_ref.rollout.val_kwargs.temperature",
        number(stage.temperature.get()),
    );
    set(
        "actor_rollout_ref.rollout.val_kwargs.top_p",
        number(stage.top_p.get()),
    );
    set("actor_rollout_ref.rollout.val_kwargs.top_k", "-1".into());
    set("actor_rollout_ref.rollout.val_kwargs.do_sample", py(true));
    set(
        "actor_rollout_ref.rollout.val_kwargs.n",
        stage.eval_k.get().to_string(),
    );
    // The Hugging Face weights too, so that each checkpoint prl records can be loaded as it is.
    set(
        "actor_rollout_ref.actor.checkpoint.save_contents",
        "[model,optimizer,extra,hf_model]".into(),
    );
    set("trainer.logger", "[console,file]".into());
    set("trainer.project_name", "prl".into());
    set("trainer.experiment_name", experiment.into());
    set(
        "trainer.n_gpus_per_node",
        verl.n_gpus_per_node.get().to_string(),
    );
    set("trainer.nnodes", verl.nnodes.get().to_string());
    // prl keeps a stage's final checkpoint whatever its checkpoint_every.
    let save_every = stage
        .checkpoint_every
        .map_or(stage.steps.get(), |e| e.get());
    set("trainer.save_freq", save_every.to_string());
    let test_every = match (&stage.eval_every, &stage.eval_dataset) {
        (Some(every), Some(_)) => every.get().to_string(),
        _ => "-1".into(),
    };
    set("trainer.test_freq", test_every);
    set("trainer.total_epochs", verl.total_epochs.get().to_string());
    set(
        "trainer.total_training_steps",
        stage.steps.get().to_string(),
    );
    set("trainer.validation_data_dir", path(&files.validation()));
    set("trainer.rollout_data_dir", path(&files.rollouts()));
    set("trainer.default_local_dir", path(&files.checkpoints()));
    set("trainer.val_before_train", py(false));
    set("trainer.resume_mode", "auto".into());
    let mut out: Vec<String> = o.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.extend(verl.overrides.iter().map(ToString::to_string));
    out
}

/// The job's environment: the `file` logger's path, and vLLM's V1 engine as the reference sets.
pub fn environment(files: &RunFiles) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "VERL_FILE_LOGGER_PATH".to_owned(),
            files.metrics().display().to_string(),
        ),
        ("VLLM_USE_V1".to_owned(), "1".to_owned()),
    ])
}

/// `program` (a command line, such as `python3 -m verl.trainer.main_ppo`) with `args` quoted for
/// the shell that runs a Ray job's entrypoint.
pub fn entrypoint(program: &str, args: &[String]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,/:=+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A number as the reference scripts write it: `1e-06` is `1e-6`, `0.2` stays `0.2`.
fn number(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        let s = format!("{v:e}");
        s.replace("e-0", "e-")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_the_scripts_write_them() {
        assert_eq!(number(1e-6), "1e-6");
        assert_eq!(number(0.28), "0.28");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.7), "0.7");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        let args = [
            "a=1".to_owned(),
            "b=['x','y']".to_owned(),
            "c=it's".to_owned(),
        ];
        assert_eq!(
            entrypoint("python3 -m m", &args),
            r"python3 -m m a=1 'b=['\''x'\'','\''y'\'']' 'c=it'\''s'"
        );
    }
}
