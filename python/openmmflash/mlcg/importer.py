"""Import mlcg (CGSchNet) files as FlashSchNet models with bead-type tables and priors.

Recognised files (all read by ``safeunpickler``, so no code from them runs):

- simulation file ``torch.save((model, configurations))`` (e.g. ``*_specialized_model_and_config.pt``)
- a pickled model: ``SumOut`` (SchNet + priors), ``GradientsOut`` or ``StandardSchNet``
- a PyTorch Lightning checkpoint (``.ckpt``): the model object in ``hyper_parameters["model"]``, the trained weights
  in ``state_dict``
- a prior file (``ModuleDict`` of priors, e.g. ``sparse_prior_cln_ca.pt``), passed as ``priorFile``
- a structures file (list of ``AtomicData``), for ``writeCGPdb``

>>> model = importMlcg("model_and_config.pt")                  # doctest: +SKIP
>>> model.save("model.pt"); writeCGPdb("model_and_config.pt", "cg.pdb")   # doctest: +SKIP
"""

import datetime
import hashlib
import os
import pickletools
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from openmmflash.cg.mapping import AMINO_ACIDS
from openmmflash.mlcg.priorconvert import PRIOR_KINDS, convertPriorTerms, convertPriors
from openmmflash.mlcg.safeunpickler import PickledObject, loadPickled
from openmmflash.mlcg.schnetconvert import SCHNET_CLASSES, children, className, convertSchNet, findSchNet

# mlcg's CA/5-bead bead types: residue type = index of the one-letter code in alphabetical order + 1.
ONE_LETTER = "ACDEFGHIKLMNPQRSTVWY"
THREE_LETTER = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE",
                "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER",
                "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR"}
RESIDUE_TYPES = {THREE_LETTER[c]: k + 1 for k, c in enumerate(ONE_LETTER)}
FIVE_BEAD_SHARED = {"N": 21, "CA": 22, "C": 23, "O": 24}
MLCG_MASS_UNIT = 418.4  # amu per mlcg mass unit (kcal/mol, Angstrom, ps)


def beadTypeTable(mapping: str) -> Dict[str, int]:
    """mlcg's bead-type table for the "ca" or "5bead" mapping, as FlashSchNet's "RES:NAME"/"NAME" keys."""
    assert set(RESIDUE_TYPES) == set(AMINO_ACIDS)
    if mapping == "ca":
        return {f"{res}:CA": t for res, t in RESIDUE_TYPES.items()}
    if mapping == "5bead":
        table = dict(FIVE_BEAD_SHARED)
        table["GLY:CA"] = RESIDUE_TYPES["GLY"]
        table.update({f"{res}:CB": t for res, t in RESIDUE_TYPES.items() if res != "GLY"})
        return table
    raise ValueError(f"unknown mapping {mapping!r}; choose 'ca' or '5bead'")


@dataclass
class MlcgFile:
    """What an mlcg file holds: the SchNet (placeholder), its trained weights, named priors, configurations."""

    path: str
    kind: str                                    # "simulation" | "model" | "lightning" | "priors" | "structures"
    schnet: Optional[PickledObject] = None
    weights: Dict[str, torch.Tensor] = field(default_factory=dict)
    priors: Dict[str, PickledObject] = field(default_factory=dict)
    configurations: List[PickledObject] = field(default_factory=list)


def isMlcgFile(path: str) -> bool:
    """Whether ``path`` is a torch zip archive whose pickle names an mlcg class (its opcodes are scanned; nothing
    is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pkl) != 1:
                return False
            data = archive.read(pkl[0])
    except (OSError, zipfile.BadZipFile):
        return False
    if b"mlcg." not in data:
        return False
    strings = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL" and str(arg).startswith("mlcg."):
                return True
            if op.name == "STACK_GLOBAL" and strings and strings[-1 if len(strings) < 2 else -2].startswith("mlcg."):
                return True
            if isinstance(arg, str):
                strings = (strings + [arg])[-2:]
    except Exception:   # a malformed pickle is not an mlcg file (loading it would fail with its own error)
        return False
    return False


def _priorsOf(module) -> Dict[str, PickledObject]:
    """Named priors of a SumOut / ModuleDict (GradientsOut wrappers unwrapped), SchNets left out."""
    out = {}
    for name, sub in children(module).items():
        inner = children(sub).get("model", sub) if className(sub).endswith("GradientsOut") else sub
        if className(inner) in SCHNET_CLASSES:
            continue
        if className(inner) in PRIOR_KINDS or className(inner).startswith("mlcg.nn.prior."):
            out[name] = inner
        elif className(inner) == "torch.nn.modules.container.ModuleDict":
            out.update(_priorsOf(inner))
        else:
            out[name] = inner   # refused later by priorKind with its class name
    return out


def readMlcgFile(path: str) -> MlcgFile:
    """Classify and unpack an mlcg file (see the module docstring)."""
    obj = loadPickled(path)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], (list, tuple)):
        out = readModelObject(path, obj[0], "simulation")
        out.configurations = list(obj[1])
        return out
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:
        hp = obj["hyper_parameters"]
        model = hp.get("model") if isinstance(hp, dict) else getattr(hp, "model", None)
        if model is None:
            raise ValueError(f"{path!r} is a Lightning checkpoint without hyper_parameters['model']; FlashSchNet "
                             "needs the pickled model structure that mlcg's PLModel saves there")
        out = readModelObject(path, model, "lightning")
        # Trained weights: state_dict keys are "<prefix>.<path inside the SchNet>".
        anchor = "embedding_layer.weight"
        prefixes = [k[: -len(anchor)] for k in obj["state_dict"] if k.endswith(anchor)]
        if len(prefixes) != 1:
            raise ValueError(f"{path!r}: expected one SchNet in the checkpoint's state_dict, found {len(prefixes)}")
        out.weights = {k[len(prefixes[0]):]: v for k, v in obj["state_dict"].items() if k.startswith(prefixes[0])}
        return out
    if isinstance(obj, list) and obj and all(className(o).endswith("AtomicData") for o in obj):
        return MlcgFile(path, "structures", configurations=list(obj))
    if isinstance(obj, PickledObject):
        if className(obj) == "torch.nn.modules.container.ModuleDict" and not _hasSchNet(obj):
            return MlcgFile(path, "priors", priors=_priorsOf(obj))
        return readModelObject(path, obj, "model")
    raise ValueError(f"{path!r} is not a recognised mlcg file (top-level object {type(obj).__name__})")


def _hasSchNet(obj) -> bool:
    try:
        findSchNet(obj)
        return True
    except ValueError:
        return False


def readModelObject(path: str, model, kind: str) -> MlcgFile:
    _, schnet = findSchNet(model)
    priors = _priorsOf(model) if className(model) not in SCHNET_CLASSES else {}
    return MlcgFile(path, kind, schnet=schnet, priors=priors)


def detectMapping(types) -> str:
    """"5bead" when the bead types include mlcg's backbone types (21-24), else "ca"."""
    return "5bead" if any(int(t) > 20 for t in types) else "ca"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def importMlcg(checkpoint: str, priorFile: Optional[str] = None, mapping: Optional[str] = None,
               includePriors: bool = True, structures: Optional[str] = None):
    """FlashSchNet model (eval mode, float32 weights) of an mlcg file, with metadata for OpenMM.

    Parameters
    ----------
    checkpoint : str
        Simulation file, pickled model or Lightning ``.ckpt`` holding an mlcg ``StandardSchNet``.
    priorFile : str, optional
        mlcg prior file whose type tables replace the checkpoint's priors (needed for a bare SchNet or ``.ckpt``).
    mapping : {"ca", "5bead"}, optional
        CG mapping; default: from the stored configurations' or the priors' bead types, else "ca".
    includePriors : bool
        Convert the priors (``metadata["priors"]``) too.
    structures : str, optional
        mlcg structures file whose first configuration replaces the checkpoint's stored one (start structure,
        masses, and the term lists of priors that bead types alone cannot assign).

    CA priors become bead-type-keyed tables (any sequence); priors that bead types cannot assign (5-bead prior
    sets, or static priors whose values differ between terms of equal types) become explicit term lists bound to
    the stored structure.
    """
    source = readMlcgFile(checkpoint)
    if source.schnet is None:
        raise ValueError(f"{checkpoint!r} holds no SchNet (it is an mlcg {source.kind} file); pass the model file as "
                         "CHECKPOINT and this file with --priors" if source.kind == "priors" else
                         f"{checkpoint!r} holds no SchNet (it is an mlcg {source.kind} file)")
    model = convertSchNet(source.schnet, source.weights)
    config0 = source.configurations[0] if source.configurations else None
    priors_src, prior_path = source.priors, checkpoint
    if priorFile is not None:
        prior_file = readMlcgFile(priorFile)
        if not prior_file.priors:
            raise ValueError(f"{priorFile!r} holds no mlcg priors")
        priors_src, prior_path = prior_file.priors, priorFile
    if structures is not None:
        stored = readMlcgFile(structures).configurations
        if not stored:
            raise ValueError(f"{structures!r} stores no configurations")
        config0 = stored[0]
    types = config0._store._mapping["atom_types"].tolist() if config0 is not None else []
    tables, terms = {}, {}
    if includePriors and priors_src:
        try:
            tables = convertPriors(priors_src, config0)
        except ValueError as err:
            if config0 is None:
                raise
            terms, reason = convertPriorTerms(priors_src, config0), str(err)
    if mapping is None:
        keys = [int(t) for table in tables.values() for key in table for t in key.split("-")]
        mapping = detectMapping(types or keys)
    if tables and mapping != "ca":
        # mlcg's 5-bead prior sets split terms by role (per-residue phi/psi, omega, gamma, termini), which bead
        # types alone do not tell apart: use the stored structure's own term lists.
        if config0 is None:
            raise ValueError(f"the {mapping} priors need the term lists of a stored structure (mlcg neighbour lists); "
                             "pass a structures file with --structures")
        tables, terms, reason = {}, convertPriorTerms(priors_src, config0), f"{mapping} mapping"
    meta = {"mapping": mapping, "beadTypes": beadTypeTable(mapping)}
    if tables:
        meta["priors"] = {"typed": True, "beadTypes": meta["beadTypes"], "repulsionExclusion": 2, **tables}
    elif terms:
        meta["priors"] = {"typed": True, "beadTypes": meta["beadTypes"], "numBeads": len(types), "terms": terms,
                          "boundToStoredStructure": reason}
    masses = {}
    if config0 is not None and config0._store._mapping.get("masses") is not None:
        for t, m in zip(types, config0._store._mapping["masses"].tolist()):
            masses[str(int(t))] = float(m) * MLCG_MASS_UNIT
    meta["mlcg"] = {"source": os.path.basename(checkpoint), "sourceSha256": _sha256(checkpoint),
                    "sourceKind": source.kind, "priorSource": os.path.basename(prior_path) if tables else None,
                    "priorNames": sorted(priors_src) if tables else [], "massesByType": masses}
    meta["provenance"] = {"importedFrom": "mlcg", "torch": str(torch.__version__),
                          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if config0 is not None:
        meta["structure"] = configurationPdb(config0, mapping)   # start structure (openmmflash demo --model)
    model.metadata = meta
    return model


def configurationTopology(types, mapping: str = "ca"):
    """CG Topology of a stored structure from its mlcg bead types: CA beads ("ca"), or N, CA, CB, C, O beads
    ("5bead": a residue starts at each N bead, type 21; a residue-type bead right after N is glycine's CA)."""
    from openmmflash.cg.mapping import CGMapping, ELEMENTS
    from openmmflash.stack import import_openmm

    app = import_openmm().app
    by_type = {t: res for res, t in RESIDUE_TYPES.items()}
    shared = {t: name for name, t in FIVE_BEAD_SHARED.items()}
    residues = []                      # [residue name, [bead names]]
    for k, t in enumerate(int(t) for t in types):
        if mapping == "ca":
            if t not in by_type:
                raise ValueError(f"bead {k} has type {t}, not a CA residue type (1-20)")
            residues.append([by_type[t], ["CA"]])
        elif t == FIVE_BEAD_SHARED["N"]:
            residues.append(["GLY", ["N"]])
        elif not residues:
            raise ValueError("a 5-bead structure must start with an N bead (type 21)")
        elif t in shared:
            residues[-1][1].append(shared[t])
        elif t in by_type:
            first = residues[-1][1] == ["N"]
            residues[-1][1].append("CA" if first else "CB")
            residues[-1][0] = by_type[t]
        else:
            raise ValueError(f"bead {k} has type {t}, unknown to mlcg's 5-bead mapping")
    topology = app.Topology()
    chain = topology.addChain("A")
    for k, (name, beads) in enumerate(residues):
        residue = topology.addResidue(name, chain, str(k + 1))
        for bead in beads:
            topology.addAtom(bead, app.Element.getBySymbol(ELEMENTS[bead]), residue)
    atoms = list(topology.atoms())
    for i, j in CGMapping(mapping).bondedPairs(topology):
        topology.addBond(atoms[i], atoms[j])
    return topology


def configurationPdb(configuration, mapping: Optional[str] = None) -> str:
    """PDB text (CA beads, Angstrom) of one stored mlcg ``AtomicData`` configuration."""
    import io

    from openmmflash.stack import import_openmm

    store = configuration._store._mapping
    types = store["atom_types"].tolist()
    topology = configurationTopology(types, mapping or detectMapping(types))
    openmm = import_openmm()
    positions = [openmm.Vec3(*(float(x) for x in row)) for row in store["pos"].tolist()] * openmm.unit.angstrom
    text = io.StringIO()
    openmm.app.PDBFile.writeFile(topology, positions, text, keepIds=True)
    return text.getvalue()


def writeCGPdb(path: str, output: str, frame: int = 0, mapping: Optional[str] = None) -> str:
    """Write stored configuration ``frame`` of an mlcg simulation/structures file as a CG PDB; returns ``output``."""
    source = readMlcgFile(path)
    if not source.configurations:
        raise ValueError(f"{path!r} stores no configurations; pass a simulation file or a structures file "
                         "(list of AtomicData) for the PDB")
    if not 0 <= frame < len(source.configurations):
        raise ValueError(f"frame {frame} out of range: {path!r} stores {len(source.configurations)} configurations")
    text = configurationPdb(source.configurations[frame], mapping)
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, output)
    return output


def beadMasses(model, topology) -> List[float]:
    """Bead masses (amu) of a CG topology from an imported model's stored mlcg masses (per bead type)."""
    from openmmflash.cg.mapping import beadTypesFromTopology

    table = model.metadata.get("mlcg", {}).get("massesByType") or {}
    types = beadTypesFromTopology(topology, model.metadata["beadTypes"])
    missing = sorted({t for t in types if str(t) not in table})
    if missing:
        raise ValueError(f"the model stores no mlcg mass for bead types {missing}; set the masses yourself")
    return [table[str(t)] for t in types]
