"""The `nadm` command: a click group whose subcommands live in `nadm.commands.*` and load on first use."""

from __future__ import annotations

import importlib
import sys

import click

from nadm import __version__
from nadm.errors import NADMError

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


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes (NADMError) become one line on stderr and exit code 2, never a traceback."""
    try:
        # Without standalone mode click returns ctx.exit(n)'s code instead of exiting: pass it on.
        code = cli.main(args=argv, prog_name="nadm", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except NADMError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
