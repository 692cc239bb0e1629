"""Imported mlcg (CGSchNet) models reproduce mlcg's own energies and forces (reference_cln_ca.npz, 16 frames).

Relative errors: energies |E - E_ref| / |E_ref|, forces ||F - F_ref|| / ||F_ref|| (Frobenius norm of the frame),
each maximised over the frames. float32 results are compared with mlcg's float32 run.
"""

import os

import numpy as np
import pytest
import torch

from openmmflash.mlcg.importer import beadMasses, importMlcg, isMlcgFile, writeCGPdb
from openmmflash.schnet.model import loadModel

MLCG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mlcg")
SIMULATION = os.path.join(MLCG, "schnet_cln_ca_specialized_model_and_config.pt")
PRIORS = os.path.join(MLCG, "sparse_prior_cln_ca.pt")
STRUCTURES = os.path.join(MLCG, "structures_cln_ca.pt")
CKPT = os.path.join(MLCG, "schnet_train.ckpt")
KCAL = 4.184


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(MLCG, "reference_cln_ca.npz")))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(model file, CG PDB) written by import-mlcg from the simulation file."""
    from openmmflash.cli import main

    folder = tmp_path_factory.mktemp("mlcg")
    model, pdb = str(folder / "model.pt"), str(folder / "cg.pdb")
    assert main(["import-mlcg", SIMULATION, "--output", model, "--pdb", pdb]) == 0
    return model, pdb


def relative_errors(energies, forces, ref_energies, ref_forces):
    e = np.max(np.abs(np.asarray(energies) - ref_energies) / np.abs(ref_energies))
    f = max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(np.asarray(forces), ref_forces))
    return e, f


@pytest.mark.parametrize("dtype, tol, suffix", [(torch.float64, 1e-10, ""), (torch.float32, 1e-5, "_f32")])
def test_schnet_model_matches_mlcg(ref, dtype, tol, suffix):
    model = importMlcg(SIMULATION, includePriors=False).to(dtype)
    assert model.config.rbfType == "expnormal" and model.config.hiddenChannels == 256
    assert model.config.numFilters == 128 and model.config.maxNumNeighbors == 200
    types = torch.tensor(ref["atom_types"])
    energies, forces = [], []
    for pos in ref["positions"]:
        e, f = model.energy_and_forces(torch.tensor(pos, dtype=dtype), types)
        energies.append(e.item())
        forces.append(f.double().numpy())
    e_err, f_err = relative_errors(energies, forces, ref[f"energies_schnet{suffix}"], ref[f"forces_schnet{suffix}"])
    assert e_err < tol and f_err < tol, (e_err, f_err)


def _openmm_eval(system, positions_angstrom, platform):
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    energies, forces = [], []
    for pos in positions_angstrom:
        context.setPositions(pos * 0.1)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KCAL)
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                      / (10 * KCAL))
    return energies, forces


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("precision, tol, suffix", [("double", 1e-10, ""), ("single", 1e-5, "_f32")])
def test_schnet_openmm_force_matches_mlcg(ref, imported, platform, precision, tol, suffix):
    import openmm
    from openmm import app

    from openmmflash.plugin.torchforce import addFlashSchNetForce

    topology = app.PDBFile(imported[1]).topology
    system = openmm.System()
    for _ in range(topology.getNumAtoms()):
        system.addParticle(12.0)
    # Exact filters: the conversion is checked against mlcg's own arithmetic (the tabulated filters, the default in
    # single precision, add their own ~1e-5, tested in tests/test_kernels_table.py).
    addFlashSchNetForce(system, imported[0], topology, precision=precision, filterMode="exact")
    energies, forces = _openmm_eval(system, ref["positions"], platform)
    e_err, f_err = relative_errors(energies, forces, ref[f"energies_schnet{suffix}"], ref[f"forces_schnet{suffix}"])
    assert e_err < tol and f_err < tol, (e_err, f_err)


@pytest.mark.parametrize("source", ["model file", "mlcg file", "prior file"])
@pytest.mark.parametrize("precision, tol, suffix", [("double", 1e-8, ""), ("single", 1e-4, "_f32")])
def test_total_through_mlpotential(ref, imported, tmp_path, source, precision, tol, suffix):
    """SchNet + priors as native OpenMM forces, via MLPotential('flashschnet'), Reference platform."""
    from openmm import app
    from openmmml import MLPotential

    path = imported[0]
    if source == "mlcg file":
        path = SIMULATION                       # loadModel converts mlcg files directly
    elif source == "prior file":
        path = str(tmp_path / "typed.pt")      # priors from the sparse type tables instead of the static buffers
        importMlcg(SIMULATION, priorFile=PRIORS).save(path)
    topology = app.PDBFile(imported[1]).topology
    system = MLPotential("flashschnet", modelPath=path).createSystem(topology, precision=precision)
    names = sorted(f.getName() for f in system.getForces())
    assert sum(n.startswith("mlcg prior") for n in names) == 4, names
    energies, forces = _openmm_eval(system, ref["positions"], "Reference")
    e_err, f_err = relative_errors(energies, forces, ref[f"energies{suffix}"], ref[f"forces{suffix}"])
    assert e_err < tol and f_err < tol, (e_err, f_err)


def test_prior_terms_separately(ref, imported):
    """Each prior force alone equals mlcg's term (frame-wise energies and forces, float64)."""
    import openmm
    from openmm import app

    from openmmflash.plugin.cgsystem import createCGSystem

    model = loadModel(imported[0])
    topology = app.PDBFile(imported[1]).topology
    system = createCGSystem(topology, model, addModelForce=False, removeCMMotion=False)
    kinds = {"CustomAngleForce": "angles", "CustomTorsionForce": "dihedrals"}
    for force in list(system.getForces()):
        kind = kinds.get(force.__class__.__name__)
        if kind is None:    # the two CustomBondForces: bonds have 3 parameters, repulsion 1
            kind = "bonds" if force.getNumPerBondParameters() == 3 else "repulsion"
        single = openmm.System()
        for _ in range(system.getNumParticles()):
            single.addParticle(12.0)
        single.addForce(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force)))
        energies, forces = _openmm_eval(single, ref["positions"], "Reference")
        e_err, f_err = relative_errors(energies, forces, ref[f"energies_{kind}"], ref[f"forces_{kind}"])
        assert e_err < 1e-10 and f_err < 1e-10, (kind, e_err, f_err)


def test_lightning_checkpoint_uses_trained_weights(tmp_path):
    from openmmflash.mlcg.safeunpickler import loadPickled

    model = importMlcg(CKPT, priorFile=PRIORS)
    ckpt = loadPickled(CKPT)
    trained = ckpt["state_dict"]["model.model.interaction_blocks.0.conv.lin1.weight"]
    assert torch.equal(model.blocks[0].lin1.weight, trained)
    assert model.config.numRbf == 30 and model.config.cutoff == 15.0
    assert model.metadata["mapping"] == "ca" and model.metadata["priors"]["typed"]
    # The model file round-trips and reads the stored structures for a PDB.
    model.save(str(tmp_path / "m.pt"))
    again = loadModel(str(tmp_path / "m.pt"))
    assert again.config == model.config
    pdb = writeCGPdb(STRUCTURES, str(tmp_path / "s.pdb"), frame=1)
    assert open(pdb).read().count(" CA ") == 10


def test_files_are_recognised():
    assert isMlcgFile(SIMULATION) and isMlcgFile(CKPT) and isMlcgFile(PRIORS)
    assert not isMlcgFile(os.path.join(MLCG, "reference_cln_ca.npz"))


def test_imported_model_runs_langevin(imported):
    """A short Langevin run with the model's masses stays finite (the long run is examples/mlcg_chignolin.py)."""
    import openmm
    from openmm import app, unit
    from openmmml import MLPotential

    model = loadModel(imported[0])
    pdb = app.PDBFile(imported[1])
    system = MLPotential("flashschnet", modelPath=imported[0]).createSystem(pdb.topology)
    masses = beadMasses(model, pdb.topology)
    assert masses == pytest.approx([12.0] * 10, rel=1e-6)     # mlcg's 0.0286807 x 418.4
    for i, mass in enumerate(masses):
        system.setParticleMass(i, mass)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.004 * unit.picoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pdb.positions)
    integrator.step(200)
    pos = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.all(np.isfinite(pos))


def test_demo_runs_imported_model(imported, tmp_path):
    """The imported file stores its start structure, so `openmmflash demo --model FILE` runs it."""
    from openmmflash.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--model", imported[0], "--quick", "--platform", "CPU", "--output", str(out)]) == 0
    assert (out / "summary.json").is_file()


@pytest.mark.cuda
def test_cuda_default_path_matches_float64(ref, imported):
    """On CUDA the force's fast path (plugin.fastpath: float32, flash backend, padded list, CUDA graphs, tabulated
    filters) for the imported model: energies and forces within 1e-5 (over all 16 frames) of the float64 model at
    the positions the Context holds. A single-precision CUDA Context stores positions in float32 nm; these frames
    lie 15-23 nm from the origin, where that rounding alone moves this model's forces by 8e-5 relative (float64
    arithmetic throughout), so the float64 reference (FlashSchNet, equal to mlcg's float64 to 1e-14) is evaluated
    at the positions read back from the Context."""
    import openmm
    from openmm import app, unit

    from openmmflash.plugin.fastpath import fastPathOptions
    from openmmflash.plugin.torchforce import addFlashSchNetForce, filterTableInfo

    pdb = app.PDBFile(imported[1])
    topology = pdb.topology
    system = openmm.System()
    for _ in range(topology.getNumAtoms()):
        system.addParticle(12.0)
    fast, options = fastPathOptions(loadModel(imported[0]), ref["positions"][0] * 0.1, 1, "CUDA")
    info = filterTableInfo(addFlashSchNetForce(system, fast, topology, **options))
    assert info["fallbackExact"] == 0.0 and info["meetsTolerance"] == 1.0, info
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CUDA"))
    model64 = loadModel(imported[0]).double()
    types = torch.tensor(ref["atom_types"])
    forces, forces64, e_err = [], [], 0.0
    for pos in ref["positions"]:
        context.setPositions(pos * 0.1)
        state = context.getState(getEnergy=True, getForces=True, getPositions=True)
        held = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10.0
        e64, f64 = model64.energy_and_forces(torch.tensor(held, dtype=torch.float64), types)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KCAL
        e_err = max(e_err, abs(energy - e64.item()) / abs(e64.item()))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                      / (10 * KCAL))
        forces64.append(f64.numpy())
    diff = np.linalg.norm(np.asarray(forces) - np.asarray(forces64)) / np.linalg.norm(forces64)
    assert diff < 1e-5, diff
    assert e_err < 1e-5, e_err


def test_table_kernels_cpu_match_float64(ref):
    """The single-precision force module's default filters (tabulated) on the imported model, evaluated by the
    Triton table kernels on the CPU (interpreter, float32 as on CUDA): forces over the 16 frames within 1e-5 of the
    float64 model (equal to mlcg's float64 to 1e-14), from float64 nm positions (Reference/CPU platforms) and from
    float32 nm positions 15-23 nm from the origin (how a single-precision CUDA Context holds them)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the table kernels run on CPU tensors only in the Triton interpreter")
    from openmmflash.plugin.forcemodule import FlashSchNetForceModule

    model = importMlcg(SIMULATION, includePriors=False)
    types = torch.tensor(ref["atom_types"])
    module = FlashSchNetForceModule(model, types, len(types), precision="single")
    info = module.filter_table_info
    assert info["fallbackExact"] == 0.0 and info["meetsTolerance"] == 1.0 and info["nodes"] <= 1025, info
    module.model.table_kernels_on_cpu = True
    exact64 = FlashSchNetForceModule(model, types, len(types), precision="double", filterMode="exact")
    nm64 = torch.tensor(ref["positions"], dtype=torch.float64) * 0.1
    mlcg64 = torch.tensor(ref["forces_schnet"]) * (10 * KCAL)   # kcal/mol/A -> kJ/mol/nm
    for frames in (nm64, nm64.float()):
        forces, forces64 = [], []
        for pos in frames:
            with torch.enable_grad():
                forces.append(module(pos)[1].double())
            forces64.append(exact64(pos.double())[1])
        forces, forces64 = torch.stack(forces), torch.stack(forces64)
        if frames.dtype == torch.float64:
            assert float((forces64 - mlcg64).norm() / mlcg64.norm()) < 1e-10
        assert float((forces - forces64).norm() / forces64.norm()) < 1e-5


def test_explicit_term_priors_bound_to_stored_structure(ref, imported, tmp_path):
    """Per-term priors from the stored neighbour lists (the form 5-bead prior sets take) give mlcg's total too."""
    from openmm import app
    from openmmml import MLPotential

    from openmmflash.mlcg.importer import readMlcgFile
    from openmmflash.mlcg.priorconvert import convertPriorTerms

    source = readMlcgFile(SIMULATION)
    model = importMlcg(SIMULATION)
    terms = convertPriorTerms(source.priors, source.configurations[0])
    assert {k: len(v) for k, v in terms.items()} == {"bonds": 9, "angles": 8, "dihedrals": 7, "repulsion": 28}
    model.metadata["priors"] = {"typed": True, "beadTypes": model.metadata["beadTypes"], "numBeads": 10,
                                "terms": terms}
    path = str(tmp_path / "explicit.pt")
    model.save(path)
    topology = app.PDBFile(imported[1]).topology
    system = MLPotential("flashschnet", modelPath=path).createSystem(topology, precision="double")
    energies, forces = _openmm_eval(system, ref["positions"], "Reference")
    e_err, f_err = relative_errors(energies, forces, ref["energies"], ref["forces"])
    assert e_err < 1e-8 and f_err < 1e-8, (e_err, f_err)
    # Bound to the 10-bead structure: a longer chain is refused.
    longer = app.Topology()
    chain = longer.addChain()
    for k in range(12):
        longer.addAtom("CA", app.Element.getBySymbol("C"), longer.addResidue("ALA", chain, str(k + 1)))
    with pytest.raises(ValueError, match="bound to the stored 10-bead structure"):
        MLPotential("flashschnet", modelPath=path).createSystem(longer)


def test_five_bead_topology_from_mlcg_types():
    """mlcg's 5-bead types (N 21, CA 22, C 23, O 24, CB = residue type, glycine CA = 6) -> CG topology."""
    from openmmflash.cg.mapping import beadTypesFromTopology
    from openmmflash.mlcg.importer import beadTypeTable, configurationTopology

    # CLN025 (YYDPETGTWY) as stored in mlcg's 5-bead test structures.
    types = [21, 22, 20, 23, 24, 21, 22, 20, 23, 24, 21, 22, 3, 23, 24, 21, 22, 13, 23, 24, 21, 22, 4, 23, 24,
             21, 22, 17, 23, 24, 21, 6, 23, 24, 21, 22, 17, 23, 24, 21, 22, 19, 23, 24, 21, 22, 20, 23, 24]
    topology = configurationTopology(types, "5bead")
    assert [r.name for r in topology.residues()] == ["TYR", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP",
                                                     "TYR"]
    assert beadTypesFromTopology(topology, beadTypeTable("5bead")) == types
    assert topology.getNumBonds() == 48   # mlcg's stored 5-bead bond list has 48 bonds
