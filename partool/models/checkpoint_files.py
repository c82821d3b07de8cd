"""The official checkpoints each model starts from, as `partool models` lists them and the authors named them.

hustvl/Vim's releases (`vim_s_midclstok_ft_81p6acc.pth` is the one Event-AHU/OpenPAR's MambaPAR_Empirical_Study
loads: `config.py --checkpoint`), and the VMamba v0 and ViT-B files its `models/base_block.py` and
`models/hybrid_*.py` load. Names only: nothing here is downloaded (`partool train --pretrained ROLE=FILE`).
"""

from __future__ import annotations

VIM_T = "vim_t_midclstok_ft_78p3acc.pth"
VIM_S = "vim_s_midclstok_ft_81p6acc.pth"
VMAMBA_T = "vssmtiny/ckpt_epoch_292.pth"
VMAMBA_S = "vssmsmall/ema_ckpt_epoch_238.pth"
VMAMBA_B = "vssmbase_dp06_ckpt_epoch_241.pth"
VIT_S = "timm vit_small_patch16_224 weights"
VIT_B = "jx_vit_base_p16_224-80ecf9dd.pth"
