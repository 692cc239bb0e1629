"""``openmmflash quantize``: quantize a FlashMD model (calibration + branch-separated QAT) and store it at its bit width.

Examples::

    openmmflash quantize water-tip3pfb-8fs --scheme w4a8 --method frame --data water_8fs.npz --qat-steps 500 \\
        -o water-gaq-w4a8.pt
    openmmflash quantize water-tip3pfb-8fs --scheme w8a8 --method naive --data water_8fs.npz --qat-steps 0 -o ptq.pt

The output file records the scheme, method, direction-codebook size, QAT settings, the held-out losses (fp32, after
calibration, after QAT) and the held-out per-species errors (``model.validation``); ``FlashMDIntegrator`` and its
thermostatted versions load it like any FlashMD model file.
"""

import json
import os


def _quantize(args):
    from openmmflash.integrators.network.gaqfile import saveQuantizedModel
    from openmmflash.integrators.training.qat import quantizationAwareTraining
    from openmmflash.gaq.quantize import METHODS, parseScheme
    parseScheme(args.scheme)  # clear error before any loading
    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; choose one of {METHODS}")
    if not os.path.exists(args.data):
        raise FileNotFoundError(f"training pairs {args.data!r} not found: make them with `openmmflash flashmd-data` "
                                "(the same system and stride the model was trained on)")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise ValueError("the output would overwrite the input model; choose another -o path")
    model = quantizationAwareTraining(args.model, args.data, args.scheme, args.method, dirBits=args.dir_bits,
                                      steps=args.qat_steps, batchSize=args.batch_size,
                                      calibrationBatches=args.calibration_batches, device=args.device,
                                      seed=args.seed, progress=not args.quiet)
    size = saveQuantizedModel(model, args.output)
    qat = model.gaq["qat"]
    print(f"wrote {args.output} ({size} bytes): {args.scheme} {args.method}, QAT {args.qat_steps} steps")
    print(json.dumps({"lossFp32": qat["lossFp32"], "lossAfterCalibration": qat["lossAfterCalibration"],
                      "lossAfterQAT": qat["lossAfterQAT"]}, indent=1))
