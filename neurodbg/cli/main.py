"""Entry point: `neurodbg COMMAND`. Errors neurodbg raises on purpose print one
line on stderr and exit with status 2; nothing prints a traceback."""

from __future__ import annotations

import sys

import typer

from neurodbg.cli import (
    atlas_cmd,
    corpus_cmd,
    describe_cmd,
    inspect_cmd,
    lens_cmd,
    models_cmd,
    monitor_cmd,
    scan_cmd,
    serve_cmd,
    trace_cmd,
)
from neurodbg.errors import NeurodbgError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="neurodbg: a debugger and microscope for neural networks.")
app.command("inspect")(inspect_cmd.inspect)
app.command("trace")(trace_cmd.trace)
app.command("scan")(scan_cmd.scan)
app.command("describe")(describe_cmd.describe)
app.command("search")(describe_cmd.search)
app.command("tokens")(monitor_cmd.tokens)
app.command("analyze")(monitor_cmd.analyze)
app.command("steer")(monitor_cmd.steer)
app.command("lens")(lens_cmd.lens)
app.command("attention")(lens_cmd.attention)
app.command("patch")(lens_cmd.patch)
app.command("vector")(lens_cmd.vector)
app.command("serve")(serve_cmd.serve)
app.add_typer(models_cmd.app, name="models")
app.add_typer(corpus_cmd.app, name="corpus")
app.add_typer(atlas_cmd.app, name="atlas")

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="neurodbg", standalone_mode=True)
    except NeurodbgError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
