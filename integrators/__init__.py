"""openmmflash.integrators: FlashMD learned long-stride integrators for OpenMM.

Subpackages: ``rescale`` (guard, species and molecular-mode energy rescale), ``network`` (the PaiNN network, the
FlashMD model and its file formats), ``engine`` (the learned step, the CUDA-graph steppers and the OpenMM
integrators), ``training`` (training pairs, training, quantization-aware training); ``models/`` holds the shipped
model files.
"""

from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.engine.stepper import FlashMDStepper
from openmmflash.integrators.engine.thermostats import FlashMDBussiIntegrator, FlashMDLangevinIntegrator
from openmmflash.integrators.network.flashmdmodel import FlashMDModel
from openmmflash.integrators.network.modelfile import availableModels, loadModel, saveModel

__all__ = ["FlashMDIntegrator", "FlashMDLangevinIntegrator", "FlashMDBussiIntegrator", "FlashMDStepper",
           "FlashMDModel", "loadModel", "saveModel", "availableModels"]
