"""Codec lookup by name: what ``CompactWriter`` builds from its arguments and what a file header names."""

from openmmflash.compactmd.codec import BoundedCodec, GridCodec, XTCCodec
from openmmflash.compactmd.learned import LearnedCodec

CODECS = {"bounded": BoundedCodec, "xtc": XTCCodec}


def make_codec(codec="bounded", maxError=None, **params):
    """Codec from a name (``"bounded"``, ``"xtc"``, ``"learned"``) or pass an instance through."""
    if isinstance(codec, GridCodec) or hasattr(codec, "encode_frames"):
        return codec
    if codec == "learned":
        return LearnedCodec(maxError=maxError if maxError is not None else 0.05, **params)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if codec == "bounded" and maxError is not None:
        params["maxError"] = maxError
    if codec == "xtc" and maxError is not None and "precision" not in params:
        params["precision"] = 0.5 / maxError
    return CODECS[codec](**params)


def codec_from_header(name, params):
    """Rebuild the codec recorded in a file header."""
    if name == "learned":
        return LearnedCodec(**params)
    if name not in CODECS:
        raise ValueError(f"file uses codec {name!r}, which this version of openmmflash does not know")
    return CODECS[name](**params)
