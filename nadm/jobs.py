"""Generation at scale: every prompt x seed is one job; the jobs are split between accelerate processes, a job
already made with the same settings is skipped, and each finished clip gets one line in `manifest.jsonl`.

The steps a batch command (`nadm generate`, `nadm compare`) runs, in every process:

1. `parse_seeds`, `expand_pattern`, `make_jobs`: the job list, in one fixed order (prompt by prompt, each seed in
   turn), each job with its output path and the settings that determine its clip (`Job.settings_hash`);
2. `plan_jobs`, before any model loads: what is already made (output and sidecar whose job hash equals: skipped),
   what is left (an output made with other settings is an error unless `--overwrite`);
3. `run_jobs`: the jobs left are split between the processes (`PartialState.split_between_processes`, the same
   contiguous split in every process), each process loads its pipeline once on its own device and makes its share;
   a clip is written atomically (nadm.io) and then listed in the manifest; the main process shows one progress bar
   of the clips finished in all processes (it reads the manifest).

Nothing depends on the rank or the order: each job seeds its own generator from its seed, so one process and many
make the same files. Without `accelerate launch` everything runs in the one process.
"""

# torch and accelerate are imported inside the functions that use them (CLI start-up time).

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import string
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nadm import __version__, signals
from nadm.devices import AUTO
from nadm.errors import NADMError, note

if TYPE_CHECKING:
    from accelerate import PartialState

MANIFEST = "manifest.jsonl"
PATTERN_FIELDS = ("i", "slug", "seed")  # placeholders an output pattern may use
SEED_LIMIT = 2**63  # the sampler's bound (nadm.pipeline.SEED_LIMIT; a test keeps the two equal)
HASH_CHARS = 16  # hex digits of sha256 kept as a job's settings hash
POLL_S = 0.5  # how often the main process's progress bar reads the manifest


# ------------------------------------------------------------------------------------------ the job list


def parse_seeds(text: str) -> list[int]:
    """Seeds from a list and/or ranges: '0,3,7', '0-39', '0-9,20,30-31' -> distinct integers in the order given."""
    seeds: list[int] = []
    for item in (part.strip() for part in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if not match:
            raise NADMError(f"--seeds takes integers and ranges like 0,3,7 or 0-39, got {item!r} in {text!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise NADMError(f"--seeds range {item!r} runs backwards: write {last}-{first}")
        if last >= SEED_LIMIT:
            raise NADMError(f"seeds must be below 2**63, got {last} in {text!r}")
        if last - first >= 1_000_000:
            raise NADMError(f"--seeds range {item!r} has more than a million seeds")
        seeds.extend(range(first, last + 1))
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise NADMError(f"--seeds gives seed {seed} twice in {text!r}: each seed once")
        seen.add(seed)
    return seeds


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: lowercase ASCII words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


def job_grid(prompts: Sequence[Any], seeds: Sequence[int | None]) -> list[tuple[int, Any, int | None]]:
    """(prompt number from 1, prompt, seed) for every prompt x seed, prompt by prompt: the one job order."""
    return [(i, prompt, seed) for i, prompt in enumerate(prompts, start=1) for seed in seeds]


def _describe_clash(a: tuple[int, Any, int | None], b: tuple[int, Any, int | None]) -> tuple[str, str]:
    """How two jobs with one output name differ, and the placeholder that would tell them apart."""
    if a[2] == b[2]:
        return f"prompts {a[0]} and {b[0]}", "{i}"
    if a[0] == b[0]:
        return f"seeds {a[2]} and {b[2]} of prompt {a[0]}", "{seed}"
    return f"prompt {a[0]} seed {a[2]} and prompt {b[0]} seed {b[2]}", "{i} and {seed}"


def expand_pattern(pattern: str, prompts: Sequence[Any], seeds: Sequence[int | None] = (None,)) -> list[Path]:
    """One output path per job (`job_grid` order) from a pattern with {i} (1-based prompt number, e.g. {i:03d}),
    {slug} and {seed}; NADMError for a pattern that would give two jobs one name."""
    grid = job_grid(prompts, seeds)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as e:
        raise NADMError(f"bad output pattern {pattern!r}: {e}") from None
    if not fields and len(grid) > 1:
        several = ("{i} or {slug}", "clips/{i:03d}.mp4") if len(seeds) == 1 else (
            ("{seed}", "clips/{seed}.mp4") if len(prompts) == 1 else ("{i} or {slug} and {seed}", "clips/{i:03d}-{seed}.mp4"))
        raise NADMError(f"with {len(grid)} clips, -o must be a pattern with {several[0]}, e.g. {several[1]}; got {pattern!r}")
    unknown = sorted(fields - set(PATTERN_FIELDS))
    if unknown:
        raise NADMError(f"unknown placeholder {{{unknown[0]}}} in {pattern!r}: use {{i}} (prompt number), {{slug}} or {{seed}}")
    if "seed" in fields and None in seeds:
        raise NADMError(f"{{seed}} in {pattern!r} needs --seed or --seeds (a drawn seed is known only after generating)")
    try:
        paths = [Path(pattern.format(i=i, slug=slug(p if isinstance(p, str) else " ".join(p.values())), seed=s))
                 for i, p, s in grid]  # fmt: skip
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise NADMError(f"bad output pattern {pattern!r}: {e}") from None
    seen: dict[Path, int] = {}
    for k, path in enumerate(paths):
        if path in seen:
            which, hint = _describe_clash(grid[seen[path]], grid[k])
            raise NADMError(f"the pattern {pattern!r} gives {path} for {which}: add {hint}")
        seen[path] = k
    return paths


def _json_ready(value: Any) -> Any:
    """`value` as JSON gives it back (tuples -> lists, int keys -> strings, paths -> strings)."""
    return json.loads(json.dumps(value, default=str))


def settings_hash(settings: dict[str, Any]) -> str:
    """A short sha256 of the settings as canonical JSON (sorted keys): equal hashes, equal requests."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class Job:
    """One clip to make: a prompt (text, or a prompt-travel schedule) with a seed, where it goes, and everything that
    determines it (`settings`, JSON-ready, prompt and seed included; seed None: drawn when made)."""

    index: int  # prompt number, from 1
    prompt: Any
    seed: int | None
    path: Path
    settings: dict[str, Any] = field(repr=False)

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings)

    def record(self) -> dict[str, Any]:
        """What the clip's sidecar keeps under "job": the settings and their hash (resuming compares the hash)."""
        return {"settings_hash": self.settings_hash, "settings": self.settings}


def make_jobs(paths: Sequence[Path], grid: Sequence[tuple[int, Any, int | None]], common: dict[str, Any]) -> list[Job]:
    """Jobs from `job_grid` entries and their paths; `common`: the settings every job shares."""
    if len(paths) != len(grid):
        raise ValueError(f"{len(paths)} paths for {len(grid)} jobs")
    return [Job(i, prompt, seed, Path(path), _json_ready({**common, "prompt": prompt, "seed": seed}))
            for path, (i, prompt, seed) in zip(paths, grid)]  # fmt: skip


# -------------------------------------------------------------------------------------------- processes


def process_state(device: str | None = None) -> PartialState:
    """accelerate's view of this process (rank, process count, device). Processes without CUDA (or asked for
    `--device cpu`, or with ACCELERATE_USE_CPU=1) talk over gloo on the CPU."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or str(device or "").startswith("cpu") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def job_device(device: str | None) -> str | None:
    """The device this process samples on: `device` as given in one process; under `accelerate launch` with several
    processes accelerate's (`PartialState().device`, one GPU each), and a `--device` that names another is refused."""
    from nadm.devices import resolve_device

    state = process_state(device)
    if state.num_processes == 1:
        return device
    if device not in AUTO:
        asked = resolve_device(device)
        if asked.type != state.device.type or asked.index not in (None, state.device.index):
            raise NADMError(f"--device {device} conflicts with accelerate's device for process {state.process_index} "
                            f"({state.device}): leave --device at auto under accelerate launch")  # fmt: skip
    return state.device.type if state.device.type == "cpu" else str(state.device)  # one CPU: "cpu", as in one process


def _run_id(state: PartialState) -> str:
    """A new id for a run, made by the main process and sent to the others (a collective call); written in every
    manifest line of the run."""
    from accelerate.utils import broadcast_object_list

    ids = [f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(2).hex()}" if state.is_main_process else None]
    return broadcast_object_list(ids, from_process=0)[0] if state.num_processes > 1 else ids[0]


# --------------------------------------------------------------------------------------------- manifest


class Manifest:
    """`manifest.jsonl` beside the outputs: one JSON line per finished clip. Each line is appended with one write on an
    O_APPEND descriptor under an exclusive POSIX lock, so processes (on one machine, or on a file system that honours
    POSIX locks) never interleave lines; a line cut by a killed process is skipped by `read` and closed off by the
    next `append`."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def check(self) -> None:
        """NADMError unless the manifest can be appended to: absent, or a file whose lines nadm wrote."""
        from nadm.outputs import check_writable

        check_writable(self.path.parent)
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if self.path.is_symlink() or not self.path.is_file():
            raise NADMError(f"{self.path} is not a file: nadm keeps its list of finished clips there; move it away")
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline().strip()
        except OSError as e:
            raise NADMError(f"cannot read {self.path}: {e.strerror or e}") from None
        if first and not first.startswith(b'{"path": '):  # nadm's lines start so (a killed writer may cut one)
            raise NADMError(f"{self.path} exists and nadm did not write it: move it away (nadm lists finished clips there)")

    def append(self, record: dict[str, Any]) -> None:
        """Add one line (atomic with respect to other appenders; not cut by Ctrl-C/SIGTERM)."""
        import fcntl

        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with signals.held():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a line cut by a killed writer: end it, so it stays one bad line
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)  # releases the lock

    def read(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The whole lines from byte `offset` on, parsed (lines that do not parse are skipped), and the offset after the
        last whole line (a last line without its newline, still being written or cut by a kill, is left)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset
        except OSError as e:
            raise NADMError(f"cannot read {self.path}: {e.strerror or e}") from None
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records, offset + end

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def relative(self, path: Path) -> str:
        """How the manifest names an output: relative to its own folder."""
        return Path(os.path.relpath(Path(path).absolute(), self.path.parent.absolute())).as_posix()

    def line(self, job: Job, run: str, seconds: float | None, device: str | None, rank: int | None,
             processes: int) -> dict[str, Any]:  # fmt: skip
        """The manifest line of a finished clip (seconds: making and writing it; None for a clip found made)."""
        return {"path": self.relative(job.path), "prompt": job.settings["prompt"], "seed": job.seed,
                "settings_hash": job.settings_hash, "seconds": None if seconds is None else round(seconds, 3),
                "device": device, "rank": rank, "processes": processes, "run": run,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "nadm_version": __version__}  # fmt: skip


# -------------------------------------------------------------------------------------------- resuming


@dataclass
class Plan:
    """The jobs of a run split into those already made (skipped) and those left; the manifest (None: no manifest),
    the run's id and the manifest's size when the plan was made (the progress bar counts the lines after it)."""

    jobs: list[Job]
    todo: list[Job]
    done: list[Job]
    manifest: Manifest | None
    run_id: str = ""
    offset: int = 0


def _differences(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """'steps 2 -> 4, guidance 8.0 -> 7.5': the settings that differ between two job records."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = [f"{k} {json.dumps(old.get(k))[:40]} -> {json.dumps(new.get(k))[:40]}" for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _is_made(job: Job, overwrite: bool) -> bool:
    """True when the job's output and sidecar exist with the same settings hash. Otherwise the output is checked
    (nadm.io.check_output_path: an existing one is an error unless `overwrite`, and then only nadm's own is replaced)
    and False comes back."""
    from nadm.io import check_output_path, read_sidecar
    from nadm.outputs import sidecar_path

    side = None
    if job.path.exists():
        with contextlib.suppress(NADMError):  # a damaged sidecar: not the same settings
            side = read_sidecar(job.path)
    made = (side or {}).get("job")
    if isinstance(made, dict) and made.get("settings_hash") == job.settings_hash:
        return True
    if (job.path.exists() or sidecar_path(job.path).exists()) and not overwrite:
        why = (f"made with other settings: {_differences(made.get('settings') or {}, job.settings)}"
               if isinstance(made, dict) else "its sidecar holds no nadm job record")  # fmt: skip
        raise NADMError(f"{job.path} already exists: pass --overwrite to replace it ({why})")
    check_output_path(job.path, overwrite)  # replaceable, folder writable and made, stale temporaries removed
    return False


def plan_jobs(jobs: Sequence[Job], overwrite: bool, manifest_dir: Path | None, run_id: str | None = None) -> Plan:
    """Step 2, before any model loads, in every process together: which jobs are made already (skipped) and which are
    left; a manifest in `manifest_dir` (None: none) that nadm can append to; `run_id`: an earlier plan's, when one
    command makes several (else a new one). The main process goes first (it alone removes temporaries a killed run
    left, and lists clips that run made but did not list); no process returns before all have planned, so all split
    the same list and none writes while another still looks."""
    state = process_state()
    plan = Plan(list(jobs), [], [], Manifest(Path(manifest_dir) / MANIFEST) if manifest_dir is not None else None,
                run_id or _run_id(state))  # fmt: skip
    with state.main_process_first():
        if plan.manifest is not None:
            plan.manifest.check()
        for job in jobs:
            (plan.done if _is_made(job, overwrite) else plan.todo).append(job)
        if state.is_main_process and plan.manifest is not None:
            listed = {(r.get("path"), r.get("settings_hash")) for r in plan.manifest.read()[0]}
            for job in plan.done:
                if (plan.manifest.relative(job.path), job.settings_hash) not in listed:
                    plan.manifest.append(plan.manifest.line(job, plan.run_id, None, None, None, state.num_processes))
            plan.offset = plan.manifest.size()
    if state.is_main_process and plan.done:
        note(f"{len(plan.done)} of {len(plan.jobs)} clips already made with the same settings: skipped")
    state.wait_for_everyone()
    return plan


def common_folder(paths: Sequence[Path]) -> Path:
    """The deepest folder holding every path (where a batch's manifest goes)."""
    return Path(os.path.commonpath([str(Path(p).absolute().parent) for p in paths]))


# ---------------------------------------------------------------------------------------------- running


class _Progress:
    """The main process's count of the plan's clips finished in all processes: a thread reads the manifest's new lines
    every POLL_S seconds (without a manifest it counts this process's own clips), shown as a bar unless `show` is
    off. Never a collective call, so processes with unequal shares cannot deadlock on it."""

    def __init__(self, plan: Plan, show: bool, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(plan.todo), desc=desc, unit="clip", disable=not show or not plan.todo,
                        dynamic_ncols=True)
        self.manifest, self.offset = plan.manifest, plan.offset
        self.wanted = {plan.manifest.relative(job.path) for job in plan.todo} if plan.manifest else set()
        self.seen: set[str] = set()
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True) if self.manifest else None
        if self.thread:
            self.thread.start()

    def _refresh(self) -> None:
        records, self.offset = self.manifest.read(self.offset)
        self.seen.update(r.get("path") for r in records if r.get("path") in self.wanted)
        self._show(len(self.seen))

    def _show(self, count: int) -> None:
        if count != self.count:
            self.bar.update(count - self.count)
            self.count = count

    def _poll(self) -> None:
        while not self.stop.wait(POLL_S):
            with contextlib.suppress(NADMError):
                self._refresh()

    def one_done(self) -> None:
        if self.manifest is None:
            self._show(self.count + 1)

    def wait_all(self) -> None:
        """Return once every clip of the plan is listed (a process that fails stops the launcher, and with it this)."""
        while self.thread is not None and len(self.seen) < len(self.wanted):
            time.sleep(POLL_S / 5)

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()
            self._refresh()
        self.bar.close()


class Share:
    """This process's share of a plan's jobs left (`jobs`: accelerate's contiguous split of the same list in every
    process), made by `run`; on the main process `finish` waits until the others' clips are listed too."""

    def __init__(self, plan: Plan, progress: bool = True, desc: str = "clips"):
        self.plan, self.state = plan, process_state()
        with self.state.split_between_processes(plan.todo) as share:
            self.jobs: list[Job] = list(share)
        main = self.state.is_main_process
        self.progress = _Progress(plan, progress, desc) if main else None

    def run(self, pipe: Any, make: Callable[[Any, Job], Any]) -> list[dict[str, Any]]:
        """`make(pipe, job)` for each job of the share (it writes the clip atomically), then its manifest line; then
        `finish`. Returns this process's manifest lines (none without a manifest)."""
        device, lines = str(getattr(pipe, "device", self.state.device)), []
        try:
            for job in self.jobs:
                start = time.perf_counter()
                make(pipe, job)
                if self.plan.manifest is not None:
                    line = self.plan.manifest.line(job, self.plan.run_id, time.perf_counter() - start, device,
                                                   self.state.process_index, self.state.num_processes)  # fmt: skip
                    self.plan.manifest.append(line)
                    lines.append(line)
                if self.progress:
                    self.progress.one_done()
        except BaseException:
            if self.progress:
                self.progress.close()
            raise
        self.finish()
        return lines

    def finish(self) -> None:
        """Main process: wait until every clip of the plan is listed in the manifest (the bar counts meanwhile).
        Other processes return at once: no collective call after planning, so unequal shares cannot deadlock."""
        if self.progress:
            try:
                self.progress.wait_all()
            finally:
                self.progress.close()


def run_jobs(plan: Plan, load: Callable[[], Any], make: Callable[[Any, Job], Any], progress: bool = True,
             desc: str = "clips") -> list[dict[str, Any]]:  # fmt: skip
    """Step 3: this process's share of the jobs left: one `load()` (the pipeline on this process's device) when the
    share is not empty, `make(pipe, job)` per job; returns this process's manifest lines."""
    share = Share(plan, progress, desc)
    if not share.jobs:
        share.finish()
        return []
    return share.run(load(), make)


__all__ = [
    "MANIFEST",
    "Job",
    "Manifest",
    "Plan",
    "Share",
    "common_folder",
    "expand_pattern",
    "job_device",
    "job_grid",
    "make_jobs",
    "parse_seeds",
    "plan_jobs",
    "process_state",
    "run_jobs",
    "settings_hash",
    "slug",
]
