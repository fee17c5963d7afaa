"""The PyTorch side of prl's SFT throughput benchmark (trainer-daemon/benches/sft_throughput.rs).

Loads the model directory and batch the Rust side wrote, runs the same training iteration
(forward, token-mean cross-entropy on the response targets, backward, clipping at 1.0, AdamW
with betas (0.9, 0.95), eps 1e-8, weight decay 0.01, lr 1e-4) on the device given and prints
tokens/s. AdamW is PyTorch's default for that device (multi-tensor on CUDA).
"""

import argparse
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.set_num_threads(torch.get_num_threads())
    batch = load_file(f"{args.model_dir}/batch.safetensors")
    input_ids, targets = batch["input_ids"].to(device), batch["targets"].to(device)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)

    timed = 0.0
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        logits = model(input_ids=input_ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            timed += time.perf_counter() - started
    print(input_ids.numel() * args.steps / timed)


if __name__ == "__main__":
    main()
