"""Tiny random models and a tiny trained tokenizer, built in the test process (no network)."""

import json
import os
import subprocess

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    ViTMAEConfig,
)

from lm4lv.modeling_lm4lv import LM4LVConfig, LM4LVForConditionalGeneration
from lm4lv.processing import LM4LVProcessor

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n auto`: one thread per worker, its subprocesses included
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

VOCAB_SIZE = 320
CORPUS = [
    "### Human: <Img> </Img> ### Assistant: <Img> </Img> ###",
    "Remove the noise from this image. Restore the picture, please.",
    "the quick brown fox jumps over the lazy dog 0123456789",
] * 20


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few lines, like a real LLM tokenizer but tiny (no BOS, like SmolLM2)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 2,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<pad>")


def tiny_vision_config(image_size: int = 32, patch_size: int = 8) -> ViTMAEConfig:
    return ViTMAEConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )


def tiny_text_config(kind: str = "llama"):
    common = dict(vocab_size=VOCAB_SIZE, eos_token_id=0, pad_token_id=1, bos_token_id=None)
    if kind == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[kind]
    return config_class(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **common,
    )


def build_tiny(kind: str = "llama", task_names=("denoise",), task_token_length: int = 3, image_size: int = 32,
               patch_size: int = 8, seed: int = 0):
    """(model, processor) with random weights; the adapters get a non-zero init so outputs depend on inputs."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = LM4LVConfig(
        text_config=tiny_text_config(kind),
        vision_config=tiny_vision_config(image_size, patch_size),
        task_names=list(task_names),
        task_token_length=task_token_length,
        task_token_init="random",
    )
    processor = LM4LVProcessor.from_config(config, tokenizer)  # sets the config's <Img>/</Img> token ids
    model = LM4LVForConditionalGeneration(config).eval()
    return model, processor


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def tiny():
    return build_tiny()


def random_images(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator)


def save_base_models(model, folder):
    """Write a model's LLM (+ tokenizer) and MAE as ordinary local checkpoints, as from_base_models expects."""
    llm_dir, vision_dir = folder / "llm", folder / "mae"
    model.language_model.save_pretrained(llm_dir)
    tiny_tokenizer().save_pretrained(llm_dir)
    model.vision_model.save_pretrained(vision_dir)
    return str(llm_dir), str(vision_dir)


def free_port() -> int:
    """A TCP port nobody listens on now (for a launcher's rendezvous)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_training(command: list[str], output_dir) -> list[dict]:
    """Run a training command (a script, or `accelerate launch` of one) offline on the CPU with `--output_dir
    output_dir`; the logged losses of its `checkpoint-4`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               GLOO_SOCKET_IFNAME="lo", DS_ACCELERATOR="cpu")
    result = subprocess.run([*command, "--output_dir", str(output_dir)], env=env, timeout=600, capture_output=True,
                            text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="session")
def base_model_dirs(tmp_path_factory):
    """Local folders of a tiny LLaMA (+ tokenizer) and a tiny MAE."""
    model, _ = build_tiny()
    return save_base_models(model, tmp_path_factory.mktemp("base"))


@pytest.fixture
def browser():
    """A headless Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium; the test is skipped, saying
    why, where either is missing."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (the dev extra)")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("the browser tests need Chromium and its driver (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()

