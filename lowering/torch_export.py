"""A model as a ``torch.export`` program: one step with its weights, runnable without nspec.

``export(model, path, batch)`` writes three files (``docs/language.md``, "Compile targets"):

* ``NAME.pt2``: ``torch.export.save`` of one step, ``step(*state, *inputs) -> (*next_state,
  *outputs)``, every tensor ``[batch, *shape]`` in the manifest's order, the weights inside;
* ``NAME.state0.pt``: the initial state, ``{state name: [batch, *shape]}`` (``torch.save``; it
  holds the run's seed and step counter when the model draws random numbers);
* ``NAME.json``: the manifest, the names, shapes and dtypes of both sides and the loop that runs it.

One step rather than the whole run: ``torch.export`` unrolls a Python time loop, and tracing one
step of the torch backend costs about a second, so a run of thousands of steps
would take hours to export; the caller's loop is three lines.  The step is traced with dense
propagation (the event-driven one has data-dependent shapes) and with the batch fixed: a random
initial state is drawn per sample, so ``state0`` is the run's for that batch size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from nspec.lowering.to_torch import TORCH_DTYPES, to_module
from nspec.runtime.executor import BackendError

FORMAT = "nspec.torch_export.step/1"


class _Step(nn.Module):
    """``ProgramModule.step`` with positional tensors, as ``torch.export`` takes them."""

    def __init__(self, module):
        super().__init__()
        self.program = module
        low = module._nspec
        self.states = [v.name for v in low.program.states]
        self.inputs = [v.name for v in low.program.inputs]
        self.outputs = [v.name for v in low.program.outputs]

    def forward(self, *tensors):
        state = dict(zip(self.states, tensors[:len(self.states)]))
        inputs = dict(zip(self.inputs, tensors[len(self.states):]))
        new, results = self.program.step(state, inputs)
        return tuple(new[k] for k in self.states) + tuple(results[k] for k in self.outputs)


def _entry(var, batch: int, role: str) -> dict:
    return {"name": var.name, "role": role, "shape": [batch, *var.shape], "dtype": str(TORCH_DTYPES[var.dtype])}


def manifest(program, batch: int, files: dict[str, str]) -> dict:
    """The artifact's calling convention (written beside it as NAME.json)."""
    ins = [_entry(v, batch, "state") for v in program.states] + [_entry(v, batch, "input") for v in program.inputs]
    outs = [_entry(v, batch, "state") for v in program.states] + [_entry(v, batch, "output") for v in program.outputs]
    return {
        "format": FORMAT,
        "model": program.name,
        "files": files,
        "batch": batch,
        "dt_seconds": program.dt,
        "default_steps": program.duration_steps,
        "seed": program.seed,
        "step_inputs": ins,
        "step_outputs": outs,
        "loop": [
            "step = torch.export.load(files['program']).module()",
            "state = torch.load(files['state0'])  # {name: tensor}, weights_only loadable",
            "for t in range(T):",
            "    res = step(*[state[e['name']] for e in step_inputs if e['role'] == 'state'],",
            "               *[x[name][:, t] for name in inputs])  # x[name]: [batch, T, *shape]",
            "    state = dict(zip(state_names, res[:len(state_names)]))",
            "    outputs at step t: res[len(state_names):], in the order of the 'output' entries",
        ],
    }


def export(model, path: str | Path, batch: int = 1) -> list[Path]:
    """Write ``path`` (``.pt2``), its ``.state0.pt`` and ``.json`` beside it; returns the paths."""
    path = Path(path)
    program = model.program
    params, state0 = model.initial(batch, None)
    module = to_module(program, params, propagate="dense").eval().requires_grad_(False)  # an inference artifact
    step = _Step(module)
    example = tuple(torch.as_tensor(state0[v.name]) for v in program.states)
    example += tuple(torch.zeros((batch, *v.shape), dtype=TORCH_DTYPES[v.dtype]) for v in program.inputs)
    quiet = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its warnings about data-dependent values repeat the error below
    try:
        with torch.no_grad():
            exported = torch.export.export(step, example, strict=False)
    except Exception as exc:  # torch raises many kinds for a step it cannot trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # the torch backend locates a failing op at its node's span (torch_codegen.run)
        where = first if isinstance(exc, BackendError) else f"{program.name}: {type(exc).__name__}: {first}"
        raise BackendError(f"{where}\n  torch.export cannot trace one step of {program.name}: it needs a graph "
                           "without data-dependent control flow or shapes (an `until` loop, a data-dependent "
                           "value); run it with --backend torch or export --target onnx") from None
    finally:
        quiet.setLevel(level)
    base = path.name[:-len(".pt2")] if path.name.endswith(".pt2") else path.stem
    state_path = path.with_name(base + ".state0.pt")
    manifest_path = path.with_name(base + ".json")
    torch.export.save(exported, str(path))
    torch.save({v.name: torch.as_tensor(state0[v.name]) for v in program.states}, str(state_path))
    files = {"program": path.name, "state0": state_path.name}
    manifest_path.write_text(json.dumps(manifest(program, batch, files), indent=1) + "\n", encoding="utf-8")
    return [path, state_path, manifest_path]


__all__ = ["export", "manifest", "FORMAT"]
