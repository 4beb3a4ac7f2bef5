"""`nadm study report`: Fig. 11's numbers with their uncertainty (Sec. IV-D2).

For every compared pair of systems (A, B) and every question: how often A was preferred over B, as a rate over
the answers with a preference, a Wilson 95% interval, and a two-sided exact binomial (sign) test of p = 1/2.
"No preference" answers are ties: counted and reported, but left out of the rate, the interval and the test.
Only participants who finished and passed every attention check are analysed; the others are counted. The
side-swapped repeats that serve as attention checks are not counted a second time.
"""

from __future__ import annotations

import math
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from nadm.errors import NADMError
from nadm.study import db, sessions

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
TIES = ("'no preference' answers are ties: counted, and left out of the rate, the Wilson interval and the "
        "binomial test")


@dataclass(frozen=True)
class Preference:
    """One bar of Fig. 11: A's preference rate over B on one question."""

    system_a: str
    system_b: str
    question: str
    a: int  # answers preferring A
    b: int  # answers preferring B
    ties: int  # "no preference"
    rate_a: float | None  # a / (a + b); None when nobody preferred either
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # two-sided exact binomial test of a out of a + b at 1/2


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (n > 0)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def preference(system_a: str, system_b: str, question: str, a: int, b: int, ties: int) -> Preference:
    """Rate, interval and test for one (pair of systems, question) cell."""
    from scipy.stats import binomtest

    n = a + b
    if n == 0:
        return Preference(system_a, system_b, question, a, b, ties, None, None, None, None)
    low, high = wilson(a, n)
    return Preference(system_a, system_b, question, a, b, ties, a / n, low, high, float(binomtest(a, n, 0.5).pvalue))


def participant_groups(con: sqlite3.Connection) -> dict[str, list[int]]:
    """Participants by status: analysed (finished, every check passed), failed_attention, incomplete."""
    checks = sessions.attention(con)
    groups: dict[str, list[int]] = {"analysed": [], "failed_attention": [], "incomplete": []}
    for pid, finished in con.execute("SELECT id, finished_at FROM participant ORDER BY id"):
        if finished is None:
            groups["incomplete"].append(pid)
        else:
            groups["failed_attention" if checks[pid][1] else "analysed"].append(pid)
    return groups


def analyse(con: sqlite3.Connection) -> dict:
    """The whole report as a JSON-ready dict: participants by status, the rules, one row per system pair and
    question. Read in one transaction: a consistent snapshot while the server keeps writing."""
    con.execute("BEGIN")
    try:
        groups = participant_groups(con)
        analysed = set(groups["analysed"])
        counts: dict[tuple[int, int, str], dict[str, int]] = {}
        excluded_answers = 0
        for pid, sa, sb, q, pref, n in con.execute(
                "SELECT participant_id, system_a, system_b, question_id, preferred, COUNT(*) FROM answer_view "
                "WHERE check_of IS NULL GROUP BY 1, 2, 3, 4, 5"):
            if pid not in analysed:
                excluded_answers += n
                continue
            cell = counts.setdefault((sa, sb, q), {})
            cell[pref] = cell.get(pref, 0) + n
        names = dict(con.execute("SELECT id, name FROM system"))
        couples = con.execute(
            "SELECT DISTINCT ca.system_id, cb.system_id FROM pair p JOIN clip ca ON ca.id = p.clip_a "
            "JOIN clip cb ON cb.id = p.clip_b JOIN system sa ON sa.id = ca.system_id JOIN system sb ON sb.id = "
            "cb.system_id ORDER BY sa.position, sb.position").fetchall()
    finally:
        con.execute("COMMIT")
    results = []
    for sa, sb in couples:
        for qid, _, _ in db.QUESTIONS:
            c = counts.get((sa, sb, qid), {})
            results.append(preference(names[sa], names[sb], qid, c.get("a", 0), c.get("b", 0), c.get("none", 0)))
    return {
        "participants": {k: len(v) for k, v in groups.items()},
        "excluded_participants": {k: v for k, v in groups.items() if k != "analysed"},
        "answers_counted": sum(r.a + r.b + r.ties for r in results),
        "answers_excluded": excluded_answers,
        "ties": TIES,
        "attention_rule": sessions.ATTENTION_RULE,
        "interval": "Wilson score, 95%",
        "test": "two-sided exact binomial test of p = 1/2 (scipy.stats.binomtest) over answers with a preference",
        "questions": {qid: title for qid, title, _ in db.QUESTIONS},
        "results": [asdict(r) for r in results],
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_table(report: dict) -> str:
    """The report as a plain-text table (one line per system pair and question)."""
    p = report["participants"]
    lines = [f"participants: {p['analysed']} analysed, {p['failed_attention']} excluded (failed an attention "
             f"check), {p['incomplete']} incomplete (not analysed); answers counted: {report['answers_counted']}",
             f"ties: {report['ties']}", ""]
    header = f"{'A vs B':<28} {'question':<26} {'A':>5} {'B':>5} {'ties':>5} {'A %':>6}  {'95% CI':<14} {'p':>8}"
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        ci = "-" if r["ci_low"] is None else f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        pv = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"{(r['system_a'] + ' vs ' + r['system_b'])[:28]:<28} {report['questions'][r['question']]:<26} "
                     f"{r['a']:>5} {r['b']:>5} {r['ties']:>5} {_pct(r['rate_a']):>6}  {ci:<14} {pv:>8}")
    return "\n".join(lines)


def plot(report: dict, out: Path, overwrite: bool) -> Path:
    """Fig. 11 as grouped bars: per compared pair, A's preference rate on each question with its Wilson
    interval; written atomically (the format follows the suffix: png, pdf, svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nadm.outputs import safe_replace, temp_path

    couples = list(dict.fromkeys((r["system_a"], r["system_b"]) for r in report["results"]))
    qids = list(report["questions"])
    cell = {(r["system_a"], r["system_b"], r["question"]): r for r in report["results"]}
    x, width = np.arange(len(couples)), 0.8 / len(qids)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(couples) + 2), 4.2))
    for i, q in enumerate(qids):
        rows = [cell[a, b, q] for a, b in couples]
        rate = np.array([100 * r["rate_a"] if r["rate_a"] is not None else np.nan for r in rows])
        low = np.array([100 * r["ci_low"] if r["ci_low"] is not None else np.nan for r in rows])
        high = np.array([100 * r["ci_high"] if r["ci_high"] is not None else np.nan for r in rows])
        ax.bar(x + (i - (len(qids) - 1) / 2) * width, np.nan_to_num(rate), width, label=report["questions"][q],
               yerr=np.nan_to_num(np.vstack([rate - low, high - rate])), capsize=2)
    ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, [f"{a}\nvs {b}" for a, b in couples])
    ax.set_ylim(0, 100)
    firsts = {a for a, _ in couples}
    who = next(iter(firsts)) if len(firsts) == 1 else "first system"
    ax.set_ylabel(f"{who} preferred (%), ties excluded")
    ax.set_title(f"User study: {report['participants']['analysed']} participants (Wilson 95% intervals)")
    ax.legend(fontsize="small", ncols=len(qids) if len(couples) > 2 else 2, loc="upper center",
              bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    tmp = temp_path(out, out.suffix)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        safe_replace(tmp, out, overwrite)
    except (OSError, ValueError) as e:
        raise NADMError(f"could not write {out}: {e}") from e
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return out
