"""Full-frame procedural patterns (the far task's classes), in NumPy.

A pattern is a value field ``p`` in [0, 1] over the whole image (1 = ink);
the task mixes two palette colours by it. Each field takes pixel coordinates
``x``, ``y`` of shape (1, H, W) and per-image parameters of shape (n, 1, 1):

``angle``
    Orientation of the pattern's lattice (radians).
``period``
    Lattice period in pixels.
``phase_u``, ``phase_v``
    Lattice offsets in periods.
``cx``, ``cy``
    Centre of the radial patterns (pixels).
``sectors``
    Spoke count (used by ``spokes``).
``amplitude``, ``wavelength``
    Displacement (pixels) and its wavelength (pixels) for ``zigzag`` and
    ``waves``.

Lines are drawn with a one-pixel anti-aliased edge from their distance in
pixels, so no class is told apart by aliasing artefacts. Only element-wise
NumPy is used (single-threaded, hence independent of torch's thread count).
"""
from typing import Callable, Dict

import numpy as np

# Share of one period covered by a line (lines, grid, zigzag, waves, rings).
_LINE_DUTY = 0.3
# Dot radius as a share of the period.
_DOT_RADIUS = 0.3
# Number of plane waves summed for ``blobs``.
_BLOB_WAVES = 6


def _ink(distance: np.ndarray) -> np.ndarray:
    """Coverage of pixels ``distance`` pixels outside a stroke (<= 0 inside)."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _frame(x, y, prm):
    """Coordinates along (``w``) and across (``q``) the pattern's lattice."""
    cos, sin = np.cos(prm['angle']), np.sin(prm['angle'])
    return x * cos + y * sin, -x * sin + y * cos


def _line_distance(w, period, phase):
    """Distance (pixels) to the nearest line of a family ``w = k * period``."""
    offset = w / period + phase
    return (np.abs(offset - np.round(offset)) - 0.5 * _LINE_DUTY) * period


def lines(x, y, prm, rng):
    w, _ = _frame(x, y, prm)
    return _ink(_line_distance(w, prm['period'], prm['phase_u']))


def grid(x, y, prm, rng):
    w, q = _frame(x, y, prm)
    dist_w = _line_distance(w, prm['period'], prm['phase_u'])
    dist_q = _line_distance(q, prm['period'], prm['phase_v'])
    return _ink(np.minimum(dist_w, dist_q) + 0.1 * prm['period'])


def checker(x, y, prm, rng):
    w, q = _frame(x, y, prm)

    def wave(c, phase):  # triangle wave in [-1, 1], slope 4 / period
        offset = c / prm['period'] + phase
        return 4.0 * np.abs(offset - np.floor(offset) - 0.5) - 1.0

    # The product changes sign on the cell borders; scaled to pixels there.
    product = wave(w, prm['phase_u']) * wave(q, prm['phase_v'])
    return np.clip(0.5 + product * prm['period'] * 0.25, 0.0, 1.0)


def dots(x, y, prm, rng):
    w, q = _frame(x, y, prm)
    period = prm['period']
    du = w / period + prm['phase_u']
    dv = q / period + prm['phase_v']
    du = (du - np.round(du)) * period
    dv = (dv - np.round(dv)) * period
    return _ink(np.sqrt(du * du + dv * dv) - _DOT_RADIUS * period)


def rings(x, y, prm, rng):
    rho = np.sqrt((x - prm['cx'])**2 + (y - prm['cy'])**2)
    return _ink(_line_distance(rho, prm['period'], prm['phase_u']))


def spokes(x, y, prm, rng):
    dx, dy = x - prm['cx'], y - prm['cy']
    rho = np.sqrt(dx * dx + dy * dy)
    turns = np.arctan2(dy, dx) * np.float32(1 / (2 * np.pi))
    offset = turns * prm['sectors'] + prm['phase_u']
    # Half the sectors are ink; arc length converts the angle to pixels.
    arc = (np.abs(offset - np.round(offset)) - 0.25) * (
        rho * np.float32(2 * np.pi) / prm['sectors'])
    return _ink(arc)


def zigzag(x, y, prm, rng):
    w, q = _frame(x, y, prm)
    offset = q / prm['wavelength'] + prm['phase_v']
    tri = 4.0 * np.abs(offset - np.floor(offset) - 0.5) - 1.0
    dist = _line_distance(w + prm['amplitude'] * tri, prm['period'], prm['phase_u'])
    return _ink(dist * 0.7)  # the slanted strokes are thinner across


def waves(x, y, prm, rng):
    w, q = _frame(x, y, prm)
    shift = prm['amplitude'] * np.sin(
        np.float32(2 * np.pi) * (q / prm['wavelength'] + prm['phase_v']))
    dist = _line_distance(w + shift, prm['period'], prm['phase_u'])
    return _ink(dist * 0.7)


def blobs(x, y, prm, rng):
    """Threshold of a smooth random field: irregular blobs, no lattice."""
    n = prm['angle'].shape[0]
    field = np.zeros((n, ) + x.shape[1:], np.float32)
    for _ in range(_BLOB_WAVES):
        angle = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
        scale = rng.uniform(12, 30, (n, 1, 1)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
        field += np.cos((x * np.cos(angle) + y * np.sin(angle)) *
                        (np.float32(2 * np.pi) / scale) + phase)
    return np.clip(0.5 + 1.5 * field, 0.0, 1.0)


def speckle(x, y, prm, rng):
    """Random binary cells of 2-4 pixels: texture without any structure."""
    n, size = prm['angle'].shape[0], x.shape[-1]
    cell = rng.integers(2, 5, (n, 1))
    noise = rng.random((n, size, size), dtype=np.float32) < 0.5
    index = np.arange(size)[None, :] // cell  # (n, size): pixel -> cell
    picked = noise[np.arange(n)[:, None, None], index[:, :, None],
                   index[:, None, :]]
    return picked.astype(np.float32)


# name -> field f(x, y, params, rng) -> (n, H, W) values in [0, 1].
PATTERNS: Dict[str, Callable] = {
    f.__name__: f for f in (lines, grid, checker, dots, rings, spokes, zigzag, waves, blobs,
                            speckle)}
