"""How often a training micro-step would make a GPU's host wait for the card, counted on this
CPU (`tests/would_sync.py`): reads of a device tensor's values on the host (a Python bool, int
or float of it) and results shaped by its values (`nonzero`, boolean gathers).

    .venv/bin/python benchmarks/host_reads.py --before DIR   # DIR: a checkout of the code before

At the v3 GPU recipe (`research/configs/v3/gpu.json`, k from {1, 2, 4, 8}) at 16 frame rows or 4
packed sequences per micro-step (its 64 / 16 do not fit this machine's memory for a backward),
rows grouped at a GPU's overhead (`length_groups`), one
micro-step's forward and backward per objective, the real LLM and a fresh 8-layer tokenizer;
each code tree in its own process, on the same micro-steps. Writes section `host-reads` of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OBJECTIVES = ("ar", "reconstruction", "span", "qa", "expand")
ROWS, SEQS = 16, 4  # the recipe's 64 / 16 need more memory than 24 GiB for a backward here


def measure(code: Path) -> dict:
    """Per objective: would-sync reads in one micro-step, and where, for the code at `code`."""
    sys.path.insert(0, str(code))
    sys.path.insert(1, str(ROOT / "tests"))
    sys.path.insert(2, str(HERE))
    from length_groups import RECIPE, trainer_for
    from would_sync import WouldSync, watching_transfers

    from extok_rag.cli.console import quiet_transformers
    from extok_rag.cli.train_cmd import load_config
    from extok_rag.config import RuntimeConfig
    from extok_rag.models import extensible_tokenizer
    from extok_rag.models.length_groups import GPU_BATCH_OVERHEAD
    from extok_rag.models.llm import FrozenLLM
    from extok_rag.training import objective as objective_module

    assert Path(objective_module.__file__).is_relative_to(code), objective_module.__file__
    for module in (objective_module, extensible_tokenizer):  # rows grouped as on a GPU
        module.batch_overhead = lambda device: GPU_BATCH_OVERHEAD

    class Patch:  # what `watching_transfers` needs of pytest's monkeypatch
        setattr = staticmethod(setattr)

    quiet_transformers()
    recipe = load_config([RECIPE], [])
    llm = FrozenLLM.load(None, RuntimeConfig(device="cpu", dtype=recipe.resolved_dtype("cpu")))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(llm, [f"frame_rows={ROWS}", f"seq_batch={SEQS}"], Path(tmp))
        models = (llm.model, trainer.tokenizer)
        weights = [t for m in models for t in (*m.parameters(), *m.buffers())]
        for n, objective in enumerate(OBJECTIVES):
            with WouldSync(weights) as watch:
                watching_transfers(Patch(), watch)
                losses, _ = trainer.micro_step(20_000 + n, objective)
                losses.mean().backward()
            trainer.optimizer.zero_grad(set_to_none=True)
            out[objective] = {
                "reads": sum(watch.events.values()),
                "where": sorted({w for _, w in watch.events}),
            }
            print(objective, out[objective], file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one tree, as JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure.resolve())))
        return
    from report import machine_line, write_section

    commit = subprocess.run(
        ["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()

    rows = {}
    for name, code in (("before", args.before.resolve()), ("now", ROOT)):
        done = subprocess.run(
            [sys.executable, __file__, "--before", str(args.before), "--measure", str(code)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows[name] = json.loads(done.stdout.splitlines()[-1])
    lines = [
        "## Host reads of device values in a training micro-step (`tests/would_sync.py`)",
        "",
        f"`benchmarks/host_reads.py` — {machine_line()}.",
        "",
        "On a GPU each read below makes the host wait for every kernel queued before it, so it "
        "cannot build the next micro-step's rows while the card computes. Counted on this CPU "
        "(aten calls on tensors descended from the models' weights or copied by `to_device`), "
        "one micro-step's forward and backward per objective at the v3 GPU recipe (k from "
        f"{{1, 2, 4, 8}}; {ROWS} frame rows or {SEQS} packed sequences, a quarter of its own, "
        "for this machine's memory; rows grouped at a GPU's overhead), "
        f"the code before (`{commit or args.before}`) and now:",
        "",
        "| objective | reads before | reads now | where, before |",
        "|---|---:|---:|---|",
    ]
    for objective in OBJECTIVES:
        before, now = rows["before"][objective], rows["now"][objective]
        where = ", ".join(f"`{w}`" for w in before["where"])
        lines.append(f"| {objective} | {before['reads']} | {now['reads']} | {where} |")
    write_section("host-reads", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
