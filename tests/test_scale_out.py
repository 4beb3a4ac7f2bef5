"""Generation at scale (issue 16): prompt x seed jobs split between processes (2 CPU processes over gloo, launched as
`accelerate launch` does: torch's elastic launcher), resumable, with a manifest; on the tiny models."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nadm.cli import main
from nadm.errors import NADMError
from nadm.io import read_video
from nadm.jobs import MANIFEST, Manifest, expand_pattern, parse_seeds

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
TINY = ["--frames", "4", "--height", "32", "--width", "32", "--steps", "2", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: single-threaded tiny models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random SD base, a tiny NADM checkpoint and a prompts file."""
    from nadm.tiny import build_tiny_base, build_tiny_motion

    root = tmp_path_factory.mktemp("scale")
    build_tiny_base(root / "base")
    build_tiny_motion(root / "motion")
    (root / "prompts.txt").write_text("ink mountains at dawn\na river, boats\nmist over pines\n")
    return root


def model_args(models: Path) -> list[str]:
    return ["--base", str(models / "base"), "--motion", str(models / "motion")]


def run_inprocess(capsys, *args) -> tuple[int, str, str]:
    """`nadm ARGS` through the real entry point in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, processes: int = 2) -> list[str]:
    """The command line of `nadm ARGS` in `processes` CPU processes (gloo), as accelerate launch starts GPUs."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
            str(_free_port()), "-m", "nadm", *map(str, args)]  # fmt: skip


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file under folder but the manifest (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}  # fmt: skip


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def manifest_lines(folder: Path) -> list[dict]:
    return Manifest(folder / MANIFEST).read()[0]


# ---------------------------------------------------------------------------------------- job list


def test_seed_lists_ranges_and_output_patterns():
    from nadm import jobs, pipeline

    assert parse_seeds("0,3,7") == [0, 3, 7] and parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds(" 5 , 0-2,10-11") == [5, 0, 1, 2, 10, 11] and parse_seeds("7-7") == [7]
    for text, message in [("3-1", "runs backwards: write 1-3"), ("0,x", "takes integers and ranges"), ("", "takes"),
                          ("0-", "takes"), ("-2", "takes"), ("1,0-2", "gives seed 1 twice"), (str(2**63), "below 2**63")]:
        with pytest.raises(NADMError, match=re.escape(message)):
            parse_seeds(text)
    assert jobs.SEED_LIMIT == pipeline.SEED_LIMIT
    prompts = ["first prompt", "Second: a boat!"]
    assert expand_pattern("o/{i:02d}-{slug}-{seed}.mp4", prompts, [0, 5]) == [
        Path("o/01-first-prompt-0.mp4"), Path("o/01-first-prompt-5.mp4"), Path("o/02-second-a-boat-0.mp4"),
        Path("o/02-second-a-boat-5.mp4")]  # fmt: skip
    assert expand_pattern("clip.mp4", ["one"], [3]) == [Path("clip.mp4")]  # one clip needs no placeholder
    for pattern, seeds, message in [
        ("o/clip.mp4", [0, 1], "with 4 clips, -o must be a pattern with {i} or {slug} and {seed}"),
        ("o/{i}.mp4", [0, 1], "gives o/1.mp4 for seeds 0 and 1 of prompt 1: add {seed}"),
        ("o/{seed}.mp4", [0, 1], "gives o/0.mp4 for prompts 1 and 2: add {i}"),
        ("o/{seed}.mp4", [None], "{seed} in 'o/{seed}.mp4' needs --seed or --seeds"),
        ("o/{n}.mp4", [0], "unknown placeholder {n}"),
    ]:
        with pytest.raises(NADMError, match=re.escape(message)):
            expand_pattern(pattern, prompts, seeds)
    with pytest.raises(NADMError, match=re.escape("with 3 clips, -o must be a pattern with {seed}, e.g. clips/{seed}.mp4")):
        expand_pattern("c.mp4", ["one"], [0, 1, 2])


# --------------------------------------------------------------------------------------------- manifest


def _append_many(path: str, rank: int, count: int) -> None:
    manifest = Manifest(Path(path))
    for k in range(count):
        manifest.append({"path": f"{rank}-{k}.mp4", "settings_hash": "0" * 16, "rank": rank, "pad": "x" * 9000})


def test_concurrent_appends_never_interleave_and_a_torn_line_is_skipped(tmp_path):
    """Four processes append 9 kB lines (over the pipe-atomic size) at once: every line comes back whole."""
    path = tmp_path / MANIFEST
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), rank, 60)) for rank in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    records, end = Manifest(path).read()
    assert len(records) == 240 and end == path.stat().st_size
    assert {r["path"] for r in records} == {f"{rank}-{k}.mp4" for rank in range(4) for k in range(60)}
    with open(path, "ab") as handle:  # a writer killed mid-line
        handle.write(b'{"path": "cut.mp4", "settings_')
    assert len(Manifest(path).read()[0]) == 240  # the cut line is not read
    Manifest(path).append({"path": "after.mp4", "settings_hash": "1" * 16})
    records = Manifest(path).read()[0]
    assert len(records) == 241 and records[-1]["path"] == "after.mp4"  # the cut line stays one bad line, skipped
    Manifest(path).check()  # still nadm's
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / MANIFEST).write_text('{"my": "notes"}\n')
    with pytest.raises(NADMError, match="nadm did not write it"):
        Manifest(tmp_path / "mine" / MANIFEST).check()


# --------------------------------------------------------------------------------- one process vs two


def test_two_processes_make_the_same_files_as_one(models, tmp_path, capsys):
    """2 prompts x 2 seeds with interpolation: the 2-process run's files equal the 1-process run's, byte for byte
    (videos and sidecars), and the manifest lists each clip once, made by both ranks."""
    (tmp_path / "p.txt").write_text("ink mountains at dawn\na river, boats\n")
    common = ["--prompts", tmp_path / "p.txt", "--seeds", "0,7", *model_args(models), *TINY]
    code, _, err = run_inprocess(capsys, "generate", "-o", tmp_path / "one" / "{i}-{seed}.mp4", *common)
    assert code == 0, err
    done = subprocess.run(launch("generate", "-o", tmp_path / "two" / "{i}-{seed}.mp4", *common), env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    names = ["1-0.mp4", "1-7.mp4", "2-0.mp4", "2-7.mp4"]
    assert sorted(one) == sorted(two) == sorted(names + [f"{n}.json" for n in names])
    for name in names:
        a, b = read_video(tmp_path / "one" / name)[0], read_video(tmp_path / "two" / name)[0]
        assert a.shape == (7, 32, 32, 3) and np.array_equal(a, b)
        assert one[name] == two[name] and one[f"{name}.json"] == two[f"{name}.json"]
    lines = manifest_lines(tmp_path / "two")
    assert sorted(line["path"] for line in lines) == names
    assert {line["rank"] for line in lines} == {0, 1} and {line["processes"] for line in lines} == {2}
    assert len({line["run"] for line in lines}) == 1 and all(line["seconds"] > 0 for line in lines)
    for line in lines:
        side = json.loads(one[f"{line['path']}.json"])
        assert (line["seed"], line["prompt"]) == (side["seed"], side["prompt"])
        assert line["settings_hash"] == side["job"]["settings_hash"]


def test_compare_in_two_processes_scores_on_the_main_process(models, tmp_path, capsys):
    """`nadm compare` on the same jobs: 2 checkpoints x 2 seeds in 2 processes give the 1-process run's videos and
    scores; only the main process scores and reports."""
    (tmp_path / "p.txt").write_text("mist over pines\n")
    common = ["--motion", f"a={models / 'motion'}", "--motion", f"b={models / 'motion'}", "--base", models / "base",
              "--prompts", tmp_path / "p.txt", "--seeds", "0-1", "--frames", "4", "--height", "32", "--width", "32",
              "--steps", "2", "--no-interpolate", "--metrics", "flicker", "--device", "cpu", "--quiet"]  # fmt: skip
    code, _, err = run_inprocess(capsys, "compare", "--out", tmp_path / "one", "--json", tmp_path / "one.json", *common)
    assert code == 0, err
    done = subprocess.run(launch("compare", "--out", tmp_path / "two", "--json", tmp_path / "two.json", *common),
                          env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two") and len(outputs(tmp_path / "two")) == 8
    assert done.stdout.count("wrote ") == 1  # the report, once
    one, two = (json.loads((tmp_path / f"{n}.json").read_text())["results"] for n in ("one", "two"))
    assert one == two and set(two) == {"a", "b"}
    lines = manifest_lines(tmp_path / "two")
    assert sorted(line["path"] for line in lines) == sorted(f"{m}/0000_seed{s}.mp4" for m in "ab" for s in (0, 1))
    assert {line["rank"] for line in lines} == {0, 1} and len({line["run"] for line in lines}) == 1


# ---------------------------------------------------------------------------------------- kill, restart


def test_sigterm_midway_then_restart_makes_only_what_is_missing(models, tmp_path):
    """12 clips in 2 processes, SIGTERM to the launcher once 3 are listed: no temporary is left; the restart skips
    the finished clips (their files untouched), makes the rest, and the manifest lists each clip once."""
    out = tmp_path / "out"
    args = ["generate", "--prompts", models / "prompts.txt", "--seeds", "0-3", "-o", out / "{i:02d}-{seed}.mp4",
            "--no-interpolate", *model_args(models), *TINY]  # fmt: skip
    run = subprocess.Popen(launch(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while len(manifest_lines(out)) < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0 and "Terminated." in stderr, stderr[-3000:]
    assert temporaries(out) == []
    made = sorted(p.name for p in out.glob("*.mp4"))
    assert 3 <= len(made) < 12, made  # killed midway
    assert all((out / f"{name}.json").is_file() for name in made)
    first = manifest_lines(out)
    assert {line["path"] for line in first} <= set(made)
    stamps = {name: (out / name).stat() for name in made}

    restart = subprocess.run(launch(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert f"{len(made)} of 12 clips already made with the same settings: skipped" in restart.stderr
    everything = [f"{i:02d}-{s}.mp4" for i in (1, 2, 3) for s in range(4)]
    assert sorted(p.name for p in out.glob("*.mp4")) == everything and temporaries(out) == []
    for name, before in stamps.items():  # skipped, not made again
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    lines = manifest_lines(out)
    assert sorted(line["path"] for line in lines) == everything  # each clip once
    second = [line for line in lines if line["run"] != first[0]["run"]]
    made_now = sorted(line["path"] for line in second if line["seconds"] is not None)
    assert made_now == sorted(set(everything) - set(made))  # the restart made only what was missing
    ranks = {line["rank"] for line in second if line["seconds"] is not None}
    assert ranks == ({0, 1} if len(made_now) > 1 else {0})  # the clips left were split between the two


# ------------------------------------------------------------------------------------------ resuming rules


def test_same_settings_skip_other_settings_need_overwrite(models, tmp_path, capsys):
    out = tmp_path / "c" / "{seed}.mp4"
    common = ["ink mountains", "--seeds", "1,2", *model_args(models), *TINY, "--no-interpolate"]
    assert run_inprocess(capsys, "generate", "-o", out, *common)[0] == 0
    first = outputs(tmp_path / "c")
    code, stdout, err = run_inprocess(capsys, "generate", "-o", out, *common)
    assert code == 0 and "2 of 2 clips already made with the same settings: skipped" in err and "wrote" not in stdout
    code, _, err = run_inprocess(capsys, "generate", "-o", out, *common, "--steps", "3")
    assert code == 2 and f"error: {tmp_path / 'c' / '1.mp4'} already exists: pass --overwrite to replace it " \
                          "(made with other settings: steps 2 -> 3)" in err  # fmt: skip
    assert outputs(tmp_path / "c") == first
    code, stdout, err = run_inprocess(capsys, "generate", "-o", out, *common, "--steps", "3", "--overwrite")
    assert code == 0 and stdout.count("wrote") == 2, err
    assert json.loads((tmp_path / "c" / "2.mp4.json").read_text())["steps"] == 3
    assert len(manifest_lines(tmp_path / "c")) == 4  # two clips, each made twice


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def no_loading(monkeypatch):
    """Any model load fails the test: bad input must be refused before."""
    import nadm.checkpoint
    import nadm.pipeline

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(nadm.pipeline.NADMPipeline, "from_pretrained", loaded)
    monkeypatch.setattr(nadm.checkpoint, "load_motion_source", loaded)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "9-2", "-o", "{out}/{seed}.mp4"], "--seeds range '9-2' runs backwards: write 2-9"),
    (["--seeds", "0,1,b", "-o", "{out}/{seed}.mp4"], "--seeds takes integers and ranges like 0,3,7 or 0-39, got 'b'"),
    (["--seeds", "0-3", "-o", "{out}/clip.mp4"], "with 4 clips, -o must be a pattern with {seed}"),
    (["--prompts", "{prompts}", "--seeds", "0-1", "-o", "{out}/{i}.mp4"], "for seeds 0 and 1 of prompt 1: add {seed}"),
    (["--prompts", "{prompts}", "--seeds", "4", "-o", "{out}/{seed}.mp4"], "for prompts 1 and 2: add {i}"),
    (["--seed", "3", "--seeds", "0-3", "-o", "{out}/{seed}.mp4"], "give --seed or --seeds, not both"),
    (["--prompts", "{prompts}", "-o", "{out}/{seed}-{i}.mp4"], "needs --seed or --seeds"),
    (["--seeds", "0-1", "-o", "{file}/{seed}.mp4"], "is a file"),
])  # fmt: skip
def test_bad_input_is_one_line_before_any_model_loads(models, no_loading, tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("not a folder")
    fill = {"{out}": str(tmp_path / "out"), "{prompts}": str(models / "prompts.txt"), "{file}": str(tmp_path / "file")}
    args = [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in args]
    prompt = [] if "--prompts" in args else ["ink"]
    code, _, err = run_inprocess(capsys, "generate", *prompt, *args, *model_args(models), *TINY)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "out").exists()


def test_a_user_manifest_and_a_bad_compare_seed_are_refused(models, no_loading, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST).write_text("my own notes\n")
    code, _, err = run_inprocess(capsys, "generate", "ink", "--seeds", "0-1", "-o", tmp_path / "out" / "{seed}.mp4",
                                 *model_args(models), *TINY)  # fmt: skip
    assert code == 2 and "nadm did not write it" in err and (tmp_path / "out" / MANIFEST).read_text() == "my own notes\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST]
    code, _, err = run_inprocess(capsys, "compare", "--motion", f"nadm={models / 'motion'}", "--prompts",
                                 models / "prompts.txt", "--seeds", "0-x", "--out", tmp_path / "cmp", "--metrics",
                                 "flicker")  # fmt: skip
    assert code == 2 and "error: --seeds takes integers and ranges" in err and not (tmp_path / "cmp").exists()


def test_an_unwritable_output_folder_fails_before_any_model_loads(models, tmp_path):
    from test_reliability import _read_only

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    prefix = _read_only(readonly)
    bad = tmp_path / "random.safetensors"  # were any model loaded first, its error would show instead
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    try:
        run = subprocess.run([*prefix, sys.executable, "-m", "nadm", "generate", "ink", "--seeds", "0-3", "-o",
                              str(readonly / "{seed}.mp4"), "--base", str(models / "base"), "--motion", str(bad), *TINY],
                             capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)  # fmt: skip
    finally:
        readonly.chmod(0o755)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 2 and len(errors) == 1 and f"cannot write to {readonly}" in errors[0], run.stderr
    assert list(readonly.iterdir()) == []
