"""Messages for input a CG model cannot take as it is: water and ions left out, residue types the model was never
trained on, ligands, and all-atom topologies or Systems where CG ones are needed. Input: OpenMM's own solvated
test protein (openmm/app/data/test.pdb: 35 residues, 2761 waters, 2 Cl- ions)."""

import os
import warnings

import pytest
import torch  # noqa: F401  (before openmm)

import openmmflash
from openmmflash.cg.inputchecks import UnseenResiduesWarning, trainingResidues
from openmmflash.cg.residuemessages import DroppedResiduesWarning
from openmmflash.stack import import_openmm

openmm = import_openmm()
app = openmm.app
SOLVATED = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


@pytest.fixture(scope="module")
def solvated():
    return app.PDBFile(SOLVATED)


@pytest.fixture(scope="module")
def cg_protein():
    with pytest.warns(DroppedResiduesWarning):
        return openmmflash.loadProtein(SOLVATED)


def test_dropped_water_and_ions_are_named_with_the_calls_that_strip_them(solvated):
    with pytest.warns(DroppedResiduesWarning) as record:
        cg, indices = openmmflash.CGMapping("5bead").mapTopology(solvated.topology)
    message = str(record[0].message)
    assert "2761 water molecules (HOH)" in message and "2 ions (Cl)" in message
    assert "modeller.deleteWater()" in message and "r.name in ('Cl',)" in message
    assert record[0].filename == __file__
    assert cg.getNumResidues() == 35


def test_stripped_input_gives_no_warning(solvated):
    modeller = app.Modeller(solvated.topology, solvated.positions)
    modeller.deleteWater()  # what the warning says to do
    modeller.delete([r for r in modeller.topology.residues() if r.name in ("Cl",)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DroppedResiduesWarning)
        cg, _ = openmmflash.CGMapping("5bead").mapTopology(modeller.topology)
    assert cg.getNumResidues() == 35


def test_ligand_is_refused_with_how_to_remove_it(solvated):
    modeller = app.Modeller(solvated.topology, solvated.positions)
    ligand = next(r for r in modeller.topology.residues() if r.name == "HOH")
    ligand.name = "LIG"
    with pytest.raises(ValueError, match=r"LIG .* not a standard amino acid, water or ion.*modeller\.delete\("
                                         r"\[r for r in modeller\.topology\.residues\(\) if r\.name == 'LIG'\]\)"):
        openmmflash.CGMapping("5bead").mapTopology(modeller.topology)


def test_unseen_residue_types_are_named(cg_protein):
    topology, positions = cg_protein
    chignolin = openmmflash.loadModel("chignolin")
    assert trainingResidues(chignolin.metadata) == {"GLY", "TYR", "ASP", "PRO", "GLU", "THR", "TRP"}
    with pytest.warns(UnseenResiduesWarning, match=r"never trained on residue types ALA \(3\), ARG \(1\).*LEU \(5\)"
                                                   r".*VAL \(1\)") as record:
        system = openmmflash.createCGSystem(topology, chignolin)
    assert record[0].filename == __file__
    assert system.getNumParticles() == topology.getNumAtoms()


def test_model_trained_on_every_residue_type_does_not_warn(cg_fragment):
    topology, _ = cg_fragment
    net = openmmflash.loadModel("3a4r")
    seen = trainingResidues(net.metadata)
    assert {r.name for r in topology.residues()} <= seen
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenResiduesWarning)
        openmmflash.createCGSystem(topology, net)


def test_all_atom_topology_gets_coarse_grain_first(solvated):
    for call in (lambda: openmmflash.createCGSystem(solvated.topology, "chignolin"),
                 lambda: openmmflash.createFlashSchNetForce("chignolin", solvated.topology)):
        with pytest.raises(ValueError, match=r"this looks like an all-atom topology\. Coarse-grain first: "
                                             r"topology, positions = openmmflash\.loadProtein"):
            call()


def test_system_instead_of_topology_gets_coarse_grain_first(solvated):
    system = openmm.System()
    with pytest.raises(TypeError, match="createCGSystem needs a CG openmm.app.Topology, not System.*Coarse-grain"):
        openmmflash.createCGSystem(system, "chignolin")


def test_all_atom_system_gets_create_cg_system(solvated, cg_protein):
    topology, _ = cg_protein
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    allAtom = forcefield.createSystem(solvated.topology, nonbondedMethod=app.NoCutoff)
    with pytest.raises(ValueError, match=r"the System has 8867 particles but 173 bead types.*all-atom.*"
                                         r"openmmflash\.createCGSystem\(cgTopology, model\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnseenResiduesWarning)
            openmmflash.addFlashSchNetForce(allAtom, "chignolin", topology)
