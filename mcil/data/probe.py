"""Linear probe on raw features: how much each modality of a dataset tells about its classes.

Used to document synav (docs/synav.md): a dataset meant for a fusion method must show that
image-only and audio-only probes stay below the fused probe (complementary modalities) and that
the noisy regime hurts the fused probe. Features are deliberately simple and fixed, so the numbers
describe the data, not a model:

- image: 16×16 block-averaged RGB pixels, a 4×4×4 joint colour histogram, and the block-averaged
  log magnitude of the grey image's 2-D FFT (translation-invariant shape/texture energy);
- audio: a 16-frame × 16-band log spectrogram, the 64-band time-averaged log spectrum, and the
  log modulation spectrum of the frame energy (rhythm).

Each feature block is standardised on the train split and divided by √(its dimension), so that
every modality weighs the same in the concatenated ("both") probe. The classifier is ridge
regression onto one-hot labels (closed form, numpy), its penalty chosen on a 20 % hold-out of
the train split, then refitted on the whole train split and scored on the test split.
Only incremental classes (splits ``train`` and ``test``) are used.

``python -m mcil.data.probe DATASET_ROOT`` prints the result as JSON.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from mcil.errors import DataError

__all__ = ["image_features", "audio_features", "ridge_fit", "ridge_probe", "linear_probe", "main"]

log = logging.getLogger(__name__)

_LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _block_mean(a: np.ndarray, out: int) -> np.ndarray:
    """Average-pool the first two axes of `a` to out×out (sides must be multiples of out)."""
    h, w = a.shape[:2]
    return a.reshape(out, h // out, out, w // out, *a.shape[2:]).mean(axis=(1, 3))


def image_features(img_u8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with H = W a multiple of 16 → 1-D float feature vector."""
    img = img_u8.astype(np.float64) / 255.0
    pixels = _block_mean(img, 16).ravel()
    bins = np.minimum((img * 4).astype(int), 3)
    joint = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
    hist = np.bincount(joint.ravel(), minlength=64) / joint.size
    grey = img.mean(axis=2)
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))))
    return np.concatenate([pixels, hist, _block_mean(spectrum, 16).ravel()])


def audio_features(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,) float waveform → 1-D float feature vector (spectro-temporal + rhythm)."""
    n_fft, hop = 512, 256
    if wave.size < n_fft * 2:
        wave = np.pad(wave, (0, n_fft * 2 - wave.size))
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, F)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.geomspace(60.0, sample_rate / 2, 65)
    band = np.clip(np.searchsorted(edges, freqs) - 1, 0, 63)
    bands = np.zeros((power.shape[0], 64))
    np.add.at(bands, (slice(None), band), power)
    log_bands = np.log(bands + 1e-6)  # (T, 64)
    t_idx = np.linspace(0, 16, log_bands.shape[0], endpoint=False).astype(int)
    coarse = np.stack([log_bands[t_idx == i].mean(axis=0) for i in range(16)])  # (16, 64)
    coarse = coarse.reshape(16, 16, 4).mean(axis=2)  # (16 frames, 16 bands)
    mean_spectrum = log_bands.mean(axis=0)
    hop_env = sample_rate // 100
    env = np.sqrt(np.mean(wave[: wave.size // hop_env * hop_env].reshape(-1, hop_env) ** 2, axis=1))
    modulation = np.log1p(np.abs(np.fft.rfft(env - env.mean()))[:30] * 10.0)
    return np.concatenate([coarse.ravel(), mean_spectrum, modulation])


def ridge_fit(x: np.ndarray, y_onehot: np.ndarray, lam: float | Sequence[float]) -> np.ndarray | list[np.ndarray]:
    """Weights W (last row = bias) minimising ‖[x,1]W − Y‖² + lam‖W_x‖² (bias unpenalised).

    Centring removes the bias from the penalty; one symmetric eigendecomposition of the smaller
    Gram matrix (XᵀX or XXᵀ) then serves every penalty, so a list of lams (→ a list of W) costs
    little more than one. (An SVD of the full matrix is several times slower with OpenBLAS on a
    busy 2-core machine.)
    """
    x_mean, y_mean = x.mean(axis=0), y_onehot.mean(axis=0)
    xc, yc = x - x_mean, y_onehot - y_mean
    lams = [lam] if np.isscalar(lam) else list(lam)
    weights = []
    if xc.shape[0] >= xc.shape[1]:  # W = V diag(1/(s²+λ)) Vᵀ XᵀY
        evals, v = np.linalg.eigh(xc.T @ xc)
        proj = v.T @ (xc.T @ yc)
        for one in lams:
            weights.append(v @ (proj / (evals + one)[:, None]))
    else:  # W = Xᵀ U diag(1/(s²+λ)) Uᵀ Y
        evals, u = np.linalg.eigh(xc @ xc.T)
        proj = u.T @ yc
        for one in lams:
            weights.append(xc.T @ (u @ (proj / (evals + one)[:, None])))
    weights = [np.vstack([w, y_mean - x_mean @ w]) for w in weights]
    return weights[0] if np.isscalar(lam) else weights


def _predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (x @ w[:-1] + w[-1]).argmax(axis=1)


def _standardise(blocks_train: list[np.ndarray], blocks_test: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    out_train, out_test = [], []
    for tr, te in zip(blocks_train, blocks_test):
        mu, sd = tr.mean(axis=0), tr.std(axis=0) + 1e-8
        scale = np.sqrt(tr.shape[1])
        out_train.append((tr - mu) / sd / scale)
        out_test.append((te - mu) / sd / scale)
    return np.hstack(out_train), np.hstack(out_test)


def ridge_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                n_classes: int) -> tuple[np.ndarray, float]:
    """Ridge probe: penalty chosen on every 5th train row, refitted on all train rows, scored on test.

    x_train (N, F), y_train (N,) int in [0, n_classes), x_test (M, F), y_test (M,) →
    ((M,) bool per-test-sample correctness, the chosen penalty). Also used by ``mcil calibrate``
    on frozen backbone features.
    """
    onehot = np.eye(n_classes)[y_train]
    hold = np.arange(len(y_train)) % 5 == 0
    best_lam, best_acc = _LAMBDAS[0], -1.0
    for lam, w in zip(_LAMBDAS, ridge_fit(x_train[~hold], onehot[~hold], list(_LAMBDAS))):
        acc = float(np.mean(_predict(x_train[hold], w) == y_train[hold]))
        if acc > best_acc:
            best_lam, best_acc = lam, acc
    w = ridge_fit(x_train, onehot, best_lam)
    return _predict(x_test, w) == y_test, best_lam


def _read_rows(root: Path) -> list[dict[str, str]]:
    path = root / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path} not found; generate the dataset first (mcil synth --out {root})")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    needed = {"split", "label", "image_path", "audio_path"}
    if rows and not needed <= set(rows[0]):
        raise DataError(f"{path} lacks columns {sorted(needed - set(rows[0]))}")
    return rows


def _load_features(root: Path, rows: list[dict[str, str]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    img_feats, aud_feats = [], []
    for row in rows:
        if not row["image_path"] or not row["audio_path"]:
            raise DataError(f"{root / 'manifest.csv'}: sample {row.get('sample_id')} lacks a modality; "
                            "the probe needs paired image and audio")
        img = np.asarray(Image.open(root / row["image_path"]).convert("RGB"))
        wave, sr = sf.read(root / row["audio_path"], dtype="float64", always_2d=False)
        if wave.ndim > 1:
            wave = wave.mean(axis=1)
        img_feats.append(image_features(img))
        aud_feats.append(audio_features(wave, sr))
    return img_feats, aud_feats


def linear_probe(root: str | Path) -> dict[str, Any]:
    """Train-split → test-split linear-probe accuracies (%) of image, audio and both on `root`.

    Returns ``{"image", "audio", "both", "chance"}`` in percent, plus ``"both_by_corruption"``
    (fused accuracy per test-corruption kind, '' = clean), the sample counts and chosen penalties.
    """
    root = Path(root)
    rows = [r for r in _read_rows(root) if r["split"] in ("train", "test")]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    if not train or not test:
        raise DataError(f"{root / 'manifest.csv'} needs both train and test rows for a probe")
    labels = sorted({int(r["label"]) for r in rows})
    index = {lab: i for i, lab in enumerate(labels)}
    y_train = np.array([index[int(r["label"])] for r in train])
    y_test = np.array([index[int(r["label"])] for r in test])
    log.info("probe: decoding %d train + %d test samples from %s", len(train), len(test), root)
    img_tr, aud_tr = (np.array(f) for f in _load_features(root, train))
    img_te, aud_te = (np.array(f) for f in _load_features(root, test))

    result: dict[str, Any] = {"n_classes": len(labels), "n_train": len(train), "n_test": len(test),
                              "chance": 100.0 / len(labels), "lambda": {}}
    correct_both = None
    for name, blocks_tr, blocks_te in (
        ("image", [img_tr], [img_te]),
        ("audio", [aud_tr], [aud_te]),
        ("both", [img_tr, aud_tr], [img_te, aud_te]),
    ):
        x_tr, x_te = _standardise(blocks_tr, blocks_te)
        correct, lam = ridge_probe(x_tr, y_train, x_te, y_test, len(labels))
        result[name] = 100.0 * float(correct.mean())
        result["lambda"][name] = lam
        if name == "both":
            correct_both = correct
    kinds = [r.get("corruption", "") or "" for r in test]
    result["both_by_corruption"] = {
        kind: 100.0 * float(np.mean([c for c, k in zip(correct_both, kinds) if k == kind]))
        for kind in sorted(set(kinds))
    }
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m mcil.data.probe ROOT``: print the probe result as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m mcil.data.probe DATASET_ROOT\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = linear_probe(args[0])
    except DataError as exc:
        log.error("%s", exc)
        return 2
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
