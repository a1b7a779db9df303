"""Training images that generalise: the dead-leaves generator, augmented crops of the bundled photos, and the
`training_images` sources `lm4lv train --training_images` trains on."""

import numpy as np
import pytest
from PIL import Image

from lm4lv.processing.augmentation import augmented_crop, dihedral, random_view
from lm4lv.processing.data import (
    BUNDLED_IMAGES,
    CORPUS_DOWNSCALE,
    MIX_SHARES,
    bundled_corpus,
    bundled_image,
    bundled_photos,
    corpus_palette,
    training_images,
    validation_boundary,
)
from lm4lv.processing.dead_leaves import (
    DeadLeavesConfig,
    dead_leaves_dataset,
    dead_leaves_image,
    leaf_coverage,
    power_law_radii,
)


def test_leaf_radii_follow_the_inverse_cube_density():
    radii = power_law_radii(np.random.default_rng(0), 200_000, 1.0, 32.0)
    assert radii.min() >= 1.0 and radii.max() <= 32.0
    # density c * r^-3 on [1, 32]: P(r <= 2) = (1 - 1/4) / (1 - 1/1024)
    assert np.mean(radii <= 2) == pytest.approx(0.75 / (1 - 1 / 1024), abs=0.005)


def test_leaf_coverage_tests_each_shape_against_its_pixels():
    centres = np.array([[8.0, 8.0], [4.0, 12.0]])
    pixels, leaves = leaf_coverage(centres, radii=np.array([3.0, 2.0]), rectangles=np.array([False, True]),
                                   angles=np.array([0.0, 0.0]), aspects=np.array([1.0, 0.5]), side=16)
    disk = {divmod(p, 16) for p in pixels[leaves == 0]}  # (row, column)
    assert disk == {(y, x) for y in range(16) for x in range(16) if (x + 0.5 - 8) ** 2 + (y + 0.5 - 8) ** 2 <= 9}
    rectangle = {divmod(p, 16) for p in pixels[leaves == 1]}
    assert rectangle == {(y, x) for y in range(11, 13) for x in range(2, 6)}  # half sides 2 (x) and 1 (y)


def test_dead_leaves_images_are_seeded_per_index_and_follow_the_config():
    config = DeadLeavesConfig(image_size=24, blur_fraction=0.0)
    first = dead_leaves_image(config, seed=3, index=5)
    assert first.shape == (24, 24, 3) and first.dtype == np.uint8
    assert np.array_equal(first, dead_leaves_image(config, seed=3, index=5))  # (seed, index) alone decide
    assert not np.array_equal(first, dead_leaves_image(config, seed=3, index=6))
    assert not np.array_equal(first, dead_leaves_image(config, seed=4, index=5))
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 20  # many leaves, textures, anti-aliased edges
    palette = np.array([[1.0, 0.0, 0.0]])
    red = dead_leaves_image(DeadLeavesConfig(image_size=24, palette_fraction=1.0, texture_min_radius=1e9,
                                             blur_fraction=0.0), 0, 0, palette)
    assert (red == [255, 0, 0]).all()  # every leaf from the palette, flat


def test_dead_leaves_config_refuses_impossible_settings():
    with pytest.raises(ValueError, match="min_radius <= max_radius"):
        DeadLeavesConfig(min_radius=4, max_radius=2)
    with pytest.raises(ValueError, match="fractions must lie in"):
        DeadLeavesConfig(blur_fraction=1.5)


def test_dead_leaves_dataset_serves_pil_images():
    dataset = dead_leaves_dataset(5, DeadLeavesConfig(image_size=16), seed=1)
    assert len(dataset) == 5 and dataset[0]["image"].size == (16, 16) and dataset[0]["image"].mode == "RGB"
    assert np.array_equal(np.asarray(dataset[2]["image"]), dead_leaves_image(DeadLeavesConfig(image_size=16), 1, 2))


def test_dihedral_gives_the_eight_symmetries_of_the_square():
    image = Image.fromarray(np.arange(3 * 3 * 3, dtype=np.uint8).reshape(3, 3, 3))
    results = [np.asarray(dihedral(image, k)) for k in range(8)]
    assert len({result.tobytes() for result in results}) == 8
    assert np.array_equal(results[0], np.asarray(image))
    assert np.array_equal(results[1], np.rot90(np.asarray(image)))  # a quarter turn counterclockwise
    assert np.array_equal(results[4], np.asarray(image)[:, ::-1])  # the mirror
    with pytest.raises(ValueError, match="k must be in"):
        dihedral(image, 8)


def test_random_view_rescales_within_the_range():
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1))).convert("RGB")
    rng = np.random.default_rng(0)
    for _ in range(20):
        view = np.asarray(random_view(gradient, 32, rng, (2.0, 4.0)), dtype=np.float64)[..., 0]
        slope = (view[:, 28] - view[:, 3]).mean() / 25  # grey levels per crop pixel: the downscale factor
        assert 1.9 <= slope <= 4.1
    with pytest.raises(ValueError, match="cannot give a 32x32 crop"):
        random_view(gradient, 32, rng, (9.0, 10.0))


def test_bundled_photos_stay_left_of_the_validation_crops():
    for name, photo in bundled_photos().items():
        corpus_scale = bundled_image(name, CORPUS_DOWNSCALE)
        assert photo.width == validation_boundary(corpus_scale) * CORPUS_DOWNSCALE
        assert photo.height == bundled_image(name, 1).height


def test_augmented_crops_are_seeded_and_never_flat():
    photos = list(bundled_photos().values())
    crop, source = augmented_crop(photos, 32, seed=0, index=7)
    again, same_source = augmented_crop(photos, 32, seed=0, index=7)
    assert np.array_equal(np.asarray(crop), np.asarray(again)) and source == same_source
    stds = [np.asarray(augmented_crop(photos, 32, 0, i)[0], dtype=np.float32).std() / 255 for i in range(40)]
    assert min(stds) >= 0.02


def test_corpus_palette_samples_every_photo():
    palette = corpus_palette(num_colours=4096, seed=0)
    assert palette.shape == (4096, 3) and 0 <= palette.min() and palette.max() <= 1
    assert len(np.unique(palette, axis=0)) > 1000


def test_training_images_sources():
    corpus = training_images("corpus")
    assert len(corpus) == len(bundled_corpus()["train"]) and corpus.column_names == ["image", "source"]
    mix = training_images("mix", num_images=10, image_size=16, seed=2)
    assert len(mix) == sum(round(10 * share) for share in MIX_SHARES.values())
    sources = mix["source"]
    assert sum(source in BUNDLED_IMAGES for source in sources) == round(10 * MIX_SHARES["augmented"])
    assert sum(source.startswith("dead-leaves") for source in sources) == round(10 * MIX_SHARES["dead_leaves"])
    assert {image.size for image in mix["image"]} == {(16, 16)}
    with pytest.raises(ValueError, match="Unknown training images 'photos'"):
        training_images("photos")
