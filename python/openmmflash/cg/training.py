"""Force matching of FlashSchNet on top of Boltzmann-inverted priors.

The network learns the residual of the mapped all-atom force (see ``openmmflash.cg.refdata``) after the priors::

    loss = < | F_map(R) - F_prior(R) - F_net(R) |^2 >      (per component, kcal/mol/A, frames x beads x 3)

Frames are split into ``numBlocks`` contiguous time blocks and whole blocks go to validation (neighbouring frames
are correlated, so a random frame split would leak); with several reference runs (``refdata.mergeReferenceData``)
each run is split this way, and the priors are fitted on the runs at the model's temperature only. Adam with ReduceLROnPlateau, early stopping on the validation
loss (the best weights are kept), seeded shuffling and initialization. Mixed precision is not used: the force
targets need double backward, which gains nothing from autocast on CPU.
"""

import math
import time
from typing import Optional

import numpy as np
import torch

from openmmflash.cg.mapping import CGMapping, beadTypesFromTopology
from openmmflash.cg.priorfit import checkPriors, fitPriors
from openmmflash.cg.priorsystem import createPriorSystem
from openmmflash.distributed import DataParallelLoss, rankPart, sumOverRanks
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.model import FlashSchNet
from openmmflash.stack import import_openmm

KJ_PER_KCAL = 4.184


def priorForces(cgTopology, positions: np.ndarray, priors: dict, mapping) -> np.ndarray:
    """Prior forces (frames, n, 3) in kcal/mol/A at positions (frames, n, 3) in nm, evaluated by OpenMM (the same
    native forces a CG simulation uses)."""
    openmm = import_openmm()

    system = createPriorSystem(cgTopology, priors, mapping, removeCMMotion=False)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = np.empty(positions.shape, dtype=np.float64)
    for k in range(positions.shape[0]):
        context.setPositions(positions[k].astype(np.float64))
        out[k] = context.getState(getForces=True).getForces(asNumpy=True)._value
    return out / KJ_PER_KCAL / 10.0


def timeBlockSplit(numFrames: int, numBlocks: int = 10, validationFraction: float = 0.2, seed: int = 1):
    """(train, validation) frame indices: contiguous time blocks, ``validationFraction`` of them to validation."""
    if numFrames < 2 * numBlocks:
        raise ValueError(f"{numFrames} frames cannot be split into {numBlocks} time blocks; record more frames")
    if not 0 < validationFraction < 1:
        raise ValueError(f"validationFraction must be in (0, 1), got {validationFraction}")
    blocks = np.array_split(np.arange(numFrames), numBlocks)
    n_val = max(1, int(round(validationFraction * numBlocks)))
    chosen = set(np.random.default_rng(seed).permutation(numBlocks)[:n_val].tolist())
    val = np.concatenate([b for k, b in enumerate(blocks) if k in chosen])
    train = np.concatenate([b for k, b in enumerate(blocks) if k not in chosen])
    return train, val


def runBlockSplit(runIndex: np.ndarray, numBlocks: int = 10, validationFraction: float = 0.2, seed: int = 1):
    """``timeBlockSplit`` inside each run of a combined data set (runIndex (frames,) from
    ``refdata.mergeReferenceData``; one run: the plain split). Returns global (train, validation) indices."""
    train, val = [], []
    for k, run in enumerate(np.unique(runIndex)):
        frames = np.flatnonzero(runIndex == run)
        t, v = timeBlockSplit(frames.shape[0], numBlocks, validationFraction, seed + k)
        train.append(frames[t])
        val.append(frames[v])
    return np.concatenate(train), np.concatenate(val)


def checkMapping(model, metadata: dict) -> None:
    """Refuse a model whose CG mapping is not the one the reference data was mapped with."""
    data_mapping = metadata["settings"]["mapping"]
    model_mapping = model.metadata.get("mapping")
    if model_mapping is not None and CGMapping(model_mapping).name != CGMapping(data_mapping).name:
        raise ValueError(f"the training data were mapped with the {data_mapping!r} mapping but the model uses "
                         f"{model_mapping!r}; generate data with `cg-data --mapping {model_mapping}` or train a new "
                         "model for this mapping")


class ForceMatching:
    """Force-matching trainer. ``ForceMatching(data).train()`` returns the trained model and a metrics dict.

    Parameters
    ----------
    data : dict
        From ``openmmflash.cg.refdata.loadReferenceData``.
    model : FlashSchNet, optional
        A model to continue training (its mapping must match the data); default a new one from ``config``.
    config : FlashSchNetConfig, optional
        Hyperparameters of a new model (Angstrom, kcal/mol).
    priors : dict, optional
        Prior parameters; default: fitted by Boltzmann inversion on the training frames.
    device : str
        Torch device of the training ("cpu" or "cuda"); the priors are evaluated by OpenMM on the CPU either way.
    """

    def __init__(self, data: dict, model: Optional[FlashSchNet] = None, config: Optional[FlashSchNetConfig] = None,
                 priors: Optional[dict] = None, numBlocks: int = 10, validationFraction: float = 0.2, seed: int = 1,
                 stride: int = 1, maxFrames: Optional[int] = None, device: str = "cpu"):
        self.seed = int(seed)
        self.device = torch.device(device)
        torch.manual_seed(self.seed)
        self.metadata = data["metadata"]
        self.mapping = CGMapping(self.metadata["settings"]["mapping"])
        self.topology = data["cgTopology"]
        pos, frc = data["positions"][::stride], data["forces"][::stride]
        runs = data.get("runIndex", np.zeros(data["positions"].shape[0], dtype=np.int64))[::stride]
        if maxFrames:
            pos, frc, runs = pos[:maxFrames], frc[:maxFrames], runs[:maxFrames]
        self.temperature = float(self.metadata["settings"]["temperature"])
        run_temperatures = np.asarray(data.get("runTemperatures", [self.temperature]), dtype=np.float64)
        if model is not None:
            checkMapping(model, self.metadata)
        else:
            config = config or FlashSchNetConfig(hiddenChannels=64, numFilters=64, numRbf=32, numInteractions=2,
                                                 cutoff=10.0, readoutHidden=[32], backend="reference")
            table = self.mapping.defaultBeadTypes()
            if config.numBeadTypes < len(table):
                config.numBeadTypes = len(table)
            model = FlashSchNet(config)
            model.reset_parameters(self.seed)
            model.metadata = {"beadTypes": table, "mapping": self.mapping.name}
        if model.config.lengthUnit != "angstrom" or model.config.energyUnit != "kcal/mol":
            raise ValueError("force matching trains models in Angstrom and kcal/mol")
        self.model = model.to(self.device)
        self.types = torch.tensor(beadTypesFromTopology(self.topology, model.metadata["beadTypes"]),
                                  device=self.device)
        self.train_idx, self.val_idx = runBlockSplit(runs, numBlocks, validationFraction, self.seed)
        # Boltzmann inversion is only right at the temperature the CG model will run at (the first run's).
        at_model_t = self.train_idx[np.abs(run_temperatures[runs[self.train_idx]] - self.temperature) < 1e-6]
        self.priors = priors if priors is not None else fitPriors(self.topology, pos[at_model_t],
                                                                  self.temperature, self.mapping)
        checkPriors(self.priors)
        prior = priorForces(self.topology, pos, self.priors, self.mapping)
        as_tensor = dict(dtype=torch.float32, device=self.device)
        self.positions = torch.tensor(pos * 10.0, **as_tensor)                 # A
        self.forces = torch.tensor(frc / KJ_PER_KCAL / 10.0, **as_tensor)      # kcal/mol/A
        self.target = self.forces - torch.tensor(prior, **as_tensor)           # residual after priors
        self.numFrames = pos.shape[0]
        self.history = []

    def batchForces(self, index: np.ndarray, create_graph: bool) -> torch.Tensor:
        """Network forces (frames, n, 3) for frames ``index``."""
        b = len(index)
        index = torch.as_tensor(index, device=self.device)
        pos = self.positions[index].reshape(-1, 3)
        _, forces = self.model.energy_and_forces(pos, self.types.repeat(b), b, None, create_graph=create_graph)
        return forces.reshape(b, -1, 3)

    def batchLoss(self, index: np.ndarray) -> torch.Tensor:
        """Mean squared force error (0-d, (kcal/mol/A)^2) of frames ``index``, differentiable in the weights."""
        pred = self.batchForces(index, create_graph=True)
        return ((pred - self.target[torch.as_tensor(index, device=self.device)]) ** 2).mean()

    def evaluate(self, index: np.ndarray, batchSize: int = 32) -> dict:
        """Force-matching metrics on frames ``index`` (kcal/mol/A); in a process group each rank evaluates its
        share of the frames and the sums are added over the ranks (so every rank must call it)."""
        whole, index = index, index[rankPart(len(index))]
        sq, base = 0.0, 0.0
        with torch.enable_grad():
            for start in range(0, len(index), batchSize):
                chunk = index[start:start + batchSize]
                pred = self.batchForces(chunk, create_graph=False).detach()
                target = self.target[torch.as_tensor(chunk, device=self.device)]
                sq += float(((pred - target) ** 2).sum())
                base += float((target ** 2).sum())
        sq, base = sumOverRanks(sq, base)
        index = whole
        count = len(index) * self.types.shape[0] * 3
        total = float((self.forces[torch.as_tensor(index, device=self.device)] ** 2).sum()) / count
        return {"forceRMSE": math.sqrt(sq / count), "priorOnlyForceRMSE": math.sqrt(base / count),
                "mappedForceRMS": math.sqrt(total), "lossRatio": sq / max(base, 1e-30)}

    def train(self, epochs: int = 20, batchSize: int = 16, learningRate: float = 1e-3, patience: int = 5,
              maxSteps: Optional[int] = None, progress: bool = True, maxSeconds: Optional[float] = None) -> dict:
        """Train; keeps the weights of the best validation epoch. Returns the final metrics.

        ``maxSeconds`` stops training after the epoch that crosses this wall time (``stoppedBy`` in the metrics
        says why training ended: "earlyStopping", "maxSteps", "maxSeconds" or "epochs").

        In a torch.distributed process group (torchrun) the model trains under DistributedDataParallel: every rank
        draws the same batches and takes its part of each (``openmmflash.distributed.DataParallelLoss``), so the
        steps equal those of one process with the same ``batchSize``. ``maxSeconds`` is judged by each rank's clock
        and may then end ranks at different epochs: use ``maxSteps`` or ``epochs`` in a process group."""
        from tqdm import tqdm

        rng = np.random.default_rng(self.seed)
        parallel = DataParallelLoss(self.model, self.batchLoss)
        progress = progress and parallel.rank == 0
        optimizer = torch.optim.Adam(self.model.parameters(), lr=learningRate)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(1, patience // 3))
        self.model.train()
        best, best_state, stale, steps, stopped = math.inf, None, 0, 0, "epochs"
        start = time.time()
        initial = self.evaluate(self.val_idx)
        self.history.append({"epoch": 0, "validation": initial})
        for epoch in range(1, epochs + 1):
            order = rng.permutation(self.train_idx)
            batches = [order[k:k + batchSize] for k in range(0, len(order), batchSize)]
            if maxSteps is not None:
                batches = batches[:max(0, maxSteps - steps)]
            running = 0.0
            bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress, leave=False)
            for index in bar:
                optimizer.zero_grad()
                loss = parallel(index[parallel.part(len(index))]) * parallel.weight(len(index))
                loss.backward()
                optimizer.step()
                value = parallel.total(float(loss.detach()) / parallel.worldSize)  # the global batch's mean
                running += value
                steps += 1
                bar.set_postfix(loss=f"{value:.3f}")
            val = self.evaluate(self.val_idx)
            val_loss = val["forceRMSE"] ** 2
            scheduler.step(val_loss)
            self.history.append({"epoch": epoch, "trainLoss": running / max(1, len(batches)), "validation": val,
                                 "learningRate": optimizer.param_groups[0]["lr"]})
            if progress:
                print(f"epoch {epoch}: train loss {running / max(1, len(batches)):.4f}, validation force RMSE "
                      f"{val['forceRMSE']:.4f} (priors only {val['priorOnlyForceRMSE']:.4f}) kcal/mol/A", flush=True)
            if val_loss < best:
                best, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    stopped = "earlyStopping"
                    break
            if maxSteps is not None and steps >= maxSteps:
                stopped = "maxSteps"
                break
            if maxSeconds is not None and time.time() - start >= maxSeconds and epoch < epochs:
                stopped = "maxSeconds"
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        final = self.evaluate(self.val_idx)
        self.metrics = {"validation": final, "initialValidation": initial, "epochs": len(self.history) - 1,
                        "steps": steps, "stoppedBy": stopped, "trainSeconds": time.time() - start,
                        "trainFrames": int(len(self.train_idx)),
                        "validationFrames": int(len(self.val_idx)), "units": "kcal/mol/A",
                        "history": self.history}
        self.settings = {"epochs": epochs, "batchSize": batchSize, "learningRate": learningRate,
                         "patience": patience, "seed": self.seed, "device": str(self.device)}
        return self.metrics

    def save(self, path: str, structure: Optional[str] = None) -> None:
        """Write the model with mapping, bead types, priors, provenance and validation metrics."""
        provenance = {"referenceData": self.metadata["provenance"], "referenceSettings": self.metadata["settings"],
                      "referenceSteps": int(self.metadata["stepsDone"]), "frames": int(self.numFrames),
                      "referenceRuns": self.metadata.get("runs"),
                      "training": getattr(self, "settings", {}), "torch": str(torch.__version__),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        metrics = {k: v for k, v in getattr(self, "metrics", {}).items() if k != "history"}
        extra = {"structure": structure} if structure else {}
        self.model.save(path, beadTypes=self.model.metadata["beadTypes"], mapping=self.mapping.name,
                        priors=self.priors, provenance=provenance, validation=metrics, **extra)
