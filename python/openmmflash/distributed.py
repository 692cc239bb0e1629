"""Processes of one job launched by ``torchrun`` or Slurm's ``srun``: each rank's share of the work, its device,
and gathering results on rank 0, on ``torch.distributed`` (NCCL between GPUs, gloo on CPUs).

A script (or an ``openmmflash`` command) runs once per process; ``Ensemble`` reads the launcher's variables
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` of torchrun, else ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID``
of an srun step) and joins the process group only when there is more than one process; a plain ``python script.py``
is rank 0 of 1 and needs no launcher::

    with Ensemble() as ens:                           # torchrun --nproc-per-node 4 script.py
        mine = ens.share(64)                          # this rank's replicas, e.g. range(16, 32) on rank 1
        platform = Platform.getPlatformByName("CUDA")
        context = Context(system, integrator, platform, ens.platformProperties("CUDA"))  # DeviceIndex = LOCAL_RANK
        ...
        rg = ens.gatherArrays(rgOfMyReplicas)         # rank 0: every rank's rows in rank order; others: None
        if ens.isMain:
            np.save("rg.npy", rg)

Object and array gathers travel through gloo on the CPU (also when the GPUs talk NCCL), so they suit summaries and
per-frame observables, not trajectories: each rank writes those itself (``partPath``). Caution: every rank must
call the collective methods (``gather``, ``gatherArrays``, ``allReduce``, ``broadcast``, ``barrier``) in the same
order; a rank that raises leaves the others waiting until the launcher ends the job (torchrun does on any failure).
Tested on CPU with gloo (2 processes, tests/test_distributed.py); NCCL is chosen on CUDA but untested here.
"""

import os
import re
import subprocess
from datetime import timedelta
from typing import Any, List, Optional

import numpy as np
import torch

DEFAULT_PORT = 29500
PLATFORMS_WITH_DEVICE_INDEX = ("CUDA", "OpenCL", "HIP")


def _env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"the environment variable {name}={value!r} is not an integer; unset it or fix the "
                         "launcher's settings") from err


def launchInfo() -> dict:
    """(rank, worldSize, localRank, localWorldSize, launcher) of this process from the environment, without
    joining anything. torchrun's variables win over Slurm's (torchrun inside an srun step); a Slurm job's batch
    shell or ``salloc`` shell (no ``SLURM_STEP_NUM_TASKS``) counts as a single process."""
    if os.environ.get("WORLD_SIZE") is not None and os.environ.get("RANK") is not None:
        world, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
        local = _env_int("LOCAL_RANK", 0)
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        launcher = "torchrun"
    elif os.environ.get("SLURM_STEP_NUM_TASKS") is not None and os.environ.get("SLURM_PROCID") is not None:
        world, rank = _env_int("SLURM_STEP_NUM_TASKS"), _env_int("SLURM_PROCID")
        local = _env_int("SLURM_LOCALID", 0)
        per_node = re.match(r"\d+", os.environ.get("SLURM_STEP_TASKS_PER_NODE", "") or "")
        local_world = int(per_node.group()) if per_node else world
        launcher = "slurm"
    else:
        world, rank, local, local_world, launcher = 1, 0, 0, 1, None
    if world < 1 or not 0 <= rank < world or not 0 <= local < max(local_world, 1):
        raise ValueError(f"inconsistent launcher variables: rank {rank}, world size {world}, local rank {local} "
                         f"of {local_world}; launch with `torchrun --nproc-per-node N` or `srun -n N`")
    return {"rank": rank, "worldSize": world, "localRank": local, "localWorldSize": local_world,
            "launcher": launcher}


def _slurm_master() -> str:
    """The first host of the Slurm step (where rank 0 runs), as MASTER_ADDR."""
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or ""
    if nodes and not re.search(r"[\[,]", nodes):
        return nodes
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError) as err:
        raise RuntimeError(f"cannot find the first host of the Slurm nodes {nodes!r} (scontrol failed); set "
                           "MASTER_ADDR in the batch script, e.g. MASTER_ADDR=$(scontrol show hostnames "
                           "$SLURM_JOB_NODELIST | head -n 1)") from err


def shareRange(n: int, rank: int, worldSize: int) -> range:
    """Rank ``rank``'s contiguous, balanced block of ``n`` items: sizes differ by at most one, the first
    ``n % worldSize`` ranks take the larger ones; every item belongs to exactly one rank."""
    if n < 0:
        raise ValueError(f"cannot share {n} items; give a count >= 0")
    base, extra = divmod(n, worldSize)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class Ensemble:
    """This process's place among the processes of one job; a context manager that joins the process group on
    entry (only if there are several processes) and leaves it on exit, after a barrier when the block succeeded.

    Parameters
    ----------
    backend : str, optional
        torch.distributed backend; default ``"cpu:gloo,cuda:nccl"`` when this process uses a GPU, else ``"gloo"``.
    device : str, optional
        ``"cpu"`` or ``"cuda"`` to choose; default CUDA (``cuda:LOCAL_RANK`` modulo the visible GPUs) if available.
    timeoutMinutes : float
        How long a collective waits for the other ranks before failing.
    """

    def __init__(self, backend: Optional[str] = None, device: Optional[str] = None, timeoutMinutes: float = 30.0):
        info = launchInfo()
        self.rank, self.worldSize = info["rank"], info["worldSize"]
        self.localRank, self.localWorldSize, self.launcher = (info["localRank"], info["localWorldSize"],
                                                              info["launcher"])
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
        if use_cuda and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use device='cpu'")
        self.deviceIndex = self.localRank % torch.cuda.device_count() if use_cuda else None
        self.device = torch.device("cuda", self.deviceIndex) if use_cuda else torch.device("cpu")
        self.backend = backend or ("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
        self.timeout = timedelta(minutes=timeoutMinutes)
        self._owns_group = False

    # -- joining -----------------------------------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        """True when there are several processes (the collectives then talk to the others)."""
        return self.worldSize > 1

    @property
    def isMain(self) -> bool:
        """True on rank 0, the rank that writes the job's summary."""
        return self.rank == 0

    def start(self) -> "Ensemble":
        """Join the process group (several processes only; a group that is already up is used as it is)."""
        import torch.distributed as dist

        if not self.distributed or dist.is_initialized():
            return self
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.launcher == "slurm":
            os.environ.setdefault("MASTER_ADDR", _slurm_master())
            job = _env_int("SLURM_JOB_ID", 0)
            os.environ.setdefault("MASTER_PORT", str(DEFAULT_PORT + job % 10000))  # the same in every task
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise RuntimeError(f"{' and '.join(missing)} not set for a job of {self.worldSize} processes; launch with "
                               "torchrun (it sets them) or export them in the batch script")
        dist.init_process_group(self.backend, rank=self.rank, world_size=self.worldSize, timeout=self.timeout,
                                device_id=self.device if self.device.type == "cuda" else None)
        self._owns_group = True
        self.setPlatformDefaults()
        return self

    def setPlatformDefaults(self) -> None:
        """Make this rank's GPU the default ``DeviceIndex`` of OpenMM's CUDA, OpenCL and HIP platforms in this
        process (``start`` does so on GPUs), so that Contexts created without properties, also inside library
        code, run on it."""
        if self.deviceIndex is None:
            return
        import openmm

        for name in PLATFORMS_WITH_DEVICE_INDEX:
            try:
                platform = openmm.Platform.getPlatformByName(name)
            except Exception:  # not installed here
                continue
            platform.setPropertyDefaultValue("DeviceIndex", str(self.deviceIndex))

    def close(self) -> None:
        """Leave the process group if ``start`` joined it."""
        import torch.distributed as dist

        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False

    def __enter__(self) -> "Ensemble":
        return self.start()

    def __exit__(self, excType, exc, tb) -> None:
        try:
            if excType is None:
                self.barrier()  # nobody leaves while another rank still writes its part
        finally:
            self.close()

    # -- sharing -----------------------------------------------------------------------------------------------
    def share(self, n: int) -> range:
        """This rank's indices of ``n`` replicas, runs or frames (contiguous, balanced, deterministic)."""
        return shareRange(n, self.rank, self.worldSize)

    def seed(self, base: int) -> int:
        """A per-rank random seed: ``base`` on rank 0 (a single process behaves as without a launcher)."""
        return int(base) + 1000003 * self.rank

    def platformProperties(self, platformName: str) -> dict:
        """OpenMM platform properties that put this rank's Context on its own GPU (``DeviceIndex`` = the local
        rank modulo the visible GPUs) on CUDA, OpenCL or HIP; empty for CPU and Reference."""
        if platformName not in PLATFORMS_WITH_DEVICE_INDEX:
            return {}
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"DeviceIndex": str(self.localRank % count if count else self.localRank)}

    def partPath(self, path: str, rank: Optional[int] = None) -> str:
        """``path`` with the part tag of this rank (or ``rank``) before the extension (``traj.dcd`` ->
        ``traj.rank1.dcd``) when there are several processes; ``path`` itself for a single process."""
        if not self.distributed:
            return path
        root, ext = os.path.splitext(path)
        return f"{root}.rank{self.rank if rank is None else rank}{ext}"

    # -- collectives -------------------------------------------------------------------------------------------
    def _joined(self):
        """torch.distributed, once the process group is joined (else a RuntimeError saying how to join)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(f"rank {self.rank} of {self.worldSize} has not joined the process group; use "
                               "`with Ensemble() as ens:` or call ens.start() first")
        return dist

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.distributed:
            self._joined().barrier()

    def gather(self, obj: Any) -> Optional[List[Any]]:
        """Every rank's ``obj`` (picklable, sent through the process group) as a list in rank order on rank 0;
        None on the others."""
        if not self.distributed:
            return [obj]
        dist = self._joined()
        out = [None] * self.worldSize if self.isMain else None
        dist.gather_object(obj, out, dst=0)
        return out

    def allGather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj`` as a list in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        dist = self._joined()
        out = [None] * self.worldSize
        dist.all_gather_object(out, obj)
        return out

    def gatherArrays(self, array, axis: int = 0) -> Optional[np.ndarray]:
        """Arrays of any length along ``axis`` (equal other dimensions) from every rank, concatenated in rank order
        on rank 0 (with ``share``'s contiguous blocks that is the order of the items); None on the others."""
        parts = self.gather(np.asarray(array))
        if parts is None:
            return None
        shapes = {p.shape[:axis % max(p.ndim, 1)] + p.shape[axis % max(p.ndim, 1) + 1:] for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"the ranks' arrays differ in shape outside axis {axis}: {[p.shape for p in parts]}")
        return np.concatenate(parts, axis=axis)

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        dist = self._joined()
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def allReduce(self, value, op: str = "sum"):
        """Sum (``op="sum"``), maximum ("max") or minimum ("min") of a number or array over the ranks, on every
        rank, in float64 (as a Python float for a number)."""
        ops = {"sum": "SUM", "max": "MAX", "min": "MIN"}
        if op not in ops:
            raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
        scalar = np.ndim(value) == 0
        if not self.distributed:
            return float(value) if scalar else np.asarray(value, dtype=np.float64)
        dist = self._joined()
        t = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1).clone()
        dist.all_reduce(t, op=getattr(dist.ReduceOp, ops[op]))
        return float(t[0]) if scalar else t.numpy().reshape(np.shape(value))

    def __repr__(self) -> str:
        return (f"Ensemble(rank={self.rank}, worldSize={self.worldSize}, localRank={self.localRank}, "
                f"device={self.device}, launcher={self.launcher!r})")


# -- data-parallel training --------------------------------------------------------------------------------------
def processGroupRank() -> tuple:
    """(rank, world size) of the joined torch.distributed process group; (0, 1) when none is joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sumOverRanks(*values: float, op: str = "sum") -> List[float]:
    """The numbers ``values`` each summed (``op="max"``: their maximum) over the ranks of the joined process group;
    themselves without one."""
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    if processGroupRank()[1] == 1:
        return [float(v) for v in values]
    import torch.distributed as dist

    on_gpu = dist.get_backend() == "nccl"  # a group of NCCL alone (else gloo carries CPU tensors)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=torch.cuda.current_device() if on_gpu else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def rankPart(n: int) -> slice:
    """The joined process group's rank's contiguous, balanced part of ``n`` items (all of them without one)."""
    r = shareRange(n, *processGroupRank())
    return slice(r.start, r.stop)


class _LossModule(torch.nn.Module):
    """``model`` as a submodule and a loss function of it as ``forward``, so that DistributedDataParallel sees one
    forward per optimizer step however often the loss calls the model (double backward of force losses, several
    model calls per loss)."""

    def __init__(self, model: torch.nn.Module, lossFunction):
        super().__init__()
        self.model = model
        self.lossFunction = lossFunction

    def forward(self, *args, **kwargs):
        return self.lossFunction(*args, **kwargs)


class DataParallelLoss:
    """A trainer's loss under DistributedDataParallel when a process group is joined (else the plain loss).

    Every rank draws the same global batch (same seed, same random stream) and evaluates the part ``part(n)`` of
    it; the trainer multiplies its part's mean loss by ``weight(n)`` = worldSize x (part size / n), so that DDP's
    gradient average over the ranks is the gradient of the global batch's mean loss: the optimizer step equals the
    single-process one up to floating-point reordering of the sums. ``total`` adds a logged value over the ranks.

    ``find_unused_parameters`` is on: a force loss gives no gradient to parameters that only shift the energy
    (the readout's last bias).
    """

    def __init__(self, model: torch.nn.Module, lossFunction):
        self.rank, self.worldSize = processGroupRank()
        self.model = model
        if self.worldSize > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            self.module = DistributedDataParallel(_LossModule(model, lossFunction),
                                                  device_ids=[device] if device.type == "cuda" else None,
                                                  broadcast_buffers=False, find_unused_parameters=True)
        else:
            self.module = lossFunction

    def part(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` >= 1 items; a rank left without items (``n`` <
        worldSize, e.g. an epoch's last batch) gets the last item as a stand-in, with ``weight`` 0."""
        if n < 1:
            raise ValueError("an empty batch cannot be trained on")
        r = shareRange(n, self.rank, self.worldSize)
        return slice(r.start, r.stop) if len(r) else slice(n - 1, n)

    def weight(self, n: int) -> float:
        """Factor of this rank's mean loss over its part of a batch of ``n``: worldSize x part size / n (0 for a
        stand-in part)."""
        return self.worldSize * len(shareRange(n, self.rank, self.worldSize)) / n

    def total(self, value: float, op: str = "sum") -> float:
        """``value`` summed (``op="max"``: the largest) over the ranks; itself for one process."""
        return sumOverRanks(value, op=op)[0]

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)
