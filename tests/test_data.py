"""Datasets: bundled corpus, image folders with bad files, on-the-fly and streaming pairs, fixed eval set, card."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.processing.data import (
    BUNDLED_IMAGES,
    ImageLoadError,
    PairedTransform,
    bundled_corpus,
    bundled_dataset_card,
    image_folder_dataset,
    load_image_dataset,
    load_rgb_image,
    materialize_eval_set,
    paired_dataset,
)
from lm4lv.processing.degradations import degrade, epoch_seed, pil_to_tensor


@pytest.fixture(scope="module")
def corpus():
    return bundled_corpus()


def test_bundled_corpus_split(corpus):
    assert len(corpus["train"]) > 4 * len(corpus["validation"]) > 0
    first = corpus["train"][0]
    assert first["image"].mode == "RGB" and first["image"].size == (32, 32)
    assert set(corpus["train"]["source"]) == set(BUNDLED_IMAGES) == set(corpus["validation"]["source"])
    train = {np.asarray(img).tobytes() for img in corpus["train"]["image"]}
    assert not any(np.asarray(img).tobytes() in train for img in corpus["validation"]["image"])


def write_image(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


def test_image_policy(tmp_path):
    gray = load_rgb_image(write_image(tmp_path / "g.png", Image.new("L", (8, 8), 77)))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_rgb_image(write_image(tmp_path / "a.png", rgba)).getpixel((0, 0)) == (255, 255, 255)  # over white
    palette = Image.new("RGB", (8, 8), (10, 200, 30)).quantize(colors=4)
    assert load_rgb_image(write_image(tmp_path / "p.png", palette)).getpixel((0, 0)) == (10, 200, 30)
    deep = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert load_rgb_image(write_image(tmp_path / "d.png", deep)).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (8, 8), (0, 0, 0, 0))
    assert load_rgb_image(write_image(tmp_path / "c.jpg", cmyk)).getpixel((0, 0))[0] > 250
    exif = Image.new("RGB", (16, 8), (0, 0, 255))
    info = exif.getexif()
    info[0x0112] = 6  # rotated: stored landscape, shown portrait
    assert load_rgb_image(write_image(tmp_path / "e.jpg", exif, exif=info)).size == (8, 16)


def test_bad_files_are_named(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.png: empty file"):
        load_rgb_image(tmp_path / "empty.png")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ImageLoadError, match="cut.png: cannot read image"):
        load_rgb_image(tmp_path / "cut.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageLoadError, match="text.jpg"):
        load_rgb_image(tmp_path / "text.jpg")


def test_image_folder_skips_bad_files(tmp_path):
    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "good.png")
    Image.new("L", (20, 20)).save(tmp_path / "gray.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "sub").mkdir()
    Image.new("RGBA", (10, 10)).save(tmp_path / "sub" / "alpha.png")
    with pytest.warns(UserWarning, match="broken.png"):
        dataset = image_folder_dataset(str(tmp_path))
    assert len(dataset) == 3 and "broken.png" in dataset.info.description
    # the dataset holds paths, not decoded pixels: memory does not grow with the folder
    assert all(row["bytes"] is None for row in dataset.data.column("image").to_pylist())
    assert len(load_image_dataset(str(tmp_path))) == 3
    pairs = paired_dataset(dataset, ["identity"], image_size=32)
    for index, path in enumerate(dataset["path"]):
        clean = pairs[index]["clean"]
        assert clean.shape == (3, 32, 32)  # RGB by the image policy, resized to the model size
        if path.endswith("gray.png"):
            assert torch.equal(clean[0], clean[1]) and torch.equal(clean[1], clean[2])  # gray replicated


def test_pairs_are_deterministic_and_match_degrade(corpus):
    pairs = paired_dataset(corpus["validation"], ["denoise", "deblur", "rotate"], image_size=32, seed=7)
    batch = pairs[0:8]
    assert set(batch["task"]) <= {"denoise", "deblur", "rotate"} and len(set(batch["task"])) > 1
    again = pairs[[5, 2]]
    assert torch.equal(again["degraded"][0], batch["degraded"][5]) and again["task"][1] == batch["task"][2]
    clean = pil_to_tensor(corpus["validation"][3]["image"])
    assert torch.equal(batch["clean"][3], clean)
    expected = degrade(clean[None], batch["task"][3], indices=[3], seed=7)[0]
    assert torch.equal(batch["degraded"][3], expected)
    assert pairs[0:4]["sample_id"] == [0, 1, 2, 3]


def test_streaming_gives_the_same_pairs_with_fresh_degradations_every_pass(corpus):
    validation = corpus["validation"].select(range(6))

    def generate():
        for row in validation:
            yield {"image": row["image"]}

    stream = datasets.IterableDataset.from_generator(generate, features=datasets.Features({"image": datasets.Image()}))
    paired_stream = paired_dataset(stream, ["pepper", "mask"], image_size=32, seed=2)
    first_pass = list(paired_stream)
    paired_stream.set_epoch(1)
    second_pass = list(paired_stream)
    in_memory = paired_dataset(validation, ["pepper", "mask"], image_size=32, seed=2, epochs=2)
    assert len(first_pass) == len(second_pass) == 6
    for i, (first, second) in enumerate(zip(first_pass, second_pass)):
        assert first["sample_id"] == second["sample_id"] == i
        # pass e of the stream is epoch e of the same images in memory: fresh degradations, the same in every run
        assert torch.equal(first["degraded"], in_memory[i]["degraded"]) and first["task"] == in_memory[i]["task"]
        later = in_memory[6 + i]
        assert torch.equal(second["degraded"], later["degraded"]) and second["task"] == later["task"]
        assert torch.equal(first["clean"], second["clean"])
    assert not all(torch.equal(a["degraded"], b["degraded"]) for a, b in zip(first_pass, second_pass))


def test_streaming_workers_number_their_samples_apart(corpus):
    images = [corpus["validation"][i]["image"] for i in range(6)]

    def generate(shards):  # datasets hands each worker its part of the `shards` list
        for shard in shards:
            yield from ({"image": image} for image in shard)

    stream = datasets.IterableDataset.from_generator(  # two shards, one per worker
        generate, features=datasets.Features({"image": datasets.Image()}),
        gen_kwargs={"shards": [images[:3], images[3:]]},
    )
    loader = torch.utils.data.DataLoader(paired_dataset(stream, ["denoise"], 32, seed=0), batch_size=None,
                                         num_workers=2)
    assert sorted(example["sample_id"] for example in loader) == [0, 1, 2, 3, 4, 5]


def test_fixed_eval_set_round_trip(corpus, tmp_path):
    eval_set = materialize_eval_set(corpus["validation"], ["mask"], 32, str(tmp_path / "eval"), seed=3, limit=10)
    reloaded = datasets.load_from_disk(str(tmp_path / "eval"))
    assert len(reloaded) == 10 and reloaded[4]["task"] == "mask"
    expected = PairedTransform(["mask"], 32, seed=3)({"image": [corpus["validation"][4]["image"]]}, [4])
    assert torch.equal(pil_to_tensor(reloaded[4]["degraded"]), expected["degraded"][0])  # lossless PNG
    assert np.array_equal(np.asarray(eval_set[4]["clean"]), np.asarray(reloaded[4]["clean"]))


def test_unknown_task_in_transform():
    with pytest.raises(ValueError, match="Unknown task"):
        PairedTransform(["sharpen"], 32)


def test_dataset_card():
    card = bundled_dataset_card()
    assert card.data.pretty_name == "LM4LV bundled crops"
    assert "image-restoration" in card.data.tags
    for name, license_text in BUNDLED_IMAGES.items():
        assert f"| {name} | {license_text} |" in card.text


def test_each_training_epoch_gets_fresh_degradations_from_seed_epoch_and_index(corpus):
    images = corpus["validation"].select(range(5))
    one_epoch = paired_dataset(images, ["denoise"], image_size=32, seed=7)
    three = paired_dataset(images, ["denoise"], image_size=32, seed=7, epochs=3)
    assert len(three) == 15 and three[0:15]["sample_id"] == list(range(15))
    first = three[0:5]
    assert all(torch.equal(a, b) for a, b in zip(first["degraded"], one_epoch[0:5]["degraded"]))  # epoch 0 = seed
    for epoch in (1, 2):
        later = three[5 * epoch : 5 * epoch + 5]
        assert all(torch.equal(a, b) for a, b in zip(later["clean"], first["clean"]))  # the same images
        assert not any(torch.equal(a, b) for a, b in zip(later["degraded"], first["degraded"]))  # fresh noise
        expected = degrade(later["clean"][0][None], later["task"][0], indices=[0], seed=epoch_seed(7, epoch))[0]
        assert torch.equal(later["degraded"][0], expected)
    again = paired_dataset(images, ["denoise"], image_size=32, seed=7, epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(again[0:15]["degraded"], three[0:15]["degraded"]))


def test_training_runs_get_as_many_degradation_epochs_as_their_steps_need():
    from lm4lv.trainers import LM4LVTrainingArguments
    from lm4lv.trainers.training import degradation_epochs

    args = LM4LVTrainingArguments(output_dir="unused", max_steps=30, per_device_train_batch_size=4,
                                  gradient_accumulation_steps=2, use_cpu=True, report_to=[])
    assert degradation_epochs(args, 100) == 3  # 30 steps x 8 samples = 240 > 2 x 100
    by_epochs = LM4LVTrainingArguments(output_dir="unused", num_train_epochs=2.5, use_cpu=True, report_to=[])
    assert degradation_epochs(by_epochs, 100) == 3 and by_epochs.num_train_epochs == pytest.approx(2.5 / 3)
