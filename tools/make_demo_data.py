"""Write small synthetic datasets in the COCO, ADE20K and DOTA on-disk formats.

The demo configs under ``configs/demo/`` train on these. Every image is a plain,
lightly noisy background with a few non-overlapping coloured shapes; a shape's class
decides both its geometry and its hue, so a small network can learn it in a few
hundred CPU iterations. The output is a pure function of ``--seed`` and the
size options, and takes seconds to write::

    python tools/make_demo_data.py                      # data/demo/{coco,ade,dota}
    python tools/make_demo_data.py --datasets dota --num-train 64 --img-size 128

Layouts (the same as upstream, so only ``data_root`` and ``metainfo`` change)::

    coco/annotations/instances_{train2017,val2017}.json   bbox + polygon masks
    coco/{train2017,val2017}/*.jpg
    ade/images/{training,validation}/*.jpg
    ade/annotations/{training,validation}/*.png            0 unlabelled, 1 background, 2.. shapes
    dota/{train,val}/images/*.png
    dota/{train,val}/annfiles/*.txt                        x1 y1 x2 y2 x3 y3 x4 y4 class difficulty
"""
import argparse
import json
import os
import os.path as osp
import time

import cv2
import numpy as np

# Axis-aligned shapes for instance detection/segmentation and semantic segmentation.
# Each class has its own geometry and base colour (RGB); instances jitter the colour.
SHAPE_CLASSES = ('square', 'circle', 'triangle')
SHAPE_COLOURS = ((220, 60, 50), (50, 190, 70), (60, 90, 225))

# Rotated rectangles for oriented detection: the class is the aspect ratio and the hue.
ROTATED_CLASSES = ('bar', 'slab', 'tile')
ROTATED_ASPECTS = ((3.0, 4.0), (1.7, 2.2), (1.0, 1.25))
ROTATED_COLOURS = ((230, 200, 40), (40, 200, 210), (180, 60, 200))

# Background grey level (RGB); shapes are drawn on it.
BACKGROUND_GREY = 30.0

# Label-map values written for the ADE-like set (ADE20K convention: 0 is "other", ignored).
SEG_CLASSES = ('background', ) + SHAPE_CLASSES


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain dark-grey field with light Gaussian noise, as float RGB in [0, 255].

    Plain on purpose: the demo backbone is an untrained ConvNeXt, whose LayerNorms scale
    every pixel's feature vector to the same length, so a textured background would be
    as loud as the shapes and the R-CNN heads would not learn in a few hundred steps.
    """
    return BACKGROUND_GREY + rng.normal(0.0, 3.0, size=(size, size, 3))


def jitter_colour(rng: np.random.Generator, base) -> np.ndarray:
    return np.clip(np.asarray(base, dtype=np.float64) + rng.uniform(-30, 30, 3), 0, 255)


def shape_polygon(rng: np.random.Generator, cls: int, cx: float, cy: float,
                  half: float) -> np.ndarray:
    """Outline (N, 2) of one axis-aligned shape of class ``cls`` centred at (cx, cy)."""
    name = SHAPE_CLASSES[cls]
    if name == 'square':
        hw, hh = half, half * rng.uniform(0.75, 1.0)
        return np.array([[cx - hw, cy - hh], [cx + hw, cy - hh], [cx + hw, cy + hh],
                         [cx - hw, cy + hh]])
    if name == 'circle':
        t = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
        return np.stack([cx + half * np.cos(t), cy + half * np.sin(t)], axis=1)
    # An upward or downward triangle.
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return np.array([[cx, cy - sign * half], [cx + half, cy + sign * half],
                     [cx - half, cy + sign * half]])


def rotated_rect(rng: np.random.Generator, cls: int, cx: float, cy: float,
                 half: float) -> np.ndarray:
    """Four corners (4, 2), clockwise in image coordinates, of a rotated rectangle."""
    aspect = rng.uniform(*ROTATED_ASPECTS[cls])
    w, h = 2 * half, 2 * half / aspect
    theta = rng.uniform(-np.pi / 2, np.pi / 2)
    c, s = np.cos(theta), np.sin(theta)
    local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.array([cx, cy])


def place(rng: np.random.Generator, size: int, count: int, min_half: float,
          max_half: float) -> list:
    """Centres and radii of up to ``count`` discs that fit in the image and do not touch."""
    discs = []
    for _ in range(count * 20):
        if len(discs) == count:
            break
        half = rng.uniform(min_half, max_half)
        cx, cy = rng.uniform(half + 2, size - half - 2, size=2)
        if all(np.hypot(cx - x, cy - y) > half + r + 3 for x, y, r in discs):
            discs.append((cx, cy, half))
    return discs


def render(img: np.ndarray, poly: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Fill ``poly`` on ``img`` with a flat colour; returns the boolean pixel mask."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    img[mask.astype(bool)] = colour
    return mask.astype(bool)


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise over the whole image and convert RGB float -> BGR uint8 for cv2."""
    img = img + rng.normal(0.0, 2.0, size=img.shape)
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def shape_scene(rng: np.random.Generator, size: int):
    """An image with 1-4 shapes: (BGR image, [(class, polygon, mask), ...])."""
    img = background(rng, size)
    objects = []
    for cx, cy, half in place(rng, size, int(rng.integers(1, 5)), size * 0.08, size * 0.2):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        poly = shape_polygon(rng, cls, cx, cy, half)
        mask = render(img, poly, jitter_colour(rng, SHAPE_COLOURS[cls]))
        objects.append((cls, poly, mask))
    return finish(img, rng), objects


def make_coco(out_dir: str, rng: np.random.Generator, splits: dict, size: int) -> None:
    """COCO instances: ``annotations/instances_<split>.json`` and ``<split>/*.jpg``."""
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(SHAPE_CLASSES)]
    ann_id = 1
    for split, num in splits.items():
        split_dir = f'{split}2017'
        os.makedirs(osp.join(out_dir, split_dir), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img, objects = shape_scene(rng, size)
            file_name = f'{split}_{i:05d}.jpg'
            cv2.imwrite(osp.join(out_dir, split_dir, file_name), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=i + 1, file_name=file_name, width=size, height=size))
            for cls, poly, mask in objects:
                ys, xs = np.nonzero(mask)
                x0, y0 = float(xs.min()), float(ys.min())
                bbox = [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]
                annotations.append(
                    dict(id=ann_id, image_id=i + 1, category_id=cls + 1, iscrowd=0,
                         bbox=[round(v, 2) for v in bbox], area=float(mask.sum()),
                         segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]]))
                ann_id += 1
        with open(osp.join(out_dir, 'annotations', f'instances_{split_dir}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def make_ade(out_dir: str, rng: np.random.Generator, splits: dict, size: int) -> None:
    """ADE20K layout: ``images/<split>/*.jpg`` and ``annotations/<split>/*.png`` label maps."""
    names = dict(train='training', val='validation')
    for split, num in splits.items():
        img_dir = osp.join(out_dir, 'images', names[split])
        ann_dir = osp.join(out_dir, 'annotations', names[split])
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            img, objects = shape_scene(rng, size)
            label = np.ones((size, size), np.uint8)  # 1 = background (0 stays "other")
            for cls, _, mask in objects:
                label[mask] = cls + 2
            stem = f'ADE_{split}_{i:08d}'
            cv2.imwrite(osp.join(img_dir, stem + '.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, stem + '.png'), label)


def make_dota(out_dir: str, rng: np.random.Generator, splits: dict, size: int) -> None:
    """DOTA 1.0 layout: ``<split>/images/*.png`` and ``<split>/annfiles/*.txt``."""
    for split, num in splits.items():
        img_dir = osp.join(out_dir, split, 'images')
        ann_dir = osp.join(out_dir, split, 'annfiles')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(num):
            img = background(rng, size)
            lines = []
            for cx, cy, half in place(rng, size, int(rng.integers(1, 6)), size * 0.08,
                                      size * 0.2):
                cls = int(rng.integers(len(ROTATED_CLASSES)))
                corners = rotated_rect(rng, cls, cx, cy, half)
                render(img, corners, jitter_colour(rng, ROTATED_COLOURS[cls]))
                coords = ' '.join(f'{v:.1f}' for v in corners.reshape(-1))
                lines.append(f'{coords} {ROTATED_CLASSES[cls]} 0\n')
            stem = f'P{i:04d}__1024__0___0' if split == 'train' else f'V{i:04d}__1024__0___0'
            cv2.imwrite(osp.join(img_dir, stem + '.png'), finish(img, rng))
            with open(osp.join(ann_dir, stem + '.txt'), 'w') as f:
                f.writelines(lines)


MAKERS = dict(coco=make_coco, ade=make_ade, dota=make_dota)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='data/demo',
                        help='root folder; each dataset goes to <out-dir>/<name>')
    parser.add_argument('--datasets', nargs='+', choices=sorted(MAKERS),
                        default=['coco', 'ade', 'dota'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=160, help='training images per dataset')
    parser.add_argument('--num-val', type=int, default=40, help='validation images per dataset')
    parser.add_argument('--img-size', type=int, default=160, help='side of the square images')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.img_size < 64:
        raise ValueError(f'--img-size {args.img_size} is too small for the shapes; use >= 64')
    splits = dict(train=args.num_train, val=args.num_val)
    for offset, name in enumerate(sorted(MAKERS)):
        if name not in args.datasets:
            continue
        start = time.time()
        # One stream per dataset, so choosing a subset does not change the others.
        rng = np.random.default_rng([args.seed, offset])
        out_dir = osp.join(args.out_dir, name)
        MAKERS[name](out_dir, rng, splits, args.img_size)
        print(f'[make_demo_data] {name}: {args.num_train} train + {args.num_val} val images '
              f'of {args.img_size}x{args.img_size} in {out_dir} ({time.time() - start:.1f}s)')


if __name__ == '__main__':
    main()
