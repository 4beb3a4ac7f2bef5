"""`nadm --version` and `nadm info`, run as a user would (a subprocess)."""

import re
import subprocess
import sys

import pytest

from nadm import __version__
from nadm.checkpoint import save_checkpoint
from nadm.motion import build_video_unet, motion_state_dict
from nadm.tiny import TINY_MOTION, build_tiny_base, tiny_unet


def nadm(*args):
    return subprocess.run([sys.executable, "-m", "nadm", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_version():
    r = nadm("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_info_counts_parameters(tmp_path):
    base = build_tiny_base(tmp_path / "base")
    unet2d = tiny_unet()
    video = build_video_unet(unet2d, TINY_MOTION)
    save_checkpoint(tmp_path / "motion", TINY_MOTION, motion_state_dict(video))
    r = nadm("info", "--base", base, "--motion", tmp_path / "motion")
    assert r.returncode == 0, r.stderr
    assert "cpu" in r.stdout and "diffusers" in r.stdout
    frozen = sum(p.numel() for p in unet2d.parameters())
    motion = sum(v.numel() for k, v in video.named_parameters() if "motion_modules" in k)
    assert f"frozen (SD UNet)         {frozen:,}" in r.stdout
    assert f"trainable (motion)       {motion:,}" in r.stdout
    assert "nadm (attn1=versatile, attn2=sparse_causal)" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--motion", "/nonexistent/mm.ckpt"], "motion weights not found"),
    (["--base", "/nonexistent/base.safetensors"], "base checkpoint not found"),
])
def test_info_bad_input_is_one_line(args, message):
    r = nadm("info", *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len([l for l in r.stderr.splitlines() if l.startswith("error:")]) == 1


def test_unknown_command_and_exit_codes_pass_through():
    r = nadm("no-such-command")
    assert r.returncode == 2 and "No such command" in r.stderr
    r = nadm("--help")
    assert r.returncode == 0 and "info" in r.stdout


@pytest.mark.parametrize("items, plain, message", [
    (("a",), False, "--opt takes NAME=DIR, got 'a'"),
    (("=x",), False, "--opt takes NAME=DIR, got '=x'"),
    (("a= ",), False, "--opt takes NAME=DIR, got 'a= '"),
    (("a=x", " a =y"), False, "thing name 'a' is given twice"),
    (("../up=x",), True, "thing name '../up' must be a plain folder name"),
    ((".=x",), True, "thing name '.' must be a plain folder name"),
])
def test_named_options_refuse_malformed_items(items, plain, message):
    from nadm.commands.options import parse_named
    from nadm.errors import NADMError

    with pytest.raises(NADMError, match=re.escape(message)):
        parse_named(items, "--opt", "DIR", "thing", plain=plain)


def test_named_options_keep_order_and_strip():
    from nadm.commands.options import parse_named

    got = parse_named(("b = one", "a=two=2", "../x=3"), "--opt", "DIR", "thing")
    assert list(got.items()) == [("b", "one"), ("a", "two=2"), ("../x", "3")]


@pytest.mark.parametrize("args, message", [
    (["compare", "--motion", "a/b=ckpt", "--prompts", "prompts.txt", "--out", "out"],
     "motion name 'a/b' must be a plain folder name (letters, digits, . _ + -)"),
    (["study", "create", "--system", "A=x", "--system", "A=y", "-o", "s.sqlite"], "system name 'A' is given twice"),
])
def test_named_options_from_the_command_line(tmp_path, args, message):
    (tmp_path / "prompts.txt").write_text("ink mountains\n")
    r = subprocess.run([sys.executable, "-m", "nadm", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {message}", r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["prompts.txt"]  # nothing written
