"""Every `partool train` command of docs/paper.md ("Reproducing the paper") runs as written, with three swaps:

- each dataset root is a tiny dataset in that format's real layout (tests/test_datasets.py's builders);
- each checkpoint file is a fake with the official key names, full shapes and file layout, random values
  (Vim-S+'s stride-8 27×27 position grid, VMamba-B v0, timm's ViT-B/16), and `runs/` is a temporary folder,
  so the frozen-ViT hybrids get the vit-b run the doc's vit-b command made;
- appended overrides make it fast on a CPU: `--epochs 1 --batch-size 2 --img-size 32x32 --device cpu`
  (32×32 is VMamba-B's smallest input, one token after its 32× downsampling; the ViT and Vim models get 2×2
  patches; the vit-b run and the hybrids that load it share the size, as they must).

Each command runs in-process through the CLI app. The vim-s PA100K row and the check that the block holds
every row run by default; the other commands are `sweep` cases (`pytest -m sweep`), marked per case.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
from test_datasets import write_pa100k, write_peta, write_rap1, write_rap2, write_wider
from test_pretrained import official_vim_s_state_dict, official_vmamba_v0_state_dict
from typer.testing import CliRunner

from partool.artifacts import read_meta
from partool.cli.app import app
from partool.models import model_info
from partool.models.checkpoint_files import VIM_S, VIT_B, VMAMBA_B

DOC = Path(__file__).resolve().parents[1] / "docs" / "paper.md"
OVERRIDES = ["--epochs", "1", "--batch-size", "2", "--img-size", "32x32", "--device", "cpu"]
DATASETS = ("pa100k", "peta", "rap1", "rap2", "wider")
HYBRIDS = ("pafusion", "nasf", "asf", "mahdft", "maformer", "adamtf", "kdtm", "makdf")
VIT_B_RUN = ("vit-b", "pa100k")  # the PAR-trained ViT-B the frozen-ViT hybrids load
EXPECTED_ROWS = (
    {VIT_B_RUN} | {(m, d) for m in ("vim-s", "vmamba-b") for d in DATASETS} | {(h, "pa100k") for h in HYBRIDS}
)
REPRESENTATIVE = ("vim-s", "pa100k")
RUNS = "runs/"


def bash_blocks(text: str) -> list[str]:
    """The bodies of the ```bash fenced blocks of a markdown text."""
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def paper_commands() -> list[list[str]]:
    """The options (after `partool train`) of the `partool train` lines of docs/paper.md's bash block."""
    lines = "\n".join(bash_blocks(DOC.read_text())).splitlines()
    return [shlex.split(line)[2:] for line in lines if line.startswith("partool train ")]


def option(argv: list[str], name: str) -> str:
    """The value of the one `name` option of `argv`."""
    values = options(argv, name)
    assert len(values) == 1, f"{name} appears {len(values)} times in {argv}"
    return values[0]


def options(argv: list[str], name: str) -> list[str]:
    """The values of every `name` option of `argv`, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


def row(argv: list[str]) -> tuple[str, str]:
    """(model, dataset kind) of one command."""
    return option(argv, "--model"), option(argv, "--data").partition(":")[0]


def trained_scale(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Standard-normal fakes scaled to the size of trained weights (std 0.02): from a std-1 Vim-S file, MaKDF's
    loss is NaN in its first epoch."""
    return {k: 0.02 * v for k, v in state.items()}


def vim_s_ft_state_dict() -> dict[str, torch.Tensor]:
    """`vim_s_midclstok_ft_81p6acc.pth`'s weights: Vim-S's, fine-tuned at stride 8 (27×27 + the middle cls)."""
    return trained_scale(official_vim_s_state_dict() | {"pos_embed": torch.randn(1, 27 * 27 + 1, 384)})


def vit_b_state_dict() -> dict[str, torch.Tensor]:
    """timm's ViT-B/16 at 224×224 with its ImageNet head: `jx_vit_base_p16_224-80ecf9dd.pth`'s keys and shapes."""
    return timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()


def vmamba_b_state_dict() -> dict[str, torch.Tensor]:
    """VMamba v0 base (`vssmbase_dp06_ckpt_epoch_241.pth`): depths 2-2-27-2, dims 128-1024."""
    return trained_scale(official_vmamba_v0_state_dict([2, 2, 27, 2], [128, 256, 512, 1024]))


CHECKPOINTS: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    VIM_S: vim_s_ft_state_dict,
    VMAMBA_B: vmamba_b_state_dict,
    VIT_B: vit_b_state_dict,
}
DATASET_WRITERS: dict[str, Callable[[Path], object]] = {
    "pa100k": write_pa100k,
    "peta": write_peta,
    "rap1": write_rap1,
    "rap2": lambda root: write_rap2(root, "RAP_annotation"),
    "wider": write_wider,
}


@dataclass
class Workspace:
    """Tiny datasets, fake checkpoints and the runs/ folder, each made on first use."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def dataset(self, kind: str) -> Path:
        path = self.root / "data" / kind
        if not path.exists():
            path.mkdir(parents=True)
            DATASET_WRITERS[kind](path)
        return path

    def checkpoint(self, name: str) -> Path:
        """The official file format: `{"model": state}` (Vim, VMamba); timm's release is a bare state dict."""
        path = self.root / "checkpoints" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            state = CHECKPOINTS[name]()
            torch.save(state if name == VIT_B else {"model": state}, path)
        return path

    def local(self, path: str) -> str:
        """A checkpoint name or a runs/ path of the doc, as the file or folder it stands for here."""
        if path.startswith(RUNS):
            return str(self.runs / path.removeprefix(RUNS))
        return str(self.checkpoint(path))

    def localise(self, argv: list[str]) -> list[str]:
        """`argv` on this workspace's data, checkpoints and runs/, with the CPU overrides appended."""
        out = list(argv)
        for i, arg in enumerate(argv[:-1]):
            value = argv[i + 1]
            if arg == "--data":
                kind = value.partition(":")[0]
                out[i + 1] = f"{kind}:{self.dataset(kind)}"
            elif arg == "--pretrained":
                role, _, path = value.partition("=")
                out[i + 1] = f"{role}={self.local(path)}"
            elif arg == "--out":
                out[i + 1] = self.local(value)
        return out + OVERRIDES


def run_train(argv: list[str]) -> Path:
    """Run one `partool train` in-process; returns its run folder."""
    result = CliRunner().invoke(app, ["train", *argv])
    detail = "".join(traceback.format_exception(*result.exc_info)) if result.exception else ""
    assert result.exit_code == 0, f"partool train {shlex.join(argv)}\n{result.output}\n{detail}"
    return Path(option(argv, "--out"))


def check_run(run: Path, argv: list[str]) -> None:
    """partool.json: the paper protocol and splits, threshold 0.45, each --pretrained value recorded under its
    role, a finite best mA."""
    meta = read_meta(run)[1]
    training = meta["training"]
    assert meta["threshold"] == pytest.approx(0.45)
    assert training["protocol"]["name"] == "paper"
    assert training["protocol"]["threshold"] == pytest.approx(0.45)
    assert (training["train_split"], training["val_split"]) == ("trainval", "test")
    given = [tuple(value.split("=", 1)) for value in options(argv, "--pretrained")]
    assert [(r["role"], r["file"]) for r in training["pretrained"]] == given
    assert math.isfinite(training["best_ma"])


def command_param(argv: list[str]) -> object:
    """One command as a test case: the representative row runs by default, the rest are sweep cases."""
    model, kind = row(argv)
    marks = [pytest.mark.slow] if (model, kind) == REPRESENTATIVE else [pytest.mark.slow, pytest.mark.sweep]
    return pytest.param(argv, id=f"{model}-{kind}", marks=marks)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One workspace for the module; removed at the end (the fake checkpoints and runs are gigabytes)."""
    root = tmp_path_factory.mktemp("paper")
    yield Workspace(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def vit_b_run(workspace: Workspace) -> Path:
    """The doc's vit-b command, run once: the frozen-ViT hybrids load its folder."""
    (argv,) = [a for a in paper_commands() if row(a) == VIT_B_RUN]
    local = workspace.localise(argv)
    run = run_train(local)
    check_run(run, local)
    return run


def test_the_block_holds_every_row_of_the_paper_once() -> None:
    assert len(bash_blocks(DOC.read_text())) == 1
    commands = paper_commands()
    rows = [row(argv) for argv in commands]
    assert sorted(rows) == sorted(EXPECTED_ROWS)  # no row missing, none twice
    assert rows[0] == VIT_B_RUN  # the frozen-ViT hybrids need its run
    vit_run = option(commands[0], "--out")
    for argv, (model, kind) in zip(commands, rows, strict=True):
        assert option(argv, "--protocol") == "paper"
        assert option(argv, "--out") == f"{RUNS}{model}-{kind}"
        given = dict(value.split("=", 1) for value in options(argv, "--pretrained"))
        expected = dict(model_info(model).checkpoints)
        assert given.keys() == expected.keys(), model
        for role, path in given.items():
            assert path == (vit_run if path.startswith(RUNS) else expected[role]), (model, role)


@pytest.mark.parametrize("argv", [command_param(a) for a in paper_commands()])
def test_paper_command_runs(argv: list[str], workspace: Workspace, request: pytest.FixtureRequest) -> None:
    if row(argv) == VIT_B_RUN:
        request.getfixturevalue("vit_b_run")  # runs and checks it once; kept for the hybrids that load it
        return
    if any(p.partition("=")[2].startswith(RUNS) for p in options(argv, "--pretrained")):
        request.getfixturevalue("vit_b_run")
    local = workspace.localise(argv)
    check_run(run_train(local), local)
    shutil.rmtree(option(local, "--out"))  # a hybrid's run folder holds about 1.5 GB
