"""The study's server-rendered pages: plain HTML forms, no script (every value escaped), one stylesheet."""

from __future__ import annotations

from html import escape

from nadm.study import db
from nadm.study.sessions import Slot

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
.pair { display: flex; gap: 1.5em; flex-wrap: wrap; }
.pair figure { flex: 1 1 400px; margin: 0; }
.pair video, .pair img { width: 100%; background: #000; }
figcaption { font-weight: bold; text-align: center; padding: .3em; }
.prompt { font-size: 1.15em; background: #f4f1ea; padding: .6em; border-left: 4px solid #8a7b5c; }
fieldset { margin: .8em 0; border: 1px solid #ccc; }
fieldset label { margin-right: 1.5em; white-space: nowrap; }
button { font-size: 1.1em; padding: .5em 1.5em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: left; }
.error { color: #a00; }
"""

INTRO = """You will see {n} pairs of short videos made from a text description in the style of Chinese landscape
painting. The two videos of a pair loop side by side. For each pair, answer four questions: which video
matches the text better, which one is more consistent over time, which one shows the landscape-painting
style more distinctly, and which one gives the best overall impression. Choose "no preference" only when you
cannot tell them apart. Your answers are saved after every pair: you can close this page and come back later
with the same link to continue where you stopped."""


def page(title: str, body: str) -> str:
    """A whole HTML document around `body` (already escaped)."""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><link rel=\"stylesheet\" href=\"/static/study.css\"></head>"
            f"<body>{body}</body></html>")


def paragraphs(text: str) -> str:
    """Plain text (blank-line separated paragraphs) as escaped <p> elements."""
    return "".join(f"<p>{escape(' '.join(p.split()))}</p>" for p in text.split("\n\n") if p.strip())


def landing(open_enrolment: bool) -> str:
    """The root page: a start button when anyone may join, otherwise a pointer to the personal link."""
    if open_enrolment:
        body = ("<h1>Landscape-painting video study</h1><form method=\"post\" action=\"/start\">"
                "<button id=\"start\" type=\"submit\">Take part</button></form>")
    else:
        body = ("<h1>Landscape-painting video study</h1><p>This study is by invitation: please open the personal "
                "link you received.</p>")
    return page("Video study", body)


def intro(token: str, total: int, intro_text: str | None) -> str:
    """The introduction a participant reads before the first pair."""
    text = intro_text or INTRO.format(n=total)
    body = (f"<h1>Landscape-painting video study</h1>{paragraphs(text)}"
            f"<form method=\"post\" action=\"/p/{escape(token)}/start\">"
            f"<button id=\"begin\" type=\"submit\">Begin</button></form>")
    return page("Video study: introduction", body)


def _media(sha: str, media_type: str, label: str) -> str:
    """A looping, muted video (mp4) or an animated image (gif/webp) served by its content hash."""
    src = f"/clip/{escape(sha)}"
    if media_type.startswith("video/"):
        return f"<video src=\"{src}\" autoplay loop muted playsinline aria-label=\"{label}\"></video>"
    return f"<img src=\"{src}\" alt=\"{label}\">"


def slot(token: str, s: Slot) -> str:
    """One pair side by side with the four questions (A = left, B = right, or no preference)."""
    fields = []
    for qid, title, text in db.QUESTIONS:
        options = "".join(
            f"<label><input type=\"radio\" name=\"q_{qid}\" value=\"{value}\" required> {label}</label>"
            for value, label in (("left", "A (left)"), ("right", "B (right)"), ("none", "No preference")))
        fields.append(f"<fieldset><legend><b>{escape(title)}</b>: {escape(text)}</legend>{options}</fieldset>")
    body = (f"<h1>Pair {s.answered + 1} of {s.total}</h1>"
            f"<p class=\"prompt\">Text: \u201c{escape(s.prompt)}\u201d</p>"
            f"<div class=\"pair\"><figure><figcaption>A (left)</figcaption>{_media(*s.left, 'video A')}</figure>"
            f"<figure><figcaption>B (right)</figcaption>{_media(*s.right, 'video B')}</figure></div>"
            f"<form method=\"post\" action=\"/p/{escape(token)}/answer\">"
            f"<input type=\"hidden\" name=\"slot\" value=\"{s.position}\">"
            f"<input type=\"hidden\" name=\"pair\" value=\"{s.pair_id}\">{''.join(fields)}"
            f"<button id=\"submit\" type=\"submit\">Save and continue</button></form>")
    return page(f"Video study: pair {s.answered + 1} of {s.total}", body)


def finished(total: int) -> str:
    """The thank-you page."""
    return page("Video study: thank you",
                f"<h1 id=\"done\">Thank you!</h1><p>All {total} pairs are answered and saved. You can close this "
                "page.</p>")


def error(status: int, message: str, token: str | None = None) -> str:
    """An error page: the status, one line, and a way back to the participant's current pair."""
    back = f"<p><a href=\"/p/{escape(token)}\">Continue with the study</a></p>" if token else ""
    return page(f"Error {status}", f"<h1>Error {status}</h1><p class=\"error\">{escape(message)}</p>{back}")


def table(headers: list[str], rows: list[list]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
