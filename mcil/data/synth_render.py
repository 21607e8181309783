"""How synav's attributes look and sound: the vocabulary and the image and audio renderers.

Pure functions of an attribute triple and a ``numpy`` generator (no files, no classes);
:mod:`mcil.data.synth_classes` builds the classes; :mod:`mcil.data.synth` draws the samples and writes the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "SHAPES",
    "COLOURS",
    "COLOUR_MIX",
    "TEXTURES",
    "PITCHES",
    "PITCH_JITTER",
    "IMAGE_NOISE",
    "AUDIO_NOISE",
    "TIMBRES",
    "RHYTHMS",
    "IMAGE_SIZE",
    "SAMPLE_RATE",
    "NUM_SAMPLES",
    "render_image",
    "render_audio",
    "noise_clip",
]

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")
# Saturated, mutually distant RGB in [0, 1]; the background is a desaturated grey, so even
# "white" stands out.
# In hue order around the colour circle: each colour's neighbours are the entries before and after it
# (cyclically). A sample's colour is mixed with one neighbour by up to COLOUR_MIX, so neighbouring
# colours overlap a little at the tails: colour is informative, not a lookup key.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.75, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.60, 0.15, 0.80),
    "pink": (0.98, 0.45, 0.75),
}
COLOUR_MIX = 0.7
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
# Eight fundamentals 5 semitones apart (130.8 Hz … 987.8 Hz). A sample's pitch is jittered by up to
# ±PITCH_JITTER semitones, more than half the spacing: neighbouring pitches overlap at the tails.
PITCHES: dict[str, float] = {
    "deep": 130.8,
    "low": 174.6,
    "mellow": 233.1,
    "middle": 311.1,
    "bright": 415.3,
    "high": 554.4,
    "very high": 740.0,
    "shrill": 987.8,
}
PITCH_JITTER = 4.0
# Per-sample sensor noise (standard deviation drawn uniformly from these ranges): pixel noise on [0, 1]
# images, white noise on clips whose peak is 0.3-0.85. Strong enough that no attribute is read for free.
IMAGE_NOISE = (0.04, 0.12)
AUDIO_NOISE = (0.02, 0.08)
TIMBRES: tuple[str, ...] = ("whistle", "buzz", "reed", "bell", "hum", "rasp")
RHYTHMS: tuple[str, ...] = ("steady", "pulsing", "rising", "falling", "staccato", "warbling")
IMAGE_SIZE = 64
SAMPLE_RATE = 16_000
NUM_SAMPLES = SAMPLE_RATE  # 1.0 s
_SUPERSAMPLE = 2
_MAX_PARTIAL_HZ = 7_000.0  # below Nyquist (8 kHz): additive synthesis without aliasing


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], y pointing down."""
    u = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0
    return np.meshgrid(u, u, indexing="xy")


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside test in the object's own frame (object fits in [-1, 1]², y down)."""
    r = np.hypot(x, y)
    if shape == "circle":
        return r <= 0.92
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= 0.78
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if shape == "triangle":
        return (y <= 0.72) & (np.abs(x) <= (y + 0.95) * 0.62)
    if shape == "star":
        phi = np.arctan2(x, -y)  # 0 at the top: one tip points up
        t = np.mod(phi / (2 * np.pi) * 5.0 + 0.5, 1.0)
        return r <= 0.40 + 0.60 * (1.0 - 2.0 * np.abs(t - 0.5))
    if shape == "cross":
        ax, ay = np.abs(x), np.abs(y)
        return ((ax <= 0.30) & (ay <= 0.95)) | ((ay <= 0.30) & (ax <= 0.95))
    if shape == "ring":
        return (r >= 0.55) & (r <= 0.95)
    if shape == "heart":
        hx, hy = x * 1.15, -(y * 1.15) + 0.25
        return (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0
    raise ValueError(f"unknown shape {shape!r}")


def _texture_on(texture: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Where the texture keeps the full colour (elsewhere it is darkened), in the object's frame."""
    if texture == "solid":
        return np.ones(x.shape, dtype=bool)
    if texture == "striped":
        return np.mod((x + y) / (period * math.sqrt(2.0)), 1.0) < 0.5
    if texture == "dotted":
        dx = np.mod(x, period) - period / 2
        dy = np.mod(y, period) - period / 2
        return dx**2 + dy**2 > (0.3 * period) ** 2
    if texture == "checkered":
        return (np.floor(x / period) + np.floor(y / period)) % 2 == 0
    raise ValueError(f"unknown texture {texture!r}")


def _smooth_field(rng: np.random.Generator, n: int, cells: int, scale: float) -> np.ndarray:
    """Low-frequency random field (bilinear upsampling of a cells×cells grid), shape (n, n)."""
    coarse = rng.normal(0.0, scale, size=(cells, cells))
    pos = (np.arange(n) + 0.5) / n * (cells - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, cells - 2)
    w = pos - i0
    rows = coarse[i0] * (1 - w)[:, None] + coarse[i0 + 1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i0 + 1] * w[None, :]


def _downsample(img: np.ndarray, factor: int) -> np.ndarray:
    h, w, c = img.shape
    return img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


def render_image(visual: tuple[str, str, str], rng: np.random.Generator,
                 corruption: str = "", corruption_rng: np.random.Generator | None = None) -> np.ndarray:
    """One (64, 64, 3) uint8 picture of a (shape, colour, texture) object on a cluttered background."""
    shape, colour, texture = visual
    n = IMAGE_SIZE * _SUPERSAMPLE
    gx, gy = _grid(n)

    # Background: tinted grey, low-frequency shading, desaturated distractor blobs.
    grey = rng.uniform(0.12, 0.48)
    tint = rng.uniform(-0.05, 0.05, size=3)
    img = np.empty((n, n, 3))
    img[:] = grey + tint
    img += _smooth_field(rng, n, 5, 0.05)[:, :, None]
    for _ in range(int(rng.integers(3, 7))):
        bx, by = rng.uniform(-1, 1, size=2)
        radius = rng.uniform(0.05, 0.12)
        blob = (gx - bx) ** 2 + (gy - by) ** 2 <= radius**2
        col = 0.65 * rng.uniform(0.1, 0.6) + 0.35 * rng.uniform(0, 1, size=3)
        img[blob] = col

    # Object: scale, position (kept mostly inside), rotation, colour/brightness jitter.
    s = rng.uniform(0.42, 0.62)
    margin = 1.0 - 0.9 * s
    cx, cy = rng.uniform(-margin, margin, size=2)
    theta = rng.uniform(-0.3, 0.3)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    dx, dy = gx - cx, gy - cy
    lx = (cos_t * dx + sin_t * dy) / s
    ly = (-sin_t * dx + cos_t * dy) / s
    mask = _shape_mask(shape, lx, ly)
    names = list(COLOURS)
    neighbour = names[(names.index(colour) + (1 if rng.random() < 0.5 else -1)) % len(names)]
    mix = rng.uniform(0.0, COLOUR_MIX)
    rgb = (1.0 - mix) * np.asarray(COLOURS[colour]) + mix * np.asarray(COLOURS[neighbour])
    base = np.clip(rgb * rng.uniform(0.85, 1.08) + rng.uniform(-0.06, 0.06, size=3), 0, 1)
    on = _texture_on(texture, lx + rng.uniform(0, 1), ly + rng.uniform(0, 1), period=rng.uniform(0.36, 0.46))
    shade = 1.0 - 0.12 * (ly + 1.0) / 2.0  # soft top-lit shading
    obj = np.where(on[:, :, None], base, base * 0.3) * shade[:, :, None]
    img = np.where(mask[:, :, None], obj, img)

    img = _downsample(img, _SUPERSAMPLE)
    img += rng.normal(0.0, rng.uniform(IMAGE_NOISE[0], IMAGE_NOISE[1]), size=img.shape)

    if corruption:
        crng = corruption_rng if corruption_rng is not None else rng
        if corruption == "image-occlusion":
            # A box over most of the object: shape and texture become unreadable.
            px = (np.array([cx, cy]) + 1.0) / 2.0 * IMAGE_SIZE
            size = s * IMAGE_SIZE * crng.uniform(0.8, 1.05, size=2)
            centre = px + crng.uniform(-0.1, 0.1, size=2) * s * IMAGE_SIZE
            x0, y0 = np.floor(centre - size / 2).astype(int).clip(0, IMAGE_SIZE)
            x1, y1 = np.ceil(centre + size / 2).astype(int).clip(0, IMAGE_SIZE)
            fill = crng.uniform(0.2, 0.6) + crng.uniform(-0.05, 0.05, size=3)
            img[y0:y1, x0:x1] = fill + crng.normal(0.0, 0.03, size=(y1 - y0, x1 - x0, 3))
        elif corruption == "image-blur":
            # Out of focus and hazy: shape and texture are gone, colour is washed out.
            sigma = crng.uniform(3.0, 4.5)
            img = gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")
            haze = crng.uniform(0.3, 0.5)
            img = (1.0 - haze) * img + haze * img.mean()
        elif not corruption.startswith("audio-"):
            raise ValueError(f"unknown corruption {corruption!r}")
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def _partials(timbre: str) -> list[tuple[float, float]]:
    """(frequency ratio, amplitude) of the additive-synthesis partials of a timbre."""
    if timbre == "whistle":  # sine
        return [(1.0, 1.0)]
    if timbre == "buzz":  # square: odd harmonics, 1/k
        return [(float(k), 1.0 / k) for k in range(1, 40, 2)]
    if timbre in ("reed", "rasp"):  # sawtooth: all harmonics, 1/k (rasp adds noisy AM below)
        return [(float(k), 1.0 / k) for k in range(1, 40)]
    if timbre == "bell":  # inharmonic partials
        return [(1.0, 1.0), (2.76, 0.65), (5.40, 0.45), (8.93, 0.3), (13.34, 0.2)]
    if timbre == "hum":  # strong low harmonics incl. the octave
        return [(1.0, 1.0), (2.0, 0.8), (3.0, 0.4)]
    raise ValueError(f"unknown timbre {timbre!r}")


def _envelope(rhythm: str, tl: np.ndarray, dur: float) -> np.ndarray:
    """Amplitude envelope over local time tl ∈ [0, dur) (values outside are masked by the caller)."""
    if rhythm in ("steady", "warbling"):
        return np.ones_like(tl)
    if rhythm == "pulsing":  # smooth 4 Hz swell
        return 0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * tl)
    if rhythm == "rising":
        return np.clip(tl / dur, 0.0, 1.0) ** 1.5
    if rhythm == "falling":
        return np.exp(-tl / 0.15)
    if rhythm == "staccato":  # 8 Hz short bursts with 5 ms ramps
        m = np.mod(tl, 0.125)
        return np.clip(np.minimum(m / 0.005, (0.04 - m) / 0.005), 0.0, 1.0)
    raise ValueError(f"unknown rhythm {rhythm!r}")


def _lowpass_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Unit-variance noise smoothed by a moving average of `width` samples."""
    white = rng.normal(size=n + width)
    c = np.cumsum(white)
    out = (c[width:] - c[:-width])[:n] / math.sqrt(width)
    return out / (out.std() + 1e-12)


def _additive(phase: np.ndarray, parts: Sequence[tuple[float, float]]) -> np.ndarray:
    """Σ a·sin(r·phase) / Σ a. Integer ratios use the recurrence z^k = z^(k-1)·z on the unit circle
    (one complex product per harmonic instead of one sine), which keeps 39-harmonic tones cheap."""
    total = np.zeros_like(phase)
    harmonic = {int(r): a for r, a in parts if float(r).is_integer()}
    if harmonic:
        z = np.exp(1j * phase)
        zk = np.ones_like(z)
        for k in range(1, max(harmonic) + 1):
            zk *= z
            if k in harmonic:
                total += harmonic[k] * zk.imag
    for r, a in parts:
        if not float(r).is_integer():
            total += a * np.sin(r * phase)
    return total / sum(a for _, a in parts)


def render_audio(audio: tuple[str, str, str], rng: np.random.Generator) -> np.ndarray:
    """One (16000,) float32 clip in [-1, 1] of a (pitch, timbre, rhythm) sound plus noise."""
    pitch, timbre, rhythm = audio
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    f0 = PITCHES[pitch] * 2.0 ** (rng.uniform(-PITCH_JITTER, PITCH_JITTER) / 12.0)
    onset = rng.uniform(0.0, 0.15)
    dur = min(rng.uniform(0.7, 0.82), 1.0 - onset)
    amp = rng.uniform(0.3, 0.85)
    tl = t - onset
    active = (tl >= 0.0) & (tl < dur)

    freq = np.full(NUM_SAMPLES, f0)
    if rhythm == "warbling":  # vibrato ±3.5 % at ~6.5 Hz
        freq = f0 * (1.0 + 0.035 * np.sin(2 * np.pi * rng.uniform(6.0, 7.0) * tl))
    phase = 2.0 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    parts = [(ratio, a) for ratio, a in _partials(timbre) if ratio * f0 * 1.04 < _MAX_PARTIAL_HZ]
    wave = _additive(phase, parts)
    if timbre == "rasp":  # noisy amplitude modulation smears every harmonic into a band
        wave = wave * (1.0 + 0.9 * _lowpass_noise(rng, NUM_SAMPLES, 24))

    env = _envelope(rhythm, np.clip(tl, 0.0, None), dur)
    ramp = np.clip(np.minimum(tl / 0.01, (dur - tl) / 0.01), 0.0, 1.0)
    wave = np.where(active, wave * env * ramp, 0.0)
    peak = np.max(np.abs(wave))
    if peak > 0:
        wave = wave / peak * amp
    wave = wave + rng.normal(0.0, rng.uniform(AUDIO_NOISE[0], AUDIO_NOISE[1]), size=NUM_SAMPLES)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def noise_clip(rng: np.random.Generator) -> np.ndarray:
    """Coloured noise (random spectral tilt) at a typical level: the sound is replaced, not masked."""
    spectrum = np.fft.rfft(rng.normal(size=NUM_SAMPLES))
    f = np.fft.rfftfreq(NUM_SAMPLES, 1.0 / SAMPLE_RATE)
    spectrum *= np.maximum(f, 20.0) ** (-rng.uniform(0.0, 0.8))
    noise = np.fft.irfft(spectrum, n=NUM_SAMPLES)
    noise = noise / (noise.std() + 1e-12) * rng.uniform(0.08, 0.25)
    return np.clip(noise, -1.0, 1.0).astype(np.float32)
