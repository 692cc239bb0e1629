"""Build script for openmm-flash: one import namespace, ``openmmflash``, from three source roots.

``python/openmmflash`` is the library, ``plugin/`` becomes ``openmmflash.plugin`` (everything OpenMM sees as a
Force) and ``integrators/`` becomes ``openmmflash.integrators``.
"""

from setuptools import find_packages, setup

ROOTS = {"openmmflash": "python/openmmflash", "openmmflash.plugin": "plugin", "openmmflash.integrators": "integrators"}


def _packages():
    packages = []
    for name, path in ROOTS.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(path)]
    return packages


# The openmmtorch 1.5 wheel was built against torch 2.9 and OpenMM 8.5 (ABI); see README "Supported stack".
INSTALL_REQUIRES = [
    "torch==2.9.*",
    "openmm>=8.5,<8.6",
    "openmmtorch==1.5",
    "triton==3.5.*; sys_platform == 'linux' and platform_machine == 'x86_64'",  # the triton torch 2.9 pins
    "numpy>=1.26,<2.3",
    "parmed",
    "pdbfixer",
    "tqdm",
    "matplotlib",
    "zstandard",
    "numba>=0.61",  # CompactMD compiled kernels (numpy fallback without it)
]

EXTRAS = {
    "cuda12": ["openmm-cuda-12>=8.5,<8.6", "openmm-torch-cuda-12==1.5"],
    "ml": ["openmmml==1.7"],
    "analysis": ["MDAnalysis>=2.7", "mdtraj>=1.10"],
    "test": ["pytest>=8", "pytest-timeout", "hypothesis", "openmmml==1.7", "MDAnalysis>=2.7", "mdtraj>=1.10",
             "MDAnalysisTests>=2.7", "PeptideBuilder", "h5py", "pyyaml"],
}

setup(
    name="openmm-flash",
    version="0.1.0",
    description="Fast learned molecular dynamics for OpenMM: FlashSchNet forces, FlashMD integrators, "
                "CompactMD trajectories and GAQ quantization",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    package_dir=ROOTS,
    packages=_packages(),
    include_package_data=True,
    package_data={"openmmflash": ["data/*", "data/*/*", "data/*/*/*"], "openmmflash.integrators": ["models/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["openmmflash = openmmflash.cli:main"],
        "openmmml.potentials": ["flashschnet = openmmflash.plugin.mlpotential:FlashSchNetPotentialImplFactory"],
    },
)
