"""`partool predict`: the attributes a trained run sees in a few images."""

from __future__ import annotations

from pathlib import Path

import typer

from partool.cli.options import CUDA_GRAPHS_OPTION, PRECISION_OPTION
from partool.cli.output import print_json, print_table
from partool.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given, folders replaced by the images inside them (sorted); UserError for missing paths."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise UserError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"image not found: {path}")
    return found


def read_image(path: Path) -> object:
    """Decode `path` as an RGB PIL image; UserError naming the file when it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read image {path} ({reason}); pass a JPEG, PNG, BMP or WebP file") from None


def predict_images(
    run: Path,
    images: list[Path],
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 32,
    precision: str = "auto",
    cuda_graphs: bool = True,
) -> dict[str, object]:
    """Probabilities of every attribute for each image, and the ones above the threshold, best first."""
    import torch

    from partool.data.transforms import build_transforms
    from partool.runtime import load_backend

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    files = expand_images(images)
    # a bad model path fails before any image is decoded
    backend = load_backend(run, device, precision=precision, cuda_graphs=cuda_graphs)
    meta = backend.meta
    thr = float(meta["threshold"] if threshold is None else threshold)
    transform = build_transforms(meta["input_size"], meta["mean"], meta["std"], train=False)
    predict = backend.predict
    names = meta["attributes"]
    results = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        batch = torch.stack([transform(read_image(p)) for p in chunk]).numpy()
        for path, row in zip(chunk, predict(batch), strict=True):
            ranked = sorted(zip(names, row.tolist(), strict=True), key=lambda t: -t[1])
            results.append(
                {
                    "image": str(path),
                    "attributes": [{"name": n, "prob": p} for n, p in ranked if p > thr],
                    "probs": {n: p for n, p in zip(names, row.tolist(), strict=True)},
                }
            )
    return {"run": str(run), "backend": backend.describe(), "threshold": thr, "images": results}


def predict_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `partool train`, or an exported model.onnx / model.engine."),
    images: list[Path] = typer.Argument(..., metavar="IMAGES...", help="Image files (JPEG, PNG, …) or folders of images."),
    threshold: float | None = typer.Option(None, "--threshold", help="Show attributes above this probability (default: the run's own: 0.5, or 0.45 for a --protocol paper run)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    precision: str = PRECISION_OPTION,
    cuda_graphs: bool = CUDA_GRAPHS_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print every probability as JSON."),
) -> None:  # fmt: skip
    """Print the attributes a trained run predicts for pedestrian crops, with their probabilities.

    Images are resized to the run's input size (no detection: give crops of one person each).

    Examples:

      partool predict runs/vim-s-pa100k person1.jpg person2.png

      partool predict runs/vim-s-pa100k crops/ --threshold 0.7 --json
    """
    report = predict_images(run, images, threshold, device, batch_size, precision, cuda_graphs)
    if json_out:
        print_json(report)
        return
    print_table(
        f"{report['run']} (attributes above {report['threshold']:g})",
        ["image", "attributes (probability)"],
        [
            [r["image"], ", ".join(f"{a['name']} {a['prob']:.2f}" for a in r["attributes"]) or "-"]
            for r in report["images"]
        ],
    )


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
