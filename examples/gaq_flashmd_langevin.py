"""A quantized (GAQ, W4A8, frame MDDQ) FlashMD water model in FlashMDLangevinIntegrator, like any model file.

Flexible TIP3P-FB water in a 1.6 nm box at 300 K. By default the shipped quantized model
``water-tip3pfb-8fs-gaq-w4a8`` is used by name; ``--quantize`` instead makes one here: a few training pairs from
short OpenMM runs (as ``openmmflash flashmd-data`` does), calibration and a few QAT steps
(``openmmflash quantize`` does the same with more data and steps), written at its bit width and loaded by path.

    python examples/gaq_flashmd_langevin.py --steps 100 --platform CPU
    python examples/gaq_flashmd_langevin.py --quantize --qat-steps 5 --steps 50
"""

import argparse
import os
import sys
import tempfile

import torch  # noqa: F401  (import torch before openmm)
from openmm import Platform, app, unit

from openmmflash.integrators.training.data import flexibleWaterBox, generatePairs, speciesOf
from openmmflash.integrators.network.modelfile import availableModels, loadModel
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator

SHIPPED = "water-tip3pfb-8fs-gaq-w4a8"


def quantize_here(system, topology, positions, scheme, qat_steps, platform, output):
    from openmmflash.integrators.network.gaqfile import saveQuantizedModel
    from openmmflash.integrators.training.qat import quantizationAwareTraining
    fp32 = loadModel("water-tip3pfb-8fs")
    pairs = generatePairs(system, positions, speciesOf(topology), [300.0], fp32.stride, startsPerTemperature=1,
                          pairsPerStart=8, pairSpacing=0.02, equilibration=0.2, platform=platform)
    model = quantizationAwareTraining(fp32, pairs, scheme, "frame", steps=qat_steps, batchSize=2,
                                      calibrationBatches=4, device="cpu")
    size = saveQuantizedModel(model, output)
    print(f"quantized model: {output}, {size} bytes ({scheme}, frame MDDQ); held-out loss fp32 "
          f"{model.gaq['qat']['lossFp32']:.4g}, quantized {model.gaq['qat']['lossAfterQAT']:.4g}")
    return output


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=SHIPPED, help="quantized model file or shipped name")
    ap.add_argument("--quantize", action="store_true", help="make a quantized model here instead")
    ap.add_argument("--scheme", default="w4a8")
    ap.add_argument("--qat-steps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="strides to run (8 fs each)")
    ap.add_argument("--platform", default="CPU")
    args = ap.parse_args(argv)

    topology, system, positions = flexibleWaterBox(1.6, 0.7)
    model = args.model
    if args.quantize or (model == SHIPPED and SHIPPED not in availableModels()):
        model = quantize_here(system, topology, positions, args.scheme, args.qat_steps, args.platform,
                              os.path.join(tempfile.mkdtemp(), f"water-gaq-{args.scheme}.pt"))
    info = loadModel(model)
    stored = sum(b.numel() * b.element_size() for b in info.state_dict().values())
    print(f"quantized FlashMD model: stride {info.stride * 1000:g} fs, {info.gaq['scheme']} {info.gaq['method']}, "
          f"direction codebook 2^{info.gaq['dirBits']}, {stored} bytes of tensors")

    # The only line that differs from an ordinary OpenMM script: the integrator (with a quantized model).
    integrator = FlashMDLangevinIntegrator(300 * unit.kelvin, 1 / unit.picosecond, None, model=model)
    simulation = app.Simulation(topology, system, integrator, Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=500)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)
    simulation.reporters.append(app.StateDataReporter(sys.stdout, 25, step=True, time=True, potentialEnergy=True,
                                                      temperature=True, speed=True))
    simulation.step(args.steps)
    print(f"learned strides {integrator.getNumLearnedSteps()}, fallbacks {integrator.getNumFallbacks()}, "
          f"per-species T {integrator.computeSpeciesTemperatures()}")


if __name__ == "__main__":
    main()
