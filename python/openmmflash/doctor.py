"""``openmmflash doctor``: what the stack is, whether it works, and what to change when it does not."""

import platform
import sys

from openmmflash import stack


def gpu_description() -> str:
    import torch

    if not torch.cuda.is_available():
        return f"none visible to torch (torch built for CUDA {torch.version.cuda})"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{', '.join(names)} (CUDA {torch.version.cuda})"


def check_torchforce() -> str:
    """Evaluate a one-particle TorchForce on the Reference platform; 'ok' or the error."""
    try:
        import torch

        openmm = stack.import_openmm()
        import openmmtorch

        class Square(torch.nn.Module):
            def forward(self, positions):
                return (positions ** 2).sum()

        system = openmm.System()
        system.addParticle(1.0)
        system.addForce(openmmtorch.TorchForce(torch.jit.script(Square())))
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions([[1.0, 2.0, 2.0]])
        energy = context.getState(getEnergy=True).getPotentialEnergy()._value
        return "ok" if abs(energy - 9.0) < 1e-9 else f"wrong energy {energy} (expected 9)"
    except Exception as err:  # reported, not raised: this is a diagnosis
        return f"FAILED: {err.__class__.__name__}: {str(err).strip().splitlines()[0]}"


def filter_table_report(model: str) -> str:
    """One line on the tabulated filters (filterMode "table") of a model file or bundled model: nodes, spacing,
    the measured error against the exact float64 filter (d^2-weighted, evaluated as the float32 kernels do) and
    what the single-precision force does with it (table, or exact filters when the tolerance is missed)."""
    from openmmflash import mlcg  # noqa: F401  (lets loadModel read mlcg files)
    from openmmflash.schnet.filtertable import buildFilterTable
    from openmmflash.schnet.model import loadModel

    net = loadModel(model)
    table = buildFilterTable(net, warn=False)
    kinks = f", {table.breakpointsOnNodes} filter kink(s) on nodes" if table.breakpointsOnNodes else ""
    use = ("single-precision forces use the table" if table.meetsTolerance else
           "tolerance missed: single-precision forces use exact filters (filterMode='table' forces the table)")
    return (f"filter tables of {model}: {table.nodes} nodes, spacing {table.spacing:.4g} "
            f"{net.config.lengthUnit}{kinks}, error vs float64 filter (d^2-weighted, float32 evaluation) "
            f"{table.errorValue:.1e} (W), {table.errorDerivative:.1e} (dW/dd), tolerance {table.tolerance:.0e}, "
            f"{table.table.numel() * table.table.element_size() / 2 ** 20:.2f} MiB ({table.storage}); {use}")


def run(args=None) -> int:
    vers = stack.versions()
    print(f"openmm-flash {__import__('openmmflash').__version__}, Python {sys.version.split()[0]} "
          f"({platform.platform()})")
    for name, version in vers.items():
        print(f"  {name:12s} {version or 'not installed'}")
    print(f"GPU: {gpu_description()}")
    problems = stack.stack_problems(vers)
    if vers.get("openmm"):
        openmm = stack.import_openmm()
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        print(f"OpenMM platforms: {', '.join(names)}")
        failures = openmm.Platform.getPluginLoadFailures()
        relevant = [f for f in failures if "OpenCL" not in f]
        print(f"Plugin load failures: {len(failures)} ({len(failures) - len(relevant)} OpenCL, harmless without "
              "an OpenCL driver)")
        for failure in relevant:
            print(f"  {failure}")
            if "libnvrtc" in failure or "libtorch_cuda" in failure:
                problems.append("the Torch plugin cannot find CUDA libraries: install the standard (CUDA) torch "
                                "2.9 wheel, not a CPU-only build, and import torch before openmm.")
        result = check_torchforce()
        print(f"TorchForce on Reference: {result}")
        if result != "ok" and vers.get("openmmtorch"):
            problems.append(f"TorchForce does not work on the Reference platform ({result}).")
    for model in getattr(args, "model", None) or []:
        print(filter_table_report(model))
    if problems:
        print("\nProblems found:")
        for problem in problems:
            print(f"  - {problem}")
        print("\nThe supported stack: pip install 'torch==2.9.*' 'openmm>=8.5,<8.6' openmmtorch==1.5 "
              "(GPU: add openmm-cuda-12 openmm-torch-cuda-12).")
        return 1
    print("\nThe stack is a supported combination.")
    return 0
