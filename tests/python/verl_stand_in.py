"""Stands in for `python3 -m verl.trainer.main_ppo` in the verl bridge's tests, run by a real Ray
head as the job's entrypoint (verl's trainer itself needs GPUs). It reads the Hydra overrides prl
generates and writes, step by step, the files verl writes with them: the rollout dump
`{rollout_data_dir}/{step}.jsonl`, the `file` logger's line in $VERL_FILE_LOGGER_PATH, validation
dumps every `trainer.test_freq` steps, and checkpoints every `trainer.save_freq` steps (the Hugging
Face weights under `global_step_N/actor/huggingface`, copied from the model directory, then
`latest_checkpointed_iteration.txt`). Like verl with `resume_mode=auto`, it goes on after the
newest checkpoint it finds. `+prl_test.step_seconds` sets the pause per step; `+prl_test.fail_at`
makes it fail at that step, as a crashed trainer would.
"""

import json
import os
import shutil
import signal
import sys
import time


def main():
    overrides = {}
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        overrides[key.lstrip("+")] = value
    print("verl stand-in:", json.dumps(overrides, sort_keys=True), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def need(key):
        if key not in overrides:
            sys.exit(f"missing override {key}")
        return overrides[key]

    for key in ("data.train_files", "data.val_files"):
        path = need(key).strip("[]'")
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                sys.exit(f"{path} is not parquet")
    steps = int(need("trainer.total_training_steps"))
    group = int(need("actor_rollout_ref.rollout.n"))
    prompts = int(need("data.train_batch_size"))
    test_freq = int(need("trainer.test_freq"))
    save_freq = int(need("trainer.save_freq"))
    model = need("actor_rollout_ref.model.path")
    rollouts = need("trainer.rollout_data_dir")
    validation = need("trainer.validation_data_dir")
    checkpoints = need("trainer.default_local_dir")
    pause = float(overrides.get("prl_test.step_seconds", "0.2"))
    fail_at = int(overrides.get("prl_test.fail_at", "0"))
    metrics = os.environ["VERL_FILE_LOGGER_PATH"]
    for d in (rollouts, validation, checkpoints):
        os.makedirs(d, exist_ok=True)

    latest = os.path.join(checkpoints, "latest_checkpointed_iteration.txt")
    start = int(open(latest).read()) + 1 if os.path.exists(latest) else 1
    for step in range(start, steps + 1):
        time.sleep(pause)
        if step == fail_at:
            raise RuntimeError(f"CUDA out of memory at step {step} (the stand-in's failure)")
        lines = []
        for p in range(prompts):
            a = step + p
            for s in range(group):
                parallel = (s + step) % 2 == 0
                right = s % 4 != 3
                answer = 2 * a if right else 2 * a + 1
                body = (
                    f"<Parallel><Path>{a} + {a} = {2 * a}</Path><Path>{a} * 2 = {2 * a}</Path>"
                    f"</Parallel><Summary>Both give {2 * a}.</Summary> "
                    if parallel
                    else f"{a} + {a} = {2 * a}. "
                )
                lines.append(
                    {
                        "input": f"What is {a} + {a}?",
                        "output": body + f"Final Answer: {answer}",
                        "gts": str(2 * a),
                        "score": 1.0 if right else 0.0,
                        "step": step,
                        "acc": right,
                    }
                )
        write_whole(os.path.join(rollouts, f"{step}.jsonl"), lines)
        with open(metrics, "a") as f:
            data = {"actor/pg_loss": 0.5 / step, "critic/score/mean": 0.75, "training/global_step": step}
            f.write(json.dumps({"step": step, "data": data}) + "\n")
        if test_freq > 0 and step % test_freq == 0:
            val = [
                {
                    "input": f"What is {q} * 3?",
                    "output": f"Final Answer: {3 * q}",
                    "gts": str(3 * q),
                    "score": 1.0,
                    "step": step,
                    "data_source": "stand-in-bench",
                }
                for q in range(4)
            ]
            write_whole(os.path.join(validation, f"{step}.jsonl"), val)
        if save_freq > 0 and (step % save_freq == 0 or step == steps):
            hf = os.path.join(checkpoints, f"global_step_{step}", "actor", "huggingface")
            os.makedirs(hf, exist_ok=True)
            for name in os.listdir(model):
                if os.path.isfile(os.path.join(model, name)):
                    shutil.copy(os.path.join(model, name), hf)
            write_whole(latest, None, text=str(step))
        print(f"step {step} of {steps}", flush=True)


def write_whole(path, lines, text=None):
    """Writes a file at once, as verl does: a temporary file renamed into place."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        if text is not None:
            f.write(text)
        else:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
