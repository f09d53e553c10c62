"""The deployed model: sessions in, top-K items out, in the compressor's inference form.

What a phone runs is one module: the backbone's encoder, the item table in its deployed form
(ccode: integer codes and codebooks, tt/sttd: their cores, full: the table) and a top-K over
the real items (padding excluded). The same module is timed in eager and exported.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecbench.backbones import Backbone
from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError
from ecbench.bench.records import load_record, load_weights, record_key
from ecbench.bench.training.teacher import MissingModel
from ecbench.bench.evaluation.topk import top_k
from ecbench.bench.training.train import apply_budget, build_model
from ecbench.compressors import InferenceForm

DEFAULT_TOP_K = 20
STAGES = ("items", "encode", "score", "top_k")


class DeployedRecommender(nn.Module):
    """(item_seq [B, L], lengths [B]) -> (scores [B, k], item ids [B, k]), best first.

    Works for any backbone that takes its item vectors from `self.compressor` (the backbone
    contract): a copy of the backbone gets the compressor's inference form in its place.
    """

    def __init__(self, model: Backbone, k: int = DEFAULT_TOP_K, exportable: bool = False) -> None:
        super().__init__()
        if k > model.compressor.num_items - 1:
            raise ConfigError(f"top-{k} exceeds the {model.compressor.num_items - 1} items")
        form = model.compressor.inference_form(exportable)
        # the copy shares nothing with `model` but the form; the trained compressor stays behind
        self.encoder = copy.deepcopy(model, memo={id(model.compressor): form}).eval()
        self.k = k
        self.exportable = exportable
        self.num_items = model.compressor.num_items
        self.dim = model.compressor.dim

    @property
    def items(self) -> InferenceForm:
        return self.encoder.compressor

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(item_seq, lengths)

    def score(self, query: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
        """Every item's score for session vectors `query` encoded from `item_seq`."""
        return self.encoder.score_session(query, item_seq)

    def top_k(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k(scores, self.k, first=1)  # column 0 is padding, never recommended

    def all_scores(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Every item's score for each session, [B, num_items] (padding column included)."""
        with self.items.call():
            return self.score(self.encode(item_seq, lengths), item_seq)

    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.top_k(self.all_scores(item_seq, lengths))

    def for_executorch(self) -> "DeployedRecommender":
        """A copy of this model as an ExecuTorch export takes it, in eager what the exported
        program answers: its table in `InferenceForm.executorch_form`, gathering along one axis
        (`InferenceForm.gather_elements`), and its backbone taking every position as a token
        (`Backbone.every_position`). The copy shares every tensor; its modules are its own."""
        shared: dict[int, Any] = {id(t): t for t in (*self.parameters(), *self.buffers())}
        form = self.items.executorch_form()
        if form is not self.items:
            shared[id(self.items)] = form
        model = copy.deepcopy(self, memo=shared)
        for module in model.modules():
            if isinstance(module, Backbone):
                module.every_position = True
            if isinstance(module, InferenceForm):
                module.gather_elements = False
        return model


def deployable_model(config: RunConfig, num_items: int, state: dict[str, torch.Tensor] | None,
                     seed: int = 0) -> Backbone:
    """The model of `config` in its deployed state: trained (`state`) or fresh at its shape.

    A fresh one gets arbitrary values of the deployed structure (`deploy_untrained`: ccode's
    unique integer codes): for timing only.
    """
    torch.manual_seed(seed)
    model = build_model(config, num_items).eval()
    if state is None:
        model.compressor.deploy_untrained(seed)
    else:
        model.load_state_dict(state)  # runs save their model already deployed
    return model


def load_trained(record_path: Path, workdir: Path) -> tuple[RunConfig, dict[str, Any], Backbone]:
    """A recorded run's config, record and deployed model (weights from WORKDIR/models)."""
    record = load_record(record_path)
    config = RunConfig.from_record(record, record_path)
    model_file = Path(workdir) / "models" / f"{record_key(record, record_path)}.pt"
    if not model_file.is_file():
        raise MissingModel(f"the model of record {record_path} is not at {model_file}: "
                           "pass the --workdir it was trained in")
    state = load_weights(model_file)
    config = apply_budget(config, record["dataset"]["num_items"])
    return config, record, deployable_model(config, record["dataset"]["num_items"], state)
