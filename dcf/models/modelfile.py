"""The model file: one versioned, self-describing file per trained potential.

A model file is a zip archive in numpy's ``.npz`` layout (read with ``allow_pickle=False``, so
loading an untrusted file executes no code). It holds

* ``__metadata__``: a JSON document (a 0-d unicode array) with at least
  ``{"format": "dcf-model", "version": 1, "model": "dcf" | "bp", "spec": <spec dict>,
  "spec_sha256": ..., "dcf_version": ...}`` and whatever the model kind adds
  (architecture, normalization statistics, training history);
* named float arrays: the network weights, keyed by path-like names such as
  ``"Li/nn1/0/W"``.

``load_model(path)`` reads the metadata and hands the file to the model class named by
``"model"``: each class provides ``from_file(metadata, arrays)`` and enters itself in
``MODEL_KINDS`` with ``@register_model_kind`` (its module is imported with ``dcf.models``). The
loaded model remembers its file: ``model.source = {"path": ..., "sha256": ...}``.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from dcf.errors import DCFError
from dcf.files import write_atomic
from dcf.models.repulsion import baseline_from_metadata

FORMAT = "dcf-model"
VERSION = 1
_METADATA = "__metadata__"


#: model kind in the file's metadata -> the class that reads it (``from_file(meta, arrays)``)
MODEL_KINDS: dict[str, type] = {}


class ModelFileError(DCFError, ValueError):
    """A model file that is missing, unreadable, of another format or of a newer version."""


def register_model_kind(cls):
    """Class decorator: `cls.kind` names the model files `cls.from_file` reads."""
    MODEL_KINDS[cls.kind] = cls
    return cls


def load_model(path):
    """Load a DCF or B–P model file; returns the model object (see its `forces`, `calculator`),
    with ``model.source``: the file's absolute path and the sha256 of its bytes."""
    meta, arrays = read_model_file(path)
    kind = meta.get("model")
    if kind not in MODEL_KINDS:
        raise ModelFileError(f"{path}: unknown model kind {kind!r} (known: {sorted(MODEL_KINDS)})")
    try:
        model = MODEL_KINDS[kind].from_file(meta, arrays)
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {err}") from None
    try:
        model.baseline = baseline_from_metadata(meta)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: bad short-range baseline: {err}") from None
    model.source = {"path": str(Path(path).resolve()),
                    "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return model


def write_model_file(path, metadata: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write `metadata` (JSON-serializable) and float `arrays` to `path` atomically.

    The format, version and dcf version are filled in; `metadata["model"]` must be set.
    """
    from dcf import __version__

    if "model" not in metadata:
        raise ValueError("model metadata needs a 'model' kind ('dcf' or 'bp')")
    if _METADATA in arrays:
        raise ValueError(f"array name {_METADATA!r} is reserved")
    meta = {"format": FORMAT, "version": VERSION, "dcf_version": __version__, **metadata}
    payload = {name: np.asarray(a) for name, a in arrays.items()}
    for name, a in payload.items():
        if a.dtype == object:
            raise ValueError(f"array {name!r} has dtype object; model files hold numbers only")
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **{_METADATA: np.array(json.dumps(meta))}, **payload)

    return write_atomic(path, write)


def read_model_file(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (metadata, arrays) of a model file, checking its format and version."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if _METADATA not in npz.files:
                raise ModelFileError(f"{path} is not a dcf model file (no metadata)")
            meta = json.loads(str(npz[_METADATA][()]))
            arrays = {k: npz[k] for k in npz.files if k != _METADATA}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{path} is not a dcf model file: {err}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a dcf model file (format {meta.get('format')!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ModelFileError(f"{path} has model-file version {meta.get('version')!r}; this dcf "
                             f"reads versions up to {VERSION}: upgrade dcf")
    return meta, arrays


def stored_spec(metadata: dict):
    """The FingerprintSpec stored in a model file's metadata, checked against its recorded
    sha256; ModelFileError if it is missing or does not match (the file was edited or is
    corrupt)."""
    from dcf.descriptors.spec import FingerprintSpec

    if "spec" not in metadata or "spec_sha256" not in metadata:
        raise ModelFileError("the model file has no fingerprint spec (spec, spec_sha256)")
    spec = FingerprintSpec.from_dict(metadata["spec"], source="model file spec")
    if spec.fingerprint != metadata["spec_sha256"]:
        raise ModelFileError("the fingerprint spec stored in the model file does not match "
                             "its checksum, spec_sha256 (file corrupted or edited)")
    return spec
