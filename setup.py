"""Install ccpdml: `pip install -e .[cpu]` (CPU), `.[gpu]` (CUDA) or `.[tf]` (stock TensorFlow)."""

from setuptools import find_packages, setup

setup(
    name="ccpdml",
    version="0.1.0",
    description=(
        "Deep Metric Learning with Chance Constraints (CCP) for TensorFlow / Keras 3: "
        "multi-proxy losses, proximal re-initialisation, MLRC protocol and exact retrieval metrics."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ccpdml", "ccpdml.*", "data_pipelines", "data_pipelines.*"]),
    include_package_data=True,
    package_data={"": ["*.yaml"]},
    # TensorFlow itself is an extra so that the CPU wheel (CI) and the CUDA wheel (GPU users)
    # can be chosen; `import ccpdml` says which extra to install when none is present.
    install_requires=[
        # DMLAdam uses private optimizer hooks (checked at build, public fallback if missing);
        # tested with Keras 3.15.1 only. The bound keeps the next major release out.
        "keras>=3.5,<4",
        "numpy>=1.24",
        "scikit-learn>=1.3",
        "pyyaml>=6.0",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # TFDS code_path needs it; recent etils no longer pulls it in
        "pillow>=9.0",
        "scipy>=1.10",
        "threadpoolctl>=3.1",  # exact kNN: single-threaded BLAS inside each of its tile threads
        "tensorboard>=2.16",  # TensorBoard logs of every run (tensorflow 2.21 no longer pulls it in)
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "tf": ["tensorflow>=2.16"],
        "plots": ["matplotlib>=3.7"],
        "faiss": ["faiss-cpu>=1.7"],  # optional exact search backend for very large galleries
        "dev": ["pytest>=8", "ruff>=0.5", "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["ccpdml=ccpdml.cli:main"]},
)
