"""Exports a reasoning-gym task as a JSONL dataset prl reads (`jsonl:<path>`), for RL prompts
harder than the built-in ones and for evaluation.

    python3 -m venv ~/.cache/prl/reasoning-gym
    ~/.cache/prl/reasoning-gym/bin/pip install -r scripts/requirements-reasoning-gym.txt
    ~/.cache/prl/reasoning-gym/bin/python scripts/export_reasoning_gym.py gsm_symbolic \
        --size 2000 --seed 1 --out data/gsm_symbolic.jsonl

Each line is {"id", "question", "answer"}; reasoning-gym's answers are the exact strings its own
scorer expects, and prl compares them after the same normalisation as every answer. Extra
generator settings go in as --config key=value (values parsed as JSON when they parse).
"""

import argparse
import json

import reasoning_gym


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", help="a reasoning-gym dataset name, e.g. gsm_symbolic, basic_arithmetic")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", action="append", default=[], help="key=value")
    args = parser.parse_args()

    config = {}
    for item in args.config:
        key, _, value = item.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    data = reasoning_gym.create_dataset(args.task, size=args.size, seed=args.seed, **config)
    with open(args.out, "w", encoding="utf-8") as out:
        for i, entry in enumerate(data):
            row = {"id": f"{args.task}-{args.seed}-{i}", "question": entry["question"], "answer": str(entry["answer"])}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {args.size} rows of {args.task} to {args.out}")


if __name__ == "__main__":
    main()
