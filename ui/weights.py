"""Uploaded weights: kept by content hash under the data folder, checked before a search starts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from engine.config import ModelSpec
from engine.errors import PrunescopeError
from engine.models import apply_state_dict, build_architecture, read_state_dict
from engine.workspace import uploads_dir

UPLOAD_TYPES = ["safetensors", "pt", "pth"]
BUILTIN_CLASSES = 10  # the synthetic set, CIFAR-10, Fashion-MNIST and MNIST all have 10


def saved_upload(upload) -> Path:
    """Where an `st.file_uploader` file is kept; hashed and written once per upload."""
    seen = st.session_state.get("_saved_upload")
    if seen and seen[0] == upload.file_id and Path(seen[1]).exists():
        return Path(seen[1])
    path = save_upload(upload.name, upload.getvalue())
    st.session_state["_saved_upload"] = (upload.file_id, str(path))
    return path


def save_upload(name: str, data: bytes) -> Path:
    """Write the bytes to `<home>/uploads/<sha256>.<ext>` (once; atomic) and return the path."""
    ext = Path(name).suffix.lower().lstrip(".")
    if ext not in UPLOAD_TYPES:
        ext = "pt"  # read_state_dict treats anything but .safetensors as a torch file
    path = uploads_dir() / f"{hashlib.sha256(data).hexdigest()}.{ext}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


@st.cache_data(show_spinner=False, max_entries=32)
def check_fit(model_name: str, path: str, num_classes: int) -> tuple[str, str] | None:
    """None when the state dict loads safely into the architecture, else (title, message)."""
    try:
        state = read_state_dict(path)
        spec = ModelSpec(name=model_name, num_classes=num_classes, weights="file")
        apply_state_dict(build_architecture(spec.name, num_classes, spec.image_size), state)
    except PrunescopeError as exc:
        return exc.title, exc.message
    return None


def dataset_classes(name: str, root: str | None) -> int:
    """Class count the model must predict: class sub-folders for an ImageFolder, else 10."""
    if name != "imagefolder" or not root:
        return BUILTIN_CLASSES
    folder = Path(root).expanduser()
    folder = folder / "train" if (folder / "train").is_dir() else folder
    try:
        return sum(1 for d in os.scandir(folder) if d.is_dir() and not d.name.startswith(".")) or 1
    except OSError:
        return BUILTIN_CLASSES
