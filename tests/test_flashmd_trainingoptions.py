"""FlashMD training option sets: NetworkOptions / TrainingOptions / LossWeights and the keyword calls of ``train`` and
``Trainer`` build the same trainer and the same model (tiny flexible-water pairs, CPU)."""

import dataclasses

import pytest
import torch

from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.training.trainer import Trainer, train
from openmmflash.integrators.training.trainingoptions import (LossWeights, NetworkOptions, TrainingOptions,
                                                              resolveOptions)

KEYWORDS = dict(channels=8, numLayers=1, numRBF=4, cutoff=0.4, batchSize=2, lr=3e-3, seed=1, energyWeight=0.1,
                energyTarget="potential", bondWeight=0.5)
OBJECTS = dict(network=NetworkOptions(channels=8, numLayers=1, numRBF=4, cutoff=0.4),
               training=TrainingOptions(iterations=1000, batchSize=2, lr=3e-3, seed=1),
               weights=LossWeights(energyWeight=0.1, energyTarget="potential", bondWeight=0.5))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trainer_objects_and_keywords_train_identically(water_pairs):
    path, system, _, _ = water_pairs
    common = dict(system=system, energyPlatform="Reference", device="cpu")
    trainers, losses = [], []
    for options in (KEYWORDS, OBJECTS):
        torch.manual_seed(0)  # a new network's initial weights come from torch's global generator
        trainer = Trainer(path, **options, **common)
        losses.append([trainer.trainStep() for _ in range(3)])
        trainers.append(trainer)
    by_keywords, by_objects = trainers
    assert by_keywords.iterations == by_objects.iterations == 1000      # a Trainer's own default
    assert (by_keywords.networkOptions, by_keywords.trainingOptions, by_keywords.lossWeights) == tuple(
        OBJECTS.values())
    assert (by_keywords.train_idx == by_objects.train_idx).all() and (by_keywords.val_idx == by_objects.val_idx).all()
    assert losses[0] == losses[1]
    _same_weights(by_keywords.model, by_objects.model)


def test_train_objects_and_keywords_write_the_same_model(water_pairs, tmp_path):
    path, system, _, _ = water_pairs
    common = dict(system=system, energyPlatform="Reference", device="cpu", progress=False, resume=False)
    keywords = dict(KEYWORDS, iterations=3)
    objects = dict(OBJECTS, training=dataclasses.replace(OBJECTS["training"], iterations=3))
    torch.manual_seed(0)
    a = train(path, str(tmp_path / "a.pt"), **keywords, **common)
    # objects, with fields replaced by keywords: the keywords win
    torch.manual_seed(0)
    b = train(path, str(tmp_path / "b.pt"), **dict(objects, weights=LossWeights(energyWeight=0.1)),
              energyTarget="potential", bondWeight=0.5, **common)
    _same_weights(loadModel(str(tmp_path / "a.pt")), loadModel(str(tmp_path / "b.pt")))
    drop = ("trainSeconds", "lossHistory")
    assert {k: v for k, v in a.provenance.items() if k not in drop} == \
           {k: v for k, v in b.provenance.items() if k not in drop}
    assert a.provenance["energyTarget"] == "potential" and a.provenance["iterations"] == 3


def test_option_errors_are_clear():
    assert resolveOptions()[1].iterations == 2000                        # train's default
    with pytest.raises(TypeError, match=r"unknown FlashMD training options \['numLayer'\]; known: \['channels'"):
        resolveOptions(numLayer=2)
    with pytest.raises(TypeError, match="weights must be a LossWeights, got dict"):
        resolveOptions(weights={"energyWeight": 1.0})
    with pytest.raises(ValueError, match="energyTarget must be 'total' or 'potential', got 'kinetic'"):
        resolveOptions(energyTarget="kinetic")
    with pytest.raises(ValueError, match="NetworkOptions.cutoff must be > 0 nm"):
        NetworkOptions(cutoff=0.0)
    with pytest.raises(ValueError, match="batchSize >= 1"):
        TrainingOptions(batchSize=0)
