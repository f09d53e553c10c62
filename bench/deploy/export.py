"""Export the deployed model to on-device runtimes, load it back, and check what it stores.

Formats: ONNX (run by ONNX Runtime), ExecuTorch (XNNPACK backend) and TorchScript for the lite
interpreter. Every artefact keeps the compressed form: nothing is frozen or constant-folded
(`torch.jit.freeze`, `optimize_for_mobile`, the legacy ONNX exporter's folding and ONNX
Runtime's ConstantFolding pass would rebuild a compressed table into a dense constant), and
`artefact_tensors` lists what an artefact really holds so tests and records can check it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ecbench.bench.deploy.recommender import DeployedRecommender
from ecbench.compressors.base import InferenceForm
from ecbench.bench.errors import ConfigError

# executorch-packed: ExecuTorch with XNNPACK packing every float weight at load, the item
# table read by the lookups too (a second copy), where `executorch` keeps one copy and XNNPACK
# packs it in every call
FORMATS = ("onnx", "executorch", "executorch-packed", "torchscript")
SUFFIX = {"onnx": ".onnx", "executorch": ".pte", "executorch-packed": ".packed.pte",
          "torchscript": ".ptl"}
# what each format needs at export and at run time, and the extra that installs it
REQUIREMENTS = {"onnx": (("onnx", "onnxscript", "onnxruntime"), "onnx"),
                "executorch": (("executorch",), "executorch"),
                "executorch-packed": (("executorch",), "executorch"),
                "torchscript": ((), None)}
# ONNX Runtime's optimisers that would fold a compressed table into a dense constant at load
ORT_DISABLED_OPTIMIZERS = ["ConstantFolding"]

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class RuntimeMissing(ConfigError):
    """The packages a format needs are not installed."""


def missing_runtime(fmt: str) -> str | None:
    """Why `fmt` cannot export or run here (a missing package and its extra), or None."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    packages, extra = REQUIREMENTS[fmt]
    absent = [p for p in packages if importlib.util.find_spec(p) is None]
    if absent:
        return (f"{fmt} needs {', '.join(absent)}: pip install 'ecbench[{extra}]' "
                "torch==2.13.0")
    return None


def require_runtime(fmt: str) -> None:
    reason = missing_runtime(fmt)
    if reason:
        raise RuntimeMissing(reason)


def example_inputs(num_items: int, batch: int = 2, length: int = 5
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sessions to trace with: distinct lengths, so no shape is specialised to one value."""
    g = torch.Generator().manual_seed(0)
    item_seq = torch.randint(1, num_items, (batch, length), generator=g)
    lengths = torch.arange(length, length - batch, -1).clamp(min=1)
    item_seq[torch.arange(length) >= lengths.unsqueeze(1)] = 0
    return item_seq, lengths


def _dynamic_shapes(max_batch: int, max_len: int) -> tuple[dict, dict]:
    # a dynamic dimension needs max > min: an artefact for batch 1 alone still takes 1..2
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    length = torch.export.Dim("length", min=1, max=max_len)
    return {0: batch, 1: length}, {0: batch}


# Warnings the exporters raise on every export of these models, known and harmless here: the
# tracer's note that Python branches on shapes become constants (our traced models take the
# same branches for every batch; each export is checked against eager by `agreement`),
# deprecation notices of TorchScript and its lite interpreter (the `torchscript` format is
# kept for phones that still run it), torch.export internals, and ONNX's note that a dynamic
# axis keeps the exporter's own name.
KNOWN_EXPORT_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (".*", torch.jit.TracerWarning),
    (".*Lite Interpreter is deprecated.*", DeprecationWarning),
    (".*torch\\.jit\\.(trace|trace_method|script)` is deprecated.*", DeprecationWarning),
    (".*_check_is_size will be removed.*", FutureWarning),
    (".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*", FutureWarning),
    (".*The axis name: .* will not be used.*", UserWarning),
    (".*were assigned during export.*", UserWarning),
)


@contextlib.contextmanager
def known_export_warnings_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        for message, category in KNOWN_EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def export(deployed: DeployedRecommender, fmt: str, path: Path, *, max_batch: int = 128) -> Path:
    """Write `deployed` (built with `exportable=True`) as a `fmt` artefact at `path`.

    Batch size and session length stay dynamic (ExecuTorch plans memory for `max_batch`).
    """
    require_runtime(fmt)
    if not deployed.exportable:
        raise ConfigError("build the DeployedRecommender with exportable=True to export it")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deployed = deployed.eval()
    max_len = getattr(deployed.encoder, "max_len", 50)
    inputs = example_inputs(deployed.num_items, length=min(5, max_len))
    with torch.no_grad(), known_export_warnings_silenced():
        if fmt == "torchscript":
            # traced, never frozen: torch.jit.freeze / optimize_for_mobile fold the table
            traced = torch.jit.trace(deployed, inputs, check_trace=False)
            traced._save_for_lite_interpreter(str(path))
        elif fmt == "onnx":
            program = torch.onnx.export(
                deployed, inputs, dynamo=True, optimize=False,  # the optimiser folds constants
                custom_translation_table=onnx_translations(deployed) or None,
                input_names=["item_seq", "lengths"], output_names=["scores", "items"],
                dynamic_shapes=_dynamic_shapes(max_batch, max_len), verbose=False)
            program.save(str(path))
        else:
            lowered = lowered_to_xnnpack(deployed, inputs, max_batch,
                                         one_table=fmt == "executorch")
            path.write_bytes(lowered.to_executorch().buffer)
    return path


def lowered_to_xnnpack(deployed: DeployedRecommender, inputs: tuple[torch.Tensor, ...],
                       max_batch: int, one_table: bool = True):
    """The deployed model in its ExecuTorch form (`for_executorch`), exported and lowered to
    XNNPACK where XNNPACK takes it: an `EdgeProgramManager`, before `to_executorch()`.

    `one_table`: XNNPACK reads float weights at run time, packing them in every call; a float
    table that the lookups also read is not copied into the delegate, and a table rebuilt in
    the call (tt, sttd) is scored there too. Otherwise XNNPACK packs the float weights once,
    at load, into a copy of its own (the dense model's table twice; faster). Quantised
    weights (`quant`) it packs at lowering either way."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    max_len = getattr(deployed.encoder, "max_len", 50)
    exported = torch.export.export(deployed.for_executorch(), inputs, strict=False,
                                   dynamic_shapes=_dynamic_shapes(max_batch, max_len))
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner(
        force_non_static_weights_for_f32_linear=one_table)])


def load(fmt: str, path: Path) -> Runner:
    """A callable running the artefact on one thread: (item_seq, lengths) -> (scores, items)."""
    require_runtime(fmt)
    path = str(path)
    if fmt == "torchscript":
        from torch.jit.mobile import _load_for_lite_interpreter

        with known_export_warnings_silenced():
            module = _load_for_lite_interpreter(path)
        return lambda item_seq, lengths: tuple(module(item_seq, lengths))
    if fmt == "onnx":
        session = onnx_session(path)
        names = [i.name for i in session.get_inputs()]

        def run_onnx(item_seq: torch.Tensor, lengths: torch.Tensor):
            scores, items = session.run(None, {names[0]: item_seq.numpy(),
                                               names[1]: lengths.numpy()})
            return torch.from_numpy(scores), torch.from_numpy(items)
        return run_onnx
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    return lambda item_seq, lengths: tuple(method.execute([item_seq, lengths]))


def agreement(got: tuple, expected: tuple[torch.Tensor, torch.Tensor], k: int
              ) -> dict[str, float | bool]:
    """How an artefact's (scores, items) compare with eager's on the same sessions: the largest
    score difference and whether the top-k items are identical."""
    scores, items = (torch.as_tensor(x) for x in got)
    return {"max_abs_score_difference": float((scores - expected[0]).abs().max()),
            f"top{k}_identical": bool(torch.equal(items.long(), expected[1]))}


def onnx_translations(deployed: torch.nn.Module) -> dict[Any, Callable[..., Any]]:
    """The ONNX translations the deployed model's inference forms bring for their custom
    operators (a compressor's way to a runtime's quantised kernels)."""
    return {op: fn for module in deployed.modules() if isinstance(module, InferenceForm)
            for op, fn in module.onnx_translations().items()}


def onnx_session(path: str, optimized_copy: str | None = None):
    """An ONNX Runtime session on one thread with constant folding off.

    `optimized_copy`: also write the graph as ORT optimised it, to check what it runs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimized_copy:
        options.optimized_model_filepath = optimized_copy
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=ORT_DISABLED_OPTIMIZERS)


@dataclass(frozen=True)
class StoredArray:
    name: str
    shape: tuple[int, ...] | None  # None where the format keeps only raw bytes
    nbytes: int


def artefact_tensors(fmt: str, path: Path) -> list[StoredArray]:
    """The tensors an artefact stores, largest first.

    ONNX: initializers and Constant nodes, of the file and of the graph ONNX Runtime actually
    runs after its optimisers (prefixed `runtime:`). TorchScript: the tensor storages in the
    archive (raw bytes). ExecuTorch: the program's constant segments are not itemised; the file
    size bounds them (see `holds_dense_table`).
    """
    path = Path(path)
    if fmt == "onnx":
        arrays = _onnx_arrays(path, "")
        with tempfile.TemporaryDirectory() as tmp:
            optimized = str(Path(tmp) / "runtime.onnx")
            onnx_session(str(path), optimized_copy=optimized)
            arrays += _onnx_arrays(Path(optimized), "runtime:")
    elif fmt == "torchscript":
        with zipfile.ZipFile(path) as archive:
            arrays = [StoredArray(info.filename, None, info.file_size)
                      for info in archive.infolist() if "/data/" in info.filename
                      or info.filename.split("/")[-2:-1] == ["constants"]]
    else:
        arrays = []
    return sorted(arrays, key=lambda a: -a.nbytes)


def _onnx_arrays(path: Path, prefix: str) -> list[StoredArray]:
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(f"{node.name or node.output[0]}", attr.t) for node in model.graph.node
                if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"]
    out = []
    for name, t in tensors:
        dims = tuple(int(d) for d in t.dims)
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        out.append(StoredArray(prefix + name, dims, int(np.prod(dims, dtype=np.int64)) * itemsize))
    return out


def holds_dense_table(fmt: str, path: Path, num_items: int, dim: int) -> bool:
    """Whether the artefact could hold a dense [num_items, dim] float32 table.

    True if any stored tensor has at least that many bytes (a table of that shape in 8 or 4
    bits, a quantised table, is not one); an artefact whose whole file is smaller than the
    table cannot hold it.
    """
    dense = num_items * dim * 4
    if Path(path).stat().st_size < dense:
        return False
    return (any(a.nbytes >= dense for a in artefact_tensors(fmt, path))
            or fmt.startswith("executorch"))
