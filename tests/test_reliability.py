"""Issue 11, "Nothing lost, no tracebacks": the red-team list re-run against the CLI.

Every case ends in one `error:` line (exit code 2) or a clean stop, with no traceback, none of the user's files
changed and no temporary file left (`nadm.outputs.safe_replace`, `nadm.weights.read_weights`, `nadm.signals`,
`nadm.hub`, `nadm.outputs.check_writable`). docs/reliability.md lists the cases and their outcomes.
Item 5 (resume with a damaged optimizer.bin) and item 12 (which prompt was cut) are tested with the training and
pipeline code they live in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from nadm.cli import main
from nadm.errors import NADMError
from nadm.io import read_video, write_video

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
SMALL = ["--frames", "2", "--height", "32", "--width", "32", "--steps", "1", "--quiet"]
TEMP_NAME = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]{8}")  # nadm's one temporary naming

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ helpers


def run_inprocess(capsys, *args) -> tuple[int, str, str]:
    """`nadm ARGS` through the real entry point in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m nadm ARGS` as its own process."""
    return subprocess.run([sys.executable, "-m", "nadm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or ENV, cwd=REPO)  # fmt: skip


def assert_one_error(code: int, err: str, message: str) -> str:
    """Exit code 2, exactly one `error:` line containing `message`, no traceback; returns that line."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative path -> bytes): the user's files before a run, to compare after."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[Path]:
    """nadm temporaries anywhere under folder."""
    return [p for p in folder.rglob(".*") if TEMP_NAME.match(p.name)]


def moving(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """n frames of a drifting random texture (nothing compresses it away)."""
    base = np.random.default_rng(seed).integers(0, 256, (h, w + n, 3), dtype=np.uint8)
    return np.stack([base[:, t : t + w] for t in range(n)])


def user_folder(root: Path) -> Path:
    """A folder of the user's own files, one in a subfolder."""
    root.mkdir(parents=True)
    (root / "thesis.tex").write_text("chapter 1")
    (root / "figures").mkdir()
    (root / "figures" / "plot.png").write_bytes(b"\x89PNG user figure")
    return root


@pytest.fixture(autouse=True)
def no_temporaries(tmp_path):
    """After every test: no nadm temporary is left anywhere in its folder."""
    yield
    assert temporaries(tmp_path) == []


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random SD base and NADM checkpoint, plus damaged copies and random files."""
    from nadm.tiny import build_tiny_base, build_tiny_motion

    root = tmp_path_factory.mktemp("models")
    build_tiny_base(root / "base")
    build_tiny_motion(root / "motion")
    rng = np.random.default_rng(0)
    for name in ("random.safetensors", "random.ckpt"):
        (root / name).write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for size in (100, 900_000):  # a truncated motion checkpoint: header cut, body cut
        copy = shutil.copytree(root / "motion", root / f"motion-cut{size}")
        os.truncate(copy / "motion_modules.safetensors", size)
    bad_json = shutil.copytree(root / "motion", root / "motion-badjson")
    (bad_json / "config.json").write_text('{"format": "nadm", oops')
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """SRC with one 40-frame video (raw footage for `data prepare`) and a captioned 2-clip training set."""
    root = tmp_path_factory.mktemp("data")
    write_video(moving(40, 48, 64), root / "src" / "a.mp4", fps=8)
    rows = ["video,caption"]
    for k in range(2):
        write_video(moving(12, 40, 48, seed=k), root / "train" / "videos" / f"clip{k}.mp4", fps=8)
        rows.append(f"clip{k}.mp4,texture drifting {k}")
    (root / "train" / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


# ------------------------------------------------- item 1: --overwrite replaces only what nadm wrote


def test_overwrite_refuses_a_folder_of_user_files_in_every_command(models, dataset, tmp_path, capsys):
    mine = user_folder(tmp_path / "mine")
    clip = write_video(moving(3), tmp_path / "in.mp4", fps=8)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ink mountains\n")
    json_file = tmp_path / "scores.json"
    json_file.write_text('{"my": "notes"}')
    (mine / "nadm").mkdir()  # compare's videos go to OUT/NAME/: here a user's file sits where video 0 would go
    (mine / "nadm" / "0000_seed0.mp4").write_bytes(b"user video")
    before = snapshot(mine)
    cases = [
        (["generate", "ink", "-o", mine, "--base", models / "base", "--motion", models / "motion", *SMALL], mine),
        (["interpolate", clip, "-o", mine, "--method", "crossfade"], mine),
        (["data", "prepare", dataset / "src", mine, "--quiet"], mine),
        (["data", "cache", dataset / "train", mine, "--base", models / "base", "--quiet"], mine),
        (["evaluate", "--fake", dataset / "train" / "videos", "--metrics", "flicker", "--json", json_file], json_file),
        (["compare", "--motion", f"nadm={models / 'motion'}", "--prompts", prompts, "--out", mine, "--base",
          models / "base", "--metrics", "flicker", "--frames", "2", "--height", "32", "--width", "32"], mine / "nadm" / "0000_seed0.mp4"),
    ]  # fmt: skip
    for args, target in cases:
        code, _, err = run_inprocess(capsys, *args, "--overwrite")
        line = assert_one_error(code, err, f"refusing to replace {target}")
        assert "nadm did not write" in line, line
        assert snapshot(mine) == before and json_file.read_text() == '{"my": "notes"}'
    # the message names one foreign file of the folder
    code, _, err = run_inprocess(capsys, "interpolate", clip, "-o", mine, "--method", "crossfade", "--overwrite")
    assert f"it holds {mine / 'thesis.tex'}, which nadm did not write" in err


def test_overwrite_replaces_what_nadm_wrote_and_refuses_what_was_added(dataset, tmp_path, capsys):
    clip = write_video(moving(3), tmp_path / "in.mp4", fps=8)
    out = tmp_path / "frames"
    assert run_inprocess(capsys, "interpolate", clip, "-o", out, "--method", "crossfade")[0] == 0
    assert run_inprocess(capsys, "interpolate", clip, "-o", out, "--method", "crossfade", "--times", "2", "--overwrite")[0] == 0
    assert len(read_video(out)[0]) == 9  # replaced: nadm wrote it
    (out / "notes.txt").write_text("mine")  # a user's file dropped into nadm's frame folder
    code, _, err = run_inprocess(capsys, "interpolate", clip, "-o", out, "--method", "crossfade", "--overwrite")
    assert_one_error(code, err, f"it holds {out / 'notes.txt'}, which nadm did not write")
    assert (out / "notes.txt").read_text() == "mine" and len(read_video(out)[0]) == 9

    # data prepare: its own dataset is replaced, one with a user's file added is not
    dst = tmp_path / "lpv"
    assert run_inprocess(capsys, "data", "prepare", dataset / "src", dst, "--quiet")[0] == 0
    manifest = json.loads((dst / "prepare.json").read_text())
    assert manifest["format"] == "nadm-dataset" and manifest["clips"]
    assert run_inprocess(capsys, "data", "prepare", dataset / "src", dst, "--quiet", "--overwrite")[0] == 0
    (dst / "videos" / "thesis.pdf").write_bytes(b"%PDF user")
    code, _, err = run_inprocess(capsys, "data", "prepare", dataset / "src", dst, "--quiet", "--overwrite")
    assert_one_error(code, err, f"it holds {dst / 'videos' / 'thesis.pdf'}, which nadm did not write")
    assert (dst / "videos" / "thesis.pdf").read_bytes() == b"%PDF user"


def test_train_overwrite_refuses_a_run_folder_with_user_files(models, dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.yaml").write_text("seed: 0\n")  # looks like a run folder ...
    (run / "notes.md").write_text("my lab notes")  # ... but holds the user's notes
    code, _, err = run_inprocess(capsys, "train", "--base", models / "base", "--data", dataset / "train", "-o", run,
                                 "--overwrite", "--quiet")  # fmt: skip
    assert_one_error(code, err, f"--output {run} holds {run / 'notes.md'}, which nadm did not write")
    assert (run / "notes.md").read_text() == "my lab notes"


# --------------------------------------- item 2: interrupted writes leave no temporary, stale ones are cleaned


def _interpolate_until_writing(args: list, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start `nadm interpolate ARGS`, send `sig` once its temporary PNG folder holds a few frames, wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "nadm", "interpolate", *map(str, args)], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            staged = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-") and p.is_dir()]
            if staged and len(list(staged[0].iterdir())) >= 3:
                proc.send_signal(sig)
                break
            time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_while_writing_a_png_folder_removes_the_temporary_and_keeps_the_old_output(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("user notes")
    src = write_video(moving(40, 320, 320), tmp_path / "in.mp4", fps=8)
    out = work / "frames"
    first = run_cli("interpolate", src, "-o", out, "--method", "crossfade")  # the earlier result to keep
    assert first.returncode == 0, first.stderr
    before = snapshot(work)
    args = [src, "-o", out, "--method", "crossfade", "--times", "2", "--overwrite"]  # 157 PNG frames to write
    killed = _interpolate_until_writing(args, out, signal.SIGTERM)
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr
    assert killed.stderr.strip().splitlines()[-1] == "Terminated." and "Traceback" not in killed.stderr
    assert temporaries(work) == [] and snapshot(work) == before  # old output and the user's file intact


def test_a_killed_runs_temporary_is_removed_by_the_next_run(tmp_path):
    src = write_video(moving(40, 320, 320), tmp_path / "in.mp4", fps=8)
    out = tmp_path / "frames"
    killed = _interpolate_until_writing([src, "-o", out, "--method", "crossfade", "--times", "2"], out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    left = temporaries(tmp_path)
    assert len(left) == 1 and left[0].name.startswith(".frames.tmp-")  # SIGKILL cannot be cleaned up after ...
    (tmp_path / ".frames.tmp-other").mkdir()  # (not nadm's naming: never touched)
    again = run_cli("interpolate", src, "-o", out, "--method", "crossfade")
    assert again.returncode == 0, again.stderr
    assert f"removed 1 temporary file(s) an interrupted run left beside {out}: {left[0].name}" in again.stderr
    assert temporaries(tmp_path) == [] and (tmp_path / ".frames.tmp-other").is_dir()  # ... the next run does it
    assert len(read_video(out)[0]) == 79


# ------------------------------------------ items 3 and 9: every weights file fails as one line naming it


@pytest.mark.parametrize("command", ["info", "generate", "train"])
@pytest.mark.parametrize("source, message", [
    ("motion-cut100", "motion-cut100/motion_modules.safetensors is damaged or not a weights file: invalid header length"),
    ("motion-cut900000", "motion-cut900000/motion_modules.safetensors is damaged or not a weights file: incomplete metadata"),
    ("random.safetensors", "random.safetensors is damaged or not a weights file: header too large"),
    ("random.ckpt", "random.ckpt is damaged or not a weights file: it is neither a zip archive nor a pickle"),
    ("motion-badjson", "motion-badjson/config.json is damaged: not valid JSON"),
])  # fmt: skip
def test_damaged_motion_weights_are_one_line(models, dataset, tmp_path, capsys, command, source, message):
    motion = models / source
    args = {
        "info": ["info", "--motion", motion],
        "generate": ["generate", "ink", "-o", tmp_path / "c.mp4", "--base", models / "base", "--motion", motion, *SMALL],
        "train": ["train", "--base", models / "base", "--init-motion", motion, "--data", dataset / "train",
                  "-o", tmp_path / "run", "--frames", "4", "--stride", "2", "--resolution", "32", "--set", "loss.m=1",
                  "--quiet"],
    }[command]  # fmt: skip
    code, _, err = run_inprocess(capsys, *args)
    line = assert_one_error(code, err, message)
    assert "weights_only" not in line and "hub" not in line
    assert not (tmp_path / "c.mp4").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_damaged_base_lora_and_adapter_files_are_one_line(models, tmp_path, capsys):
    common = ["generate", "ink", "-o", tmp_path / "c.mp4", "--motion", models / "motion", *SMALL]
    # item 9: a random single-file base is said to be damaged, not blamed on the hub's configs
    code, _, err = run_inprocess(capsys, *common, "--base", models / "random.safetensors")
    assert_one_error(code, err, f"{models / 'random.safetensors'} is damaged or not a weights file: header too large")
    code, _, err = run_inprocess(capsys, *common, "--base", models / "random.ckpt")
    assert_one_error(code, err, f"{models / 'random.ckpt'} is damaged or not a weights file")
    # a damaged LoRA
    code, _, err = run_inprocess(capsys, *common, "--base", models / "base", "--lora", f"{models / 'random.safetensors'}:0.5")
    assert_one_error(code, err, f"{models / 'random.safetensors'} is damaged or not a weights file")
    # a truncated noise adapter in an NADM checkpoint (the training-state reader is the same function)
    from nadm.checkpoint import load_checkpoint, save_checkpoint
    from nadm.losses import NoiseAdapter
    from nadm.tiny import TINY_MOTION
    from nadm.weights import read_weights

    weights = load_checkpoint(models / "motion")
    adapter = NoiseAdapter.from_config(TINY_MOTION).state_dict()
    ckpt = save_checkpoint(tmp_path / "with-adapter", weights.config, weights.motion, adapter)
    os.truncate(ckpt / "noise_adapter.safetensors", 1000)
    code, _, err = run_inprocess(capsys, "info", "--motion", ckpt)
    assert_one_error(code, err, f"{ckpt / 'noise_adapter.safetensors'} is damaged or not a weights file")
    with pytest.raises(NADMError, match="optimizer.bin is damaged or not a weights file"):
        (tmp_path / "optimizer.bin").write_bytes(b"PK\x03\x04 cut short")
        read_weights(tmp_path / "optimizer.bin")


class Opaque:
    """Not a tensor: a pickle holding it would need to run code to load."""


def test_weights_reader_names_every_kind_of_bad_file(tmp_path):
    import torch

    from nadm.weights import check_weights, read_weights

    torch.save({"a": torch.zeros(2)}, tmp_path / "good.ckpt")
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 3}, tmp_path / "wrapped.ckpt")
    torch.save({"model": Opaque()}, tmp_path / "objects.ckpt")  # a pickle that would run code: refused
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    shutil.copy(tmp_path / "good.ckpt", tmp_path / "cut.ckpt")
    os.truncate(tmp_path / "cut.ckpt", 200)
    assert set(read_weights(tmp_path / "good.ckpt")) == {"a"} and read_weights(tmp_path / "wrapped.ckpt")["a"].sum() == 2
    for name, message in [
        ("objects.ckpt", "it holds Python objects (test_reliability.Opaque), not only tensors"),
        ("tensor.pt", "is not a weights file: it holds a Tensor"),
        ("cut.ckpt", "is damaged or not a weights file: its zip archive is cut short or corrupt"),
        ("missing.safetensors", "weights file not found"),
    ]:
        for reader in (read_weights, check_weights):
            with pytest.raises(NADMError, match=re.escape(message)) as error:
                reader(tmp_path / name)
            assert "\n" not in str(error.value)


# ------------------------------------------ items 4 and 7: a read-only output fails before any model loads


def _read_only(folder: Path) -> list[str]:
    """Make `folder` unwritable for the CLI; returns the command prefix that runs it so. A normal user: a 0555
    folder. Root (who ignores permissions): a private mount namespace in which `folder` is a read-only tmpfs."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    prefix = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(folder)]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except OSError:
        ok = False
    if not ok:
        pytest.skip("running as root, and no private read-only mount can be made here (unshare --mount)")
    return prefix


def test_read_only_outputs_fail_before_any_model_loads(models, tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    write_video(moving(3), tmp_path / "in.mp4", fps=8)
    write_video(moving(12), tmp_path / "data" / "videos" / "a.mp4", fps=8)
    (tmp_path / "data" / "captions.csv").write_text("video,caption\na.mp4,texture\n")
    prefix = _read_only(readonly)
    bad = models / "random.safetensors"  # were any model loaded first, its error would show instead
    cases = {
        "generate": ["generate", "ink", "-o", readonly / "c.mp4", "--base", models / "base", "--motion", bad, *SMALL],
        "interpolate": ["interpolate", tmp_path / "in.mp4", "-o", readonly / "x.mp4"],
        "train": ["train", "--base", bad, "--data", tmp_path / "data", "-o", readonly / "run", "--quiet"],
        "data prepare": ["data", "prepare", tmp_path / "data", readonly / "lpv", "--quiet"],
        "data cache": ["data", "cache", tmp_path / "data", readonly / "cache", "--base", bad, "--quiet"],
        "evaluate": ["evaluate", "--fake", tmp_path / "data" / "videos", "--metrics", "flicker", "--json", readonly / "s.json"],
        "selftest": ["selftest", "--keep", readonly / "keep"],
    }  # fmt: skip
    try:
        for name, args in cases.items():
            run = subprocess.run([*prefix, sys.executable, "-m", "nadm", *map(str, args)], capture_output=True,
                                 text=True, timeout=300, env=ENV, cwd=REPO)  # fmt: skip
            line = assert_one_error(run.returncode, run.stderr, f"cannot write to {readonly}")
            assert "Permission denied" in line or "Read-only file system" in line, (name, line)
        assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o755)


# ------------------------------------------ item 6: offline without HF_HUB_OFFLINE fails within seconds


@pytest.fixture
def silent_hub():
    """HF_ENDPOINT pointing at a 127.0.0.1 port that accepts connections and never answers (a hub behind a dead
    network); HF_HUB_OFFLINE unset and an empty hub cache."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    cache = Path(tempfile.mkdtemp(prefix="nadm-hf-"))
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}", HF_HOME=str(cache))
    yield env
    server.close()
    shutil.rmtree(cache, ignore_errors=True)


def _closed_port_env(env: dict) -> dict:
    """The same, with the endpoint on a port nothing listens on (connection refused)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{port}"}


def timed_run(args: list, env: dict) -> tuple[int, list[tuple[float, str]], float]:
    """`python -m nadm ARGS`: exit code, stderr lines with the time each arrived, and the time it ended."""
    proc = subprocess.Popen([sys.executable, "-m", "nadm", *map(str, args)], env=env, cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    lines = [(time.monotonic(), line.rstrip("\n")) for line in proc.stderr]
    code = proc.wait(timeout=300)
    return code, lines, time.monotonic()


def test_unreachable_hub_fails_fast_with_one_line(models, dataset, silent_hub, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("texture\ntexture\n")
    generate = ["generate", "ink", "-o", tmp_path / "c.mp4", "--base", models / "base", *SMALL]
    runs = [
        (generate, silent_hub, "cannot load motion weights 'guoyww/animatediff-motion-adapter-v1-5-2' from the Hugging Face hub"),
        (["evaluate", "--fake", dataset / "train" / "videos", "--metrics", "clip_text", "--prompts", prompts], silent_hub,
         "cannot load the CLIP model 'openai/clip-vit-large-patch14'"),
    ]  # fmt: skip
    for args, env, message in runs:
        code, lines, end = timed_run(args, env)
        err = "\n".join(line for _, line in lines)
        assert_one_error(code, err, message)
        assert "Retrying" not in err and not (tmp_path / "c.mp4").exists()
        # the probe gives up after 3 s; then offline mode fails at once (without it: 36-50 s of retries)
        offline = next(t for t, line in lines if "did not answer within 3 s: working offline" in line)
        assert end - offline < 10, f"{args[0]}: {end - offline:.1f} s from going offline to the error"
    # the probe itself: at most its 3 s timeout against a hub that never answers, at once against a closed port
    from nadm import hub

    for env, limit in ((silent_hub, 5.0), (_closed_port_env(silent_hub), 1.0)):
        start = time.monotonic()
        assert hub.probe(env["HF_ENDPOINT"]) is False
        assert time.monotonic() - start < limit


# ------------------------------------------------------------------- item 8: a LoRA scale that is no number


def test_lora_scale_that_is_not_a_number_is_named(models, tmp_path, capsys):
    from nadm.base import LoraSpec

    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"x")
    code, _, err = run_inprocess(capsys, "generate", "ink", "-o", tmp_path / "c.mp4", "--base", models / "base",
                                 "--motion", models / "motion", "--lora", f"{lora}:abc", *SMALL)  # fmt: skip
    assert_one_error(code, err, f"LoRA scale 'abc' in '{lora}:abc' is not a number")
    assert LoraSpec.parse(f"{lora}:0.5") == LoraSpec(lora, 0.5) and LoraSpec.parse(str(lora)).scale == 1.0
    with pytest.raises(NADMError, match="LoRA file not found"):
        LoraSpec.parse(f"{tmp_path / 'other.safetensors'}:abc")
    with pytest.raises(NADMError, match="must be a finite number"):
        LoraSpec.parse(f"{lora}:nan")


# ----------------------------------------------------------- item 10: GIF rates beyond its 1/100 s delays


def test_gif_rate_beyond_the_format_is_warned_and_recorded(tmp_path, capsys):
    from PIL import Image

    src = write_video(moving(3), tmp_path / "in", fps=500)
    code, out, err = run_inprocess(capsys, "interpolate", src, "-o", tmp_path / "fast.gif", "--method", "crossfade")
    assert code == 0, err
    assert "warning: GIF frame delays are whole 1/100 s: 1000 fps is written as 100 fps in fast.gif" in err
    assert "500 -> 100 fps" in out
    side = json.loads((tmp_path / "fast.gif.json").read_text())
    assert (side["fps"], side["fps_requested"], side["interpolation"]["fps_out"]) == (100.0, 1000.0, 1000)
    with Image.open(tmp_path / "fast.gif") as im:
        assert im.info["duration"] == 10
    assert read_video(tmp_path / "fast.gif")[1] == 100.0
    write_video(moving(3), tmp_path / "ok.gif", fps=10)  # a rate GIF holds: no warning, no extra key
    assert "warning" not in capsys.readouterr().err
    assert "fps_requested" not in json.loads((tmp_path / "ok.gif.json").read_text())


# ----------------------------------------------------------- item 11: huge interpolation jobs need --force


def test_interpolate_refuses_huge_frame_counts_unless_forced(tmp_path, capsys):
    src = write_video(moving(16, 16, 16), tmp_path / "in.mp4", fps=8)
    code, _, err = run_inprocess(capsys, "interpolate", src, "-o", tmp_path / "x.mp4", "--times", "12")
    assert_one_error(code, err, "--times 12 would make 61,441 frames from 16 (4096x")
    assert "pass --force to make them anyway" in err and not (tmp_path / "x.mp4").exists()
    small = write_video(moving(3, 16, 16), tmp_path / "small.mp4", fps=8)
    code, out, err = run_inprocess(capsys, "interpolate", small, "-o", tmp_path / "y.mp4", "--times", "10",
                                   "--method", "crossfade", "--force")  # fmt: skip
    assert code == 0 and "3 -> 2049 frames" in out, err


# -------------------------------- item 13: public file modes; `nadm info` counts the adapter training builds


def test_checkpoint_files_are_public_and_info_counts_the_trained_adapter(models, dataset, tmp_path, capsys):
    from safetensors import safe_open

    public = 0o666 & ~_umask()
    for name in ("config.json", "motion_modules.safetensors"):
        assert stat.S_IMODE((models / "motion" / name).stat().st_mode) == public, name
    code, _, err = run_inprocess(capsys, "train", "--base", models / "base", "--init-motion", models / "motion",
                                 "--data", dataset / "train", "-o", tmp_path / "run", "--frames", "4", "--stride", "2",
                                 "--resolution", "32", "--set", "loss.m=1", "--max-steps", "1", "--quiet")  # fmt: skip
    assert code == 0, err
    export = tmp_path / "run" / "checkpoints" / "checkpoint-000001" / "nadm"
    for file in export.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == public, file
    with safe_open(str(export / "noise_adapter.safetensors"), "pt") as f:
        trained = sum(int(np.prod(f.get_slice(key).get_shape())) for key in f.keys())
    for motion in (models / "motion", export):  # the init weights and the trained checkpoint
        code, out, err = run_inprocess(capsys, "info", "--motion", motion)
        assert code == 0, err
        assert f"trainable (noise adapter) {trained:,}" in out
    assert f"noise adapter (in --motion) {trained:,}" in out


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
