"""Reference data: all-atom OpenMM MD of a tiny peptide recording CG-mapped coordinates and forces."""

import os

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)

from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.refdata import (ReferenceRun, atomBeadAssignment, buildFromSequence, checkSequence,
                                    createReferenceSystem, loadAllAtom, loadReferenceData, mapForces)
from openmmflash.stack import import_openmm


def test_short_run_writes_shards_and_resumes(tmp_path):
    out = str(tmp_path / "ref")
    run = ReferenceRun(out, sequence="GAY", reportInterval=20, shardFrames=4, equilibrationSteps=20,
                       platform="Reference", timestep=2.0)
    assert run.run(160, progress=False) == 8
    # A new run object on the same directory resumes after the last shard instead of starting again.
    again = ReferenceRun(out, sequence="GAY", reportInterval=20, shardFrames=4, equilibrationSteps=20,
                         platform="Reference", timestep=2.0)
    assert again.stepsDone == 160
    assert again.run(240, progress=False) == 4
    data = loadReferenceData(out)
    n = CGMapping("5bead")
    assert data["positions"].shape == (12, 14, 3)  # G: 4 beads, A: 5, Y: 5
    assert data["forces"].shape == (12, 14, 3)
    np.testing.assert_array_equal(data["step"], np.arange(20, 241, 20))
    assert np.all(np.isfinite(data["forces"])) and np.abs(data["forces"]).max() > 1.0
    prov = data["metadata"]["provenance"]
    assert prov["forceField"] == ["amber14-all.xml", "implicit/gbn2.xml"]
    assert prov["temperature_K"] == 300.0 and prov["timestep_fs"] == 2.0 and prov["mapping"] == n.name
    # Bead positions are the mapped atoms of the recorded frames: bonded CA-C distance is physical.
    d = np.linalg.norm(data["positions"][:, 1] - data["positions"][:, 2], axis=-1)
    assert np.all((d > 0.14) & (d < 0.165))
    with pytest.raises(ValueError, match="other settings"):
        ReferenceRun(out, sequence="GAY", temperature=350.0, reportInterval=20, shardFrames=4,
                     equilibrationSteps=20, platform="Reference", timestep=2.0)


def test_mapped_force_is_minus_gradient_of_group_translation():
    """The aggregated bead force equals -dU/dR_I for a rigid translation of the bead's atom group."""
    openmm = import_openmm()
    topology, positions = buildFromSequence("AGS")
    system = createReferenceSystem(topology)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    pos = np.array(positions.value_in_unit(openmm.unit.nanometer))
    mapping = CGMapping("5bead")
    cg, beads = mapping.mapTopology(topology)
    assign = atomBeadAssignment(topology, mapping, beads)
    assert np.all(assign >= 0)
    assert all(assign[a] == b for b, a in enumerate(beads))
    context.setPositions(pos)
    forces = mapForces(context.getState(getForces=True).getForces(asNumpy=True)._value, assign, len(beads))
    h = 1e-5
    for bead in (1, 3, 6, 10):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = pos.copy()
                moved[assign == bead, axis] += sign * h
                context.setPositions(moved)
                energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
            fd = -(energies[0] - energies[1]) / (2 * h)
            assert fd == pytest.approx(forces[bead, axis], rel=2e-3, abs=0.5)


def test_unknown_residue_refused():
    with pytest.raises(ValueError, match="unknown residue codes.*'X' at position 2"):
        checkSequence("GXA")
    with pytest.raises(ValueError, match="unknown residue codes"):
        ReferenceRun("unused", sequence="GAB1")


def test_pdb_with_missing_atoms_repaired_or_refused(tmp_path):
    openmm = import_openmm()
    topology, positions = buildFromSequence("GYA")
    full_heavy = sum(1 for a in topology.atoms() if a.element.symbol != "H")
    path = str(tmp_path / "broken.pdb")
    with open(str(tmp_path / "full.pdb"), "w") as f:
        openmm.app.PDBFile.writeFile(topology, positions, f)
    # Drop the tyrosine ring (CD1 ... OH) and all hydrogens.
    drop = {"CD1", "CD2", "CE1", "CE2", "CZ", "OH"}
    lines = [line for line in open(str(tmp_path / "full.pdb"))
             if not (line.startswith("ATOM") and (line[12:16].strip() in drop or line[76:78].strip() == "H"))]
    open(path, "w").writelines(lines)
    with pytest.raises(ValueError, match="6 missing heavy atoms.*repair=True"):
        loadAllAtom(path, repair=False)
    repaired, _ = loadAllAtom(path, repair=True)
    assert sum(1 for a in repaired.atoms() if a.element.symbol != "H") == full_heavy
    assert repaired.getNumAtoms() == topology.getNumAtoms()
    with pytest.raises(FileNotFoundError, match="no structure file"):
        loadAllAtom(os.path.join(str(tmp_path), "absent.pdb"))


def test_preparation_is_repeatable(tmp_path):
    """pdbfixer and Modeller place new atoms at random; the same input must still give the same structure (the
    native structure of a reference run is made from it), and the caller's ``random`` stream stays as it was."""
    import random

    openmm = import_openmm()
    random.seed(3)
    expected_draw = random.random()
    random.seed(3)
    built = [np.asarray(buildFromSequence("GYDPE")[1].value_in_unit(openmm.unit.nanometer)) for _ in range(2)]
    assert random.random() == expected_draw
    np.testing.assert_array_equal(built[0], built[1])
    topology, positions = buildFromSequence("GYA")
    path = str(tmp_path / "no_ring.pdb")
    with open(path, "w") as f:
        openmm.app.PDBFile.writeFile(topology, positions, f)
    lines = [line for line in open(path)
             if not (line.startswith("ATOM") and (line[12:16].strip() in {"CE1", "CZ", "OH"}
                                                  or line[76:78].strip() == "H"))]
    open(path, "w").writelines(lines)
    repaired = [np.asarray(loadAllAtom(path)[1].value_in_unit(openmm.unit.nanometer)) for _ in range(2)]
    np.testing.assert_array_equal(repaired[0], repaired[1])
    # two reference runs on one platform that differ in their seed share one minimized native structure
    natives = []
    for seed in (1, 2):
        run = ReferenceRun(str(tmp_path / f"ref{seed}"), sequence="GYDPE", equilibrationSteps=0, seed=seed,
                           platform="CPU")
        natives.append(np.asarray(openmm.app.PDBFile(os.path.join(run.directory, "cg.pdb")).getPositions(
            asNumpy=True).value_in_unit(openmm.unit.nanometer)))
    np.testing.assert_array_equal(natives[0], natives[1])


def test_pdb_with_a_chain_gap_refused(tmp_path):
    openmm = import_openmm()
    topology, positions = buildFromSequence("GAYAG")
    full = str(tmp_path / "full.pdb")
    with open(full, "w") as f:
        openmm.app.PDBFile.writeFile(topology, positions, f)
    lines = [line for line in open(full) if not (line.startswith("ATOM") and line[22:26].strip() == "3")]
    path = str(tmp_path / "gap.pdb")
    open(path, "w").writelines(lines)
    with pytest.raises(ValueError, match="chain A is broken between residues ALA 2 and ALA 4"):
        loadAllAtom(path)
