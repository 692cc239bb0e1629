"""Read mlcg / PyTorch Lightning files without mlcg, PyG or any code from the file.

torch's zip format (``<archive>/data.pkl`` + ``<archive>/data/<key>`` storages) is read with a restricted
``pickle.Unpickler``: ``find_class`` resolves only an allow-list. torch's tensor rebuilders (dense, parameter,
sparse COO), storage types, ``torch.Size``/layouts, numeric numpy scalars and arrays and a few harmless builtins
resolve to real objects; the classes of mlcg, PyG and ``torch.nn`` resolve to inert placeholders
(``PickledObject``) that only record their constructor arguments and pickled state. Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, an unknown
class) is refused with ``UnsafePickleError`` naming it, before anything is called.

>>> obj = loadPickled("schnet_cln_ca_specialized_model_and_config.pt")   # doctest: +SKIP
>>> model, configurations = obj                                          # doctest: +SKIP
>>> model.className                                                      # doctest: +SKIP
'mlcg.nn.gradients.SumOut'
"""

import _compat_pickle
import collections
import io
import pickle
import zipfile
from typing import Any, Dict

import numpy as np
import torch

# Module prefixes whose classes become placeholders (never imported).
PLACEHOLDER_PREFIXES = ("mlcg.", "torch_geometric.", "torch.nn.modules.", "pytorch_lightning.", "lightning.",
                        "lightning_fabric.", "typing.", "inspect.")
PLACEHOLDER_NAMES = {"torch.Tensor", "torch.nn.parameter.Parameter",
                     "argparse.Namespace", "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig"}
STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list (the file is refused, nothing from it ran)."""


class PickledObject:
    """Inert stand-in for a pickled object of a class that is not imported (mlcg, PyG, torch.nn, typing).

    ``className`` is the dotted name from the file, ``args`` the constructor arguments, ``state`` the pickled
    state (``__dict__`` entries are also set as attributes, so ``module._modules["lin1"]`` and ``obj.cutoff_upper``
    read as usual). Calling, iterating or comparing does nothing beyond Python's defaults.
    """

    className = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}   # (dict state, slot state)
        if isinstance(state, dict):
            for key, value in state.items():
                if isinstance(key, str):
                    self.__dict__[key] = value

    def __setitem__(self, key, value):     # dict subclasses pickled with SETITEMS
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):               # list subclasses pickled with APPENDS
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values):
        for value in values:
            self.append(value)

    def __repr__(self):
        return f"<pickled {self.className}>"


_placeholder_classes: Dict[str, type] = {}


def _placeholder(dotted: str) -> type:
    cls = _placeholder_classes.get(dotted)
    if cls is None:
        cls = type(dotted.rsplit(".", 1)[-1], (PickledObject,), {"className": dotted, "__module__": __name__})
        _placeholder_classes[dotted] = cls
    return cls


class _Reference(PickledObject):
    """A pickled reference to a typing construct or attribute (e.g. ``typing.Union[...]``): recorded, not built."""


def _getitem(container, key):
    """``operator.getitem`` as pickles of typing constructs use it: only on placeholders and plain containers."""
    if isinstance(container, (PickledObject, type)) and (isinstance(container, PickledObject)
                                                         or issubclass(container, PickledObject)):
        ref = _Reference()
        ref.className = f"{getattr(container, 'className', '?')}[...]"
        ref.args = (container, key)
        return ref
    if isinstance(container, (dict, list, tuple)):
        return container[key]
    raise UnsafePickleError(f"operator.getitem on {type(container).__name__} is not allowed in an mlcg file")


def _type_of(*args):
    """``builtins.type`` with one argument only (three arguments would create a class)."""
    if len(args) != 1:
        raise UnsafePickleError("builtins.type with more than one argument (class creation) is not allowed")
    return type(args[0])


def _rebuild_sparse_tensor(layout, data):
    """Sparse COO tensor from (indices, values, size[, is_coalesced]); invariants are checked."""
    if layout != torch.sparse_coo:
        raise UnsafePickleError(f"sparse layout {layout} is not supported (only sparse COO)")
    indices, values, size = data[0], data[1], data[2]
    return torch.sparse_coo_tensor(indices, values, size, check_invariants=True)


def _get_layout(name: str):
    layouts = {str(v): v for v in (torch.strided, torch.sparse_coo)}
    if name not in layouts:
        raise UnsafePickleError(f"tensor layout {name!r} is not supported")
    return layouts[name]


NUMPY_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}


def _numpy_dtype(name, align=False, copy=True):
    """``numpy.dtype`` of a numeric type only (object arrays would carry arbitrary objects)."""
    if str(name) not in NUMPY_DTYPES:
        raise UnsafePickleError(f"numpy dtype {name!r} is not allowed (numeric dtypes only)")
    return np.dtype(str(name))


def _numpy_scalar(dtype, data=None):
    """A numpy scalar (e.g. in mlcg's ``allowed_interaction_keys``) from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise UnsafePickleError("malformed numpy scalar in the pickle")
    return np.frombuffer(data, dtype)[0]


def _numpy_reconstruct(cls, shape, code):
    """An empty numpy array that the following BUILD fills (its dtype came through ``_numpy_dtype``)."""
    if cls is not np.ndarray:
        raise UnsafePickleError("numpy array subclasses are not allowed")
    return np.ndarray((0,), dtype=np.uint8)


def _codecs_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol-2 pickles of bytes use it: a str to latin-1 bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only for latin-1 byte strings")
    return text.encode("latin-1")


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
    ("torch.serialization", "_get_layout"): _get_layout,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "int"): int,
    ("builtins", "float"): float, ("builtins", "complex"): complex, ("builtins", "slice"): slice,
    ("builtins", "type"): _type_of,
    ("_operator", "getitem"): _getitem, ("operator", "getitem"): _getitem,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _numpy_dtype, ("numpy", "ndarray"): np.ndarray,
}
for _numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED[(_numpy_core, "scalar")] = _numpy_scalar
    ALLOWED[(_numpy_core, "_reconstruct")] = _numpy_reconstruct
for _dtype_name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
    ALLOWED[("torch", _dtype_name)] = getattr(torch, _dtype_name)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` over torch's zip layout with the allow-list above."""

    def __init__(self, data: bytes, storages):
        super().__init__(io.BytesIO(data))
        self._storages = storages
        self._loaded = {}

    def find_class(self, module: str, name: str):
        # Python 2 names that protocol-2 pickles (torch.save) use, as Python 3 names (__builtin__ -> builtins).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if name in STORAGE_DTYPES and module == "torch":
            return _StorageType(STORAGE_DTYPES[name])
        dotted = f"{module}.{name}"
        if dotted in PLACEHOLDER_NAMES or dotted.startswith(PLACEHOLDER_PREFIXES) or module in ("typing", "inspect"):
            return _placeholder(dotted)
        raise UnsafePickleError(f"refusing to load {dotted}: it is not on the allow-list of globals an mlcg or "
                                "PyTorch Lightning file may name (mlcg, torch_geometric and torch.nn classes, "
                                "tensors, plain containers); the file may be corrupted or malicious")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"unsupported persistent id {pid!r:.80} (expected a torch storage)")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._loaded:
            raw = self._storages(key)
            itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
            if len(raw) != int(numel) * itemsize:
                raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, expected {numel} x {itemsize}")
            untyped = torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage() if raw else \
                torch.UntypedStorage(0)
            self._loaded[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype,
                                                           _internal=True)
        return self._loaded[key]


def loadPickled(path: str) -> Any:
    """Unpickle a torch zip file (``torch.save`` / Lightning ``.ckpt``) with the restricted unpickler."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path!r} is not a torch zip archive (torch.save since PyTorch 1.6, or a Lightning "
                         f".ckpt): {err}") from err
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path!r} has no single <archive>/data.pkl record; not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        if order in names and archive.read(order).strip() != b"little":
            raise ValueError(f"{path!r} was written on a big-endian machine; re-save it on a little-endian one")

        def storage(key: str) -> bytes:
            record = f"{prefix}data/{key}"
            if record not in names:
                raise pickle.UnpicklingError(f"{path!r} lacks storage record {record}")
            return archive.read(record)

        return RestrictedUnpickler(archive.read(pkl[0]), storage).load()
