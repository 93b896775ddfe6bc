"""The procedural tasks: determinism, shapes, balance, label maps, no trivial cues."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmflora.datasets import TASKS, PatternTask, ShapeTask, generate, get_task, task_to_dict

TASK_NAMES = sorted(TASKS)


def assert_same_batch(a, b):
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert (a.masks is None) == (b.masks is None)
    if a.masks is not None:
        assert torch.equal(a.masks, b.masks)


@pytest.mark.parametrize('dense', [False, True])
@pytest.mark.parametrize('name', TASK_NAMES)
def test_same_seed_gives_bit_identical_images_labels_and_masks(name, dense):
    first = generate(TASKS[name], 24, (3, 0, 7), dense)
    second = generate(TASKS[name], 24, (3, 0, 7), dense)
    assert_same_batch(first, second)


@pytest.mark.parametrize('name', TASK_NAMES)
def test_output_ignores_global_rng_state_and_thread_count(name):
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(0)
        np.random.seed(0)
        torch.set_num_threads(1)
        reference = generate(TASKS[name], 16, 5, dense=True)
        torch.manual_seed(123)
        np.random.seed(123)
        torch.rand(10)
        np.random.rand(10)
        torch.set_num_threads(2)
        again = generate(TASKS[name], 16, 5, dense=True)
    finally:
        torch.set_num_threads(threads)
    assert_same_batch(reference, again)


@pytest.mark.parametrize('name', TASK_NAMES)
def test_different_seeds_or_streams_give_different_images(name):
    base = generate(TASKS[name], 8, (0, 0, 1)).images
    assert not torch.equal(base, generate(TASKS[name], 8, (1, 0, 1)).images)
    assert not torch.equal(base, generate(TASKS[name], 8, (0, 1, 1)).images)


@pytest.mark.parametrize('dense', [False, True])
@pytest.mark.parametrize('name', TASK_NAMES)
def test_batches_have_the_documented_shapes_dtypes_and_label_ranges(name, dense):
    task = TASKS[name]
    batch = generate(task, 10, 0, dense)
    size = task.image_size
    assert batch.images.shape == (10, 3, size, size)
    assert batch.images.dtype == torch.uint8
    assert batch.labels.shape == (10, ) and batch.labels.dtype == torch.int64
    assert 0 <= batch.labels.min() and batch.labels.max() < len(task.classes)
    if not dense:
        assert batch.masks is None
        return
    assert batch.masks.shape == (10, size, size) and batch.masks.dtype == torch.int64
    assert 0 <= batch.masks.min() and batch.masks.max() < len(task.dense_classes)


@pytest.mark.parametrize('name', TASK_NAMES)
def test_every_task_has_at_least_ten_balanced_classes(name):
    task = TASKS[name]
    num_classes = len(task.classes)
    assert num_classes >= 10
    assert len(set(task.class_names)) == num_classes
    counts = torch.bincount(generate(task, 10 * num_classes + 3, 1).labels,
                            minlength=num_classes)
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize('name', TASK_NAMES)
def test_mean_colour_alone_does_not_tell_the_classes_apart(name):
    """A nearest-class-mean classifier on the image's mean RGB stays near chance."""
    task = TASKS[name]
    num_classes = len(task.classes)

    def mean_rgb(seed):
        batch = generate(task, 60 * num_classes, seed)
        return batch.images.float().mean((2, 3)), batch.labels

    features, labels = mean_rgb(0)
    centroids = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    test_features, test_labels = mean_rgb(1)
    predicted = torch.cdist(test_features, centroids).argmin(1)
    accuracy = (predicted == test_labels).float().mean().item()
    assert accuracy < 2.5 / num_classes


def test_source_mixes_both_contrast_polarities_and_near_is_light_only():
    def light_share(name, **overrides):
        """Share of images whose background (the corner pixel, never covered:
        objects fit in discs inside the image) is lighter than grey 120."""
        task = get_task(name, noise_std=(0.0, 0.0), background_tint=0.0,
                        background_gradient=0.0, **overrides)
        corners = generate(task, 200, 8).images[:, 0, 0, 0].float()
        return (corners > 120).float().mean()

    assert 0.2 < light_share('source') < 0.4  # light_background_prob = 0.3
    assert light_share('near') == 1.0
    assert light_share('source', light_background_prob=0.0) == 0.0


def test_shape_label_maps_cover_the_drawn_objects_and_nothing_else():
    """With a flat noise-free background, pixels two or more pixels away from
    any labelled pixel are the background (but for the faint tips of thin
    parts, whose coverage stays below the 0.5 labelling threshold), and
    labelled pixels are not."""
    task = get_task('source', noise_std=(0.0, 0.0), background_tint=0.0,
                    background_gradient=0.0)
    batch = generate(task, 32, 2, dense=True)
    labelled = (batch.masks > 0).float()[:, None]
    far = F.max_pool2d(labelled, 5, stride=1, padding=2)[:, 0] == 0
    images = batch.images.int()
    background = images[:, :, :1, :1]  # checked below to be far from objects
    assert far[:, 0, 0].all()
    differs = (images != background).any(1)
    assert differs[far].float().mean() < 1e-3
    assert differs[batch.masks > 0].float().mean() > 0.95
    assert labelled.mean() > 0.02  # objects are there at all


def test_dense_shape_maps_mix_classes_within_an_image():
    batch = generate(TASKS['source'], 64, 3, dense=True)
    per_image = [len(torch.unique(m[m > 0])) for m in batch.masks]
    assert max(per_image) >= 2  # each object draws its own class
    assert min(per_image) >= 1


def test_dense_pattern_maps_split_the_image_into_the_label_and_one_other_pattern():
    batch = generate(TASKS['far'], 40, 6, dense=True)
    for mask, label in zip(batch.masks, batch.labels):
        values = torch.unique(mask).tolist()
        assert label.item() in values
        assert len(values) == 2


def test_task_parameters_are_json_ready_and_named():
    record = task_to_dict(TASKS['source'])
    assert record['name'] == 'source' and record['kind'] == 'shapes'
    assert record['classes'][0] == ['circle', 'any']
    assert task_to_dict(TASKS['far'])['kind'] == 'patterns'


def test_bad_task_definitions_are_refused_with_the_name_and_the_fix():
    with pytest.raises(ValueError, match="'blob'.*use one of"):
        ShapeTask(name='t', classes=(('blob', 'any'), ))
    with pytest.raises(ValueError, match="fill 'plaid'"):
        ShapeTask(name='t', classes=(('circle', 'plaid'), ))
    with pytest.raises(ValueError, match='radius_multi'):
        ShapeTask(name='t', classes=(('circle', 'any'), ), radius_multi=(0.1, 0.3))
    with pytest.raises(ValueError, match='radius_single'):
        ShapeTask(name='t', classes=(('circle', 'any'), ), radius_single=(0.2, 0.5))
    with pytest.raises(ValueError, match=r"\['tartan'\]"):
        PatternTask(name='t', classes=('lines', 'tartan'))
    with pytest.raises(KeyError, match="'nearest'"):
        get_task('nearest')
