"""Load and save a VLM's processor (image processor + tokenizer + chat template), torchvision or not.

``AutoProcessor`` needs torchvision for processors that carry a video sub-processor (Qwen2-VL,
Qwen2.5-VL, LLaVA-OneVision, InternVL, SmolVLM); without it, construction fails or silently yields a
bare tokenizer. Images are all this project feeds, so the fallback builds the same processor class
from its parts (the PIL image processor, the tokenizer, the chat template) with no video processor,
and the saver writes the same files ``save_pretrained`` would.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from selfsynth.errors import SelfsynthError

log = logging.getLogger(__name__)

_PROCESSOR_FILE = "processor_config.json"
_IMAGE_FILE = "preprocessor_config.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise SelfsynthError(
            f"{path}: not valid JSON ({e.msg}); restore the file from the original model"
        ) from None


def is_full_processor(proc: Any) -> bool:
    """True when ``proc`` is a multimodal processor (not just a tokenizer) that can process images."""
    from transformers.processing_utils import ProcessorMixin

    return isinstance(proc, ProcessorMixin) and getattr(proc, "image_processor", None) is not None


def load_processor(path: str | Path) -> Any:
    """The processor of the model directory ``path``; falls back to assembling it without a video part."""
    from transformers import AutoProcessor

    path = Path(path)
    try:
        proc = AutoProcessor.from_pretrained(path)
        if is_full_processor(proc):
            return proc
        log.info(
            "AutoProcessor gave %s for %s; assembling the processor from its parts", type(proc).__name__, path
        )
    except (ImportError, ValueError, OSError, TypeError, AttributeError) as e:
        log.info("AutoProcessor failed for %s (%s); assembling the processor from its parts", path, e)
    return _assemble(path)


def _assemble(path: Path) -> Any:
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    proc_cfg = _read(path / _PROCESSOR_FILE)
    image_cfg = dict(proc_cfg.get("image_processor") or _read(path / _IMAGE_FILE))
    model_type = AutoConfig.from_pretrained(path).model_type
    cls_name = (
        proc_cfg.get("processor_class")
        or image_cfg.get("processor_class")
        or PROCESSOR_MAPPING_NAMES.get(model_type)
    )
    if not cls_name or not hasattr(transformers, cls_name):
        raise SelfsynthError(
            f"{path}: cannot tell which processor this model uses (model_type={model_type!r}); "
            f"add a {_PROCESSOR_FILE} with a 'processor_class'"
        )
    if not image_cfg:
        raise SelfsynthError(
            f"{path}: no image processor settings ({_PROCESSOR_FILE} or {_IMAGE_FILE}); "
            "this directory does not look like a vision-language model"
        )
    image_cls_name = (IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}).get("pil")
    if image_cls_name is None:
        declared = str(image_cfg.get("image_processor_type", ""))
        image_cls_name = declared if declared.endswith("Pil") else declared + "Pil"
    image_cls = getattr(transformers, image_cls_name, None)
    if image_cls is None:
        raise SelfsynthError(
            f"{path}: no PIL image processor {image_cls_name!r} in transformers "
            f"{transformers.__version__}; install torchvision or upgrade transformers"
        )
    image_cfg.pop("image_processor_type", None)
    image_cfg.pop("processor_class", None)
    image_proc = image_cls(**image_cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    cls = getattr(transformers, cls_name)
    extra = {
        k: v
        for k, v in proc_cfg.items()
        if k not in ("processor_class", "image_processor", "video_processor")
    }
    return build_without_video(cls, image_proc, tokenizer, chat_template=read_chat_template(path), **extra)


def build_without_video(cls: type, image_processor: Any, tokenizer: Any, **kwargs: Any) -> Any:
    """Instantiate processor class ``cls`` with ``video_processor=None`` (no torchvision needed).

    ``ProcessorMixin`` type-checks every sub-processor against a class that does not import
    without torchvision; a ``None`` video processor is skipped here and never used for images.
    """
    import inspect

    from transformers.processing_utils import ProcessorMixin

    obj = cls.__new__(cls)
    check = ProcessorMixin.check_argument_for_proper_class
    obj.check_argument_for_proper_class = lambda name, arg: None if arg is None else check(obj, name, arg)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params or "kwargs" in params}
    if "video_processor" in params:
        kwargs["video_processor"] = None
    try:
        cls.__init__(obj, image_processor=image_processor, tokenizer=tokenizer, **kwargs)
    finally:
        del obj.check_argument_for_proper_class
    return obj


def read_chat_template(path: Path) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    data = _read(path / "chat_template.json")
    return data.get("chat_template") if data else None


def save_processor(proc: Any, out: str | Path) -> None:
    """``proc.save_pretrained(out)``, or the same files by hand when it has no video processor."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(proc, "video_processor", "absent") is not None:
        proc.save_pretrained(out)
        return
    proc.tokenizer.save_pretrained(out)
    # to_dict keeps every setting the class's __init__ takes (image_seq_length, num_image_tokens...),
    # so _assemble rebuilds the same processor; the absent video processor is left out.
    cfg = {k: v for k, v in proc.to_dict().items() if k != "video_processor"}
    (out / _PROCESSOR_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    if isinstance(proc.chat_template, str):
        (out / "chat_template.jinja").write_text(proc.chat_template, encoding="utf-8")
