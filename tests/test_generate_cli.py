"""`nadm selftest` and `nadm generate` run as a user would (subprocesses), outputs decoded, every error case checked."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nadm.io import read_video

# Tiny models on a shared 2-core machine: one thread per process avoids OpenMP oversubscription stalls.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
SMALL = ["--frames", "4", "--height", "32", "--width", "48", "--steps", "2"]


def nadm(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nadm", *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV, cwd=cwd
    )


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """`nadm selftest --keep DIR` once for the module: its run, and DIR with base/ and motion/."""
    root = tmp_path_factory.mktemp("selftest") / "keep"
    return nadm("selftest", "--keep", root), root


def test_selftest_passes_and_keeps_usable_models(kept):
    run, root = kept
    assert run.returncode == 0, run.stdout + run.stderr
    for stage in ("build tiny base", "build tiny NADM checkpoint", "load pipeline", "generate 16 frames 64x64",
                  "write mp4", "read back", "same seed again"):  # fmt: skip
        assert stage in run.stdout
    assert "versatile + sparse-causal" in run.stdout and "31 frames at 15.5 fps" in run.stdout
    assert "selftest passed in" in run.stdout
    assert (root / "base" / "model_index.json").is_file() and (root / "motion" / "config.json").is_file()
    frames, fps = read_video(root / "selftest.mp4")
    assert frames.shape == (31, 64, 64, 3) and fps == 15.5


def test_selftest_refuses_a_used_keep_folder(kept):
    _, root = kept
    run = nadm("selftest", "--keep", root)
    assert run.returncode == 2 and f"error: {root / 'base'} already exists" in run.stderr


def test_generate_mp4_interpolated_on_the_kept_models(kept, tmp_path):
    _, root = kept
    out = tmp_path / "clip.mp4"
    run = nadm("generate", "ink mountains", "-o", out, "--base", root / "base", "--motion", root / "motion", *SMALL,
               "--seed", 7, "--negative", "blurry", "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}: 7 frames (4 generated), 48x32, 14 fps, seed 7" in run.stdout
    frames, fps = read_video(out)
    assert frames.shape == (7, 32, 48, 3) and fps == 14.0  # 2N-1 frames; 7 frames last as long as 4 at 8 fps
    side = json.loads(Path(f"{out}.json").read_text())
    assert (side["prompt"], side["negative_prompt"], side["seed"], side["seed_drawn"]) == ("ink mountains", "blurry", 7, False)
    assert (side["steps"], side["guidance"], side["scheduler"]) == (2, 8.0, "ddim")
    assert side["scheduler_config"]["beta_schedule"] == "linear" and side["scheduler_config"]["steps_offset"] == 1
    assert (side["keyframes"], side["frames_out"], side["frames"], side["fps"]) == (4, 7, 7, 14.0)
    assert side["size"] == {"height": 32, "width": 48} and (side["width"], side["height"]) == (48, 32)
    assert side["base"]["source"] == str(root / "base") and side["base"]["loras"] == []
    assert side["motion"] == {"source": str(root / "motion"), "format": "nadm", "kind": "nadm"}
    assert (side["device"], side["dtype"]) == ("cpu", "float32")
    assert side["versions"]["torch"] and side["versions"]["diffusers"] and side["nadm_version"]


def test_generate_batch_from_a_prompts_file_without_interpolation(kept, tmp_path):
    _, root = kept
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# landscapes\nink mountains at dawn\n\nA river, boats!\n", encoding="utf-8")
    run = nadm("generate", "--prompts", prompts, "-o", tmp_path / "clips" / "{i:02d}-{slug}.mp4", "--base", root / "base",
               "--motion", root / "motion", *SMALL, "--no-interpolate", "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    outs = [tmp_path / "clips" / "01-ink-mountains-at-dawn.mp4", tmp_path / "clips" / "02-a-river-boats.mp4"]
    seeds = []
    for out, prompt in zip(outs, ["ink mountains at dawn", "A river, boats!"]):
        frames, fps = read_video(out)
        assert frames.shape == (4, 32, 48, 3) and fps == 8.0  # N frames at 8 fps without interpolation
        side = json.loads(Path(f"{out}.json").read_text())
        assert side["prompt"] == prompt and side["seed_drawn"] and side["interpolation"] is None
        seeds.append(side["seed"])
    assert all(isinstance(s, int) for s in seeds) and seeds[0] != seeds[1]  # each clip draws and records its own


# ------------------------------------------------------------------------------------------- errors

MISSING = "/nonexistent/nadm-test"
FLAGS = ("--no-overwrite", "--cpu-offload")  # options without a value


@pytest.mark.parametrize("name, args, message", [
    ("height", ["--height", "36"], "height must be a positive multiple of 8 (the VAE downsamples by 8), got 36"),
    ("width", ["--width", "100"], "width must be a positive multiple of 8"),
    ("few frames", ["--frames", "1"], "frames must be at least 2, got 1"),
    ("long context", ["--context", "33"], "context must be at most 32, the motion module's position-encoding length, got 33"),
    ("extension", ["-o", "{tmp}/clip.avi"], "unsupported output extension '.avi'"),
    ("exists", ["--no-overwrite"], "already exists: pass --overwrite to replace it"),
    ("base file", ["--base", f"{MISSING}/model.safetensors"], f"base checkpoint not found: {MISSING}/model.safetensors"),
    ("base folder", ["--base", f"{MISSING}/sd15"], f"base model not found: {MISSING}/sd15"),
    ("base config", ["--base-config", f"{MISSING}/cfg"], "--base-config applies to single-file (.safetensors/.ckpt) base"),
    ("device", ["--device", "cuda:7"], "device 'cuda:7' is not available here"),
    ("compile offload", ["--compile", "default", "--cpu-offload"], "compile and cpu_offload do not mix"),
    ("motion file", ["--motion", f"{MISSING}/mm.ckpt"], f"motion weights not found: {MISSING}/mm.ckpt"),
    ("lora file", ["--lora", f"{MISSING}/style.safetensors:0.7"], f"LoRA file not found: {MISSING}/style.safetensors"),
    ("prompts file", ["--prompts", f"{MISSING}/prompts.txt"], f"prompts file not found: {MISSING}/prompts.txt"),
    ("hub base", ["--base", "nobody/no-such-sd"], "cannot load 'nobody/no-such-sd' from the Hugging Face hub"),
    ("hub motion", ["--motion", "nobody/no-such-motion"], "cannot load motion weights 'nobody/no-such-motion' from the Hugging Face hub"),
])  # fmt: skip
def test_errors_are_one_line_exit_2_and_touch_nothing(kept, tmp_path, name, args, message):
    _, root = kept
    opts = {"-o": str(tmp_path / "clip.mp4"), "--base": str(root / "base"), "--motion": str(root / "motion")}
    extra, rest = [], iter(args)
    for option in rest:
        if option in FLAGS:
            extra += [] if option == "--no-overwrite" else [option]
            continue
        value = next(rest).replace("{tmp}", str(tmp_path))
        if option in opts:
            opts[option] = value
        else:
            extra += [option, value]
    out = Path(opts["-o"])
    out.write_bytes(b"precious")  # a previous result (nadm's: it has nadm's sidecar) that must survive any failure
    side = Path(f"{out}.json")
    side.write_text('{"nadm_version": "0"}')
    overwrite = [] if "--no-overwrite" in args else ["--overwrite"]
    prompt = [] if "--prompts" in extra else ["ink mountains"]
    run = nadm("generate", *prompt, *[x for kv in opts.items() for x in kv], *SMALL, *extra, *overwrite, "--quiet")
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert out.read_bytes() == b"precious" and side.read_text() == '{"nadm_version": "0"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, side.name])
    if name.startswith("hub"):
        assert "pass a local path" in errors[0]


# ------------------------------------------------------------------------------- batch output names


def test_prompts_file_and_output_pattern(tmp_path):
    from nadm.commands.generate import expand_pattern, read_prompts
    from nadm.errors import NADMError

    file = tmp_path / "p.txt"
    file.write_text("  first prompt \n# a comment\n\nSecond: a boat!\n", encoding="utf-8")
    prompts = read_prompts(file)
    assert prompts == ["first prompt", "Second: a boat!"]
    assert expand_pattern("out/{i:03d}-{slug}.gif", prompts) == [Path("out/001-first-prompt.gif"), Path("out/002-second-a-boat.gif")]
    for pattern, message in [
        ("clip.mp4", "must be a pattern with {i} or {slug}"),
        ("{n}.mp4", "unknown placeholder {n}"),
        ("{i:q}.mp4", "bad output pattern"),
    ]:
        with pytest.raises(NADMError, match=re.escape(message)):
            expand_pattern(pattern, prompts)
    with pytest.raises(NADMError, match="gives same.mp4 for prompts 1 and 2"):
        expand_pattern("same{slug:.0}.mp4", prompts)
    file.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(NADMError, match="no prompts in"):
        read_prompts(file)
