"""Entry point: `neurodbg COMMAND`. Errors neurodbg raises on purpose print one
line on stderr and exit with status 2; nothing prints a traceback."""

from __future__ import annotations

import sys

import typer

from neurodbg.cli import (
    atlas_cmd,
    consistency_cmd,
    corpus_cmd,
    describe_cmd,
    diff_cmd,
    embed_cmd,
    inspect_cmd,
    kernels_cmd,
    lens_cmd,
    models_cmd,
    moe_cmd,
    monitor_cmd,
    probe_cmd,
    runs_cmd,
    scan_cmd,
    serve_cmd,
    trace_cmd,
    vision_cmd,
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
app.command("train-lens")(lens_cmd.train_lens)
app.command("attention")(lens_cmd.attention)
app.command("patch")(lens_cmd.patch)
app.command("vector")(lens_cmd.vector)
app.command("probe")(probe_cmd.probe)
app.command("embeddings")(embed_cmd.embeddings)
app.command("consistency")(consistency_cmd.consistency)
app.command("diff")(diff_cmd.diff)
app.command("serve")(serve_cmd.serve)
app.command("build-kernels")(kernels_cmd.build_kernels)
app.add_typer(models_cmd.app, name="models")
app.add_typer(corpus_cmd.app, name="corpus")
app.add_typer(atlas_cmd.app, name="atlas")
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(vision_cmd.app, name="vision")
app.add_typer(moe_cmd.app, name="moe")

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> None:
    try:
        code = app(args=argv, prog_name="neurodbg", standalone_mode=False)
    except NeurodbgError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_BAD_INPUT)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:
        # a bad option or argument (click's UsageError; typer vendors its own click, so it is
        # recognised by shape): one line, like every other bad input
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        message = " ".join(str(exc.format_message()).split())
        if message:       # (no message: a group called bare, whose help is already printed)
            ctx = getattr(exc, "ctx", None)
            command = ctx.command_path.partition(" ")[2] if ctx is not None else ""
            sys.stderr.write(f"error: {command + ': ' if command else ''}{message} (see --help)\n")
        sys.exit(int(getattr(exc, "exit_code", EXIT_BAD_INPUT)))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
