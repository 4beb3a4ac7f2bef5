"""nadm.io: round trips through every output format, the sidecar, and the refusal/error rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nadm import io
from nadm.errors import NADMError


def _clip(n: int = 6, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth moving gradients + a few blocks: codec-friendly, but every frame differs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for t in range(n):
        r = 128 + 100 * np.sin((x + 3 * t) / 9.0)
        g = 128 + 100 * np.cos((y - 2 * t) / 7.0)
        b = 128 + 90 * np.sin((x + y + 4 * t) / 13.0)
        frame = np.stack([r, g, b], -1)
        frame[8:20, 10 + 2 * t : 22 + 2 * t] = rng.integers(0, 255, 3)
        frames.append(frame)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _no_temp_files(folder) -> None:
    leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_mp4_round_trip(tmp_path):
    frames = _clip()
    out = io.write_video(frames, tmp_path / "clip.mp4", fps=12.0, metadata={"prompt": "mist"})
    back, fps = io.read_video(out)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert fps == pytest.approx(12.0)
    assert _psnr(back, frames) > 30  # H.264 CRF 18 + yuv420p chroma subsampling
    _no_temp_files(tmp_path)


def test_mp4_odd_size_is_padded_and_cropped_back(tmp_path):
    frames = _clip(n=4, h=61, w=97)
    out = io.write_video(frames, tmp_path / "odd.mp4", fps=8)
    side = json.loads(io.sidecar_path(out).read_text())
    assert side["stored_size"] == [98, 62] and (side["width"], side["height"]) == (97, 61)
    back, _ = io.read_video(out)
    assert back.shape == frames.shape
    assert _psnr(back, frames) > 28


def test_mp4_fps_from_file_without_sidecar(tmp_path):
    out = io.write_video(_clip(n=5), tmp_path / "c.mp4", fps=25)
    io.sidecar_path(out).unlink()
    back, fps = io.read_video(out)
    assert len(back) == 5 and fps == pytest.approx(25.0)


@pytest.mark.parametrize("suffix,min_psnr", [(".gif", 22), (".webp", 28)])
def test_animation_round_trip(tmp_path, suffix, min_psnr):
    frames = _clip()
    frames[3] = frames[2]  # identical neighbours get merged by the encoders and must come back as two frames
    out = io.write_video(frames, tmp_path / f"anim{suffix}", fps=10)
    back, fps = io.read_video(out)
    assert back.shape == frames.shape
    assert _psnr(back, frames) > min_psnr
    io.sidecar_path(out).unlink()
    back2, fps2 = io.read_video(out)  # timing from the file itself
    assert len(back2) == len(frames) and fps2 == pytest.approx(10.0)
    _no_temp_files(tmp_path)


def test_png_folder_round_trip_is_lossless(tmp_path):
    frames = _clip(n=3, h=17, w=31)
    out = io.write_video(frames, tmp_path / "frames", fps=15)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    back, fps = io.read_video(out)
    np.testing.assert_array_equal(back, frames)
    assert fps == 15.0
    io.sidecar_path(out).unlink()
    assert io.read_video(out)[1] == io.DEFAULT_FOLDER_FPS


def test_folder_sorted_by_number(tmp_path):
    import cv2

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in (10, 2, 1):
        cv2.imwrite(str(folder / f"frame{i}.png"), np.full((20, 20, 3), i, np.uint8))
    back, _ = io.read_video(folder)
    assert [int(f[0, 0, 0]) for f in back] == [1, 2, 10]


def test_sidecar_contents(tmp_path):
    out = io.write_video(_clip(n=2), tmp_path / "a.mp4", fps=16, metadata={"prompt": "river", "seed": np.int64(3)})
    side = json.loads((tmp_path / "a.mp4.json").read_text())
    assert side["prompt"] == "river" and side["seed"] == 3
    assert (side["fps"], side["frames"], side["width"], side["height"], side["format"]) == (16.0, 2, 64, 48, "mp4")
    assert side["nadm_version"] == io.environment_versions()["nadm"]
    for lib in ("torch", "diffusers", "numpy", "av", "opencv"):
        assert lib in side["versions"]
    assert side["versions"]["numpy"] == np.__version__
    assert out == tmp_path / "a.mp4"


def test_refuses_to_overwrite(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(NADMError, match="--overwrite"):
        io.write_video(_clip(n=2), target, fps=8)
    assert target.read_bytes() == b"precious"
    assert not io.sidecar_path(target).exists()
    # a lone sidecar also blocks
    (tmp_path / "b.gif.json").write_text("{}")
    with pytest.raises(NADMError, match="--overwrite"):
        io.check_output_path(tmp_path / "b.gif", overwrite=False)
    _no_temp_files(tmp_path)


def test_overwrite_replaces_file_and_folder(tmp_path):
    target = tmp_path / "keep.mp4"
    io.write_video(_clip(n=3), target, fps=8)  # an earlier nadm output (--overwrite replaces only those)
    io.write_video(_clip(n=2), target, fps=8, overwrite=True)
    assert len(io.read_video(target)[0]) == 2
    folder = io.write_video(_clip(n=3), tmp_path / "f", fps=8)
    io.write_video(_clip(n=2), folder, fps=8, overwrite=True)
    assert len(list(folder.iterdir())) == 2
    _no_temp_files(tmp_path)


def test_bad_extension_and_parent_creation(tmp_path):
    with pytest.raises(NADMError, match=r"'\.avi'.*\.mp4, \.gif, \.webp"):
        io.check_output_path(tmp_path / "x.avi", overwrite=False)
    out = io.check_output_path(tmp_path / "new" / "deeper" / "x.mp4", overwrite=False)
    assert out.parent.is_dir()


@pytest.mark.parametrize(
    "frames,match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 3), np.uint8), r"\(8, 8, 3\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), r"\(0, 8, 8, 3\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"\(2, 8, 8, 4\)"),
    ],
)
def test_write_rejects_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        io.write_video(frames, tmp_path / "x.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        (tmp_path / ".x.gif.tmp-partial").write_bytes(b"")  # not ours: must survive, ours must go
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_animation", boom)
    with pytest.raises(NADMError, match="disk full"):
        io.write_video(_clip(n=2), tmp_path / "x.gif", fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.gif.tmp-partial"]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(NADMError, match="missing.mp4"):
        io.read_video(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 this is not a video" * 50)
    with pytest.raises(NADMError, match="corrupt.mp4"):
        io.read_video(corrupt)
    bad_gif = tmp_path / "bad.gif"
    bad_gif.write_bytes(b"GIF89a garbage")
    with pytest.raises(NADMError, match="bad.gif"):
        io.read_video(bad_gif)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NADMError, match="no image frames"):
        io.read_video(empty)


def test_read_folder_errors(tmp_path):
    import cv2

    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(folder / "1.png"), np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(NADMError, match=r"1\.png is 24x20.*0\.png is 20x20"):
        io.read_video(folder)
    (folder / "1.png").write_bytes(b"not a png")
    with pytest.raises(NADMError, match="1.png"):
        io.read_video(folder)


def test_reads_real_video(shared_data):
    clip = shared_data / "landscape_motion" / "skyar_annarbor" / "annarbor.mp4"
    if not clip.is_file():
        pytest.skip("annarbor.mp4 not present")
    frames, fps = io.read_video(clip)
    assert frames.shape[1:] == (544, 960, 3) and len(frames) > 100 and 20 < fps < 35


@pytest.mark.parametrize("name", ["a.mp4", "odd.mp4", "a.gif", "a.webp", "frames"])
def test_reading_some_frames_equals_indexing_the_whole_video(tmp_path, name):
    h, w = (45, 61) if name == "odd.mp4" else (48, 64)
    frames = _clip(n=12, h=h, w=w)
    frames[5] = frames[4]  # merged by the GIF/WebP encoders, expanded again on reading
    out = io.write_video(frames, tmp_path / name, fps=8)
    whole, fps = io.read_video(out)
    for indices in ([0], [3, 1, 11], range(0, 12, 5), [6, 6]):
        part, part_fps = io.read_video(out, indices)
        assert part_fps == fps and part.flags.c_contiguous
        np.testing.assert_array_equal(part, whole[list(indices)])
    with pytest.raises(io.VideoTooShort, match="has 12 frames, frame 12 was asked for") as err:
        io.read_video(out, [0, 12])
    assert err.value.length == 12
    with pytest.raises(ValueError, match="frame numbers >= 0"):
        io.read_video(out, [2, -1])


def test_reading_some_frames_decodes_only_up_to_the_last(tmp_path, monkeypatch):
    from nadm import decode

    out = io.write_video(_clip(n=12), tmp_path / "c.mp4", fps=8)
    decoded = []
    open_video = decode.open_video

    class Counting:
        """A container that counts the frames it decodes."""

        def __init__(self, container) -> None:
            self.container = container

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.container.__exit__(*exc)

        def decode(self, stream):
            for frame in self.container.decode(stream):
                decoded.append(frame.pts)
                yield frame

    def counting_open(path):
        container, stream = open_video(path)
        return Counting(container), stream

    monkeypatch.setattr(decode, "open_video", counting_open)
    assert len(io.read_video(out, [4, 2])[0]) == 2
    assert len(decoded) == 5
    decoded.clear()
    assert len(io.read_video(out)[0]) == 12 and len(decoded) == 12


def test_reading_some_frames_of_a_folder_opens_only_theirs(tmp_path):
    out = io.write_video(_clip(n=6), tmp_path / "frames", fps=8)
    expected = io.read_video(out)[0][[4, 0]]
    (out / "00005.png").write_bytes(b"not a png")
    np.testing.assert_array_equal(io.read_video(out, [4, 0])[0], expected)
    with pytest.raises(NADMError, match="00005.png"):
        io.read_video(out)
