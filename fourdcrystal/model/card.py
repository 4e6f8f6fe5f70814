"""A trained model on disk: one weights file plus a model card JSON beside it.

``model.pt`` holds the network's ``state_dict`` only (loaded with ``weights_only=True``: no
code runs when a file is read). ``model.json`` says what the weights are: sha256 of the
weights file, architecture, the input calibration the network expects, the label
normalisation, the training data (index hash, sizes), final metrics, software, seed. Loading
checks the sha256 first, so weights and card can never be silently mixed up.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_file, write_text_atomic
from ..errors import FourdError
from .fcunet import FCUNet, FCUNetConfig
from ..simulation.shards import file_sha256

CARD_SCHEMA = "fourdcrystal.model/1"
RELEASE = "release"  # the name that stands for the model shipped inside the package
RELEASE_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "fcunet-release.pt"
# the shipped models, by name; "release" is the default one
SHIPPED = {RELEASE: RELEASE_WEIGHTS}
# the learned tilt read (fourdcrystal.detection.tilt.TiltReader), written by scripts/train_tilt_read.py
TILT_READ_WEIGHTS = RELEASE_WEIGHTS.parent / "tilt-read.json"


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_state(path: str | Path, state: dict) -> None:
    """``torch.save`` through a file object (the archive's inner name is then fixed: same bytes every time)."""
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            torch.save(state, fh)
    except (OSError, RuntimeError) as exc:  # torch wraps a failed write of its zip archive in RuntimeError
        text = str(exc).lower()
        # a short write on a full disk reaches torch's archive writer as "unexpected pos N vs M" (the file ends
        # before where the writer is), not as ENOSPC: the folder's free space says which it was
        if isinstance(exc, RuntimeError) and "write" not in text and "unexpected pos" not in text:
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        if isinstance(exc, RuntimeError) and _disk_nearly_full(Path(path).parent, state):
            reason = os.strerror(errno.ENOSPC)
        raise FourdError(f"cannot write {path}: {reason}; the previous checkpoint is kept (make room and rerun "
                         f"with `resume`)") from None


def _disk_nearly_full(folder: Path, state: dict) -> bool:
    """Whether ``folder``'s file system has less room left than the tensors of ``state`` take."""
    size = sum(v.numel() * v.element_size() for v in _tensors(state))
    try:
        return shutil.disk_usage(folder).free < size + 65536
    except OSError:
        return False


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def save_model(weights: str | Path, state_dict: dict, card: dict) -> dict:
    """Write ``weights`` and its card (the card gets ``schema`` and ``weights_sha256``); return the card."""
    weights = Path(weights)
    save_state(weights, {k: v.detach().cpu() for k, v in state_dict.items()})
    card = {"schema": CARD_SCHEMA, **card, "weights_file": weights.name, "weights_sha256": file_sha256(weights)}
    write_text_atomic(card_path(weights), json.dumps(card, indent=1, sort_keys=True, default=str) + "\n")
    return card


def read_card(weights: str | Path) -> dict:
    weights = Path(weights)
    cpath = card_path(weights)
    if not weights.exists():
        raise FourdError(f"model weights {weights} not found")
    try:
        card = json.loads(cpath.read_text())
    except FileNotFoundError:
        raise FourdError(f"{weights} has no model card {cpath.name} beside it; a model is the weights plus "
                         f"its card, as written by fourdcrystal train") from None
    except (OSError, ValueError) as exc:
        raise FourdError(f"{cpath}: unreadable model card ({exc})") from None
    if not isinstance(card, dict) or card.get("schema") != CARD_SCHEMA:
        raise FourdError(f"{cpath}: schema {card.get('schema') if isinstance(card, dict) else None!r}, "
                         f"expected {CARD_SCHEMA!r}")
    return card


def resolve_weights(model: str | Path | None) -> Path:
    """The weights file of MODEL: ``None`` is the default shipped model ``"release"``; a name in ``SHIPPED`` is
    that shipped model unless a file of that name exists (a folder of that name does not count)."""
    name = RELEASE if model is None else str(model)
    if name not in SHIPPED or Path(name).is_file():
        return Path(model)
    if not SHIPPED[name].exists():
        hint = "; give MODEL, a model.pt written by fourdcrystal train" if model is None else ""
        raise FourdError(f"this installation has no shipped model {name} ({SHIPPED[name]} is missing){hint}")
    return SHIPPED[name]


def export_model(weights: str | Path, out_weights: str | Path, extra: dict, half: bool = True) -> dict:
    """Copy a trained model for shipping: floating-point weights as float16 (half the size), card + ``extra``.

    The network still runs in float32: ``load_state_dict`` converts the stored values on loading.
    """
    model, card = load_model(weights)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    card = {k: v for k, v in card.items() if k not in ("schema", "weights_file", "weights_sha256")}
    card.update(extra)
    card["weights_dtype"] = "float16" if half else "float32"
    card["exported_from_sha256"] = file_sha256(weights)
    return save_model(out_weights, state, card)


def update_card(weights: str | Path, key: str, section: dict) -> dict:
    """Set ``card[key] = section`` in the card of ``weights`` (checked against the weights first); atomic."""
    load_model(weights)  # the card must belong to these weights
    weights = resolve_weights(weights)
    card = read_card(weights)
    card[key] = section
    write_text_atomic(card_path(weights), json.dumps(card, indent=1, sort_keys=True, default=str) + "\n")
    return card


# what evaluate, tune and predict read from a card (load_model(..., inference=True)); checked before any work
INFERENCE_CARD_KEYS = ("input.k_sampling_invA", "input.shape", "labels.qz_scale_invA")


def _dig(card: dict, dotted: str):
    node = card
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_model(weights: str | Path, device: str | torch.device = "cpu",
               inference: bool = False) -> tuple[FCUNet, dict]:
    """Load weights after checking them against their card: (model in eval mode, card).

    ``weights`` may be ``"release"``: the model shipped inside the package. ``inference``: the card
    must also hold what predicting needs (input grid, q_z scale).
    """
    weights = resolve_weights(weights)
    card = read_card(weights)
    missing = [key for key in ("architecture", *(INFERENCE_CARD_KEYS if inference else ())) if _dig(card, key) is None]
    if missing:
        raise FourdError(f"{card_path(weights)}: the model card lacks {', '.join(missing)}; it was not written by "
                         f"fourdcrystal train (or was edited); use the card that came with the weights")
    digest = file_sha256(weights)
    if digest != card.get("weights_sha256"):
        raise FourdError(f"{weights}: sha256 {digest[:12]}… does not match its card {card_path(weights).name} "
                         f"({str(card.get('weights_sha256'))[:12]}…); the weights were changed or belong to another card")
    try:
        # cards written before the pattern-domain network have no "domain": they are the spectral one
        config = FCUNetConfig(**{"domain": "spectral", **card["architecture"]})
        model = FCUNet(config)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise FourdError(f"{weights}: weights do not fit the architecture in its card ({str(exc).splitlines()[0]})") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:  # not a state dict of tensors
        raise FourdError(f"{weights}: not a file of model weights (a state dict of tensors) but something torch "
                         f"cannot load safely ({type(exc).__name__}); use the model.pt that fourdcrystal train "
                         f"wrote") from None
    return model.to(device).eval(), card


def read_tilt_reader(path: str | Path | None = None):
    """The learned tilt read stored at ``path`` (default: the shipped :data:`TILT_READ_WEIGHTS`) as a
    :class:`fourdcrystal.detection.tilt.TiltReader`; ValueError where the file is not one."""
    from ..detection.tilt import TiltReader

    path = Path(path) if path is not None else TILT_READ_WEIGHTS
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg})") from None
    return TiltReader.from_dict(d, str(path))
