"""Datasets for LM4LV: paired (degraded, clean, task) examples from any `datasets` image dataset or image folder,
on the fly or streaming, a fixed evaluation set on disk, and the bundled default corpus. Every image that enters a
dataset goes through the image policy of `lm4lv.processing.images` (`load_rgb_image`); dataset builders skip
unreadable files with a warning that names each one, so one bad file never stops a build.
"""

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .augmentation import augmented_crop
from .dead_leaves import DeadLeavesConfig, dead_leaves_dataset
from .degradations import TASKS, degrade, epoch_seed, sample_seed, tensor_to_pil
from .images import ImageLoadError, load_rgb_image, to_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# The scikit-image sample images we may redistribute, with their licenses (from scikit-image's `skimage.data`
# docstrings). Images with unclear terms (e.g. the Middlebury stereo pair) are left out.
BUNDLED_IMAGES = {
    "astronaut.png": "Public domain (NASA Great Images database)",
    "chelsea.png": "CC0 (photographer Stefan van der Walt)",
    "coffee.png": "CC0 (photographer Rachel Michetti)",
    "hubble_deep_field.jpg": "Public domain (NASA)",
    "ihc.png": "No known copyright restrictions (immunohistochemistry, scikit-image)",
    "retina.jpg": "CC0 1.0 Universal Public Domain Dedication",
    "rocket.jpg": "Public domain (SpaceX)",
    "brick.png": "CC0 (CC0Textures, Bricks25)",
    "camera.png": "CC0 (photographer Lav Varshney)",
    "coins.png": "No known copyright restrictions (Brooklyn Museum via scikit-image)",
    "grass.png": "CC0 (CC0Textures)",
    "gravel.png": "CC0 (CC0Textures, Gravel04)",
}
CORPUS_DOWNSCALE = 2  # the bundled corpus's scale: every photo downscaled 2x (bicubic) before it is cut into crops
AUGMENTED_DOWNSCALES = (1.0, 4.0)  # `augmented_corpus` draws its scale log-uniformly between these factors


# ---------------------------------------------------------------------------------------------- bundled corpus


def bundled_image_dir() -> str:
    """Folder of scikit-image's bundled sample images."""
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


def bundled_image(file_name: str, downscale: int = CORPUS_DOWNSCALE) -> Image.Image:
    """One of `BUNDLED_IMAGES` as RGB, downscaled by `downscale` as the bundled corpus uses it."""
    if file_name not in BUNDLED_IMAGES:
        raise ValueError(f"{file_name!r} is not a bundled image; choose from {sorted(BUNDLED_IMAGES)}")
    image = load_rgb_image(os.path.join(bundled_image_dir(), file_name))
    if downscale > 1:
        image = image.resize((image.width // downscale, image.height // downscale), Image.BICUBIC)
    return image


def validation_boundary(image: Image.Image, validation_fraction: float = 0.2) -> int:
    """The column where a bundled image's validation part starts (its right `validation_fraction`)."""
    return int(image.width * (1 - validation_fraction))


def validation_strip(file_name: str = "coffee.png", downscale: int = CORPUS_DOWNSCALE,
                     validation_fraction: float = 0.2):
    """The whole held-out part of one bundled image (never seen in training), at the corpus's scale: a picture to
    restore tile by tile and look at, not only 32x32 crops."""
    image = bundled_image(file_name, downscale)
    return image.crop((validation_boundary(image, validation_fraction), 0, image.width, image.height))


def bundled_corpus(crop_size: int = 32, downscale: int = CORPUS_DOWNSCALE, validation_fraction: float = 0.2,
                   min_std: float = 0.02, train_stride: int | None = None):
    r"""
    The default corpus: crops of the scikit-image sample images in `BUNDLED_IMAGES`, with a fixed split.

    Each image is downscaled by `downscale` (so a crop holds more than texture), then its left
    `1 - validation_fraction` columns are cut into non-overlapping `crop_size` crops for training and its right
    columns into crops for validation, so validation crops are never seen in training. Training crops overlap by
    half (`train_stride`, default `crop_size // 2`); validation crops do not overlap. Flat crops (pixel standard
    deviation below `min_std`, e.g. the black sky around a rocket) are dropped: they teach and measure nothing.

    Returns:
        `datasets.DatasetDict` with `train` and `validation` splits; columns `image` (PIL RGB), `source`, `license`.
    """
    import datasets

    splits = {"train": [], "validation": []}
    for file_name, license_text in BUNDLED_IMAGES.items():
        image = bundled_image(file_name, downscale)
        boundary = validation_boundary(image, validation_fraction)
        for split, (left, right) in (("train", (0, boundary)), ("validation", (boundary, image.width))):
            stride = (train_stride or crop_size // 2) if split == "train" else crop_size
            for top in range(0, image.height - crop_size + 1, stride):
                for x in range(left, right - crop_size + 1, stride):
                    crop = image.crop((x, top, x + crop_size, top + crop_size))
                    if np.asarray(crop, dtype=np.float32).std() / 255 < min_std:
                        continue
                    splits[split].append({"image": crop, "source": file_name, "license": license_text})
    features = datasets.Features(
        {"image": datasets.Image(), "source": datasets.Value("string"), "license": datasets.Value("string")}
    )
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(rows, features=features) for split, rows in splits.items()}
    )


def bundled_photos(downscale: int = 1, validation_fraction: float = 0.2) -> dict:
    """The training part of every bundled image, by file name: its columns left of the corpus's validation boundary
    (`validation_boundary` at the corpus's scale, 2), at `downscale` (1: full resolution), for crops at other scales
    than the corpus's. Nothing of it lies in the validation crops."""
    photos = {}
    for file_name in BUNDLED_IMAGES:
        boundary = validation_boundary(bundled_image(file_name, CORPUS_DOWNSCALE), validation_fraction)
        image = bundled_image(file_name, downscale)
        photos[file_name] = image.crop((0, 0, boundary * CORPUS_DOWNSCALE // downscale, image.height))
    return photos


def corpus_palette(num_colours: int = 65536, seed: int = 0) -> np.ndarray:
    """`(num_colours, 3)` colours in [0, 1]: pixels of the bundled photos' training parts at the corpus's scale, each
    from a photo drawn uniformly (so that no large photo dominates the colours) (for the dead-leaves generator)."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(photo, dtype=np.float32).reshape(-1, 3) / 255
              for photo in bundled_photos(CORPUS_DOWNSCALE).values()]
    sources = rng.integers(0, len(photos), num_colours)
    return np.stack([photos[source][rng.integers(len(photos[source]))] for source in sources])


def augmented_corpus(num_images: int, crop_size: int = 32, seed: int = 0,
                     downscale_range: tuple[float, float] = AUGMENTED_DOWNSCALES):
    r"""
    `num_images` augmented crops of the bundled photos' training parts as a `datasets.Dataset` (columns `image`,
    `source`, `license`; cached by `datasets`): each photo rescaled by a factor drawn log-uniformly in
    `downscale_range` (the corpus's own scale is 2), cropped at random and turned by one of the 8 flips and
    90-degree rotations (`augmentation.augmented_crop`; crop `i` depends on `(seed, i)` alone). Flat crops are drawn
    again, as the corpus drops them.
    """
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "source": datasets.Value("string"), "license": datasets.Value("string")}
    )
    return datasets.Dataset.from_generator(
        generate_augmented_crops, features=features,
        gen_kwargs={"count": num_images, "crop_size": crop_size, "seed": seed, "downscale_range": downscale_range},
    )


def generate_augmented_crops(count: int, crop_size: int, seed: int, downscale_range: tuple[float, float]):
    """The rows of `augmented_corpus` (its generator)."""
    names = list(BUNDLED_IMAGES)
    photos = list(bundled_photos().values())
    for index in range(count):
        crop, source = augmented_crop(photos, crop_size, seed, index, downscale_range)
        yield {"image": crop, "source": names[source], "license": BUNDLED_IMAGES[names[source]]}


# the training images LM4LV and its vision module can be trained on besides a user's dataset (`training_images`)
TRAINING_IMAGES = ("corpus", "augmented", "dead_leaves", "mix")
# the default mix: shares of `training_images("mix", n)` by source
MIX_SHARES = {"augmented": 0.5, "dead_leaves": 0.5}


def training_images(source: str = "corpus", num_images: int = 20000, image_size: int = 32, seed: int = 0):
    r"""
    Training images of the offline default, as a `datasets.Dataset` with an `image` and a `source` column.

    Args:
        source (`str`): One of `TRAINING_IMAGES`: `"corpus"`, the bundled corpus's training crops (`num_images` and
            `seed` unused); `"augmented"`, `augmented_corpus` crops of the same photos' training parts at random
            scales and in the 8 orientations; `"dead_leaves"`, procedural dead-leaves images
            (`lm4lv.processing.dead_leaves`) coloured from the photos' training parts (`corpus_palette`); `"mix"`,
            both of the last two by `MIX_SHARES`.
        num_images (`int`): How many augmented or generated images.
        image_size (`int`): Their side (the vision module's input size).
        seed (`int`): Seed of the crops and the generated images (each image depends on `(seed, index)` alone).
    """
    import datasets

    if source not in TRAINING_IMAGES:
        raise ValueError(f"Unknown training images {source!r}; choose from {list(TRAINING_IMAGES)}")
    if source == "corpus":
        return bundled_corpus(image_size)["train"].select_columns(["image", "source"])
    if source == "augmented":
        return augmented_corpus(num_images, image_size, seed).select_columns(["image", "source"])
    if source == "dead_leaves":
        return dead_leaves_dataset(num_images, DeadLeavesConfig(image_size=image_size, max_radius=image_size), seed,
                                   corpus_palette(seed=seed))
    counts = {name: round(num_images * share) for name, share in MIX_SHARES.items()}
    return datasets.concatenate_datasets(
        [training_images(name, count, image_size, seed) for name, count in counts.items() if count])


# ---------------------------------------------------------------------------------------------- image folders


def image_folder_dataset(folder: str):
    r"""
    A `datasets.Dataset` of every readable image under `folder` (recursively), with columns `image` and `path`.
    The dataset holds the paths: each image is decoded when it is accessed (and converted by the image policy where
    it is used), so memory does not grow with the folder. Every file is decoded once here to check it; unreadable
    files are skipped with a warning naming each, and `dataset.info.description` lists them too.
    """
    import datasets

    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    readable, skipped = [], []
    for path in paths:
        try:
            load_rgb_image(path)  # decoded to check it, then dropped
            readable.append(path)
        except ImageLoadError as error:
            skipped.append(str(error))
            warnings.warn(f"Skipping {error}", stacklevel=2)
    if not readable:
        raise ValueError(f"No readable images in {folder} (skipped: {skipped or 'none found'})")
    features = datasets.Features({"image": datasets.Image(), "path": datasets.Value("string")})
    info = datasets.DatasetInfo(
        description=f"Images from {folder}; skipped unreadable files: {skipped}", features=features
    )
    return datasets.Dataset.from_dict({"image": readable, "path": readable}, features=features, info=info)


def load_image_dataset(name_or_path: str | None = None, split: str = "train", streaming: bool = False):
    """The bundled corpus (None), an image folder (a local directory of images), or any `datasets` dataset."""
    import datasets

    if name_or_path is None:
        return bundled_corpus()[split]
    if os.path.isdir(name_or_path) and not os.path.exists(os.path.join(name_or_path, "dataset_info.json")):
        files = [n for _, _, names in os.walk(name_or_path) for n in names]
        if any(n.lower().endswith(IMAGE_EXTENSIONS) for n in files):
            return image_folder_dataset(name_or_path)
        if not files:
            raise ValueError(f"{name_or_path} is an empty folder: put images in it ({', '.join(IMAGE_EXTENSIONS)})")
    if os.path.isdir(name_or_path) and os.path.exists(os.path.join(name_or_path, "dataset_info.json")):
        return datasets.load_from_disk(name_or_path)
    return datasets.load_dataset(name_or_path, split=split, streaming=streaming)


# ---------------------------------------------------------------------------------------------- paired examples


@dataclass
class PairedTransform:
    r"""
    Turns a batch of clean images into `(degraded, clean, task)` examples, deterministically.

    Used with `Dataset.with_transform` / `IterableDataset.map(..., with_indices=True)`. The task of sample `i` is
    drawn from `tasks` by `(seed, i)` and its degradation by `(seed, i, task)`, so the same index always gives the
    same pair. With `num_images` set, sample `i` is image `i % num_images` in training epoch `i // num_images`, and
    its task and degradation are drawn with `epoch_seed(seed, epoch)`: fresh in every epoch, the same in every run.

    Args:
        tasks (`list[str]`): Task names (one, or a mixture sampled uniformly).
        image_size (`int` or `(height, width)`): A vision config's `image_size`: the size the clean images are
            resized to.
        seed (`int`): Global seed.
        image_column (`str`): Column holding the images.
        params (`dict`): Degradation parameters per task, e.g. `{"denoise": {"sigma": 25 / 255}}`.
        num_images (`int`, *optional*): Images per epoch, when the dataset repeats them over several epochs.
    """

    tasks: list
    image_size: int | tuple[int, int]
    seed: int = 0
    image_column: str = "image"
    params: dict = field(default_factory=dict)
    num_images: int | None = None

    def __post_init__(self):
        self.tasks = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"Unknown task(s) {unknown}; choose from {list(TASKS)}")

    def draw(self, index: int, epoch: int = 0) -> tuple[str, int, int]:
        """`(task, image index, degradation seed)` of sample `index` in training epoch `epoch` (with `num_images`
        set, the epoch is read from the index instead)."""
        if self.num_images is not None:
            index, epoch = index % self.num_images, index // self.num_images
        seed = epoch_seed(self.seed, epoch)
        return self.tasks[sample_seed(seed, index, "task") % len(self.tasks)], index, seed

    def __call__(self, batch: dict, indices=None, epoch: int = 0) -> dict:
        indices = [int(i) for i in (batch["sample_id"] if indices is None else indices)]
        clean = torch.stack(
            [to_tensor(load_rgb_image(image, name=f"sample {i}"), self.image_size)
             for image, i in zip(batch[self.image_column], indices)]
        )
        draws = [self.draw(i, epoch) for i in indices]
        degraded = torch.empty_like(clean)
        for task, seed in {(task, seed) for task, _, seed in draws}:
            rows = [k for k, (t, _, s) in enumerate(draws) if (t, s) == (task, seed)]
            degraded[rows] = degrade(
                clean[rows], task, [draws[k][1] for k in rows], seed, **self.params.get(task, {})
            )
        tasks = [task for task, _, _ in draws]
        return {"degraded": list(degraded), "clean": list(clean), "task": tasks, "sample_id": indices}


class PairedStream(torch.utils.data.IterableDataset):
    r"""
    Paired examples computed on the fly from a streaming `datasets.IterableDataset`, with fresh degradations in every
    pass over the stream: the Trainer (through accelerate's data loader) calls `set_epoch` before each pass, and
    sample `i` of pass `epoch` is degraded with `epoch_seed(seed, epoch)`, so pass 0 gives the same pairs as
    `paired_dataset` on the same images in memory and every pass is the same in every run (a resumed run included).
    Under data loader workers, worker `w` of `n` numbers its samples `w, w + n, w + 2n, ...`, so no two samples share
    a degradation; the workers must not be persistent (they would keep the epoch they started with).

    Args:
        images (`datasets.IterableDataset`): The clean images.
        transform (`PairedTransform`): Turns images into pairs (`num_images` unset).
    """

    def __init__(self, images, transform: PairedTransform):
        super().__init__()
        self.images, self.transform, self.epoch = images, transform, 0

    def set_epoch(self, epoch: int):
        """Select the pass whose degradations the next iteration draws (also reshuffles a shuffled stream)."""
        self.epoch = epoch
        self.images.set_epoch(epoch)

    def __iter__(self):
        # in a data loader worker, datasets streams this worker's shards: number its samples apart from the others'
        worker = torch.utils.data.get_worker_info()
        stride, offset = (1, 0) if worker is None else (worker.num_workers, worker.id)
        for position, example in enumerate(self.images):
            index = position * stride + offset
            pair = self.transform({self.transform.image_column: [example[self.transform.image_column]]}, [index],
                                  self.epoch)
            yield {name: values[0] for name, values in pair.items()}


def check_image_column(dataset, image_column: str):
    """Refuse a dataset without `image_column`, naming the columns it has."""
    if dataset.column_names is not None and image_column not in dataset.column_names:
        raise ValueError(f"The dataset has no column {image_column!r} (its columns: {dataset.column_names}): give a "
                         "folder of images, or name the column that holds them (--image_column)")


def paired_dataset(dataset, tasks, image_size: int | tuple[int, int], seed: int = 0, image_column: str = "image",
                   params=None, epochs: int = 1):
    r"""
    Paired examples computed on the fly from a `datasets.Dataset` (via `with_transform`) or an `IterableDataset`
    (streaming, as a `PairedStream` with fresh degradations in every pass), never copied to disk.

    With `epochs > 1` (a `datasets.Dataset` only) the images are repeated `epochs` times and each repetition gets its
    own degradations (`PairedTransform.num_images`): a model trained for several epochs sees fresh noise every
    epoch, drawn from `(seed, epoch, index)` alone. The repetition is a concatenation of the same Arrow table.

    Returns a dataset whose items are `{"degraded": (3, S, S) tensor, "clean": (3, S, S) tensor, "task": str,
    "sample_id": int}`.
    """
    import datasets

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    check_image_column(dataset, image_column)
    if epochs > 1 and isinstance(dataset, datasets.IterableDataset):
        raise ValueError("epochs > 1 needs a map-style datasets.Dataset, not a streaming one")
    num_images = None
    if epochs > 1:
        num_images = len(dataset)
        if "sample_id" in dataset.column_names:
            dataset = dataset.remove_columns("sample_id")
        dataset = datasets.concatenate_datasets([dataset] * epochs)
    transform = PairedTransform(tasks, image_size, seed, image_column, params or {}, num_images)
    if isinstance(dataset, datasets.IterableDataset):
        return PairedStream(dataset, transform)
    if "sample_id" not in dataset.column_names:
        dataset = dataset.add_column("sample_id", list(range(len(dataset))))
    return dataset.with_transform(transform)


def materialize_eval_set(dataset, tasks, image_size: int | tuple[int, int], path: str, seed: int = 1234,
                         limit: int | None = None, image_column: str = "image", params=None, every_task: bool = True):
    r"""
    Compute a fixed evaluation set once and save it with `save_to_disk` (lossless PNG images), so that every method
    is scored on identical inputs. With `every_task` (default) each of the first `limit` images is degraded once for
    every task (the paper scores each task on the whole test set); otherwise each image gets one task of the mixture.
    Columns: `degraded`, `clean` (images), `task`, `sample_id`.
    """
    import datasets
    from tqdm.auto import tqdm

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    transforms = [PairedTransform([task], image_size, seed, image_column, params or {}) for task in tasks]
    if not every_task:
        transforms = [PairedTransform(tasks, image_size, seed, image_column, params or {})]
    rows = []
    for transform in transforms:
        for start in tqdm(range(0, count, 64), desc=f"Building evaluation set {'+'.join(transform.tasks)}"):
            indices = list(range(start, min(start + 64, count)))
            out = transform({image_column: dataset[indices][image_column]}, indices)
            for degraded, clean, task, index in zip(out["degraded"], out["clean"], out["task"], out["sample_id"]):
                rows.append(
                    {"degraded": tensor_to_pil(degraded), "clean": tensor_to_pil(clean), "task": task,
                     "sample_id": index}
                )
    features = datasets.Features(
        {"degraded": datasets.Image(), "clean": datasets.Image(), "task": datasets.Value("string"),
         "sample_id": datasets.Value("int64")}
    )
    eval_set = datasets.Dataset.from_list(rows, features=features)
    eval_set.save_to_disk(path)
    return eval_set


# ---------------------------------------------------------------------------------------------- dataset card


def bundled_dataset_card(crop_size: int = 32, downscale: int = CORPUS_DOWNSCALE, validation_fraction: float = 0.2,
                         min_std: float = 0.02):
    """A `huggingface_hub.DatasetCard` for the bundled corpus: sources, licenses, split and crop settings."""
    from huggingface_hub import DatasetCard, DatasetCardData

    corpus = bundled_corpus(crop_size, downscale, validation_fraction, min_std)
    rows = "\n".join(f"| {name} | {license_text} |" for name, license_text in BUNDLED_IMAGES.items())
    data = DatasetCardData(
        license="other",
        license_name="public-domain-and-cc0",
        task_categories=["image-to-image"],
        tags=["image-restoration", "lm4lv", "low-level-vision"],
        pretty_name="LM4LV bundled crops",
        size_categories=["n<1K" if len(corpus["train"]) < 1000 else "1K<n<10K"],
    )
    content = f"""---
{data.to_yaml()}
---

# LM4LV bundled crops

Crops of {len(BUNDLED_IMAGES)} sample images shipped with scikit-image (`skimage/data`), used as LM4LV's offline
default corpus. Each image is converted to RGB (gray replicated), downscaled by {downscale}, and cut into
{crop_size}x{crop_size} crops: the left {1 - validation_fraction:.0%} of its columns give the `train` split
({len(corpus["train"])} crops, overlapping by half), the right {validation_fraction:.0%} the `validation` split
({len(corpus["validation"])} crops, not overlapping), so validation crops are never seen in training. Flat crops
(pixel standard deviation below {min_std}) are dropped.

Degradations are not stored: they are computed on the fly from `(seed, index, task)` (see `processing/degradations.py`).

## Sources and licenses

| image | license |
| --- | --- |
{rows}
"""
    return DatasetCard(content)


__all__ = [
    "BUNDLED_IMAGES",
    "PairedStream",
    "PairedTransform",
    "bundled_corpus",
    "bundled_dataset_card",
    "image_folder_dataset",
    "load_image_dataset",
    "materialize_eval_set",
    "paired_dataset",
    "training_images",
]
