"""Procedural image-classification tasks generated on the fly (and dense labels).

No image is stored: a task is a small frozen dataclass, and :func:`generate`
turns ``(task, num, seed)`` into uint8 RGB images of shape (num, 3, S, S),
integer labels and, with ``dense=True``, per-pixel label maps. The output is
a pure function of those arguments: every random draw comes from a NumPy
``Generator`` built from ``seed`` (an int, or a tuple such as
``(run_seed, stream, batch_index)`` mixed by NumPy's ``SeedSequence``), and
rendering is element-wise NumPy, which runs in one thread; global RNG state
and ``torch.get_num_threads()`` play no part.

Tasks (``TASKS``)
-----------------
``source`` (12 classes) -- the pretraining task.
    One to three objects of the same primitive on a grey background with a
    faint tint, a linear gradient and sensor noise: dark (grey 10-110) with
    bright objects in 70 % of the images, light (grey 130-230) with dark
    objects in the others, so the trunk learns edges of both contrast
    polarities. The class is the primitive: circle, ellipse, square, bar,
    triangle, hexagon, star, cross, ring, crescent, semicircle or L-shape.
    Everything
    else is a nuisance the network must see through: position, size (radius
    8-27 px), rotation, the aspect of ellipses (1.6-2.5) and bars (2.5-4),
    the colour (random hue), and the fill (flat in 40 % of the objects, else
    stripes, checker, gradient or pixel noise between the colour and a
    contrasting shade). Telling the classes apart takes edges, corners,
    curvature, holes, concavities and elongation, at several scales: the
    vocabulary a detector needs, and close to the demo data written by
    ``tools/make_demo_data.py`` (flat squares, circles, triangles and
    rotated rectangles of three aspects on grey 30).
``near`` (10 classes) -- a target task with a small domain gap.
    The same primitives, renderer and figure/ground layout, with new class
    definitions and a shifted appearance: the class is (primitive, fill) for
    five primitives (circle, square, triangle, star, ring) times two fills
    (flat, stripes), so a fill that was a nuisance now matters; the
    appearance shifts to what ``source`` shows only in its minority: every
    background light (grey 120-210), objects dark, desaturated, larger and at
    most two. A trunk pretrained on ``source`` already encodes the shapes
    and has seen stripes and light backgrounds, so this is near.
``far`` (10 classes) -- a target task with a large domain gap.
    No objects at all: full-frame patterns in a random two-colour palette
    (a light pastel and a saturated ink, unlike ``source``'s grey-and-bright
    statistics). The class is the pattern's structure: parallel lines, grid,
    checker, dot lattice, concentric rings, radial spokes, zigzag lines,
    wavy lines, smooth random blobs or random speckle, each at a random
    orientation, period (5-14 px) and phase, so neither colour nor frequency
    alone decides it. There is no figure/ground and no closed contour: what
    ``source`` teaches (object shape) helps little, so this is far.

Dense variants (``dense=True``) label every pixel: for shape tasks each
object draws its own class and the map holds 0 for background and ``c + 1``
for class ``c`` (``task.dense_classes``); for pattern tasks a random line
splits the image into two regions of different patterns and the map holds
the pattern class.

Generation runs in one thread at about 3,500-4,300 images per CPU second for
the shape tasks and 6,500-9,500 for ``far`` (64 px, batches of 128), some
twenty times what a ConvNeXt-V2-atto trains on per CPU second (about 190), so
on-the-fly pretraining is not data-bound; ``python -m mmflora.datasets``
measures it.
"""
import dataclasses
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .patterns import PATTERNS
from .primitives import FILLS, PRIMITIVES
from .scenes import render_patterns, render_shapes

Seed = Union[int, Sequence[int]]
Range = Tuple[float, float]


@dataclass(frozen=True)
class ShapeTask:
    """Objects on a background; the class is the primitive (and its fill).

    Args:
        name: Task name, recorded in checkpoints' sidecars.
        classes: ``(primitive, fill)`` per class; ``fill='any'`` draws the
            fill per object from ``nuisance_fills``.
        image_size: Side of the square images in pixels. Defaults to 64.
        max_objects: Most objects per image (1-4); the count is uniform in
            1 .. max_objects. Defaults to 3.
        nuisance_fills: Fills drawn for ``'any'``. Defaults to all fills.
        fill_weights: Probabilities of ``nuisance_fills``.
        radius_single: Radius range of a lone object, as a share of
            ``image_size``. Defaults to (0.2, 0.42).
        radius_multi: Radius range when there are several objects (each
            sits in its own image quadrant, so at most 0.25). Defaults to
            (0.13, 0.22).
        background_grey: Range of a dark background's grey level (0-255).
        background_tint: Largest per-channel offset of the background.
        background_gradient: Largest grey change across the image.
        object_saturation: Saturation range of object colours (HSV).
        object_value: Value (brightness) range of object colours (HSV) on a
            dark background.
        light_background_prob: Share of images with a light background and
            dark objects instead (contrast polarity). Defaults to 0.3.
        light_background_grey: Grey-level range of a light background.
        light_object_value: Value range of object colours on a light
            background.
        fill_period: Period range of stripes and checkers in pixels.
        noise_std: Range of the per-image sensor-noise standard deviation.
    """
    name: str
    classes: Tuple[Tuple[str, str], ...]
    image_size: int = 64
    max_objects: int = 3
    nuisance_fills: Tuple[str, ...] = ('flat', 'stripes', 'checker',
                                       'gradient', 'noise')
    fill_weights: Tuple[float, ...] = (0.4, 0.15, 0.15, 0.15, 0.15)
    radius_single: Range = (0.2, 0.42)
    radius_multi: Range = (0.13, 0.22)
    background_grey: Range = (10.0, 110.0)
    background_tint: float = 12.0
    background_gradient: float = 30.0
    object_saturation: Range = (0.35, 1.0)
    object_value: Range = (0.5, 1.0)
    light_background_prob: float = 0.3
    light_background_grey: Range = (130.0, 230.0)
    light_object_value: Range = (0.05, 0.45)
    fill_period: Range = (3.0, 8.0)
    noise_std: Range = (1.0, 6.0)
    kind: str = 'shapes'

    def __post_init__(self):
        for primitive, fill in self.classes:
            if primitive not in PRIMITIVES:
                raise ValueError(
                    f'ShapeTask {self.name!r}: primitive {primitive!r} is '
                    f'unknown; use one of {sorted(PRIMITIVES)}.')
            if fill != 'any' and fill not in FILLS:
                raise ValueError(
                    f'ShapeTask {self.name!r}: fill {fill!r} is unknown; use '
                    f"'any' or one of {sorted(FILLS)}.")
        if not 1 <= self.max_objects <= 4:
            raise ValueError(
                f'ShapeTask {self.name!r}: max_objects={self.max_objects} '
                'must be 1-4 (one object per image quadrant).')
        if self.radius_multi[1] * self.image_size > self.image_size / 4 - 1:
            raise ValueError(
                f'ShapeTask {self.name!r}: radius_multi={self.radius_multi} '
                f'does not fit a quadrant of {self.image_size} px images; keep '
                f'its upper end at most {0.25 - 1 / self.image_size:.3f}.')
        if self.radius_single[1] * self.image_size > self.image_size / 2 - 1:
            raise ValueError(
                f'ShapeTask {self.name!r}: radius_single={self.radius_single} '
                f'does not fit {self.image_size} px images; keep its upper '
                f'end at most {0.5 - 1 / self.image_size:.3f}.')

    @property
    def class_names(self) -> Tuple[str, ...]:
        return tuple(p if f == 'any' else f'{p}-{f}' for p, f in self.classes)

    @property
    def dense_classes(self) -> Tuple[str, ...]:
        return ('background', ) + self.class_names


@dataclass(frozen=True)
class PatternTask:
    """Full-frame patterns; the class is the pattern's structure.

    Args:
        name: Task name, recorded in checkpoints' sidecars.
        classes: Pattern names, keys of ``PATTERNS``.
        image_size: Side of the square images in pixels. Defaults to 64.
        period: Lattice period range in pixels. Defaults to (5, 14).
        sectors: Spoke-count range (integers). Defaults to (6, 16).
        amplitude: Displacement range of zigzag/wavy lines in pixels.
        wavelength: Wavelength range of that displacement in pixels.
        paper_saturation: Saturation range of the light palette colour.
        paper_value: Value range of the light palette colour.
        ink_saturation: Saturation range of the ink colour.
        ink_value: Value range of the ink colour.
        noise_std: Range of the per-image sensor-noise standard deviation.
    """
    name: str
    classes: Tuple[str, ...]
    image_size: int = 64
    period: Range = (5.0, 14.0)
    sectors: Tuple[int, int] = (6, 16)
    amplitude: Range = (1.5, 4.0)
    wavelength: Range = (10.0, 24.0)
    paper_saturation: Range = (0.0, 0.35)
    paper_value: Range = (0.7, 1.0)
    ink_saturation: Range = (0.5, 1.0)
    ink_value: Range = (0.2, 0.9)
    noise_std: Range = (1.0, 6.0)
    kind: str = 'patterns'

    def __post_init__(self):
        unknown = [c for c in self.classes if c not in PATTERNS]
        if unknown:
            raise ValueError(
                f'PatternTask {self.name!r}: patterns {unknown} are unknown; '
                f'use names from {sorted(PATTERNS)}.')

    @property
    def class_names(self) -> Tuple[str, ...]:
        return tuple(self.classes)

    @property
    def dense_classes(self) -> Tuple[str, ...]:
        return self.class_names


Task = Union[ShapeTask, PatternTask]

TASKS = dict(
    source=ShapeTask(
        name='source',
        classes=tuple((p, 'any') for p in PRIMITIVES)),
    near=ShapeTask(
        name='near',
        classes=tuple((p, f) for p in ('circle', 'square', 'triangle', 'star',
                                       'ring') for f in ('flat', 'stripes')),
        max_objects=2,
        radius_single=(0.25, 0.45),
        radius_multi=(0.16, 0.23),
        light_background_prob=1.0,
        light_background_grey=(120.0, 210.0),
        object_saturation=(0.2, 0.7),
        light_object_value=(0.1, 0.55),
        fill_period=(4.0, 9.0)),
    far=PatternTask(name='far', classes=tuple(PATTERNS)),
)


class ProceduralBatch(NamedTuple):
    """Images (N, 3, S, S) uint8 RGB, labels (N, ) int64 and, for dense
    batches, label maps (N, S, S) int64 (else None)."""
    images: torch.Tensor
    labels: torch.Tensor
    masks: Optional[torch.Tensor]


def get_task(name: str, **overrides) -> Task:
    """A task of ``TASKS`` by name, with dataclass fields replaced.

    Example: ``get_task('source', image_size=32)``.
    """
    if name not in TASKS:
        raise KeyError(f'Procedural task {name!r} is unknown; use one of '
                       f'{sorted(TASKS)}.')
    return dataclasses.replace(TASKS[name], **overrides)


def task_to_dict(task: Task) -> dict:
    """The task's parameters as JSON-ready data (for sidecars and logs)."""
    return json_ready(dataclasses.asdict(task))


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [json_ready(v) for v in value]
    return value


def generate(task: Task, num: int, seed: Seed,
             dense: bool = False) -> ProceduralBatch:
    """Generate ``num`` images of ``task``, a pure function of the arguments.

    Labels are balanced: each class appears ``num // num_classes`` or one
    more times, in random order.

    Args:
        task: A :class:`ShapeTask` or :class:`PatternTask` (see ``TASKS``).
        num: Number of images.
        seed: An int, or a sequence of ints mixed by ``SeedSequence`` (e.g.
            ``(run_seed, stream, batch_index)`` for independent streams).
        dense: Also return per-pixel label maps (see the module docstring).
            Defaults to False.

    Returns:
        A :class:`ProceduralBatch`.
    """
    if num < 1:
        raise ValueError(f'generate: num={num} must be at least 1.')
    rng = np.random.default_rng(seed)
    render = render_shapes if task.kind == 'shapes' else render_patterns
    return ProceduralBatch(*render(task, num, rng, dense))


def measure_speed(batch_size: int = 128, repeats: int = 5) -> dict:
    """Images per second of :func:`generate` per task and mode, by the wall
    clock and per CPU second (the latter barely moves when other jobs share
    the cores). Printed and returned as ``{(task, dense): (wall, cpu)}``."""
    rates = {}
    for name, task in TASKS.items():
        for dense in (False, True):
            generate(task, batch_size, 0, dense)
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(repeats):
                generate(task, batch_size, (0, i), dense)
            images = batch_size * repeats
            rates[(name, dense)] = (images / (time.perf_counter() - wall),
                                    images / (time.process_time() - cpu))
            print(f'{name:7s} dense={dense!s:5s} {task.image_size}px: '
                  f'{rates[(name, dense)][0]:6.0f} images/s, '
                  f'{rates[(name, dense)][1]:6.0f} per CPU second (batch {batch_size})')
    return rates
