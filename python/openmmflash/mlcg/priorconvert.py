"""mlcg prior modules (read by ``safeunpickler``) -> bead-type-keyed prior tables (``openmmflash.cg.typedpriors``).

Two sources:

- **Type tables** (a prior file such as ``sparse_prior_cln_ca.pt``, or a non-specialized model): ``GeneralBonds``,
  ``HarmonicBonds``, ``GeneralAngles``, ``HarmonicAngles``, ``Dihedral`` hold sparse COO or dense tables indexed by
  bead types (x_0/k [T, T]; [T, T, T]; k1s/k2s [n_degs, T, T, T, T], v_0 [T, T, T, T]); ``Repulsion`` a dense
  sigma [T, T]. Every key listed in ``allowed_interaction_keys`` (or non-zero in the table) becomes an entry.
- **Static buffers** (a specialized simulation file, ``mlcg.simulation.specialize_prior.Static*``): per-term values
  for all stored configurations concatenated. The first configuration's share (its term count, from its
  ``neighbor_list[name]["index_mapping"]``) is keyed by that configuration's bead types.

Parameters stay in the model's units (kcal/mol, Angstrom, radians).
"""

from typing import Dict, List, Optional

import torch

from openmmflash.cg.typedpriors import typeKey
from openmmflash.mlcg.schnetconvert import UnsupportedModelError, className

PRIOR_KINDS = {
    "mlcg.nn.prior.harmonic.GeneralBonds": "bonds", "mlcg.nn.prior.harmonic.HarmonicBonds": "bonds",
    "mlcg.nn.prior.harmonic.GeneralAngles": "angles", "mlcg.nn.prior.harmonic.HarmonicAngles": "angles",
    "mlcg.nn.prior.fourier_series.Dihedral": "dihedrals", "mlcg.nn.prior.repulsion.Repulsion": "repulsion",
}
for _name, _kind in list(PRIOR_KINDS.items()):
    PRIOR_KINDS[f"mlcg.simulation.specialize_prior.Static{_name.rsplit('.', 1)[1]}"] = _kind
ORDERS = {"bonds": 2, "angles": 3, "dihedrals": 4, "repulsion": 2}


def priorKind(module) -> str:
    name = className(module)
    if name not in PRIOR_KINDS:
        raise UnsupportedModelError(f"prior {name} is not supported; supported priors: "
                                    f"{', '.join(sorted(k.rsplit('.', 1)[1] for k in PRIOR_KINDS))}")
    return PRIOR_KINDS[name]


def _buffer(module, *names) -> Optional[torch.Tensor]:
    buffers = getattr(module, "_buffers", {}) or {}
    for name in names:
        if buffers.get(name) is not None:
            value = buffers[name]
            return value.to_dense() if value.is_sparse else value
    return None


def _entry(kind: str, module, index, static: bool) -> dict:
    """Parameters of one term: ``index`` is a type tuple (tables) or a term position (static buffers)."""
    def at(t):
        return t[index] if static else t[tuple(index)]

    if kind in ("bonds", "angles"):
        x0, k, v0 = _buffer(module, "x_0", "x0"), _buffer(module, "k"), _buffer(module, "V_0", "V0")
        return {"x0": float(at(x0)), "k": float(at(k)), "v0": float(at(v0)) if v0 is not None else 0.0}
    if kind == "dihedrals":
        k1, k2, v0 = _buffer(module, "k1s"), _buffer(module, "k2s"), _buffer(module, "v_0")
        if static:
            return {"k1": [float(v) for v in k1[index]], "k2": [float(v) for v in k2[index]],
                    "v0": float(v0[index].reshape(-1)[0])}
        idx = (slice(None),) + tuple(index)
        return {"k1": [float(v) for v in k1[idx]], "k2": [float(v) for v in k2[idx]], "v0": float(v0[tuple(index)])}
    return {"sigma": float(_buffer(module, "sigma")[tuple(index)])}


def _tableKeys(kind: str, module) -> List[tuple]:
    keys = getattr(module, "allowed_interaction_keys", None)
    if keys:
        return [tuple(int(t) for t in key) for key in keys]
    main = _buffer(module, "sigma" if kind == "repulsion" else ("k1s" if kind == "dihedrals" else "k"))
    if kind == "dihedrals":
        main = main.abs().sum(0)
    return [tuple(int(t) for t in idx) for idx in main.nonzero().tolist()]


def _add(table: Dict[str, dict], key: str, entry: dict, where: str) -> None:
    old = table.get(key)
    if old is not None and old != entry:
        raise ValueError(f"{where}: conflicting parameters for bead types {key}: {old} vs {entry}")
    table[key] = entry


def convertPriors(priors: Dict[str, object], configuration=None) -> Dict[str, Dict[str, dict]]:
    """{"bonds": {"t_i-t_j": {...}}, "angles": ..., "dihedrals": ..., "repulsion": ...} from named mlcg priors.

    ``configuration`` (the first stored ``AtomicData``) is needed for static (specialized) priors.
    """
    out: Dict[str, Dict[str, dict]] = {}
    for name, module in priors.items():
        kind = priorKind(module)
        table = out.setdefault(kind, {})
        if className(module).startswith("mlcg.simulation.specialize_prior."):
            if configuration is None:
                raise ValueError(f"prior {name!r} is a specialized (static) prior; its parameters are bound to the "
                                 "stored configurations, which this file lacks")
            store = configuration._store._mapping
            lists = store.get("neighbor_list") or {}
            if name not in lists:
                raise ValueError(f"the stored configuration has no neighbour list {name!r} for prior {name!r}")
            index = lists[name]["index_mapping"]
            types = store["atom_types"]
            for term in range(index.shape[1]):
                atoms = [int(a) for a in index[:, term]]
                _add(table, typeKey(types[atoms].tolist()), _entry(kind, module, term, True), f"prior {name!r}")
        else:
            for key in _tableKeys(kind, module):
                if len(key) != ORDERS[kind]:
                    raise ValueError(f"prior {name!r}: type key {key} does not have {ORDERS[kind]} entries")
                _add(table, typeKey(key), _entry(kind, module, key, False), f"prior {name!r}")
    return out


def convertPriorTerms(priors: Dict[str, object], configuration) -> Dict[str, List[dict]]:
    """Per-term priors bound to one stored configuration: {"bonds": [{"atoms": [i, j], "x0", "k", "v0"}], ...}.

    Each prior's terms are the configuration's ``neighbor_list[name]["index_mapping"]`` (what mlcg simulates);
    static priors take the first configuration's share of their buffers, table priors look the terms' bead types
    up. Exact for every mlcg prior set (e.g. the 5-bead per-residue phi/psi, omega and gamma terms), but only for
    that structure's topology.
    """
    store = configuration._store._mapping
    lists = store.get("neighbor_list") or {}
    types = store["atom_types"]
    out: Dict[str, List[dict]] = {}
    for name, module in priors.items():
        kind = priorKind(module)
        if name not in lists:
            raise ValueError(f"the stored configuration has no neighbour list {name!r} for prior {name!r}; pass a "
                             "structures file made with this prior set (--structures)")
        index = lists[name]["index_mapping"]
        static = className(module).startswith("mlcg.simulation.specialize_prior.")
        for term in range(index.shape[1]):
            atoms = [int(a) for a in index[:, term]]
            key = term if static else tuple(int(t) for t in types[atoms])
            out.setdefault(kind, []).append({"atoms": atoms, **_entry(kind, module, key, static)})
    return out
