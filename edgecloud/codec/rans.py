"""rANS entropy coding with integer tables, compiled with numba (one call per message).

Tables are integer frequency tables (``cdf``, shape ``(T, L + 1)``, ``cdf[t, L] ==
2**PRECISION``, every symbol at least 1): built once from calibration counts with integer
arithmetic (:func:`build_cdf`), stored in the calibration file and never recomputed from
floats, so encoder and decoder use bit-identical tables on every machine.

Coder: 32-bit state in ``[2**16, 2**32)``, 16-bit little-endian output words, PRECISION-bit
frequencies. The encoder runs over the symbols in reverse and writes its final state last;
the decoder reads words from the end. A payload decodes only if it ends exactly where the
encoder started: anything else is a :class:`BitstreamError`.

``crans`` (context-adaptive, three checkerboard passes per channel):

- pass 1, pixels (even row, even column): one table per channel (context 0);
- pass 2, pixels (odd, odd): context 1 + number (0..3) of *active* diagonal neighbours,
  all from pass 1;
- pass 3, the rest: context 5 + number (0..3) of active 4-neighbours (passes 1 and 2).

A symbol is active when it differs from its channel's most frequent calibration symbol
(``mode``). The decoder computes each context from the symbols it has decoded so far, inside
the compiled loop.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from edgecloud.errors import BitstreamError

PRECISION = 16
CONTEXTS = 9
_TOTAL = 1 << PRECISION
_LOW = np.uint32(1 << 16)  # the state never goes below this
_WORD = np.uint32(16)  # bits per output word

# numba compiles these at first use and caches the machine code on disk (cache=True)
_jit = nb.njit(cache=True, nogil=True)


#: counts are smoothed by 1/SMOOTHING (a symbol never seen in calibration is not ruinous)
SMOOTHING = 10


def build_cdf(counts: np.ndarray) -> np.ndarray:
    """Integer CDF tables ``(T, L + 1)`` int32 from symbol counts ``(T, L)``.

    The counts are smoothed (+1/SMOOTHING each) and shared out over ``2**PRECISION`` in
    proportion (integer arithmetic only); every symbol gets at least 1 and the rounding
    remainder goes to the most frequent symbol of each table.
    """
    counts = np.asarray(counts, dtype=np.int64) * SMOOTHING + 1
    tables, levels = counts.shape
    if levels > _TOTAL // 2:
        raise ValueError(f"{levels} symbols do not fit {PRECISION}-bit tables")
    spare = _TOTAL - levels
    totals = counts.sum(axis=1, keepdims=True)
    freq = 1 + np.where(totals > 0, counts * spare // np.maximum(totals, 1), spare // levels)
    freq[np.arange(tables), freq.argmax(axis=1)] += _TOTAL - freq.sum(axis=1)
    cdf = np.zeros((tables, levels + 1), dtype=np.int32)
    cdf[:, 1:] = np.cumsum(freq, axis=1)
    return cdf


@_jit
def _put(x, start, freq, out, n):
    """Encode one symbol (start, freq) into state ``x``; returns (x, n)."""
    limit = np.uint32((_LOW >> np.uint32(PRECISION)) << _WORD) * freq
    while x >= limit:
        out[n] = np.uint16(x & np.uint32(0xFFFF))
        n += 1
        x >>= _WORD
    q = x // freq
    x = (q << np.uint32(PRECISION)) + (x - q * freq) + start
    return x, n


@_jit
def _get(x, cdf, t, words, pos, guess=-1):
    """Decode one symbol with table ``t`` from state ``x`` (``guess``: the likeliest symbol,
    tried first): (symbol, x, pos); pos < -1: error."""
    slot = x & np.uint32(_TOTAL - 1)
    if guess >= 0 and np.uint32(cdf[t, guess]) <= slot < np.uint32(cdf[t, guess + 1]):
        lo = guess
    else:
        lo, hi = 0, cdf.shape[1] - 1  # binary search: cdf[t, lo] <= slot < cdf[t, hi]
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if np.uint32(cdf[t, mid]) <= slot:
                lo = mid
            else:
                hi = mid
    start = np.uint32(cdf[t, lo])
    freq = np.uint32(cdf[t, lo + 1]) - start
    x = freq * (x >> np.uint32(PRECISION)) + slot - start
    while x < _LOW:
        if pos < 0:
            return lo, x, -2
        x = (x << _WORD) | np.uint32(words[pos])
        pos -= 1
    return lo, x, pos


@_jit
def _finish(x, out, n):
    out[n] = np.uint16(x & np.uint32(0xFFFF))
    out[n + 1] = np.uint16(x >> _WORD)
    return n + 2


@_jit
def _start(words):
    if words.shape[0] < 2:
        return _LOW, -2
    pos = words.shape[0] - 1
    x = (np.uint32(words[pos]) << _WORD) | np.uint32(words[pos - 1])
    return x, pos - 2


@_jit
def _encode_indexed(sym, tab, cdf, out):
    x = _LOW
    n = 0
    for i in range(sym.shape[0] - 1, -1, -1):
        t, s = tab[i], sym[i]
        start = np.uint32(cdf[t, s])
        x, n = _put(x, start, np.uint32(cdf[t, s + 1]) - start, out, n)
    return _finish(x, out, n)


@_jit
def _decode_indexed(words, tab, cdf, sym):
    x, pos = _start(words)
    if pos < -1:
        return False
    for i in range(sym.shape[0]):
        s, x, pos = _get(x, cdf, tab[i], words, pos)
        if pos < -1:
            return False
        sym[i] = s
    return pos == -1 and x == _LOW


@_jit
def _context(active, k, h, w, step):
    """Context of pixel (h, w) of channel row k in pass ``step`` (0, 1, 2) from ``active``,
    the activity of the decoded pixels with a border of zeros (indices shifted by one)."""
    if step == 0:
        return np.int64(0)
    if step == 1:  # the diagonal neighbours (all from pass 1)
        n = active[k, h, w] + active[k, h, w + 2] + active[k, h + 2, w] + active[k, h + 2, w + 2]
        first = np.int64(1)
    else:  # the 4-neighbours (from passes 1 and 2)
        n = active[k, h, w + 1] + active[k, h + 2, w + 1] + active[k, h + 1, w]
        n += active[k, h + 1, w + 2]
        first = np.int64(5)
    # int64 throughout: numba turns mixed signed/unsigned 64-bit arithmetic into floats
    return first + min(np.int64(n), np.int64(3))


@_jit
def _first_column(h, step):
    """Pass ``step`` visits row ``h`` from this column on, every second column (or never)."""
    if step == 0:
        return 0 if h % 2 == 0 else -1
    if step == 1:
        return 1 if h % 2 == 1 else -1
    return (h + 1) % 2


@_jit
def _crans_order(sym, chans, mode, tab, flat, active):
    """Table index and symbol of every pixel of one image ``sym`` (K, H, W), in coding order."""
    height, width = sym.shape[1], sym.shape[2]
    for k in range(sym.shape[0]):
        m = mode[chans[k]]
        for h in range(height):
            for w in range(width):
                active[k, h + 1, w + 1] = 1 if sym[k, h, w] != m else 0
    i = 0
    for step in range(3):
        for k in range(sym.shape[0]):
            base = chans[k] * CONTEXTS
            for h in range(height):
                first = _first_column(h, step)
                if first < 0:
                    continue
                for w in range(first, width, 2):
                    tab[i] = base + _context(active, k, h, w, step)
                    flat[i] = sym[k, h, w]
                    i += 1


@_jit
def _crans_encode(sym, chans, mode, cdf, out):
    """Symbols (N, K, H, W) of the channels ``chans`` -> rANS words (returns their count)."""
    per_image = sym.shape[1] * sym.shape[2] * sym.shape[3]
    tab = np.empty(per_image, dtype=np.int64)
    flat = np.empty(per_image, dtype=np.int64)
    active = np.zeros((sym.shape[1], sym.shape[2] + 2, sym.shape[3] + 2), dtype=np.uint8)
    x = _LOW
    n = 0
    for img in range(sym.shape[0] - 1, -1, -1):
        _crans_order(sym[img], chans, mode, tab, flat, active)
        for j in range(per_image - 1, -1, -1):
            t, s = tab[j], flat[j]
            start = np.uint32(cdf[t, s])
            x, n = _put(x, start, np.uint32(cdf[t, s + 1]) - start, out, n)
    return _finish(x, out, n)


@_jit
def _crans_decode(words, chans, mode, cdf, sym):
    """Inverse of :func:`_crans_encode` into ``sym`` (N, K, H, W); True if the payload was
    exactly one valid stream."""
    x, pos = _start(words)
    if pos < -1:
        return False
    height, width = sym.shape[2], sym.shape[3]
    active = np.zeros((sym.shape[1], height + 2, width + 2), dtype=np.uint8)
    for img in range(sym.shape[0]):
        for step in range(3):
            for k in range(sym.shape[1]):
                c = chans[k]
                m = mode[c]
                base = c * CONTEXTS
                for h in range(height):
                    first = _first_column(h, step)
                    if first < 0:
                        continue
                    for w in range(first, width, 2):
                        t = base + _context(active, k, h, w, step)
                        s, x, pos = _get(x, cdf, t, words, pos, m)
                        if pos < -1:
                            return False
                        sym[img, k, h, w] = s
                        active[k, h + 1, w + 1] = 1 if s != m else 0
    return pos == -1 and x == _LOW


# -- Python entry points --------------------------------------------------------------------


def _words(payload: bytes) -> np.ndarray:
    if len(payload) % 2:
        raise BitstreamError(f"rans payload of {len(payload)} bytes is not whole 16-bit words")
    return np.frombuffer(payload, dtype="<u2").astype(np.uint16)


def _out(count: int) -> np.ndarray:
    # every symbol emits at most one word (PRECISION <= 16), plus the final state
    return np.empty(count + 2, dtype=np.uint16)


def encode_indexed(symbols: np.ndarray, tables: np.ndarray, cdf: np.ndarray) -> bytes:
    """Symbols (any shape) with the table index of each (same shape) -> payload."""
    sym = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
    tab = np.ascontiguousarray(tables, dtype=np.int64).reshape(-1)
    out = _out(sym.size)
    n = _encode_indexed(sym, tab, cdf, out)
    return out[:n].astype("<u2").tobytes()


def decode_indexed(payload: bytes, tables: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_indexed` -> int64 symbols (``tables``' shape)."""
    tab = np.ascontiguousarray(tables, dtype=np.int64).reshape(-1)
    sym = np.empty(tab.size, dtype=np.int64)
    if not _decode_indexed(_words(payload), tab, cdf, sym):
        raise BitstreamError("rans payload is corrupted (does not decode to the declared tensor)")
    return sym.reshape(np.shape(tables))


def crans_encode(sym: np.ndarray, chans: np.ndarray, mode: np.ndarray, cdf: np.ndarray) -> bytes:
    """Symbols (N, K, H, W) of the calibration channels ``chans`` -> context-coded payload."""
    data = np.ascontiguousarray(sym, dtype=np.int64)
    out = _out(data.size)
    n = _crans_encode(data, np.asarray(chans, np.int64), np.asarray(mode, np.int64), cdf, out)
    return out[:n].astype("<u2").tobytes()


def crans_decode(
    payload: bytes, chans: np.ndarray, mode: np.ndarray, cdf: np.ndarray, shape, dtype=np.uint16
) -> np.ndarray:
    """Inverse of :func:`crans_encode` -> symbols of ``shape`` (N, K, H, W), ``dtype``."""
    sym = np.empty(shape, dtype=dtype)
    ok = _crans_decode(
        _words(payload), np.asarray(chans, np.int64), np.asarray(mode, np.int64), cdf, sym
    )
    if not ok:
        raise BitstreamError("crans payload is corrupted (does not decode to the declared tensor)")
    return sym
