"""`nadm study create|invite|serve|report|export`: the paper's user study (Sec. IV-D2, Fig. 11) with
participants in a browser and answers in SQLite; docs/study.md."""

from __future__ import annotations

from pathlib import Path

import click

from nadm.commands.options import parse_named
from nadm.errors import NADMError

MIN_ADMIN_TOKEN = 16


def _systems(items: tuple[str, ...]) -> dict[str, Path]:
    """`--system NAME=DIR` -> {name: folder}, in the order given (the report's order)."""
    return {name: Path(folder).expanduser() for name, folder in parse_named(items, "--system", "DIR", "system").items()}


def _read_text(path: str | None, what: str) -> str | None:
    """A UTF-8 text file's content (None without a path)."""
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NADMError(f"cannot read the {what} {path}: {e}") from e


@click.group()
def study() -> None:
    """Run a pairwise user study like the paper's Fig. 11: create, invite, serve, report, export."""


@study.command()
@click.option("--system", "systems", multiple=True, required=True,
              help="NAME=DIR of one system's clips (repeat; at least two). Clips: mp4/gif/webp with sidecars, "
                   "or named PPPP_seedS with --prompts.")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None,
              help="One prompt per line: clip PPPP_seedS without a sidecar prompt gets line PPPP (0-based); only "
                   "these prompts are studied.")
@click.option("--pairs-per-participant", "k", type=int, default=None, help="Pairs each participant judges "
              "[default: all].")
@click.option("--attention-checks", type=int, default=1, show_default=True,
              help="Pairs shown a second time, sides swapped, per participant.")
@click.option("--reference", default=None, help="Compare only this system against each other one (the paper: NADM "
              "vs each baseline) [default: every pair of systems].")
@click.option("--seed", type=int, default=None, help="Seed of the randomisation [default: random, recorded].")
@click.option("--intro", "intro_file", type=click.Path(dir_okay=False), default=None,
              help="Plain-text introduction shown before the first pair (paragraphs split by blank lines).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The new study database.")
@click.option("--overwrite", is_flag=True, help="Replace an existing study database that has no answers.")
def create(systems: tuple[str, ...], prompts_file: str | None, k: int | None, attention_checks: int,
           reference: str | None, seed: int | None, intro_file: str | None, out: str, overwrite: bool) -> None:
    """Match the systems' clips on prompt and seed and store the study design in a new SQLite database."""
    from nadm.commands.evaluate import read_prompt_file
    from nadm.study.design import DesignOptions, create_study, plan_study

    prompts = read_prompt_file(prompts_file) if prompts_file else None
    intro = _read_text(intro_file, "introduction")
    plan = plan_study(_systems(systems), prompts, prompts_file, reference)
    options = DesignOptions(k, attention_checks, reference, seed, intro)
    path = create_study(out, plan, options, overwrite)
    for name, clips in plan.clips.items():
        click.echo(f"{name}: {len(clips)} clips")
    per = k if k is not None else len(plan.pairs)
    click.echo(f"pairs: {len(plan.pairs)}; each participant judges {per} + {attention_checks} attention check(s)")
    if plan.excluded:
        click.echo(f"excluded or missing ({len(plan.excluded)}; also in the table excluded_clip):")
        for system, source, reason in plan.excluded:
            click.echo(f"  {system}: {source}: {reason}")
    click.echo(f"wrote {path}")


@study.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("-n", "count", type=int, default=1, show_default=True, help="How many participants to add.")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The server's public address.")
def invite(database: str, count: int, url: str) -> None:
    """Add participants and print one personal link each (the link is the only copy of its token)."""
    from nadm.study import db
    from nadm.study.sessions import add_participant

    if count < 1:
        raise NADMError(f"-n must be at least 1, got {count}")
    con = db.connect(database)
    try:
        for _ in range(count):
            _, token = add_participant(con, via="invite")
            click.echo(f"{url.rstrip('/')}/p/{token}")
    finally:
        con.close()


@study.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port (0: any free port, printed).")
@click.option("--admin-token", envvar="NADM_STUDY_ADMIN_TOKEN", default=None,
              help=f"Password of the /admin progress page (at least {MIN_ADMIN_TOKEN} characters; also "
                   "$NADM_STUDY_ADMIN_TOKEN) [default: no admin page].")
@click.option("--open-enrolment", is_flag=True, help="Anyone opening / may join (else only invited links work).")
@click.option("--max-participants", type=int, default=1000, show_default=True,
              help="Cap on participants joining through open enrolment.")
def serve(database: str, host: str, port: int, admin_token: str | None, open_enrolment: bool,
          max_participants: int) -> None:
    """Serve the study to participants' browsers until interrupted (Ctrl-C)."""
    if admin_token is not None and len(admin_token) < MIN_ADMIN_TOKEN:
        raise NADMError(f"--admin-token must have at least {MIN_ADMIN_TOKEN} characters")
    if not 0 <= port <= 65535:
        raise NADMError(f"--port must be between 0 and 65535, got {port}")
    try:
        from nadm.study.server import serve as run_server
    except ImportError as e:
        raise NADMError(f"nadm study serve needs FastAPI and uvicorn ({e.name} is missing): "
                        "pip install 'nadm[study]'") from e
    run_server(database, host, port, admin_token, open_enrolment, max_participants)


@study.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("--png", "figure", type=click.Path(dir_okay=False), default=None,
              help="Grouped bar chart like Fig. 11 (.png, .pdf or .svg).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Everything as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def report(database: str, figure: str | None, json_out: str | None, overwrite: bool) -> None:
    """Preference rates per system pair and question, Wilson 95% intervals, binomial tests."""
    from nadm import __version__
    from nadm.commands.evaluate import write_json
    from nadm.outputs import check_output_file, mark_output
    from nadm.study import db
    from nadm.study.report import analyse, format_table, plot

    json_path = check_output_file(json_out, overwrite, "--json")
    fig_path = check_output_file(figure, overwrite, "--png")
    if fig_path is not None and fig_path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise NADMError(f"--png needs a .png, .pdf or .svg file name, got {fig_path.name}")
    con = db.connect(database)
    try:
        result = analyse(con)
    finally:
        con.close()
    click.echo(format_table(result))
    if json_path is not None:
        write_json(json_path, {"nadm_version": __version__, "study": str(Path(database).resolve()), **result}, overwrite)
        click.echo(f"wrote {json_path}")
    if fig_path is not None:
        plot(result, fig_path, overwrite)
        mark_output(fig_path, {"made_by": "nadm study report", "study": str(Path(database).resolve())})
        click.echo(f"wrote {fig_path}")


@study.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("--csv", "csv_out", required=True, type=click.Path(dir_okay=False), help="One row per answer.")
@click.option("--overwrite", is_flag=True, help="Replace an existing CSV file.")
def export(database: str, csv_out: str, overwrite: bool) -> None:
    """Write every answer to a CSV file (atomically) for analysis elsewhere."""
    from nadm.outputs import check_output_file, mark_output, write_text_atomic
    from nadm.study import db
    from nadm.study.export import answers_csv

    out = check_output_file(csv_out, overwrite, "--csv")
    con = db.connect(database)
    try:
        text = answers_csv(con)
    finally:
        con.close()
    try:
        write_text_atomic(out, text, overwrite)
        mark_output(out, {"made_by": "nadm study export", "study": str(Path(database).resolve())})
    except OSError as e:
        raise NADMError(f"could not write {out}: {e.strerror or e}") from e
    click.echo(f"wrote {out} ({text.count(chr(10)) - 1} answers)")
