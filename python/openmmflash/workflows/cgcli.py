"""``openmmflash cg-data`` (all-atom reference MD -> CG-mapped coordinates and forces), ``openmmflash cg-train``
(priors by Boltzmann inversion + FlashSchNet force matching -> model file) and ``openmmflash cg-validate``."""


def register(subparsers):
    p = subparsers.add_parser("cg-data", help="run all-atom OpenMM MD and record CG-mapped coordinates and forces",
                              description="All-atom implicit-solvent (amber14 + GBn2) MD recording CG-mapped "
                              "coordinates and forces into npz shards; rerun the same command to resume.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", help="one-letter sequence, built with PeptideBuilder (e.g. GYDPETGTWG)")
    src.add_argument("--pdb", help="all-atom PDB/mmCIF file (missing atoms are repaired with pdbfixer)")
    p.add_argument("--hairpin", action="store_true", help="start the sequence from the chignolin hairpin phi/psi")
    p.add_argument("--no-repair", action="store_true", help="refuse a PDB with missing atoms instead of repairing")
    p.add_argument("--output", "-o", required=True, help="output directory (resumed if it exists)")
    p.add_argument("--mapping", default="5bead", choices=["5bead", "ca"])
    p.add_argument("--steps", type=int, default=250000, help="MD steps to record in total (default 250000)")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--timestep", type=float, default=4.0, help="fs (default 4, with --hydrogen-mass 3)")
    p.add_argument("--hydrogen-mass", type=float, default=3.0, help="amu, 0 for none (default 3)")
    p.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1)")
    p.add_argument("--report-interval", type=int, default=50, help="steps between frames (default 50)")
    p.add_argument("--shard-frames", type=int, default=250, help="frames per shard and checkpoint (default 250)")
    p.add_argument("--equilibration", type=int, default=5000, help="unrecorded steps first (default 5000)")
    p.add_argument("--platform", help="OpenMM platform (default: CUDA if available, else CPU)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_data)

    p = subparsers.add_parser("cg-train", help="fit priors and train a FlashSchNet model by force matching",
                              description="Boltzmann-inverted priors + force matching of FlashSchNet on reference "
                              "data written by cg-data; writes a model file with provenance and validation metrics.")
    p.add_argument("data", nargs="+", help="reference-data directories (from cg-data); several runs of the same "
                   "protein and mapping (other seeds or temperatures) are trained on together, the priors are fitted "
                   "on the runs at the first run's temperature")
    p.add_argument("--output", "-o", required=True, help="model file to write (.pt)")
    p.add_argument("--init", help="continue from this model (path or bundled name); its mapping must match")
    p.add_argument("--hidden", type=int, default=64, help="F (default 64)")
    p.add_argument("--filters", type=int, default=64, help="F' (default 64)")
    p.add_argument("--rbf", type=int, default=32, help="R (default 32)")
    p.add_argument("--interactions", type=int, default=2, help="T (default 2)")
    p.add_argument("--cutoff", type=float, default=10.0, help="Angstrom (default 10)")
    p.add_argument("--readout", type=int, nargs="*", default=[32], help="readout hidden widths (default 32)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that crosses this wall time")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5, help="early stopping patience in epochs")
    p.add_argument("--blocks", type=int, default=10, help="time blocks for the train/validation split")
    p.add_argument("--validation-fraction", type=float, default=0.2)
    p.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    p.add_argument("--max-frames", type=int, help="use at most this many frames")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device for training: cpu (default) or cuda")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("cg-validate", help="simulate a CG model and compare with its all-atom reference")
    p.add_argument("model", help="model file or bundled name")
    p.add_argument("data", nargs="?", help="reference-data directory the model was trained on (with --work it may be "
                   "left out: then only the simulation runs)")
    p.add_argument("--output", "-o", default="cg-validation", help="output folder (JSON report, PNG plot)")
    p.add_argument("--time", type=float, help="CG simulation time per replica in ns (default 1)")
    p.add_argument("--replicas", type=int, help="replicas in one System (default 4)")
    p.add_argument("--timestep", type=float, help="fs (default 2)")
    p.add_argument("--report-interval", type=int, help="steps between frames (default 100)")
    p.add_argument("--platform", help="OpenMM platform (default: CUDA if available, else CPU)")
    p.add_argument("--seed", type=int, help="default 1")
    p.add_argument("--work", help="resumable: simulate into this work folder (continued if it exists, with its own "
                   "settings; other ones are refused) and write the report once the target time is reached and the "
                   "reference data are given")
    p.add_argument("--max-wall", type=float, help="with --work: stop after this many seconds at a frame boundary; "
                   "run the same command again to continue")
    p.add_argument("--no-fast-path", action="store_true", help="on CUDA, use the plain force (reference CFConv, "
                   "exact neighbor list, no CUDA graphs) instead of the fused kernels with CUDA graphs")
    p.set_defaults(func=_validate)


def _data(args):
    from openmmflash.cg.refdata import HAIRPIN_PHI_PSI, ReferenceRun

    run = ReferenceRun(args.output, sequence=args.sequence, pdb=args.pdb, mapping=args.mapping,
                       temperature=args.temperature, timestep=args.timestep, friction=args.friction,
                       reportInterval=args.report_interval, shardFrames=args.shard_frames,
                       equilibrationSteps=args.equilibration, platform=args.platform, seed=args.seed,
                       repair=not args.no_repair, phiPsi=HAIRPIN_PHI_PSI if args.hairpin else None,
                       hydrogenMass=args.hydrogen_mass or None)
    frames = run.run(args.steps)
    print(f"{args.output}: {run.stepsDone} steps recorded ({run.stepsDone * args.timestep * 1e-3:.1f} ps), "
          f"{frames} new frames, {run.cgTopology.getNumAtoms()} beads, platform {run.platform.getName()}")


def _train(args):
    import json

    from openmmflash.cg.refdata import loadReferenceData, mergeReferenceData
    from openmmflash.cg.training import ForceMatching
    from openmmflash.schnet.config import FlashSchNetConfig

    runs = [loadReferenceData(d) for d in args.data]
    data = runs[0] if len(runs) == 1 else mergeReferenceData(runs)
    model = None
    if args.init:
        from openmmflash.schnet.model import loadModel

        model = loadModel(args.init)
    config = FlashSchNetConfig(hiddenChannels=args.hidden, numFilters=args.filters, numRbf=args.rbf,
                               numInteractions=args.interactions, cutoff=args.cutoff, readoutHidden=args.readout,
                               backend="reference")
    trainer = ForceMatching(data, model=model, config=config, numBlocks=args.blocks,
                            validationFraction=args.validation_fraction, seed=args.seed, stride=args.stride,
                            maxFrames=args.max_frames, device=args.device)
    metrics = trainer.train(epochs=args.epochs, batchSize=args.batch_size, learningRate=args.lr,
                            patience=args.patience, maxSteps=args.max_steps,
                            maxSeconds=args.max_minutes * 60.0 if args.max_minutes else None)
    trainer.save(args.output, structure=data["cgPdb"])
    shown = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(shown, indent=1))
    print(f"wrote {args.output}")


def _validate(args):
    import os

    from openmmflash.workflows.cgvalidation import finalizeValidation, runValidationChunk, validateModel

    defaults = {"time": 1.0, "replicas": 4, "timestep": 2.0, "report_interval": 100, "seed": 1}
    if args.work is None or not os.path.isfile(os.path.join(args.work, "settings.json")):
        for key, value in defaults.items():  # a continued work folder keeps its own settings
            setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
    if args.work is None:
        if args.data is None:
            raise ValueError("give the reference-data directory, or --work DIR to simulate without it (resumable)")
        if args.max_wall is not None:
            raise ValueError("--max-wall needs --work (a folder to continue from)")
        report = validateModel(args.model, args.data, args.output, timeNs=args.time, replicas=args.replicas,
                               timestep=args.timestep, reportInterval=args.report_interval, platform=args.platform,
                               seed=args.seed, fastPath=not args.no_fast_path)
        print(f"wrote {report['files']}")
        return
    status = runValidationChunk(args.work, args.model, args.time, args.replicas, args.timestep, args.report_interval,
                                args.seed, False if args.no_fast_path else None, maxWallSeconds=args.max_wall,
                                platform=args.platform)
    if args.data and (status["complete"] or status["blewUp"]):
        report = finalizeValidation(args.work, args.data, args.output)
        print(f"{report['cgTime']}; stable {report['stable']}; wrote {report['files']}")
    elif not args.data:
        print(f"no reference data given: run `openmmflash cg-validate {args.model} DATA --work {args.work}` "
              "to write the report")
