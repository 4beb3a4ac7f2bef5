"""The study database: one SQLite file holding the design (systems, prompts, clips by content hash, pairs, the
four questions), the clips themselves, the participants with their randomised slots, and the answers.

Every connection runs in WAL mode with `synchronous=FULL` (a commit is on disk before it is acknowledged) and
foreign keys on. Answers are unique per (participant, slot, question): a replay cannot be stored twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Iterator

from nadm.errors import NADMError

FORMAT = "nadm-study"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

# The four questions of the paper's appendix (Sec. IV-D2): id, short title (Fig. 11's legend), full text.
QUESTIONS = (
    ("text", "Text alignment",
     "Which video clip matches the text better? Please select the one that better represents the given text "
     "description."),
    ("temporal", "Temporal consistency",
     "Which video clip has higher consistency? Please select the one that looks more smooth as a video clip."),
    ("style", "Landscape-painting style",
     "Which video clip exhibits the most distinct landscape painting style? Please select the best one."),
    ("overall", "Overall quality",
     "Which video gives you the best overall impression? Please consider all aspects."),
)
CHOICES = ("left", "right", "none")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE system (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, position INTEGER NOT NULL UNIQUE, folder TEXT NOT NULL
) STRICT;
CREATE TABLE prompt (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE) STRICT;
CREATE TABLE media (
    sha256 TEXT PRIMARY KEY, media_type TEXT NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL
) STRICT;
CREATE TABLE clip (
    id INTEGER PRIMARY KEY,
    system_id INTEGER NOT NULL REFERENCES system(id),
    prompt_id INTEGER NOT NULL REFERENCES prompt(id),
    seed INTEGER NOT NULL,
    sha256 TEXT NOT NULL REFERENCES media(sha256),
    source TEXT NOT NULL,
    sidecar TEXT,
    UNIQUE (system_id, prompt_id, seed)
) STRICT;
CREATE TABLE pair (
    id INTEGER PRIMARY KEY,
    clip_a INTEGER NOT NULL REFERENCES clip(id),
    clip_b INTEGER NOT NULL REFERENCES clip(id),
    UNIQUE (clip_a, clip_b),
    CHECK (clip_a <> clip_b)
) STRICT;
CREATE TABLE question (id TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, title TEXT NOT NULL, text TEXT NOT NULL)
    STRICT;
CREATE TABLE excluded_clip (id INTEGER PRIMARY KEY, system TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL)
    STRICT;
CREATE TABLE participant (
    id INTEGER PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    via TEXT NOT NULL CHECK (via IN ('invite', 'open')),
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
) STRICT;
CREATE TABLE slot (
    participant_id INTEGER NOT NULL REFERENCES participant(id),
    position INTEGER NOT NULL CHECK (position >= 1),
    pair_id INTEGER NOT NULL REFERENCES pair(id),
    a_left INTEGER NOT NULL CHECK (a_left IN (0, 1)),
    check_of INTEGER,
    PRIMARY KEY (participant_id, position),
    FOREIGN KEY (participant_id, check_of) REFERENCES slot(participant_id, position)
) STRICT;
CREATE INDEX slot_pair ON slot(pair_id);
CREATE TABLE answer (
    id INTEGER PRIMARY KEY,
    participant_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    question_id TEXT NOT NULL REFERENCES question(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'none')),
    answered_at TEXT NOT NULL,
    FOREIGN KEY (participant_id, position) REFERENCES slot(participant_id, position),
    UNIQUE (participant_id, position, question_id)
) STRICT;
-- One row per answer with the systems behind the sides: preferred is 'a', 'b' (the pair's systems) or 'none'.
CREATE VIEW answer_view AS
SELECT a.id AS answer_id, a.participant_id, a.position, s.check_of, s.pair_id, s.a_left, a.question_id,
       a.choice, a.answered_at,
       CASE WHEN a.choice = 'none' THEN 'none'
            WHEN (a.choice = 'left') = (s.a_left = 1) THEN 'a' ELSE 'b' END AS preferred,
       ca.system_id AS system_a, cb.system_id AS system_b, ca.prompt_id, ca.seed
FROM answer a
JOIN slot s ON s.participant_id = a.participant_id AND s.position = a.position
JOIN pair p ON p.id = s.pair_id
JOIN clip ca ON ca.id = p.clip_a
JOIN clip cb ON cb.id = p.clip_b;
"""


def now() -> str:
    """The current UTC time as an ISO-8601 string (what every timestamp column holds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _configure(con: sqlite3.Connection) -> None:
    """WAL journal, a full fsync per commit, foreign keys enforced."""
    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise NADMError(f"SQLite refused WAL mode for the study database (got {mode}); is it on a network drive?")
    con.execute("PRAGMA synchronous = FULL")
    con.execute("PRAGMA foreign_keys = ON")


def connect(path: str | Path, *, new: bool = False) -> sqlite3.Connection:
    """Open a study database (it must exist and be a nadm study unless `new`); autocommit, transactions explicit."""
    path = Path(path)
    if not new and not path.is_file():
        raise NADMError(f"{path} does not exist: make a study with `nadm study create`")
    try:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as e:
        raise NADMError(f"cannot open {path}: {e}") from e
    try:
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # wait for a busy lock instead of failing
        if not new:
            check_study(con, path)  # before any pragma that writes: another program's database stays untouched
        _configure(con)
    except sqlite3.DatabaseError as e:
        con.close()
        raise NADMError(f"{path} is not a readable SQLite database: {e}") from e
    except BaseException:
        con.close()
        raise
    return con


def check_study(con: sqlite3.Connection, path: str | Path) -> None:
    """NADMError unless the database was written by `nadm study create` with this schema version."""
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:  # no meta table
        meta = {}
    if meta.get("format") != FORMAT:
        raise NADMError(f"{path} is not a nadm study database")
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise NADMError(f"{path} has study schema version {meta.get('schema_version')}; this nadm reads "
                        f"{SCHEMA_VERSION}")


def read_meta(con: sqlite3.Connection) -> dict[str, str]:
    """The study's meta table as a dict."""
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


@contextlib.contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (the write lock is taken up front, so two writers never deadlock); ROLLBACK on
    any error."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def create_schema(con: sqlite3.Connection, meta: dict[str, str]) -> None:
    """The tables, the four questions and the meta rows, in one transaction."""
    with transaction(con):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                con.execute(statement)
        con.executemany("INSERT INTO question (id, position, title, text) VALUES (?, ?, ?, ?)",
                        [(qid, i, title, text) for i, (qid, title, text) in enumerate(QUESTIONS, 1)])
        rows = {"format": FORMAT, "schema_version": str(SCHEMA_VERSION), **meta}
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(rows.items()))


def integrity_ok(con: sqlite3.Connection) -> tuple[bool, str]:
    """`PRAGMA integrity_check` and `foreign_key_check`: (ok, first problem)."""
    result = con.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        return False, str(result)
    bad = con.execute("PRAGMA foreign_key_check").fetchone()
    if bad is not None:
        return False, f"foreign key violation in {bad[0]} row {bad[1]}"
    return True, "ok"
