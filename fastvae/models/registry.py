"""The model registry: every public fastvae model class under its model name (``fastvae train --model NAME``).

Each model class registers itself where it is defined (``@register("slcvae")``);
importing :mod:`fastvae.models` imports them all, in the order SentenceVAE,
CVAE, SLCVAE, Seq2Seq. The layers above look classes up here (by model name
for the CLI, run.json and presets; by class name for ``config.json`` and
checkpoints) and ask a model what it can do through its capability
attributes (``has_latent``, ``is_conditional``, ``has_labeling_phase``, see
:class:`fastvae.models.base.BaseModel`), never through ``isinstance`` on one
model class.
"""

from typing import Any, Dict, Optional, Tuple, Type, Union

_BY_NAME: Dict[str, type] = {}  # model name -> class, in the order of registration


def register(name: str):
    """Class decorator: record a model class under ``name`` (the name ``fastvae train --model`` takes)."""

    def add(cls):
        if name in _BY_NAME:
            raise ValueError(f"model name {name!r} is taken by {_BY_NAME[name].__name__}")
        _BY_NAME[name] = cls
        return cls

    return add


def model_names() -> Tuple[str, ...]:
    """The model names, in the order of registration (``("sentence-vae", "cvae", "slcvae", "seq2seq")``)."""
    return tuple(_BY_NAME)


def model_class(model: Union[str, type]) -> Type[Any]:
    """The class of ``model``: a model name such as ``"slcvae"``, or a registered class (returned as it is).

    A ValueError names the known model names for anything else.
    """
    if isinstance(model, str) and model in _BY_NAME:
        return _BY_NAME[model]
    if isinstance(model, type) and model in _BY_NAME.values():
        return model
    known = ", ".join(sorted(_BY_NAME))
    if isinstance(model, str):
        raise ValueError(f"unknown model {model!r}; choose one of {known}")
    raise ValueError(f"model must be a model name ({known}) or class, got {model!r}")


def model_classes() -> Dict[str, type]:
    """The registered classes by class name (``{"SentenceVAE": SentenceVAE, ...}``): how config.json names them."""
    return {cls.__name__: cls for cls in _BY_NAME.values()}


def model_name(model: Any) -> str:
    """The model name of a registered model class or of an instance of one (its nearest registered class)."""
    cls = model if isinstance(model, type) else type(model)
    for klass in cls.__mro__:
        for name, registered in _BY_NAME.items():
            if registered is klass:
                return name
    raise TypeError(f"{cls.__name__} is not a fastvae model ({describe()})")


def describe(capability: Optional[str] = None) -> str:
    """``"SentenceVAE, CVAE, SLCVAE or Seq2Seq"``: the registered classes for messages; with ``capability``
    (say ``"is_conditional"``) only those whose attribute of that name is true."""
    names = [cls.__name__ for cls in _BY_NAME.values() if capability is None or getattr(cls, capability)]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def check_model(model: Any, name: str = "model") -> Any:
    """``model`` itself when it is an instance of a registered model class; otherwise a TypeError naming ``name``."""
    if not isinstance(model, tuple(_BY_NAME.values())):
        raise TypeError(f"{name} must be a fastvae model ({describe()}), got {type(model).__name__}")
    return model
