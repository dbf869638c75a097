"""Checkpoints: tensors in a safetensors file, everything else as JSON in its header. No pickle.

A checkpoint is one file, so it is written whole or not at all: we write a temporary file in the
same directory, flush it to disk, then rename it over the old one. Loading only parses tensors and
JSON, so opening a checkpoint never runs code.
"""

import contextlib
import json
import os

import numpy as np

FORMAT = "pygan-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or not a pygan checkpoint."""


def _to_numpy(a):
    a = getattr(a, "data", a)  # Tensor -> array
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


@contextlib.contextmanager
def atomic_write(path):
    """Open a binary file that appears at `path` whole or not at all.

    Writes go to a temporary file in the same folder (created with the umask's permissions, as by
    open()), which is flushed to disk and renamed over `path` when the block ends without an
    exception; on an exception it is removed and `path` is left as it was. Checkpoints, image
    grids, plots, sample arrays and evaluation results are written through it.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save(path, tensors, meta):
    """Write {name: array} and a JSON-able `meta` dict to `path` atomically."""
    from safetensors.numpy import save as st_save

    arrays = {name: np.ascontiguousarray(_to_numpy(a)) for name, a in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta, sort_keys=True)}
    blob = st_save(arrays, metadata=header)
    with atomic_write(path) as f:
        f.write(blob)


def load(path):
    """(tensors as {name: numpy array}, meta dict); CheckpointError naming the file if it is bad."""
    from safetensors.numpy import load as st_load

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        header_len = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 + header_len or header_len <= 0:
            raise ValueError("file is shorter than its header says (truncated?)")
        header = json.loads(blob[8 : 8 + header_len])
        tensors = st_load(blob)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: its safetensors header is {type(header).__name__}, not an object")
    info = header.get("__metadata__") or {}
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(f"checkpoint {path} is not a pygan checkpoint (format {found!r}, expected {FORMAT!r})")
    try:
        meta = json.loads(info["meta"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {path} has bad metadata: expected a JSON object, got {_json_type(meta)}")
    for key in META_OBJECTS:
        if key in meta and not isinstance(meta[key], dict):
            raise CheckpointError(
                f"checkpoint {path} has bad metadata: {key!r} must be a JSON object, got {_json_type(meta[key])}")
    return tensors, meta


# Entries of a checkpoint's metadata that, when present, must be JSON objects.
META_OBJECTS = ("optG", "optD", "config", "rng_state")


def _json_type(value):
    """How JSON would name a parsed value's type: null, array, string, number, boolean, object."""
    if value is None:
        return "null"
    for types, name in ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), ((int, float), "number")):
        if isinstance(value, types):
            return f"{name} {value!r}"[:80] if name != "object" else name
    return type(value).__name__


def module_tensors(prefix, module):
    return {f"{prefix}.{name}": t.data for name, t in module.state_dict().items()}


def load_module(prefix, module, tensors, path):
    state = {name[len(prefix) + 1 :]: a for name, a in tensors.items() if name.startswith(prefix + ".")}
    try:
        module.load_state_dict(state)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({prefix}): {exc}") from None


def optimizer_tensors(prefix, opt):
    """(tensors, meta) of an optimiser's state dict: every state array of parameter i is stored as
    `prefix.i.<name>` (exp_avg and exp_avg_sq for Adam; square_avg, momentum_buffer, grad_avg for
    RMSprop), its step count and the param groups go into the JSON metadata."""
    sd = opt.state_dict()
    out = {}
    for index, st in sd["state"].items():
        for name, value in st.items():
            if name != "step":
                out[f"{prefix}.{index}.{name}"] = value.data
    meta = {
        "steps": {str(i): st["step"] for i, st in sd["state"].items()},
        "param_groups": [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]],
    }
    return out, meta


def load_optimizer(prefix, opt, tensors, meta, path):
    """Restore `opt` from its tensors and its metadata entry; CheckpointError for anything malformed.
    The state names are read from the stored tensors' names (`prefix.i.<name>`), so any optimiser's
    state loads, and so do checkpoints written before RMSprop existed."""

    def bad(what):
        raise CheckpointError(f"checkpoint {path} has a bad optimiser state ({prefix}): {what}")

    if not isinstance(meta, dict):
        bad(f"expected a JSON object, got {_json_type(meta)}")
    steps, groups = meta.get("steps"), meta.get("param_groups")
    if not isinstance(steps, dict):
        bad(f"'steps' must be a JSON object, got {_json_type(steps)}")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        bad(f"'param_groups' must be an array of objects, got {_json_type(groups)}")
    for g in groups:
        params = g.get("params")
        if not isinstance(params, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in params):
            bad(f"a param group's 'params' must be an array of integers, got {_json_type(params)}")
    state = {}
    for index, step in steps.items():
        if not index.isdigit():
            bad(f"'steps' has a key {index!r}, not a parameter index")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            bad(f"the step of parameter {index} is {_json_type(step)}, not a non-negative integer")
        head = f"{prefix}.{index}."
        arrays = {name[len(head):]: a for name, a in tensors.items() if name.startswith(head) and "." not in name[len(head):]}
        if not arrays:
            raise CheckpointError(f"checkpoint {path} lacks the optimiser tensors of {prefix} parameter {index}")
        state[int(index)] = {"step": step, **arrays}
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the optimiser ({prefix}): {exc}") from None
