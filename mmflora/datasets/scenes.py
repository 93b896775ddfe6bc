"""Rendering of procedural scenes: a task's parameters and a NumPy Generator in,
uint8 RGB images and labels out.

Shape scenes place one object anywhere, or up to four objects one per image
quadrant (so objects never overlap and label maps are unambiguous); each object
is a primitive's signed distance field in its own rotated, scaled frame, with
a one-pixel anti-aliased edge and a fill in that frame. Pattern scenes mix two
palette colours by a full-frame pattern field. The order of the random draws
is fixed, so the pixels are a function of the generator's seed alone.
"""
from typing import Optional, Tuple

import numpy as np
import torch

from .patterns import PATTERNS
from .primitives import ASPECTS, FILLS, PRIMITIVES

_PRIMITIVE_NAMES = tuple(PRIMITIVES)
_FILL_NAMES = tuple(FILLS)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

Rendered = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def hsv_to_rgb(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (arrays of one shape) to RGB in [0, 1], stacked last."""
    channels = []
    for offset in (5.0, 3.0, 1.0):  # R, G, B
        k = np.mod(offset + hue * 6.0, 6.0)
        weight = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
        channels.append(val - val * sat * weight)
    return np.stack(channels, axis=-1).astype(np.float32)


def _uniform(rng: np.random.Generator, bounds, shape) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], shape).astype(np.float32)


def _random_colours(rng, shape, saturation, value) -> np.ndarray:
    """Colours of random hue, shape ``shape + (3, )``, RGB in [0, 1]."""
    return hsv_to_rgb(
        rng.random(shape).astype(np.float32), _uniform(rng, saturation, shape),
        _uniform(rng, value, shape))


def _contrast_shade(colour: np.ndarray, rng) -> np.ndarray:
    """A second fill colour: ``colour`` moved 35-70 % towards black (bright
    colours) or white (dark ones), so a fill shows on any colour."""
    luma = (_LUMA[0] * colour[..., 0] + _LUMA[1] * colour[..., 1] +
            _LUMA[2] * colour[..., 2])  # element-wise, not BLAS: no threads
    target = (luma < 0.5).astype(np.float32)[..., None]
    amount = _uniform(rng, (0.35, 0.7), colour.shape[:-1])[..., None]
    return colour + amount * (target - colour)


def _pixel_grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x, y, each of shape (1, size, size)."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return (coords[None, None, :].repeat(size, 1),
            coords[None, :, None].repeat(size, 2))


def _balanced_labels(rng, num: int, num_classes: int) -> np.ndarray:
    """``num`` labels, every class ``num // num_classes`` or one more times."""
    return rng.permutation(np.arange(num) % num_classes)


def _finish(rgb: np.ndarray, noise, rng) -> torch.Tensor:
    """Add sensor noise to (N, 3, S, S) RGB in [0, 255] and quantise.

    The noise is triangular (the sum of two uniforms) rather than Gaussian:
    it looks the same and draws three times faster.
    """
    std = _uniform(rng, noise, (rgb.shape[0], 1, 1, 1))
    rgb += std * np.float32(6**0.5) * (
        rng.random(rgb.shape, dtype=np.float32) +
        rng.random(rgb.shape, dtype=np.float32) - 1.0)
    return torch.from_numpy(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def _by_group(groups: np.ndarray, names, table, out: np.ndarray, *arrays,
              extra=()):
    """Fill ``out`` group by group: for each value g in ``groups``,
    ``out[sel] = table[names[g]](*[a[sel] for a in arrays], *extra)`` with
    ``sel = groups == g``, so each object runs only its own function."""
    for g in np.unique(groups):
        sel = groups == g
        out[sel] = table[names[g]](*[a[sel] for a in arrays], *extra)
    return out


# --------------------------------------------------------------------------
# Shape scenes
# --------------------------------------------------------------------------
def _layout(task, rng, count: np.ndarray):
    """Where each slot's object goes: a lone object anywhere, else one object
    per randomly chosen quadrant (of side ``image_size // 2``).

    Returns:
        Centres x, y and radii (N, K) in pixels, and the quadrant (N, K) in
        0-3 (x cell + 2 * y cell; unused for lone objects).
    """
    num, slots, size = count.shape[0], task.max_objects, task.image_size
    quadrant = np.argsort(rng.random((num, 4)), axis=1)[:, :slots]
    lone = (count == 1)[:, None]
    radius = np.where(lone, _uniform(rng, task.radius_single, (num, slots)),
                      _uniform(rng, task.radius_multi, (num, slots))) * size
    half = size // 2
    centres = []
    for cell in (quadrant % 2, quadrant // 2):  # x, then y
        low = np.where(lone, 0, cell * half) + radius + 1
        high = np.where(lone, size, cell * half + half) - radius - 1
        centres.append(low + rng.random((num, slots)) * (high - low))
    return (centres[0].astype(np.float32), centres[1].astype(np.float32),
            radius.astype(np.float32), quadrant)


def _draw_objects(obj: dict, window: int, rng) -> Tuple[np.ndarray, np.ndarray]:
    """Coverage (m, W, W) and colour (m, 3, W, W) in [0, 255] of m objects,
    each in its own window of side ``window``; ``obj`` holds per-object
    arrays, centres relative to the window's corner."""
    x, y = _pixel_grid(window)

    def pixel(key):
        return obj[key][:, None, None]

    dx, dy = x - pixel('cx'), y - pixel('cy')
    cos, sin = np.cos(pixel('angle')), np.sin(pixel('angle'))
    r = pixel('radius')
    u, v = (dx * cos + dy * sin) / r, (dy * cos - dx * sin) / r
    distance = _by_group(obj['primitive'], _PRIMITIVE_NAMES, PRIMITIVES,
                         np.empty_like(u), u, v, pixel('aspect'))
    alpha = np.clip(0.5 - distance * r, 0.0, 1.0)
    mix = _by_group(obj['fill'], _FILL_NAMES, FILLS, np.empty_like(u), u, v,
                    pixel('freq'), pixel('phase'), extra=(rng, ))
    first, second = obj['colour'], obj['shade']  # (m, 3)
    paint = (first[:, :, None, None] + mix[:, None] *
             (second - first)[:, :, None, None]) * np.float32(255)
    return alpha, paint


def _background(task, rng, light: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) in [0, 255]: grey + tint + linear gradient."""
    x, y = _pixel_grid(task.image_size)
    num = light.shape[0]
    grey = np.where(light[:, None, None, None],
                    _uniform(rng, task.light_background_grey, (num, 1, 1, 1)),
                    _uniform(rng, task.background_grey, (num, 1, 1, 1)))
    tint = _uniform(rng, (-task.background_tint, task.background_tint),
                    (num, 3, 1, 1))
    amount = _uniform(rng, (-task.background_gradient, task.background_gradient),
                      (num, 1, 1))
    angle = _uniform(rng, (0, 2 * np.pi), (num, 1, 1))
    centred = (x - task.image_size / 2, y - task.image_size / 2)
    ramp = (centred[0] * np.cos(angle) + centred[1] * np.sin(angle)) * (
        amount / task.image_size)
    return grey + tint + ramp[:, None]


def render_shapes(task, num: int, rng: np.random.Generator,
                  dense: bool = False) -> Rendered:
    """Render ``num`` images of a :class:`~.procedural.ShapeTask`.

    Args:
        task: The task.
        num: Number of images.
        rng: Source of every random draw.
        dense: Each object draws its own class and a label map is returned.
            Defaults to False (all objects of an image share its label).

    Returns:
        Images (N, 3, S, S) uint8, labels (N, ) int64, label maps (N, S, S)
        int64 or None.
    """
    size, slots, num_classes = task.image_size, task.max_objects, len(task.classes)
    labels = _balanced_labels(rng, num, num_classes)
    count = rng.integers(1, slots + 1, num)
    slot_class = (rng.integers(0, num_classes, (num, slots)) if dense else
                  labels[:, None].repeat(slots, 1))
    cx, cy, radius, quadrant = _layout(task, rng, count)
    primitive_of = np.array([_PRIMITIVE_NAMES.index(p) for p, _ in task.classes])
    fill_of = np.array([-1 if f == 'any' else _FILL_NAMES.index(f)
                        for _, f in task.classes])
    primitive = primitive_of[slot_class]
    nuisance = np.array([_FILL_NAMES.index(f) for f in task.nuisance_fills])
    weights = np.asarray(task.fill_weights, np.float64)
    drawn_fill = nuisance[rng.choice(len(nuisance), (num, slots),
                                     p=weights / weights.sum())]
    aspect_range = np.array([ASPECTS.get(p, (1.0, 1.0)) for p in _PRIMITIVE_NAMES],
                            np.float32)[primitive]  # (N, K, 2)
    light = rng.random(num) < task.light_background_prob
    value = np.where(light[:, None],
                     _uniform(rng, task.light_object_value, (num, slots)),
                     _uniform(rng, task.object_value, (num, slots)))
    colour = hsv_to_rgb(rng.random((num, slots)).astype(np.float32),
                        _uniform(rng, task.object_saturation, (num, slots)), value)
    params = dict(
        cx=cx, cy=cy, radius=radius,
        angle=_uniform(rng, (0, 2 * np.pi), (num, slots)),
        primitive=primitive,
        fill=np.where(fill_of[slot_class] < 0, drawn_fill, fill_of[slot_class]),
        aspect=aspect_range[..., 0] + rng.random((num, slots)).astype(
            np.float32) * (aspect_range[..., 1] - aspect_range[..., 0]),
        colour=colour,
        shade=_contrast_shade(colour, rng),
        freq=radius / _uniform(rng, task.fill_period, (num, slots)),
        phase=rng.random((num, slots)).astype(np.float32))

    # Draw lone objects on the whole frame and the others on their quadrant,
    # then paste them; objects never overlap, so pasting order is moot, and
    # the label map takes each object's pixels of coverage >= 0.5.
    image = _background(task, rng, light)
    masks = np.zeros((num, size, size), np.int64) if dense else None
    half = size // 2
    for lone in (True, False):
        owner, slot = np.nonzero((np.arange(slots)[None, :] < count[:, None])
                                 & ((count == 1) == lone)[:, None])
        if owner.size == 0:
            continue
        window = size if lone else half
        corner_x = 0 if lone else quadrant[owner, slot] % 2 * half
        corner_y = 0 if lone else quadrant[owner, slot] // 2 * half
        obj = {k: v[owner, slot] for k, v in params.items()}
        obj['cx'] = obj['cx'] - corner_x
        obj['cy'] = obj['cy'] - corner_y
        alpha, paint = _draw_objects(obj, window, rng)
        rows = (corner_y + np.zeros_like(owner))[:, None] + np.arange(window)
        cols = (corner_x + np.zeros_like(owner))[:, None] + np.arange(window)
        where = (owner[:, None, None, None], np.arange(3)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :])
        region = image[where]
        image[where] = region + alpha[:, None] * (paint - region)
        if dense:
            pixels = (owner[:, None, None], rows[:, :, None], cols[:, None, :])
            masks[pixels] = np.where(alpha >= 0.5,
                                     slot_class[owner, slot][:, None, None] + 1,
                                     masks[pixels])
    if dense:
        masks = torch.from_numpy(masks)
    return (_finish(image, task.noise_std, rng),
            torch.from_numpy(labels.astype(np.int64)), masks)


# --------------------------------------------------------------------------
# Pattern scenes
# --------------------------------------------------------------------------
def _pattern_params(task, rng, num: int) -> dict:
    shape, size = (num, 1, 1), task.image_size
    return dict(
        angle=_uniform(rng, (0, np.pi), shape),
        period=_uniform(rng, task.period, shape),
        phase_u=rng.random(shape).astype(np.float32),
        phase_v=rng.random(shape).astype(np.float32),
        cx=_uniform(rng, (0.1 * size, 0.9 * size), shape),
        cy=_uniform(rng, (0.1 * size, 0.9 * size), shape),
        sectors=rng.integers(task.sectors[0], task.sectors[1] + 1,
                             shape).astype(np.float32),
        amplitude=_uniform(rng, task.amplitude, shape),
        wavelength=_uniform(rng, task.wavelength, shape))


def _pattern_fields(task, rng, classes: np.ndarray) -> np.ndarray:
    """(N, S, S) ink values of pattern ``classes[i]`` for image i."""
    x, y = _pixel_grid(task.image_size)
    params = _pattern_params(task, rng, classes.shape[0])
    out = np.empty((classes.shape[0], task.image_size, task.image_size),
                   np.float32)
    for c in np.unique(classes):
        sel = classes == c
        out[sel] = PATTERNS[task.classes[c]](
            x, y, {k: v[sel] for k, v in params.items()}, rng)
    return out


def render_patterns(task, num: int, rng: np.random.Generator,
                    dense: bool = False) -> Rendered:
    """Render ``num`` images of a :class:`~.procedural.PatternTask`.

    Args:
        task: The task.
        num: Number of images.
        rng: Source of every random draw.
        dense: A random line splits each image into the labelled pattern and
            a second, different one, and a label map is returned. Defaults to
            False.

    Returns:
        Images (N, 3, S, S) uint8, labels (N, ) int64, label maps (N, S, S)
        int64 or None.
    """
    num_classes = len(task.classes)
    labels = _balanced_labels(rng, num, num_classes)
    ink = _pattern_fields(task, rng, labels)
    masks = None
    if dense:
        other = (labels + rng.integers(1, num_classes, num)) % num_classes
        other_ink = _pattern_fields(task, rng, other)
        x, y = _pixel_grid(task.image_size)
        size = task.image_size
        px = _uniform(rng, (0.3 * size, 0.7 * size), (num, 1, 1))
        py = _uniform(rng, (0.3 * size, 0.7 * size), (num, 1, 1))
        normal = _uniform(rng, (0, 2 * np.pi), (num, 1, 1))
        side = (x - px) * np.cos(normal) + (y - py) * np.sin(normal) > 0
        ink = np.where(side, other_ink, ink)
        masks = torch.from_numpy(
            np.where(side, other[:, None, None], labels[:, None, None]))
    paper = _random_colours(rng, (num, ), task.paper_saturation, task.paper_value)
    colour = _random_colours(rng, (num, ), task.ink_saturation, task.ink_value)
    image = (paper[:, :, None, None] + ink[:, None] *
             (colour - paper)[:, :, None, None]) * 255.0
    return (_finish(image, task.noise_std, rng),
            torch.from_numpy(labels.astype(np.int64)), masks)
