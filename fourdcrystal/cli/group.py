"""The `fourdcrystal` command group: one-line errors, logging, the entry point.

Every user-facing problem is raised as :class:`FourdError` and printed here as one line,
``error: ...``, with exit code 2.
"""

from __future__ import annotations

import logging
import os
import re
import sys

import click

from .. import __version__
from ..errors import FourdError
from ..progress import set_quiet

log = logging.getLogger("fourdcrystal")


def options_named(message: str, command: click.Command | None) -> str:
    """A library message names the settings it is about in backticks (`k_pixel_invA`, `epochs_this_run`); on the
    command line each is the option that sets it (--k-pixel, --epochs-this-run): the command's option whose
    config key or parameter name it is. Names no option of ``command`` sets keep their backticks."""
    if command is None or "`" not in message:
        return message
    from .common import ConfigOption

    names = {}
    for p in command.params:
        if isinstance(p, click.Option):
            names[p.name] = p.opts[0]
            if isinstance(p, ConfigOption):
                names[p.config_key] = p.opts[0]
    # a nested key (`mp.endpoint`) is also set by the option named after its last part (--endpoint)
    return re.sub(r"`([\w.]+)`", lambda m: names.get(m.group(1), names.get(m.group(1).rsplit(".", 1)[-1], m.group(0))),
                  message)


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's standalone mode, but a usage error is one line too: ``error: …`` naming the command."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "fourdcrystal")
            click.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FourdError as exc:
            command = self.commands.get(ctx.invoked_subcommand or "")
            click.echo(f"error: {_one_line(options_named(str(exc), command))}", err=True)
            ctx.exit(2)
        except OSError as exc:
            import errno

            # the stages check their outputs before work; this catches a disk that fills or turns read-only
            # midway, in one line like every other error
            if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG):
                raise
            click.echo(f"error: cannot write {exc.filename or 'the output'}: {exc.strerror}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted; finished outputs are kept, rerun the same command to resume", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # the last net: a defect of ours, not bad input (exit 1, not 2)
            stage = ctx.invoked_subcommand or "fourdcrystal"
            saved = _save_traceback(stage)
            first = (_one_line(str(exc)).strip().splitlines() or ["(no message)"])[0]
            click.echo(f"error: internal error in {stage}: {type(exc).__name__}: {first}"
                       + (f" (traceback saved to {saved})" if saved else ""), err=True)
            ctx.exit(1)


def _save_traceback(stage: str) -> str | None:
    """The current exception's traceback in a new file under the temporary folder (None if that fails too)."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix=f"fourdcrystal-{stage}-", suffix=".traceback.txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"fourdcrystal {__version__}: {' '.join(sys.argv)}\n")
            traceback.print_exc(file=f)
        return path
    except OSError:
        return None


def _one_line(message: str) -> str:
    """A FourdError raised in a DataLoader worker comes back wrapped by torch ("Caught FourdError in
    DataLoader worker process 0. Original Traceback ..."): keep the original message."""
    if "Original Traceback" in message:
        for line in reversed(message.splitlines()):
            if "FourdError: " in line:
                return line.split("FourdError: ", 1)[1]
    return message


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        ctx = click.get_current_context(silent=True)  # a library warning names settings: print the options
        msg = options_named(msg, ctx.command if ctx is not None else None)
        return msg if record.levelno == logging.INFO else f"{record.levelname.lower()}: {msg}"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    set_quiet(quiet)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="fourdcrystal")
@click.option("-v", "--verbose", count=True, help="More log output (debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Crystal structures -> simulated CBED training data -> FCU-Net -> Bragg vectors.

    Stages, each reading the previous one's files:
    select (crystal catalogue) -> supercell -> simulate -> train -> tune / evaluate -> predict ->
    strain (or export to py4DSTEM).
    Every stage takes --config FILE (YAML, one section per stage) or a shipped config's name
    (quickstart, default, release); command-line options override it. Units, the same in
    options, configs, tables and plots: lengths in Å (thickness too), reciprocal lengths in Å⁻¹,
    beam angles in mrad, in-plane rotations in degrees, energies in eV.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    _setup_logging(verbose, quiet)


def main() -> None:
    cli(prog_name="fourdcrystal")
