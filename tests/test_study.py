"""`nadm study`: the design from clip folders, the randomisation, the database's guarantees, the statistics against
a hand-computed table, the CLI, and the server over HTTP on 127.0.0.1 (load, crash, bad input)."""

import json
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from study_helpers import (
    ADMIN_TOKEN,
    PROMPTS,
    LiveServer,
    add_participants,
    make_clips,
    make_study,
    run_participant,
    side_for,
)

from nadm.cli import main
from nadm.errors import NADMError
from nadm.io import write_video
from nadm.study import db, sessions
from nadm.study.design import plan_study
from nadm.study.report import analyse, wilson

QUESTIONS = ("text", "temporal", "style", "overall")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 systems x 2 prompts, seed 0: nadm and animatediff as mp4, no-sc as gif."""
    return make_clips(tmp_path_factory.mktemp("clips"))


def _cli(capsys, *args):
    """Run `nadm ...` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


# ------------------------------------------------------------------------------------------------- design


def test_plan_pairs_every_two_systems_on_prompt_and_seed(clips):
    plan = plan_study(clips)
    assert len(plan.pairs) == 3 * 2  # 3 couples x 2 prompts
    assert not plan.excluded
    for a, b in plan.pairs:
        assert (a.prompt, a.seed) == (b.prompt, b.seed) and a.system != b.system
    ref = plan_study(clips, reference="no-sc")
    assert {(a.system, b.system) for a, b in ref.pairs} == {("no-sc", "nadm"), ("no-sc", "animatediff")}


def test_plan_lists_missing_and_unmatched_clips(clips, tmp_path):
    folders = {name: tmp_path / name for name in clips}
    for name, folder in clips.items():
        shutil.copytree(folder, folders[name])
    for p in folders["no-sc"].glob("0001_seed0.gif*"):
        p.unlink()  # no-sc lacks prompt 1
    write_video(np.zeros((2, 8, 8, 3), np.uint8), folders["animatediff"] / "extra.mp4", fps=4,
                metadata={"prompt": "only here", "seed": 3})
    write_video(np.zeros((2, 8, 8, 3), np.uint8), folders["nadm"] / "nameless.mp4", fps=4)  # no prompt, no seed
    plan = plan_study(folders)
    assert len(plan.pairs) == 2 + 1 + 1  # nadm-animatediff 2, nadm-no-sc 1, animatediff-no-sc 1
    reasons = {(system, reason.split(":")[0]) for system, _, reason in plan.excluded}
    assert ("no-sc", "missing") in reasons  # the clip no-sc lacks is listed under no-sc
    assert ("animatediff", "unmatched") in reasons  # 'only here' has no partner
    assert any(system == "nadm" and "no prompt" in reason for system, _, reason in plan.excluded)
    assert sum(reason.startswith("missing") for _, _, reason in plan.excluded) == 1


def test_plan_reads_clips_without_sidecars_through_the_prompt_file(clips, tmp_path):
    other = tmp_path / "gen2"
    other.mkdir()
    for i in range(2):
        write_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "x.mp4", fps=4, overwrite=True)
        (tmp_path / "x.mp4").rename(other / f"{i:04d}_seed0.mp4")  # a foreign system's clip: no sidecar
    systems = {"nadm": clips["nadm"], "gen2": other}
    with pytest.raises(NADMError, match="no usable clips"):
        plan_study(systems)  # without --prompts gen2's clips have no prompt
    plan = plan_study(systems, list(PROMPTS), "prompts.txt")
    assert len(plan.pairs) == 2 and not plan.excluded
    edited = tmp_path / "edited"  # a sidecar that disagrees with the prompt file is listed, not trusted
    shutil.copytree(clips["nadm"], edited)
    side = edited / "0001_seed0.mp4.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "prompt": "something else"}))
    plan = plan_study({"gen2": other, "edited": edited}, list(PROMPTS), "prompts.txt")
    assert len(plan.pairs) == 1
    assert any(s == "edited" and "differs from line 2 of prompts.txt" in r for s, _, r in plan.excluded)
    assert any(s == "gen2" and r.startswith("unmatched") for s, _, r in plan.excluded)


def test_plan_refuses_ambiguous_or_empty_input(clips, tmp_path):
    dup = tmp_path / "dup"
    shutil.copytree(clips["nadm"], dup)
    shutil.copy(dup / "0000_seed0.mp4", dup / "copy.mp4")
    shutil.copy(dup / "0000_seed0.mp4.json", dup / "copy.mp4.json")
    with pytest.raises(NADMError, match="two clips for one prompt"):
        plan_study({"dup": dup, "ad": clips["animatediff"]})
    with pytest.raises(NADMError, match="not a folder"):
        plan_study({"a": tmp_path / "nope", "b": clips["nadm"]})
    with pytest.raises(NADMError, match="at least two systems"):
        plan_study({"a": clips["nadm"]})


# ------------------------------------------------------------------------------------- database, randomisation


def test_database_settings_and_constraints(clips, tmp_path):
    path = make_study(tmp_path / "s.sqlite", clips)
    con = db.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.integrity_ok(con) == (True, "ok")
    with pytest.raises(sqlite3.IntegrityError):  # no answer without its slot
        con.execute("INSERT INTO answer (participant_id, position, question_id, choice, answered_at) "
                    "VALUES (99, 1, 'text', 'left', 'now')")
    (pid, token), = add_participants(path, 1)
    slot = sessions.current_slot(con, pid)
    choices = dict.fromkeys(QUESTIONS, "left")
    assert sessions.submit(con, pid, slot.position, slot.pair_id, choices) == 2
    with pytest.raises(sessions.RequestRefused) as refused:
        sessions.submit(con, pid, slot.position, slot.pair_id, choices)
    assert refused.value.status == 409
    with pytest.raises(sqlite3.IntegrityError):  # the UNIQUE constraint behind it
        con.execute("INSERT INTO answer (participant_id, position, question_id, choice, answered_at) "
                    "VALUES (?, 1, 'text', 'right', 'now')", (pid,))
    assert con.execute("SELECT COUNT(*) FROM answer").fetchone()[0] == 4
    assert sessions.participant_id(con, token) == pid and sessions.participant_id(con, token + "x") is None
    assert token not in path.read_bytes().decode("latin-1")  # only the token's hash is stored


def test_randomisation_is_balanced_recorded_and_has_swapped_repeats(clips, tmp_path):
    path = make_study(tmp_path / "s.sqlite", clips, k=3, checks=1, seed=11)
    add_participants(path, 20)
    con = db.connect(path)
    slots = con.execute("SELECT participant_id, position, pair_id, a_left, check_of FROM slot "
                        "ORDER BY participant_id, position").fetchall()
    by_person = {}
    for row in slots:
        by_person.setdefault(row[0], []).append(tuple(row[1:]))
    orders, sides = set(), set()
    for seq in by_person.values():
        assert [s[0] for s in seq] == [1, 2, 3, 4]
        originals = [s for s in seq if s[3] is None]
        repeats = [s for s in seq if s[3] is not None]
        assert len(originals) == 3 and len({s[1] for s in originals}) == 3 and len(repeats) == 1
        (position, pair, a_left, check_of), = repeats
        original = seq[check_of - 1]
        assert original[1] == pair and original[2] == 1 - a_left and position > check_of
        orders.add(tuple(s[1] for s in originals))
        sides.update(s[2] for s in seq)
    assert len(orders) > 5 and sides == {0, 1}
    counts = [n for (n,) in con.execute("SELECT COUNT(*) FROM slot WHERE check_of IS NULL GROUP BY pair_id")]
    assert sorted(counts) == [10] * 6  # 20 x 3 over 6 pairs: least-assigned first keeps them equal
    # the same seed and arrival order give the same design
    again = make_study(tmp_path / "again.sqlite", clips, k=3, checks=1, seed=11)
    add_participants(again, 20)
    con2 = db.connect(again)
    assert [tuple(r) for r in con2.execute("SELECT participant_id, position, pair_id, a_left, check_of FROM slot "
                                           "ORDER BY 1, 2")] == [tuple(r) for r in slots]


# ------------------------------------------------------------------------------------------------- statistics

# The known answer table: 6 attentive participants x 2 pairs = 12 answers per question (nadm = A, base = B).
TABLE = {
    "text": ["a"] * 7 + ["b"] * 3 + ["none"] * 2,
    "temporal": ["a", "b"] * 6,
    "style": ["none"] * 12,
    "overall": ["a"] * 10 + ["none"] * 2,
}
# By hand: Wilson (p + z^2/2n)/(1 + z^2/n) -/+ z/(1 + z^2/n) sqrt(p(1-p)/n + z^2/4n^2), z = 1.959964;
# exact two-sided binomial p: 7/10 -> 2 (C(10,7)+C(10,8)+C(10,9)+C(10,10)) / 2^10 = 352/1024; 10/10 -> 2/1024.
EXPECTED = {
    "text": (7, 3, 2, 0.7, 0.39677, 0.89220, 0.34375),
    "temporal": (6, 6, 0, 0.5, 0.25378, 0.74622, 1.0),
    "style": (0, 0, 12, None, None, None, None),
    "overall": (10, 0, 2, 1.0, 0.72246, 1.0, 0.001953125),
}


def _answer(con, pid, prefs_for_pair):
    """Answer every slot of a participant: prefs_for_pair(pair_id) -> {question: 'a'|'b'|'none'}."""
    while (slot := sessions.current_slot(con, pid)) is not None:
        prefs = prefs_for_pair(slot.pair_id)
        sessions.submit(con, pid, slot.position, slot.pair_id,
                        {q: side_for(con, pid, slot.position, prefs[q]) for q in QUESTIONS})


def test_report_matches_a_hand_computed_table(clips, tmp_path):
    path = make_study(tmp_path / "s.sqlite", {"nadm": clips["nadm"], "base": clips["animatediff"]}, k=2, checks=1)
    people = add_participants(path, 8)
    con = db.connect(path)
    pairs = [p for (p,) in con.execute("SELECT id FROM pair ORDER BY id")]
    for i, (pid, _) in enumerate(people[:6]):  # attentive: the repeat gets the same answers as the original
        _answer(con, pid, lambda pair, i=i: {q: TABLE[q][2 * i + pairs.index(pair)] for q in QUESTIONS})
    cheat = people[6][0]  # always "left": the side-swapped repeat flips all four preferences
    while (slot := sessions.current_slot(con, cheat)) is not None:
        sessions.submit(con, cheat, slot.position, slot.pair_id, dict.fromkeys(QUESTIONS, "left"))
    quitter = people[7][0]  # one pair, then gone
    slot = sessions.current_slot(con, quitter)
    sessions.submit(con, quitter, slot.position, slot.pair_id, dict.fromkeys(QUESTIONS, "right"))

    report = analyse(con)
    assert report["participants"] == {"analysed": 6, "failed_attention": 1, "incomplete": 1}
    assert report["excluded_participants"] == {"failed_attention": [cheat], "incomplete": [quitter]}
    assert report["answers_counted"] == 6 * 2 * 4  # the attention repeats are not counted twice
    assert report["answers_excluded"] == 2 * 4 + 4
    rows = {r["question"]: r for r in report["results"]}
    assert {(r["system_a"], r["system_b"]) for r in report["results"]} == {("nadm", "base")}
    for q, (a, b, ties, rate, low, high, p) in EXPECTED.items():
        r = rows[q]
        assert (r["a"], r["b"], r["ties"]) == (a, b, ties), q
        for got, want in ((r["rate_a"], rate), (r["ci_low"], low), (r["ci_high"], high), (r["p_value"], p)):
            assert (got is None and want is None) or got == pytest.approx(want, abs=1e-5), (q, got, want)
    assert sessions.attention(con)[cheat] == (1, 1, 1)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_create_report_export_and_overwrite_rules(clips, tmp_path, capsys):
    out = tmp_path / "study.sqlite"
    args = ["study", "create", *[f"--system={n}={f}" for n, f in clips.items()], "--pairs-per-participant", 2,
            "--seed", 3, "-o", out]
    code, stdout, _ = _cli(capsys, *args)
    assert code == 0 and "pairs: 6" in stdout and out.is_file()
    assert not list(tmp_path.glob(".study.sqlite*"))  # no temporary file left
    code, _, err = _cli(capsys, *args)
    assert code == 2 and "already exists" in err
    code, _, _ = _cli(capsys, *args, "--overwrite")  # no answers yet: nadm may replace its own study
    assert code == 0
    code, stdout, _ = _cli(capsys, "study", "invite", out, "-n", 2, "--url", "http://127.0.0.1:9")
    links = stdout.split()
    assert len(links) == 2 and all(link.startswith("http://127.0.0.1:9/p/") for link in links)
    con = db.connect(out)
    pid = sessions.participant_id(con, links[0].rsplit("/", 1)[1])
    _answer(con, pid, lambda pair: dict.fromkeys(QUESTIONS, "a"))
    con.close()
    code, _, err = _cli(capsys, *args, "--overwrite")
    assert code == 2 and "holds 12 answers" in err
    stray = tmp_path / "notes.sqlite"
    stray.write_text("not a database")
    code, _, err = _cli(capsys, *args[:-1], stray, "--overwrite")
    assert code == 2 and stray.read_text() == "not a database"

    code, stdout, _ = _cli(capsys, "study", "report", out, "--json", tmp_path / "r.json", "--png", tmp_path / "f.png")
    assert code == 0 and "1 analysed" in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["answers_counted"] == 8 and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = _cli(capsys, "study", "report", out, "--json", tmp_path / "r.json")
    assert code == 2 and "already exists" in err
    code, _, _ = _cli(capsys, "study", "report", out, "--json", tmp_path / "r.json", "--png", tmp_path / "f.png",
                      "--overwrite")
    assert code == 0  # nadm's own report and figure (the figure by its sidecar) may be replaced
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    code, _, err = _cli(capsys, "study", "report", out, "--png", mine, "--overwrite")
    assert code == 2 and "nadm did not write it" in err and mine.read_bytes() == b"the user's own picture"
    code, stdout, _ = _cli(capsys, "study", "export", out, "--csv", tmp_path / "a.csv")
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert code == 0 and len(lines) == 1 + 12 and lines[0].startswith("answer_id,participant,participant_status")
    assert sum(",analysed," in line for line in lines) == 12
    code, _, err = _cli(capsys, "study", "report", tmp_path / "missing.sqlite")
    assert code == 2 and "does not exist" in err
    other = tmp_path / "other.sqlite"  # another program's database: refused and left as it was (not made WAL)
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    code, _, err = _cli(capsys, "study", "export", other, "--csv", tmp_path / "b.csv")
    assert code == 2 and "not a nadm study" in err and not (tmp_path / "b.csv").exists()
    assert sqlite3.connect(other).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    code, _, err = _cli(capsys, "study", "serve", out, "--admin-token", "short")
    assert code == 2 and "at least 16" in err


# ------------------------------------------------------------------------------------------------- server

LOAD_PARTICIPANTS = 50


@pytest.fixture(scope="module")
def live(clips, tmp_path_factory):
    """A server over a study of 3 systems x 2 prompts (3 pairs + 1 check each) with 50 + 3 participants."""
    path = make_study(tmp_path_factory.mktemp("live") / "study.sqlite", clips, k=3, checks=1)
    people = add_participants(path, LOAD_PARTICIPANTS + 3)
    server = LiveServer(path)
    yield server, path, people
    server.stop()


def _load(url, tokens, stop=None):
    """Every token's participant answers all pairs at once, one thread each: (acked, latencies)."""
    acked, latencies, errors = [], [], []
    stop = stop or threading.Event()

    def one(token):
        try:
            with httpx.Client(timeout=30) as client:
                run_participant(client, url, token, acked, latencies, stop)
        except Exception as e:  # reported below: a worker thread must not swallow a failure
            errors.append(e)

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        list(pool.map(one, tokens))
    assert not errors, errors[:3]
    return acked, latencies


def _stored(path):
    """{(participant, position): number of answers} read straight from the database file."""
    con = db.connect(path)
    try:
        return dict(((pid, pos), n) for pid, pos, n in con.execute(
            "SELECT participant_id, position, COUNT(*) FROM answer GROUP BY 1, 2"))
    finally:
        con.close()


def test_load_50_participants_every_acknowledged_answer_stored_once(live, capsys):
    server, path, people = live
    group = people[:LOAD_PARTICIPANTS]
    t0 = time.perf_counter()
    acked, latencies = _load(server.url, [token for _, token in group])
    wall = time.perf_counter() - t0
    pid_of = {token: pid for pid, token in group}
    stored = _stored(path)
    assert len(acked) == len(set(acked)) == LOAD_PARTICIPANTS * 4
    assert {(pid_of[t], s) for t, s in acked} == {k for k in stored if k[0] in set(pid_of.values())}
    assert all(n == 4 for n in stored.values())  # four questions per answer, never twice
    con = db.connect(path)
    finished = con.execute("SELECT COUNT(*) FROM participant WHERE finished_at IS NOT NULL").fetchone()[0]
    assert finished == LOAD_PARTICIPANTS
    p95 = float(np.percentile(latencies, 95))
    with capsys.disabled():
        print(f"\nstudy load: {LOAD_PARTICIPANTS} participants, {len(acked)} answers in {wall:.1f} s, answer latency "
              f"p50 {1000 * np.median(latencies):.0f} ms, p95 {1000 * p95:.0f} ms (127.0.0.1)")
    r = httpx.get(f"{server.url}/admin.json", auth=("admin", ADMIN_TOKEN))
    assert r.status_code == 200 and r.json()["finished"] == LOAD_PARTICIPANTS


def _post(url, token, body, ctype="application/x-www-form-urlencoded", **headers):
    return httpx.post(f"{url}/p/{token}/answer", content=body,
                      headers={"content-type": ctype, "accept": "application/json", **headers})


def test_bad_input_is_refused_stores_nothing_and_the_server_keeps_serving(live):
    server, path, people = live
    (pid, token), (other_pid, other_token) = people[LOAD_PARTICIPANTS:LOAD_PARTICIPANTS + 2]
    url = server.url
    con = db.connect(path)
    state = httpx.get(f"{url}/p/{token}", headers={"accept": "application/json"}).json()["next"]
    slot, pair = state["slot"], state["pair"]
    mine = {p for (p,) in con.execute("SELECT pair_id FROM slot WHERE participant_id = ?", (pid,))}
    others = {p for (p,) in con.execute("SELECT pair_id FROM slot WHERE participant_id = ?", (other_pid,))}
    foreign = min(set(range(1, 7)) - mine)  # a pair this participant was not given
    foreign_to_other = min(mine - others) if mine - others else None
    answers = "q_text=left&q_temporal=right&q_style=none&q_overall=left"
    before = con.execute("SELECT COUNT(*) FROM answer").fetchone()[0]
    cases = [
        (_post(url, token, f"slot={slot}&pair={foreign}&{answers}"), 409),  # a pair not assigned to them
        (_post(url, token, f"slot=99&pair={pair}&{answers}"), 404),  # a slot they do not have
        (_post(url, token, f"slot={slot}&pair={pair}&q_colour=left&{answers}"), 422),  # unknown question id
        (_post(url, token, f"slot={slot}&pair={pair}&q_text=left"), 422),  # questions missing
        (_post(url, token, f"slot={slot}&pair={pair}&{answers.replace('none', 'maybe')}"), 422),  # bad choice
        (_post(url, token, f"slot=one&pair={pair}&{answers}"), 422),
        (_post(url, token, f"slot={slot}&slot={slot}&pair={pair}&{answers}"), 422),  # repeated field
        (_post(url, token, b"slot=%ff%fe&pair=\xff\xfe"), 400),  # not UTF-8
        (_post(url, token, "a=b=c&&=&"), 400),  # malformed form
        (_post(url, token, json.dumps({"slot": slot}), "application/json"), 415),
        (_post(url, token, "x=" + "a" * 20000), 413),  # oversized, announced
        (httpx.post(f"{url}/p/{token}/answer", content=iter([b"slot=1&" + b"a" * 4096] * 8),
                    headers={"content-type": "application/x-www-form-urlencoded"}), 413),  # oversized, chunked
        (_post(url, "A" * 32, f"slot={slot}&pair={pair}&{answers}"), 404),  # a token nobody has
        (_post(url, "../../etc", f"slot={slot}&pair={pair}&{answers}"), 404),
        (httpx.get(f"{url}/clip/..%2F..%2Fetc%2Fpasswd"), 404),  # clips only by content hash
        (httpx.get(f"{url}/clip/{'0' * 64}"), 404),
        (httpx.get(f"{url}/static/..%2F..%2Fstudy.sqlite"), 404),
        (httpx.delete(f"{url}/p/{token}/answer"), 405),
        (httpx.get(f"{url}/admin"), 401),
        (httpx.get(f"{url}/admin", auth=("admin", ADMIN_TOKEN[:-1] + "x")), 401),
        (httpx.post(f"{url}/start"), 404),  # enrolment is by invitation here
    ]
    if foreign_to_other is not None:  # another participant's token with this participant's pair
        other_slot = httpx.get(f"{url}/p/{other_token}", headers={"accept": "application/json"}).json()["next"]
        cases.append((_post(url, other_token, f"slot={other_slot['slot']}&pair={foreign_to_other}&{answers}"), 409))
    for i, (response, status) in enumerate(cases):
        assert response.status_code == status, (i, response.status_code, response.text[:200])
        assert "Traceback" not in response.text and 'File "' not in response.text
    assert con.execute("SELECT COUNT(*) FROM answer").fetchone()[0] == before  # nothing stored
    # a proper answer is stored once; its replay is refused
    assert _post(url, token, f"slot={slot}&pair={pair}&{answers}").status_code == 200
    replay = _post(url, token, f"slot={slot}&pair={pair}&{answers}")
    assert replay.status_code == 409 and "already answered" in replay.text
    assert con.execute("SELECT COUNT(*) FROM answer WHERE participant_id = ?", (pid,)).fetchone()[0] == 4
    assert httpx.get(f"{url}/healthz").json() == {"ok": True}
    clip = httpx.get(f"{url}/clip/{state['left']}", headers={"range": "bytes=0-9"})
    assert clip.status_code == 206 and len(clip.content) == 10
    assert httpx.get(f"{url}/admin", auth=("admin", ADMIN_TOKEN)).status_code == 200
    assert server.proc.poll() is None and not any("Traceback" in line for line in server.stderr)


def test_crash_sigkill_mid_load_keeps_every_acknowledged_answer_and_participants_resume(clips, tmp_path):
    path = make_study(tmp_path / "study.sqlite", clips, k=3, checks=1)
    people = add_participants(path, LOAD_PARTICIPANTS)
    pid_of = {token: pid for pid, token in people}
    server = LiveServer(path)
    stop = threading.Event()
    result = {}
    loader = threading.Thread(target=lambda: result.update(zip(("acked", "lat"), _load(
        server.url, list(pid_of), stop))))
    try:
        loader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _count_answers(path) < 60:
            time.sleep(0.02)
        server.kill()  # SIGKILL while the other answers are in flight
    finally:
        stop.set()
        loader.join(60)
        server.stop()
    acked = result["acked"]
    assert 0 < len(acked) < LOAD_PARTICIPANTS * 4, len(acked)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    stored = _stored(path)
    assert {(pid_of[t], s) for t, s in acked} <= set(stored)  # every acknowledged answer survived
    assert all(n == 4 for n in stored.values())  # no half-stored answer
    # restart: every participant continues at their first unanswered pair and finishes
    server = LiveServer(path)
    try:
        for pid, token in people[:5]:
            state = httpx.get(f"{server.url}/p/{token}", headers={"accept": "application/json"}).json()
            assert state["answered"] == sum(1 for k in stored if k[0] == pid)
        more, _ = _load(server.url, list(pid_of))
    finally:
        server.stop()
    assert not set(more) & {(t, s) for t, s in acked}
    stored = _stored(path)
    assert len(stored) == LOAD_PARTICIPANTS * 4 and all(n == 4 for n in stored.values())


def _count_answers(path):
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute("SELECT COUNT(*) FROM answer").fetchone()[0] // 4
    finally:
        con.close()


def test_open_enrolment_cap_and_internal_errors_without_stack_traces(clips, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from nadm.study.server import create_app

    path = make_study(tmp_path / "s.sqlite", clips, k=2, checks=0)
    client = TestClient(create_app(path, open_enrolment=True, max_participants=2), raise_server_exceptions=False)
    assert "Take part" in client.get("/").text
    first = client.post("/start", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/p/")
    assert "Begin" in client.get(first.headers["location"]).text
    assert client.post("/start", follow_redirects=False).status_code == 303
    full = client.post("/start")
    assert full.status_code == 403 and "no more participants" in full.text
    assert db.connect(path).execute("SELECT COUNT(*) FROM participant").fetchone()[0] == 2
    assert client.get("/admin").status_code == 404  # no admin token: no admin page

    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sessions, "current_slot", broken)
    for accept in ("text/html", "application/json"):
        r = client.get(first.headers["location"], headers={"accept": accept})
        assert r.status_code == 500 and "secret internals" not in r.text and "Traceback" not in r.text
    assert client.get("/healthz").json() == {"ok": True}
