"""A network's graph by formula: every node's input tensor, validated. Pure: no torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from convcalc.core.spec import InputSpec, Labels, Node
from convcalc.errors import SpecError
from convcalc.kinds import check_fits, output_spec


def graph_inputs(
    nodes: Sequence[Node],
    input_spec: InputSpec,
    labels: Callable[[int], Labels] | Labels | None = None,
) -> list[InputSpec]:
    """Validate the network and give each node's input tensor by formula (what feeds it)."""

    def labels_for(index: int) -> Labels:
        if callable(labels):
            return labels(index)
        return labels or Labels()

    outputs: list[InputSpec] = []
    inputs: list[InputSpec] = []
    for index, node in enumerate(nodes):
        feeds = [input_spec if i < 0 else outputs[i] for i in node.inputs]
        if len({f.shape for f in feeds}) > 1:
            shown = ", ".join(
                f"{path} {'x'.join(map(str, f.shape))}"
                for path, f in zip(("main path", "shortcut", "input 3", "input 4"), feeds)
            )
            raise SpecError(
                "inputs", f"{labels_for(index)['op']}: {shown}: they must match to be added"
            )
        check_fits(node.spec, feeds[0], labels_for(index))
        inputs.append(feeds[0])
        outputs.append(output_spec(node.spec, feeds[0]))
        if min(outputs[-1].shape, default=1) < 1:
            raise SpecError(
                "size",
                f"{labels_for(index)['op']}: the output "
                f"{'x'.join(map(str, outputs[-1].shape))} is empty",
            )
    return inputs
