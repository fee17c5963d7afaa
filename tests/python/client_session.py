"""A custom RL loop logging to prl with prl_client (clients/python), as a user's script would.

Run by tests/integration/live_runs.rs with PYTHONPATH=clients/python, PRL_API_URL and PRL_TOKEN
set. Logs 40 steps of metrics and, at every fourth step, 4 prompts x 2 samples whose responses
use parallel blocks; then finishes. Prints the run's ids as one JSON line.
"""

import json

import prl_client

run = prl_client.init("custom loop", tags=["client-test"], params={"lr": 1e-5, "group": 2},
                      flush_seconds=0.2, max_points=16)
for step in range(40):
    prl_client.log({"loss": 1.0 / (1 + step), "reward": step / 40}, step=step)
    if step % 4 == 0:
        records = []
        for p in range(4):
            for sample in range(2):
                right = (p + sample + step) % 3 != 0
                answer = p + 2 if right else p + 3
                records.append({
                    "prompt": f"What is {p} + 2?",
                    "text": f"<Parallel><Path>{p} + 2 = {p + 2}</Path><Path>2 + {p} = {p + 2}</Path></Parallel>"
                            f"<Summary>Both agree.</Summary> Final Answer: {answer}",
                    "reward": 1.0 if right else 0.0,
                    "correct": right,
                    "ground_truth": str(p + 2),
                })
        prl_client.log_trajectories(step, records)
try:
    prl_client.log_trajectories(40, [{"prompt": "x"}])
    raise AssertionError("a record without text and reward was taken")
except ValueError as e:
    assert "lacks text, reward" in str(e), e
finished = prl_client.finish()
print(json.dumps({"experiment_id": run.id, "run_id": run.run_id, "status": finished["status"]}))
