"""optimum-dynexec: dynamic execution for HuggingFace Optimum on OpenVINO."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("optimum_dynexec/__init__.py").read_text()).group(1)

# The stack that optimum-intel 2.2.0 resolves to here (checked here): torch 2.14.1 + torchvision 0.29.1,
# because optimum-intel imports torchvision and older pairs fail to import beside it.
INSTALL_REQUIRES = [
    "optimum-intel[openvino,nncf]==2.2.0",
    "optimum==2.3.0",
    "openvino==2026.4.1",
    "nncf==3.4.0",
    "transformers==5.5.4",
    "huggingface-hub>=1.21,<1.22",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "diffusers==0.39.0",
    "scikit-image==0.26.0",
    "scipy>=1.11",
    "numpy>=2.0",
    "safetensors",
    "tqdm",
]

# the HTTP server and its Ray Serve deployment (optimum_dynexec.serve); the library never imports them
SERVE = [
    "fastapi==0.163.2",
    "uvicorn==0.54.0",
    "prometheus-client==0.26.0",
    "ray[serve,data]==2.60.0",  # Serve for the deployment, Data for the batch recipe (serve/ray_data.py)
    "httpx>=0.28",  # the load generator (serve/loadgen.py)
]
# what the serving tests talk to the server with
SERVE_CLIENTS = ["openai==3.51.0"]

EXTRAS = {
    "serve": SERVE,
    "bench": ["matplotlib>=3.8", "openvino-genai==2026.4.1.0"],
    "notebooks": ["matplotlib>=3.8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
    # transformers reads GGUF checkpoints (the reference SmolLM2) only with accelerate installed
    "train": ["gguf==0.19.0", "accelerate==1.15.0", "rdata==1.1.0"],
    "dev": [
        "gguf==0.19.0",
        "accelerate==1.15.0",
        "rdata==1.1.0",
        "pytest>=8",
        "pytest-xdist==3.8.0",  # make test runs the test files on both cores
        "ruff>=0.6",
        "matplotlib>=3.8",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        *SERVE,
        *SERVE_CLIENTS,
    ],
}

setup(
    name="optimum-dynexec",
    version=VERSION,
    description="Dynamic execution (early exit, speculative decoding, adaptive diffusion) for Optimum on OpenVINO",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_namespace_packages(include=["optimum_dynexec*", "optimum*"], exclude=["optimum_dynexec.tests*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    include_package_data=True,
    entry_points={"console_scripts": ["optimum-dynexec-serve=optimum_dynexec.serve.cli:main"]},
)
