"""Shape primitives and fills for the procedural object scenes, in NumPy.

Every primitive is a signed distance field in the object's own frame: ``u``
along the object's rotated x axis, ``v`` along its y axis, both in units of
the object's radius, negative inside. All primitives fit in the unit disc, so
an object of radius ``r`` never reaches further than ``r`` pixels from its
centre. Edges are anti-aliased by turning the distance into a one-pixel
coverage ramp.

A *fill* is a pattern value ``t`` in [0, 1] over the object, in the same
frame (so it turns with the object); the renderer mixes the object's colour
and a darker shade of it by ``t``.

Only element-wise NumPy arithmetic is used: NumPy runs it in one thread, so
the pixels do not depend on how many threads torch is allowed.
"""
from typing import Callable, Dict

import numpy as np

# Largest |u|, |v| extent of the square, so that its corners stay in the disc.
_SQUARE_HALF = 0.7
# Half-length and half-thickness of the cross arms.
_ARM_LENGTH, _ARM_HALF = 0.95, 0.28
# Half-length of a bar; its half-width is this over the aspect (>= 2.5).
_BAR_HALF = 0.92


def _box(u: np.ndarray, v: np.ndarray, half_u, half_v) -> np.ndarray:
    """Distance to an axis-aligned box (exact outside along the edges)."""
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    """Distance to a regular polygon inscribed in the unit circle.

    The maximum of the distances to the edge lines is the polygon's distance
    inside and along edges, and a lower bound near corners outside, which is
    enough for one-pixel anti-aliasing.
    """
    apothem = np.float32(np.cos(np.pi / sides))
    dist = None
    for k in range(sides):
        # Edge normals point at angles (2k + 1) pi / sides; the first vertex
        # sits at angle 0, i.e. the polygon points along +u.
        angle = (2 * k + 1) * np.pi / sides
        side = u * np.float32(np.cos(angle)) + v * np.float32(np.sin(angle))
        dist = side if dist is None else np.maximum(dist, side)
    return dist - apothem


def circle(u, v, aspect):
    return np.sqrt(u * u + v * v) - 1.0


def ellipse(u, v, aspect):
    # Radial distance scaled by the short semi-axis: close to the true
    # distance near the boundary for the aspects used here (below 3).
    short = 1.0 / aspect
    return (np.sqrt(u * u + (v / short)**2) - 1.0) * short


def square(u, v, aspect):
    return _box(u, v, _SQUARE_HALF, _SQUARE_HALF)


def bar(u, v, aspect):
    return _box(u, v, _BAR_HALF, _BAR_HALF / aspect)


def triangle(u, v, aspect):
    return _regular_polygon(u, v, 3)


def hexagon(u, v, aspect):
    return _regular_polygon(u, v, 6)


def star(u, v, aspect):
    """Five-pointed star: radius swings between 1 (tips) and 0.45 (valleys)."""
    rho = np.sqrt(u * u + v * v)
    phase = np.arctan2(v, u) * np.float32(5 / (2 * np.pi))
    # Triangle wave in [0, 1]: 0 at a tip, 1 half-way between two tips.
    wave = 2.0 * np.abs(phase - np.round(phase))
    boundary = 1.0 - 0.55 * wave
    # Radial distance shrunk by the boundary's slope (the star's flanks are
    # steep), so the ramp stays about one pixel wide.
    return (rho - boundary) * 0.55


def cross(u, v, aspect):
    return np.minimum(_box(u, v, _ARM_LENGTH, _ARM_HALF),
                      _box(u, v, _ARM_HALF, _ARM_LENGTH))


def ring(u, v, aspect):
    return np.abs(np.sqrt(u * u + v * v) - 0.72) - 0.26


def crescent(u, v, aspect):
    outer = np.sqrt(u * u + v * v) - 1.0
    bite = np.sqrt((u - 0.45)**2 + v * v) - 0.8
    return np.maximum(outer, -bite)


def semicircle(u, v, aspect):
    # Half of a 0.9-radius disc centred at v = 0.4, flat side on v = 0.4.
    return np.maximum(np.sqrt(u * u + (v - 0.4)**2) - 0.9, v - 0.4)


def lshape(u, v, aspect):
    # Two 0.5-wide legs meeting at the corner (-0.7, 0.7).
    leg_v = _box(u + 0.45, v, 0.25, 0.7)
    leg_u = _box(u, v - 0.45, 0.7, 0.25)
    return np.minimum(leg_u, leg_v)


# name -> signed distance field f(u, v, aspect); ``aspect`` (>= 1) is used by
# the elongated primitives only, drawn per object from ``ASPECTS``.
PRIMITIVES: Dict[str, Callable] = {
    f.__name__: f for f in (circle, ellipse, square, bar, triangle, hexagon, star, cross,
                            ring, crescent, semicircle, lshape)}


# Aspect-ratio ranges (long / short side) of the elongated primitives.
ASPECTS: Dict[str, tuple] = dict(ellipse=(1.6, 2.5), bar=(2.5, 4.0))


def _triangle_wave(x: np.ndarray) -> np.ndarray:
    """Period-1 triangle wave in [-1, 1] (exact arithmetic, no libm call)."""
    return 4.0 * np.abs(x - np.floor(x) - 0.5) - 1.0


def fill_flat(u, v, freq, phase, rng):
    return np.zeros_like(u)


def fill_stripes(u, v, freq, phase, rng):
    wave = _triangle_wave(u * freq + phase)
    return np.clip(0.5 + 2.0 * wave, 0.0, 1.0)


def fill_checker(u, v, freq, phase, rng):
    wave = _triangle_wave(u * freq + phase) * _triangle_wave(v * freq + phase)
    return np.clip(0.5 + 4.0 * wave, 0.0, 1.0)


def fill_gradient(u, v, freq, phase, rng):
    return np.clip(0.5 * (u + 1.0), 0.0, 1.0)


def fill_noise(u, v, freq, phase, rng):
    return rng.random(u.shape, dtype=np.float32)


# name -> fill f(u, v, freq, phase, rng) -> t in [0, 1]. ``freq`` (cycles per
# radius) and ``phase`` are one value per object, broadcast over its pixels.
FILLS: Dict[str, Callable] = dict(
    flat=fill_flat,
    stripes=fill_stripes,
    checker=fill_checker,
    gradient=fill_gradient,
    noise=fill_noise)
