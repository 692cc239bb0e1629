"""Make the bundled chignolin CG model from scratch: all-atom reference MD, priors, force matching, validation.

    python examples/cg_chignolin.py --output chignolin-work          # about 1 h of CPU on 2 cores

Equivalent to the command lines in docs/models.md. Each stage resumes or reuses what is already on disk.
"""

import argparse
import os

import torch  # noqa: F401  (before openmm)

from openmmflash.cg.refdata import HAIRPIN_PHI_PSI, ReferenceRun, loadReferenceData
from openmmflash.cg.training import ForceMatching
from openmmflash.workflows.cgvalidation import validateModel
from openmmflash.schnet.config import FlashSchNetConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="chignolin-work")
    parser.add_argument("--steps", type=int, default=250000, help="reference MD steps at 4 fs (default 1 ns)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--validation-ns", type=float, default=0.02, help="CG time per replica for validation")
    parser.add_argument("--validation-seed", type=int, default=2)
    args = parser.parse_args()
    refdir = os.path.join(args.output, "reference")
    run = ReferenceRun(refdir, sequence="GYDPETGTWG", phiPsi=HAIRPIN_PHI_PSI, mapping="5bead", temperature=300.0,
                       timestep=4.0, hydrogenMass=3.0, friction=1.0, reportInterval=50, shardFrames=250,
                       equilibrationSteps=5000, seed=1)
    run.run(args.steps)
    data = loadReferenceData(refdir)
    config = FlashSchNetConfig(hiddenChannels=64, numFilters=64, numRbf=32, numInteractions=2, cutoff=10.0,
                               readoutHidden=[32], backend="reference")
    trainer = ForceMatching(data, config=config, stride=2, seed=1)
    trainer.train(epochs=args.epochs, batchSize=16, learningRate=2e-3, patience=3)
    model_path = os.path.join(args.output, "chignolin.pt")
    trainer.save(model_path, structure=data["cgPdb"])
    report = validateModel(model_path, refdir, os.path.join(args.output, "validation"), timeNs=args.validation_ns,
                           seed=args.validation_seed)
    print(report["files"])


if __name__ == "__main__":
    main()
