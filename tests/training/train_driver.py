"""Runs tfm.training.loop.run in a subprocess for the tests (not a test module itself).

    python train_driver.py --config_json '{...}' --workdir DIR
        [--hang_at_step N]            # at step N: wait until checkpoint N-1.. exists, print
                                      # READY and sleep (the test then kills the process)
        [--coordinator ADDR --num_processes P --process_id I]   # multi-process
        [--print_first_step]          # print FIRST_STEP n at the first step this process runs
"""

import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--config_json", required=True)
parser.add_argument("--workdir", required=True)
parser.add_argument("--hang_at_step", type=int, default=0)
parser.add_argument("--wait_for_checkpoint", type=int, default=0)
parser.add_argument("--coordinator", default=None)
parser.add_argument("--num_processes", type=int, default=None)
parser.add_argument("--process_id", type=int, default=None)
parser.add_argument("--print_first_step", action="store_true")
args = parser.parse_args()

# jax.distributed must start before anything touches a JAX backend
from tfm.training import distributed

distributed.initialize_distributed(args.coordinator, args.num_processes, args.process_id)

import logging

import jax

from tfm.training.config import RunConfig
from tfm.training.loop import run

logging.basicConfig(level=logging.WARNING, stream=sys.stdout)


_first = []


def hang(step: int) -> None:
    if args.print_first_step and not _first:
        _first.append(step)
        print("FIRST_STEP", step, flush=True)
    if step != args.hang_at_step:
        return
    marker = os.path.join(args.workdir, "checkpoints", str(args.wait_for_checkpoint))
    while args.wait_for_checkpoint and not os.path.isdir(marker):
        time.sleep(0.05)
    print("READY", flush=True)
    while True:
        time.sleep(1)


result = run(RunConfig.from_config_dict(json.loads(args.config_json)), args.workdir, hooks=[hang])
print("RESULT", json.dumps({"step": result["step"], "preempted": result["preempted"],
                            "process": jax.process_index()}), flush=True)
