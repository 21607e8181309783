"""Peak memory of one ``mcil bench`` path: the CUDA allocator's peak, or on CPU the resident set
sampled while the path runs (the freed heap handed back to the OS before it starts)."""

from __future__ import annotations

import os

import torch

__all__ = ["PeakMemory", "release_memory"]


def _rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def release_memory() -> None:
    """Hand freed heap back to the OS before a path starts (glibc keeps it otherwise), so the
    second path's sampled RSS peak is not the first path's leftovers."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of one path: the CUDA allocator's peak, or on CPU the highest RSS sampled every
    50 ms by a daemon thread (the process-wide ``ru_maxrss`` never goes down, so it cannot tell
    the second path's peak from the first's)."""

    def __init__(self, device: torch.device) -> None:
        import threading

        self.device = device
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if device.type != "cuda" else None

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def start(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = _rss_mb()
            self._thread.start()
        return self

    def stop(self) -> float:
        """Stop sampling; returns the peak (MB)."""
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_mb())
        return self.peak
