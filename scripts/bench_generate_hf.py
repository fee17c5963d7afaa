"""The HF side of prl's sequential-generation benchmark (trainer-daemon/benches/rollout_throughput.rs).

Loads the model directory and equal-length prompts the Rust side wrote onto the device given,
generates greedily with `generate` (KV cache, stopping at end-of-sequence), and prints one JSON
line: generated tokens/s (the best of the repeats) and the generated ids of each prompt, up to and
with end-of-sequence.
"""

import argparse
import json
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--eos", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    prompts = load_file(f"{args.model_dir}/prompts.safetensors")["input_ids"].to(device)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.to(device)
    model.eval()
    best, outputs = float("inf"), []
    with torch.no_grad():
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = model.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                max_new_tokens=args.new_tokens,
                do_sample=False,
                eos_token_id=args.eos,
                pad_token_id=args.eos,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - started)
            outputs = []
            for row in out[:, prompts.shape[1]:].tolist():
                if args.eos in row:
                    row = row[: row.index(args.eos) + 1]
                outputs.append(row)
    tokens = sum(len(o) for o in outputs)
    print(json.dumps({"tokens_per_s": tokens / best, "outputs": outputs}))


if __name__ == "__main__":
    main()
