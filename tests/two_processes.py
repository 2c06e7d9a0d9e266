"""Several clip-agiqa commands in one 2-process (gloo) launch: ``python two_processes.py PLAN.json``.

PLAN.json: ``{"commands": [[name, [clip-agiqa arguments]], ...], "results": "path.json"}``. Each command runs
through ``clip_agiqa.cli.main`` as the console script runs it, in order, with ``--trainer.devices 2
--trainer.strategy ddp`` given by the plan. The first command's Trainer starts the second process (Lightning
runs this script again with the same arguments, so it runs the same commands); the later ones join the same
process group. Rank 0 writes each command's ``callback_metrics`` (synced across the processes) to ``results``.
One launch instead of one per command: the process start and the group set-up are most of a tiny run's time.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")


def main(plan_file: str) -> None:
    from clip_agiqa.cli import main as clip_agiqa

    warnings.simplefilter("ignore")
    with open(plan_file) as handle:
        plan = json.load(handle)
    results = {}
    for name, args in plan["commands"]:
        cli = clip_agiqa(args)
        results[name] = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
        results[name]["world_size"] = cli.trainer.world_size
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        with open(plan["results"], "w") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1])
