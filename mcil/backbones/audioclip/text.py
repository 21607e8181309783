"""AudioCLIP's text tower: CLIP's causal text transformer (``transformer.resblocks.*``).

The embedding, final LayerNorm and projection live at the top level of the model (as in CLIP);
this module holds the residual blocks. Hidden states keep CLIP's (L, B, D) layout, which is what
adapter hooks on the blocks see (layout ``LBD``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["LayerNorm32", "QuickGELU", "ResidualAttentionBlock", "TextTransformer", "causal_mask"]


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (CLIP's fp16-safe LayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """x · σ(1.702·x), the GELU approximation CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(L, L) additive mask: 0 on and below the diagonal, −inf above (token i sees tokens ≤ i).

    Built per call rather than stored, so that it never enters the state_dict.
    """
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu_(1)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + MHA(ln_1(x)), then x + MLP(ln_2(x)); (L, B, D) → (L, B, D).

    Attribute order (attn, ln_1, mlp, ln_2) matches the checkpoint's key order.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = LayerNorm32(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """A stack of causal :class:`ResidualAttentionBlock` s: (L, B, D) → (L, B, D)."""

    def __init__(self, width: int = 512, layers: int = 12, heads: int = 8) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def reset_parameters(self) -> None:
        """CLIP's init of the blocks (LayerNorms and biases at their torch defaults)."""
        proj_std = self.width**-0.5 * (2 * self.layers) ** -0.5
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            block.attn._reset_parameters()
            block.ln_1.reset_parameters()
            block.ln_2.reset_parameters()
            block.mlp.c_fc.reset_parameters()
            block.mlp.c_proj.reset_parameters()
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = causal_mask(x.shape[0], x.dtype, x.device)
        for block in self.resblocks:
            x = block(x, attn_mask=mask)
        return x
