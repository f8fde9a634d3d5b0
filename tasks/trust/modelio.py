"""The only way the project turns bytes into a model.

A model file is code in disguise: pickle runs whatever it was told to, and
MLflow's own loader trusts the list of types written *inside* the artifact
(with MLflow 3.17, `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` refuses even
skops models for that reason), so an attacker who can write the artifact can also widen what
is trusted. Here the order is fixed: the file's sha256 is compared with a
digest from a trusted place *before* a single byte is parsed, then skops
rebuilds the object only from types in `TRUSTED_TYPES`, a list pinned in this
repository and reviewed like code.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

import skops.io as sio
from sklearn.base import BaseEstimator
from skops.io.exceptions import UntrustedTypesFoundException

from tasks.common.errors import PipelineError
from tasks.common.files import sha256_bytes

# Types skops must trust beyond its defaults to load the project's models, per
# estimator of tasks/models.py. The preprocessing (ColumnTransformer, SimpleImputer,
# StandardScaler, OneHotEncoder) and LogisticRegression need none: skops 0.16 trusts
# them by default. Each entry is a plain data holder rebuilt from its attributes (no
# __setstate__/__reduce__ hooks, nothing callable): a fitted tree's node arrays, a
# boosting predictor's node array, and for diffprivlib's model the estimator and the
# BudgetAccountant it keeps (the privacy spend of its fit). tests/unit/test_modelio.py
# requires each list to equal `skops.io.get_untrusted_types` of that fitted model.
#
# FORK: a fork that trains another model (tasks/models.py) adds exactly what
#     skops.io.get_untrusted_types(data=dumps_model(fitted_model))
# prints, after reading each entry, and never a module-wide or callable type.
# An entry such as "posix.system" or "builtins.eval" means the file can run code: refuse it.
TRUSTED_BY_ESTIMATOR: dict[str, tuple[str, ...]] = {
    "logistic_regression": (),
    "dp_logistic_regression": (
        "diffprivlib.accountant.BudgetAccountant",
        "diffprivlib.models.logistic_regression.LogisticRegression",
    ),
    "random_forest": ("sklearn.tree._tree.Tree",),
    "hist_gradient_boosting": ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
}
# A SimpleImputer (missing-value policies) keeps the numpy dtype it was fitted on.
TRUSTED_PREPROCESSING: tuple[str, ...] = ("numpy.dtype",)
# The loader accepts the union: `verify` and serving do not know which estimator made
# a file, and every entry is as harmless in any model as in its own.
TRUSTED_TYPES: tuple[str, ...] = tuple(
    sorted({*TRUSTED_PREPROCESSING, *(t for ts in TRUSTED_BY_ESTIMATOR.values() for t in ts)})
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelIntegrityError(PipelineError):
    """A model file was refused: wrong digest, untrusted content or not a model."""


class UntrustedModelError(ModelIntegrityError):
    """The file holds types outside `TRUSTED_TYPES` (it could run code on load)."""

    def __init__(self, types: list[str]):
        self.types = sorted(types)
        super().__init__(
            "model file holds types outside the pinned allow-list: "
            f"{', '.join(self.types)}; review them and add them to "
            "tasks/trust/modelio.py TRUSTED_BY_ESTIMATOR only if they cannot run code"
        )


def dumps_model(model: BaseEstimator) -> bytes:
    """Serialise a fitted estimator with skops (never pickle)."""
    return sio.dumps(model)


def load_model_bytes(data: bytes, *, expected_sha256: str) -> BaseEstimator:
    """Load a skops model after checking its digest and its types.

    Args:
        data: The bytes of a `.skops` file, read once (no re-read between check and use).
        expected_sha256: The digest the bytes must have, from a trusted source
            (the signed manifest, the registry record made at training time).

    Returns:
        The fitted estimator.

    Raises:
        ModelIntegrityError: the digest differs (checked before parsing), or the
            file does not hold a scikit-learn estimator.
        UntrustedModelError: the file holds a type outside `TRUSTED_TYPES`.
    """
    expected = expected_sha256.strip().lower()
    if not _SHA256.match(expected):
        raise ModelIntegrityError("expected_sha256 is not a hex sha256 digest")
    if not hmac.compare_digest(sha256_bytes(data), expected):
        raise ModelIntegrityError("model file digest does not match the expected sha256")
    try:
        # Only the pinned list: never `get_untrusted_types` of this very file.
        model = sio.loads(data, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException:
        raise UntrustedModelError(sio.get_untrusted_types(data=data)) from None
    if not isinstance(model, BaseEstimator):
        raise ModelIntegrityError("model file does not hold a scikit-learn estimator")
    return model


def load_model_file(path: Path, *, expected_sha256: str) -> BaseEstimator:
    """Read a `.skops` file once and load it with `load_model_bytes`."""
    return load_model_bytes(Path(path).read_bytes(), expected_sha256=expected_sha256)
