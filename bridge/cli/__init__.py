"""The `ownerlink` command line: argument parsing and composition only.

Each command group lives in its own module exposing `register(subparsers)`; the command's
function receives the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.errors import ConfigError, OwnerlinkError

# Modules that dependencies load whenever they are installed, though no command uses them: httpx's
# own command line (it brings rich, pygments and click) and rich itself (structlog renders
# exceptions with it when it can; our plain traceback is enough). amqtt, for the demo's broker,
# installs rich. Kept out of the process they save about 4.5 MB, a twelfth of a daemon's memory.
NOT_USED = ("httpx._main", "rich")

# Command modules, in the order `ownerlink --help` lists them.
COMMAND_MODULES = (
    "bridge.cli.demo",
    "bridge.cli.run",
    "bridge.cli.config_cmd",
    "bridge.cli.login",
    "bridge.cli.vehicles",
    "bridge.cli.apps",
    "bridge.cli.command",
    "bridge.cli.stepup",
    "bridge.cli.audit",
    "bridge.cli.owner",
    "bridge.cli.doctor",
    "bridge.cli.simulate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ownerlink",
        description="Owner-authorised access to your connected car over MQTT and OAuth 2.0.",
    )
    parser.add_argument("--version", action="version", version=f"ownerlink {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command group not built yet
        module.register(sub)
    return parser


def entry() -> int:
    """The `ownerlink` executable: `main()` in a process that does not load what it never uses."""
    for name in NOT_USED:
        if name not in sys.modules:
            # A None entry makes `import name` raise ImportError, which both importers expect.
            sys.modules[name] = None  # type: ignore[assignment]
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except OwnerlinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`ownerlink audit tail | head`): nothing is left to say to it.
        # Python would also fail flushing stdout at exit, so point it at /dev/null first.
        with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 141  # as a command stopped by SIGPIPE, which a shell pipeline expects
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a file the owner can fix: keep the traceback for the bug report
        # Imported here: at the top it would load structlog (and rich) before `entry` blocks it.
        from bridge.cli.common import file_problem

        print(f"error: {file_problem(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
