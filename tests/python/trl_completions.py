"""Completions tables as TRL's GRPOTrainer writes them with log_completions=True (trl 1.16:
`pd.DataFrame(table).to_parquet(<output_dir>/completions/completions_<step:05d>.parquet)`, the
table holding step, prompt, completion, one column per reward function, extra columns and
advantage). TRL itself needs a model and torch to run; this writes its table format with the
same pandas call. Run by tests/integration/follow.rs: trl_completions.py OUTPUT_DIR
"""

import os
import sys

import pandas as pd

out = os.path.join(sys.argv[1], "completions")
os.makedirs(out, exist_ok=True)
for step, conversational in [(5, False), (10, True)]:
    prompts, completions, accuracy, fmt = [], [], [], []
    for p in range(2):
        for sample in range(2):
            right = sample == 0
            question = f"What is {p} + 5?"
            text = (f"<Parallel><Path>{p} + 5 = {p + 5}</Path><Path>5 + {p} = {p + 5}</Path></Parallel>"
                    f"<Summary>Both agree.</Summary> Final Answer: {p + 5 if right else p + 6}")
            if conversational:
                prompts.append([{"role": "system", "content": "Think in parallel."}, {"role": "user", "content": question}])
                completions.append([{"role": "assistant", "content": text}])
            else:
                prompts.append(question)
                completions.append(text)
            accuracy.append(1.0 if right else 0.0)
            fmt.append(0.5)
    table = {
        "step": [step] * len(prompts),
        "prompt": prompts,
        "completion": completions,
        "accuracy_reward": accuracy,
        "format_reward": fmt,
        "advantage": [0.7 if a else -0.7 for a in accuracy],
    }
    pd.DataFrame(table).to_parquet(os.path.join(out, f"completions_{step:05d}.parquet"))
