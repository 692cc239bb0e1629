"""``openmmflash import-mlcg`` (arguments in ``openmmflash.commands``): convert an mlcg (CGSchNet) checkpoint into a
FlashSchNet model file."""

import os

from openmmflash.mlcg.importer import importMlcg, writeCGPdb


def _import(args):
    if os.path.abspath(args.output) == os.path.abspath(args.checkpoint):
        raise ValueError("--output would overwrite the checkpoint; choose another file name")
    model = importMlcg(args.checkpoint, args.priors, args.mapping, includePriors=not args.no_priors,
                       structures=args.structures)
    model.save(args.output)
    c = model.config
    priors = model.metadata.get("priors", {})
    counts = ", ".join(f"{k} {len(priors[k])}" for k in ("bonds", "angles", "dihedrals", "repulsion") if k in priors)
    print(f"wrote {args.output}: FlashSchNet F={c.hiddenChannels} F'={c.numFilters} R={c.numRbf} ({c.rbfType}) "
          f"T={c.numInteractions} cutoff {c.cutoff} A, mapping {model.metadata['mapping']}, "
          f"prior types: {counts or 'none'}")
    if args.pdb:
        writeCGPdb(args.structures or args.checkpoint, args.pdb, args.frame, args.mapping)
        print(f"wrote {args.pdb}")
    return 0
