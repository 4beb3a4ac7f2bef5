"""Dataset layout, curation (`nadm data prepare|check`), the training clip sampler and the latent cache (issue 5)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from nadm import data, decode, latent_cache
from nadm.cli import main
from nadm.errors import NADMError

H, W, FPS = 48, 64, 25


def write_video(
    path: Path, frames: np.ndarray, fps: int = FPS, gop: int | None = None, faststart: bool = False
) -> Path:
    """(N, H, W, 3) uint8 RGB -> H.264 mp4 through PyAV (gop: keyframe interval, to exercise seeking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", **({"g": str(gop), "keyint_min": str(gop)} if gop else {})}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_pattern(n: int, colour: int, phase: int = 0) -> np.ndarray:
    """n frames of drifting stripes in one colour channel: motion inside a scene, no cut."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.zeros((n, H, W, 3), np.uint8)
    for t in range(n):
        frames[t, ..., colour] = 150 + (50 * np.sin((xx + yy + 2 * (t + phase)) / 6)).astype(np.uint8)
    return frames


def two_scenes() -> np.ndarray:
    """40 frames of red moving stripes, then a hard cut to 40 frames of blue ones."""
    return np.concatenate([moving_pattern(40, 0), moving_pattern(40, 2)])


def index_video(n: int) -> np.ndarray:
    """Frame i shows i in binary: 8 horizontal bands, band b white when bit b of i is set (survives the codec,
    the centre crop, which keeps every row of a landscape frame, and the resize)."""
    frames = np.zeros((n, H, W, 3), np.uint8)
    band = H // 8
    for i in range(n):
        for b in range(8):
            frames[i, b * band : (b + 1) * band] = 255 * ((i >> b) & 1)
    return frames


def decode_index(rgb: np.ndarray) -> int:
    """Inverse of index_video for one (h, w, 3) frame: read the middle row of each band."""
    band = rgb.shape[0] / 8
    return sum(1 << b for b in range(8) if rgb[int((b + 0.5) * band)].mean() > 127)


def write_captions_csv(root: Path, rows: list[tuple[str, str]]) -> None:
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "caption"])
        writer.writerows(rows)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`nadm ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------ captions / index


def test_index_formats_csv_jsonl_webvid(tmp_path):
    csv_root, jsonl_root, webvid_root = tmp_path / "csv", tmp_path / "jsonl", tmp_path / "webvid"
    for root in (csv_root, jsonl_root, webvid_root):
        (root / "videos").mkdir(parents=True)
    write_captions_csv(csv_root, [("a/one.mp4", "misty peaks, ink wash"), ("two.mp4", "a river \"bends\"")])
    (jsonl_root / "captions.jsonl").write_text(
        json.dumps({"video": "one.mp4", "caption": "山水画 clouds"}, ensure_ascii=False) + "\n\n"
        + json.dumps({"video": "b/two.mp4", "caption": "boats", "extra": 1}) + "\n",
        encoding="utf-8",
    )
    (webvid_root / "captions.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "1066,http://x/1066.mp4,PT00H00M10S,010001_010050,\"Clouds over the mountains, timelapse\"\n",
        encoding="utf-8",
    )
    assert data.load_index(csv_root) == [
        data.Clip(csv_root / "videos" / "a/one.mp4", "misty peaks, ink wash"),
        data.Clip(csv_root / "videos" / "two.mp4", 'a river "bends"'),
    ]
    assert data.load_index(jsonl_root) == [
        data.Clip(jsonl_root / "videos" / "one.mp4", "山水画 clouds"),
        data.Clip(jsonl_root / "videos" / "b/two.mp4", "boats"),
    ]
    assert data.load_index(webvid_root) == [
        data.Clip(webvid_root / "videos" / "010001_010050" / "1066.mp4", "Clouds over the mountains, timelapse")
    ]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("captions.csv", "video,caption\na.mp4,ok\nb.mp4,too,many\n", "line 3: expected 2 fields"),
        ("captions.csv", "file,text\na.mp4,ok\n", "line 1: header must contain video,caption"),
        ("captions.csv", "video,caption\na.mp4,x\nb.mp4,y\na.mp4,z\n", "line 4: a.mp4 is already listed on line 2"),
        ("captions.csv", "video,caption\n../escape.mp4,x\n", "line 2: video path '../escape.mp4' must be relative"),
        ("captions.csv", "videoid,name,page_dir\n,clouds,dir\n", "line 2: empty videoid or page_dir"),
        ("captions.jsonl", '{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4", caption: 1}\n', "line 2: invalid"),
        ("captions.jsonl", '{"video": "a.mp4", "caption": null}\n', "line 1: key 'caption' must be a string"),
        ("captions.jsonl", '["a.mp4", "x"]\n', "line 1: expected an object"),
    ],
)
def test_malformed_captions_name_the_line(tmp_path, name, text, message):
    (tmp_path / "videos").mkdir()
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(NADMError) as info:
        data.load_index(tmp_path)
    assert str(tmp_path / name) in str(info.value) and message in str(info.value)


def test_index_needs_one_captions_file(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(NADMError, match="no captions.csv or captions.jsonl"):
        data.load_index(tmp_path)
    write_captions_csv(tmp_path, [("a.mp4", "x")])
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4", "caption": "x"}\n')
    with pytest.raises(NADMError, match="keep one captions file"):
        data.load_index(tmp_path)


# ------------------------------------------------------------------------------------------ decoding


def test_read_frames_seeks_to_the_exact_frames(tmp_path):
    video = write_video(tmp_path / "idx.mp4", index_video(90), gop=10)  # B-frames and 9 keyframes
    assert decode.probe_video(video) == decode.VideoInfo(video, 90, 25.0, W, H)
    wanted = [77, 3, 40, 41, 89, 40]
    frames = decode.read_frames(video, wanted)
    assert frames.shape == (6, H, W, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == wanted
    with pytest.raises(NADMError, match="ends before frame 90"):
        decode.read_frames(video, [80, 90])
    assert data.read_frames is decode.read_frames and data.count_frames is decode.count_frames  # both APIs


def test_read_frames_decodes_only_from_the_nearest_keyframe(tmp_path, monkeypatch):
    video = write_video(tmp_path / "long.mp4", index_video(200), gop=10)
    decoded = []
    original = decode.indexed_frames

    def counting(container, stream):
        for number, frame in original(container, stream):
            decoded.append(number)
            yield number, frame

    monkeypatch.setattr(decode, "indexed_frames", counting)
    frames = decode.read_frames(video, [180, 184, 188])
    assert [decode_index(f) for f in frames] == [180, 184, 188]
    assert min(decoded) >= 170 and len(decoded) <= 20  # from the keyframe at 180 (or the one before), not 0


def test_resize_center_crop_keeps_the_centre():
    frames = np.zeros((2, 40, 100, 3), np.uint8)
    frames[:, :, 30:70] = 255  # a white centre square 40 wide, black sides
    out = data.resize_center_crop(frames, 16)
    assert out.shape == (2, 16, 16, 3)
    assert out.min() == 255  # only the centre square survives
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        data.resize_center_crop(frames[0], 16)


# ------------------------------------------------------------------------------------------ the training dataset


def index_dataset(tmp_path: Path, lengths: list[int], captions: list[str] | None = None) -> Path:
    root = tmp_path / "ds"
    rows = []
    for k, n in enumerate(lengths):
        write_video(root / "videos" / f"v{k}.mp4", index_video(n), gop=12)
        rows.append((f"v{k}.mp4", captions[k] if captions else f"clip {k}"))
    write_captions_csv(root, rows)
    return root


def test_dataset_sample_shapes_range_and_stride(tmp_path):
    root = index_dataset(tmp_path, [70, 45])
    config = data.DataConfig(root=root, frames=6, stride=3, resolution=32, empty_caption_prob=0.0)
    dataset = data.VideoClipDataset(config, seed=7)
    assert len(dataset) == 2 and dataset.lengths == [70, 45]
    starts = set()
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(2):
            item = dataset[index]
            pixels, frame_indices = item["pixel_values"], item["frame_indices"].tolist()
            assert pixels.shape == (6, 3, 32, 32) and pixels.dtype == torch.float32
            assert -1.0 <= pixels.min() and pixels.max() <= 1.0
            start = frame_indices[0]
            assert frame_indices == [start + 3 * k for k in range(6)]
            assert 0 <= start <= dataset.lengths[index] - (5 * 3 + 1)
            # the colours decode back to exactly the frames the sampler chose
            rgb = ((pixels.permute(0, 2, 3, 1) + 1) * 127.5).numpy()
            assert [decode_index(f) for f in rgb] == frame_indices
            assert item["caption"] == f"clip {index}" and item["path"] == str(root / "videos" / f"v{index}.mp4")
            starts.add((index, start))
    assert len(starts) > 2  # epochs draw different starts
    # deterministic given (seed, epoch, index): a fresh dataset at epoch 1 draws what this one drew
    again = data.VideoClipDataset(config, seed=7)
    again.set_epoch(1)
    dataset.set_epoch(1)
    assert torch.equal(again[1]["pixel_values"], dataset[1]["pixel_values"])
    other_seed = data.VideoClipDataset(config, seed=8)
    assert [other_seed.draw(i, e)[0][0] for i in range(2) for e in range(5)] != [
        dataset.draw(i, e)[0][0] for i in range(2) for e in range(5)
    ]


def test_dataset_empty_caption_rate(tmp_path):
    root = index_dataset(tmp_path, [32, 32, 40])
    dataset = data.VideoClipDataset(data.DataConfig(root=root, resolution=16))  # paper: 8 frames, stride 4
    drops = [dataset.draw(i, epoch)[1] for epoch in range(1000) for i in range(3)]
    assert abs(np.mean(drops) - 0.1) < 0.03  # 3000 draws: std 0.0055
    never = data.VideoClipDataset(data.DataConfig(root=root, resolution=16, empty_caption_prob=0.0))
    always = data.VideoClipDataset(data.DataConfig(root=root, resolution=16, empty_caption_prob=1.0))
    assert never[0]["caption"] == "clip 0" and always[0]["caption"] == ""
    half = data.VideoClipDataset(data.DataConfig(root=root, resolution=16, empty_caption_prob=0.5))
    assert abs(np.mean([half.draw(i, e)[1] for e in range(1000) for i in range(3)]) - 0.5) < 0.05


def test_dataset_refuses_short_missing_and_uncaptioned(tmp_path):
    root = index_dataset(tmp_path, [40, 28], captions=["fine", "short"])
    too_short = r"1 video\(s\) shorter than \(8 - 1\) frames x stride 4 \+ 1 = 29 frames: .*v1.mp4 \(28 frames\)"
    with pytest.raises(NADMError, match=too_short):
        data.VideoClipDataset(data.DataConfig(root=root))
    assert len(data.VideoClipDataset(data.DataConfig(root=root, stride=3))) == 2  # 7 x 3 + 1 = 22 fits
    write_captions_csv(root, [("v0.mp4", ""), ("v1.mp4", "ok")])
    with pytest.raises(NADMError, match=r"empty caption: .*v0.mp4"):
        data.VideoClipDataset(data.DataConfig(root=root, stride=3))
    write_captions_csv(root, [("v0.mp4", "ok"), ("gone.mp4", "ok")])
    with pytest.raises(NADMError, match=r"missing: .*gone.mp4"):
        data.VideoClipDataset(data.DataConfig(root=root, stride=3))


def test_a_clip_needs_frames_minus_one_strides_plus_one_source_frames(tmp_path):
    """Issue 12: 8 frames at stride 4 span (8 - 1) * 4 + 1 = 29 source frames, not 8 * 4 = 32: a 29-frame video
    gives exactly one clip, frames 0, 4, ..., 28 (all decoded), and a 30-frame one (refused before) two starts."""
    root = index_dataset(tmp_path, [29, 30])
    config = data.DataConfig(root=root, resolution=16, empty_caption_prob=0.0)
    assert config.span == 29 and data.DataConfig(root=root, frames=6, stride=3).span == 16
    dataset = data.VideoClipDataset(config)
    assert dataset.lengths == [29, 30]
    item = dataset[0]
    assert item["frame_indices"].tolist() == list(range(0, 29, 4))
    rgb = ((item["pixel_values"].permute(0, 2, 3, 1) + 1) * 127.5).numpy()
    assert [decode_index(f) for f in rgb] == list(range(0, 29, 4))  # the last frame, 28, decodes
    assert {int(dataset.draw(1, epoch)[0][0]) for epoch in range(40)} == {0, 1}
    with pytest.raises(NADMError, match=r"= 29 frames: .*v0.mp4 \(28 frames\)"):
        data.VideoClipDataset(data.DataConfig(root=index_dataset(tmp_path / "short", [28])))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"frames": 0}, "frames must be"),
        ({"stride": 2.5}, "stride must be"),
        ({"resolution": 100}, "multiple of 8"),
        ({"empty_caption_prob": 1.5}, "in \\[0, 1\\]"),
    ],
)
def test_data_config_validates(change, message):
    with pytest.raises(ValueError, match=message):
        data.DataConfig(root="x", **change)


# ------------------------------------------------------------------------------------------ nadm data prepare / check


def test_prepare_splits_scenes_and_carries_captions(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_video(src / "videos" / "hills" / "cut.mp4", two_scenes())
    write_video(src / "videos" / "new.mp4", moving_pattern(36, 1))  # one scene, not captioned in SRC
    write_video(src / "videos" / "brief.mp4", moving_pattern(20, 1))  # one scene, shorter than 32 frames
    (src / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    full = write_video(tmp_path / "damaged.mp4", moving_pattern(60, 0), faststart=True).read_bytes()
    (src / "videos" / "damaged.mp4").write_bytes(full[: len(full) // 2])  # header intact, frames cut off
    write_captions_csv(src, [("hills/cut.mp4", "ink mountains, drifting clouds"), ("ghost.mp4", "never filmed")])

    code, out, err = run_cli(["data", "prepare", str(src), str(dst), "--quiet"], capsys)
    assert code == 0, err
    clips = sorted(p.relative_to(dst / "videos").as_posix() for p in (dst / "videos").rglob("*.mp4"))
    assert clips == ["hills/cut-scene001.mp4", "hills/cut-scene002.mp4", "new-scene001.mp4"]
    assert data.read_captions(dst / "captions.csv") == {
        "hills/cut-scene001.mp4": "ink mountains, drifting clouds",
        "hills/cut-scene002.mp4": "ink mountains, drifting clouds",
        "new-scene001.mp4": "",
    }
    # the cut is at frame 40; each clip is one scene in one colour
    first = decode.read_frames(dst / "videos" / "hills/cut-scene001.mp4", range(40))
    second = decode.read_frames(dst / "videos" / "hills/cut-scene002.mp4", range(40))
    assert decode.count_frames(dst / "videos" / "hills/cut-scene002.mp4") == 40
    assert first[..., 0].mean() > 100 > first[..., 2].mean() and second[..., 2].mean() > 100 > second[..., 0].mean()
    assert "clips: 3" in out and "3 x 64x48" in out and "3 x 25 fps" in out and "videos: 5" in out
    assert "dropped shorter than 32 frames: 1" in out
    assert "broken.mp4: unreadable, skipped" in out
    assert "damaged.mp4: truncated or corrupt, skipped (decoded 1 of 60 frames)" in out
    assert "1 clip(s) have an empty caption" in out and "ghost.mp4: captioned in captions.csv but not found" in out
    record = json.loads((dst / "prepare.json").read_text())
    assert {(c["clip"], c["start"], c["end"]) for c in record["clips"]} >= {
        ("hills/cut-scene001.mp4", 0, 40),
        ("hills/cut-scene002.mp4", 40, 80),
    }

    # DST is not replaced without --overwrite: one line, exit 2, nothing touched
    before = sorted(p.name for p in dst.rglob("*"))
    code, out, err = run_cli(["data", "prepare", str(src), str(dst), "--quiet"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "pass --overwrite" in err
    assert sorted(p.name for p in dst.rglob("*")) == before
    # --overwrite with a stricter rule replaces it
    args = ["data", "prepare", str(src), str(dst), "--quiet", "--overwrite", "--min-frames", "38"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert sorted(data.read_captions(dst / "captions.csv")) == ["hills/cut-scene001.mp4", "hills/cut-scene002.mp4"]
    assert not list(tmp_path.glob(".dst*"))  # no staging or moved-aside folders left behind


def test_prepare_user_mistakes_exit_2(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    code, _, err = run_cli(["data", "prepare", str(tmp_path / "src"), str(tmp_path / "dst")], capsys)
    assert code == 2 and "error: no video files" in err
    code, _, err = run_cli(["data", "prepare", str(tmp_path / "src"), str(tmp_path / "src" / "out")], capsys)
    assert code == 2 and "must be outside the source" in err


def test_check_reports_problems_by_name(tmp_path, capsys):
    root = tmp_path / "ds"
    good = write_video(root / "videos" / "good.mp4", moving_pattern(40, 0))
    write_video(root / "videos" / "nocaption.mp4", moving_pattern(40, 1))
    write_video(root / "videos" / "emptycaption.mp4", moving_pattern(40, 2))
    write_video(root / "videos" / "short.mp4", moving_pattern(20, 0))
    # truncated copies: index at the end (moov lost: cannot open) and at the front (opens, frames missing)
    noisy = np.clip(moving_pattern(40, 1) + np.random.default_rng(0).integers(0, 40, (40, H, W, 3)), 0, 255)
    for name, faststart in (("cut_tail.mp4", False), ("cut_fast.mp4", True)):
        full = write_video(tmp_path / name, noisy.astype(np.uint8), faststart=faststart).read_bytes()
        (root / "videos" / name).write_bytes(full[: len(full) * 9 // 10])
    write_captions_csv(
        root,
        [("good.mp4", "peaks"), ("emptycaption.mp4", " "), ("short.mp4", "brief"), ("cut_tail.mp4", "x"),
         ("cut_fast.mp4", "y"), ("gone.mp4", "lost")],
    )
    code, out, err = run_cli(["data", "check", str(root), "--quiet"], capsys)
    assert code == 1, err
    problems = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    names = {"nocaption.mp4", "emptycaption.mp4", "short.mp4", "cut_tail.mp4", "cut_fast.mp4", "gone.mp4"}
    assert set(problems) == names
    assert "no caption" in problems["nocaption.mp4"] and "empty caption" in problems["emptycaption.mp4"]
    assert "too short: 20 frames" in problems["short.mp4"] and "missing" in problems["gone.mp4"]
    assert "unreadable or corrupt: cannot read the video" in problems["cut_tail.mp4"]
    assert "truncated: decoded" in problems["cut_fast.mp4"] and "of the 40 frames it states" in problems["cut_fast.mp4"]
    assert "problems: 6" in out and "clips: 5" in out  # all but cut_tail decode (cut_fast in part)

    # a clean dataset passes (exit 0), through the real `python -m nadm` entry point
    clean = tmp_path / "clean"
    (clean / "videos").mkdir(parents=True)
    good.rename(clean / "videos" / "good.mp4")
    write_captions_csv(clean, [("good.mp4", "peaks")])
    result = subprocess.run(
        [sys.executable, "-m", "nadm", "data", "check", str(clean), "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "clips: 1" in result.stdout and "problems: 0" in result.stdout


# ------------------------------------------------------------------------------------------ latent cache


def tiny_encoders(tmp_path: Path):
    from nadm.tiny import tiny_components

    parts = tiny_components(tmp_path / "tokenizer")
    return parts["vae"].eval(), parts["text_encoder"].eval(), parts["tokenizer"]


def test_latent_cache_round_trip(tmp_path):
    root = index_dataset(tmp_path, [40, 36], captions=["misty river", "pine and rock"])
    config = data.DataConfig(root=root, frames=4, stride=2, resolution=32)
    vae, text_encoder, tokenizer = tiny_encoders(tmp_path)
    out = latent_cache.cache_latents(
        data.VideoClipDataset(config, seed=3), vae, text_encoder, tokenizer, tmp_path / "cache", clips_per_video=2,
        progress=False,
    )

    live = data.VideoClipDataset(config, seed=3)
    manifest = json.loads((out / "cache.json").read_text())
    assert manifest["latent_shape"] == [4, 4, 4, 4] and manifest["clips_per_video"] == 2
    cached = latent_cache.CachedLatentDataset(out, empty_caption_prob=0.0)
    assert len(cached) == 4
    for n in range(4):
        i, k = divmod(n, 2)
        item = cached[n]
        frame_indices, _ = live.draw(i, epoch=k)  # cached clip k of video i = what epoch k draws
        expected = latent_cache.encode_frames(live.load_clip(i, frame_indices), vae)
        assert item["latents"].shape == (4, 4, 4, 4)
        torch.testing.assert_close(item["latents"], expected)
        text = latent_cache.encode_text([live.clips[i].caption], tokenizer, text_encoder)[0]
        assert item["encoder_hidden_states"].shape == (77, 32)
        torch.testing.assert_close(item["encoder_hidden_states"], text)
        assert item["caption"] == live.clips[i].caption and item["path"] == str(live.clips[i].path)
    # CFG dropout swaps in the cached empty-caption embedding
    empty = latent_cache.encode_text([""], tokenizer, text_encoder)[0]
    dropped = latent_cache.CachedLatentDataset(out, empty_caption_prob=1.0)[0]
    torch.testing.assert_close(dropped["encoder_hidden_states"], empty)
    assert dropped["caption"] == "" and not torch.allclose(empty, cached[0]["encoder_hidden_states"])
    rate = latent_cache.CachedLatentDataset(out, empty_caption_prob=0.1)
    drops = []
    for epoch in range(300):
        rate.set_epoch(epoch)
        drops += [rate[n]["caption"] == "" for n in range(4)]
    assert abs(np.mean(drops) - 0.1) < 0.04
    # never replaced without overwrite
    with pytest.raises(NADMError, match="already exists"):
        latent_cache.cache_latents(live, vae, text_encoder, tokenizer, out, progress=False)


def test_data_cache_command(tmp_path, capsys):
    from nadm.tiny import build_tiny_base

    root = index_dataset(tmp_path, [40, 36])
    base = build_tiny_base(tmp_path / "base")
    out = tmp_path / "cache"
    args = ["data", "cache", str(root), str(out), "--base", str(base), "--frames", "4", "--stride", "2",
            "--resolution", "32", "--clips-per-video", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "cached 2 video(s) x 2 clip(s)" in stdout
    cached = latent_cache.CachedLatentDataset(out)
    assert len(cached) == 4 and cached[0]["latents"].shape == (4, 4, 4, 4)
    assert cached.manifest["data"]["frames"] == 4 and cached.manifest["data"]["stride"] == 2
    # a second run refuses to replace OUT: one line, exit 2, before any model loads
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
