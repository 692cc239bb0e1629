"""``openmmflash flashmd-data`` and ``openmmflash flashmd-train``: make FlashMD training pairs and train a model.

Examples::

    openmmflash flashmd-data --water-box 1.6 --stride 8 --temperatures 270 300 330 360 -o water_8fs.npz
    openmmflash flashmd-data --system system.xml --pdb start.pdb --stride 16 -o data.npz
    openmmflash flashmd-data --cg-model chignolin --replicas 256 --stride 20 --pairs 40 --spacing 0.25 \
        --temperatures 280 300 320 350 --platform CUDA -o chignolin_20fs.npz   (add --species bead for bead types)
    openmmflash flashmd-train water_8fs.npz -o water.pt --iterations 20000 --energy-weight 0.1 --water-box 1.6
"""

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
    from openmmflash.distributed import Ensemble
    from openmmflash.integrators.training.data import saveDataset
    from openmmflash.integrators.training.replicadata import generateReplicaPairs
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashMDSpecies

    props = {"Precision": "mixed"} if args.platform == "CUDA" else None
    stride = args.stride / 1000.0

    def generate(indices=None, seed=args.seed):  # replicas ``indices`` (all by default) in one System
        b = args.replicas if indices is None else len(indices)
        first = 0 if indices is None else indices[0]  # replica j runs at temperatures[j % T], as in one System
        temperatures = [args.temperatures[(first + j) % len(args.temperatures)]
                        for j in range(len(args.temperatures))]
        _, system, positions, topology, _, net = buildCGSystem(b, args.cg_model, removeCMMotion=False)
        types, kind, labels = flashMDSpecies(net, topology, args.species)
        return generateReplicaPairs(system, positions, types, b, temperatures, [stride],
                                    timestep=args.timestep / 1000.0, cycles=args.pairs, decorrelation=args.spacing,
                                    equilibration=args.equilibration, platform=args.platform,
                                    platformProperties=props, seed=seed, progress=not args.quiet,
                                    speciesKind=kind, speciesLabels=labels)[stride]

    with Ensemble() as ens:
        if ens.distributed:  # torchrun / srun: each rank a System of its share of the replicas (its own seed)
            from openmmflash.workflows.rankedjobs import generatePairsRanks

            data = generatePairsRanks(ens, args.output, lambda indices: generate(indices, ens.seed(args.seed)),
                                      args.replicas, "replicas", "--replicas")
            if data is None:
                return
        else:
            data = generate()
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
    from openmmflash.distributed import Ensemble

    runs = [(t, s) for t in range(len(args.temperatures)) for s in range(args.starts)]

    def generate(indices=None):  # the (temperature, start) runs ``indices``, all by default
        return generatePairs(system, positions, speciesOf(topology), args.temperatures, args.stride / 1000.0,
                             timestep=args.timestep / 1000.0, startsPerTemperature=args.starts,
                             pairsPerStart=args.pairs, pairSpacing=args.spacing, equilibration=args.equilibration,
                             platform=args.platform, seed=args.seed, progress=not args.quiet,
                             starts=None if indices is None else [runs[i] for i in indices])

    with Ensemble() as ens:
        if ens.distributed:  # torchrun / srun: each rank its share of the starts, rank 0 writes the dataset
            from openmmflash.workflows.rankedjobs import generatePairsRanks

            data = generatePairsRanks(ens, args.output, generate, len(runs), "starts (temperatures x starts)",
                                      "--starts")
            if data is None:
                return
        else:
            data = generate()
    if args.water_box:
        data["meta"]["waterBox"] = {"boxSize_nm": args.water_box, "cutoff_nm": args.water_cutoff,
                                    "density_g_cm3": args.water_density}
    saveDataset(args.output, data)
    print(f"wrote {data['q0'].shape[0]} pairs of {data['q0'].shape[1]} particles to {args.output}")


def _train(args):
    import torch

    from openmmflash.distributed import Ensemble
    from openmmflash.integrators.training.trainer import train

    # torchrun / srun: DistributedDataParallel, one rank per GPU (or CPU process), rank 0 writes the model
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ens = Ensemble(device="cuda" if device.startswith("cuda") else "cpu").start()
    made = _system_from_args(args)
    system = made[1] if made is not None else None
    model = train(args.dataset, args.output, iterations=args.iterations, batchSize=args.batch_size, lr=args.lr,
                  channels=args.channels, numLayers=args.layers, cutoff=args.cutoff,
                  energyWeight=args.energy_weight, system=system, energyPlatform=args.platform,
                  device=str(ens.device) if ens.distributed else args.device, seed=args.seed,
                  resume=not args.restart, progress=not args.quiet, maxMinutes=args.max_minutes,
                  initialModel=args.init, **loss_term_kwargs(args))
    ens.close()
    if not ens.isMain:
        return
    print(model.describe())
    print(json.dumps(model.validation, indent=1))


def loss_term_kwargs(args) -> dict:
    """``training.train`` keyword arguments of the options ``openmmflash.commands.add_loss_term_args`` adds."""
    return dict(bondWeight=args.bond_weight, angleWeight=args.angle_weight, kineticWeight=args.kinetic_weight,
                symplecticWeight=args.symplectic_weight, restride=args.restride)
