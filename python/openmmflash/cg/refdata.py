"""All-atom reference data for CG force matching: OpenMM MD recording CG-mapped coordinates and forces.

A reference run is a directory::

    metadata.json        provenance (force field, temperature, timestep, friction, steps, mapping, platform,
                         versions, force aggregation) and progress (stepsDone, shards)
    allatom.pdb          the prepared all-atom structure (energy-minimized, with hydrogens)
    cg.pdb               the CG topology with the mapped minimized positions (the "native" reference)
    shard_00000.npz ...  positions (frames, beads, 3) float32 nm, forces (frames, beads, 3) float32 kJ/mol/nm,
                         step (frames,) int64, time (frames,) float64 ps, and "provenance" (JSON text)
    checkpoint.chk       OpenMM checkpoint written together with the last shard (resume point)

Force aggregation (the mapped force must be consistent with the mapping for force matching to estimate the mean
force): a bead sits on one atom (slice mapping); every other atom of a residue is assigned to the bead atom nearest
to it in the bond graph of its residue (ties: mapping order N, CA, CB, C, O), hydrogens always with the heavy atom
they are bonded to. The mapped force on a bead is the **sum** of the forces on the atoms assigned to it. This force
map B satisfies M B^T = 1 (it is 1 on the bead's own atom and 0 on every other bead atom), so translating a bead's
atom group rigidly moves exactly that bead; the group contains every hydrogen constrained to one of its atoms, so
the HBonds constraint forces cancel inside the sum (Kramer et al., JCTC 2023, "statistically optimal force
aggregation" discuss such maps). OpenMM's ``getForces`` excludes constraint and thermostat forces.
"""

import json
import os
import time
from collections import deque
from typing import Dict, List, Optional, Sequence

import numpy as np

from openmmflash.cg.mapping import CGMapping, canonicalResidue
from openmmflash.cg.repair import addMissingAtoms, addMissingHydrogens
from openmmflash.stack import import_openmm

ONE_LETTER = {"A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
              "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
              "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL"}
FORCE_FIELDS = ("amber14-all.xml", "implicit/gbn2.xml")
# Backbone (phi, psi) in degrees of the CLN025 beta hairpin (YYDPETGTWY), measured from an all-atom structure of
# a public repository (jacopoventurin/replica1, chignolin.pdb); used to start chignolin (GYDPETGTWG) folded.
HAIRPIN_PHI_PSI = [(None, -87.4), (-155.8, 149.9), (-146.7, 134.5), (-56.8, 133.6), (-72.9, -27.6),
                   (-77.0, -20.3), (76.0, -32.4), (-81.2, -21.6), (-137.0, 150.5), (-134.7, None)]
FORMAT_VERSION = 1


def checkSequence(sequence: str) -> List[str]:
    """Three-letter residue names of a one-letter sequence; unknown letters are refused."""
    seq = "".join(sequence.split()).upper()
    if not seq:
        raise ValueError("the sequence is empty; give one-letter amino-acid codes, e.g. GYDPETGTWG")
    bad = sorted({(i + 1, c) for i, c in enumerate(seq) if c not in ONE_LETTER})
    if bad:
        where = ", ".join(f"{c!r} at position {i}" for i, c in bad[:10])
        raise ValueError(f"unknown residue codes in the sequence: {where}; only the 20 standard amino acids "
                         f"{''.join(sorted(ONE_LETTER))} are supported")
    return [ONE_LETTER[c] for c in seq]


def _fixer_to_model(fixer, addHydrogens: bool = True, pH: float = 7.0):
    if addHydrogens:
        addMissingHydrogens(fixer, pH)
    return fixer.topology, fixer.positions


def buildFromSequence(sequence: str, phiPsi: Optional[Sequence] = None, pH: float = 7.0):
    """All-atom (topology, positions) of a peptide: PeptideBuilder backbone + side chains, pdbfixer terminals and
    hydrogens. ``phiPsi``: per residue (phi, psi) in degrees (None entries: extended); default extended."""
    import io

    import PeptideBuilder
    from Bio.PDB import PDBIO
    from pdbfixer import PDBFixer

    names = checkSequence(sequence)
    seq = "".join(k for n in names for k, v in ONE_LETTER.items() if v == n)
    n = len(seq)
    if phiPsi is not None and len(phiPsi) != n:
        raise ValueError(f"phiPsi has {len(phiPsi)} entries but the sequence has {n} residues")
    phi = [(phiPsi[i][0] if phiPsi and phiPsi[i][0] is not None else -120.0) for i in range(1, n)]
    psi = [(phiPsi[i][1] if phiPsi and phiPsi[i][1] is not None else 140.0) for i in range(0, n - 1)]
    structure = PeptideBuilder.make_structure(seq, phi, psi) if n > 1 else PeptideBuilder.initialize_res(seq)
    if n == 1:
        from Bio.PDB import Chain, Model, Structure

        chain = Chain.Chain("A")
        chain.add(structure)
        model = Model.Model(0)
        model.add(chain)
        structure = Structure.Structure("X")
        structure.add(model)
    out = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(out)
    fixer = PDBFixer(pdbfile=io.StringIO(out.getvalue()))
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    addMissingAtoms(fixer)
    return _fixer_to_model(fixer, True, pH)


def loadAllAtom(path: str, repair: bool = True, pH: float = 7.0):
    """All-atom (topology, positions) of the protein in a PDB/mmCIF file (optionally gzipped, ``.pdb.gz``),
    hydrogens added; solvent removed.

    Missing heavy atoms and terminal atoms are added by pdbfixer when ``repair`` is True, else refused. Chains with
    missing internal residues (gaps) are always refused: they would need loop modelling.
    """
    from pdbfixer import PDBFixer

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no structure file at {path!r}")
    if path.endswith(".gz"):  # e.g. the PDB files shipped gzipped in MDAnalysisTests/data
        import gzip
        import io

        with gzip.open(path, "rt") as f:
            text = f.read()
        fixer = PDBFixer(pdbxfile=io.StringIO(text)) if path[:-3].lower().endswith((".cif", ".mmcif")) \
            else PDBFixer(pdbfile=io.StringIO(text))
    else:
        fixer = PDBFixer(filename=path)
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingResidues()
    chains = list(fixer.topology.chains())
    gaps = {k: v for k, v in fixer.missingResidues.items() if 0 < k[1] < len(list(chains[k[0]].residues()))}
    if gaps:
        shown = ", ".join(f"chain {chains[c].id} before residue index {i}: {len(v)} residues"
                          for (c, i), v in list(gaps.items())[:5])
        raise ValueError(f"{path!r} has missing residues inside chains ({shown}); model the loops first (e.g. "
                         "with pdbfixer or MODELLER) or cut the chain there")
    fixer.missingResidues = {}
    fixer.findNonstandardResidues()
    fixer.findMissingAtoms()
    heavy = sum(len(v) for v in fixer.missingAtoms.values())
    terminal = sum(len(v) for v in fixer.missingTerminals.values())
    if fixer.nonstandardResidues or heavy:
        if not repair:
            raise ValueError(f"{path!r} has {heavy} missing heavy atoms in "
                             f"{len(fixer.missingAtoms)} residues and {len(fixer.nonstandardResidues)} nonstandard "
                             "residues; pass repair=True (cg-data --repair) to complete them with pdbfixer")
        fixer.replaceNonstandardResidues()
        fixer.findMissingAtoms()
    if heavy or terminal or fixer.missingAtoms:
        addMissingAtoms(fixer)
    for residue in fixer.topology.residues():
        if canonicalResidue(residue.name) not in ONE_LETTER.values():
            raise ValueError(f"residue {residue.name} {residue.id} is not a standard amino acid; remove it first")
    checkChainBreaks(fixer.topology, fixer.positions, path)
    return _fixer_to_model(fixer, True, pH)


def checkChainBreaks(topology, positions, source: str = "the structure", maxPeptideBond: float = 0.2) -> None:
    """Refuse consecutive residues of a chain whose C(i)-N(i+1) distance exceeds ``maxPeptideBond`` nm (a gap that
    pdbfixer cannot see without SEQRES records)."""
    unit = import_openmm().unit
    xyz = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions)
    for chain in topology.chains():
        residues = list(chain.residues())
        for a, b in zip(residues[:-1], residues[1:]):
            c = next((x.index for x in a.atoms() if x.name == "C"), None)
            n = next((x.index for x in b.atoms() if x.name == "N"), None)
            if c is None or n is None:
                continue
            d = float(np.linalg.norm(xyz[c] - xyz[n]))
            if d > maxPeptideBond:
                raise ValueError(f"{source}: chain {chain.id} is broken between residues {a.name} {a.id} and "
                                 f"{b.name} {b.id} (C-N distance {d:.2f} nm); model the missing residues first "
                                 "or split the chain")


def createReferenceSystem(topology, forceField: Sequence[str] = FORCE_FIELDS, hydrogenMass: Optional[float] = None):
    """The all-atom System: no cutoff (implicit solvent), HBonds constraints, optional hydrogen mass
    repartitioning (``hydrogenMass`` in amu; masses change dynamics, not the configurational distribution)."""
    openmm = import_openmm()
    app = openmm.app
    ff = app.ForceField(*forceField)
    extra = {"hydrogenMass": hydrogenMass * openmm.unit.amu} if hydrogenMass else {}
    return ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, **extra)


def atomBeadAssignment(topology, mapping: CGMapping, beadAtoms: Sequence[int]) -> np.ndarray:
    """Bead index of every atom (-1: not part of a mapped residue); see the module docstring for the rule."""
    assign = np.full(topology.getNumAtoms(), -1, dtype=np.int64)
    bead_of_atom = {int(a): b for b, a in enumerate(beadAtoms)}
    neighbors: Dict[int, List[int]] = {a.index: [] for a in topology.atoms()}
    for a, b in topology.bonds():
        neighbors[a.index].append(b.index)
        neighbors[b.index].append(a.index)
    order = {name: k for k, name in enumerate(mapping.beadNames)}
    for residue in topology.residues():
        atoms = list(residue.atoms())
        members = {a.index for a in atoms}
        seeds = sorted((a for a in atoms if a.index in bead_of_atom), key=lambda a: order.get(a.name, 99))
        if not seeds:
            continue
        # Multi-source breadth-first search over heavy atoms of the residue; seeds in mapping order break ties.
        queue = deque()
        for a in seeds:
            assign[a.index] = bead_of_atom[a.index]
            queue.append(a.index)
        element = {a.index: (a.element.symbol if a.element is not None else "") for a in atoms}
        while queue:
            i = queue.popleft()
            for j in neighbors[i]:
                if j in members and assign[j] < 0 and element[j] != "H":
                    assign[j] = assign[i]
                    queue.append(j)
        for a in atoms:
            if element[a.index] == "H":
                heavy = [j for j in neighbors[a.index] if element.get(j, "H") != "H" and j in members]
                if heavy and assign[heavy[0]] >= 0:
                    assign[a.index] = assign[heavy[0]]
        orphans = [a.name for a in atoms if assign[a.index] < 0]
        if orphans:
            raise ValueError(f"atoms {orphans} of residue {residue.name} {residue.id} are not bonded to any bead "
                             "atom; the topology lacks bonds (load it with openmm.app.PDBFile or pdbfixer)")
    return assign


def mapForces(forces: np.ndarray, assignment: np.ndarray, numBeads: int) -> np.ndarray:
    """Bead forces (numBeads, 3): the sum of the atom forces (atoms, 3) of each bead's atom group."""
    out = np.zeros((numBeads, 3), dtype=np.float64)
    keep = assignment >= 0
    np.add.at(out, assignment[keep], np.asarray(forces)[keep])
    return out


DETERMINISTIC_PROPERTIES = {"CPU": {"Threads": "1"}, "CUDA": {"DeterministicForces": "true"},
                            "HIP": {"DeterministicForces": "true"}}


def minimizedPositions(system, positions, platform, maxIterations: int = 2000):
    """Energy-minimized positions (nm, as a Quantity), the same on every run on one platform: forces summed in a
    fixed order (one thread on CPU, ``DeterministicForces`` on CUDA and HIP), since the minimizer carries the
    rounding differences of a varying order to 0.1 A."""
    openmm = import_openmm()
    known = platform.getPropertyNames()
    properties = {k: v for k, v in DETERMINISTIC_PROPERTIES.get(platform.getName(), {}).items() if k in known}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, maxIterations)
    return context.getState(getPositions=True).getPositions(asNumpy=True)


def fastestPlatform(name: Optional[str] = None):
    """The named OpenMM platform, or CUDA if it works, else CPU."""
    openmm = import_openmm()
    if name:
        try:
            return openmm.Platform.getPlatformByName(name)
        except Exception as err:
            names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
            raise ValueError(f"OpenMM platform {name!r} is not available; available: {names}") from err
    for candidate in ("CUDA", "CPU"):
        try:
            return openmm.Platform.getPlatformByName(candidate)
        except Exception:
            continue
    return openmm.Platform.getPlatformByName("Reference")


def writeJsonAtomically(path: str, values: dict) -> None:
    """Write ``values`` as JSON to a temporary file beside ``path`` and rename it over ``path`` (never half-written)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(values, f, indent=1)
    os.replace(tmp, path)


class ReferenceRun:
    """An all-atom OpenMM simulation that writes CG-mapped coordinates and forces into ``directory``.

    Parameters
    ----------
    directory : str
        Output directory (created; an existing run there is resumed if its settings match).
    sequence, pdb : str
        A one-letter sequence (built with PeptideBuilder, ``phiPsi`` in degrees per residue) or a PDB file.
    mapping : {"5bead", "ca"}
    temperature : float, K;  timestep : float, fs;  friction : float, 1/ps;  hydrogenMass : float, amu (optional)
    reportInterval : int
        MD steps between recorded frames.
    shardFrames : int
        Frames per npz shard (a checkpoint is written with every shard).
    """

    def __init__(self, directory: str, sequence: Optional[str] = None, pdb: Optional[str] = None,
                 mapping: str = "5bead", temperature: float = 300.0, timestep: float = 2.0, friction: float = 1.0,
                 reportInterval: int = 100, shardFrames: int = 1000, equilibrationSteps: int = 5000,
                 platform: Optional[str] = None, seed: int = 1, repair: bool = True, phiPsi=None,
                 forceField: Sequence[str] = FORCE_FIELDS, hydrogenMass: Optional[float] = None):
        if (sequence is None) == (pdb is None):
            raise ValueError("give exactly one of sequence or pdb")
        for name, value in (("temperature", temperature), ("timestep", timestep), ("friction", friction)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if reportInterval < 1 or shardFrames < 1 or equilibrationSteps < 0:
            raise ValueError("reportInterval and shardFrames must be >= 1 and equilibrationSteps >= 0")
        self.directory = directory
        self.mapping = CGMapping(mapping)
        self.settings = {"sequence": "".join(sequence.split()).upper() if sequence else None,
                         "pdb": os.path.abspath(pdb) if pdb else None, "mapping": self.mapping.name,
                         "temperature": float(temperature), "timestep": float(timestep), "friction": float(friction),
                         "reportInterval": int(reportInterval), "shardFrames": int(shardFrames),
                         "equilibrationSteps": int(equilibrationSteps), "seed": int(seed),
                         "forceField": list(forceField), "phiPsi": [list(p) for p in phiPsi] if phiPsi else None,
                         "hydrogenMass": hydrogenMass}
        self.repair = repair
        self.platformName = platform
        self._prepare()

    # -- setup -------------------------------------------------------------------------------------------------
    def _prepare(self):
        openmm = import_openmm()
        app, unit = openmm.app, openmm.unit
        s = self.settings
        os.makedirs(self.directory, exist_ok=True)
        meta_path = os.path.join(self.directory, "metadata.json")
        self.metadata = None
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                previous = json.load(f)
            differ = {k: (previous["settings"].get(k), v) for k, v in s.items() if previous["settings"].get(k) != v}
            if differ:
                raise ValueError(f"{self.directory!r} holds a reference run with other settings {differ} "
                                 "(old, new); use another directory or the same settings to resume")
            self.metadata = previous
            pdb = app.PDBFile(os.path.join(self.directory, "allatom.pdb"))
            topology, positions = pdb.topology, pdb.positions
        elif s["sequence"]:
            topology, positions = buildFromSequence(s["sequence"], s["phiPsi"])
        else:
            topology, positions = loadAllAtom(s["pdb"], self.repair)
        self.topology = topology
        self.system = createReferenceSystem(topology, s["forceField"], s["hydrogenMass"])
        self.cgTopology, self.beadAtoms = self.mapping.mapTopology(topology)
        self.assignment = atomBeadAssignment(topology, self.mapping, self.beadAtoms)
        integrator = openmm.LangevinMiddleIntegrator(s["temperature"] * unit.kelvin, s["friction"] / unit.picosecond,
                                                     s["timestep"] * unit.femtosecond)
        integrator.setRandomNumberSeed(s["seed"])
        self.platform = fastestPlatform(self.platformName)
        self.simulation = app.Simulation(topology, self.system, integrator, self.platform)
        if self.metadata is None:
            self.simulation.context.setPositions(minimizedPositions(self.system, positions, self.platform))
            state = self.simulation.context.getState(getPositions=True)
            with open(os.path.join(self.directory, "allatom.pdb"), "w") as f:
                app.PDBFile.writeFile(topology, state.getPositions(), f)
            native = self.mapping.mapPositions(state.getPositions(asNumpy=True), self.beadAtoms)
            with open(os.path.join(self.directory, "cg.pdb"), "w") as f:
                app.PDBFile.writeFile(self.cgTopology, native * 10.0 * unit.angstrom, f)
            self.simulation.context.setVelocitiesToTemperature(s["temperature"] * unit.kelvin, s["seed"])
            if s["equilibrationSteps"]:
                self.simulation.step(s["equilibrationSteps"])
            self.simulation.currentStep = 0
            self.metadata = {"format": "openmmflash.cgreference", "formatVersion": FORMAT_VERSION, "settings": s,
                             "provenance": self._provenance(), "stepsDone": 0, "shards": [],
                             "numBeads": self.cgTopology.getNumAtoms(), "numAtoms": topology.getNumAtoms()}
            self.simulation.saveCheckpoint(os.path.join(self.directory, "checkpoint.chk"))
            writeJsonAtomically(meta_path, self.metadata)
        else:
            self.simulation.loadCheckpoint(os.path.join(self.directory, "checkpoint.chk"))
            self.simulation.currentStep = int(self.metadata["stepsDone"])

    def _provenance(self) -> dict:
        openmm = import_openmm()
        s = self.settings
        return {"forceField": s["forceField"], "nonbondedMethod": "NoCutoff (implicit solvent)",
                "constraints": "HBonds", "hydrogenMass_amu": s["hydrogenMass"], "integrator": "LangevinMiddleIntegrator", "temperature_K": s["temperature"],
                "timestep_fs": s["timestep"], "friction_per_ps": s["friction"], "mapping": s["mapping"],
                "forceAggregation": "sum of atom forces per bead group (hydrogens with their heavy atom; other "
                                    "atoms to the nearest bead atom in the residue bond graph)",
                "platform": self.platform.getName(), "openmm": openmm.__version__,
                "units": {"positions": "nm", "forces": "kJ/mol/nm", "time": "ps"},
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    # -- running -----------------------------------------------------------------------------------------------
    @property
    def stepsDone(self) -> int:
        return int(self.metadata["stepsDone"])

    def run(self, steps: int, progress: bool = True) -> int:
        """Run until ``steps`` MD steps have been recorded in total (resuming where the run stopped). Returns the
        number of frames written by this call."""
        from tqdm import tqdm

        s = self.settings
        interval, per_shard = s["reportInterval"], s["shardFrames"]
        if steps % interval:
            raise ValueError(f"steps ({steps}) must be a multiple of reportInterval ({interval})")
        remaining = (steps - self.stepsDone) // interval
        written = 0
        n_beads = self.cgTopology.getNumAtoms()
        bar = tqdm(total=max(remaining, 0), desc="reference MD", unit="frame", disable=not progress)
        while remaining > 0:
            count = min(per_shard, remaining)
            pos = np.empty((count, n_beads, 3), dtype=np.float32)
            frc = np.empty((count, n_beads, 3), dtype=np.float32)
            step = np.empty(count, dtype=np.int64)
            for k in range(count):
                self.simulation.step(interval)
                state = self.simulation.context.getState(getPositions=True, getForces=True)
                xyz = state.getPositions(asNumpy=True)._value
                if not np.all(np.isfinite(xyz)):
                    raise RuntimeError("the reference simulation produced NaN positions; lower the timestep")
                pos[k] = xyz[self.beadAtoms]
                frc[k] = mapForces(state.getForces(asNumpy=True)._value, self.assignment, n_beads)
                step[k] = self.simulation.currentStep
                bar.update(1)
            self._write_shard(pos, frc, step)
            remaining -= count
            written += count
        bar.close()
        return written

    def _write_shard(self, pos, frc, step):
        index = len(self.metadata["shards"])
        name = f"shard_{index:05d}.npz"
        path = os.path.join(self.directory, name)
        tmp = path + ".tmp.npz"
        np.savez(tmp, positions=pos, forces=frc, step=step, time=step * self.settings["timestep"] * 1e-3,
                 provenance=json.dumps(self.metadata["provenance"]))
        os.replace(tmp, path)
        # Checkpoint and metadata follow the shard, so a resumed run continues right after it.
        self.simulation.saveCheckpoint(os.path.join(self.directory, "checkpoint.chk.tmp"))
        os.replace(os.path.join(self.directory, "checkpoint.chk.tmp"), os.path.join(self.directory, "checkpoint.chk"))
        self.metadata["shards"].append(name)
        self.metadata["stepsDone"] = int(step[-1])
        writeJsonAtomically(os.path.join(self.directory, "metadata.json"), self.metadata)


def loadReferenceData(directory: str) -> dict:
    """A reference run as arrays: positions/forces (frames, beads, 3) float32 in nm and kJ/mol/nm, time (frames,)
    ps, step, ``cgTopology``, ``native`` CG positions (beads, 3) nm, and ``metadata``."""
    app = import_openmm().app
    meta_path = os.path.join(directory, "metadata.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{directory!r} is not a reference-data directory (no metadata.json); create one "
                                "with `openmmflash cg-data`")
    with open(meta_path) as f:
        metadata = json.load(f)
    if metadata.get("format") != "openmmflash.cgreference" or metadata.get("formatVersion", 0) > FORMAT_VERSION:
        raise ValueError(f"{directory!r}: unsupported reference-data format {metadata.get('format')!r} "
                         f"version {metadata.get('formatVersion')}")
    if not metadata["shards"]:
        raise ValueError(f"{directory!r} holds no frames yet; run `openmmflash cg-data` longer")
    arrays = {"positions": [], "forces": [], "time": [], "step": []}
    for name in metadata["shards"]:
        with np.load(os.path.join(directory, name)) as shard:
            for key in arrays:
                arrays[key].append(shard[key])
    data = {k: np.concatenate(v) for k, v in arrays.items()}
    cg = app.PDBFile(os.path.join(directory, "cg.pdb"))
    data["cgTopology"] = cg.topology
    data["native"] = np.asarray(cg.getPositions(asNumpy=True)._value)
    data["metadata"] = metadata
    data["cgPdb"] = open(os.path.join(directory, "cg.pdb")).read()
    return data


def mergeReferenceData(datasets: Sequence[dict]) -> dict:
    """Several reference runs of one protein (``loadReferenceData`` dicts) as one training set.

    The runs must share the mapping and the CG topology (same beads in the same order); they may differ in seed,
    length and temperature. Frames are concatenated run by run; ``runIndex`` (frames,) says which run a frame came
    from and ``runTemperatures`` (runs,) K the bath temperature of each run, so that training can split time blocks
    per run and fit the priors on the runs at the model's temperature only. The native structure, ``cgPdb`` and the
    top-level metadata are the first run's; ``metadata["runs"]`` lists every run's settings, provenance and steps.
    """
    if not datasets:
        raise ValueError("no reference runs given")
    first = datasets[0]
    mapping = first["metadata"]["settings"]["mapping"]
    beads = [(a.residue.name, a.name) for a in first["cgTopology"].atoms()]
    for k, d in enumerate(datasets[1:], start=1):
        if d["metadata"]["settings"]["mapping"] != mapping:
            raise ValueError(f"reference run {k} was mapped with {d['metadata']['settings']['mapping']!r} but run 0 "
                             f"with {mapping!r}; runs can only be combined when they share the CG mapping")
        other = [(a.residue.name, a.name) for a in d["cgTopology"].atoms()]
        if other != beads:
            raise ValueError(f"reference run {k} has a different CG topology ({len(other)} beads) from run 0 "
                             f"({len(beads)} beads); combine only runs of the same protein and mapping")
    merged = {key: np.concatenate([d[key] for d in datasets]) for key in ("positions", "forces", "time", "step")}
    merged["runIndex"] = np.concatenate([np.full(d["positions"].shape[0], k, dtype=np.int64)
                                         for k, d in enumerate(datasets)])
    merged["runTemperatures"] = np.array([float(d["metadata"]["settings"]["temperature"]) for d in datasets])
    metadata = dict(first["metadata"])
    metadata["runs"] = [{"settings": d["metadata"]["settings"], "provenance": d["metadata"]["provenance"],
                         "stepsDone": int(d["metadata"]["stepsDone"]), "frames": int(d["positions"].shape[0])}
                        for d in datasets]
    merged.update(cgTopology=first["cgTopology"], native=first["native"], metadata=metadata, cgPdb=first["cgPdb"])
    return merged
