"""The Typer application: global options, subcommand registration, and the exit-2 error policy."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from partool import __version__
from partool.errors import UserError

app = typer.Typer(
    name="partool",
    help=(
        "Mamba-based pedestrian attribute recognition (PAR): train, evaluate, export to ONNX/TensorRT "
        "and run on live video.\n\nStart with `partool doctor` to see what this machine can do, "
        "and `partool models` for the model zoo."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"partool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    if debug:
        os.environ["PARTOOL_DEBUG"] = "1"


def _register() -> None:
    from partool.cli import (
        bench_cmd,
        demo_cmd,
        doctor,
        eval_cmd,
        export_cmd,
        models_cmd,
        plugins_cmd,
        predict_cmd,
        report_cmd,
        search_cmd,
        train_cmd,
        video_cmd,
    )

    for module in (
        train_cmd,
        eval_cmd,
        predict_cmd,
        export_cmd,
        bench_cmd,
        video_cmd,
        search_cmd,
        report_cmd,
        demo_cmd,
        doctor,
        models_cmd,
        plugins_cmd,
    ):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and turns bad input into one line and exit status 2."""
    try:
        app(args=argv, prog_name="partool")
    except UserError as exc:
        if os.environ.get("PARTOOL_DEBUG"):
            traceback.print_exc()
        typer.secho(f"partool: error: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("partool: interrupted", err=True, fg="yellow")
        sys.exit(130)


if __name__ == "__main__":
    main()
