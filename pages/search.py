"""Search: model, weights, dataset and constraint in; a background search with live progress out."""

import streamlit as st

from engine.config import (
    DATASETS,
    IMPORTANCE_TEXT,
    IMPORTANCES,
    SAMPLERS,
    VAL_SOURCE_TEXT,
    VAL_SOURCES,
    WEIGHT_SOURCES,
    ModelSpec,
)
from engine.errors import PrunescopeError
from engine.models import available_models, builtin_weights_path
from engine.runtime import channel_block
from ui import forms, jobs, resources, weights
from ui.format import FLOPS_NOTE, METRIC_LABELS, runtime_note
from ui.nav import through_app
from ui.progress import busy_note, job_panel
from ui.widgets import remember

through_app()

# Labels of the engine's choices; "train" trains the parent here first.
WEIGHTS = {
    "builtin": "Built-in (trained on the built-in synthetic set)",
    "pretrained": "Pretrained (torchvision's ImageNet weights; downloads once)",
    "file": "Upload a state dict (.safetensors or .pt)",
    "train": "Train here on the dataset",
    "random": "Random initialization (a quick look; accuracy near chance)",
}
WEIGHT_CHOICES = [*WEIGHT_SOURCES[:3], "train", *WEIGHT_SOURCES[3:]]
DATASET_LABELS = {
    "synthetic": "Built-in synthetic shapes (offline, 10 classes)",
    "cifar10": "CIFAR-10",
    "fashionmnist": "Fashion-MNIST",
    "mnist": "MNIST",
    "imagefolder": "ImageFolder (a folder of class sub-folders)",
}
SAMPLER_LABELS = {
    "guided": "Guided: a uniform sweep, then evolution of the front near the budget",
    "uniform": "Uniform: every group at the same fraction of its width",
    "random": "Random: random widths within the budget",
}


@st.cache_data(show_spinner=False)
def model_names() -> list[str]:
    return available_models()


remember("search_", forms.search_defaults())
registry = jobs.registry()
store = resources.store()
st.title("Search")
settings, live = st.columns([2, 3], gap="large")
problems: list[tuple[str, str]] = []  # (title, message): shown, and Start stays disabled

with settings:
    model = st.selectbox(
        "Model",
        model_names(),
        key="search_model",
        help="CIFAR-style ResNets first, then every torchvision classifier.",
    )
    dataset = st.selectbox(
        "Dataset", list(DATASETS), format_func=DATASET_LABELS.get, key="search_dataset"
    )
    root = None
    if dataset == "imagefolder":
        root = st.text_input(
            "ImageFolder path",
            key="search_root",
            placeholder="/data/my-images  (class sub-folders, or train/ + test/)",
        )
        if not root:
            problems.append(("Dataset", "Enter the path of a folder of class sub-folders."))
    elif dataset != "synthetic":
        st.caption("Downloaded by torchvision on first use (needs internet once).")
    source = st.radio("Weights", WEIGHT_CHOICES, format_func=WEIGHTS.get, key="search_weights")
    spec = ModelSpec(name=model, weights=source)
    if source == "builtin" and not builtin_weights_path(spec).exists():
        problems.append(
            (
                "No built-in weights",
                f"There are no built-in weights for {model} yet. "
                "Choose pretrained, upload a state dict, train here, or random.",
            )
        )
    elif source == "file":
        upload = st.file_uploader("State dict", type=weights.UPLOAD_TYPES, key="upload_weights")
        if upload is None:
            problems.append(("Weights", "Upload a .safetensors or .pt state dict."))
        else:
            path = weights.saved_upload(upload)
            if bad := weights.check_fit(model, str(path), weights.dataset_classes(dataset, root)):
                problems.append(bad)
            else:
                st.success(f"{upload.name} fits {model}.")
                spec = ModelSpec(name=model, weights="file", weights_path=str(path))
    elif source == "train":
        st.number_input(
            "Training epochs",
            1,
            500,
            key="search_epochs",
            help="The parent is trained first, then searched; a finished parent "
            "with the same recipe is reused.",
        )

    metric_col, mode_col, limit_col = st.columns(3)
    metric_col.radio(
        "Constraint",
        list(METRIC_LABELS),
        format_func=METRIC_LABELS.get,
        key="search_metric",
        help=runtime_note(int(st.session_state.search_block))
        + " Limit them to find subnets that are as much faster as they are smaller.",
    )
    mode_col.radio(
        "Limit as",
        ["relative", "absolute"],
        key="search_mode",
        format_func={"relative": "% of parent", "absolute": "absolute"}.get,
    )
    limit_col.text_input(
        "Limit",
        key="search_limit",
        help="50 with '% of parent' keeps at most half the parent's "
        "FLOPs (or params); absolute takes a count such as 2e7.",
    )
    try:
        forms.search_constraint(st.session_state)
    except PrunescopeError as exc:
        problems.append((exc.title, exc.message))
    st.number_input("Subnets to evaluate", 2, 100_000, step=10, key="search_subnets")
    st.selectbox("Sampler", SAMPLERS, format_func=SAMPLER_LABELS.get, key="search_sampler")
    with st.expander("Advanced"):
        st.number_input(
            "Round widths to",
            1,
            256,
            key="search_round_to",
            help=(
                "Kept channels are multiples of this. ONNX Runtime on this machine computes "
                f"convolutions in blocks of {channel_block()} channels: a width that is not a "
                "multiple of it costs as much as the next multiple, so saved FLOPs become saved "
                "time only at multiples of it."
            ),
        )
        st.number_input(
            "Channel block",
            1,
            1024,
            key="search_block",
            help=f"Runtime FLOPs pad every convolution to multiples of this many channels. "
            f"This machine's ONNX Runtime uses {channel_block()}; set the block of the CPU you "
            "will deploy on (16 with AVX-512, 8 with AVX2).",
        )
        st.selectbox(
            "Channel importance",
            IMPORTANCES,
            key="search_importance",
            format_func=lambda k: f"{k}: {IMPORTANCE_TEXT[k]}",
            help="Which channels a group keeps at a given width: its most important ones.",
        )
        screen_col, top_col, images_col = st.columns(3)
        screen_col.number_input(
            "Screen images",
            0,
            1_000_000,
            step=128,
            key="search_screen",
            help="Every candidate is first recalibrated and scored on this many images; only "
            "those near the best screened subnet that costs no more go on to the full "
            "validation split. 0: every candidate fully validated.",
        )
        top_col.number_input(
            "Finalists fine-tuned",
            0,
            100,
            key="search_tune_top",
            help="When the evaluations are spent, the best this many under the budget get a "
            "short fine-tune distilled from the parent; the pick is the best of them. 0: none.",
        )
        images_col.number_input(
            "Their training images",
            0,
            10_000_000,
            step=512,
            key="search_tune_images",
            help="Training images in that short fine-tune (a fraction of an epoch).",
        )
        st.number_input(
            "Calibration size",
            1,
            1_000_000,
            step=256,
            key="search_calib",
            help="Training images used to recalibrate BatchNorm in every subnet.",
        )
        st.number_input(
            "Validation size",
            1,
            1_000_000,
            step=256,
            key="search_val",
            help="Images that score every subnet (at most this many).",
        )
        st.selectbox(
            "Validation images",
            VAL_SOURCES,
            format_func=VAL_SOURCE_TEXT.get,
            key="search_val_from",
            help="Subnets are scored on images the parent never saw. Held-out training images "
            "only for random weights or a parent trained here on this split; a parent brought "
            "from elsewhere may have trained on all of them, so by default its validation "
            "images come from the val/ folder or half of the test split.",
        )
        st.number_input(
            "Training images",
            0,
            10_000_000,
            step=1000,
            key="search_train",
            help="Use at most this many training images (a seeded subset; validation, "
            "calibration and fine-tuning draw from them). 0: all.",
        )
        st.number_input(
            "Test images",
            0,
            10_000_000,
            step=1000,
            key="search_test",
            help="At most this many test images, for fine-tune and export accuracy. 0: all.",
        )
        st.number_input("Seed", 0, 2**31 - 1, key="search_seed")
        st.number_input("Batch size", 1, 4096, key="search_batch")
    st.caption(FLOPS_NOTE)

    for title, message in problems:
        st.error(f"**{title}** — {message}")
    busy = busy_note("start a search")
    if st.button("Start search", type="primary", disabled=bool(problems or busy)):
        ss = st.session_state
        try:
            config = forms.search_config(ss, spec, root)
            train = forms.parent_training(ss) if source == "train" else None
            job = registry.start_search(store, config, train)
        except PrunescopeError as exc:
            st.error(f"**{exc.title}** — {exc.message}")
        else:
            ss["job_id"] = job.job_id
            st.rerun()


with live:
    job_panel("search", "No search running. Choose the settings and press **Start search**.")
