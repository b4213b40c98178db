"""A small bot trained on quiet cores and beside busy processes: the thread defaults before and after.

Why: torch's default of one OpenMP thread a core, spinning while it waits, made a 12-intent bot
that trains in about a minute on quiet cores take 6-10 times as long beside other work, where a
fair share of the cores would make it 2-3 times (issue 29). Training now takes the cores the
load leaves free, with threads that sleep while they wait (training/threads.py).

Each run is `intently train BOT --out DIR --quiet` in a fresh process, timed from start to exit:

- `before`: the previous defaults, torch imported first (OpenMP's default wait policy) and one
  thread a usable core;
- `after`: the defaults now (`intently train` as a user runs it).

Each is run on the cores as they are, then beside `--busy` processes that spin on a core each
(started `--warm` seconds earlier, as a machine that is busy is busy for a while). The bot is
`--intents` intents of `--per-intent` examples from the built-in set (data/assistant, written by
the team, in no benchmark), drawn with `--seed`.

    .venv/bin/python -m bench.busy_training [--intents 12] [--per-intent 8] [--busy 2] [--warm 60]
                                            [--repeats 1] [--results NAME] [--only before|after]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import REPO, table, write_results
from training.threads import usable_cores

SPIN = "while True: pass"
# The previous defaults: torch loaded before anything could choose its wait policy, one thread a core.
BEFORE = "import sys, torch; from app.cli import main; sys.exit(main(sys.argv[1:]))"
AFTER = "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"


def write_bot(path: Path, intents: int, per_intent: int, seed: int) -> None:
    with (REPO / "data" / "assistant" / "train.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_intent: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row["intent"] != "oos":
            by_intent[row["intent"]].append(row["text"])
    rng = random.Random(seed)
    chosen = rng.sample(sorted(i for i, texts in by_intent.items() if len(texts) >= per_intent), intents)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "intent"])
        for intent in chosen:
            out.writerows([text, intent] for text in rng.sample(by_intent[intent], per_intent))


def train_seconds(code: str, bot: Path, out: Path, extra: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "INTENTLY_TRAIN_THREADS")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, "train", str(bot), "--out", str(out), "--quiet", *extra],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=12)
    parser.add_argument("--per-intent", type=int, default=8)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes beside the busy runs")
    parser.add_argument("--warm", type=float, default=60.0, help="seconds they spin before a run starts")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="busy_training")
    parser.add_argument(
        "--only", choices=["before", "after"], help="one set of defaults (the previous ones are the slow run)"
    )
    args = parser.parse_args()
    cores = usable_cores()
    variants = {"before": (BEFORE, ["--threads", str(cores)]), "after": (AFTER, [])}
    if args.only:
        variants = {args.only: variants[args.only]}
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    loads: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        bot = Path(tmp) / "bot.csv"
        write_bot(bot, args.intents, args.per_intent, args.seed)
        for condition in ("quiet", "busy"):
            spinners = [
                subprocess.Popen([sys.executable, "-c", SPIN])
                for _ in range(args.busy if condition == "busy" else 0)
            ]
            try:
                if spinners:
                    time.sleep(args.warm)
                for repeat in range(args.repeats):
                    for name, (code, extra) in variants.items():
                        loads[condition].append(os.getloadavg()[0])
                        took = train_seconds(code, bot, Path(tmp) / f"{name}-{condition}-{repeat}", extra)
                        seconds[(name, condition)].append(took)
                        print(f"{name:6} {condition:5} {took:7.1f} s", flush=True)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    rows: list[list[Any]] = []
    figures: dict[str, Any] = {}
    for name in variants:
        quiet, busy = median(seconds[(name, "quiet")]), median(seconds[(name, "busy")])
        rows.append([name, f"{quiet:.1f}", f"{busy:.1f}", f"{busy / quiet:.2f}"])
        figures[name] = {"quiet_s": quiet, "busy_s": busy, "busy_over_quiet": busy / quiet}
    print(
        f"\n{args.intents} intents x {args.per_intent} examples, {cores} usable cores, {args.busy} busy"
        f" processes; load average at the runs' starts: quiet {min(loads['quiet']):.1f}-"
        f"{max(loads['quiet']):.1f}, busy {min(loads['busy']):.1f}-{max(loads['busy']):.1f}"
    )
    print(table(["defaults", "quiet s", "busy s", "busy / quiet"], rows))
    write_results(args.results, {"args": vars(args), "cores": cores, "loads": loads, "figures": figures})


if __name__ == "__main__":
    main()
