"""`partool models`: the model zoo with parameter counts, FLOPs, input sizes and ONNX lowerings."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import Progress

from partool.cli.output import print_json, print_table


def models(
    num_attrs: int = typer.Option(26, "--num-attrs", help="Attributes the head predicts (PA100K: 26)."),
    flops: bool = typer.Option(
        True, "--flops/--no-flops", help="Count FLOPs at each model's input size (about 1 s a model)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List every registered model: parameters (backbone / total), GFLOPs of one image at its default
    input size, the input size, the ONNX scan lowerings it exports with (`partool export --scan`), the
    training recipe it gets, and the checkpoints it starts from (`partool train --pretrained ROLE=FILE`).

    FLOPs follow the papers' convention (fvcore's): a multiply-add is one FLOP for products, convolutions
    and attention, and each selective scan adds mamba_ssm's 9·b·l·d·n; elementwise ops are not counted.

    Examples: `partool models`, `partool models --num-attrs 35 --json` (PETA's head).
    """
    from partool.models import count_parameters, list_models, model_info
    from partool.models.complexity import count_flops

    rows = []
    names = list_models()
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("counting parameters and FLOPs", total=len(names))
        for name in names:
            info = model_info(name)
            row = {**info.to_dict(), "params": count_parameters(name, num_attrs)}
            if flops:
                row["gflops"] = count_flops(name, num_attrs)
            rows.append(row)
            bar.advance(task)
    if json_out:
        print_json(rows)
        return
    columns = ["model", "family", "backbone", "total", "GFLOPs", "input", "plugin", "portable", "recipe"]
    columns.append("checkpoints (--pretrained)")
    print_table(
        f"partool models: parameters (backbone, total with a head for {num_attrs} attributes), "
        f"{'GFLOPs, ' if flops else ''}input H×W, ONNX lowerings, training recipe, checkpoints",
        columns if flops else [c for c in columns if c != "GFLOPs"],
        [
            [
                r["name"],
                r["family"],
                f"{r['params']['backbone'] / 1e6:.2f} M",
                f"{r['params']['total'] / 1e6:.2f} M",
                *([f"{r['gflops']['total']:.2f}"] if flops else []),
                "×".join(map(str, r["input_size"])),
                *("yes" if lowering in r["exports"] else "no" for lowering in ("plugin", "portable")),
                r["recipe"],
                _checkpoints_cell(r["checkpoints"]),
            ]
            for r in rows
        ],
    )


def _checkpoints_cell(checkpoints: dict[str, str]) -> str:
    """{'vim': 'a.pth', 'vit': 'b.pth'} -> 'vim=a.pth vit=b.pth', one --pretrained value per role."""
    return " ".join(f"{role}={file}" for role, file in checkpoints.items()) or "-"


def register(app: typer.Typer) -> None:
    app.command("models")(models)
