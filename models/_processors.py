"""Building, saving and loading processors, including where torchvision is missing.

Quirk (transformers 5.x): the Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision processors have a ``video_processor``
attribute, and every video processor class needs torchvision. Without torchvision these processors can be neither
constructed (``ProcessorMixin`` type-checks each attribute) nor loaded with ``AutoProcessor`` (``AutoVideoProcessor``
raises "requires torchvision"), although images never touch the video processor. We only ever feed images, so there
we use an *image-only subclass* of the processor class: the same class with ``video_processor`` left out of its
attributes. Nothing in transformers is patched; with torchvision installed the ordinary classes are used.
"""

from __future__ import annotations

import functools

from transformers.utils import is_torchvision_available


def processor_has_video(processor_cls) -> bool:
    return "video_processor" in processor_cls.get_attributes()


@functools.cache
def image_only(processor_cls):
    """``processor_cls`` without its video processor (images only); the class itself when it has none.

    The subclass keeps the class name, so a folder it saves names the ordinary processor class.
    """
    if not processor_has_video(processor_cls):
        return processor_cls
    attributes = [name for name in processor_cls.get_attributes() if name != "video_processor"]
    return type(
        processor_cls.__name__,
        (processor_cls,),
        {
            "get_attributes": classmethod(lambda cls: list(attributes)),
            "__module__": __name__,
            "__doc__": f"{processor_cls.__name__} for images only (no video processor: torchvision is missing).",
        },
    )


def processor_class(processor_cls):
    """The class to build or load: the ordinary one, or its image-only subclass where torchvision is missing."""
    return processor_cls if is_torchvision_available() else image_only(processor_cls)


def load_processor(source: str, model_type: str | None = None, class_name: str | None = None, **kwargs):
    """``AutoProcessor.from_pretrained``, or ``class_name``'s ``from_pretrained`` where the family names its own
    class; where that fails for want of torchvision, the family's image-only processor."""
    import transformers
    from transformers import AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    if class_name is not None:
        return processor_class(getattr(transformers, class_name)).from_pretrained(source, **kwargs)
    try:
        return AutoProcessor.from_pretrained(source, **kwargs)
    except Exception:
        if is_torchvision_available():
            raise
        cls = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "", None)
        if cls is None or not processor_has_video(cls):
            raise
        return image_only(cls).from_pretrained(source, **kwargs)
