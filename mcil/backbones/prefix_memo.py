"""A memo of a frozen tower's prefix, per input row: the input to its first block and that block's own output.

Why: with the backbone frozen, every adapter of this package is *parallel* — a forward hook adds to
a block's output and never changes its input — so everything up to and including the first block's
own computation (patch stem, positions and LN; the log-mel for audio; token embeddings for text;
then block 0) is the same function of the same sample in every epoch and every evaluation. Storing
it once per sample removes the patch stem and one of the blocks from every later forward
(docs/benchmarks.md, "Frozen-prefix memo"); the hook of block 0 still runs on the stored input.

Exact by construction: a row is found by its bytes (with its shape and dtype), never by an index a
caller could get wrong, and the memo empties itself when any prefix parameter differs from the copy
taken when it was filled (compared with ``torch.equal``, so an optimiser step, ``load_state_dict``
or a move to another device all count). While a prefix parameter can learn (``requires_grad``:
pre-training) the memo is bypassed: the prefix is computed and nothing is stored. It holds at most
``max_bytes``; rows beyond that are computed every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["PrefixMemo", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 256 * 2**20  # per tower: ~3 900 image rows of the default tiny backbone

Prefix = tuple[torch.Tensor, torch.Tensor]  # (B, L, W) block-0 input, (B, L, W) block-0 output


class PrefixMemo:
    """Row-wise memo of ``compute(x) → (x0, y0)`` for a frozen prefix with parameters ``params``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"PrefixMemo: max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._rows: dict[tuple, Prefix] = {}
        self._bytes = 0
        self._params: list[torch.Tensor] = []
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
        self._bytes = 0
        self._params = []

    def _valid_for(self, params: Sequence[torch.Tensor]) -> bool:
        if len(params) != len(self._params):
            return False
        return all(
            p.device == q.device and p.dtype == q.dtype and p.shape == q.shape and torch.equal(p.detach(), q)
            for p, q in zip(params, self._params)
        )

    def __call__(
        self, x: torch.Tensor, params: Sequence[torch.Tensor], compute: Callable[[torch.Tensor], Prefix]
    ) -> Prefix:
        """``x`` (B, ...) → ``(x0, y0)``, each (B, L, W), the rows of ``compute(x)``."""
        if self.max_bytes == 0 or x.requires_grad or any(p.requires_grad for p in params):
            return compute(x)
        if not self._valid_for(params):
            self.clear()
            self._params = [p.detach().clone() for p in params]
        sig = (tuple(x.shape[1:]), x.dtype, x.device)
        flat = x.detach().reshape(x.shape[0], -1).cpu().contiguous().numpy()
        keys = [(sig, row.tobytes()) for row in flat]
        found: dict[tuple, Prefix] = {}
        miss = [i for i, k in enumerate(keys) if k not in self._rows and k not in found]
        # a batch may hold one sample twice: compute each missing key once
        first: dict[tuple, int] = {}
        for i in miss:
            first.setdefault(keys[i], i)
        if first:
            rows = torch.tensor(list(first.values()), dtype=torch.long, device=x.device)
            with torch.no_grad():
                x0, y0 = compute(x.index_select(0, rows))
            for j, k in enumerate(first):
                entry = (x0[j].clone(), y0[j].clone())
                size = entry[0].numel() * entry[0].element_size() + entry[1].numel() * entry[1].element_size()
                if self._bytes + size <= self.max_bytes:
                    self._rows[k] = entry
                    self._bytes += size
                else:
                    found[k] = entry
        self.misses += len(first)
        self.hits += len(keys) - len(first)
        got = [self._rows[k] if k in self._rows else found[k] for k in keys]
        return torch.stack([g[0] for g in got]), torch.stack([g[1] for g in got])
