"""``openmmflash import-mlcg``: convert an mlcg (CGSchNet) checkpoint into a FlashSchNet model file."""

FORMATS = """\
CHECKPOINT may be any of mlcg's file forms (read without mlcg or PyG; nothing in the file is executed, and a file
naming a class outside the allow-list of mlcg, torch_geometric and torch.nn classes is refused):
  simulation file    torch.save((model, configurations)), e.g. *_specialized_model_and_config.pt: SchNet, priors
                     (static ones are taken from the first stored configuration) and start structures
  pickled model      an mlcg SumOut (SchNet + priors), GradientsOut or StandardSchNet
  Lightning .ckpt    a training checkpoint: structure from hyper_parameters['model'], trained weights from state_dict
--priors PRIOR_FILE  an mlcg prior file (ModuleDict of GeneralBonds/GeneralAngles/Dihedral/Repulsion with bead-type
                     tables, e.g. sparse_prior_cln_ca.pt); replaces the checkpoint's priors
--structures FILE    a structures file (list of AtomicData, e.g. structures_cln_ca.pt): start structure, masses
                     and, for priors bead types cannot assign (5-bead prior sets), the stored term lists
Priors: CA priors become bead-type-keyed tables that apply to any CA sequence (terms by mlcg's rule: bonds
CA(i)-CA(i+1), every bonded triple and quadruple, repulsion between beads >= 3 bonds apart); other prior sets
become explicit term lists bound to the stored structure.
Units stay mlcg's (Angstrom, kcal/mol); OpenMM sees nm and kJ/mol. Supported SchNet options: GaussianBasis and
ExpNormalBasis; CosineCutoff, IdentityCutoff, ShiftedCosineCutoff; any widths; tanh activations. Anything else is
refused with the option named."""


def register(subparsers):
    import argparse

    p = subparsers.add_parser("import-mlcg", help="convert an mlcg (CGSchNet) checkpoint to a FlashSchNet model file",
                              description="Convert an mlcg StandardSchNet checkpoint and its priors into a "
                              "FlashSchNet model file (weights, priors as native OpenMM forces, bead-type table, "
                              "provenance).", epilog=FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="mlcg simulation file, pickled model or Lightning .ckpt")
    p.add_argument("--priors", help="mlcg prior file whose bead-type tables give the priors")
    p.add_argument("--output", "-o", required=True, help="FlashSchNet model file to write (.pt)")
    p.add_argument("--pdb", help="also write a CG PDB of a stored configuration")
    p.add_argument("--frame", type=int, default=0, help="stored configuration for --pdb (default 0)")
    p.add_argument("--structures", help="mlcg structures file (start structure, masses, prior term lists)")
    p.add_argument("--mapping", choices=["ca", "5bead"], help="CG mapping (default: from the bead types)")
    p.add_argument("--no-priors", action="store_true", help="convert the SchNet only")
    p.set_defaults(func=_import)


def _import(args):
    import os

    from openmmflash.mlcg.importer import importMlcg, writeCGPdb

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
