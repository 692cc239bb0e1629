"""Branch-separated quantization-aware training (QAT) of a FlashMD model, starting from the trained fp32 model.

Recipe (GAQ's "branch-separated QAT", written here for the FlashMD PaiNN):

1. Insert quantizers (quantize.quantizeModel) into a copy of the fp32 model.
2. Calibrate: observers on, forward passes over ``calibrationBatches`` training batches (random O(3) rotations and
   time reversal, as in training), no parameter update.
3. Fine-tune with the FlashMD training loss and data code (integrators/training.py ``Trainer.loss``), with one
   AdamW parameter group per branch (quantize.branchParameters): the scalar (invariant) branch and the vector
   (equivariant) branch each have their own

   - learning rate (cosine decay from its peak),
   - bit-width ramp: weights start at ``startWeightBits`` and activations at ``startActivationBits`` and reach the
     scheme's bits linearly by ``rampFraction`` of the steps (one bit at a time),
   - observer freeze point: running-max observers follow the activations until ``freezeFraction`` of the steps,
     then the scales stay fixed.

   The vector branch is ramped and frozen later and trained with a smaller learning rate by default: its direction
   codebook and magnitude grid are the coarser approximation, and its features feed the predicted displacements
   and momenta directly.
4. Leave every quantizer at the target bits with frozen scales, evaluate the loss on held-out pairs.

The returned model is still in fake-quantized form (float weights with straight-through quantization); export.py
turns it into the stored low-bit model.
"""

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

import torch

from openmmflash.gaq.quantize import PerChannelWeight, branchParameters, parseScheme, quantizeModel, setObserving
from openmmflash.gaq.quantizers import ScalarQuantizer, _Observed
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.training.data import loadDataset
from openmmflash.integrators.training.trainer import Trainer


@dataclass
class BranchSchedule:
    """Schedule of one branch. Fractions are of the QAT steps (0 = from the first step)."""
    lr: float
    rampFraction: float = 0.3
    freezeFraction: float = 0.6
    startWeightBits: int = 8
    startActivationBits: int = 12

    def bits(self, target: int, start: int, progress: float) -> int:
        """Bit width at ``progress`` in [0, 1]: from max(start, target) down to target by rampFraction."""
        start = max(start, target)
        if self.rampFraction <= 0 or progress >= self.rampFraction:
            return target
        return int(round(target + (start - target) * (1.0 - progress / self.rampFraction)))


@dataclass
class QATSchedule:
    scalar: BranchSchedule = field(default_factory=lambda: BranchSchedule(lr=2e-4, rampFraction=0.3,
                                                                          freezeFraction=0.5))
    vector: BranchSchedule = field(default_factory=lambda: BranchSchedule(lr=1e-4, rampFraction=0.5,
                                                                          freezeFraction=0.7))


def _branch_modules(model) -> Dict[str, Dict[str, list]]:
    """Quantizer modules by branch: {"scalar"|"vector": {"weights": [PerChannelWeight], "activations": [...]}}."""
    out = {b: {"weights": [], "activations": []} for b in ("scalar", "vector")}
    for module in model.modules():
        if isinstance(module, PerChannelWeight):
            out["scalar" if module.channel_dim == 0 else "vector"]["weights"].append(module)
        elif isinstance(module, _Observed):
            out["scalar" if isinstance(module, ScalarQuantizer) else "vector"]["activations"].append(module)
    return out


def _apply_schedule(model, schedule: QATSchedule, progress: float, weight_bits: int, act_bits: int) -> Dict:
    state = {}
    for branch, mods in _branch_modules(model).items():
        sched = getattr(schedule, branch)
        wb = sched.bits(weight_bits, sched.startWeightBits, progress)
        ab = sched.bits(act_bits, sched.startActivationBits, progress)
        observe = progress < sched.freezeFraction
        for m in mods["weights"]:
            m.bits = wb
        for m in mods["activations"]:
            m.bits = ab
            m.observe = observe
        state[branch] = (wb, ab, observe)
    return state


@torch.no_grad()
def _mean_loss(trainer, idx, batch: int) -> float:
    trainer.model.eval()
    total = 0.0
    for start in range(0, len(idx), batch):
        part = idx[start:start + batch]
        total += float(trainer.loss(part, augment=False)[0]) * len(part)
    return total / max(1, len(idx))


def quantizationAwareTraining(model, dataset, scheme: str = "w4a8", method: str = "frame", dirBits: int = 10,
                              steps: int = 300, batchSize: int = 8, calibrationBatches: int = 16,
                              schedule: Optional[QATSchedule] = None, device=None, seed: int = 0,
                              progress: bool = True, evalFrames: int = 64):
    """Quantize a copy of ``model`` (FlashMDModel, path or shipped name) and fine-tune it on ``dataset`` (path or
    dict from integrators.data). ``steps=0`` gives post-training quantization (calibration only).

    Returns the fake-quantized model (on ``device``, eval mode, observers frozen, target bits). Its ``gaq["qat"]``
    records the settings, the loss of the fp32 model, after calibration and after QAT on held-out pairs, the loss
    history and the time taken.
    """
    weight_bits, act_bits = parseScheme(scheme)
    if steps < 0 or batchSize < 1 or calibrationBatches < 1:
        raise ValueError(f"steps must be >= 0, batchSize and calibrationBatches >= 1 (got {steps}, {batchSize}, "
                         f"{calibrationBatches})")
    schedule = schedule or QATSchedule()
    data = loadDataset(dataset) if isinstance(dataset, str) else dataset
    base = copy.deepcopy(loadModel(model)).float()
    trainer = Trainer(data, model=base, batchSize=batchSize, device=device, seed=seed, iterations=max(1, steps))
    gen = trainer.generator
    held_out = trainer.val_idx[:evalFrames]
    loss_fp32 = _mean_loss(trainer, held_out, batchSize)

    quantizeModel(trainer.model, scheme, method, dirBits)
    trainer.model.to(trainer.device)
    t0 = time.time()
    # Calibration at the starting bit widths (observers record amax, which does not depend on the bits).
    _apply_schedule(trainer.model, schedule, 0.0, weight_bits, act_bits)
    setObserving(trainer.model, True)
    trainer.model.train()
    with torch.no_grad():
        for _ in range(calibrationBatches):
            idx = trainer.train_idx[torch.randint(len(trainer.train_idx), (batchSize,), generator=gen).numpy()]
            trainer.loss(idx)
    _apply_schedule(trainer.model, schedule, 1.0, weight_bits, act_bits)
    loss_ptq = _mean_loss(trainer, held_out, batchSize)

    groups = branchParameters(trainer.model)
    peaks = {"scalar": schedule.scalar.lr, "vector": schedule.vector.lr}
    optimizer = torch.optim.AdamW([{"params": groups[b], "lr": peaks[b], "branch": b} for b in ("scalar", "vector")],
                                  weight_decay=0.0)
    bar = None
    if progress and steps:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=f"gaq-qat {scheme} {method}", unit="it")
    history, running = [], None
    for step in range(steps):
        frac = step / steps
        state = _apply_schedule(trainer.model, schedule, frac, weight_bits, act_bits)
        for group in optimizer.param_groups:
            group["lr"] = peaks[group["branch"]] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        trainer.model.train()
        idx = trainer.train_idx[torch.randint(len(trainer.train_idx), (batchSize,), generator=gen).numpy()]
        total = trainer.loss(idx)[0]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
        optimizer.step()
        value = float(total.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == steps - 1:
            history.append((step, running))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4g}", bits=f"s{state['scalar'][0]}/{state['scalar'][1]} "
                                                        f"v{state['vector'][0]}/{state['vector'][1]}")
    if bar is not None:
        bar.close()
    _apply_schedule(trainer.model, schedule, 1.0, weight_bits, act_bits)
    setObserving(trainer.model, False)
    loss_qat = _mean_loss(trainer, held_out, batchSize) if steps else loss_ptq
    qmodel = trainer.model
    qmodel.eval()
    qmodel.gaq["qat"] = {"steps": steps, "batchSize": batchSize, "calibrationBatches": calibrationBatches,
                         "seed": seed, "schedule": asdict(schedule), "device": str(trainer.device),
                         "heldOutFrames": int(len(held_out)), "lossFp32": loss_fp32, "lossAfterCalibration": loss_ptq,
                         "lossAfterQAT": loss_qat, "lossHistory": history, "seconds": round(time.time() - t0, 2),
                         "torch": torch.__version__}
    qmodel.validation = trainer.validate()
    qmodel.provenance = dict(qmodel.provenance, quantized={"scheme": scheme, "method": method, "dirBits": dirBits,
                                                           "qatSteps": steps})
    return qmodel

