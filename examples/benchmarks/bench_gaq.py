"""GAQ benchmark: the shipped FlashMD water model in fp32 vs quantized (naive / MDDQ / frame MDDQ, W8A8 / W4A8).

For each variant (quantized ones: calibration + branch-separated QAT on the training pairs, stored at their bit
width, then loaded back from the file; the measured model is the loaded one):

1. equivariance (gaq.md section 5): relative error ||f(R in) - R f(in)|| / ||f(in)|| of the network output (the
   learned correction, [N, 3, 2]) on held-out frames, for Haar-random rotations and for small rotations by
   eps in {1e-4, 1e-3, 1e-2, 1e-1} rad about random axes; float32 (deployment) and float64;
2. prediction error on the held-out pairs (the fp32 training's split): per-species RMSE of dq and p' after a stride;
3. NVE without energy rescaling (FlashMDIntegrator(rescaleEnergy=False), guard on) from a held-out state: total
   energy drift (linear fit), largest |dE|, fallback fraction;
4. NVT: FlashMDLangevinIntegrator (300 K, 1/ps, per-species rescale): per-species temperatures, fallbacks;
5. file size; model-call time on the GPU (batched, CUDA events, median), fp32 and quantized in the same run.

Writes examples/benchmarks/results/gaq<tag>.json and .png and prints a table.

    python examples/benchmarks/bench_gaq.py --data .flashmd_data/water_8fs.npz --device cuda --platform CUDA
    python examples/benchmarks/bench_gaq.py --data pairs.npz --variants fp32 frame-w4a8 --qat-steps 2 \\
        --nve-ps 0.2 --nvt-ps 0.2 --speed-batches 1 --tag _smoke         # quick CPU check
"""

import argparse
import copy
import json
import logging
import math
import os
import platform as pyplatform
import sys
import tempfile
import time

import numpy as np
import torch

from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py (this script's folder)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KB = 0.00831446261815324
VARIANTS = ["fp32", "naive-w8a8", "naive-w4a8", "frame-w8a8", "frame-w4a8", "mddq-w4a8"]
ANGLES = [1e-4, 1e-3, 1e-2, 1e-1]


def rotation_about(axis: np.ndarray, angle: float) -> torch.Tensor:
    """Rodrigues: rotation by ``angle`` rad about unit ``axis`` [3], float64 [3, 3]."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return torch.as_tensor(np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k)


def held_out(data, seed=0, fraction=0.1):
    """Held-out pair indices, the same split integrators.training.Trainer makes with this seed."""
    P = data["q0"].shape[0]
    perm = torch.randperm(P, generator=torch.Generator().manual_seed(seed)).numpy()
    return perm[:max(1, int(round(fraction * P)))]


def frame_inputs(model, data, idx, device, dtype):
    """Network inputs of frames idx as one batch: (types, x, src, dst, edge_vec float64)."""
    from openmmflash.integrators.engine.stepper import batch_edges
    q = torch.as_tensor(data["q0"][idx], dtype=torch.float64, device=device)
    p = torch.as_tensor(data["p0"][idx], dtype=torch.float64, device=device)
    box = torch.as_tensor(data["box"][idx[0]], dtype=torch.float64, device=device)
    B, N, _ = q.shape
    src, dst, ev = batch_edges(q, box, model.cutoff)
    sqrt_m = torch.sqrt(torch.as_tensor(data["masses"], dtype=torch.float64, device=device)).view(1, -1, 1)
    x = (p / sqrt_m / model.momentumScale).reshape(B * N, 3)
    types = model.typeIndices(data["types"]).to(device).repeat(B)
    return types, x, src, dst, ev


@torch.no_grad()
def equivariance(model, data, frames, device, dtype, rotations, seed=3):
    """Relative equivariance errors (mean, max over frames and rotations) for Haar and small rotations."""
    from openmmflash.integrators.engine.stepper import random_rotation
    net = copy.deepcopy(model).to(device, dtype).eval().network
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    errors = {"haar": []} | {f"{a:g}": [] for a in ANGLES}
    for f in frames:
        types, x, src, dst, ev = frame_inputs(model, data, np.array([f]), device, dtype)
        out = net(types, x.to(dtype), src, dst, ev.to(dtype)).double()
        norm = float(out.norm())
        for _ in range(rotations):
            rots = {"haar": random_rotation(gen, improper=False)}
            axis = rng.normal(size=3)
            rots.update({f"{a:g}": rotation_about(axis, a) for a in ANGLES})
            for key, R in rots.items():
                R = R.to(device)
                outR = net(types, (x @ R.T).to(dtype), src, dst, (ev @ R.T).to(dtype)).double()
                errors[key].append(float((outR - torch.einsum("ij,njk->nik", R, out)).norm()) / norm)
    return {k: {"mean": float(np.mean(v)), "max": float(np.max(v))} for k, v in errors.items()}


def prediction(model, data, device):
    """Held-out one-stride errors (Trainer.validate on the fp32 training's split) and the normalized losses."""
    from openmmflash.integrators.training.trainer import Trainer
    trainer = Trainer(data, model=copy.deepcopy(model), device=device, seed=0, batchSize=8)
    return trainer.validate()


def md_run(sim, total_ps, sample_strides, stride, masses, types, max_wall):
    """Step ``sim`` in blocks of sample_strides; record total energy and per-species temperatures."""
    from openmm import unit
    times, energies, temps = [], [], []
    t0 = time.time()
    nblocks = max(1, int(round(total_ps / (sample_strides * stride))))
    error = None
    for b in range(nblocks):
        if time.time() - t0 > max_wall:
            break
        try:
            sim.step(sample_strides)
        except Exception as err:  # a learned map may fail; that is a result
            error = str(err)
            break
        st = sim.context.getState(getVelocities=True, getEnergy=True)
        v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        e = (st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
        if not (np.isfinite(v).all() and np.isfinite(e)):
            error = "non-finite state"
            break
        ke2 = (masses[:, None] * np.asarray(v) ** 2).sum(-1)
        temps.append([float(ke2[types == z].sum() / (3 * (types == z).sum() * KB)) for z in (1, 8)])
        energies.append(float(e))
        times.append((b + 1) * sample_strides * stride)
    return {"time_ps": np.array(times), "energy": np.array(energies), "temps": np.array(temps).reshape(-1, 2),
            "wall_s": time.time() - t0, "error": error}


def md_tests(model_ref, start, args, system, top, masses, types):
    """NVE without rescale and NVT Langevin with the model given by file path or name."""
    import openmm as mm
    from openmm import app, unit
    from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    plat = mm.Platform.getPlatformByName(args.platform)
    q0, v0 = start

    def simulation(integ):
        sim = app.Simulation(top, system, integ, plat)
        sim.context.setPositions(q0)
        sim.context.setVelocities(v0)
        return sim

    out = {}
    integ = FlashMDIntegrator(model=model_ref, rescaleEnergy=False, device=args.device, randomSeed=9)
    stride = integ.getStepSize().value_in_unit(unit.picosecond)
    sim = simulation(integ)
    e0 = (sim.context.getState(getEnergy=True).getPotentialEnergy()
          + sim.context.getState(getEnergy=True).getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
    r = md_run(sim, args.nve_ps, args.sample_strides, stride, masses, types, args.max_wall_nve)
    n = len(masses)
    de = r["energy"] - e0
    fit = np.polyfit(r["time_ps"], r["energy"], 1)[0] * 1000 if len(de) > 2 else float("nan")
    out["nve"] = {"simulated_ps": float(r["time_ps"][-1]) if len(de) else 0.0, "wall_s": r["wall_s"],
                  "drift_kJ_mol_ns": float(fit), "drift_kJ_mol_ns_atom": float(fit / n),
                  "final_dE_kJ_mol": float(de[-1]) if len(de) else float("nan"),
                  "max_abs_dE_kJ_mol": float(np.abs(de).max()) if len(de) else float("nan"),
                  "rms_dE_kJ_mol": float(np.sqrt(np.mean(de ** 2))) if len(de) else float("nan"),
                  "fallbackFraction": integ.getNumFallbacks() / max(1, integ.getNumFallbacks()
                                                                   + integ.getNumLearnedSteps()),
                  "error": r["error"], "series": {"t_ps": r["time_ps"].tolist(), "dE": de.tolist()}}
    integ = FlashMDLangevinIntegrator(args.temperature * unit.kelvin, 1 / unit.picosecond, None, model=model_ref,
                                      device=args.device, randomSeed=7)
    r = md_run(simulation(integ), args.nvt_ps, args.sample_strides, stride, masses, types, args.max_wall_nvt)
    half = r["temps"][len(r["temps"]) // 2:]
    out["nvt"] = {"simulated_ps": float(r["time_ps"][-1]) if len(r["time_ps"]) else 0.0, "wall_s": r["wall_s"],
                  "T_H_K": float(half[:, 0].mean()) if len(half) else float("nan"),
                  "T_O_K": float(half[:, 1].mean()) if len(half) else float("nan"),
                  "T_H_std_K": float(half[:, 0].std()) if len(half) else float("nan"),
                  "T_O_std_K": float(half[:, 1].std()) if len(half) else float("nan"),
                  "fallbackFraction": integ.getNumFallbacks() / max(1, integ.getNumFallbacks()
                                                                   + integ.getNumLearnedSteps()),
                  "error": r["error"],
                  "series": {"t_ps": r["time_ps"].tolist(), "T_H": r["temps"][:, 0].tolist(),
                             "T_O": r["temps"][:, 1].tolist()}}
    return out


def synthetic_frames(model, frames=16, temperature=300.0, seed=0):
    """Stand-in for the training pairs when only timing: the flexible-water box (1.6 nm, as the water model's data)
    with positions jittered by 0.005 nm and Maxwell-Boltzmann momenta; the keys frame_inputs/held_out read."""
    from openmmflash.integrators.training.data import flexibleWaterBox
    from openmm import unit
    top, system, pos = flexibleWaterBox(1.6, 0.7)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(pos))])
    rng = np.random.default_rng(seed)
    q = pos[None] + 0.005 * rng.standard_normal((frames,) + pos.shape)
    p = rng.standard_normal((frames,) + pos.shape) * np.sqrt(KB * temperature * masses)[None, :, None]
    return {"q0": q, "p0": p, "box": np.repeat(1.6 * np.eye(3)[None], frames, 0), "masses": masses,
            "types": np.array([a.element.atomic_number for a in top.atoms()]),
            "temperature": np.full(frames, temperature)}


@torch.no_grad()
def call_time(model, data, idx, device, batches, reps, graph=False):
    """Median model-call time (ms) of the network for B replicas (different held-out frames), per batch size.
    graph=True (CUDA): the call captured once as a CUDA graph and replayed (what the integrators' graphed step does)."""
    net = model.to(device, torch.float32).eval().network
    out = {}
    for B in batches:
        sel = np.resize(idx, B)
        types, x, src, dst, ev = frame_inputs(model, data, sel, device, torch.float32)
        inputs = (types, x.float(), src, dst, ev.float())
        call = lambda: net(*inputs)  # noqa: E731
        if graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    net(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                net(*inputs)
            call = g.replay
        for _ in range(3):
            call()
        times = []
        for _ in range(reps):
            if device.startswith("cuda"):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                call()
                times.append(1000 * (time.perf_counter() - t0))
        out[str(B)] = {"median_ms": float(np.median(times)), "atoms": int(B * len(data["types"])),
                       "edges": int(src.shape[0])}
    return out


def kernel_self_check(device):
    """Run both kernels once against their references; on any failure disable them (recorded in the report)."""
    from openmmflash.gaq import kernels
    from openmmflash.gaq.codebook import sphereCodebook
    from openmmflash.gaq.weights import pack_int4, quantize_per_channel
    try:
        w = torch.randn(192, 64)
        codes, scales = quantize_per_channel(w, 4)
        packed = pack_int4(codes)
        x = torch.randn(1000, 64)
        y = kernels.quantized_linear(x.to(device), packed.to(device), scales.to(device), None, 64, 4).cpu()
        ref = kernels.quantized_linear_reference(x, packed, scales, None, 64, 4)
        u = torch.nn.functional.normalize(torch.randn(5000, 3), dim=1)
        c = sphereCodebook(10)
        idx = kernels.nearest_codeword(u.to(device), c.to(device)).cpu()
        agree = float((idx == (u @ c.T).argmax(1)).float().mean())
        return {"linearMaxAbsErr": float((y - ref).abs().max()), "codewordAgreement": agree, "ok": True}
    except Exception as err:  # noqa: BLE001 - report and carry on with the PyTorch paths
        kernels.ENABLED = False
        return {"ok": False, "error": repr(err)[:500]}


@torch.no_grad()
def profile_call(model, data, idx, device, batch, rows=15):
    """torch.profiler table (top ops by device time, or CPU time on CPU) of one network call for ``batch`` replicas:
    where the time of a quantized call goes."""
    from torch.profiler import ProfilerActivity, profile
    net = model.to(device, torch.float32).eval().network
    types, x, src, dst, ev = frame_inputs(model, data, np.resize(idx, batch), device, torch.float32)
    inputs = (types, x.float(), src, dst, ev.float())
    net(*inputs)
    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        net(*inputs)
        if cuda:
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=rows)


def set_kernels(on: bool):
    from openmmflash.gaq.weights import QuantizedLinear
    QuantizedLinear.useKernel = on


def activations(model, on: bool):
    for m in model.modules():
        if hasattr(m, "amax") and hasattr(m, "observe"):
            m.enabled = on


def machine_info(device):
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "platform": pyplatform.platform(), "device": device}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        import openmm
        info["openmm"] = openmm.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 3, figsize=(16, 9))
    names = list(report["variants"])
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for n in names:
        eq = report["variants"][n]["equivariance"]["float32"]
        ax[0, 0].loglog(ANGLES, [eq[f"{a:g}"]["mean"] for a in ANGLES], "o-", color=colors[n], label=n)
        ax[0, 0].axhline(eq["haar"]["mean"], color=colors[n], ls=":", lw=0.8)
    ax[0, 0].set(xlabel="rotation angle (rad)", ylabel="relative equivariance error (float32)",
                 title="equivariance (dotted: Haar-random rotations)")
    ax[0, 0].legend(fontsize=8)
    x = np.arange(len(names))
    for k, (key, lab) in enumerate([("rmse_dq_nm_Z1", "dq H"), ("rmse_dq_nm_Z8", "dq O")]):
        fp = report["variants"]["fp32"]["prediction"][key] if "fp32" in names else 1.0
        ax[0, 1].bar(x + 0.2 * (2 * k - 1), [report["variants"][n]["prediction"][key] / fp for n in names], 0.4,
                     label=lab)
    for k, (key, lab) in enumerate([("rmse_p_Z1", "p' H"), ("rmse_p_Z8", "p' O")]):
        fp = report["variants"]["fp32"]["prediction"][key] if "fp32" in names else 1.0
        ax[0, 1].plot(x + 0.2 * (2 * k - 1), [report["variants"][n]["prediction"][key] / fp for n in names], "k^v"[k + 1],
                      label=lab)
    ax[0, 1].axhline(1.2, color="r", ls="--", lw=0.8, label="target 1.2x fp32")
    ax[0, 1].set(xticks=x, ylabel="held-out RMSE / fp32", title="one-stride prediction error")
    ax[0, 1].set_xticklabels(names, rotation=30, fontsize=8)
    ax[0, 1].legend(fontsize=8)
    for n in names:
        s = report["variants"][n].get("md", {}).get("nve", {}).get("series")
        if s:
            ax[0, 2].plot(s["t_ps"], s["dE"], color=colors[n], label=n)
        s = report["variants"][n].get("md", {}).get("nvt", {}).get("series")
        if s:
            ax[1, 0].plot(s["t_ps"], s["T_H"], color=colors[n], label=f"{n} H")
            ax[1, 0].plot(s["t_ps"], s["T_O"], color=colors[n], ls="--")
    ax[0, 2].set(xlabel="time (ps)", ylabel="E(t) - E(0) (kJ/mol)", title="NVE without energy rescaling")
    ax[0, 2].set_yscale("symlog", linthresh=10)
    ax[0, 2].legend(fontsize=8)
    ax[1, 0].axhline(report["settings"]["temperature"], color="k", lw=0.8)
    ax[1, 0].set(xlabel="time (ps)", ylabel="T (K): solid H, dashed O", title="NVT FlashMDLangevinIntegrator")
    ax[1, 0].legend(fontsize=7)
    for n in names:
        sp = report["variants"][n]["speed"]
        bs = sorted(int(b) for b in sp)
        ax[1, 1].loglog(bs, [sp[str(b)]["median_ms"] for b in bs], "o-", color=colors[n], label=n)
    ax[1, 1].set(xlabel="replicas per call (387 atoms each)", ylabel="model call (ms)",
                 title=f"model-call time ({report['machine'].get('gpu', report['machine']['device'])})")
    ax[1, 1].legend(fontsize=8)
    ax[1, 2].bar(x, [report["variants"][n]["fileBytes"] / 1024 for n in names], color=[colors[n] for n in names])
    ax[1, 2].set(xticks=x, ylabel="file size (KiB)", title="model file size")
    ax[1, 2].set_xticklabels(names, rotation=30, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summarize(report):
    """Ratios and target checks of issue 7 for the W4A8 variants."""
    v = report["variants"]
    if "fp32" not in v:
        return {}
    fp = v["fp32"]
    out = {}
    for n, r in v.items():
        if n == "fp32":
            continue
        if "prediction" not in r:   # --speed-only
            ratio = lambda a, b: {k: a[k]["median_ms"] / b[k]["median_ms"] for k in b if k in a}  # noqa: E731
            out[n] = {"fileSmaller": fp["fileBytes"] / r["fileBytes"],
                      "callSpeedupVsFp32": ratio(fp["speed"], r["speed"])}
            ok = {k: sp for k, sp in r.get("speedBySearch", {}).items() if "error" not in sp}
            if ok:   # graphed calls against the graphed fp32 call, plain calls against the plain one
                fp_graph = fp.get("speedGraph", {"error": 1})
                out[n]["callSpeedupVsFp32BySearch"] = {
                    k: ratio(fp_graph if k.endswith("+graph") else fp["speed"], sp) for k, sp in ok.items()
                    if not (k.endswith("+graph") and "error" in fp_graph)}
                for suffix, label in (("", "fastestSearch"), ("+graph", "fastestSearchGraphed")):
                    keys = [k for k in ok if k.endswith("+graph") == (suffix == "+graph")]
                    if keys:
                        out[n][label] = {b: min(keys, key=lambda k: ok[k][b]["median_ms"]) for b in r["speed"]}
            if "error" not in fp.get("speedGraph", {"error": 1}) and "error" not in r.get("speedGraph", {"error": 1}):
                out[n]["graphCallSpeedupVsFp32Graph"] = ratio(fp["speedGraph"], r["speedGraph"])
            continue
        s = {"fileSmaller": fp["fileBytes"] / r["fileBytes"],
             "predictionErrorVsFp32": max(r["prediction"][k] / fp["prediction"][k] for k in fp["prediction"]
                                          if k.startswith("rmse_")),
             "equivarianceHaarFloat32": r["equivariance"]["float32"]["haar"]["mean"]}
        big = max(r["speed"], key=int)
        s["callSpeedupVsFp32"] = {b: fp["speed"][b]["median_ms"] / r["speed"][b]["median_ms"] for b in r["speed"]
                                  if b in fp["speed"]}
        s["largestBatch"] = big
        naive = v.get("naive-" + n.split("-")[1])
        if naive is not None and naive is not r:
            s["equivarianceLowerThanNaive"] = (naive["equivariance"]["float32"]["haar"]["mean"]
                                               / max(1e-30, r["equivariance"]["float32"]["haar"]["mean"]))
        if "md" in r and "md" in fp:
            s["nveDriftVsFp32"] = abs(r["md"]["nve"]["drift_kJ_mol_ns"]) / max(1e-30, abs(fp["md"]["nve"][
                "drift_kJ_mol_ns"]))
        out[n] = s
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".flashmd_data/water_8fs.npz", help="the model's training pairs (.npz)")
    ap.add_argument("--model", default="water-tip3pfb-8fs")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--qat-steps", type=int, default=300)
    ap.add_argument("--qat-batch", type=int, default=8)
    ap.add_argument("--dir-bits", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--platform", default="CPU", help="OpenMM platform for the MD tests")
    ap.add_argument("--eq-frames", type=int, default=4)
    ap.add_argument("--eq-rotations", type=int, default=4)
    ap.add_argument("--nve-ps", type=float, default=5.0)
    ap.add_argument("--nvt-ps", type=float, default=20.0)
    ap.add_argument("--sample-strides", type=int, default=10)
    ap.add_argument("--max-wall-nve", type=float, default=20.0, help="wall-clock cap (s) of each NVE run")
    ap.add_argument("--max-wall-nvt", type=float, default=30.0, help="wall-clock cap (s) of each NVT run")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip the MD runs of the remaining variants once the benchmark has run this long (s)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--speed-batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--speed-reps", type=int, default=20)
    ap.add_argument("--no-md", action="store_true", help="skip the OpenMM NVE / NVT runs")
    ap.add_argument("--speed-only", action="store_true",
                    help="only file size and model-call times (no equivariance, prediction or MD); --qat-steps 0 "
                         "then gives calibrated models, whose call time is the same as after QAT")
    ap.add_argument("--profile", action="store_true",
                    help="store a torch.profiler table of one call at the largest batch for each quantized variant")
    ap.add_argument("--save-models", default=None, help="folder to keep the quantized model files in")
    ap.add_argument("--quantized-model", action="append", default=[], metavar="VARIANT=MODEL",
                    help="time (and test) this quantized model file or shipped name for VARIANT instead of "
                         "training one, e.g. frame-w4a8=water-tip3pfb-8fs-gaq-w4a8 (repeatable)")
    ap.add_argument("--models-dir", default=None,
                    help="load the quantized variants from DIR/water-gaq-<variant>.pt instead of quantizing here; "
                         "with --speed-only and no --data file the inputs are synthetic water frames")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also time each call captured as a CUDA graph (speedGraph)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--outdir", default=RESULTS)
    args = ap.parse_args(argv)

    from openmmflash.integrators.network.gaqfile import saveQuantizedModel
    from openmmflash.integrators.training.qat import quantizationAwareTraining
    from openmmflash.integrators.training.data import loadDataset
    from openmmflash.integrators.network.modelfile import loadModel, modelPath

    args.quantized = quantized_models(args)  # refuse a malformed option before any variant runs
    logging.getLogger("openmmflash.flashmd").setLevel(logging.ERROR)  # fallbacks are counted, not logged each
    t_start = time.time()
    base = loadModel(args.model)
    if args.speed_only and not os.path.exists(args.data):
        data = synthetic_frames(base, temperature=args.temperature)
        args.data = None
    else:
        data = loadDataset(args.data)
    base_path = modelPath(args.model)
    val = held_out(data)
    masses = np.asarray(data["masses"], dtype=np.float64)
    types = np.asarray(data["types"])
    system = top = start = None
    if not args.no_md:
        from openmmflash.integrators.training.data import flexibleWaterBox
        top, system, _ = flexibleWaterBox(float(data["box"][0][0, 0]), 0.7)
        # start: the held-out frame closest to the bath temperature
        f = int(val[np.argmin(np.abs(np.asarray(data["temperature"])[val] - args.temperature))])
        start = (np.asarray(data["q0"][f], dtype=np.float64), np.asarray(data["p0"][f], dtype=np.float64)
                 / masses[:, None])
    workdir = args.save_models or tempfile.mkdtemp(prefix="gaq_bench_")
    os.makedirs(workdir, exist_ok=True)
    report = {"benchmark": "gaq", "machine": machine_info(args.device), "settings": vars(args) | {
        "baseModel": base_path, "heldOutPairs": int(len(val)), "numParticles": int(len(types)),
        "stride_fs": base.stride * 1000, "equivarianceAngles_rad": ANGLES,
        "notes": "equivariance: ||f(R in) - R f(in)|| / ||f(in)|| of the network output (learned correction); "
                 "MD: FlashMD integrators in OpenMM, NVE with rescaleEnergy=False (guard on), NVT Langevin with "
                 "the per-species rescale; speed: network call only (edges precomputed), CUDA events, median"},
        "variants": {}}
    os.makedirs(args.outdir, exist_ok=True)
    json_path = os.path.join(args.outdir, f"gaq{args.tag}.json")
    if args.device.startswith("cuda"):
        report["kernelSelfCheck"] = kernel_self_check(args.device)
        print("kernel self-check:", report["kernelSelfCheck"], flush=True)
    for name in args.variants:
        try:
            run_variant(name, args, base, base_path, data, val, workdir, start, system, top, masses, types,
                        report, t_start)
        except Exception as err:  # noqa: BLE001 - one failed variant must not lose the others
            import traceback
            traceback.print_exc()
            report["variants"].pop(name, None)
            report.setdefault("failed", {})[name] = repr(err)[:1000]
        report["summary"] = summarize(report)
        report["totalSeconds"] = round(time.time() - t_start, 1)
        report["provenance"] = provenance()
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    print_table_and_plot(report, args, json_path)


def quantized_models(args) -> dict:
    """``--quantized-model VARIANT=MODEL`` options as {variant: model file or shipped name}."""
    out = {}
    for item in args.quantized_model:
        if "=" not in item:
            raise SystemExit(f"--quantized-model takes VARIANT=MODEL (e.g. frame-w4a8=water-tip3pfb-8fs-gaq-w4a8), "
                             f"got {item!r}")
        variant, model = item.split("=", 1)
        out[variant] = model
    return out


def run_variant(name, args, base, base_path, data, val, workdir, start, system, top, masses, types, report, t_start):
    from openmmflash.integrators.network.gaqfile import saveQuantizedModel
    from openmmflash.integrators.training.qat import quantizationAwareTraining
    from openmmflash.integrators.network.modelfile import loadModel, modelPath
    t0 = time.time()
    print(f"== {name}", flush=True)
    if name == "fp32":
        model, path, rec = base, base_path, {"method": None, "scheme": "fp32"}
    elif args.models_dir or name in args.quantized:
        method, scheme = name.split("-")
        path = modelPath(args.quantized.get(name) or os.path.join(args.models_dir, f"water-gaq-{name}.pt"))
        model = loadModel(path)
        if (model.gaq["method"], model.gaq["scheme"]) != (method, scheme):
            raise ValueError(f"{path} holds a {model.gaq['method']}-{model.gaq['scheme']} model, not {name}")
        rec = {"method": method, "scheme": scheme, "dirBits": model.gaq["dirBits"], "qat": model.gaq["qat"],
               "file": path}
    else:
        method, scheme = name.split("-")
        if args.data is None:
            raise ValueError(f"{name}: quantization-aware training needs the training pairs (--data); with "
                             "--speed-only and no data, give a quantized model with --quantized-model or --models-dir")
        qmodel = quantizationAwareTraining(base, data, scheme, method, dirBits=args.dir_bits,
                                           steps=args.qat_steps, batchSize=args.qat_batch, device=args.device,
                                           progress=True)
        path = os.path.join(workdir, f"water-gaq-{name}.pt")
        saveQuantizedModel(qmodel, path)
        model = loadModel(path)  # measure what the file holds
        rec = {"method": method, "scheme": scheme, "dirBits": args.dir_bits, "qat": model.gaq["qat"]}
    rec["fileBytes"] = os.path.getsize(path)
    if not args.speed_only:
        rec["equivariance"] = {"float32": equivariance(model, data, val[:args.eq_frames], args.device,
                                                       torch.float32, args.eq_rotations),
                               "float64": equivariance(model, data, val[:args.eq_frames], args.device,
                                                       torch.float64, args.eq_rotations)}
        rec["prediction"] = prediction(model, data, args.device)
    set_kernels(True)
    from openmmflash.gaq import codebook
    if name != "fp32" and rec["method"] != "naive" and args.device.startswith("cuda"):
        # The nearest-codeword search on the GPU: Triton full scan, Triton cube-map index, PyTorch cube-map index.
        default = codebook.CUDA_SEARCH
        rec["speedBySearch"] = {}
        for search in codebook.CUDA_SEARCHES:
            codebook.CUDA_SEARCH = search
            rec["speedBySearch"][search] = call_time(copy.deepcopy(model), data, val, args.device,
                                                     args.speed_batches, args.speed_reps)
            if args.cuda_graph:
                rec["speedBySearch"][search + "+graph"] = timed_or_error(
                    lambda: call_time(copy.deepcopy(model), data, val, args.device, args.speed_batches,
                                      args.speed_reps, graph=True))
        codebook.CUDA_SEARCH = default
        rec["cudaSearchDefault"] = default
    rec["speed"] = call_time(copy.deepcopy(model), data, val, args.device, args.speed_batches, args.speed_reps)
    if args.cuda_graph and args.device.startswith("cuda"):
        rec["speedGraph"] = timed_or_error(lambda: call_time(copy.deepcopy(model), data, val, args.device,
                                                             args.speed_batches, args.speed_reps, graph=True))
    if name != "fp32":
        set_kernels(False)
        rec["speedTorchDequant"] = call_time(copy.deepcopy(model), data, val, args.device, args.speed_batches,
                                             args.speed_reps)
        set_kernels(True)
        weights_only = copy.deepcopy(model)
        activations(weights_only, False)
        rec["speedWeightsOnly"] = call_time(weights_only, data, val, args.device, args.speed_batches,
                                            args.speed_reps)
        if args.profile:
            rec["profile"] = profile_call(copy.deepcopy(model), data, val, args.device, max(args.speed_batches))
            print(rec["profile"], flush=True)
    if args.budget_s is not None and time.time() - t_start > args.budget_s:
        rec["mdSkipped"] = f"time budget of {args.budget_s} s used up"
    elif not (args.no_md or args.speed_only):
        rec["md"] = md_tests(path if name != "fp32" else args.model, start, args, system, top, masses, types)
    rec["seconds"] = round(time.time() - t0, 1)
    report["variants"][name] = rec
    print(f"   {name}: {rec['seconds']} s", flush=True)


def timed_or_error(fn):
    """fn() or, when it raises (e.g. a call that cannot be captured as a CUDA graph), the error."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - recorded in the report
        torch.cuda.synchronize()
        return {"error": repr(err)[:300]}


def print_table_and_plot(report, args, json_path):
    if args.speed_only:
        print(f"{'variant':12s} {'file KiB':>8s} " + " ".join(f"{'ms@' + str(b):>8s}" for b in args.speed_batches)
              + "   (weights only / torch dequant)")
        for name, r in report["variants"].items():
            extra = " ".join(f"{r[k][str(b)]['median_ms']:.3f}" for k in ("speedWeightsOnly", "speedTorchDequant")
                             if k in r for b in args.speed_batches)
            print(f"{name:12s} {r['fileBytes'] / 1024:8.1f} "
                  + " ".join(f"{r['speed'][str(b)]['median_ms']:8.3f}" for b in args.speed_batches) + "   " + extra)
            rows = dict(r.get("speedBySearch", {}))
            if "speedGraph" in r:
                rows["graph"] = r["speedGraph"]
            for key, sp in rows.items():
                cells = (" ".join(f"{sp[str(b)]['median_ms']:8.3f}" for b in args.speed_batches) if "error" not in sp
                         else sp["error"][:80])
                print(f"  {key:19s} " + cells)
        print(json.dumps(report.get("summary", {}), indent=1))
        print(f"wrote {json_path}")
        return
    head = (f"{'variant':12s} {'file KiB':>8s} {'eq haar f32':>11s} {'eq 1e-3':>9s} {'eq haar f64':>11s} "
            f"{'dqH/fp':>7s} {'pH/fp':>6s} {'pO/fp':>6s} {'NVE drift':>10s} {'T_H':>6s} {'T_O':>6s} "
            + " ".join(f"{'ms@' + str(b):>8s}" for b in args.speed_batches))
    print(head)
    fp = report["variants"].get("fp32")
    for name, r in report["variants"].items():
        pr = r["prediction"]
        rel = (lambda k: pr[k] / fp["prediction"][k]) if fp else (lambda k: float("nan"))  # noqa: E731
        md = r.get("md", {})
        print(f"{name:12s} {r['fileBytes'] / 1024:8.1f} {r['equivariance']['float32']['haar']['mean']:11.2e} "
              f"{r['equivariance']['float32']['0.001']['mean']:9.2e} {r['equivariance']['float64']['haar']['mean']:11.2e} "
              f"{rel('rmse_dq_nm_Z1'):7.3f} {rel('rmse_p_Z1'):6.3f} {rel('rmse_p_Z8'):6.3f} "
              f"{md.get('nve', {}).get('drift_kJ_mol_ns', float('nan')):10.4g} "
              f"{md.get('nvt', {}).get('T_H_K', float('nan')):6.1f} {md.get('nvt', {}).get('T_O_K', float('nan')):6.1f} "
              + " ".join(f"{r['speed'][str(b)]['median_ms']:8.3f}" for b in args.speed_batches))
    print(json.dumps(report.get("summary", {}), indent=1))
    plot(report, os.path.join(args.outdir, f"gaq{args.tag}.png"))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
