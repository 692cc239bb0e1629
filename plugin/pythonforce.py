"""The ``openmm.PythonForce`` backend of FlashSchNet: same module and ops as the TorchForce, called from Python.

Positions and forces go through the host every step, but the boundary is cheaper than the TorchForce's for small
systems (measured: ``examples/benchmarks/results/torchforce_boundary.json``), it needs no openmmtorch and it runs with
any torch. With ``useCUDAGraphs`` the whole force call (neighbor list, model, autograd backward) is captured once in a
CUDA graph and replayed on pinned host buffers, so a step costs one graph launch plus two small copies. The compute
object is picklable, so a System holding it survives XmlSerializer and copy.deepcopy (the graph is recaptured).
"""

import io
from typing import Optional

import numpy as np
import torch

from openmmflash.plugin.forcemodule import _model, createFlashSchNetModule
from openmmflash.plugin.forceoptions import FlashSchNetForceOptions
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.model import FlashSchNet
from openmmflash.stack import import_openmm


class FlashSchNetCompute:
    """Picklable PythonForce computation: ``compute(state) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)``.

    Parameters are those of ``openmmflash.plugin.forcemodule.createFlashSchNetModule`` plus ``device`` and
    ``useCUDAGraphs`` / ``CUDAGraphWarmupSteps`` (CUDA devices only; needs a fixed ``neighborCapacity``, because the
    exact neighbor list reads its length on the host, which a graph cannot do).
    """

    def __init__(self, model, device: Optional[str] = None, useCUDAGraphs: bool = False,
                 CUDAGraphWarmupSteps: int = 10, **moduleOptions):
        model = _model(model)
        self._model_bytes = self._serialize(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module = createFlashSchNetModule(model, **moduleOptions).to(self.device)
        self._init_graph(useCUDAGraphs, CUDAGraphWarmupSteps)
        # What __setstate__ rebuilds the module from. The topology only served to look up bead types: keep the
        # pickled state small and topology-free.
        self._options = dict(moduleOptions, topology=None, beadTypes=self.module.types.tolist(),
                             numParticles=self.module.num_particles, periodic=self.module.periodic)

    def _init_graph(self, useCUDAGraphs: bool, warmupSteps: int) -> None:
        if useCUDAGraphs and self.module.capacity <= 0:
            raise ValueError("useCUDAGraphs needs a fixed neighbor-list length: pass neighborCapacity > 0 (e.g. "
                             "1.5x the directed pairs within the cutoff; openmmflash.plugin.fastpath.neighborCapacity)")
        if warmupSteps < 1:
            raise ValueError(f"CUDAGraphWarmupSteps must be >= 1, got {warmupSteps}")
        self.use_graphs = bool(useCUDAGraphs)
        self.warmup_steps = int(warmupSteps)
        self._graph = None
        self._calls = 0

    @staticmethod
    def _serialize(model) -> bytes:
        buffer = io.BytesIO()
        torch.save({"config": model.config.toDict(), "stateDict": model.state_dict(),
                    "metadata": getattr(model, "metadata", {})}, buffer)
        return buffer.getvalue()

    def __getstate__(self):
        return {"model_bytes": self._model_bytes, "options": self._options, "device": self.device,
                "graphs": (self.use_graphs, self.warmup_steps)}

    def __setstate__(self, state):
        payload = torch.load(io.BytesIO(state["model_bytes"]), map_location="cpu", weights_only=True)
        model = FlashSchNet(FlashSchNetConfig.fromDict(payload["config"]))
        model.load_state_dict(payload["stateDict"])
        model.metadata = payload["metadata"]
        self._model_bytes, self._options = state["model_bytes"], state["options"]
        self.device = state["device"] if state["device"] == "cpu" or torch.cuda.is_available() else "cpu"
        self.module = createFlashSchNetModule(model, **self._options).to(self.device)
        self._init_graph(*state.get("graphs", (False, 10)))

    def __call__(self, state):
        unit = import_openmm().unit
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if self.module.periodic else None
        if self.use_graphs and self.device != "cpu":
            return self._replay(positions, box)
        dtype = self.module.dtype
        pos = torch.as_tensor(positions, dtype=dtype, device=self.device)
        box_t = None if box is None else torch.as_tensor(box, dtype=dtype, device=self.device)
        with torch.enable_grad():
            energy, forces = self.module(pos, box_t)
        return float(energy), forces.detach().cpu().numpy().astype(np.float64)

    def _replay(self, positions: np.ndarray, box: Optional[np.ndarray]):
        """Graph path: host (pinned) -> static device input -> graph (eager for the warm-up calls, on a side
        stream as capture requires) -> static device output -> pinned host output."""
        n = positions.shape[0]
        if self._calls == 0:
            self._allocate(n)
        self._host_in[:n].copy_(torch.from_numpy(np.ascontiguousarray(positions)))
        if box is not None:
            self._host_in[n:].copy_(torch.from_numpy(np.ascontiguousarray(box)))
        current = torch.cuda.current_stream()
        self._static_in.copy_(self._host_in, non_blocking=True)
        if self._graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self._run_static()
            current.wait_stream(side)
            self._calls += 1
            if self._calls >= self.warmup_steps:
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    self._run_static()
        else:
            self._graph.replay()
        self._host_out.copy_(self._static_out, non_blocking=True)
        current.synchronize()
        out = self._host_out.numpy()
        return float(out[n, 0]), out[:n].copy()

    def _allocate(self, n: int) -> None:
        """Static device buffers and pinned host buffers: rows 0..n-1 positions / forces, then the box (3 rows) /
        the energy (row n, column 0)."""
        rows = n + (3 if self.module.periodic else 0)
        self._host_in = torch.empty((rows, 3), dtype=torch.float64, pin_memory=True)
        self._static_in = torch.empty((rows, 3), dtype=torch.float64, device=self.device)
        self._host_out = torch.empty((n + 1, 3), dtype=torch.float64, pin_memory=True)
        self._static_out = torch.zeros((n + 1, 3), dtype=torch.float64, device=self.device)
        self._n = n

    def _run_static(self) -> None:
        """The module on the static input, energy and forces into the static output (capturable: no host sync)."""
        n, dtype = self._n, self.module.dtype
        pos = self._static_in[:n].to(dtype)
        box = self._static_in[n:].to(dtype) if self.module.periodic else None
        with torch.enable_grad():
            energy, forces = self.module(pos, box)
        self._static_out[:n].copy_(forces)
        self._static_out[n, 0].copy_(energy)


def createFlashSchNetPythonForce(model, topology=None, beadTypes=None,
                                 forceOptions: Optional[FlashSchNetForceOptions] = None, **options):
    """A PythonForce computing the FlashSchNet energy and forces (options as ``createFlashSchNetForce``, plus
    ``device``; the CUDA graph is captured and replayed by the compute object, see ``FlashSchNetCompute``)."""
    openmm = import_openmm()
    opts = FlashSchNetForceOptions.resolve(forceOptions, **options)
    compute = FlashSchNetCompute(model, device=opts.device, useCUDAGraphs=opts.useCUDAGraphs,
                                 CUDAGraphWarmupSteps=opts.CUDAGraphWarmupSteps, topology=topology, beadTypes=beadTypes,
                                 **opts.moduleKeywords())
    force = openmm.PythonForce(compute)
    force.setUsesPeriodicBoundaryConditions(compute.module.periodic)
    force.setForceGroup(opts.forceGroup)
    force.setName("FlashSchNet")
    return force
