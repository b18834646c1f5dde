"""Models and training for generalisation experiments (Flax linen + optax).

`make_model` builds the MLPs and the small CNN; `train` trains to a stopping criterion (100%
training accuracy, or cross-entropy <= 0.01) with one jitted `lax.scan` per epoch and atomic,
resumable checkpoints, and returns the parameters, the initial parameters and the curve;
`train_population` trains networks of one shape (each with its own learning rate, dropout and weight decay) as one
sharded population, each stopped on its own.
"""

from ._checkpoint import CheckpointError as CheckpointError
from ._models import CNN as CNN
from ._models import MLP as MLP
from ._models import make_model as make_model
from ._population import train_population as train_population
from ._train import TrainResult as TrainResult
from ._train import train as train
