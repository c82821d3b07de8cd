"""`partool models`: the model zoo with parameter counts and input sizes."""

from __future__ import annotations

import typer

from partool.cli.output import print_json, print_table


def models(
    num_attrs: int = typer.Option(26, "--num-attrs", help="Attributes the head predicts (PA100K: 26)."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List every registered model with its parameter count (backbone / total) and default input size.

    Example: `partool models --num-attrs 35` (PETA's head).
    """
    from partool.models import count_parameters, list_models, model_info

    rows = []
    for name in list_models():
        info = model_info(name)
        counts = count_parameters(name, num_attrs)
        rows.append({**info.to_dict(), "params": counts})
    if json_out:
        print_json(rows)
        return
    print_table(
        f"partool models (head for {num_attrs} attributes)",
        ["model", "family", "backbone params", "total params", "input (H×W)"],
        [
            [
                r["name"],
                r["family"],
                f"{r['params']['backbone'] / 1e6:.2f} M",
                f"{r['params']['total'] / 1e6:.2f} M",
                "×".join(map(str, r["input_size"])),
            ]
            for r in rows
        ],
    )


def register(app: typer.Typer) -> None:
    app.command("models")(models)
