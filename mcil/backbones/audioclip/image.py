"""AudioCLIP's image tower: CLIP's ModifiedResNet-50 (``visual.*`` in the checkpoint).

Differences from a torchvision ResNet-50: a 3-conv stem with an average pool, anti-aliased
downsampling (an average pool after the 3×3 conv, and before the shortcut's 1×1 conv), and a
QKV attention pool over the 7×7 grid plus a prepended mean token instead of global pooling.

Shapes for a 224×224 input: stem (B, 64, 56, 56) → layer1 (B, 256, 56, 56) → layer2
(B, 512, 28, 28) → layer3 (B, 1024, 14, 14) → layer4 (B, 2048, 7, 7) → attnpool (B, 1024).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Bottleneck", "AttentionPool2d", "ModifiedResNet"]


class Bottleneck(nn.Module):
    """CLIP's anti-aliased Bottleneck (expansion 4); all convs have stride 1.

    (B, inplanes, H, W) → (B, planes·4, H/stride, W/stride). The shortcut, when present, is a
    Sequential with children ``-1`` (AvgPool(stride)), ``0`` (1×1 conv) and ``1`` (BN), which gives
    the checkpoint keys ``downsample.0.weight`` and ``downsample.1.*``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool: nn.Module = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                        ("1", nn.BatchNorm2d(out)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """QKV attention pooling: the mean token (prepended to the grid tokens) attends to all tokens.

    (B, C, S, S) → (B, output_dim), with S² + 1 = ``positional_embedding.shape[0]``.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(spatial_dim**2 + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads
        if not self.positional_embedding.is_meta:  # random init on meta is slow and pointless
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """CLIP's init: positional embedding and the four projections N(0, 1/√C), biases at torch defaults."""
        std = self.c_proj.in_features**-0.5
        nn.init.normal_(self.positional_embedding, std=std)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            proj.reset_parameters()
            nn.init.normal_(proj.weight, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (B, HW+1, C)
        if tokens.shape[1] != self.positional_embedding.shape[0]:
            raise ValueError(
                f"the image tower's attention pool expects a {int((self.positional_embedding.shape[0] - 1) ** 0.5)}² "
                f"feature grid (224×224 input), got {h}×{w}"
            )
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        head_dim = c // self.num_heads
        # Only output token 0 (the mean token) is used, so only its query is computed.
        q = self.q_proj(tokens[:, :1]).view(b, 1, self.num_heads, head_dim).transpose(1, 2)  # (B, h, 1, d)
        k = self.k_proj(tokens).view(b, -1, self.num_heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        v = self.v_proj(tokens).view(b, -1, self.num_heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, d)
        return self.c_proj(out.transpose(1, 2).reshape(b, c))


class ModifiedResNet(nn.Module):
    """CLIP ModifiedResNet: (B, 3, R, R) → (B, output_dim); RN50 = layers (3, 4, 6, 3), width 64."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        output_dim: int = 1024,
        heads: int = 32,
        input_resolution: int = 224,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU()

        inplanes = width
        for i, depth in enumerate(layers):
            planes = width * 2**i
            blocks = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, depth)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))

        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def blocks(self) -> list[tuple[str, Bottleneck]]:
        """The Bottleneck blocks in forward order, with names relative to this module ('layer1.0', …)."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, Bottleneck)]

    def reset_parameters(self) -> None:
        """CLIP's init: Kaiming-uniform convs (torch default), attnpool N(0, 1/√C), bn3 weights zero."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()
        self.attnpool.reset_parameters()
        for _, block in self.blocks():
            nn.init.zeros_(block.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)
