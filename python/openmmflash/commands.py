"""The arguments of every ``openmmflash`` sub-command, declared without importing what runs them.

Building the parser imports nothing but argparse, so ``openmmflash --help`` and every ``openmmflash COMMAND --help``
answer at once. Each sub-command names the function that runs it as ``"module:function"`` (its ``run`` default);
``openmmflash.cli`` imports that module (torch, OpenMM, ...) only when the command runs.
"""

import argparse


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


def add_loss_term_args(p) -> None:
    """The optional training terms and --restride, shared by ``openmmflash flashmd-train`` and
    examples/flashmd_train_cg.py; ``openmmflash.workflows.flashmdcli.loss_term_kwargs`` turns them into
    ``training.train`` arguments."""
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


def _doctor(subparsers):
    parser = subparsers.add_parser("doctor", help="print versions, platforms, GPU and known stack problems")
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="also report the filter tables of this model file or bundled model (repeatable)")
    parser.set_defaults(run="openmmflash.doctor:run")


def _models(subparsers):
    p = subparsers.add_parser("models", help="list the bundled models (names usable wherever a model file is)")
    p.set_defaults(run="openmmflash.workflows.bundledmodels:printBundledModels")


def _demo(subparsers):
    p = subparsers.add_parser("demo", help="run a CG protein simulation with a bundled FlashSchNet model",
                              description="Simulate a bundled CG protein (FlashSchNet TorchForce + priors) with "
                              "several replicas on the fastest platform; writes a compressed .cmdx trajectory "
                              "(CompactReporter) with its size against DCD and XTC, a PNG plot and a summary that "
                              "says whether the run equilibrated.")
    p.add_argument("--model", default=None, help="bundled model name or model file (default chignolin)")
    p.add_argument("--pdb", help="run this protein (PDB/mmCIF, all-atom or CG) instead, with --model or the "
                   "bundled model trained on its sequence, else one trained on all its residue types")
    p.add_argument("--integrator", choices=("langevin", "flashmd"), default="langevin",
                   help="langevin: LangevinMiddleIntegrator (default); flashmd: FlashMDLangevinIntegrator with the "
                   "shipped FlashMD model trained on this CG System")
    p.add_argument("--flashmd-model", help="FlashMD model name or file (default: the one shipped for --model)")
    p.add_argument("--quantized", action="store_true", help="use the GAQ-quantized FlashMD model if one is shipped")
    p.add_argument("--steps", type=int, default=None, help="MD steps (default 2000 = 4 ps at 2 fs)")
    p.add_argument("--time", type=float, default=None, help="simulated time per replica in ps (instead of --steps)")
    p.add_argument("--quick", action="store_true", help="a short check run (200 steps, 2 replicas), too short to "
                   "equilibrate")
    p.add_argument("--replicas", type=int, default=None, help="replicas (default 4)")
    p.add_argument("--timestep", type=float, default=2.0, help="fs (default 2)")
    p.add_argument("--friction", type=float, default=10.0, help="Langevin friction, 1/ps (default 10)")
    p.add_argument("--report-interval", type=int, default=None, help="steps between frames (default 40)")
    p.add_argument("--platform", help="OpenMM platform (default: CUDA if available, else CPU)")
    p.add_argument("--output", "-o", default="openmmflash-demo", help="output folder (default openmmflash-demo)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-fast-path", action="store_true", help="on CUDA, use the plain force (reference CFConv, "
                   "exact neighbor list) instead of the fused kernels with a padded neighbor list")
    p.set_defaults(run="openmmflash.demo:_demo")


def _cg(subparsers):
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
    p.set_defaults(run="openmmflash.workflows.cgcli:_data")

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
    p.set_defaults(run="openmmflash.workflows.cgcli:_train")

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
    p.set_defaults(run="openmmflash.workflows.cgcli:_validate")


def _flashmd(subparsers):
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
    p.set_defaults(run="openmmflash.workflows.flashmdcli:_data")

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
    p.set_defaults(run="openmmflash.workflows.flashmdcli:_train")


def _compactmd(subparsers):
    p = subparsers.add_parser("compress", help="compress a trajectory (DCD, XTC, TRR, NetCDF, ...) to .cmdx")
    p.add_argument("input", help="trajectory file readable by MDAnalysis")
    p.add_argument("-o", "--output", help="output .cmdx (default: input name with .cmdx)")
    p.add_argument("--top", help="topology file (PDB, PSF, GRO, PRMTOP, TPR, ...) to embed and use for prediction")
    p.add_argument("--max-error", type=float, default=0.0005, help="max |error| per coordinate in nm (0.0005)")
    p.add_argument("--codec", choices=["auto", "bounded", "xtc"], default="auto",
                   help="auto: lossless 'xtc' for XTC input, 'bounded' otherwise")
    p.add_argument("--chunk-frames", type=int, default=100, help="frames per chunk (100)")
    p.add_argument("--level", type=int, default=1, help="zstd level 1-22 (1; higher is slower and rarely smaller)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run="openmmflash.compactmd.cli:compress")

    recover = dict(action="store_true", help="ignore a damaged index and rebuild it from the chunk heads "
                                             "(reads every intact chunk of a damaged or unclosed file)")
    p = subparsers.add_parser("decompress", help="convert a .cmdx file to DCD or XTC")
    p.add_argument("input", help=".cmdx file")
    p.add_argument("-o", "--output", required=True, help="output file; format from the extension (.dcd, .xtc)")
    p.add_argument("--recover", **recover)
    p.set_defaults(run="openmmflash.compactmd.cli:decompress")

    p = subparsers.add_parser("info", help="describe a .cmdx file")
    p.add_argument("input", help=".cmdx file")
    p.add_argument("--recover", **recover)
    p.set_defaults(run="openmmflash.compactmd.cli:info")

    p = subparsers.add_parser("verify", help="check every chunk of a .cmdx file (and the error against a source)")
    p.add_argument("input", help=".cmdx file")
    p.add_argument("--source", help="original trajectory: report the true max error and RMSD against it")
    p.add_argument("--top", help="topology for --source when MDAnalysis needs one (DCD, TRR, ...)")
    p.add_argument("--recover", **recover)
    p.set_defaults(run="openmmflash.compactmd.cli:verify")


def _gaq(subparsers):
    p = subparsers.add_parser("quantize", help="quantize a FlashMD model (GAQ: calibration + QAT, low-bit file)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="FlashMD model file or shipped model name")
    p.add_argument("-o", "--output", required=True, help="quantized model file (.pt)")
    p.add_argument("--scheme", default="w4a8", help="bit widths w<4|8>a<4..16>: weights and activations")
    p.add_argument("--method", default="frame", help="vector activations: frame (exactly equivariant MDDQ in a "
                   "local frame), mddq (world-frame MDDQ) or naive (per-component baseline)")
    p.add_argument("--data", required=True, help="training pairs (.npz from flashmd-data) for calibration and QAT")
    p.add_argument("--qat-steps", type=int, default=300, help="fine-tuning steps (0: calibration only)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per QAT batch")
    p.add_argument("--calibration-batches", type=int, default=16)
    p.add_argument("--dir-bits", type=int, default=10, help="direction codebook size 2^bits (mddq, frame)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run="openmmflash.workflows.gaqcli:_quantize")


MLCG_FORMATS = """\
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


def _mlcg(subparsers):
    p = subparsers.add_parser("import-mlcg", help="convert an mlcg (CGSchNet) checkpoint to a FlashSchNet model file",
                              description="Convert an mlcg StandardSchNet checkpoint and its priors into a "
                              "FlashSchNet model file (weights, priors as native OpenMM forces, bead-type table, "
                              "provenance).", epilog=MLCG_FORMATS,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="mlcg simulation file, pickled model or Lightning .ckpt")
    p.add_argument("--priors", help="mlcg prior file whose bead-type tables give the priors")
    p.add_argument("--output", "-o", required=True, help="FlashSchNet model file to write (.pt)")
    p.add_argument("--pdb", help="also write a CG PDB of a stored configuration")
    p.add_argument("--frame", type=int, default=0, help="stored configuration for --pdb (default 0)")
    p.add_argument("--structures", help="mlcg structures file (start structure, masses, prior term lists)")
    p.add_argument("--mapping", choices=["ca", "5bead"], help="CG mapping (default: from the bead types)")
    p.add_argument("--no-priors", action="store_true", help="convert the SchNet only")
    p.set_defaults(run="openmmflash.workflows.mlcgcli:_import")


# Command groups in the order they appear in --help.
GROUPS = [_doctor, _models, _demo, _cg, _mlcg, _flashmd, _compactmd, _gaq]


def addCommands(subparsers) -> None:
    """Add every sub-command's parser to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    for group in GROUPS:
        group(subparsers)
