"""The only way the project turns bytes into a model.

A model file is code in disguise: pickle runs whatever it was told to, and
MLflow's own loader trusts the list of types written *inside* the artifact
(with MLflow 3.17, `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` refuses even
skops models for that reason), so an attacker who can write the artifact can also widen what
is trusted. Here the order is fixed: the file's sha256 is compared with a
digest from a trusted place *before* a single byte is parsed, then skops
rebuilds the object only from types in `TRUSTED_TYPES`, a list pinned in this
repository and reviewed like code.

Writing is the other half: `dumps_model` gives the same bytes for the same fitted
model, in any process, so a retraining can be checked against a released digest.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

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
# Every entry of a canonical archive gets this time (the earliest a zip entry can hold)
# and these Unix permissions, whatever the clock, umask or OS of the writer.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_MODE = 0o600 << 16


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
    """Serialise a fitted estimator with skops (never pickle), reproducibly.

    Equal fitted models give equal bytes, so equal sha256, in any process. Plain
    `skops.io.dumps` does not: it numbers the objects (``__id__`` in ``schema.json``)
    and names the array files (``<id>.npy``) by ``id()``, i.e. memory addresses, and
    stamps every zip entry with the current time. `canonical_skops` removes all three.
    """
    return canonical_skops(sio.dumps(model))


def dump_model(model: BaseEstimator, file: str | Path) -> None:
    """Write `dumps_model` bytes to `file`: a drop-in for ``skops.io.dump(model, file)``."""
    Path(file).write_bytes(dumps_model(model))


def canonical_skops(data: bytes) -> bytes:
    """The same skops archive with nothing left that depends on the writing process.

    The objects are renumbered 1, 2, ... in the order ``schema.json`` lists them and
    each file referenced by the schema is renamed after its first reference. The
    mapping is one-to-one, so objects shared in the model stay shared (skops restores
    sharing by ``__id__``; it never memoises id 0, hence the start at 1). The entries
    are rewritten in that order, schema last as skops does, uncompressed as skops does,
    with a fixed time and mode. The loaded model is the one `data` holds.

    Raises:
        ValueError: the archive's files and those its schema references differ (a
            skops format this function does not know: nothing is dropped silently).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read("schema.json"))
        ids: dict[int, int] = {}
        files: dict[str, str] = {}

        def renumber(node: Any) -> None:
            if isinstance(node, list):
                for item in node:
                    renumber(item)
            elif isinstance(node, dict):
                # A skops node has a string "__loader__"; the content of a dict in the
                # model is a mapping to nodes, so its keys cannot be mistaken for these.
                if isinstance(node.get("__loader__"), str):
                    if isinstance(node.get("__id__"), int):
                        node["__id__"] = ids.setdefault(node["__id__"], len(ids) + 1)
                    if isinstance(node.get("file"), str):
                        suffix = PurePosixPath(node["file"]).suffix
                        node["file"] = files.setdefault(node["file"], f"{len(files) + 1}{suffix}")
                for value in node.values():
                    renumber(value)

        renumber(schema)
        if set(files) != set(src.namelist()) - {"schema.json"}:
            raise ValueError("skops archive: its files differ from those its schema references")
        entries = [(new, src.read(old)) for old, new in files.items()]
    entries.append(("schema.json", json.dumps(schema, indent=2).encode()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for name, blob in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.create_system = 3  # Unix, also when written on Windows
            info.external_attr = _ZIP_MODE
            dst.writestr(info, blob)
    return out.getvalue()


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
