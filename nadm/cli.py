"""The `nadm` command: a click group whose subcommands live in `nadm.commands.*` and load on first use."""

from __future__ import annotations

import importlib
import sys

import click

from nadm import __version__
from nadm.errors import NADMError, RunFailed

# name -> "module:attribute"; each module is imported only when its command runs (torch is slow to import).
COMMANDS = {
    "info": "nadm.commands.info:info",
    "generate": "nadm.commands.generate:generate",
    "animate": "nadm.commands.animate:animate",
    "selftest": "nadm.commands.generate:selftest",
    "interpolate": "nadm.commands.interpolate:interpolate",
    "data": "nadm.commands.data:data",
    "train": "nadm.commands.train:train",
    "evaluate": "nadm.commands.evaluate:evaluate",
    "compare": "nadm.commands.compare:compare",
    "study": "nadm.commands.study:study",
    "studio": "nadm.commands.studio:studio",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._spec_exists(name))

    @staticmethod
    def _spec_exists(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._spec_exists(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="nadm")
def cli() -> None:
    """NADM: text to Chinese landscape-painting video (noise-aware diffusion + SOFP interpolation)."""


# Exit codes (the error policy in nadm/__init__.py): 0 done, 1 a check that found problems (`nadm data check`),
# 2 a mistake the user can fix (NADMError), 3 a run that failed on its own numbers (RunFailed), 130 interrupted.
EXIT_USER_ERROR, EXIT_RUN_FAILED = 2, 3


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes (NADMError, exit 2) and failed runs (RunFailed, exit 3) become one line on stderr,
    never a traceback; Ctrl-C, SIGTERM and SIGHUP unwind like an exception (temporary outputs removed) and exit with
    128 + signal."""
    from nadm import signals

    signals.install()
    try:
        # Without standalone mode click returns ctx.exit(n)'s code instead of exiting: pass it on.
        code = cli.main(args=argv, prog_name="nadm", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Abort as e:  # click wraps Ctrl-C and SIGTERM (signals.Terminated) in Abort
        stop = e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else None
        click.echo("Terminated." if isinstance(stop, signals.Terminated) else "Aborted.", err=True)
        sys.exit(signals.exit_code(stop) if stop else 130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except NADMError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except RunFailed as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_RUN_FAILED)
    except KeyboardInterrupt as e:
        click.echo("Terminated." if isinstance(e, signals.Terminated) else "Interrupted.", err=True)
        sys.exit(signals.exit_code(e))


if __name__ == "__main__":
    main()
