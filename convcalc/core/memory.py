"""Memory accounting shared by the formula and the measurement: torchsummary's definition.

torchsummary reports the input size, a "forward/backward pass size" that counts every layer's
output twice (its value and its gradient), the parameter size, and their sum as the estimated
total. This module only defines that bookkeeping; what goes in (element counts and the width of
a dtype) comes either from closed forms (formulas.py) or from torch (measure.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from convcalc._dataclass import dataclass

#: the words measure.memory's live-bytes tracker puts in the inference peak's source when an op
#: returned its output in a storage larger than its elements (torch's CPU kernel for 3-D
#: transposed convolutions): the output's ✗ line points to that explanation when it is there
LARGER_STORAGE = "storages larger than their tensors are counted whole"


@dataclass(frozen=True)
class Memory:
    """Bytes: total = input + forward_backward + params; output is the last layer's output.
    torchsummary's convention (``forward_backward_torchsummary`` in JSON); what autograd really
    keeps and the inference peak are in :mod:`convcalc.core.memory_model`."""

    input: int
    output: int
    params: int
    forward_backward: int
    total: int

    def to_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "params": self.params,
            "forward_backward": self.forward_backward,
            "total": self.total,
            # the honest name of forward_backward (kept for compatibility): torchsummary's
            # convention, every output twice, which is neither what autograd saves nor a peak
            "forward_backward_torchsummary": self.forward_backward,
        }


def summary_memory(
    input_elements: int, output_elements: Sequence[int], param_count: int, width: int
) -> Memory:
    """Bytes of a chain as torchsummary counts them, for elements ``width`` bytes wide."""
    forward_backward = 2 * sum(output_elements) * width
    return Memory(
        input=input_elements * width,
        output=output_elements[-1] * width,
        params=param_count * width,
        forward_backward=forward_backward,
        total=(input_elements + param_count) * width + forward_backward,
    )
