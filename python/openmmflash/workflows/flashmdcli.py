"""``openmmflash flashmd-data`` and ``openmmflash flashmd-train``: make FlashMD training pairs and train a model.

Examples::

    openmmflash flashmd-data --water-box 1.6 --stride 8 --temperatures 270 300 330 360 -o water_8fs.npz
    openmmflash flashmd-data --system system.xml --pdb start.pdb --stride 16 -o data.npz
    openmmflash flashmd-data --cg-model chignolin --replicas 256 --stride 20 --pairs 40 --spacing 0.25 \
        --temperatures 280 300 320 350 --platform CUDA -o chignolin_20fs.npz   (add --species bead for bead types)
    openmmflash flashmd-train water_8fs.npz -o water.pt --iterations 20000 --energy-weight 0.1 --water-box 1.6
"""

import argparse
import json


def _system_from_args(args):
    """(topology, system, positions nm) from --water-box or --system/--pdb."""
    import numpy as np
    from openmmflash.integrators.training.data import flexibleWaterBox
    if getattr(args, "water_box", None):
        return flexibleWaterBox(args.water_box, args.water_cutoff, density=getattr(args, "water_density", None))
    if getattr(args, "system", None) and getattr(args, "pdb", None):
        import openmm as mm
        from openmm import app, unit
        with open(args.system) as f:
            system = mm.XmlSerializer.deserialize(f.read())
        pdb = app.PDBFile(args.pdb)
        pos = np.asarray(pdb.getPositions().value_in_unit(unit.nanometer))
        if pos.shape[0] != system.getNumParticles():
            raise ValueError(f"{args.pdb} has {pos.shape[0]} atoms but {args.system} has "
                             f"{system.getNumParticles()} particles")
        return pdb.topology, system, pos
    return None


def _cg_data(args):
    """Pairs for a bundled CG protein: B replicas in one System (replicadata.py)."""
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashMDSpecies
    from openmmflash.integrators.training.data import saveDataset
    from openmmflash.integrators.training.replicadata import generateReplicaPairs
    _, system, positions, topology, _, net = buildCGSystem(args.replicas, args.cg_model, removeCMMotion=False)
    types, kind, labels = flashMDSpecies(net, topology, args.species)
    props = {"Precision": "mixed"} if args.platform == "CUDA" else None
    stride = args.stride / 1000.0
    data = generateReplicaPairs(system, positions, types, args.replicas, args.temperatures, [stride],
                                timestep=args.timestep / 1000.0, cycles=args.pairs, decorrelation=args.spacing,
                                equilibration=args.equilibration, platform=args.platform, platformProperties=props,
                                seed=args.seed, progress=not args.quiet, speciesKind=kind, speciesLabels=labels)[stride]
    data["meta"]["system"] = f"bundled CG model {args.cg_model!r} (FlashSchNet TorchForce + priors)"
    saveDataset(args.output, data)
    print(f"wrote {data['q0'].shape[0]} pairs of {data['q0'].shape[1]} particles to {args.output}")


def _data(args):
    from openmmflash.integrators.training.data import generatePairs, saveDataset, speciesOf
    if args.cg_model:
        return _cg_data(args)
    if args.species != "element":
        raise ValueError(f"--species {args.species} needs --cg-model (bead types come from a FlashSchNet CG model)")
    made = _system_from_args(args)
    if made is None:
        raise ValueError("give either --water-box SIZE or both --system system.xml and --pdb structure.pdb")
    topology, system, positions = made
    data = generatePairs(system, positions, speciesOf(topology), args.temperatures, args.stride / 1000.0,
                         timestep=args.timestep / 1000.0, startsPerTemperature=args.starts,
                         pairsPerStart=args.pairs, pairSpacing=args.spacing, equilibration=args.equilibration,
                         platform=args.platform, seed=args.seed, progress=not args.quiet)
    if args.water_box:
        data["meta"]["waterBox"] = {"boxSize_nm": args.water_box, "cutoff_nm": args.water_cutoff,
                                    "density_g_cm3": args.water_density}
    saveDataset(args.output, data)
    print(f"wrote {data['q0'].shape[0]} pairs of {data['q0'].shape[1]} particles to {args.output}")


def _train(args):
    from openmmflash.integrators.training.trainer import train
    made = _system_from_args(args)
    system = made[1] if made is not None else None
    model = train(args.dataset, args.output, iterations=args.iterations, batchSize=args.batch_size, lr=args.lr,
                  channels=args.channels, numLayers=args.layers, cutoff=args.cutoff,
                  energyWeight=args.energy_weight, system=system, energyPlatform=args.platform, device=args.device,
                  seed=args.seed, resume=not args.restart, progress=not args.quiet, maxMinutes=args.max_minutes,
                  initialModel=args.init, **loss_term_kwargs(args))
    print(model.describe())
    print(json.dumps(model.validation, indent=1))


def add_loss_term_args(p) -> None:
    """The optional training terms and --restride, shared by ``openmmflash flashmd-train`` and
    examples/flashmd_train_cg.py; :func:`loss_term_kwargs` turns them into ``training.train`` arguments."""
    p.add_argument("--bond-weight", type=float, default=0.0,
                   help="weight of the bond term, the predicted state's bond-length error as an energy k/2 dr^2 / kT "
                        "(bonds from the System's HarmonicBondForce)")
    p.add_argument("--angle-weight", type=float, default=0.0,
                   help="weight of the angle term, k (dcos theta)^2 / kT over CustomAngleForce angles with energy "
                        "k*(cos(theta)-cos0)^2 (the CG priors' form)")
    p.add_argument("--kinetic-weight", type=float, default=0.0,
                   help="weight of the per-species kinetic-energy term (predicted vs true K of each species)")
    p.add_argument("--symplectic-weight", type=float, default=0.0,
                   help="weight of the symplectic term: the stride's defect of the symplectic form (0 for the true "
                        "dynamics, which keeps phase-space volume; examples/benchmarks/flashmd_cg_jacobian.py "
                        "measures the volume)")
    p.add_argument("--restride", action="store_true",
                   help="--init is a model of another stride: warm-start from it at the dataset's stride")


def loss_term_kwargs(args) -> dict:
    """``training.train`` keyword arguments of :func:`add_loss_term_args`' options."""
    return dict(bondWeight=args.bond_weight, angleWeight=args.angle_weight, kineticWeight=args.kinetic_weight,
                symplecticWeight=args.symplectic_weight, restride=args.restride)


def _add_system_args(p):
    p.add_argument("--water-box", type=float, default=None, metavar="NM",
                   help="use a cubic box of flexible TIP3P-FB water with this edge (nm)")
    p.add_argument("--water-cutoff", type=float, default=0.7, help="nonbonded cutoff of the water box (nm)")
    p.add_argument("--water-density", type=float, default=None, metavar="G_CM3",
                   help="compress the water box to this density (molecule centres and box scaled); default: as "
                        "Modeller fills it (0.942 g/cm^3 at 1.6 nm)")
    p.add_argument("--system", default=None, help="serialized OpenMM System (XML) without constraints")
    p.add_argument("--pdb", default=None, help="starting structure for --system")
    p.add_argument("--platform", default=None, help="OpenMM platform (Reference, CPU, CUDA, OpenCL)")


def register(subparsers) -> None:
    p = subparsers.add_parser("flashmd-data", help="generate FlashMD training pairs from OpenMM NVE runs",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_system_args(p)
    p.add_argument("-o", "--output", required=True, help="dataset file (.npz)")
    p.add_argument("--cg-model", default=None, help="bundled FlashSchNet CG model (e.g. chignolin): its protein with "
                   "priors + TorchForce, --replicas copies in one System; --pairs is then per replica and "
                   "--spacing the Langevin time between pairs")
    p.add_argument("--replicas", type=int, default=64, help="replicas in one System (with --cg-model)")
    p.add_argument("--species", choices=("element", "bead"), default="element",
                   help="FlashMD species: atomic numbers, or (with --cg-model) the FlashSchNet bead types, so the "
                   "model tells CA, CB and C apart; integrators then need setAtomTypes(bead types)")
    p.add_argument("--stride", type=float, required=True, help="learned stride (fs)")
    p.add_argument("--timestep", type=float, default=0.5, help="reference NVE time step (fs)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0], help="temperatures of the starts (K)")
    p.add_argument("--starts", type=int, default=4, help="independent starts per temperature")
    p.add_argument("--pairs", type=int, default=50, help="pairs recorded per start")
    p.add_argument("--spacing", type=float, default=0.1, help="time between pair starts (ps)")
    p.add_argument("--equilibration", type=float, default=2.0, help="Langevin equilibration per start (ps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_data)

    p = subparsers.add_parser("flashmd-train", help="train a FlashMD model on pairs from flashmd-data (resumable)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dataset", nargs="+", help="dataset(s) from flashmd-data (.npz); several are merged (same "
                   "particles and stride, e.g. one water box at several densities)")
    p.add_argument("-o", "--output", required=True, help="model file (.pt); <output>.state holds the resume state")
    _add_system_args(p)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4, help="frames per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--cutoff", type=float, default=0.5, help="network cutoff (nm)")
    p.add_argument("--energy-weight", type=float, default=0.0,
                   help="weight of the energy-conservation term (needs --water-box or --system)")
    add_loss_term_args(p)  # bond and angle terms need --water-box or --system
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--restart", action="store_true", help="ignore an existing <output>.state")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune this FlashMD model (shipped name or file) instead of training a new one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)
