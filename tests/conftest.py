import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_bert, random_texts  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
# CI sets this after `make models`: a real-model test then fails instead of skipping when its models are missing
REQUIRE_MODELS = os.environ.get("OPTIMUM_DYNEXEC_REQUIRE_MODELS") == "1"


def needs_prepared(*steps: str):
    """Skips a test until `make models` has prepared these steps (of `optimum_dynexec.reference.prepare.STEPS`) under
    the active preset; with `OPTIMUM_DYNEXEC_REQUIRE_MODELS=1` the test runs anyway (and fails on missing models),
    unless a missing step is one of the `OPTIONAL_STEPS` that `make models` builds only when named."""
    from optimum_dynexec.reference.prepare import OPTIONAL_STEPS, is_step_ready

    missing = [s for s in steps if not is_step_ready(s)]
    optional = [s for s in missing if s in OPTIONAL_STEPS]
    return pytest.mark.skipif(
        bool(missing) and (not REQUIRE_MODELS or bool(optional)),
        reason=f'not prepared: {missing} (run `make models STEPS="{" ".join(missing)}"`)',
    )


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text("\n".join(random_texts(400, seed=1)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_early_exit(tiny_bert, tiny_train_file, tmp_path_factory) -> Path:
    from optimum_dynexec import export_early_exit

    out = tmp_path_factory.mktemp("tiny_ee")
    export_early_exit(tiny_bert, out, exit_layers=None, train_file=tiny_train_file, target_agreement=0.9)
    return out
