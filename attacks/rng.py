"""Counter-based per-sample random streams and the per-sample seeds behind them.

Corruptions and pipeline faults draw their noise here: ``SampleRNG`` gives
one seeded stream per sample, computed for the whole batch at once, so a
sample's noise depends only on its seed, never on the batch it sits in;
``sample_keys`` and ``sample_seeds`` derive those seeds from the run seed,
the threat and the sample's content.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor

# A counter-based generator: every random word is a hash of (sample seed,
# draw number, element index), computed for the whole batch at once with
# int64 tensor ops. The hash is splitmix64 (Steele, Lea & Flood, 2014): a
# sample's words for draw k are the outputs of a splitmix64 stream whose
# state starts at a splitmix64 output of its seed, so no per-sample generator
# object and no Python loop over samples is needed, on any device.

_WORD = (1 << 64) - 1
_M24 = (1 << 24) - 1
_M32 = (1 << 32) - 1
_M53 = (1 << 53) - 1


def _i64(v: int) -> int:
    """A Python integer as the int64 with the same low 64 bits."""
    v &= _WORD
    return v - (1 << 64) if v >> 63 else v


_GAMMA = _i64(0x9E3779B97F4A7C15)
_MUL1 = _i64(0xBF58476D1CE4E5B9)
_MUL2 = _i64(0x94D049BB133111EB)
#: Poisson rates up to this use cached CDF tables, larger ones PTRS.
_TABLE_MAX_RATE = 512.0
#: Steps of the rate-under-1 Poisson search taken for every element at once
#: (whole-tensor operations); the few elements left after them (P < 1e-5)
#: continue one by one in index lists, which cost more per element.
_REMAINDER_STEPS = 7
#: Elements per piece of the table sampler: its temporaries stay in cache
#: and are reused by the allocator instead of being mapped afresh.
_CHUNK = 1 << 15
#: CPU tensors up to this many words mix in numpy whatever torch's threads.
_NUMPY_MIX_MAX = 1 << 16


#: splitmix64's (shift, multiplier) rounds as numpy unsigned words (0: none).
_NP_ROUNDS = tuple((np.uint64(shift), np.uint64(mul & _WORD) if mul else None)
                   for shift, mul in ((30, _MUL1), (27, _MUL2), (31, 0)))


def _mix64(z: Tensor) -> Tensor:
    """splitmix64's finaliser, in place on an int64 tensor: wrapping products
    and logical right shifts.

    On the CPU the same words come from numpy's unsigned 64-bit operations
    on the tensor's memory (a logical shift is one operation there; several
    times faster on small tensors, where torch's per-call cost dominates),
    unless torch has more than one thread for a large tensor. Elsewhere:
    arithmetic shifts with the sign bits masked."""
    if z.device.type == "cpu" and z.is_contiguous() and \
            (z.numel() <= _NUMPY_MIX_MAX or torch.get_num_threads() == 1):
        a = z.numpy().view(np.uint64)
        for shift, mul in _NP_ROUNDS:
            a ^= a >> shift
            if mul is not None:
                a *= mul
        return z
    t = torch.empty_like(z)
    for shift, mul in ((30, _MUL1), (27, _MUL2), (31, 0)):
        torch.bitwise_right_shift(z, shift, out=t)
        t.bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(t)
        if mul:
            z.mul_(mul)
    return z


def _flat_nonzero(mask: Tensor) -> Tensor:
    """The indices of the true values of a 1-D mask, ascending (on the CPU
    by numpy, several times faster than torch's ``nonzero``)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


@functools.lru_cache(maxsize=64)
def _offsets(count: int, device: torch.device) -> Tensor:
    """``(j + 1) * gamma`` for the element indices ``j < count`` (wrapping)."""
    return torch.arange(1, count + 1, dtype=torch.int64, device=device).mul_(_GAMMA)


def _unit53(w: Tensor) -> Tensor:
    """float64 uniforms in [0, 1) from the top 53 bits of each word."""
    return torch.bitwise_right_shift(w, 11).bitwise_and_(_M53).double().mul_(2.0**-53)


class SampleRNG:
    """Independent seeded random streams, one per sample of a batch.

    Every draw returns a tensor of shape ``(n, *shape)`` whose row ``i``
    depends only on sample ``i``'s seed and on how many draws came before
    (the same for every sample of a batch), never on the other samples: a
    sample's noise is the same in any batch, at any position. All draws are
    computed for the whole batch at once by a counter-based hash.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self._draws = 0
        self._keys: Tensor | None = None

    @classmethod
    def from_generator(cls, generator: torch.Generator, n: int,
                       device: torch.device | str = "cpu") -> SampleRNG:
        """Per-sample seeds drawn from one generator (depends on the batch)."""
        seeds = torch.randint(0, 2**62, (n,), generator=generator, device=generator.device)
        return cls(seeds.tolist(), device)

    def __len__(self) -> int:
        return len(self.seeds)

    def _next_base(self) -> Tensor:
        """Each sample's stream state for the next draw, shape (n,)."""
        if self._keys is None:
            seeds = torch.tensor([_i64(s) for s in self.seeds], dtype=torch.int64)
            self._keys = _mix64(seeds.to(self.device))
        self._draws += 1
        return _mix64(self._keys + _i64(self._draws * _GAMMA))

    @staticmethod
    def _substream(base: Tensor, sub: int) -> Tensor:
        """A further independent state per sample, derived from a draw's state."""
        return _mix64(base + _i64(sub * _MUL1))

    def _words(self, count: int, base: Tensor | None = None) -> Tensor:
        """(n, count) pseudo-random 64-bit words (as int64): word ``j`` of
        sample ``i`` is ``mix64(base_i + (j + 1) * gamma)``."""
        base = self._next_base() if base is None else base
        return _mix64(base.view(-1, 1) + _offsets(count, self.device).view(1, -1))

    def _pairs(self, shape: tuple[int, ...], first: Tensor, second: Tensor) -> Tensor:
        """Lay two (n, h) halves out as (n, *shape): two values per word."""
        n, h = first.shape
        m = math.prod(shape)
        out = torch.empty((n, 2 * h), dtype=first.dtype, device=first.device)
        out[:, :h] = first
        out[:, h:] = second
        return out[:, :m].reshape(n, *shape)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniforms in [0, 1): 53 bits for float64, 24 bits (like ``torch.rand``) otherwise."""
        m = math.prod(shape)
        if dtype == torch.float64:
            return _unit53(self._words(m)).view(-1, *shape)
        w = self._words((m + 1) // 2)
        hi = torch.bitwise_right_shift(w, 40).bitwise_and_(_M24).float()
        lo = w.bitwise_and(_M24).float()
        return self._pairs(shape, hi, lo).mul_(2.0**-24).to(dtype)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normals by Box-Muller, both outputs of each pair used."""
        m = math.prod(shape)
        h = (m + 1) // 2
        if dtype == torch.float64:
            w = self._words(2 * h)
            u1 = 1.0 - _unit53(w[:, :h])  # (0, 1]
            u2 = _unit53(w[:, h:])
        else:
            w = self._words(h)
            u1 = w.bitwise_and(_M32).float().add_(0.5).mul_(2.0**-32)  # (0, 1]
            u2 = torch.bitwise_right_shift(w, 40).bitwise_and_(_M24).float().mul_(2.0**-24)
        r = u1.log_().mul_(-2.0).sqrt_()
        theta = u2.mul_(2 * math.pi)
        return self._pairs(shape, r * theta.cos(), r.mul_(theta.sin_())).to(dtype)

    def uniform(self, low: float, high: float, *shape: int,
                dtype: torch.dtype = torch.float32) -> Tensor:
        return low + (high - low) * self.rand(*shape, dtype=dtype)

    def normal(self, mean: float, std: float, *shape: int) -> Tensor:
        return mean + std * self.randn(*shape)

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """Integers in ``[low, high)`` like ``np.random.randint``: two per
        word, each 32 bits scaled to the range (Lemire's multiply-shift)."""
        span = high - low
        if not 0 < span <= 2**31:
            raise ValueError(
                f"Expected `high - low` in 1..2**31, but got {low}..{high}."
            )
        m = math.prod(shape)
        w = self._words((m + 1) // 2)
        hi = torch.bitwise_right_shift(w, 32).bitwise_and_(_M32)
        lo = w.bitwise_and_(_M32)
        out = self._pairs(shape, hi, lo).mul_(span)
        return torch.bitwise_right_shift(out, 32).add_(low)

    def poisson(self, rates: Tensor) -> Tensor:
        """Poisson counts with per-element ``rates`` (row ``i`` from stream ``i``).

        Exact up to float64 rounding and 32-bit uniforms: a rate ``g + d``
        (``g`` its integer part) gives Poisson(g) + Poisson(d), both by
        inversion; Poisson(g) through cached CDF tables for integer rates up
        to 512 (a guide table finds the answer in about one step), Poisson(d)
        by a short sequential search. Rates above 512 use Hormann's PTRS
        transformed rejection, as numpy does. Each element's uniforms come
        from its own (sample, draw, element) words.
        """
        n = len(self.seeds)
        if len(rates) != n:
            raise ValueError(
                f"Expected {n} rows of rates, one per sample, but got {len(rates)}."
            )
        if rates.numel() == 0:
            return torch.empty_like(rates)
        lam = rates.detach().to(torch.float64).reshape(-1)
        low, high = (float(v) for v in torch.aminmax(lam))
        if not (low >= 0 and math.isfinite(high)):  # NaN fails both
            raise ValueError("Expected finite, non-negative Poisson rates, but got others.")
        m = lam.numel() // n
        base = self._next_base()
        words = self._flat_words(self._substream(base, 0).view(1, -1), None, m)[0]
        top = high
        if top <= _TABLE_MAX_RATE:
            # in cache-sized pieces (the words fix each element's count: no
            # change), each written straight into the result in its dtype
            # (whole counts: exact)
            out = torch.empty(len(lam), dtype=rates.dtype, device=lam.device)
            for i in range(0, len(lam), _CHUNK):
                out[i : i + _CHUNK] = _poisson_counts(lam[i : i + _CHUNK],
                                                      words[i : i + _CHUNK], top)
            return out.view(rates.shape)
        else:
            counts = torch.empty_like(lam)
            big = lam > _TABLE_MAX_RATE
            idx = _flat_nonzero(~big)
            if len(idx):
                counts[idx] = _poisson_counts(lam[idx], words[idx], _TABLE_MAX_RATE)
            idx = _flat_nonzero(big)
            counts[idx] = self._poisson_ptrs(base, lam[idx], idx, m)
        return counts.view(rates.shape).to(rates.dtype)

    def _flat_words(self, states: Tensor, idx: Tensor | None, m: int) -> Tensor:
        """Words of draw states ``(t, n)`` for the elements at flat indices
        ``idx`` of an (n, m) draw (all of them, in order, when None): (t, len)."""
        offsets = _offsets(m, self.device)
        if idx is None:
            z = states.unsqueeze(2) + offsets.view(1, 1, -1)
            return _mix64(z).view(len(states), -1)
        return _mix64(states[:, idx // m] + offsets[idx % m])

    def _poisson_ptrs(self, base: Tensor, lam: Tensor, idx: Tensor | None, m: int) -> Tensor:
        """PTRS (Hormann, 1993) for rates >= 10, as numpy's ``random_poisson_ptrs``.

        ``lam`` holds the rates of the elements at flat indices ``idx`` (all
        when None). Attempt ``a`` of an element takes (U, V) from the two
        32-bit halves of its word in substream ``a + 1``; an element's count
        comes from its first accepted attempt. Every element makes one
        attempt, the rejected ones (about a fifth) another, and the few left
        after that several at once, so a handful of rounds run whatever the batch.
        """
        log_fact = _log_factorials(float(lam.max()), lam.device)
        k, ok = _ptrs_attempts(lam, self._flat_words(self._substream(base, 1).view(1, -1),
                                                     idx, m), log_fact)
        out, ok = k[0], ok[0]
        todo = _flat_nonzero(~ok)  # positions in lam still to draw
        where = todo if idx is None else idx[todo]
        rows, offsets = where // m, _offsets(m, self.device)[where % m]
        first = 2
        while len(todo):
            tries = 1 if len(todo) * 20 > len(lam) else 8
            states = torch.stack([self._substream(base, first + t) for t in range(tries)])
            first += tries
            k, accept = _ptrs_attempts(lam[todo], _mix64(states[:, rows] + offsets), log_fact)
            ok = accept.any(0)
            pick = accept.to(torch.uint8).argmax(0, keepdim=True)  # first accepted attempt
            out[todo] = k.gather(0, pick)[0]
            left = _flat_nonzero(~ok)
            todo, rows, offsets = todo[left], rows[left], offsets[left]
        return out


@functools.lru_cache(maxsize=8)
def _log_factorial_table(size: int, device: torch.device) -> Tensor:
    return torch.lgamma(torch.arange(1, size + 1, dtype=torch.float64, device=device))


def _log_factorials(max_rate: float, device: torch.device) -> Tensor:
    """``log(k!)`` for ``k < K``, with ``K`` so large that PTRS rejects every
    larger ``k`` at rates up to ``max_rate``: there ``log pmf(k) < -100``,
    below anything the left side of its test reaches with 32-bit U and V
    (about -73), so treating those ``k`` as rejected changes nothing."""
    size = 1024
    while (size - 1) * math.log(max_rate) - max_rate - math.lgamma(size) >= -100:
        size *= 2
    return _log_factorial_table(size, device)


def _ptrs_attempts(lam: Tensor, w: Tensor, log_fact: Tensor) -> tuple[Tensor, Tensor]:
    """One PTRS attempt per row of words ``w`` (t, p) for rates ``lam`` (p,):
    the candidate counts and whether each is accepted. Computed on every
    element (cheaper than picking out those the quick test leaves)."""
    u = torch.bitwise_right_shift(w, 32).bitwise_and_(_M32).double()
    u = u.add_(0.5).mul_(2.0**-32).sub_(0.5)
    v = w.bitwise_and(_M32).double().add_(0.5).mul_(2.0**-32)
    b = lam.sqrt().mul_(2.53).add_(0.931)
    a = b * 0.02483 - 0.059
    us = 0.5 - u.abs()
    k = torch.floor((2 * a / us + b).mul_(u).add_(lam).add_(0.43))
    accept = (us >= 0.07) & (v <= 0.9277 - 3.6224 / (b - 2))
    if bool(accept.all()):
        return k, accept
    size = len(log_fact)
    in_table = (k >= 0) & (k < size)
    bound = (k * lam.log() - lam).sub_(log_fact[k.clamp(0, size - 1).long()])
    ratio = (v.log() + torch.log(1.1239 + 1.1328 / (b - 3.4))).sub_(torch.log(a / (us * us) + b))
    accept |= in_table & ~((us < 0.013) & (v > us)) & (ratio <= bound)
    return k, accept


@functools.lru_cache(maxsize=8)
def _poisson_tables(top: int, device: torch.device
                    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], int, int]:
    """CDF tables of Poisson(g) for the integer rates ``g <= top``, flattened
    (row ``g``: P(X <= j) for ``j < width``, the last set to 1; the tail
    beyond is under 1e-20), shifted by ``g`` into one ascending array; and
    guide entries: for (g, b), the smallest ``j`` whose CDF reaches
    ``b / 2**bits`` and the CDF at that ``j`` and at ``j + 1``."""
    width = int(top + 10 * math.sqrt(top) + 20)
    g = torch.arange(top + 1, dtype=torch.float64).view(-1, 1)
    j = torch.arange(width, dtype=torch.float64).view(1, -1)
    log_pmf = j * torch.log(g.clamp_min(1e-300)) - g - torch.lgamma(j + 1)
    pmf = torch.exp(log_pmf)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0
    cdf = pmf.cumsum(1)
    cdf[:, -1] = 1.0
    bits = max(1, (width - 1).bit_length())
    edges = (torch.arange(1 << bits, dtype=torch.float64) / (1 << bits)).expand(top + 1, -1)
    guide = torch.searchsorted(cdf, edges.contiguous())
    # per entry: the guide's j and the CDF there and one further (most draws
    # stop at one of the two), as three flat columns
    at = cdf.gather(1, torch.cat([guide, (guide + 1).clamp_max(width - 1)], 1))
    g0, c1, c2 = (v.reshape(-1).contiguous().to(device)
                  for v in (guide.double(), at[:, : 1 << bits], at[:, 1 << bits :]))
    # each row shifted by its rate: one ascending array for searchsorted
    # (exact for 32-bit uniforms: u + g needs 43 bits of a float64's 53)
    stacked = (cdf + g).reshape(-1)
    return stacked.to(device), (g0, c1, c2), width, bits


def _poisson_by_tables(lam: Tensor, w: Tensor, top: float) -> Tensor:
    """Poisson counts for rates ``lam`` <= 512 from one word each: the high
    32 bits invert the table of the integer part, the low 32 bits the
    remainder's Poisson (rate under 1) by sequential search."""
    size = 16
    while size < top:
        size *= 2
    stacked, entries, width, bits = _poisson_tables(size, lam.device)
    g = lam.floor()
    gi = g.long()
    hu = torch.bitwise_right_shift(w, 32).bitwise_and_(_M32)
    u = hu.double().add_(0.5).mul_(2.0**-32)
    at = gi.bitwise_left_shift(bits).add_(torch.bitwise_right_shift(hu, 32 - bits))
    # three 1-D gathers: several times faster on CPU than one of (n, 3) rows
    guide_j, guide_cdf, guide_next = (col.index_select(0, at) for col in entries)
    j = guide_j.add(u > guide_cdf)  # one step up covers most, a binary search the rest
    left = _flat_nonzero(u > guide_next)
    if len(left):
        j[left] = (torch.searchsorted(stacked, u[left] + g[left]) - gi[left] * width).double()
    # the remainder d = lam - g in [0, 1): Poisson(d) by inversion
    d = lam - g
    uz = w.bitwise_and(_M32).double().add_(0.5).mul_(2.0**-32)
    # the remainder's count is added to j as it is found (whole numbers:
    # exact in float64, in any order)
    p0 = torch.exp(-d)
    j.add_(uz > p0)
    p = p0 * d  # step 1 for every element: most stop at 0 or 1 (P >= 0.73)
    total = p0.add_(p)
    beyond = uz > total
    j.add_(beyond)
    # the rest continue on their own, compacted: the same operations per
    # element in the same order, so the same counts
    left = _flat_nonzero(beyond)
    if len(left):
        pl, dl, tl, ul = (v.index_select(0, left) for v in (p, d, total, uz))
        zl = torch.zeros_like(pl)
        for step in range(2, _REMAINDER_STEPS + 1):
            pl.mul_(dl).div_(step)
            tl += pl
            zl += ul > tl
        # P(Z > 7) < 1e-5; the float64 CDF reaches 1 by 30
        more = _flat_nonzero(ul > tl)
        step = _REMAINDER_STEPS
        while len(more) and step < 64:
            step += 1
            pm = pl[more] * dl[more] / step
            pl[more] = pm
            tl[more] += pm
            more = more[ul[more] > tl[more]]
            zl[more] += 1
        j.index_add_(0, left, zl)
    return j


def _poisson_by_tables_numpy(lam: Tensor, w: Tensor, top: float) -> Tensor:
    """``_poisson_by_tables`` for CPU tensors, in numpy: the same operations
    on the same values (integer steps, comparisons, IEEE sums and products;
    the exponential still by torch, on the same array), so the same counts,
    at a fraction of torch's cost per call, with one-step logical shifts."""
    size = 16
    while size < top:
        size *= 2
    stacked, entries, width, bits = _poisson_tables(size, lam.device)
    lam_n = lam.numpy()
    wu = w.numpy().view(np.uint64)
    g = np.floor(lam_n)
    gi = g.astype(np.int64)
    u = (wu >> np.uint64(32)).astype(np.float64)
    u += 0.5
    u *= 2.0**-32
    at = (gi << bits) + (wu >> np.uint64(64 - bits)).astype(np.int64)
    guide_j, guide_cdf, guide_next = (np.take(col.numpy(), at) for col in entries)
    j = guide_j + (u > guide_cdf)
    left = np.flatnonzero(u > guide_next)
    if len(left):
        j[left] = np.searchsorted(stacked.numpy(), u[left] + g[left]) - gi[left] * width
    d = lam_n - g
    uz = (wu & np.uint64(_M32)).astype(np.float64)
    uz += 0.5
    uz *= 2.0**-32
    p0 = torch.exp(torch.from_numpy(-d)).numpy()
    j += uz > p0
    p = p0 * d
    total = np.add(p0, p, out=p0)
    beyond = uz > total
    j += beyond
    left = np.flatnonzero(beyond)
    if len(left):
        pl, dl, tl, ul = (np.take(v, left) for v in (p, d, total, uz))
        zl = np.zeros_like(pl)
        for step in range(2, _REMAINDER_STEPS + 1):
            pl *= dl
            pl /= step
            tl += pl
            zl += ul > tl
        more = np.flatnonzero(ul > tl)
        step = _REMAINDER_STEPS
        while len(more) and step < 64:
            step += 1
            pm = pl[more] * dl[more] / step
            pl[more] = pm
            tl[more] += pm
            more = more[ul[more] > tl[more]]
            zl[more] += 1
        j[left] += zl
    return torch.from_numpy(j)


def _poisson_counts(lam: Tensor, w: Tensor, top: float) -> Tensor:
    """``_poisson_by_tables``, through numpy for contiguous CPU tensors."""
    if lam.device.type == "cpu" and lam.is_contiguous() and w.is_contiguous():
        return _poisson_by_tables_numpy(lam, w, top)
    return _poisson_by_tables(lam, w, top)


def sample_keys(x: Tensor) -> list[str]:
    """A content digest per sample: seeds derived from it do not depend on
    where the sample sits in the dataset or the batch."""
    flat = x.detach().to("cpu", torch.float32).contiguous().reshape(len(x), -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat]


def sample_seeds(seed: int, name: str, severity: int | str, keys: Sequence[Any]) -> list[int]:
    """One 63-bit seed per sample from (seed, corruption, severity, sample key)."""
    # the hash of the common prefix is computed once and extended per key
    # (the same digests as hashing prefix + key whole)
    base = hashlib.blake2b(f"{seed}/{name}/{severity}/".encode(), digest_size=8)
    seeds = []
    for k in keys:
        h = base.copy()
        h.update(str(k).encode())
        seeds.append(int.from_bytes(h.digest(), "little") >> 1)
    return seeds
