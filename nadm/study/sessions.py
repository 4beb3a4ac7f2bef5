"""Participants and their answers (Sec. IV-D2): a random token per participant, the pairs each one sees (fewest
assigned so far first), their order and left/right sides (random per participant, recorded), attention checks
(an earlier pair shown again later with its sides swapped), and one transaction per answered pair.

Attention-check rule: a check fails when, on at least `CHECK_FAIL_CONTRADICTIONS` of the four questions, the
participant preferred one system the first time and the other system on the swapped repeat ("no preference"
on either showing is not a contradiction). A participant who fails any check is excluded from the report.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import sqlite3
from dataclasses import dataclass

from nadm.study import db

CHECK_FAIL_CONTRADICTIONS = 2  # of the 4 questions
ATTENTION_RULE = (f"a check fails when >= {CHECK_FAIL_CONTRADICTIONS} of the 4 questions flip from one system to "
                  "the other between the pair and its side-swapped repeat; one failed check excludes the participant")
QUESTION_IDS = tuple(q[0] for q in db.QUESTIONS)


class RequestRefused(Exception):
    """A participant's request the study must refuse: `status` is the HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Slot:
    """What a participant sees at one position: the pair, the clips on each side, the prompt."""

    position: int
    total: int
    answered: int
    pair_id: int
    prompt: str
    left: tuple[str, str]  # (sha256, media type)
    right: tuple[str, str]


def token_hash(token: str) -> str:
    """The stored form of a participant token (the token itself is only in the participant's link)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------------------------- enrolment


def _choose_pairs(con: sqlite3.Connection, k: int, rng: random.Random) -> list[int]:
    """k pairs, those assigned least often so far first (ties broken at random): coverage stays balanced."""
    rows = con.execute(
        "SELECT p.id, COUNT(s.pair_id) FROM pair p LEFT JOIN slot s ON s.pair_id = p.id AND s.check_of IS NULL "
        "GROUP BY p.id").fetchall()
    keyed = sorted(rows, key=lambda r: (r[1], rng.random()))
    return [r[0] for r in keyed[:k]]


def _sequence(pairs: list[int], checks: int, rng: random.Random) -> list[tuple[int, int, int | None]]:
    """(pair, a_left, check_of) per position 1..: pairs in random order with random sides, then each check's
    repeat inserted at a random later place, at least one pair after its original where there is room."""
    rng.shuffle(pairs)
    seq: list[list] = [[pair, int(rng.random() < 0.5), None] for pair in pairs]
    candidates = range(len(seq) - 1) if len(seq) - 1 >= checks else range(len(seq))
    for original in [seq[i] for i in rng.sample(candidates, checks)]:
        at = seq.index(original)
        seq.insert(rng.randint(min(at + 2, len(seq)), len(seq)), [original[0], 1 - original[1], original])
    position = {id(item): i for i, item in enumerate(seq, 1)}
    return [(pair, a_left, position[id(orig)] if orig is not None else None) for pair, a_left, orig in seq]


def add_participant(con: sqlite3.Connection, via: str = "invite", limit: int | None = None) -> tuple[int, str]:
    """A new participant with their slots, in one transaction: (id, token). `limit` caps the participants that
    arrived `via` this route (RequestRefused 403 beyond it)."""
    token = secrets.token_urlsafe(24)  # 192 random bits
    with db.transaction(con):
        if limit is not None:
            count = con.execute("SELECT COUNT(*) FROM participant WHERE via = ?", (via,)).fetchone()[0]
            if count >= limit:
                raise RequestRefused(403, "this study takes no more participants")
        meta = db.read_meta(con)
        pid = con.execute("INSERT INTO participant (token_sha256, via, created_at) VALUES (?, ?, ?)",
                          (token_hash(token), via, db.now())).lastrowid
        rng = random.Random(f"{meta['seed']}:{pid}")  # reproducible given the study seed and the arrival order
        pairs = _choose_pairs(con, int(meta["pairs_per_participant"]), rng)
        slots = _sequence(pairs, int(meta["attention_checks"]), rng)
        con.executemany("INSERT INTO slot (participant_id, position, pair_id, a_left, check_of) VALUES (?, ?, ?, ?, ?)",
                        [(pid, i, pair, a_left, check_of) for i, (pair, a_left, check_of) in enumerate(slots, 1)])
    return pid, token


def participant_id(con: sqlite3.Connection, token: str) -> int | None:
    """The participant a token belongs to (looked up by its hash), or None."""
    row = con.execute("SELECT id FROM participant WHERE token_sha256 = ?", (token_hash(token),)).fetchone()
    return row[0] if row else None


# --------------------------------------------------------------------------------------------- answering


def progress(con: sqlite3.Connection, pid: int) -> tuple[int, int, int | None]:
    """(answered slots, total slots, next unanswered position or None when finished)."""
    row = con.execute(
        "SELECT COUNT(*), SUM(answered), MIN(CASE WHEN answered THEN NULL ELSE position END) FROM "
        "(SELECT s.position, EXISTS (SELECT 1 FROM answer a WHERE a.participant_id = s.participant_id "
        "AND a.position = s.position) AS answered FROM slot s WHERE s.participant_id = ?)", (pid,)).fetchone()
    return int(row[1] or 0), int(row[0]), row[2]


def current_slot(con: sqlite3.Connection, pid: int) -> Slot | None:
    """The first unanswered slot of a participant with its clips placed left/right, or None when finished."""
    answered, total, position = progress(con, pid)
    if position is None:
        return None
    row = con.execute(
        "SELECT s.pair_id, s.a_left, pr.text, ca.sha256, ma.media_type, cb.sha256, mb.media_type FROM slot s "
        "JOIN pair p ON p.id = s.pair_id JOIN clip ca ON ca.id = p.clip_a JOIN clip cb ON cb.id = p.clip_b "
        "JOIN media ma ON ma.sha256 = ca.sha256 JOIN media mb ON mb.sha256 = cb.sha256 "
        "JOIN prompt pr ON pr.id = ca.prompt_id WHERE s.participant_id = ? AND s.position = ?",
        (pid, position)).fetchone()
    a, b = (row[3], row[4]), (row[5], row[6])
    left, right = (a, b) if row[1] else (b, a)
    return Slot(position, total, answered, row[0], row[2], left, right)


def parse_answer(fields: dict[str, str]) -> tuple[int, int, dict[str, str]]:
    """(slot position, pair id, {question: choice}) from a submitted form; RequestRefused 422 naming the problem."""
    unknown = sorted(set(fields) - {"slot", "pair"} - {f"q_{q}" for q in QUESTION_IDS})
    if unknown:
        raise RequestRefused(422, f"unknown field or question: {unknown[0][:40]}")
    try:
        position, pair = int(fields["slot"]), int(fields["pair"])
    except (KeyError, ValueError):
        raise RequestRefused(422, "slot and pair must be whole numbers") from None
    choices = {}
    for q in QUESTION_IDS:
        choice = fields.get(f"q_{q}")
        if choice not in db.CHOICES:
            raise RequestRefused(422, f"question {q} needs one of {', '.join(db.CHOICES)}")
        choices[q] = choice
    return position, pair, choices


def submit(con: sqlite3.Connection, pid: int, position: int, pair: int, choices: dict[str, str]) -> int | None:
    """Store the four answers for one slot in one transaction; return the next position (None: finished).

    Refused (nothing stored): a slot not assigned to the participant (404), a pair other than the slot's (409),
    a slot already answered (409: replays are never stored twice), a slot other than the current one (409)."""
    if sorted(choices) != sorted(QUESTION_IDS) or any(c not in db.CHOICES for c in choices.values()):
        raise RequestRefused(422, "an answer needs one choice per question")
    with db.transaction(con):
        row = con.execute("SELECT pair_id FROM slot WHERE participant_id = ? AND position = ?",
                          (pid, position)).fetchone()
        if row is None:
            raise RequestRefused(404, f"slot {position} is not assigned to this participant")
        if row[0] != pair:
            raise RequestRefused(409, f"pair {pair} is not the pair of slot {position}")
        answered, total, current = progress(con, pid)
        if con.execute("SELECT 1 FROM answer WHERE participant_id = ? AND position = ?", (pid, position)).fetchone():
            raise RequestRefused(409, f"slot {position} is already answered")
        if position != current:
            raise RequestRefused(409, f"slot {position} is not the current one (slot {current} is)")
        stamp = db.now()
        try:
            con.executemany("INSERT INTO answer (participant_id, position, question_id, choice, answered_at) "
                            "VALUES (?, ?, ?, ?, ?)", [(pid, position, q, c, stamp) for q, c in choices.items()])
        except sqlite3.IntegrityError:
            raise RequestRefused(409, f"slot {position} is already answered") from None
        con.execute("UPDATE participant SET started_at = COALESCE(started_at, ?) WHERE id = ?", (stamp, pid))
        if answered + 1 == total:
            con.execute("UPDATE participant SET finished_at = ? WHERE id = ?", (stamp, pid))
    _, _, after = progress(con, pid)
    return after


def start(con: sqlite3.Connection, pid: int) -> None:
    """Mark the participant as started (they read the introduction)."""
    with db.transaction(con):
        con.execute("UPDATE participant SET started_at = COALESCE(started_at, ?) WHERE id = ?", (db.now(), pid))


# --------------------------------------------------------------------------------------------- attention


def attention(con: sqlite3.Connection) -> dict[int, tuple[int, int, int]]:
    """Per participant: (checks answered, checks failed, checks assigned), by the rule in this module's docstring."""
    out = {pid: [0, 0, n] for pid, n in con.execute(
        "SELECT p.id, COUNT(s.check_of) FROM participant p LEFT JOIN slot s ON s.participant_id = p.id "
        "GROUP BY p.id")}
    rows = con.execute(
        "SELECT r.participant_id, r.position, "
        "SUM(o.preferred <> 'none' AND r.preferred <> 'none' AND o.preferred <> r.preferred) "
        "FROM answer_view r JOIN answer_view o ON o.participant_id = r.participant_id AND o.position = r.check_of "
        "AND o.question_id = r.question_id WHERE r.check_of IS NOT NULL GROUP BY r.participant_id, r.position")
    for pid, _, contradictions in rows:
        out[pid][0] += 1
        out[pid][1] += int(contradictions >= CHECK_FAIL_CONTRADICTIONS)
    return {pid: (a, f, n) for pid, (a, f, n) in out.items()}


def overview(con: sqlite3.Connection) -> dict:
    """Progress per participant and per pair (attention repeats not counted for pairs), for the admin page."""
    checks = attention(con)
    participants = []
    for row in con.execute("SELECT id, via, created_at, started_at, finished_at FROM participant ORDER BY id"):
        answered, total, _ = progress(con, row["id"])
        done, failed, assigned = checks[row["id"]]
        participants.append({**dict(row), "answered": answered, "total": total, "checks_answered": done,
                             "checks_failed": failed, "checks": assigned})
    pairs = [dict(r) for r in con.execute(
        "SELECT p.id, sa.name AS system_a, sb.name AS system_b, pr.text AS prompt, ca.seed, "
        "COUNT(s.pair_id) AS assigned, "
        "COUNT(CASE WHEN EXISTS (SELECT 1 FROM answer a WHERE a.participant_id = s.participant_id "
        "AND a.position = s.position) THEN 1 END) AS answered "
        "FROM pair p JOIN clip ca ON ca.id = p.clip_a JOIN clip cb ON cb.id = p.clip_b "
        "JOIN system sa ON sa.id = ca.system_id JOIN system sb ON sb.id = cb.system_id "
        "JOIN prompt pr ON pr.id = ca.prompt_id "
        "LEFT JOIN slot s ON s.pair_id = p.id AND s.check_of IS NULL GROUP BY p.id ORDER BY p.id")]
    return {"participants": participants, "pairs": pairs,
            "answers": con.execute("SELECT COUNT(*) FROM answer").fetchone()[0],
            "finished": sum(p["finished_at"] is not None for p in participants)}
