"""The proving ground: the real models and corpora this project proves itself on, their preparation, benchmarks, demo.

Nothing in the library imports this package; it imports the library the way a user's code does. Its models are
trained on packaged data (SmolLM2, MiniLM, tweets, Jane Austen, Fashion-MNIST) with the library's own training
functions, cached under `optimum_dynexec.utils.cache_dir`, keyed by their budget (`budgets`).

- `prepare`, `sources`, `budgets`: the cached reference models (`python -m optimum_dynexec.reference.prepare`);
- `austen`, `sentiment`, `fashion_mnist`: the corpora;
- `judge`, `text_to_image`, `diffusion`: the Fashion-MNIST text-to-image pipeline and its StepSaver parts;
- `benchmark`: side-by-side measurements against optimum-intel (`python -m optimum_dynexec.reference.benchmark`);
- `demo`: `make demo`.
"""
