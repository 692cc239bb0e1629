"""``openmmflash cg-data`` (all-atom reference MD -> CG-mapped coordinates and forces), ``openmmflash cg-train``
(priors by Boltzmann inversion + FlashSchNet force matching -> model file) and ``openmmflash cg-validate``."""


def _data(args):
    from openmmflash.cg.refdata import HAIRPIN_PHI_PSI, ReferenceRun
    from openmmflash.distributed import Ensemble
    from openmmflash.workflows.rankedjobs import referenceRunPart

    settings = dict(sequence=args.sequence, pdb=args.pdb, mapping=args.mapping, temperature=args.temperature,
                    timestep=args.timestep, friction=args.friction, reportInterval=args.report_interval,
                    shardFrames=args.shard_frames, equilibrationSteps=args.equilibration, platform=args.platform,
                    seed=args.seed, repair=not args.no_repair, phiPsi=HAIRPIN_PHI_PSI if args.hairpin else None,
                    hydrogenMass=args.hydrogen_mass or None)
    with Ensemble() as ens:  # torchrun / srun: rank k records its share in OUTPUT/run.rank<k>
        output, steps, settings = referenceRunPart(ens, args.output, args.steps, settings)
        run = ReferenceRun(output, **settings)
        frames = run.run(steps, progress=ens.isMain)
    print(f"{output}: {run.stepsDone} steps recorded ({run.stepsDone * args.timestep * 1e-3:.1f} ps), "
          f"{frames} new frames, {run.cgTopology.getNumAtoms()} beads, platform {run.platform.getName()}")


def _train(args):
    import json

    from openmmflash.cg.refdata import loadReferenceData, mergeReferenceData
    from openmmflash.cg.training import ForceMatching
    from openmmflash.distributed import Ensemble
    from openmmflash.workflows.rankedjobs import referenceParts
    from openmmflash.schnet.config import FlashSchNetConfig

    # torchrun / srun: DistributedDataParallel, one rank per GPU (or CPU process), rank 0 writes the model
    ens = Ensemble(device="cuda" if args.device.startswith("cuda") else "cpu").start()
    runs = [loadReferenceData(d) for d in referenceParts(args.data)]
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
                            maxFrames=args.max_frames, device=str(ens.device) if ens.distributed else args.device)
    metrics = trainer.train(epochs=args.epochs, batchSize=args.batch_size, learningRate=args.lr,
                            patience=args.patience, maxSteps=args.max_steps,
                            maxSeconds=args.max_minutes * 60.0 if args.max_minutes else None)
    ens.close()
    if not ens.isMain:
        return
    trainer.save(args.output, structure=data["cgPdb"])
    shown = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(shown, indent=1))
    print(f"wrote {args.output}")


def _validate(args):
    import os

    from openmmflash.distributed import Ensemble, launchInfo
    from openmmflash.workflows.cgvalidation import finalizeValidation, runValidationChunk, validateModel

    defaults = {"time": 1.0, "replicas": 4, "timestep": 2.0, "report_interval": 100, "seed": 1}
    if launchInfo()["worldSize"] > 1:  # torchrun / srun: each rank its replicas in WORK/rank<k>, rank 0 the report
        from openmmflash.workflows.rankedjobs import validateRanks

        for key, value in defaults.items():
            setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
        with Ensemble() as ens:
            report = validateRanks(ens, args.model, args.data, args.output, args.work, args.time, args.replicas,
                                   args.timestep, args.report_interval, args.seed,
                                   False if args.no_fast_path else None, args.max_wall, args.platform)
        if report is not None:
            print(f"{report['cgTime']} on {report['worldSize']} ranks; stable {report['stable']}; wrote "
                  f"{report['files']}")
        return
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
