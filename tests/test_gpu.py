"""On a CUDA device (`pytest -m gpu`; skipped without one): training, evaluation, distillation
and every compressor and backbone run there, agree with the CPU, and hand checkpoints across."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ecbench import backbones, compressors
from ecbench.bench.data.synthetic import synthetic_dataset
from ecbench.bench.training import train as train_module
from ecbench.bench.training.config import RunConfig
from ecbench.bench.training.runner import run_experiment
from ecbench.bench.training.train import (Trainer, build_model, evaluate_ranks, prepare,
                                          training_loss)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
CONFIG = RunConfig(dim=32, epochs=3, patience=5, backbone_options={"dropout": 0.2})


@pytest.fixture(scope="module")
def prepared():
    return prepare(CONFIG, synthetic_dataset())


def test_a_run_on_cuda_scores_like_the_same_run_on_the_cpu(tmp_path):
    """Same seed, same config: the GPU's metrics fall within seed noise of the CPU's (the
    spread of three CPU seeds, with a floor), and the record says where each ran."""
    def ndcg(device: str, seed: int) -> float:
        config = dataclasses.replace(CONFIG, seed=seed)
        record, _ = run_experiment(config, results_dir=tmp_path / device / str(seed),
                                   workdir=tmp_path / "w" / device / str(seed), threads=2,
                                   log=lambda m: None, device=device)
        assert record["provenance"]["device"]["type"] == torch.device(device).type
        return record["test"]["NDCG@10"]

    cpu = [ndcg("cpu", seed) for seed in (0, 1, 2)]
    gpu = ndcg("cuda", 0)
    noise = max(3 * float(np.std(cpu)), 1.0)
    assert abs(gpu - cpu[0]) <= noise, (gpu, cpu)


def test_a_checkpoint_written_on_cuda_resumes_on_the_cpu(prepared, tmp_path):
    checkpoint = tmp_path / "ck.pt"
    torch.manual_seed(0)
    first = Trainer(dataclasses.replace(CONFIG, epochs=1), prepared,
                    build_model(CONFIG, prepared.data.num_items), checkpoint,
                    log=lambda m: None, device=CUDA)
    first.fit()
    resumed = Trainer(CONFIG, prepared, build_model(CONFIG, prepared.data.num_items),
                      checkpoint, log=lambda m: None, device=torch.device("cpu"))
    assert resumed.load_checkpoint()
    assert resumed.state.history == first.state.history
    resumed.state.finished = False  # as a run of 3 epochs killed after its first
    state = resumed.fit()
    assert state.epoch == CONFIG.epochs and state.history[0] == first.state.history[0]
    assert all(p.device.type == "cpu" for p in resumed.model.parameters())


def test_evaluation_on_cuda_ranks_as_on_the_cpu(prepared):
    torch.manual_seed(0)
    model = build_model(CONFIG, prepared.data.num_items).eval()
    cpu = evaluate_ranks(model, prepared.test, CONFIG.max_len)
    gpu = evaluate_ranks(model.to(CUDA), prepared.test, CONFIG.max_len)
    # float sums in another order may move a near-tie by a place: almost all ranks agree
    assert np.mean(cpu == gpu) > 0.99 and np.abs(cpu - gpu).max() <= 3


def test_batches_gathered_on_cuda_equal_the_cpus(prepared):
    order = np.random.default_rng(0).permutation(len(prepared.fit))
    for cpu, gpu in zip(prepared.fit.batches(100, 50, order),
                        prepared.fit.batches(100, 50, order, device=CUDA)):
        assert gpu.items.is_cuda
        for name in ("items", "lengths", "targets"):
            assert torch.equal(getattr(cpu, name), getattr(gpu, name).cpu())


def test_the_training_loop_reads_the_loss_back_rarely(prepared, tmp_path, monkeypatch):
    """No host synchronisation per step: the loss is read once every CUDA_LOSS_CHECK_STEPS."""
    reads = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or original(self))
    monkeypatch.setattr(train_module, "CUDA_LOSS_CHECK_STEPS", 50)
    trainer = Trainer(CONFIG, prepared, build_model(CONFIG, prepared.data.num_items),
                      tmp_path / "ck.pt", log=lambda m: None, device=CUDA)
    trainer.train_epoch(1)
    steps = prepared.fit.num_batches(CONFIG.batch_size)
    assert len(reads) <= steps // 50 + 1 < steps


@pytest.mark.parametrize("compressor", sorted(compressors.registry.names()))
def test_every_compressor_trains_deploys_and_scores_on_cuda(compressor, prepared):
    config = dataclasses.replace(CONFIG, compressor=compressor)
    torch.manual_seed(0)
    model = build_model(config, prepared.data.num_items)
    if model.compressor.uses_teacher():
        model.compressor.init_from_table(0.1 * torch.randn(prepared.data.num_items, 32))
    model.to(CUDA).train()
    batch = next(prepared.fit.batches(100, 50, device=CUDA))
    loss = training_loss(model, batch, "bf16")
    loss.backward()
    assert torch.isfinite(loss)
    model.compressor.deploy()
    assert ranks_are_real(evaluate_ranks(model, prepared.validation, config.max_len),
                          prepared.data.num_items)


@pytest.mark.parametrize("backbone", sorted(backbones.registry.names()))
def test_every_backbone_trains_on_cuda_with_a_repeat_head(backbone, prepared):
    config = dataclasses.replace(CONFIG, backbone=backbone, backbone_options={},
                                 repeat_bonus=True)
    model = build_model(config, prepared.data.num_items).to(CUDA).train()
    batch = next(prepared.fit.batches(100, 50, device=CUDA))
    training_loss(model, batch).backward()
    assert ranks_are_real(evaluate_ranks(model, prepared.validation, config.max_len),
                          prepared.data.num_items)


def ranks_are_real(ranks: np.ndarray, num_items: int) -> bool:
    return bool(ranks.min() >= 1 and ranks.max() <= num_items - 1)


def test_distillation_with_learned_codes_runs_on_cuda(tmp_path):
    config = dataclasses.replace(CONFIG, compressor="ccode", epochs=1,
                                 compressor_options={"M": 4, "K": 16},
                                 distill={"bidirectional": True})
    record, _ = run_experiment(config, results_dir=tmp_path / "r", workdir=tmp_path / "w",
                               threads=2, log=lambda m: None, device="cuda")
    assert record["provenance"]["device"]["name"]
    assert record["test"]["HR@10"] > 0 and record["beside"]["teacher"]["test"]["HR@10"] > 0
    assert record["history"][0]["loss_terms"]["contrastive"] > 0
