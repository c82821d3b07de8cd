"""The checkpoint the MambaPAR authors start Vim-S from, `vim_s_midclstok_ft_81p6acc.pth` (hustvl/Vim's "Vim-S+",
fine-tuned at patch stride 8: 27×27 patches + the middle cls token = 730 positions), loads into partool's
stride-16 Vim-S at the paper's 224×224 with no key left over and its position grid resized bicubically."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_pretrained import official_vim_s_state_dict

from partool.models import create_model, load_pretrained


def test_vim_s_fine_tuned_stride8_checkpoint_loads_at_224(tmp_path):
    sd = official_vim_s_state_dict()
    sd["pos_embed"] = torch.randn(1, 27 * 27 + 1, 384)  # stride 8: (224 - 16) / 8 + 1 = 27 per side
    path = tmp_path / "vim_s_midclstok_ft_81p6acc.pth"
    torch.save({"model": sd, "epoch": 29}, path)
    model = create_model("vim-s", 26, (224, 224))
    missing, unexpected = load_pretrained(model, path)
    assert missing == [] and unexpected == []
    pos = model.backbone.pos_embed
    assert pos.shape == (1, 197, 384)
    # the cls position: index 729 // 2 = 364 of the checkpoint, 196 // 2 = 98 of the model
    torch.testing.assert_close(pos[:, 98], sd["pos_embed"][:, 364])
    patches = torch.cat([sd["pos_embed"][:, :364], sd["pos_embed"][:, 365:]], dim=1)
    grid = patches.reshape(1, 27, 27, 384).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    got = torch.cat([pos[:, :98], pos[:, 99:]], dim=1).reshape(1, 14, 14, 384)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        model.backbone.layers[5].mixer.x_proj_b.weight, sd["layers.5.mixer.x_proj_b.weight"]
    )
