"""Generation at scale (issue 16): clips per minute of `nadm generate --prompts FILE --seeds LIST` with one process
and with several (nadm.jobs splits the jobs; the processes are started as `accelerate launch` starts them).

Each configuration makes the same clips (2 prompts x `--seeds` seeds) into a fresh folder, on nadm's tiny random
models (nadm.tiny) at 64x64, 16 frames, DDIM `--steps` steps, SOFP interpolation on (the selftest's clip):

- **CPU**: 1 process with 2 threads (all of a 2-core machine), 1 process with 1 thread, and 2 processes with 1
  thread each (gloo, `python -m torch.distributed.run`, what `accelerate launch` runs; ACCELERATE_USE_CPU=1);
- **GPU** (when CUDA is present): 1 process and K = all GPUs (`accelerate launch --num_processes K`), one GPU each.

Two rates per run: **wall** (clips / the command's whole wall time, start-up and model loading included) and
**making** (clips / the longest per-process sum of the manifest's per-clip seconds: the generation phase alone).
The ratios are the 2-process (K-GPU) rates over the fastest 1-process configuration's and over the 1-process rate
with all cores (1 GPU). All runs of one
invocation run back to back on the same machine, the configurations in turn, `--repeats` rounds; the table shows
each configuration's fastest round (other jobs on a shared machine only ever slow a run down; every round and the
load average after it are in the JSON).

    python benchmarks/scale_out.py [--seeds 6] [--steps 25] [--repeats 2]   -> benchmarks/results/scale_out.md/.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = "a misty Chinese ink landscape, mountains and a river\nboats on a lake under pines, ink wash\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(processes: int, gpu: bool) -> list[str]:
    """How `nadm` is started: plainly for one process, else torch's elastic launcher (CPU) or accelerate launch."""
    if processes == 1:
        return [sys.executable, "-m", "nadm"]
    if gpu:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--main_process_port", str(free_port()), "-m", "nadm"]  # fmt: skip
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
            str(free_port()), "-m", "nadm"]  # fmt: skip


def run(work: Path, name: str, processes: int, threads: int, gpu: bool, args: argparse.Namespace) -> dict:
    """One configuration: make the clips into WORK/NAME, return its counts, times and rates."""
    out = work / name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    if not gpu:
        env["ACCELERATE_USE_CPU"] = "1"
    command = [*launcher(processes, gpu), "generate", "--prompts", str(work / "prompts.txt"), "--seeds",
               f"0-{args.seeds - 1}", "-o", str(out / "{i}-{seed}.mp4"), "--base", str(work / "models" / "base"),
               "--motion", str(work / "models" / "motion"), "--frames", "16", "--height", "64", "--width", "64",
               "--steps", str(args.steps), "--quiet"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    clips = len(lines)
    per_rank: dict[int, float] = {}
    for line in lines:
        per_rank[line["rank"]] = per_rank.get(line["rank"], 0.0) + line["seconds"]
    making = max(per_rank.values())
    return {"name": name, "processes": processes, "threads": threads, "gpu": gpu, "clips": clips,
            "wall_s": round(wall, 2), "making_s": round(making, 2), "wall_clips_per_min": round(60 * clips / wall, 2),
            "making_clips_per_min": round(60 * clips / making, 2), "load": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds per prompt (2 prompts)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all configurations (fastest shown)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_out.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from nadm.io import environment_versions
    from nadm.tiny import build_tiny_base, build_tiny_motion

    gpus = torch.cuda.device_count()
    work = Path(tempfile.mkdtemp(prefix="nadm-scale-"))
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        build_tiny_base(work / "models" / "base")
        build_tiny_motion(work / "models" / "motion")
        (work / "prompts.txt").write_text(PROMPTS)
        if gpus:
            configs = [("1 GPU", 1, 1, True)] + ([(f"{gpus} GPUs", gpus, 1, True)] if gpus > 1 else [])
        else:
            configs = [("1 process, 2 threads", 1, 2, False), ("1 process, 1 thread", 1, 1, False),
                       ("2 processes, 1 thread each", 2, 1, False)]  # fmt: skip
        rounds = []
        for k in range(args.repeats):
            for name, processes, threads, gpu in configs:
                rounds.append(run(work, name, processes, threads, gpu, args))
                shutil.rmtree(work / name)
                print(f"round {k + 1}: {rounds[-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = [max((r for r in rounds if r["name"] == name), key=lambda r: r["wall_clips_per_min"]) for name, *_ in configs]
    scaled = runs[-1]
    references = {"fastest one process": max((r for r in runs if r["processes"] == 1), key=lambda r: r["wall_clips_per_min"]),
                  "one process, all cores": runs[0]}  # fmt: skip
    ratio = {label: {"reference": ref["name"], **{k: round(scaled[k] / ref[k], 3) for k in ("wall_clips_per_min",
             "making_clips_per_min")}} for label, ref in references.items()}  # fmt: skip
    machine = ("CUDA " + torch.cuda.get_device_name() + f" x {gpus}") if gpus else (
        f"{platform.machine()} CPU (2-core AMD EPYC, shared with other jobs), no GPU")  # fmt: skip
    when = datetime.date.today().isoformat()
    text = [
        "# Generation at scale: clips per minute, 1 process vs several",
        "",
        f"Written by `python benchmarks/scale_out.py --seeds {args.seeds} --steps {args.steps} --repeats {args.repeats}` on {when} "
        f"({time.perf_counter() - started:.0f} s). Machine: {machine}; load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Tiny random models (nadm.tiny), 2 prompts x {args.seeds} seeds = "
        f"{2 * args.seeds} clips, 64x64, 16 frames -> 31 (SOFP), DDIM {args.steps} steps, guidance 8. wall: clips / "
        "the whole command (start-up and model loading included); making: clips / the longest per-process sum of "
        "per-clip seconds (manifest.jsonl).",
        "",
        f"Fastest of {args.repeats} rounds per configuration.",
        "",
        "| configuration | clips | wall s | wall clips/min | making s | making clips/min | load avg after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        text.append(f"| {r['name']} | {r['clips']} | {r['wall_s']:.1f} | {r['wall_clips_per_min']:.1f} | "
                    f"{r['making_s']:.1f} | {r['making_clips_per_min']:.1f} | {r['load']:.1f} |")  # fmt: skip
    text.append("")
    for label, r in ratio.items():
        text.append(f"Ratio {scaled['name']} / {r['reference']} ({label}): wall {r['wall_clips_per_min']:.2f}x, "
                    f"making {r['making_clips_per_min']:.2f}x.")  # fmt: skip
    text.append("")
    print("\n".join(text))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    result = {"date": when, "machine": machine, "seeds": args.seeds, "steps": args.steps, "repeats": args.repeats,
              "runs": runs, "rounds": rounds, "ratio": ratio, "versions": environment_versions()}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
