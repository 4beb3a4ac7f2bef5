"""`nadm study export --csv`: one row per stored answer, with everything needed to analyse it elsewhere."""

from __future__ import annotations

import csv
import io
import sqlite3

from nadm.study.report import participant_groups

COLUMNS = ["answer_id", "participant", "participant_status", "position", "attention_check_of", "pair", "prompt",
           "seed", "system_a", "system_b", "system_left", "system_right", "question", "choice", "preferred",
           "preferred_system", "answered_at"]


def answers_csv(con: sqlite3.Connection) -> str:
    """Every answer as CSV text: sides as shown, the systems behind them, the participant's analysis status."""
    con.execute("BEGIN")
    try:
        status = {pid: name for name, pids in participant_groups(con).items() for pid in pids}
        rows = con.execute(
            "SELECT v.answer_id, v.participant_id, v.position, v.check_of, v.pair_id, pr.text, v.seed, sa.name, "
            "sb.name, v.a_left, v.question_id, v.choice, v.preferred, v.answered_at FROM answer_view v "
            "JOIN system sa ON sa.id = v.system_a JOIN system sb ON sb.id = v.system_b "
            "JOIN prompt pr ON pr.id = v.prompt_id ORDER BY v.participant_id, v.position, v.answer_id").fetchall()
    finally:
        con.execute("COMMIT")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (aid, pid, position, check_of, pair, prompt, seed, name_a, name_b, a_left, question, choice, preferred,
         stamp) in rows:
        left, right = (name_a, name_b) if a_left else (name_b, name_a)
        chosen = {"a": name_a, "b": name_b}.get(preferred, "")
        writer.writerow([aid, pid, status[pid], position, "" if check_of is None else check_of, pair, prompt, seed,
                         name_a, name_b, left, right, question, choice, preferred, chosen, stamp])
    return text.getvalue()
