"""``ropeext`` command line: argument parsing only.

Each subcommand lives in a module of ``ropeext.commands`` that declares

    COMMAND = ("solve",)            # or ("eval", "ppl") for a nested subcommand
    HELP = "one line"
    def add_arguments(parser): ...
    def run(args) -> int | None: ...

An evaluation suite's module (``ropeext.suites``) may declare its own subcommand the same way.
Modules import their heavy dependencies inside ``run`` so that ``ropeext --help`` stays fast.
A RopeextError anywhere becomes ``error: <message>`` and exit status 2.

Before a command runs, every output it names is checked (``ropeext.io.output_problem``): an
``--output-dir`` or an option whose metavar is ``DIR`` must be a folder that can be written or made,
the other outputs (``--output``, ``--stats``, ``--plot``) a file; a path blocked by a file or a
folder without write permission stops the command before it does any work. Then the command takes
the lock of each output (``ropeext.io.lock_output``: ``OUTPUT.lock`` beside it) and holds it while it
runs: a second process on the same output stops at once with a message naming the first one's pid.
Under a multi-process launch the first process (RANK 0) holds the locks for all.

Started by the workflow (``ROPEEXT_WORKFLOW_PID`` set), ``python -m ropeext.cli`` also stops when
that Snakemake process is gone (``ropeext.jobs.watch_workflow``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import pkgutil
import shlex
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import ropeext.commands as commands_pkg
from ropeext import __version__, job_warnings
from ropeext.errors import RopeextError, Terminated
from ropeext.io import check_output, lock_output
from ropeext.jobs import watch_workflow
from ropeext.suites import MODULES as suite_modules

GROUP_HELP = {
    "eval": "evaluate a model (perplexity, passkey, LongBench, Open LLM tasks, RULER)",
    "analyze": "analyses of a model (BF16 relative-position deviation)",
}


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            yield module
    yield from (module for module in suite_modules if hasattr(module, "COMMAND"))  # a suite with its own command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropeext",
        description="RoPE context-window extension: DPRoPE scaling, AnchorAttention packing, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"ropeext {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for module in _command_modules():
        path = module.COMMAND
        if len(path) == 1:
            sub = top.add_parser(path[0], help=module.HELP, description=module.HELP)
        else:
            group = path[0]
            if group not in groups:
                gp = top.add_parser(group, help=GROUP_HELP.get(group, group))
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[group].add_parser(path[1], help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _outputs=output_options(sub))
    each = top.add_parser("each", help=EACH_HELP, description=EACH_HELP)
    each.add_argument("commands", nargs="+", metavar="COMMAND", help="one quoted ropeext command line each")
    each.set_defaults(_run=run_each)
    return parser


EACH_HELP = (
    "run several ropeext command lines one after the other in this process (one start-up for all); "
    "stops at the first that fails"
)


def run_each(args) -> int:
    for line in args.commands:
        print(f"ropeext {line}", flush=True)
        try:
            code = main(shlex.split(line))
        except SystemExit as exc:  # a command line that does not parse
            code = exc.code
        if code:
            return code
    return 0


OUTPUT_DESTS = ("output", "output_dir", "stats", "plot")


def output_options(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(dest, option, kind) of the options of ``parser`` that name something the command writes."""
    out = []
    for action in parser._actions:
        if action.dest in OUTPUT_DESTS and action.option_strings:
            folder = action.dest == "output_dir" or action.metavar == "DIR"
            out.append((action.dest, action.option_strings[0], "folder" if folder else "file"))
    return out


def _output_paths(args):
    for dest, option, kind in getattr(args, "_outputs", ()):
        value = getattr(args, dest, None)
        for path in filter(None, value if isinstance(value, list) else [value]):  # nargs="+": one per item
            yield path, option, kind


def check_outputs(args) -> None:
    for path, option, kind in _output_paths(args):
        check_output(path, kind, option)


def lock_outputs(args, stack: ExitStack) -> None:
    """Hold the lock of every output of the command until ``stack`` closes (``ropeext.io.lock_output``); a
    held one stops the command, naming its holder. Under a launcher only RANK 0 takes them."""
    if os.environ.get("RANK", "0") != "0":
        return
    command = " ".join(["ropeext", *filter(None, (getattr(args, "command", None), getattr(args, "subcommand", None)))])
    for path, option in lock_targets(args):
        stack.callback(lock_output(path, option, command).release)


def lock_targets(args):
    """(path, option) of each lock the command takes: its outputs, except that a folder the jobs of several
    target lengths share (``rope --output-dir``) is locked per length."""
    target = getattr(args, "target_length", None)
    for path, option, _ in _output_paths(args):
        if option == "--output-dir" and target is not None:
            path = Path(path) / f"target-{target}"
        yield path, option


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    job_warnings.install()  # a job's own warnings go to its MLflow run and the report, not only to its log
    try:
        check_outputs(args)
        with ExitStack() as held:
            lock_outputs(args, held)
            code = args._run(args)
    except RopeextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    return int(code or 0)


def _terminate(signum, frame):
    raise Terminated(signal.Signals(signum).name)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)  # a cancelled job closes its MLflow run as KILLED
    watch_workflow()  # a workflow job stops (SIGTERM) when the Snakemake process that started it is gone
    code = main()
    # the interpreter's last garbage collections walk every object of torch, transformers and the rest
    # (2-3 s per process on a small CPU); what they would free goes with the process anyway
    gc.freeze()
    sys.exit(code)
