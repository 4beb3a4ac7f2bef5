"""`nadm study create`: clip folders with their sidecars -> clips matched on (prompt, seed) across systems ->
every pair of systems on the same prompt and seed -> a new study database (Sec. IV-D2, Appendix).

A clip's prompt and seed come from its sidecar `<clip>.json` (as `nadm compare`/`nadm generate` write it); a
clip without one (another system's output) is named `PPPP_seedS.<ext>` like `nadm compare`'s, and its prompt
is line PPPP (0-based) of `--prompts`. Nothing is dropped silently: unusable files and clips without a partner
are listed in the report and in the database's `excluded_clip` table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from nadm import __version__
from nadm.errors import NADMError
from nadm.io import natural_key, read_sidecar
from nadm.outputs import mark_output, safe_replace, temp_path
from nadm.study import db

MEDIA_TYPES = {".mp4": "video/mp4", ".gif": "image/gif", ".webp": "image/webp"}
NAME_PATTERN = re.compile(r"(\d+)_seed(-?\d+)")
Key = tuple[str, int]  # (prompt, seed): what makes clips of two systems comparable


@dataclass(frozen=True)
class Clip:
    """One usable clip of one system."""

    system: str
    path: Path
    prompt: str
    seed: int
    sidecar: dict | None


@dataclass
class StudyPlan:
    """What `create` stores: systems in order, their clips by (prompt, seed), pairs, and what was left out."""

    systems: dict[str, Path]
    clips: dict[str, dict[Key, Clip]]
    pairs: list[tuple[Clip, Clip]]
    excluded: list[tuple[str, str, str]] = field(default_factory=list)  # (system, source, reason)


@dataclass(frozen=True)
class DesignOptions:
    """The study's design choices (recorded in the database's meta table)."""

    pairs_per_participant: int | None = None  # None: every pair
    attention_checks: int = 1  # repeated pairs, sides swapped, per participant
    reference: str | None = None  # only pairs that include this system (the paper: NADM vs each baseline)
    seed: int | None = None  # randomisation seed; None: a random one (recorded)
    intro: str | None = None  # the introduction participants read (plain text); None: the built-in one


# ------------------------------------------------------------------------------------------------ scanning


def _clip_identity(path: Path, side: dict, prompts: list[str] | None, prompts_file: str | None) -> tuple[str, int]:
    """(prompt, seed) of one clip file from its sidecar and its name; NADMError(reason) when it has none."""
    match = NAME_PATTERN.fullmatch(path.stem)
    side_prompt = side.get("prompt") if isinstance(side.get("prompt"), str) and side["prompt"].strip() else None
    side_seed = side.get("seed") if isinstance(side.get("seed"), int) and not isinstance(side["seed"], bool) else None
    line_prompt = None
    if prompts is not None and match:
        index = int(match.group(1))
        if index >= len(prompts):
            raise NADMError(f"prompt number {index} is past the {len(prompts)} prompts of {prompts_file}")
        line_prompt = prompts[index]
    if side_prompt is not None and line_prompt is not None and side_prompt.strip() != line_prompt:
        raise NADMError(f"its sidecar's prompt differs from line {int(match.group(1)) + 1} of {prompts_file}")
    prompt = (side_prompt or line_prompt or "").strip()
    if not prompt:
        raise NADMError("no prompt: no sidecar with a \"prompt\", and no --prompts line for a name PPPP_seedS")
    if prompts is not None and prompt not in prompts:
        raise NADMError(f"its prompt is not one of {prompts_file}")
    name_seed = int(match.group(2)) if match else None
    if side_seed is not None and name_seed is not None and side_seed != name_seed:
        raise NADMError(f"its sidecar's seed {side_seed} differs from the seed {name_seed} in its name")
    seed = side_seed if side_seed is not None else name_seed
    if seed is None:
        raise NADMError("no seed: no sidecar with a \"seed\", and the name is not PPPP_seedS")
    return prompt, seed


def scan_system(name: str, folder: Path, prompts: list[str] | None, prompts_file: str | None,
                excluded: list[tuple[str, str, str]]) -> dict[Key, Clip]:
    """The usable clips of one system's folder by (prompt, seed); unusable files are appended to `excluded`."""
    if not folder.is_dir():
        raise NADMError(f"{folder} (system {name}) is not a folder")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in MEDIA_TYPES), key=lambda p: natural_key(p.name))
    clips: dict[Key, Clip] = {}
    for path in files:
        try:
            side = read_sidecar(path)
            prompt, seed = _clip_identity(path, side or {}, prompts, prompts_file)
        except NADMError as e:
            excluded.append((name, str(path), str(e)))
            continue
        if (prompt, seed) in clips:
            raise NADMError(f"system {name} has two clips for one prompt and seed {seed}: "
                            f"{clips[prompt, seed].path.name} and {path.name}")
        clips[prompt, seed] = Clip(name, path, prompt, seed, side)
    if not clips:
        raise NADMError(f"no usable clips (mp4, gif, webp with a prompt and seed) in {folder} (system {name})")
    return clips


def plan_study(systems: dict[str, Path], prompts: list[str] | None = None, prompts_file: str | None = None,
               reference: str | None = None) -> StudyPlan:
    """Scan every system's folder and pair the clips of every two systems (or of `reference` and each other)
    that share a prompt and seed; list every clip left without a partner."""
    if len(systems) < 2:
        raise NADMError("a study needs at least two systems (--system NAME=DIR, repeated)")
    if reference is not None and reference not in systems:
        raise NADMError(f"--reference {reference} is not one of the systems {', '.join(systems)}")
    excluded: list[tuple[str, str, str]] = []
    clips = {name: scan_system(name, folder, prompts, prompts_file, excluded) for name, folder in systems.items()}
    names = list(systems)
    couples = [(a, b) for a, b in itertools.combinations(names, 2) if reference is None or reference in (a, b)]
    couples = [(reference, b if a == reference else a) if reference else (a, b) for a, b in couples]
    order = {p: i for i, p in enumerate(prompts)} if prompts else {}
    pairs, used = [], set()
    for a, b in couples:
        for key in sorted(clips[a].keys() & clips[b].keys(), key=lambda k: (order.get(k[0], 0), k[0], k[1])):
            pairs.append((clips[a][key], clips[b][key]))
            used.update({(a, key), (b, key)})
    excluded += _unmatched(clips, couples, used)
    if not pairs:
        raise NADMError("no two systems have a clip with the same prompt and seed: nothing to compare")
    return StudyPlan(dict(systems), clips, pairs, excluded)


def _unmatched(clips: dict[str, dict[Key, Clip]], couples: list[tuple[str, str]],
               used: set[tuple[str, Key]]) -> list[tuple[str, str, str]]:
    """Clips without a partner, and the (prompt, seed) cells a system lacks that systems paired with it compare."""
    out = []
    compared = {key for _, key in used}
    for name in clips:
        partners = [b for a, b in couples if a == name] + [a for a, b in couples if b == name]
        for key, clip in clips[name].items():
            if (name, key) not in used:
                missing = ", ".join(p for p in partners if key not in clips[p])
                out.append((name, str(clip.path), f"unmatched: no clip of {missing} with prompt '{key[0]}' "
                                                  f"seed {key[1]}"))
        wanted = (set().union(*(clips[p].keys() for p in partners)) & compared) - clips[name].keys()
        for prompt, seed in sorted(wanted):
            having = ", ".join(p for p in partners if (prompt, seed) in clips[p])
            out.append((name, "-", f"missing: no clip for prompt '{prompt}' seed {seed} (which {having} have)"))
    return out


# ------------------------------------------------------------------------------------------------ storing


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything but a nadm study database without answers, and only with overwrite."""
    if out.is_dir():
        raise NADMError(f"{out} is a folder; give a file name for the study database")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise NADMError(f"{out} already exists: pass --overwrite to replace it (a study with answers is never "
                        "replaced)")
    con = db.connect(out)  # NADMError unless it is a nadm study
    try:
        answers = con.execute("SELECT COUNT(*) FROM answer").fetchone()[0]
    finally:
        con.close()
    if answers:
        raise NADMError(f"{out} holds {answers} answers: it is not replaced; move it away to make a new study")
    if Path(f"{out}-wal").exists():
        raise NADMError(f"{out} is open elsewhere (its -wal file remains): stop the server first")


def _store_plan(con: sqlite3.Connection, plan: StudyPlan) -> None:
    """Systems, prompts, media (by content hash), clips, pairs and exclusions, in one transaction."""
    with db.transaction(con):
        system_ids = {}
        for i, (name, folder) in enumerate(plan.systems.items(), 1):
            cur = con.execute("INSERT INTO system (name, position, folder) VALUES (?, ?, ?)",
                              (name, i, str(folder.resolve())))
            system_ids[name] = cur.lastrowid
        prompt_ids: dict[str, int] = {}
        clip_ids: dict[tuple[str, Key], int] = {}
        for a, b in plan.pairs:
            for clip in (a, b):
                if (clip.system, (clip.prompt, clip.seed)) in clip_ids:
                    continue
                if clip.prompt not in prompt_ids:
                    prompt_ids[clip.prompt] = con.execute("INSERT INTO prompt (text) VALUES (?)",
                                                          (clip.prompt,)).lastrowid
                data = clip.path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                con.execute("INSERT OR IGNORE INTO media (sha256, media_type, size, data) VALUES (?, ?, ?, ?)",
                            (digest, MEDIA_TYPES[clip.path.suffix.lower()], len(data), data))
                cur = con.execute(
                    "INSERT INTO clip (system_id, prompt_id, seed, sha256, source, sidecar) VALUES (?, ?, ?, ?, ?, ?)",
                    (system_ids[clip.system], prompt_ids[clip.prompt], clip.seed, digest, str(clip.path.resolve()),
                     json.dumps(clip.sidecar) if clip.sidecar is not None else None))
                clip_ids[clip.system, (clip.prompt, clip.seed)] = cur.lastrowid
            con.execute("INSERT INTO pair (clip_a, clip_b) VALUES (?, ?)",
                        (clip_ids[a.system, (a.prompt, a.seed)], clip_ids[b.system, (b.prompt, b.seed)]))
        con.executemany("INSERT INTO excluded_clip (system, source, reason) VALUES (?, ?, ?)", plan.excluded)


def _design_meta(plan: StudyPlan, options: DesignOptions) -> dict[str, str]:
    """Check the design options against the plan and return them as meta rows."""
    n_pairs = len(plan.pairs)
    k = options.pairs_per_participant if options.pairs_per_participant is not None else n_pairs
    if not 1 <= k <= n_pairs:
        raise NADMError(f"--pairs-per-participant must be between 1 and the {n_pairs} pairs, got {k}")
    if not 0 <= options.attention_checks <= k:
        raise NADMError(f"--attention-checks must be between 0 and the {k} pairs per participant, "
                        f"got {options.attention_checks}")
    seed = options.seed if options.seed is not None else secrets.randbits(63)
    return {"created_at": db.now(), "nadm_version": __version__, "pairs_per_participant": str(k),
            "attention_checks": str(options.attention_checks), "reference": options.reference or "",
            "seed": str(seed), "systems": json.dumps(list(plan.systems)), "intro": options.intro or ""}


def create_study(out: str | os.PathLike, plan: StudyPlan, options: DesignOptions, overwrite: bool = False) -> Path:
    """Write the plan and the design options to a new study database, atomically (temporary name, then rename)."""
    # 1. check the target and the options before writing anything
    out = Path(out).expanduser()
    _check_target(out, overwrite)
    meta = _design_meta(plan, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        # 2. build the database under the temporary name, fully checkpointed (no -wal file left)
        con = db.connect(tmp, new=True)
        try:
            db.create_schema(con, meta)
            _store_plan(con, plan)
            ok, problem = db.integrity_ok(con)
            if not ok:
                raise NADMError(f"the new study database failed its integrity check: {problem}")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        # 3. rename into place (an earlier study is replaced only under the rules of _check_target, and only when its
        # sidecar says nadm made it), then say in the sidecar what made it
        safe_replace(tmp, out, overwrite)
        mark_output(out, {"made_by": "nadm study create", "systems": list(plan.systems), "pairs": len(plan.pairs)})
    except OSError as e:
        raise NADMError(f"could not write {out}: {e.strerror or e}") from e
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            if leftover.exists():
                leftover.unlink()
    return out
