"""The restricted unpickler refuses everything outside its allow-list and never runs code from a file."""

import os
import pickle
import subprocess
import zipfile

import pytest
import torch

from openmmflash.mlcg.importer import importMlcg
from openmmflash.mlcg.safeunpickler import PickledObject, UnsafePickleError, loadPickled

MLCG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mlcg")


class _Reduce:
    """Pickles as a call of ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class UnknownThing:
    """A class outside the allow-list (its module is this test module)."""

    def __init__(self):
        self.value = 1


def _save(obj, path):
    torch.save({"model": obj, "weights": torch.arange(3.0)}, path)
    return path


@pytest.mark.parametrize("payload, name", [
    (lambda marker: _Reduce(os.system, (f"touch {marker}",)), "system"),
    (lambda marker: _Reduce(eval, (f"open({str(marker)!r}, 'w')",)), "builtins.eval"),
    (lambda marker: _Reduce(subprocess.Popen, (["touch", str(marker)],)), "subprocess.Popen"),
    (lambda marker: UnknownThing(), "UnknownThing"),
])
def test_refuses_globals_outside_allow_list(tmp_path, payload, name):
    marker = tmp_path / "executed"
    path = _save(payload(marker), str(tmp_path / "evil.pt"))
    with pytest.raises(UnsafePickleError, match=name):
        loadPickled(path)
    with pytest.raises(UnsafePickleError, match=name):   # the importer refuses too (same reader)
        importMlcg(path)
    assert not marker.exists(), "code from the file ran"


def test_refuses_class_creation_through_type(tmp_path):
    path = _save(_Reduce(type, ("Evil", (), {})), str(tmp_path / "type.pt"))
    with pytest.raises(UnsafePickleError, match="class creation"):
        loadPickled(path)


def test_refuses_raw_pickle_and_garbage(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(_Reduce(os.system, ("true",))))
    with pytest.raises(ValueError, match="not a torch zip archive"):
        loadPickled(str(path))
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("archive/version", "3")
    with pytest.raises(ValueError, match="data.pkl"):
        loadPickled(str(broken))


def test_reads_mlcg_files_into_placeholders():
    model, configurations = loadPickled(os.path.join(MLCG, "schnet_cln_ca_specialized_model_and_config.pt"))
    assert isinstance(model, PickledObject) and model.className == "mlcg.nn.gradients.SumOut"
    assert list(model._modules["models"]._modules) == ["SchNet", "non_bonded", "dihedrals", "angles", "bonds"]
    schnet = model._modules["models"]._modules["SchNet"]._modules["model"]
    assert schnet.className == "mlcg.nn.schnet.StandardSchNet"
    assert schnet._modules["rbf_layer"]._modules["cutoff"].cutoff_upper == 5.0
    weight = schnet._modules["embedding_layer"]._parameters["weight"]
    assert isinstance(weight, torch.nn.Parameter) and tuple(weight.shape) == (42, 256)
    store = configurations[0]._store._mapping
    assert tuple(store["pos"].shape) == (10, 3) and store["atom_types"].tolist()[:3] == [20, 20, 3]
    priors = loadPickled(os.path.join(MLCG, "sparse_prior_cln_ca.pt"))
    k1s = priors._modules["pseudo_ca_dihedral"]._modules["model"]._buffers["k1s"]
    assert k1s.is_sparse and tuple(k1s.shape) == (5, 21, 21, 21, 21) and k1s._nnz() == 70


def test_tensors_match_torch_load(tmp_path):
    """Dense, strided, parameter and sparse tensors come back bit-identical to torch.load."""
    dense = torch.randn(4, 6, dtype=torch.float64)
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 2], [1, 0]]), torch.tensor([1.5, -2.0]), (3, 3))
    obj = {"view": dense[:, 1::2], "param": torch.nn.Parameter(torch.randn(3)), "sparse": sparse,
           "ints": torch.arange(5, dtype=torch.int32), "shape": torch.Size([2, 3])}
    path = str(tmp_path / "t.pt")
    torch.save(obj, path)
    ours, theirs = loadPickled(path), torch.load(path, weights_only=True)
    for key in ("view", "param", "ints"):
        assert torch.equal(ours[key], theirs[key]) and ours[key].dtype == theirs[key].dtype
    assert torch.equal(ours["sparse"].to_dense(), theirs["sparse"].to_dense())
    assert ours["shape"] == torch.Size([2, 3])


def test_numpy_values(tmp_path):
    """Numeric numpy scalars and arrays (mlcg keeps numpy scalars in allowed_interaction_keys) load; object arrays
    are refused."""
    import numpy as np

    obj = {"keys": [(np.int64(3), np.int64(13))], "x": np.float32(1.5), "a": np.arange(6.0).reshape(2, 3),
           "b": b"raw"}
    path = str(tmp_path / "np.pt")
    torch.save(obj, path)
    ours = loadPickled(path)
    assert ours["keys"] == [(3, 13)] and isinstance(ours["keys"][0][0], np.int64)
    assert ours["x"] == np.float32(1.5) and ours["b"] == b"raw"
    assert np.array_equal(ours["a"], obj["a"])
    torch.save({"o": np.array([{"k": 1}], dtype=object)}, path)
    with pytest.raises(UnsafePickleError, match="numpy dtype"):
        loadPickled(path)
