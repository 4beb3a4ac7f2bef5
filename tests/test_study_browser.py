"""A real browser (Debian's headless Chromium through Selenium) completes one participant's whole study session;
the report then counts exactly that participant's answers."""

from browser import headless_chromium
from study_helpers import LiveServer, add_participants, make_clips, make_study

from nadm.study import db
from nadm.study.report import analyse

QUESTIONS = ("text", "temporal", "style", "overall")
# what the participant prefers, by system (so the side-swapped repeat gets a consistent answer)
TASTE = {"text": "nadm", "temporal": "animatediff", "style": None, "overall": "nadm"}


def test_browser_completes_a_session_and_the_report_counts_exactly_its_answers(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    clips = make_clips(tmp_path / "clips")
    path = make_study(tmp_path / "study.sqlite", clips, k=3, checks=1)
    (pid, token), = add_participants(path, 1)
    con = db.connect(path)
    system_of = dict(con.execute("SELECT c.sha256, s.name FROM clip c JOIN system s ON s.id = c.system_id"))
    expected = {}  # (system_a, system_b, question) -> [a, b, ties], for the first showing of each pair
    server = None
    with headless_chromium(page_load_timeout=30) as driver:
        wait = WebDriverWait(driver, 20)
        try:
            server = LiveServer(path)
            driver.get(f"{server.url}/p/{token}")
            driver.find_element(By.ID, "begin").click()
            wait.until(lambda d: d.find_elements(By.ID, "submit"))
            # the clips really load from /clip/<sha256>: videos decode and play, animated images have a size
            wait.until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('.pair video')].every(v => v.readyState >= 2 && !v.error) && "
                "[...document.querySelectorAll('.pair img')].every(i => i.complete && i.naturalWidth > 0)"))
            seen = set()
            for _ in range(10):  # bounded: 3 pairs + 1 attention check
                if driver.find_elements(By.ID, "done"):
                    break
                sources = [e.get_attribute("src") for e in driver.find_elements(By.CSS_SELECTOR, ".pair video, .pair img")]
                shown = frozenset(s.rsplit("/", 1)[1] for s in sources)
                left, right = (system_of[s.rsplit("/", 1)[1]] for s in sources)
                pair = tuple(sorted((left, right), key=list(clips).index))
                for q in QUESTIONS:
                    want = TASTE[q] if TASTE[q] in (left, right) else None
                    side = "none" if want is None else ("left" if want == left else "right")
                    driver.find_element(By.CSS_SELECTOR, f"input[name=q_{q}][value={side}]").click()
                    if shown not in seen:
                        cell = expected.setdefault((*pair, q), [0, 0, 0])
                        cell[2 if want is None else pair.index(want)] += 1
                seen.add(shown)
                button = driver.find_element(By.ID, "submit")
                button.click()
                wait.until(expected_conditions.staleness_of(button))  # the next page replaced this one
                wait.until(lambda d: d.find_elements(By.ID, "done") or d.find_elements(By.ID, "submit"))
            assert driver.find_elements(By.ID, "done"), driver.page_source[:500]
            driver.get(f"{server.url}/p/{token}")  # coming back after the end shows the thank-you page again
            assert driver.find_elements(By.ID, "done")
        finally:
            if server is not None:
                server.stop()
    assert len(seen) == 3
    report = analyse(con)
    assert report["participants"] == {"analysed": 1, "failed_attention": 0, "incomplete": 0}
    assert report["answers_counted"] == 3 * 4
    got = {(r["system_a"], r["system_b"], r["question"]): [r["a"], r["b"], r["ties"]] for r in report["results"]
           if r["a"] + r["b"] + r["ties"]}
    assert got == expected
    assert con.execute("SELECT COUNT(*) FROM answer WHERE participant_id = ?", (pid,)).fetchone()[0] == 4 * 4
