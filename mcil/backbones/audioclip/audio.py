"""AudioCLIP's audio tower: the ESResNeXt-fbsp encoder (``audio.*`` in the checkpoint).

Waveform → learnable FBSP "spectrogram" → 3 frequency bands as 3 image channels (dB) →
ResNeXt-50 32×4d with attention gates → ``fc`` to the joint embedding (1024).

Front end (spec §4.1), for a waveform of N samples per channel::

    x  (B, C, N) in int16 units      → x' = (x + 32768)·2/65535 − 1
    frames (B·C, T, 1654)              T = 1 if N ≤ 1654 else 1 + ceil((N − 1654)/561),
                                       zero padding split half left / rest right, × window
    frames (B·C, T, 2048)              zero-padded 197 left, 197 right (n_fft)
    spectrogram (B·C, 1025, T, 2)      LinearFBSP, real and imaginary parts
    bands (B, C, 3, 341, T)            bins 0..1022 cut into 3 bands, power, floor 1e-18, 10·log10

Trunk (spec §4.2): each audio channel's (B, 3, 341, T) dB image runs through the trunk separately;
the pooled (B, 2048) vectors are summed over channels before ``fc``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "N_FFT",
    "HOP_LENGTH",
    "WIN_LENGTH",
    "NUM_BANDS",
    "num_frames",
    "frame_signal",
    "blackmanharris_window",
    "LinearFBSP",
    "AttentionGate",
    "ResNeXtBottleneck",
    "ESResNeXtFBSP",
]

N_FFT = 2048
HOP_LENGTH = 561
WIN_LENGTH = 1654
NUM_BANDS = 3  # = input channels of the trunk's conv1
LOG10_FLOOR = 1e-18


def num_frames(num_samples: int, frame_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH) -> int:
    """Frame count of the FBSP front end for a signal of ``num_samples`` samples (220,500 → 392)."""
    if num_samples < 1:
        raise ValueError(f"an audio signal needs at least 1 sample, got {num_samples}")
    if num_samples <= frame_length:
        return 1
    return 1 + math.ceil((num_samples - frame_length) / hop_length)


def frame_signal(signal: torch.Tensor, window: torch.Tensor, hop_length: int = HOP_LENGTH) -> torch.Tensor:
    """Cut rows into overlapping windowed frames.

    signal: (R, N); window: (W,) → (R, T, W) with T = :func:`num_frames` (N, W, hop_length).
    The signal is zero-padded to (T − 1)·hop + W samples, ``pad // 2`` zeros on the left and the
    rest on the right, so that every sample lies in some frame.
    """
    frame_length = window.shape[0]
    n = signal.shape[-1]
    t = num_frames(n, frame_length, hop_length)
    pad = (t - 1) * hop_length + frame_length - n
    if pad > 0:
        signal = F.pad(signal, (pad // 2, pad - pad // 2))
    frames = signal.unfold(-1, frame_length, hop_length)  # (R, T, W)
    return frames * window


def blackmanharris_window(length: int = WIN_LENGTH) -> torch.Tensor:
    """Periodic 4-term Blackman–Harris window, float32: scipy's ``get_window('blackmanharris', length)``.

    w[n] = 0.35875 − 0.48829·cos(2πn/L) + 0.14128·cos(4πn/L) − 0.01168·cos(6πn/L), n = 0..L−1,
    computed in float64 (scipy is not imported: ``scipy.signal`` takes seconds to import).
    """
    n = torch.arange(length, dtype=torch.float64) * (2.0 * math.pi / length)
    w = 0.35875 - 0.48829 * torch.cos(n) + 0.14128 * torch.cos(2.0 * n) - 0.01168 * torch.cos(3.0 * n)
    return w.to(torch.float32)


class LinearFBSP(nn.Module):
    """AudioCLIP's learnable Fourier-like transform ("frequency B-spline"), applied to real frames.

    Each of ``out_features`` output bins k has a kernel over t = π·linspace(−1, 1, n) + 1e−8::

        w_k(t) = √fb_k · sinc(fb_k·t / (m_k + 1e−8)) ** m_k · exp(−i·fc_k·t)   [/ √n if normalized]

    where the real sinc window is raised to the (real) power m_k in polar form, so negative window
    values get the phase m_k·π. With the initial m = 0, fb = 1, fc = k this is the plain DFT.

    ``bias`` is a zero-length parameter (the checkpoint stores it so); a bias of shape
    (out_features, 2) would be added to the output.
    """

    def __init__(self, out_features: int = N_FFT // 2 + 1, normalized: bool = True) -> None:
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        self.eps = 1e-8
        self.m = nn.Parameter(torch.empty(out_features))
        self.fb = nn.Parameter(torch.empty(out_features))
        self.fc = nn.Parameter(torch.empty(out_features))
        self.bias = nn.Parameter(torch.empty(0))
        if not self.m.is_meta:  # init ops on meta tensors import torch._dynamo (seconds)
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """m = 0, fb = 1, fc = 0..K−1: the plain DFT."""
        with torch.no_grad():
            self.m.zero_()
            self.fb.fill_(1.0)
            self.fc.copy_(torch.arange(self.out_features, dtype=self.fc.dtype, device=self.fc.device))

    def kernels(self, in_features: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary kernel matrices, each (out_features, in_features)."""
        t = math.pi * torch.linspace(-1.0, 1.0, in_features, dtype=dtype, device=device).unsqueeze(0) + self.eps
        m = self.m.to(dtype).unsqueeze(1)  # (K, 1)
        fb = self.fb.to(dtype).unsqueeze(1)
        fc = self.fc.to(dtype).unsqueeze(1)

        arg = fb * t / (m + self.eps)  # (K, n)
        sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
        # sinc ** m for a real base and a real exponent, in polar form: |sinc|^m · e^{i·m·phase},
        # phase = atan2(0, sinc) ∈ {0, π}.
        magnitude = (sinc * sinc) ** (0.5 * m)
        phase = torch.atan2(torch.zeros_like(sinc), sinc)
        win_re = magnitude * torch.cos(m * phase)
        win_im = magnitude * torch.sin(m * phase)

        carrier_re = torch.cos(fc * t)
        carrier_im = -torch.sin(fc * t)
        scale = fb.sqrt()
        w_re = scale * (win_re * carrier_re - win_im * carrier_im)
        w_im = scale * (win_re * carrier_im + win_im * carrier_re)
        if self.normalized:
            w_re = w_re / in_features**0.5
            w_im = w_im / in_features**0.5
        return w_re, w_im

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(R, T, n) real frames → (R, T, out_features, 2) (real, imaginary)."""
        w_re, w_im = self.kernels(frames.shape[-1], frames.dtype, frames.device)
        out = torch.stack((F.linear(frames, w_re), F.linear(frames, w_im)), dim=-1)
        if self.bias.numel() == self.out_features * 2:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, bias={self.bias.numel() > 0}, normalized={self.normalized}"


class AttentionGate(nn.Module):
    """Gate of ESResNeXt: sigmoid(BN(pointwise(depthwise(maxpool(block_input → output size))))).

    forward(x (B, C_in, H, W), size (H', W')) → gate (B, C_out, H', W') in (0, 1).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], padding: tuple[int, int]
    ) -> None:
        super().__init__()
        self.conv_depth = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.conv_point = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, size)
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(x))))


class ResNeXtBottleneck(nn.Module):
    """torchvision Bottleneck v1.5 (stride on the 3×3 conv), grouped; ReLU not in place.

    (B, inplanes, H, W) → (B, planes·4, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, groups: int = 32, width_per_group: int = 4) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# (kernel, padding) of the gates att1..att5 (spec §4.2)
_GATE_GEOMETRY: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((3, 1), (1, 0)),
    ((1, 5), (0, 2)),
    ((3, 1), (1, 0)),
    ((1, 5), (0, 2)),
    ((3, 5), (1, 2)),
)


class ESResNeXtFBSP(nn.Module):
    """ESResNeXt-50 32×4d with the FBSP front end and attention gates; output (B, num_classes).

    Attribute order matches the checkpoint's key order: ``window`` (buffer), conv1, bn1,
    layer1, att1, …, layer4, att4, att5, fc, fbsp.
    """

    def __init__(self, num_classes: int = 1024, window: torch.Tensor | None = None) -> None:
        super().__init__()
        if window is None:
            window = blackmanharris_window(WIN_LENGTH).to(torch.get_default_device())
        if window.shape != (WIN_LENGTH,):
            raise ValueError(f"the FBSP window must have shape ({WIN_LENGTH},), got {tuple(window.shape)}")
        self.register_buffer("window", window)

        self.conv1 = nn.Conv2d(NUM_BANDS, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = 64
        gate_in = 64
        for i, (planes, depth, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            blocks = [ResNeXtBottleneck(inplanes, planes, stride)]
            inplanes = planes * ResNeXtBottleneck.expansion
            blocks += [ResNeXtBottleneck(inplanes, planes) for _ in range(1, depth)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            kernel, padding = _GATE_GEOMETRY[i - 1]
            self.add_module(f"att{i}", AttentionGate(gate_in, inplanes, kernel, padding))
            gate_in = inplanes

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        kernel, padding = _GATE_GEOMETRY[4]
        self.att5 = AttentionGate(inplanes, inplanes, kernel, padding)
        self.fc = nn.Linear(inplanes, num_classes)
        self.fbsp = LinearFBSP(N_FFT // 2 + 1, normalized=True)

    def reset_parameters(self) -> None:
        """torchvision-style init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, default fc, DFT FBSP."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()
        self.fc.reset_parameters()
        self.fbsp.reset_parameters()

    # -- front end ------------------------------------------------------------------------------
    @staticmethod
    def scale_input(x: torch.Tensor) -> torch.Tensor:
        """Map int16 units [−32768, 32767] linearly onto [−1, 1]."""
        return (x + 32768.0) * 2.0 / 65535.0 - 1.0

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, C, N) or (B, N) waveform in int16 units → (B·C, 1025, T, 2) FBSP spectrogram."""
        x = self.scale_input(waveform.to(self.fbsp.m.dtype))
        frames = frame_signal(x.reshape(-1, x.shape[-1]), self.window, HOP_LENGTH)  # (B·C, T, 1654)
        pad = N_FFT - WIN_LENGTH
        frames = F.pad(frames, (pad // 2, pad - pad // 2))  # (B·C, T, 2048)
        return self.fbsp(frames).transpose(-2, -3)  # (B·C, 1025, T, 2)

    def log_power_bands(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, C, N) or (B, N) waveform in int16 units → (B, C, 3, 341, T) power in dB."""
        batch = waveform.shape[0]
        spec = self.spectrogram(waveform)
        per_band = spec.shape[-3] // NUM_BANDS  # 341; the top 2 bins are dropped
        spec = spec[:, : NUM_BANDS * per_band]
        power = spec[..., 0] ** 2 + spec[..., 1] ** 2  # (B·C, 1023, T)
        power = torch.where(power > 0.0, power, torch.full_like(power, LOG10_FLOOR))
        power = power.reshape(batch, -1, NUM_BANDS, per_band, power.shape[-1])
        return torch.log10(power) * 10.0

    # -- trunk ------------------------------------------------------------------------------------
    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 341, T) dB image of one audio channel → (B, 2048) gated, pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            layer: nn.Module = getattr(self, f"layer{i}")
            gate: AttentionGate = getattr(self, f"att{i}")
            y = layer(x)
            x = y * gate(x, y.shape[-2:])
        pooled = self.avgpool(x)
        pooled = pooled * self.att5(x, pooled.shape[-2:])
        return torch.flatten(pooled, 1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, N) or (B, C, N) waveform in int16 units → (B, num_classes)."""
        bands = self.log_power_bands(waveform)  # (B, C, 3, 341, T)
        pooled = self.trunk(bands[:, 0])
        for c in range(1, bands.shape[1]):
            pooled = pooled + self.trunk(bands[:, c])
        return self.fc(pooled)
