"""What finished runs of each task leave and answer (`shared.tasks.base.Outputs`, each task folder's
`outputs.py`), looked up by the run's task as `shared.tasks.TASKS` is. A registry of its own because outputs load
assembled models (`shared.assembly`), which build blocks through `shared.tasks`: the training registry never imports
this one.
"""

from __future__ import annotations

from shared.tasks.autoregressive.outputs import AutoregressiveOutputs
from shared.tasks.base import Outputs
from shared.tasks.classification.outputs import ClassificationOutputs
from shared.tasks.image_generation.outputs import ImageGenerationOutputs
from shared.tasks.recurrent_depth.outputs import RecurrentDepthOutputs
from shared.tasks.text.outputs import TextOutputs

OUTPUTS: dict[str, Outputs] = {
    o.name: o
    for o in (
        ImageGenerationOutputs(),
        ClassificationOutputs(),
        TextOutputs(),
        AutoregressiveOutputs(),
        RecurrentDepthOutputs(),
    )
}


def register_outputs(outputs: Outputs) -> Outputs:
    """Add the outputs of a task registered with `shared.tasks.register`."""
    OUTPUTS[outputs.name] = outputs
    return outputs


def outputs_for(config) -> Outputs:
    """The outputs of the config's task."""
    return OUTPUTS[config.task]
